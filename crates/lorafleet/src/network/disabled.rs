//! `network.kind = "none"`: lorafleet only listens to the integration; sending is refused with
//! a message that says how to enable it.

use async_trait::async_trait;

use super::{Downlink, Enqueued, Network, NetworkError, RemoteDevice};
use crate::config::NetworkKind;

pub struct Disabled;

#[async_trait]
impl Network for Disabled {
    fn kind(&self) -> NetworkKind {
        NetworkKind::None
    }

    async fn enqueue(&self, _downlink: &Downlink) -> Result<Enqueued, NetworkError> {
        Err(NetworkError::NotConfigured)
    }

    async fn list_devices(&self) -> Result<Vec<RemoteDevice>, NetworkError> {
        Ok(Vec::new())
    }
}

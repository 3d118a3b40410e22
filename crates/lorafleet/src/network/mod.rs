//! The LoRaWAN network lorafleet talks to, behind one trait: ChirpStack v4 (gRPC), ChirpStack v3
//! (REST) and, when nothing is configured, a backend that refuses with a clear message.

pub mod chirpstack_v3;
pub mod chirpstack_v4;
pub mod disabled;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Config, NetworkKind};
use crate::devices::DevEui;

/// A downlink lorafleet wants a device to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downlink {
    pub dev_eui: DevEui,
    pub f_port: u8,
    pub data: Vec<u8>,
    pub confirmed: bool,
}

/// What the network told us when it accepted a downlink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enqueued {
    /// The network's own reference: v4 queue item id, v3 frame counter.
    pub network_ref: Option<String>,
    pub f_cnt: Option<u32>,
}

/// A device the network server knows, listed through its API.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteDevice {
    pub dev_eui: DevEui,
    pub name: String,
    pub application_id: String,
    pub application_name: Option<String>,
    pub device_profile_id: Option<String>,
    pub device_profile_name: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// Why the network did not do what we asked, in words the operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("no network backend is configured (network.kind = \"none\"); set network.kind to chirpstack-v4, chirpstack-v3 or simulated")]
    NotConfigured,
    #[error("the network server did not answer within {0} s")]
    Timeout(u64),
    #[error("cannot reach the network server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the network server refused the request: {0}")]
    Refused(String),
    #[error("the network server does not know device {0}")]
    UnknownDevice(String),
    #[error("{0}")]
    Other(String),
}

/// One LoRaWAN network server (or the simulation of one).
#[async_trait]
pub trait Network: Send + Sync + 'static {
    /// Which implementation this is, for the UI and metrics.
    fn kind(&self) -> NetworkKind;

    /// The network's clock; a simulated network may run faster than real time.
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// Asks the network to queue a downlink for a device.
    async fn enqueue(&self, downlink: &Downlink) -> Result<Enqueued, NetworkError>;

    /// Lists the devices of the configured applications.
    async fn list_devices(&self) -> Result<Vec<RemoteDevice>, NetworkError>;
}

/// Builds the network backend the configuration names.
pub fn from_config(config: &Config) -> anyhow::Result<Arc<dyn Network>> {
    let timeout = std::time::Duration::from_secs(config.network.request_timeout_s.max(1));
    Ok(match config.network.kind {
        NetworkKind::None => Arc::new(disabled::Disabled),
        NetworkKind::ChirpstackV4 => Arc::new(chirpstack_v4::ChirpstackV4::new(
            &config.network.chirpstack_v4,
            timeout,
        )?),
        NetworkKind::ChirpstackV3 => Arc::new(chirpstack_v3::ChirpstackV3::new(
            &config.network.chirpstack_v3,
            timeout,
        )?),
        NetworkKind::Simulated => {
            anyhow::bail!("network.kind = \"simulated\" is not available in this build yet")
        }
    })
}

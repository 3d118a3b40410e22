//! The LoRaWAN network lorafleet talks to, behind one trait: ChirpStack v4 (gRPC), ChirpStack v3
//! (REST), the simulated network of virtual devices (the default), and a backend that refuses
//! with a clear message (`none`).

pub mod app_layer;
pub mod chirpstack_v3;
pub mod chirpstack_v4;
pub mod disabled;
pub mod simulated;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Config, NetworkKind};
use crate::devices::DevEui;
// The device list is stored by the inventory; its type lives next to those queries.
pub use crate::storage::devices::RemoteDevice;

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

impl RemoteDevice {
    /// A device as a network server's list names it; none for a DevEUI that does not parse,
    /// which no campaign could address (both ChirpStack clients skip those).
    pub(crate) fn listed(
        dev_eui: &str,
        name: String,
        application_id: String,
        device_profile_id: Option<String>,
        device_profile_name: Option<String>,
        last_seen: Option<DateTime<Utc>>,
    ) -> Option<RemoteDevice> {
        Some(RemoteDevice {
            dev_eui: dev_eui.parse().ok()?,
            name,
            application_id,
            application_name: None,
            device_profile_id,
            device_profile_name,
            last_seen,
        })
    }
}

/// A device's root keys, as far as the network server reveals them; what TS005 derives the
/// McRootKey from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceKeys {
    /// LoRaWAN 1.0.x: the GenAppKey.
    pub gen_app_key: Option<[u8; 16]>,
    /// LoRaWAN 1.1: the AppKey.
    pub app_key: Option<[u8; 16]>,
}

pub use lorafleet_engine::MulticastClass;

/// A multicast group to create on the network server (TS005 keys already derived).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastGroup {
    pub name: String,
    /// The application the group belongs to, where the network server needs one.
    pub application_id: Option<String>,
    /// McAddr as a DevAddr, most significant byte first.
    pub mc_addr: [u8; 4],
    pub mc_nwk_s_key: [u8; 16],
    pub mc_app_s_key: [u8; 16],
    /// First frame counter the network uses; must lie in the devices' [min, max] FCnt window.
    pub f_cnt: u32,
    pub class: MulticastClass,
    pub dr: u8,
    /// Hz.
    pub frequency: u32,
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

/// One LoRaWAN network server (or the simulation of one): what a network server's API offers,
/// nothing about how lorafleet uses it.
#[async_trait]
pub trait Network: Send + Sync + 'static {
    /// Which implementation this is, for the UI and metrics.
    fn kind(&self) -> NetworkKind;

    /// The network's clock; a simulated network may run faster than real time (and, being the
    /// network, holds its clock back while lorafleet works on it).
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// [`Network::now`] without counting as a request: a simulated network does not hold its
    /// clock back for it, so a caller may look often while waiting for the clock to move.
    fn peek_now(&self) -> DateTime<Utc> {
        self.now()
    }

    /// Asks the network to queue a downlink for a device.
    async fn enqueue(&self, downlink: &Downlink) -> Result<Enqueued, NetworkError>;

    /// Queues several downlinks; each one's outcome, in order. One request after the other
    /// unless the network can take them together (the simulated network: one write of its
    /// queues instead of one per downlink, which made a 10,000-device setup round quadratic).
    async fn enqueue_all(&self, downlinks: &[Downlink]) -> Vec<Result<Enqueued, NetworkError>> {
        let mut out = Vec::with_capacity(downlinks.len());
        for d in downlinks {
            out.push(self.enqueue(d).await);
        }
        out
    }

    /// Lists the devices of the configured applications.
    async fn list_devices(&self) -> Result<Vec<RemoteDevice>, NetworkError>;

    /// How many times faster than real time [`Network::now`] runs: what turns a deadline on
    /// the network's clock into a real wait.
    fn time_scale(&self) -> f64 {
        1.0
    }

    /// How long (real time) the network's clock stands still after a request: a simulated
    /// network counts lorafleet as busy until this after its last call
    /// (`lorafleet_simulator::clock::LORAFLEET_GRACE`); a real network's clock never waits.
    fn clock_stands_after_request(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// `caller` (a campaign, by a number of its own) will look at the network again when its
    /// clock shows `at` (`None`: it will not). A simulated network running faster than real
    /// time keeps its clock from passing `at` until the caller says so again, so on a loaded
    /// machine the simulation slows down instead of its devices' time running ahead of the
    /// caller's work. A real network's clock is the wall clock: nothing to do.
    fn hold_clock_at(&self, _caller: u64, _at: Option<DateTime<Utc>>) {}

    /// The device's root keys, when the network server can tell them.
    async fn device_keys(&self, _dev_eui: DevEui) -> Result<Option<DeviceKeys>, NetworkError> {
        Ok(None)
    }

    /// The app-layer packages the device's profile declares, for network servers that keep
    /// them per device profile (ChirpStack v4); `None` where the network has no such thing.
    async fn device_profile_packages(
        &self,
        _dev_eui: DevEui,
    ) -> Result<Option<app_layer::ProfilePackages>, NetworkError> {
        Ok(None)
    }

    /// The id of the multicast group called `name` (in `application_id`, or the configured
    /// application, where the network keeps groups per application), if there is one. A
    /// campaign looks its group up by name before creating it, so an instance that takes over
    /// a campaign whose owner died between the create and storing its id finds the group
    /// instead of leaking a second one. `None` where the network cannot list groups.
    async fn find_multicast_group(
        &self,
        _name: &str,
        _application_id: Option<&str>,
    ) -> Result<Option<String>, NetworkError> {
        Ok(None)
    }

    /// Creates a multicast group; returns the network's id for it.
    async fn create_multicast_group(
        &self,
        _group: &MulticastGroup,
    ) -> Result<String, NetworkError> {
        Err(not_supported(self.kind(), "multicast groups"))
    }

    /// Makes a device a member of a multicast group.
    async fn add_multicast_device(
        &self,
        _group_id: &str,
        _dev_eui: DevEui,
    ) -> Result<(), NetworkError> {
        Err(not_supported(self.kind(), "multicast groups"))
    }

    /// Makes devices members of a multicast group; each one's outcome, in order. One request
    /// after the other unless the network can take them together (as [`Network::enqueue_all`]).
    async fn add_multicast_devices(
        &self,
        group_id: &str,
        dev_euis: &[DevEui],
    ) -> Vec<Result<(), NetworkError>> {
        let mut out = Vec::with_capacity(dev_euis.len());
        for &d in dev_euis {
            out.push(self.add_multicast_device(group_id, d).await);
        }
        out
    }

    /// Binds a multicast group to a gateway: the network sends the group's frames from its
    /// gateways only.
    async fn add_multicast_gateway(
        &self,
        _group_id: &str,
        _gateway_id: &str,
    ) -> Result<(), NetworkError> {
        Err(not_supported(self.kind(), "multicast gateways"))
    }

    /// Queues a frame for a multicast group; returns its frame counter.
    async fn enqueue_multicast(
        &self,
        _group_id: &str,
        _f_port: u8,
        _data: &[u8],
    ) -> Result<u32, NetworkError> {
        Err(not_supported(self.kind(), "multicast groups"))
    }

    /// Frames of a multicast group not yet sent.
    async fn multicast_queue_len(&self, _group_id: &str) -> Result<usize, NetworkError> {
        Err(not_supported(self.kind(), "multicast groups"))
    }

    /// Deletes a multicast group and whatever is still queued for it.
    async fn delete_multicast_group(&self, _group_id: &str) -> Result<(), NetworkError> {
        Err(not_supported(self.kind(), "multicast groups"))
    }
}

/// How long one request to a network server may take.
pub fn request_timeout(config: &Config) -> std::time::Duration {
    std::time::Duration::from_secs(config.network.request_timeout_s.max(1))
}

fn not_supported(kind: NetworkKind, what: &str) -> NetworkError {
    NetworkError::Other(format!(
        "{what} are not supported with network.kind = \"{}\"",
        kind.as_str()
    ))
}

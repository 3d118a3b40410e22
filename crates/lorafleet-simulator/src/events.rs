//! What the simulation reports, in its own words: the events a network server's integration
//! would post (joins, uplinks with their reception metadata, delivery reports, battery status),
//! handed in batches to an [`EventSink`]. lorafleet's adapter turns them into its ingest events.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use lorafleet_codec::eui::DevEui;

/// The application the virtual devices belong to, as the network server names it.
pub const APPLICATION_ID: &str = "simulated";
pub const APPLICATION_NAME: &str = "Simulated fleet";

/// A virtual device as the network server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetDevice {
    pub dev_eui: DevEui,
    pub name: String,
    /// The device model (the network server's device profile).
    pub model: &'static str,
    pub dev_addr: [u8; 4],
}

/// One thing that happened on the simulated network.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    pub dev_eui: DevEui,
    pub at: DateTime<Utc>,
    /// Who sent it; None for what the network server reports about a downlink.
    pub device: Option<FleetDevice>,
    pub body: SimEventBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SimEventBody {
    /// The device joined (once, when it first appears).
    Join,
    Up(SimUplink),
    /// The network server sent queued downlink `queue_item_id` to the device.
    TxAck {
        queue_item_id: String,
    },
    /// The device's answer to the network server's DevStatusReq.
    Status {
        battery_percent: f64,
        margin: i32,
    },
}

/// An uplink as a gateway heard it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimUplink {
    pub f_cnt: u32,
    pub f_port: u8,
    pub dr: u8,
    /// Hz.
    pub frequency: u32,
    pub rssi: i32,
    pub snr: f64,
    pub gateway_count: u32,
    pub data: Vec<u8>,
    /// The payload decoded (the telemetry port), as a network server's codec would.
    pub object: Option<serde_json::Value>,
}

/// Why a batch did not arrive.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink is gone for good: the simulation stops.
    #[error("the event sink has stopped")]
    Closed,
    /// This batch (or part of it) was not stored; the simulation carries on.
    #[error("{0}")]
    Failed(String),
}

/// Where the simulation's events go.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Takes a batch in the order it happened and returns once all of it is stored. The
    /// simulation's clock stands still meanwhile, so a slow sink slows the simulation down
    /// instead of making the devices look late to whoever reads what the sink stored.
    async fn deliver(&self, events: Vec<SimEvent>) -> Result<(), SinkError>;
}

//! Integration events: what ChirpStack (or the simulated network) says happened to a device,
//! normalised from every body format. They have no table of their own: [`super::devices`]
//! keeps who the device is and [`super::uplinks`] what it sent. The types are here, under the
//! queries' feet, so that storage names nothing of `ingest/`, which decodes them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lorafleet_codec::eui::DevEui;

/// Who the event is about, as far as the event says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceIdentity {
    pub name: Option<String>,
    pub application_id: Option<String>,
    pub application_name: Option<String>,
    pub device_profile_id: Option<String>,
    pub device_profile_name: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub dev_addr: Option<String>,
}

/// One received uplink frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    pub received_at: DateTime<Utc>,
    pub f_cnt: Option<u32>,
    pub f_port: Option<u8>,
    pub dr: Option<u8>,
    pub frequency: Option<u32>,
    /// Best RSSI and SNR over the gateways that heard the frame.
    pub rssi: Option<i32>,
    pub snr: Option<f64>,
    pub gateway_count: u32,
    /// The gateways that heard it (ChirpStack v4's rxInfo): which gateways reach the device,
    /// for binding a multicast group to the fewest that reach every campaign device.
    pub gateway_ids: Vec<String>,
    pub confirmed: bool,
    pub data: Vec<u8>,
    /// ChirpStack's payload codec output.
    pub object: Option<serde_json::Value>,
    /// What makes a repeat of this uplink recognisable (v4's deduplicationId; v3's DevEUI, FCnt
    /// and time), so a repeated post is acknowledged and stored once.
    pub dedup_key: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    Up(Uplink),
    Join,
    /// ChirpStack's device status (battery, link margin); `event=status` on the wire.
    DeviceStatus {
        /// Battery level in percent; None when the device cannot measure it.
        battery: Option<f64>,
        external_power: bool,
        margin: Option<i32>,
    },
    /// A confirmed downlink was (or was not) acknowledged by the device.
    Ack {
        acknowledged: bool,
        f_cnt: Option<u32>,
        queue_item_id: Option<String>,
    },
    /// A downlink was sent by a gateway.
    TxAck {
        f_cnt: Option<u32>,
        queue_item_id: Option<String>,
    },
    /// A log or error event for the device.
    Log {
        level: String,
        message: String,
    },
    /// A log event in which the network says it discarded a queued downlink (ChirpStack v4:
    /// an error naming the `queue_item_id`, e.g. a payload over the data rate's limit).
    DownlinkDropped {
        queue_item_id: String,
        message: String,
    },
}

impl EventBody {
    /// The event's name on the wire (`?event=` and the MQTT topic), for messages to people.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::Up(_) => "up",
            EventBody::Join => "join",
            EventBody::DeviceStatus { .. } => "status",
            EventBody::Ack { .. } => "ack",
            EventBody::TxAck { .. } => "txack",
            EventBody::Log { .. } | EventBody::DownlinkDropped { .. } => "log",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationEvent {
    pub dev_eui: DevEui,
    pub at: DateTime<Utc>,
    pub device: DeviceIdentity,
    pub body: EventBody,
}

//! ChirpStack Application Server v3 integration events. JSON follows v3's marshaler (EUIs, DevAddr
//! and payload base64, `objectJSON` a string); Protobuf uses the `as.integration` messages
//! declared in `proto/chirpstack-v3/integration.proto`.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use chrono::{DateTime, Utc};
use prost::Message;
use serde::Deserialize;

use super::{
    best_signal, dr, f_port, DeviceIdentity, Encoding, EventBody, Frame, IngestError,
    IntegrationEvent, Uplink,
};
use crate::devices::DevEui;

/// Generated from `proto/chirpstack-v3/integration.proto`.
pub mod pb {
    tonic::include_proto!("lorafleet.v3.integration");
}

const FORMAT: &str = "ChirpStack v3";

fn malformed(event: &str, reason: impl Into<String>) -> IngestError {
    IngestError::Malformed {
        format: FORMAT,
        event: event.to_string(),
        reason: reason.into(),
    }
}

/// v3 JSON renders bytes as base64; some set-ups (and the seed's tests) used hex. Both are
/// accepted for EUIs, where the length tells them apart.
fn eui_from_text(field: &'static str, s: &str) -> Result<DevEui, IngestError> {
    if let Ok(e) = s.parse::<DevEui>() {
        return Ok(e);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| IngestError::Field {
            field: field.to_string(),
            reason: format!("{s:?} is neither base64 nor 16 hex digits"),
        })?;
    DevEui::from_bytes(&bytes).ok_or(IngestError::Field {
        field: field.to_string(),
        reason: format!("decodes to {} bytes, expected 8", bytes.len()),
    })
}

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>, IngestError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| IngestError::Field {
            field: field.to_string(),
            reason: format!("not base64: {e}"),
        })
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonRxInfo {
    rssi: i32,
    #[serde(rename = "loRaSNR")]
    lora_snr: f64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonTxInfo {
    frequency: u32,
}

/// The union of the v3 event fields lorafleet reads; each event type fills its own.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonEvent {
    #[serde(rename = "applicationID")]
    application_id: Option<serde_json::Value>,
    application_name: String,
    device_name: String,
    #[serde(rename = "devEUI")]
    dev_eui: Option<String>,
    rx_info: Vec<JsonRxInfo>,
    tx_info: Option<JsonTxInfo>,
    dr: u32,
    f_cnt: u32,
    f_port: u32,
    data: Option<String>,
    #[serde(rename = "objectJSON")]
    object_json: Option<String>,
    object: Option<serde_json::Value>,
    tags: HashMap<String, String>,
    confirmed_uplink: bool,
    dev_addr: Option<String>,
    published_at: Option<DateTime<Utc>>,
    margin: Option<i32>,
    external_power_source: bool,
    battery_level_unavailable: bool,
    battery_level: Option<f64>,
    acknowledged: bool,
    error: Option<String>,
    #[serde(rename = "type")]
    error_type: Option<serde_json::Value>,
}

fn application_id(v: Option<serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => non_empty(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn identity_json(e: &mut JsonEvent) -> Result<(DevEui, DeviceIdentity), IngestError> {
    let raw = e.dev_eui.take().ok_or(IngestError::Field {
        field: "devEUI".into(),
        reason: "missing".into(),
    })?;
    let dev_eui = eui_from_text("devEUI", &raw)?;
    let dev_addr = match e.dev_addr.take() {
        Some(a) if !a.is_empty() => {
            if a.len() == 8 && a.chars().all(|c| c.is_ascii_hexdigit()) {
                Some(a.to_ascii_lowercase())
            } else {
                let b = b64("devAddr", &a)?;
                if b.len() != 4 {
                    return Err(IngestError::Field {
                        field: "devAddr".into(),
                        reason: format!("decodes to {} bytes, a DevAddr has 4", b.len()),
                    });
                }
                Some(hex::encode(b))
            }
        }
        _ => None,
    };
    Ok((
        dev_eui,
        DeviceIdentity {
            name: non_empty(std::mem::take(&mut e.device_name)),
            application_id: application_id(e.application_id.take()),
            application_name: non_empty(std::mem::take(&mut e.application_name)),
            device_profile_id: None,
            device_profile_name: None,
            tags: Some(std::mem::take(&mut e.tags).into_iter().collect()),
            dev_addr,
        },
    ))
}

/// v3 events have no deduplication id; the same frame reported twice has the same device,
/// frame counter and time.
fn v3_dedup_key(dev_eui: DevEui, f_cnt: u32, at: DateTime<Utc>) -> String {
    format!("v3:{dev_eui}:{f_cnt}:{}", crate::storage::fmt_time(at))
}

fn decode_json(event: &str, body: &[u8]) -> Result<IntegrationEvent, IngestError> {
    let mut e: JsonEvent = super::parse_json(FORMAT, event, body)?;
    let (dev_eui, device) = identity_json(&mut e)?;
    let at = e.published_at.unwrap_or_else(Utc::now);
    let body = match event {
        "up" => {
            let data = match &e.data {
                Some(d) => b64("data", d)?,
                None => Vec::new(),
            };
            let object = match (e.object.take(), e.object_json.take()) {
                (Some(o), _) => Some(o),
                (None, Some(s)) if !s.is_empty() => {
                    Some(serde_json::from_str(&s).map_err(|err| IngestError::Field {
                        field: "objectJSON".into(),
                        reason: err.to_string(),
                    })?)
                }
                _ => None,
            };
            let (rssi, snr, gateway_count) =
                best_signal(e.rx_info.iter().map(|r| (r.rssi, r.lora_snr)));
            EventBody::Up(Uplink {
                received_at: at,
                f_cnt: Some(e.f_cnt),
                f_port: f_port(e.f_port, FORMAT, event)?,
                dr: dr(e.dr, FORMAT, event)?,
                frequency: e.tx_info.as_ref().map(|t| t.frequency).filter(|f| *f > 0),
                rssi,
                snr,
                gateway_count,
                gateway_ids: Vec::new(),
                confirmed: e.confirmed_uplink,
                data,
                object,
                dedup_key: e.published_at.map(|t| v3_dedup_key(dev_eui, e.f_cnt, t)),
            })
        }
        "join" => EventBody::Join,
        "status" => super::device_status(
            e.battery_level,
            e.battery_level_unavailable,
            e.external_power_source,
            e.margin,
        )?,
        "ack" => EventBody::Ack {
            acknowledged: e.acknowledged,
            f_cnt: Some(e.f_cnt),
            queue_item_id: None,
        },
        "txack" => EventBody::TxAck {
            f_cnt: Some(e.f_cnt),
            queue_item_id: None,
        },
        "error" | "log" => EventBody::Log {
            level: "error".into(),
            message: match e.error_type {
                Some(t) => format!(
                    "{}: {}",
                    t.as_str().map(str::to_string).unwrap_or(t.to_string()),
                    e.error.unwrap_or_default()
                ),
                None => e.error.unwrap_or_default(),
            },
        },
        other => return Err(malformed(other, "unsupported event type")),
    };
    Ok(IntegrationEvent {
        dev_eui,
        at,
        device,
        body,
    })
}

fn pb_identity(
    application_id: u64,
    application_name: String,
    device_name: String,
    dev_eui: &[u8],
    tags: HashMap<String, String>,
    dev_addr: &[u8],
) -> Result<(DevEui, DeviceIdentity), IngestError> {
    let eui = DevEui::from_bytes(dev_eui).ok_or(IngestError::Field {
        field: "dev_eui".into(),
        reason: format!("{} bytes, expected 8", dev_eui.len()),
    })?;
    let tags: BTreeMap<String, String> = tags.into_iter().collect();
    Ok((
        eui,
        DeviceIdentity {
            name: non_empty(device_name),
            application_id: if application_id == 0 {
                None
            } else {
                Some(application_id.to_string())
            },
            application_name: non_empty(application_name),
            device_profile_id: None,
            device_profile_name: None,
            tags: Some(tags),
            dev_addr: if dev_addr.len() != 4 {
                None
            } else {
                Some(hex::encode(dev_addr))
            },
        },
    ))
}

fn pb_time(ts: Option<prost_types_timestamp::Timestamp>) -> DateTime<Utc> {
    crate::timestamp::to_utc(ts.as_ref()).unwrap_or_else(Utc::now)
}

mod prost_types_timestamp {
    pub use chirpstack_api::prost_types::Timestamp;
}

fn decode_pb(event: &str, body: &[u8]) -> Result<IntegrationEvent, IngestError> {
    let bad = |e: prost::DecodeError| malformed(event, e.to_string());
    match event {
        "up" => pb_uplink(pb::UplinkEvent::decode(body).map_err(bad)?, event),
        "join" => pb_join(pb::JoinEvent::decode(body).map_err(bad)?),
        "status" => pb_device_status(pb::StatusEvent::decode(body).map_err(bad)?),
        "ack" => pb_ack(pb::AckEvent::decode(body).map_err(bad)?),
        "txack" => pb_tx_ack(pb::TxAckEvent::decode(body).map_err(bad)?),
        "error" | "log" => pb_error(pb::ErrorEvent::decode(body).map_err(bad)?),
        other => Err(malformed(other, "unsupported event type")),
    }
}

/// An uplink, with the best signal of the gateways that heard it.
fn pb_uplink(up: pb::UplinkEvent, event: &str) -> Result<IntegrationEvent, IngestError> {
    let (dev_eui, device) = pb_identity(
        up.application_id,
        up.application_name,
        up.device_name,
        &up.dev_eui,
        up.tags,
        &up.dev_addr,
    )?;
    let at = pb_time(up.published_at);
    let object = if up.object_json.is_empty() {
        None
    } else {
        Some(
            serde_json::from_str(&up.object_json).map_err(|err| IngestError::Field {
                field: "object_json".into(),
                reason: err.to_string(),
            })?,
        )
    };
    let dedup_key = up
        .published_at
        .as_ref()
        .map(|_| v3_dedup_key(dev_eui, up.f_cnt, at));
    let frame = Frame {
        at,
        f_cnt: up.f_cnt,
        f_port: up.f_port,
        dr: up.dr,
        frequency: up.tx_info.map(|t| t.frequency),
        confirmed: up.confirmed_uplink,
        data: up.data,
    };
    let gateways = up.rx_info.iter().map(|r| (r.rssi, r.lora_snr));
    let uplink = frame.into_uplink(gateways, object, dedup_key, FORMAT, event)?;
    Ok(IntegrationEvent {
        dev_eui,
        at,
        device,
        body: EventBody::Up(uplink),
    })
}

/// A v3 event message about a device with `body`: every such message names the device (the
/// same fields in each) and the time it was published. `$m` is the message; `body` may use the
/// fields the identity does not take.
macro_rules! pb_event {
    ($m:ident, dev_addr: $dev_addr:expr, $body:expr) => {{
        let (dev_eui, device) = pb_identity(
            $m.application_id,
            $m.application_name,
            $m.device_name,
            &$m.dev_eui,
            $m.tags,
            $dev_addr,
        )?;
        Ok(IntegrationEvent {
            dev_eui,
            at: pb_time($m.published_at),
            device,
            body: $body,
        })
    }};
}

/// A join.
fn pb_join(j: pb::JoinEvent) -> Result<IntegrationEvent, IngestError> {
    pb_event!(j, dev_addr: &j.dev_addr, EventBody::Join)
}

/// The device's battery and link margin; a battery level the device did not give is none.
fn pb_device_status(s: pb::StatusEvent) -> Result<IntegrationEvent, IngestError> {
    let body = super::device_status(
        Some(f64::from(s.battery_level)),
        s.battery_level_unavailable,
        s.external_power_source,
        Some(s.margin),
    )?;
    pb_event!(s, dev_addr: &[], body)
}

/// The device's acknowledgement (or not) of a confirmed downlink.
fn pb_ack(a: pb::AckEvent) -> Result<IntegrationEvent, IngestError> {
    let body = EventBody::Ack {
        acknowledged: a.acknowledged,
        f_cnt: Some(a.f_cnt),
        queue_item_id: None,
    };
    pb_event!(a, dev_addr: &[], body)
}

/// A gateway's acknowledgement that a downlink went out.
fn pb_tx_ack(t: pb::TxAckEvent) -> Result<IntegrationEvent, IngestError> {
    let body = EventBody::TxAck {
        f_cnt: Some(t.f_cnt),
        queue_item_id: None,
    };
    pb_event!(t, dev_addr: &[], body)
}

/// An error ChirpStack reports for the device, recorded as an error-level log line.
fn pb_error(e: pb::ErrorEvent) -> Result<IntegrationEvent, IngestError> {
    let body = EventBody::Log {
        level: "error".into(),
        message: e.error,
    };
    pb_event!(e, dev_addr: &[], body)
}

/// Decodes one v3 event of a type lorafleet records.
pub fn decode(
    event: &str,
    encoding: Encoding,
    body: &[u8],
) -> Result<IntegrationEvent, IngestError> {
    match encoding {
        Encoding::Json => decode_json(event, body),
        Encoding::Protobuf => decode_pb(event, body),
    }
}

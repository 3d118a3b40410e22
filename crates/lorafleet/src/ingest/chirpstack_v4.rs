//! ChirpStack v4 integration events, decoded with the official message types
//! (`chirpstack_api::integration`): Protobuf with prost, JSON with their pbjson serde impls, which
//! follow ChirpStack's own JSON mapping (camelCase, base64 bytes, enum names).

use std::collections::BTreeMap;

use chirpstack_api::integration as pb;
use chirpstack_api::prost::Message;
use chrono::{DateTime, Utc};

use super::{
    best_signal, dr, f_port, DeviceIdentity, Encoding, EventBody, IngestError, IntegrationEvent,
    Uplink,
};
use crate::devices::DevEui;

const FORMAT: &str = "ChirpStack v4";

fn parse<T: Message + Default + serde::de::DeserializeOwned>(
    event: &str,
    encoding: Encoding,
    body: &[u8],
) -> Result<T, IngestError> {
    let malformed = |reason: String| IngestError::Malformed {
        format: FORMAT,
        event: event.to_string(),
        reason,
    };
    match encoding {
        Encoding::Json => super::parse_json(FORMAT, event, body),
        Encoding::Protobuf => T::decode(body).map_err(|e| malformed(e.to_string())),
    }
}

fn time(ts: Option<chirpstack_api::pbjson_types::Timestamp>) -> DateTime<Utc> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.clamp(0, 999_999_999) as u32))
        .unwrap_or_else(Utc::now)
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

fn identity(
    info: Option<pb::DeviceInfo>,
    dev_addr: Option<String>,
) -> Result<(DevEui, DeviceIdentity), IngestError> {
    let info = info.ok_or(IngestError::Field {
        field: "deviceInfo".into(),
        reason: "missing".into(),
    })?;
    let dev_eui = info
        .dev_eui
        .parse::<DevEui>()
        .map_err(|e| IngestError::Field {
            field: "deviceInfo.devEui".into(),
            reason: e.to_string(),
        })?;
    let tags: BTreeMap<String, String> = info.tags.into_iter().collect();
    Ok((
        dev_eui,
        DeviceIdentity {
            name: non_empty(info.device_name),
            application_id: non_empty(info.application_id),
            application_name: non_empty(info.application_name),
            device_profile_id: non_empty(info.device_profile_id),
            device_profile_name: non_empty(info.device_profile_name),
            tags: Some(tags),
            dev_addr: match dev_addr.and_then(non_empty) {
                Some(a) => Some(super::dev_addr("devAddr", &a)?),
                None => None,
            },
        },
    ))
}

/// Decodes one v4 event of a type lorafleet records.
pub fn decode(
    event: &str,
    encoding: Encoding,
    body: &[u8],
) -> Result<IntegrationEvent, IngestError> {
    match event {
        "up" => {
            let up: pb::UplinkEvent = parse(event, encoding, body)?;
            let (dev_eui, device) = identity(up.device_info, Some(up.dev_addr))?;
            let (rssi, snr, gateway_count) =
                best_signal(up.rx_info.iter().map(|rx| (rx.rssi, rx.snr as f64)));
            let object = match up.object {
                Some(o) => Some(serde_json::to_value(o).map_err(|e| IngestError::Field {
                    field: "object".into(),
                    reason: e.to_string(),
                })?),
                None => None,
            };
            let at = time(up.time);
            Ok(IntegrationEvent {
                dev_eui,
                at,
                device,
                body: EventBody::Up(Uplink {
                    received_at: at,
                    f_cnt: Some(up.f_cnt),
                    f_port: f_port(up.f_port, FORMAT, event)?,
                    dr: dr(up.dr, FORMAT, event)?,
                    frequency: up.tx_info.map(|t| t.frequency).filter(|f| *f > 0),
                    rssi,
                    snr,
                    gateway_count,
                    confirmed: up.confirmed,
                    data: up.data,
                    object,
                    dedup_key: non_empty(up.deduplication_id).map(|id| format!("v4:{id}")),
                }),
            })
        }
        "join" => {
            let join: pb::JoinEvent = parse(event, encoding, body)?;
            let (dev_eui, device) = identity(join.device_info, Some(join.dev_addr))?;
            Ok(IntegrationEvent {
                dev_eui,
                at: time(join.time),
                device,
                body: EventBody::Join,
            })
        }
        "status" => {
            let st: pb::StatusEvent = parse(event, encoding, body)?;
            let (dev_eui, device) = identity(st.device_info, None)?;
            if !st.battery_level_unavailable && !st.external_power_source {
                super::check_status(Some(st.battery_level as f64), None, "batteryLevel")?;
            }
            super::check_status(None, Some(st.margin), "batteryLevel")?;
            Ok(IntegrationEvent {
                dev_eui,
                at: time(st.time),
                device,
                body: EventBody::Status {
                    battery: if st.battery_level_unavailable || st.external_power_source {
                        None
                    } else {
                        Some(st.battery_level as f64)
                    },
                    external_power: st.external_power_source,
                    margin: Some(st.margin),
                },
            })
        }
        "ack" => {
            let ack: pb::AckEvent = parse(event, encoding, body)?;
            let (dev_eui, device) = identity(ack.device_info, None)?;
            Ok(IntegrationEvent {
                dev_eui,
                at: time(ack.time),
                device,
                body: EventBody::Ack {
                    acknowledged: ack.acknowledged,
                    f_cnt: Some(ack.f_cnt_down),
                    queue_item_id: non_empty(ack.queue_item_id),
                },
            })
        }
        "txack" => {
            let tx: pb::TxAckEvent = parse(event, encoding, body)?;
            let (dev_eui, device) = identity(tx.device_info, None)?;
            Ok(IntegrationEvent {
                dev_eui,
                at: time(tx.time),
                device,
                body: EventBody::TxAck {
                    f_cnt: Some(tx.f_cnt_down),
                    queue_item_id: non_empty(tx.queue_item_id),
                },
            })
        }
        // v4 reports errors as log events; "error" is accepted for symmetry with v3.
        "log" | "error" => {
            let log: pb::LogEvent = parse(event, encoding, body)?;
            let (dev_eui, device) = identity(log.device_info, None)?;
            let level = pb::LogLevel::try_from(log.level)
                .map(|l| l.as_str_name().to_ascii_lowercase())
                .unwrap_or_else(|_| "info".into());
            let code = pb::LogCode::try_from(log.code)
                .map(|c| c.as_str_name().to_string())
                .unwrap_or_default();
            let mut message = if code.is_empty() || code == "UNKNOWN" {
                log.description
            } else {
                format!("{code}: {}", log.description)
            };
            let mut context: Vec<_> = log.context.into_iter().collect();
            context.sort();
            for (k, v) in context {
                message.push_str(&format!(" [{k}={v}]"));
            }
            Ok(IntegrationEvent {
                dev_eui,
                at: time(log.time),
                device,
                body: EventBody::Log { level, message },
            })
        }
        other => Err(IngestError::Malformed {
            format: FORMAT,
            event: other.to_string(),
            reason: "unsupported event type".into(),
        }),
    }
}

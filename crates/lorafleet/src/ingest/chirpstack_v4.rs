//! ChirpStack v4 integration events, decoded with the official message types
//! (`chirpstack_api::integration`): Protobuf with prost, JSON with their pbjson serde impls, which
//! follow ChirpStack's own JSON mapping (camelCase, base64 bytes, enum names).

use std::collections::BTreeMap;

use chirpstack_api::integration as pb;
use chirpstack_api::prost::Message;
use chrono::{DateTime, Utc};

use super::{DeviceIdentity, Encoding, EventBody, Frame, IngestError, IntegrationEvent};
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
    crate::timestamp::to_utc(ts.as_ref()).unwrap_or_else(Utc::now)
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
        "up" => uplink(parse(event, encoding, body)?, event),
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
        "status" => device_status(parse(event, encoding, body)?),
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
        "log" | "error" => log(parse(event, encoding, body)?),
        other => Err(IngestError::Malformed {
            format: FORMAT,
            event: other.to_string(),
            reason: "unsupported event type".into(),
        }),
    }
}

/// An uplink, with the best signal of the gateways that heard it; ChirpStack's deduplication
/// id makes repeats of one uplink recognisable.
fn uplink(up: pb::UplinkEvent, event: &str) -> Result<IntegrationEvent, IngestError> {
    let (dev_eui, device) = identity(up.device_info, Some(up.dev_addr))?;
    let object = match up.object {
        Some(o) => Some(serde_json::to_value(o).map_err(|e| IngestError::Field {
            field: "object".into(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let at = time(up.time);
    let frame = Frame {
        at,
        f_cnt: up.f_cnt,
        f_port: up.f_port,
        dr: up.dr,
        frequency: up.tx_info.map(|t| t.frequency),
        confirmed: up.confirmed,
        data: up.data,
    };
    let gateways = up.rx_info.iter().map(|rx| (rx.rssi, f64::from(rx.snr)));
    let dedup_key = non_empty(up.deduplication_id).map(|id| format!("v4:{id}"));
    let mut uplink = frame.into_uplink(gateways, object, dedup_key, FORMAT, event)?;
    let mut gateway_ids: Vec<String> = up
        .rx_info
        .iter()
        .filter_map(|rx| non_empty(rx.gateway_id.to_ascii_lowercase()))
        .collect();
    gateway_ids.sort();
    gateway_ids.dedup();
    uplink.gateway_ids = gateway_ids;
    Ok(IntegrationEvent {
        dev_eui,
        at,
        device,
        body: EventBody::Up(uplink),
    })
}

/// The device's battery and link margin, checked for range; a battery level the device did
/// not give (or has no use for on external power) is none.
fn device_status(st: pb::StatusEvent) -> Result<IntegrationEvent, IngestError> {
    let (dev_eui, device) = identity(st.device_info, None)?;
    Ok(IntegrationEvent {
        dev_eui,
        at: time(st.time),
        device,
        body: super::device_status(
            Some(f64::from(st.battery_level)),
            st.battery_level_unavailable,
            st.external_power_source,
            Some(st.margin),
        )?,
    })
}

/// One of ChirpStack's log lines about the device.
fn log(log: pb::LogEvent) -> Result<IntegrationEvent, IngestError> {
    let (dev_eui, device) = identity(log.device_info, None)?;
    let level = pb::LogLevel::try_from(log.level)
        .map(|l| l.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| "info".into());
    let code = pb::LogCode::try_from(log.code)
        .map(|c| c.as_str_name().to_string())
        .unwrap_or_default();
    // An error that names a queue item is ChirpStack discarding it (too large for the data
    // rate, frame counter, expired): the downlink will never be sent.
    let dropped = (level == "error")
        .then(|| log.context.get("queue_item_id").cloned())
        .flatten()
        .filter(|id| !id.is_empty());
    let message = log_message(&code, log.description, log.context);
    let body = match dropped {
        Some(queue_item_id) => EventBody::DownlinkDropped {
            queue_item_id,
            message,
        },
        None => EventBody::Log { level, message },
    };
    Ok(IntegrationEvent {
        dev_eui,
        at: time(log.time),
        device,
        body,
    })
}

/// A log line's text: its code (when it has a meaningful one), its description, then its
/// context sorted by key so that the same event always reads the same.
fn log_message(
    code: &str,
    description: String,
    context: impl IntoIterator<Item = (String, String)>,
) -> String {
    let mut message = if code.is_empty() || code == "UNKNOWN" {
        description
    } else {
        format!("{code}: {description}")
    };
    let mut context: Vec<_> = context.into_iter().collect();
    context.sort();
    for (k, v) in context {
        message.push_str(&format!(" [{k}={v}]"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_message_names_its_code_and_lists_its_context_sorted() {
        let context = [
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1".to_string()),
        ];
        assert_eq!(
            log_message("UPLINK_CODEC", "decode failed".into(), context.clone()),
            "UPLINK_CODEC: decode failed [a=1] [b=2]"
        );
        assert_eq!(log_message("UNKNOWN", "x".into(), []), "x");
        assert_eq!(log_message("", "x".into(), context), "x [a=1] [b=2]");
    }
}

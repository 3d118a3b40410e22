//! ChirpStack's HTTP integration: the four body formats (v4 and v3, JSON and Protobuf) become one
//! normalised [`IntegrationEvent`], which the [`writer`] commits.

pub mod chirpstack_v3;
pub mod chirpstack_v4;
pub mod mqtt;
pub mod plausible;
pub mod writer;

use chrono::{DateTime, Utc};

use crate::config::{ChirpstackVersion, NetworkKind};
pub use crate::storage::integration_events::{DeviceIdentity, EventBody, IntegrationEvent, Uplink};

/// Why a body was refused; the text goes back to ChirpStack (and its logs) in a 400.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IngestError {
    #[error("unsupported content type {0:?}: expected application/json or application/octet-stream (Protobuf)")]
    ContentType(String),
    #[error("malformed {format} {event} event: {reason}")]
    Malformed {
        format: &'static str,
        event: String,
        reason: String,
    },
    #[error("field {field}: {reason}")]
    Field { field: String, reason: String },
}

/// Parses a JSON body, naming the field at fault and saying what was wrong in plain words.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    format: &'static str,
    event: &str,
    body: &[u8],
) -> Result<T, IngestError> {
    // Tracking the path costs on every field; only a body that fails needs it, for the message.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let reason = readable_json_error(&inner);
        if path.is_empty() || path == "." || inner.is_syntax() || inner.is_eof() {
            IngestError::Malformed {
                format,
                event: event.to_string(),
                reason,
            }
        } else {
            IngestError::Field {
                field: path,
                reason,
            }
        }
    })
}

/// serde's messages name its internals ("untagged enum Content"); say what an operator can act on.
fn readable_json_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    if msg.contains("untagged enum") || msg.contains("did not match any variant") {
        "value out of range or of the wrong type".to_string()
    } else if msg.starts_with("Invalid symbol")
        || msg.starts_with("Invalid last symbol")
        || msg.starts_with("Invalid padding")
        || msg.contains("Invalid byte")
    {
        format!("not valid base64 ({msg})")
    } else if msg.contains("premature end of input")
        || msg.contains("input contains invalid characters")
        || msg.contains("trailing input")
    {
        format!("not an RFC 3339 time ({msg})")
    } else {
        msg
    }
}

/// A DevAddr as 8 lower-case hex digits.
pub(crate) fn dev_addr(field: &str, s: &str) -> Result<String, IngestError> {
    if s.len() == 8 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(IngestError::Field {
            field: field.to_string(),
            reason: format!(
                "a DevAddr is 8 hex digits, got {:?}",
                s.chars().take(20).collect::<String>()
            ),
        })
    }
}

/// Battery level in percent and link margin in dB, as LoRaWAN's DevStatusAns allows them.
pub(crate) fn check_status(
    battery: Option<f64>,
    margin: Option<i32>,
    battery_field: &str,
) -> Result<(), IngestError> {
    if let Some(b) = battery {
        if !(0.0..=100.0).contains(&b) {
            return Err(IngestError::Field {
                field: battery_field.to_string(),
                reason: format!("battery level must be 0..100 %, got {b}"),
            });
        }
    }
    if let Some(m) = margin {
        if !(-32..=31).contains(&m) {
            return Err(IngestError::Field {
                field: "margin".into(),
                reason: format!("link margin must be -32..31 dB, got {m}"),
            });
        }
    }
    Ok(())
}

/// ChirpStack's device status, the same fields in both generations: the battery level is none
/// when the device cannot measure it or runs on external power, and what is given is checked
/// for range.
pub(crate) fn device_status(
    battery_level: Option<f64>,
    battery_unavailable: bool,
    external_power: bool,
    margin: Option<i32>,
) -> Result<EventBody, IngestError> {
    let battery = battery_level.filter(|_| !battery_unavailable && !external_power);
    check_status(battery, margin, "batteryLevel")?;
    Ok(EventBody::DeviceStatus {
        battery,
        external_power,
        margin,
    })
}

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    pub fn from_content_type(ct: Option<&str>) -> Result<Encoding, IngestError> {
        let ct = ct.unwrap_or("application/json");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" | "text/json" | "" => Ok(Encoding::Json),
            "application/octet-stream" | "application/protobuf" | "application/x-protobuf" => {
                Ok(Encoding::Protobuf)
            }
            _ => Err(IngestError::ContentType(ct.to_string())),
        }
    }
}

/// The event types lorafleet records; every other type ChirpStack sends is acknowledged and
/// counted.
pub fn is_handled(event: &str) -> bool {
    matches!(
        event,
        "up" | "join" | "status" | "ack" | "txack" | "log" | "error"
    )
}

/// Decodes one integration body. Returns Ok(None) for event types lorafleet does not record.
pub fn decode(
    event: &str,
    encoding: Encoding,
    body: &[u8],
    version: ChirpstackVersion,
    network: NetworkKind,
) -> Result<Option<IntegrationEvent>, IngestError> {
    if !is_handled(event) {
        return Ok(None);
    }
    if version == ChirpstackVersion::Auto && encoding == Encoding::Json {
        return decode_auto_json(event, body);
    }
    let generation = match (version, encoding) {
        (ChirpstackVersion::V3, _) => ChirpstackVersion::V3,
        (ChirpstackVersion::V4, _) => ChirpstackVersion::V4,
        (ChirpstackVersion::Auto, Encoding::Json) => sniff_json(body),
        // A Protobuf body does not say which schema it follows; the configured network does.
        (ChirpstackVersion::Auto, Encoding::Protobuf) => match network {
            NetworkKind::ChirpstackV3 => ChirpstackVersion::V3,
            _ => ChirpstackVersion::V4,
        },
    };
    let decoded = match generation {
        ChirpstackVersion::V3 => chirpstack_v3::decode(event, encoding, body),
        _ => chirpstack_v4::decode(event, encoding, body),
    }?;
    plausible::check_identity(&decoded.device, generation)?;
    Ok(Some(decoded))
}

/// A JSON body of either generation. Parsing it once to learn its shape and again to decode it
/// cost a second parse per event; a body naming `"deviceInfo"` is nearly always v4, so it is
/// decoded as v4 at once, and only if that fails is its shape asked (a v3 body may hold the
/// word in a value). The outcome is the one sniffing first gives: the v4 decoder refuses a
/// body without a `deviceInfo` field, and such a body is the only one sniffing calls v3.
fn decode_auto_json(event: &str, body: &[u8]) -> Result<Option<IntegrationEvent>, IngestError> {
    const V4_KEY: &[u8] = b"\"deviceInfo\"";
    let (generation, decoded) = if body.windows(V4_KEY.len()).any(|w| w == V4_KEY) {
        match chirpstack_v4::decode(event, Encoding::Json, body) {
            Ok(decoded) => (ChirpstackVersion::V4, Ok(decoded)),
            Err(e) => match sniff_json(body) {
                ChirpstackVersion::V3 => (
                    ChirpstackVersion::V3,
                    chirpstack_v3::decode(event, Encoding::Json, body),
                ),
                generation => (generation, Err(e)),
            },
        }
    } else {
        let generation = sniff_json(body);
        let decoded = match generation {
            ChirpstackVersion::V3 => chirpstack_v3::decode(event, Encoding::Json, body),
            _ => chirpstack_v4::decode(event, Encoding::Json, body),
        };
        (generation, decoded)
    };
    let decoded = decoded?;
    plausible::check_identity(&decoded.device, generation)?;
    Ok(Some(decoded))
}

/// v4 events carry a `deviceInfo` object; v3 events carry `devEUI` and `applicationID` at the top.
fn sniff_json(body: &[u8]) -> ChirpstackVersion {
    #[derive(serde::Deserialize)]
    struct Shape {
        #[serde(rename = "deviceInfo")]
        device_info: Option<serde::de::IgnoredAny>,
        #[serde(rename = "devEUI")]
        dev_eui: Option<serde::de::IgnoredAny>,
        #[serde(rename = "applicationID")]
        application_id: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Shape>(body) {
        Ok(s) if s.device_info.is_none() && (s.dev_eui.is_some() || s.application_id.is_some()) => {
            ChirpstackVersion::V3
        }
        _ => ChirpstackVersion::V4,
    }
}

/// An uplink frame as both generations' Protobuf messages give it (the same fields).
pub(crate) struct Frame {
    pub at: DateTime<Utc>,
    pub f_cnt: u32,
    pub f_port: u32,
    pub dr: u32,
    /// Hz; 0 or none when the message did not say.
    pub frequency: Option<u32>,
    pub confirmed: bool,
    pub data: Vec<u8>,
}

impl Frame {
    /// The uplink, with the best signal of the `gateways` that heard it (RSSI, SNR each);
    /// FPort and DR checked for range.
    pub(crate) fn into_uplink(
        self,
        gateways: impl Iterator<Item = (i32, f64)>,
        object: Option<serde_json::Value>,
        dedup_key: Option<String>,
        format: &'static str,
        event: &str,
    ) -> Result<Uplink, IngestError> {
        let (rssi, snr, gateway_count) = best_signal(gateways);
        Ok(Uplink {
            received_at: self.at,
            f_cnt: Some(self.f_cnt),
            f_port: f_port(self.f_port, format, event)?,
            dr: dr(self.dr, format, event)?,
            frequency: self.frequency.filter(|f| *f > 0),
            rssi,
            snr,
            gateway_count,
            // Named by the decoders that know them (v4's rxInfo).
            gateway_ids: Vec::new(),
            confirmed: self.confirmed,
            data: self.data,
            object,
            dedup_key,
        })
    }
}

/// The best (highest) RSSI and SNR over the gateways that heard a frame.
pub fn best_signal(pairs: impl Iterator<Item = (i32, f64)>) -> (Option<i32>, Option<f64>, u32) {
    let mut rssi: Option<i32> = None;
    let mut snr: Option<f64> = None;
    let mut count = 0;
    for (r, s) in pairs {
        count += 1;
        rssi = Some(rssi.map_or(r, |b| b.max(r)));
        if s.is_finite() {
            snr = Some(snr.map_or(s, |b: f64| b.max(s)));
        }
    }
    (rssi, snr, count)
}

pub(crate) fn f_port(
    value: u32,
    _format: &'static str,
    _event: &str,
) -> Result<Option<u8>, IngestError> {
    match value {
        0 => Ok(None),
        1..=255 => Ok(Some(value as u8)),
        _ => Err(IngestError::Field {
            field: "fPort".into(),
            reason: format!("fPort {value} is out of range 0..255"),
        }),
    }
}

pub(crate) fn dr(
    value: u32,
    _format: &'static str,
    _event: &str,
) -> Result<Option<u8>, IngestError> {
    u8::try_from(value)
        .map(Some)
        .map_err(|_| IngestError::Field {
            field: "dr".into(),
            reason: format!("dr {value} is out of range"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVENTS: [&str; 8] = [
        "up", "join", "status", "ack", "txack", "log", "error", "location",
    ];

    proptest! {
        /// Integration bodies come from outside: any bytes, in any format, decode or are refused.
        #[test]
        fn decoding_arbitrary_bodies_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), event in 0usize..8, v in 0usize..3, pb in any::<bool>()) {
            let version = [ChirpstackVersion::Auto, ChirpstackVersion::V3, ChirpstackVersion::V4][v];
            let encoding = if pb { Encoding::Protobuf } else { Encoding::Json };
            let _ = decode(EVENTS[event], encoding, &body, version, NetworkKind::ChirpstackV3);
        }

        /// JSON that is structurally plausible but has wrong types or values in any field.
        #[test]
        fn decoding_odd_json_never_panics(dev_eui in ".{0,20}", f_port in any::<i64>(), dr in any::<i64>(), data in ".{0,12}", v3 in any::<bool>()) {
            let body = if v3 {
                serde_json::json!({"devEUI": dev_eui, "fPort": f_port, "dr": dr, "data": data, "devAddr": data, "objectJSON": data})
            } else {
                serde_json::json!({"deviceInfo": {"devEui": dev_eui}, "fPort": f_port, "dr": dr, "data": data, "devAddr": data})
            };
            for event in EVENTS {
                let _ = decode(event, Encoding::Json, body.to_string().as_bytes(), ChirpstackVersion::Auto, NetworkKind::None);
            }
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(Encoding::from_content_type(None).unwrap(), Encoding::Json);
        assert_eq!(
            Encoding::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            Encoding::Json
        );
        assert_eq!(
            Encoding::from_content_type(Some("application/octet-stream")).unwrap(),
            Encoding::Protobuf
        );
        assert!(Encoding::from_content_type(Some("text/html")).is_err());
    }

    /// A v3 body that holds the word `"deviceInfo"` in a value is still read as v3: the v4
    /// decoder tried first refuses it (no `deviceInfo` field), and its shape decides.
    #[test]
    fn a_v3_body_naming_device_info_in_a_value_is_read_as_v3() {
        let body = serde_json::json!({
            "applicationID": "12", "deviceName": "old-meter", "devEUI": "AQIDBAUGBwg=",
            "fCnt": 99, "fPort": 3, "data": "aGk=", "tags": {"note": "deviceInfo"}
        })
        .to_string();
        assert!(body.contains(r#""deviceInfo""#), "{body}");
        let ev = decode(
            "up",
            Encoding::Json,
            body.as_bytes(),
            ChirpstackVersion::Auto,
            NetworkKind::None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(ev.dev_eui.to_string(), "0102030405060708");
        assert_eq!(ev.device.name.as_deref(), Some("old-meter"));
        // And a body that is neither keeps the v4 decoder's complaint.
        let e = decode(
            "up",
            Encoding::Json,
            br#"{"x": "deviceInfo"}"#,
            ChirpstackVersion::Auto,
            NetworkKind::None,
        );
        assert!(
            matches!(e, Err(IngestError::Field { ref field, .. }) if field == "deviceInfo"),
            "{e:?}"
        );
    }

    #[test]
    fn json_generation_is_recognised_by_shape() {
        assert_eq!(sniff_json(br#"{"deviceInfo": {}}"#), ChirpstackVersion::V4);
        assert_eq!(
            sniff_json(br#"{"devEUI": "AQIDBAUGBwg=", "applicationID": "1"}"#),
            ChirpstackVersion::V3
        );
        assert_eq!(sniff_json(b"garbage"), ChirpstackVersion::V4);
    }
}

//! Firmware Management (TS006, FPort 203) on the server side: the device page's requests
//! (`POST /api/devices/{dev_eui}/firmware-management-requests`) and the answers read into the
//! device's record, `firmware_management: {"firmware_version", "hardware_version", "image",
//! ...}`, each field with the time it was reported. Pure: bytes and JSON in, JSON out.

use chrono::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use lorafleet_codec::firmware_management::{
    self as fm, Answer, ImageStatus, RebootCountdown, RebootCountdownAnswer, RebootTime,
    RebootTimeAnswer, Request, MAX_COUNTDOWN_S,
};

/// The FPort Firmware Management answers come on.
pub const F_PORT: u8 = fm::DEFAULT_F_PORT;

/// `POST /api/devices/{dev_eui}/firmware-management-requests`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FmRequestBody {
    /// `package_version`, `dev_version`, `reboot_time`, `reboot_countdown`, `upgrade_image` or
    /// `delete_image`.
    pub command: String,
    /// `reboot_time`: when to reboot, RFC 3339 (or give `gps_seconds`).
    pub at: Option<String>,
    /// `reboot_time`: when to reboot, GPS seconds.
    pub gps_seconds: Option<u32>,
    /// `reboot_countdown`: seconds until the reboot (1..16777214).
    pub countdown_s: Option<u32>,
    /// `reboot_time` / `reboot_countdown`: cancel the pending reboot instead.
    #[serde(default)]
    pub cancel: bool,
    /// `delete_image`: the image's version as DevUpgradeImageAns reported it (a number, or
    /// 8 hex digits as the record shows them).
    #[schema(value_type = Option<Object>)]
    pub version: Option<Value>,
}

/// A request body that names a wrong or missing field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> BodyError {
    BodyError {
        field,
        message: message.into(),
    }
}

impl FmRequestBody {
    pub fn to_request(&self) -> Result<Request, BodyError> {
        Ok(match self.command.as_str() {
            "package_version" => Request::PackageVersion,
            "dev_version" => Request::DevVersion,
            "upgrade_image" => Request::DevUpgradeImage,
            "reboot_time" => Request::DevRebootTime(self.reboot_time()?),
            "reboot_countdown" if self.cancel => {
                Request::DevRebootCountdown(RebootCountdown::Cancel)
            }
            "reboot_countdown" => match self.countdown_s {
                Some(seconds @ 1..=MAX_COUNTDOWN_S) => {
                    Request::DevRebootCountdown(RebootCountdown::After { seconds })
                }
                Some(s) => {
                    return Err(bad(
                        "countdown_s",
                        format!("countdown_s must be 1..{MAX_COUNTDOWN_S}, got {s}"),
                    ))
                }
                None => return Err(bad("countdown_s", "reboot_countdown needs countdown_s")),
            },
            "delete_image" => Request::DevDeleteImage {
                version: self.delete_version()?,
            },
            other => {
                return Err(bad(
                    "command",
                    format!("command must be package_version, dev_version, reboot_time, reboot_countdown, upgrade_image or delete_image, got {other:?}"),
                ))
            }
        })
    }

    fn reboot_time(&self) -> Result<RebootTime, BodyError> {
        if self.cancel {
            return Ok(RebootTime::Cancel);
        }
        let gps = match (&self.at, self.gps_seconds) {
            (_, Some(g)) => g,
            (Some(at), None) => {
                let t = DateTime::parse_from_rfc3339(at)
                    .map_err(|e| bad("at", format!("at must be an RFC 3339 time: {e}")))?;
                lorafleet_codec::time::unix_to_gps(t.timestamp())
            }
            (None, None) => return Err(bad("at", "reboot_time needs at or gps_seconds")),
        };
        if gps == 0 || gps == u32::MAX {
            return Err(bad(
                "gps_seconds",
                "gps_seconds must be 1..4294967294 (0 and all ones are commands)",
            ));
        }
        Ok(RebootTime::At { gps_seconds: gps })
    }

    fn delete_version(&self) -> Result<u32, BodyError> {
        let v = self
            .version
            .as_ref()
            .ok_or_else(|| bad("version", "delete_image needs version"))?;
        let parsed = match v {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            // The record's hex is the 4 bytes as sent (little-endian).
            Value::String(s) => hex::decode(s.trim())
                .ok()
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes),
            _ => None,
        };
        parsed.ok_or_else(|| {
            bad(
                "version",
                format!("version must be a u32 or 8 hex digits as reported, got {v}"),
            )
        })
    }
}

fn version_field(v: fm::RawVersion, at: &str) -> Value {
    json!({
        "hex": v.hex(),
        "value": v.as_u32_le(),
        "dotted": v.dotted_le(),
        "at": at,
    })
}

/// What one uplink on FPort 203 changes in the record `before`, and the device-log lines
/// (kind, message) it adds. A malformed frame changes nothing and says why.
pub fn interpret(
    data: &[u8],
    at: &str,
    before: Option<Value>,
) -> (Value, Vec<(&'static str, String)>) {
    let mut record = match before {
        Some(Value::Object(o)) => Value::Object(o),
        _ => json!({}),
    };
    let answers = match fm::parse_answers(data) {
        Ok(a) => a,
        Err(e) => {
            let msg = format!("Firmware Management answer {}: {e}", hex::encode(data));
            return (record, vec![("error", msg)]);
        }
    };
    let mut log = Vec::new();
    for a in answers {
        if let Answer::DevVersion { hardware, .. } = a {
            record["hardware_version"] = version_field(hardware, at);
        }
        let (key, value, line) = field_of(a, at);
        record[key] = value;
        log.push(("status", line));
    }
    (record, log)
}

/// The record's field an answer sets, its value and a log line.
fn field_of(a: Answer, at: &str) -> (&'static str, Value, String) {
    match a {
        Answer::PackageVersion {
            package_identifier,
            package_version,
        } => (
            "package",
            json!({"identifier": package_identifier, "version": package_version, "at": at}),
            format!("Firmware Management package {package_identifier} version {package_version}"),
        ),
        Answer::DevVersion { firmware, hardware } => (
            "firmware_version",
            version_field(firmware, at),
            format!(
                "firmware {} (hardware {}) by Firmware Management",
                firmware.hex(),
                hardware.hex()
            ),
        ),
        Answer::DevUpgradeImage(st) => {
            let (status, version) = match st {
                ImageStatus::NoImage => ("absent", None),
                ImageStatus::Corrupt => ("corrupt", None),
                ImageStatus::WrongHardware => ("incompatible", None),
                ImageStatus::Valid {
                    next_firmware_version: v,
                } => ("valid", Some(version_field(v, at))),
            };
            (
                "image",
                json!({"status": status, "version": version, "at": at}),
                format!("received image: {status}"),
            )
        }
        Answer::DevRebootTime(r) => {
            let v = match r {
                RebootTimeAnswer::CannotReboot => json!({"cannot_reboot": true, "at": at}),
                RebootTimeAnswer::Cancelled => json!({"cancelled": true, "at": at}),
                RebootTimeAnswer::InSeconds(n) => json!({"in_s": n, "at": at}),
            };
            ("reboot", v.clone(), format!("reboot time answer: {v}"))
        }
        Answer::DevRebootCountdown(r) => {
            let v = match r {
                RebootCountdownAnswer::Cancelled => json!({"cancelled": true, "at": at}),
                RebootCountdownAnswer::InSeconds(n) => json!({"in_s": n, "at": at}),
            };
            ("reboot", v.clone(), format!("reboot countdown answer: {v}"))
        }
        Answer::DevDeleteImage(d) => (
            "delete_image",
            json!({"deleted": d.deleted(), "no_valid_image": d.no_valid_image, "invalid_version": d.invalid_version, "at": at}),
            format!(
                "delete image: {}",
                if d.deleted() { "deleted" } else { "refused" }
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> FmRequestBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn requests_from_bodies() {
        let bytes = |v: Value| body(v).to_request().unwrap().to_vec().unwrap();
        assert_eq!(bytes(json!({"command": "package_version"})), [0x00]);
        assert_eq!(bytes(json!({"command": "dev_version"})), [0x01]);
        assert_eq!(
            bytes(json!({"command": "reboot_time", "gps_seconds": 0x0102_0304})),
            [0x02, 0x04, 0x03, 0x02, 0x01]
        );
        assert_eq!(
            bytes(json!({"command": "reboot_time", "cancel": true})),
            [0x02, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            bytes(json!({"command": "reboot_countdown", "countdown_s": 300})),
            [0x03, 0x2c, 0x01, 0x00]
        );
        assert_eq!(bytes(json!({"command": "upgrade_image"})), [0x04]);
        assert_eq!(
            bytes(json!({"command": "delete_image", "version": "00030100"})),
            [0x05, 0x00, 0x03, 0x01, 0x00]
        );
        // 2026-01-06T00:00:00Z is 1451692818 GPS seconds (18 leap seconds).
        assert_eq!(
            bytes(json!({"command": "reboot_time", "at": "2026-01-06T00:00:00Z"})),
            [&[0x02][..], &1_451_692_818u32.to_le_bytes()].concat()
        );
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let field = |v: Value| body(v).to_request().unwrap_err().field;
        assert_eq!(field(json!({"command": "reboot"})), "command");
        assert_eq!(field(json!({"command": "reboot_time"})), "at");
        assert_eq!(field(json!({"command": "reboot_time", "at": "soon"})), "at");
        assert_eq!(
            field(json!({"command": "reboot_time", "gps_seconds": 0})),
            "gps_seconds"
        );
        assert_eq!(
            field(json!({"command": "reboot_countdown", "countdown_s": 0})),
            "countdown_s"
        );
        assert_eq!(field(json!({"command": "delete_image"})), "version");
        assert_eq!(
            field(json!({"command": "delete_image", "version": "xyz"})),
            "version"
        );
    }

    #[test]
    fn answers_fill_the_record_each_with_its_time() {
        let dev_version = [0x01, 0x00, 0x03, 0x01, 0x00, 0x07, 0x00, 0x00, 0x00];
        let (r, log) = interpret(&dev_version, "T1", None);
        assert_eq!(r["firmware_version"]["hex"], "00030100");
        assert_eq!(r["firmware_version"]["value"], 0x0001_0300);
        assert_eq!(r["firmware_version"]["at"], "T1");
        assert_eq!(r["hardware_version"]["hex"], "07000000");
        assert_eq!(log.len(), 1);
        let (r, _) = interpret(&[0x04, 0x03, 0x00, 0x03, 0x01, 0x00], "T2", Some(r));
        assert_eq!(r["image"]["status"], "valid");
        assert_eq!(r["image"]["version"]["hex"], "00030100");
        assert_eq!(r["image"]["at"], "T2");
        assert_eq!(r["firmware_version"]["at"], "T1", "kept");
        let (r2, log) = interpret(&[0x04], "T3", Some(r.clone()));
        assert_eq!(r2, r, "a malformed answer changes nothing");
        assert_eq!(log[0].0, "error");
    }
}

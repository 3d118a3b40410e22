//! The Version & Status application package on the server side: which request an operator
//! asked for, and what a device's answers change in its record.

use chrono::{DateTime, Utc};
use lorafleet_codec::version_status::{self, Answer, HeapAvailable, Request};
use serde::Deserialize;
use sqlx::SqliteConnection;
use utoipa::ToSchema;

use crate::devices::{version_dto, DevEui};
use crate::storage::fmt_time;

/// The body of `POST /api/devices/{dev_eui}/status-requests`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct StatusRequestBody {
    /// package_version | version_running | version_stored | space_status | uptime | erase_slot | device_description
    pub command: String,
    /// Slot to erase (erase_slot), 0..15.
    pub slot: Option<u32>,
    /// Number of slots to ask about (version_stored), 1..15; default 3.
    pub nb_slots: Option<u32>,
}

/// A request field the operator got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl StatusRequestBody {
    pub fn to_request(&self) -> Result<Request, FieldError> {
        let nibble = |field: &'static str, v: Option<u32>, default: Option<u32>, min: u32| {
            let v = v.or(default).ok_or(FieldError {
                field,
                message: format!("{field} is required for {}", self.command),
            })?;
            if v < min || v > 15 {
                return Err(FieldError {
                    field,
                    message: format!("{field} must be {min}..15 (a 4-bit field), got {v}"),
                });
            }
            Ok(v as u8)
        };
        Ok(match self.command.as_str() {
            "package_version" => Request::PackageVersion,
            "version_running" => Request::VersionRunning,
            "version_stored" => Request::VersionStored {
                nb_slots: nibble("nb_slots", self.nb_slots, Some(3), 1)?,
            },
            "space_status" => Request::SpaceStatus,
            "uptime" => Request::Uptime,
            "erase_slot" => Request::EraseSlot {
                slot: nibble("slot", self.slot, None, 0)?,
            },
            "device_description" => Request::DeviceDescription {
                manufacturer_id: true,
                device_id: true,
            },
            other => {
                return Err(FieldError {
                    field: "command",
                    message: format!(
                        "unknown command {other:?}; expected one of package_version, version_running, version_stored, space_status, uptime, erase_slot, device_description"
                    ),
                })
            }
        })
    }
}

/// The command whose pending request an answer settles.
fn answered_command(a: &Answer) -> &'static str {
    match a {
        Answer::PackageVersion { .. } => "package_version",
        Answer::VersionRunning { .. } => "version_running",
        Answer::VersionStored { .. } => "version_stored",
        Answer::SpaceStatus { .. } => "space_status",
        Answer::Uptime { .. } => "uptime",
        Answer::DeviceDescription { .. } => "device_description",
    }
}

/// Decodes a payload received on the status FPort and stores every answer on the device.
/// Returns the event-log lines to record (answers in words, then the decode error if any).
pub async fn apply_payload(
    conn: &mut SqliteConnection,
    dev_eui: DevEui,
    at: DateTime<Utc>,
    payload: &[u8],
) -> sqlx::Result<Vec<(&'static str, String)>> {
    let (answers, error) = version_status::decode_answers(payload);
    let eui = dev_eui.to_string();
    let t = fmt_time(at);
    let mut log = Vec::new();
    for answer in &answers {
        let vt: Option<i64> =
            sqlx::query_scalar("SELECT versioning_type FROM devices WHERE dev_eui = ?")
                .bind(&eui)
                .fetch_optional(&mut *conn)
                .await?
                .flatten();
        let message = match answer {
            Answer::PackageVersion {
                package_identifier,
                package_version,
                versioning_type,
                nb_slots,
            } => {
                sqlx::query("UPDATE devices SET pkg_identifier = ?, pkg_version = ?, versioning_type = ?, nb_slots = ?, pkg_reported_at = ? WHERE dev_eui = ?")
                    .bind(*package_identifier as i64)
                    .bind(*package_version as i64)
                    .bind(versioning_type.to_nibble() as i64)
                    .bind(*nb_slots as i64)
                    .bind(&t)
                    .bind(&eui)
                    .execute(&mut *conn)
                    .await?;
                format!(
                    "package {package_identifier} version {package_version}, versioning type {versioning_type:?}, {nb_slots} slots"
                )
            }
            Answer::VersionRunning {
                running_slot,
                version,
            } => {
                let before: Option<i64> =
                    sqlx::query_scalar("SELECT running_version FROM devices WHERE dev_eui = ?")
                        .bind(&eui)
                        .fetch_optional(&mut *conn)
                        .await?
                        .flatten();
                if before != Some(*version as i64) {
                    let shown = version_dto(*version as i64, vt).display;
                    let message = match before {
                        Some(old) => format!(
                            "now runs {shown} in slot {running_slot} (was {})",
                            version_dto(old, vt).display
                        ),
                        None => format!("runs {shown} in slot {running_slot}"),
                    };
                    crate::devices::firmware_history::record(
                        &mut *conn,
                        &eui,
                        &t,
                        Some(*version),
                        Some(*running_slot),
                        None,
                        None,
                        &message,
                    )
                    .await?;
                }
                sqlx::query("UPDATE devices SET running_slot = ?, running_version = ?, running_reported_at = ? WHERE dev_eui = ?")
                    .bind(*running_slot as i64)
                    .bind(*version as i64)
                    .bind(&t)
                    .bind(&eui)
                    .execute(&mut *conn)
                    .await?;
                format!(
                    "running version {} in slot {running_slot}",
                    version_dto(*version as i64, vt).display
                )
            }
            Answer::VersionStored { slots, .. } => {
                let stored: Vec<serde_json::Value> = slots
                    .iter()
                    .map(|s| serde_json::json!({"slot": s.slot, "version": s.version}))
                    .collect();
                sqlx::query(
                    "UPDATE devices SET stored_json = ?, stored_reported_at = ? WHERE dev_eui = ?",
                )
                .bind(serde_json::Value::Array(stored).to_string())
                .bind(&t)
                .bind(&eui)
                .execute(&mut *conn)
                .await?;
                if slots.is_empty() {
                    "no stored firmware".to_string()
                } else {
                    let list: Vec<String> = slots
                        .iter()
                        .map(|s| {
                            format!(
                                "slot {}: {}",
                                s.slot,
                                version_dto(s.version as i64, vt).display
                            )
                        })
                        .collect();
                    format!("stored versions: {}", list.join(", "))
                }
            }
            Answer::SpaceStatus {
                heap_available,
                slot_size,
            } => {
                let heap = match heap_available {
                    HeapAvailable::Unknown => None,
                    HeapAvailable::Bytes(b) => Some(*b as i64),
                };
                sqlx::query("UPDATE devices SET heap_available = ?, slot_size = ?, space_reported_at = ? WHERE dev_eui = ?")
                    .bind(heap)
                    .bind(*slot_size as i64)
                    .bind(&t)
                    .bind(&eui)
                    .execute(&mut *conn)
                    .await?;
                format!(
                    "heap available {}, slot size {slot_size} bytes",
                    heap.map_or("unknown".to_string(), |h| format!("{h} bytes"))
                )
            }
            Answer::Uptime { seconds } => {
                sqlx::query(
                    "UPDATE devices SET uptime_s = ?, uptime_reported_at = ? WHERE dev_eui = ?",
                )
                .bind(*seconds as i64)
                .bind(&t)
                .bind(&eui)
                .execute(&mut *conn)
                .await?;
                format!("up {seconds} s")
            }
            Answer::DeviceDescription {
                manufacturer_id,
                device_id,
            } => {
                sqlx::query("UPDATE devices SET manufacturer_id = COALESCE(?, manufacturer_id), device_id = COALESCE(?, device_id), description_reported_at = ? WHERE dev_eui = ?")
                    .bind(manufacturer_id.as_deref())
                    .bind(device_id.as_deref())
                    .bind(&t)
                    .bind(&eui)
                    .execute(&mut *conn)
                    .await?;
                format!(
                    "manufacturer {:?}, device {:?}",
                    manufacturer_id.as_deref().unwrap_or("-"),
                    device_id.as_deref().unwrap_or("-")
                )
            }
        };
        sqlx::query(
            "UPDATE downlinks SET state = 'answered', answered_at = MAX(requested_at, ?), updated_at = ? WHERE id = (
                SELECT id FROM downlinks WHERE dev_eui = ? AND status_command = ?
                AND state IN ('requested', 'enqueued', 'sent', 'acknowledged') ORDER BY id DESC LIMIT 1)",
        )
        .bind(&t)
        .bind(&t)
        .bind(&eui)
        .bind(answered_command(answer))
        .execute(&mut *conn)
        .await?;
        if matches!(answer, Answer::VersionStored { .. }) {
            // EraseSlotReq has no answer; the stored versions that follow show its effect.
            sqlx::query(
                "UPDATE downlinks SET state = 'answered', answered_at = ?, updated_at = ?
                 WHERE dev_eui = ? AND status_command = 'erase_slot'
                 AND state IN ('requested', 'enqueued', 'sent', 'acknowledged')",
            )
            .bind(&t)
            .bind(&t)
            .bind(&eui)
            .execute(&mut *conn)
            .await?;
        }
        log.push(("status_answer", format!("Version & Status: {message}")));
    }
    if let Some(e) = error {
        log.push((
            "decode_error",
            format!(
                "Version & Status payload {} could not be decoded: {e}",
                hex::encode(payload)
            ),
        ));
    }
    Ok(log)
}

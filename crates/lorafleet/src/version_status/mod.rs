//! The Version & Status application package on the server side: which request an operator
//! asked for, and what a device's answers change in its record.

use lorafleet_codec::version_status::{self, Answer, HeapAvailable, Request};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::storage::version_status::version_dto;
use crate::storage::version_status::{AnswerChange, ChangeSet, Known, Reported, VersionChange};

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

/// Interprets a payload received on the status FPort: what each answer changes in the device's
/// record (given what earlier answers left there, `known`) and the device-log lines to add
/// (answers in words, then the decode error if any). Pure: the ingest writer stores the result.
pub fn interpret(payload: &[u8], mut known: Known) -> ChangeSet {
    let (answers, error) = version_status::decode_answers(payload);
    let mut out = ChangeSet::default();
    for answer in &answers {
        let (change, message) = interpret_answer(answer, &mut known);
        out.answers.push(change);
        out.log
            .push(("status_answer", format!("Version & Status: {message}")));
    }
    if let Some(e) = error {
        out.log.push((
            "decode_error",
            format!(
                "Version & Status payload {} could not be decoded: {e}",
                hex::encode(payload)
            ),
        ));
    }
    out
}

/// One answer's change and its log message; `known` follows the change, so a later answer in
/// the same payload reads versions by a versioning type reported just before it.
fn interpret_answer(answer: &Answer, known: &mut Known) -> (AnswerChange, String) {
    let vt = known.versioning_type;
    let mut version_change = None;
    let (reported, message) = match answer {
        Answer::PackageVersion {
            package_identifier,
            package_version,
            versioning_type,
            nb_slots,
        } => {
            known.versioning_type = Some(i64::from(versioning_type.to_nibble()));
            let reported = Reported::Package {
                identifier: *package_identifier,
                version: *package_version,
                versioning_type: versioning_type.to_nibble(),
                nb_slots: *nb_slots,
            };
            (reported, format!(
                "package {package_identifier} version {package_version}, versioning type {versioning_type:?}, {nb_slots} slots"
            ))
        }
        Answer::VersionRunning {
            running_slot,
            version,
        } => {
            let shown = version_dto(i64::from(*version), vt).display;
            if known.running_version != Some(i64::from(*version)) {
                version_change = Some(VersionChange {
                    version: *version,
                    slot: *running_slot,
                    message: running_change(known.running_version, &shown, *running_slot, vt),
                });
            }
            known.running_version = Some(i64::from(*version));
            let reported = Reported::Running {
                slot: *running_slot,
                version: *version,
            };
            (
                reported,
                format!("running version {shown} in slot {running_slot}"),
            )
        }
        Answer::VersionStored { slots, .. } => {
            let list: Vec<(u8, u32)> = slots.iter().map(|s| (s.slot, s.version)).collect();
            (Reported::Stored(list), stored_message(slots, vt))
        }
        Answer::SpaceStatus {
            heap_available,
            slot_size,
        } => {
            let heap = match heap_available {
                HeapAvailable::Unknown => None,
                HeapAvailable::Bytes(b) => Some(*b),
            };
            let message = format!(
                "heap available {}, slot size {slot_size} bytes",
                heap.map_or("unknown".to_string(), |h| format!("{h} bytes"))
            );
            let reported = Reported::Space {
                heap_available: heap,
                slot_size: *slot_size,
            };
            (reported, message)
        }
        Answer::Uptime { seconds } => (
            Reported::Uptime { seconds: *seconds },
            format!("up {seconds} s"),
        ),
        Answer::DeviceDescription {
            manufacturer_id,
            device_id,
        } => {
            let message = format!(
                "manufacturer {:?}, device {:?}",
                manufacturer_id.as_deref().unwrap_or("-"),
                device_id.as_deref().unwrap_or("-")
            );
            let reported = Reported::Description {
                manufacturer_id: manufacturer_id.clone(),
                device_id: device_id.clone(),
            };
            (reported, message)
        }
    };
    let change = AnswerChange {
        reported,
        version_change,
        // The codec names an answer after the request it settles.
        answers: answer.command_name(),
        settles_erases: matches!(answer, Answer::VersionStored { .. }),
    };
    (change, message)
}

/// The firmware-history line for a running version that differs from the one stored.
fn running_change(before: Option<i64>, shown: &str, slot: u8, vt: Option<i64>) -> String {
    match before {
        Some(old) => format!(
            "now runs {shown} in slot {slot} (was {})",
            version_dto(old, vt).display
        ),
        None => format!("runs {shown} in slot {slot}"),
    }
}

fn stored_message(slots: &[version_status::StoredSlot], vt: Option<i64>) -> String {
    if slots.is_empty() {
        return "no stored firmware".to_string();
    }
    let list: Vec<String> = slots
        .iter()
        .map(|s| {
            format!(
                "slot {}: {}",
                s.slot,
                version_dto(i64::from(s.version), vt).display
            )
        })
        .collect();
    format!("stored versions: {}", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn answer_log(s: &str) -> (&'static str, String) {
        ("status_answer", format!("Version & Status: {s}"))
    }

    #[test]
    fn a_versioning_type_reported_first_renders_the_running_version_after_it() {
        // PackageVersionAns (package 10 v1, type 1, 3 slots), VersionRunningAns (slot 1, 1.2.3).
        let c = interpret(&h("00 0a 01 13  01 01 03 02 01 00"), Known::default());
        let expected = ChangeSet {
            answers: vec![
                AnswerChange {
                    reported: Reported::Package {
                        identifier: 10,
                        version: 1,
                        versioning_type: 1,
                        nb_slots: 3,
                    },
                    version_change: None,
                    answers: "package_version",
                    settles_erases: false,
                },
                AnswerChange {
                    reported: Reported::Running {
                        slot: 1,
                        version: 0x0001_0203,
                    },
                    version_change: Some(VersionChange {
                        version: 0x0001_0203,
                        slot: 1,
                        message: "runs 1.2.3 in slot 1".into(),
                    }),
                    answers: "version_running",
                    settles_erases: false,
                },
            ],
            log: vec![
                answer_log("package 10 version 1, versioning type MajorMinorPatch, 3 slots"),
                answer_log("running version 1.2.3 in slot 1"),
            ],
        };
        assert_eq!(c, expected);
    }

    #[test]
    fn the_running_version_goes_to_the_history_only_when_it_changed() {
        let known = Known {
            versioning_type: Some(1),
            running_version: Some(0x0001_0203),
        };
        let same = interpret(&h("01 00 03 02 01 00"), known);
        assert_eq!(same.answers[0].version_change, None);
        assert_eq!(
            same.log,
            vec![answer_log("running version 1.2.3 in slot 0")]
        );

        let newer = interpret(&h("01 00 04 02 01 00"), known);
        assert_eq!(
            newer.answers[0].version_change,
            Some(VersionChange {
                version: 0x0001_0204,
                slot: 0,
                message: "now runs 1.2.4 in slot 0 (was 1.2.3)".into(),
            })
        );
        // Without a versioning type the raw value is shown.
        let raw = interpret(&h("01 00 04 02 01 00"), Known::default());
        assert_eq!(
            raw.log,
            vec![answer_log("running version 0x00010204 raw in slot 0")]
        );
    }

    #[test]
    fn stored_versions_settle_pending_erases() {
        let known = Known {
            versioning_type: Some(1),
            running_version: None,
        };
        // Slots 0 and 2 flagged, specification layout.
        let c = interpret(&h("02 05 03 02 01 00 04 02 01 00"), known);
        assert_eq!(
            c.answers,
            vec![AnswerChange {
                reported: Reported::Stored(vec![(0, 0x0001_0203), (2, 0x0001_0204)]),
                version_change: None,
                answers: "version_stored",
                settles_erases: true,
            }]
        );
        assert_eq!(
            c.log,
            vec![answer_log("stored versions: slot 0: 1.2.3, slot 2: 1.2.4")]
        );
        let empty = interpret(&h("02 00"), known);
        assert_eq!(empty.answers[0].reported, Reported::Stored(vec![]));
        assert_eq!(empty.log, vec![answer_log("no stored firmware")]);
    }

    #[test]
    fn space_uptime_and_description_are_reported_as_sent() {
        let c = interpret(
            &h("03 00 00 00 00 00 10 00 00  03 00 20 00 00 00 10 00 00  04 3c 00 00 00"),
            Known::default(),
        );
        let reported: Vec<&Reported> = c.answers.iter().map(|a| &a.reported).collect();
        assert_eq!(
            reported,
            vec![
                &Reported::Space {
                    heap_available: None,
                    slot_size: 4096
                },
                &Reported::Space {
                    heap_available: Some(8192),
                    slot_size: 4096
                },
                &Reported::Uptime { seconds: 60 },
            ]
        );
        assert_eq!(
            c.log,
            vec![
                answer_log("heap available unknown, slot size 4096 bytes"),
                answer_log("heap available 8192 bytes, slot size 4096 bytes"),
                answer_log("up 60 s"),
            ]
        );
        let answers: Vec<&str> = c.answers.iter().map(|a| a.answers).collect();
        assert_eq!(answers, vec!["space_status", "space_status", "uptime"]);
    }

    #[test]
    fn a_payload_that_does_not_decode_keeps_the_answers_before_the_error() {
        let c = interpret(&h("04 3c 00 00 00  07"), Known::default());
        assert_eq!(c.answers.len(), 1);
        assert_eq!(c.log.len(), 2);
        assert_eq!(c.log[0], answer_log("up 60 s"));
        assert_eq!(c.log[1].0, "decode_error");
        assert!(
            c.log[1]
                .1
                .starts_with("Version & Status payload 043c00000007 could not be decoded: "),
            "{}",
            c.log[1].1
        );

        let nothing = interpret(&h("04 01"), Known::default());
        assert!(nothing.answers.is_empty());
        assert_eq!(nothing.log.len(), 1);
        assert_eq!(nothing.log[0].0, "decode_error");
    }
}

//! What an integration event may carry: identity fields of bounded size (a 1 MB device name
//! would be in every list response) and times that can be true (a device clock in 1970 or
//! 2099 would sort the device to the bottom or top of every list forever).

use chrono::{DateTime, TimeZone, Utc};

use super::{DeviceIdentity, EventBody, IngestError, IntegrationEvent};
use crate::config::ChirpstackVersion;

/// Characters of a device, application or device-profile name.
pub const MAX_NAME_CHARS: usize = 256;
/// Tags per device, and bytes of all keys and values together.
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_BYTES: usize = 8 * 1024;

/// Refuses identity fields beyond the limits, naming the field as the body spells it.
pub fn check_identity(
    id: &DeviceIdentity,
    generation: ChirpstackVersion,
) -> Result<(), IngestError> {
    let v4 = generation != ChirpstackVersion::V3;
    let field = |v4_name: &str, v3_name: &str| {
        if v4 {
            format!("deviceInfo.{v4_name}")
        } else {
            v3_name.to_string()
        }
    };
    let names = [
        (&id.name, field("deviceName", "deviceName")),
        (
            &id.application_name,
            field("applicationName", "applicationName"),
        ),
        (
            &id.device_profile_name,
            field("deviceProfileName", "deviceProfileName"),
        ),
    ];
    for (value, field) in names {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_NAME_CHARS)
        {
            return Err(IngestError::Field {
                field,
                reason: format!("longer than {MAX_NAME_CHARS} characters"),
            });
        }
    }
    let Some(tags) = &id.tags else { return Ok(()) };
    let bytes: usize = tags.iter().map(|(k, v)| k.len() + v.len()).sum();
    if tags.len() > MAX_TAGS || bytes > MAX_TAG_BYTES {
        return Err(IngestError::Field {
            field: field("tags", "tags"),
            reason: format!(
                "at most {MAX_TAGS} tags of {MAX_TAG_BYTES} bytes together (got {} tags, {bytes} bytes)",
                tags.len()
            ),
        });
    }
    Ok(())
}

/// The earliest time an event can have: before LoRaWAN fleets sent through ChirpStack v3/v4,
/// so an earlier time is a device or gateway clock that was never set.
fn earliest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2015, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Replaces a time before 2015 or more than a day ahead of `now` (the reception time) by `now`,
/// and returns the device-log note that says so.
pub fn fix_time(event: &mut IntegrationEvent, now: DateTime<Utc>) -> Option<String> {
    let given = event.at;
    if given >= earliest() && given <= now + chrono::Duration::days(1) {
        return None;
    }
    event.at = now;
    if let EventBody::Up(up) = &mut event.body {
        up.received_at = now;
    }
    Some(format!(
        "the {} event's time {} is implausible (before 2015 or more than a day ahead); stored with the time it was received",
        event.body.type_name(),
        crate::storage::fmt_time(given)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Uplink;

    fn uplink(at: DateTime<Utc>) -> IntegrationEvent {
        IntegrationEvent {
            dev_eui: "0102030405060708".parse().unwrap(),
            at,
            device: DeviceIdentity::default(),
            body: EventBody::Up(Uplink {
                received_at: at,
                f_cnt: Some(1),
                f_port: Some(2),
                dr: None,
                frequency: None,
                rssi: None,
                snr: None,
                gateway_count: 1,
                gateway_ids: Vec::new(),
                confirmed: false,
                data: vec![],
                object: None,
                dedup_key: None,
            }),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        crate::storage::parse_time(s).unwrap()
    }

    #[test]
    fn times_before_2015_or_over_a_day_ahead_become_the_reception_time() {
        let now = at("2026-12-03T12:00:00Z");
        for (given, replaced) in [
            ("1970-01-01T00:00:00Z", true),
            ("2014-12-31T23:59:59Z", true),
            ("2015-01-01T00:00:00Z", false),
            ("2026-12-04T11:59:59Z", false),
            ("2026-12-04T12:00:01Z", true),
        ] {
            let mut ev = uplink(at(given));
            let note = fix_time(&mut ev, now);
            assert_eq!(note.is_some(), replaced, "{given}");
            let expect = if replaced { now } else { at(given) };
            assert_eq!(ev.at, expect, "{given}");
            let EventBody::Up(up) = &ev.body else {
                unreachable!()
            };
            assert_eq!(up.received_at, expect, "{given}");
            if let Some(note) = note {
                assert!(
                    note.contains(&crate::storage::fmt_time(at(given))),
                    "{note}"
                );
            }
        }
    }

    #[test]
    fn long_names_and_big_tag_maps_are_refused_naming_the_field() {
        let ok = DeviceIdentity {
            name: Some("n".repeat(MAX_NAME_CHARS)),
            ..Default::default()
        };
        assert_eq!(check_identity(&ok, ChirpstackVersion::V4), Ok(()));
        let long = DeviceIdentity {
            name: Some("é".repeat(MAX_NAME_CHARS + 1)),
            ..Default::default()
        };
        let Err(IngestError::Field { field, .. }) = check_identity(&long, ChirpstackVersion::V4)
        else {
            panic!("a long name is refused")
        };
        assert_eq!(field, "deviceInfo.deviceName");
        let many: std::collections::BTreeMap<String, String> = (0..=MAX_TAGS)
            .map(|i| (i.to_string(), "x".into()))
            .collect();
        let tags = DeviceIdentity {
            tags: Some(many),
            ..Default::default()
        };
        let Err(IngestError::Field { field, .. }) = check_identity(&tags, ChirpstackVersion::V3)
        else {
            panic!("too many tags are refused")
        };
        assert_eq!(field, "tags");
        let big = DeviceIdentity {
            tags: Some([("k".to_string(), "v".repeat(MAX_TAG_BYTES))].into()),
            ..Default::default()
        };
        assert!(check_identity(&big, ChirpstackVersion::V4).is_err());
    }
}

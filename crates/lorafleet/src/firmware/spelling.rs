//! How the library writes an image's version: the way the devices that would run it write
//! theirs (issue 10 item 3). The trailer's version field is a bare u32; a sensor reading it as
//! major.minor.patch and a tracker reading it as GPS seconds show the same number as "1.3.0"
//! and "2026-01-15T00:00:00Z", so the library must not guess a Unix time for both.

use lorafleet_codec::version_status::VersioningType;
use serde::Serialize;
use utoipa::ToSchema;

use crate::devices::{version_dto, VersionDto};

/// An image's version as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SpelledVersion {
    /// The trailer's version field, and its text in the devices' versioning type.
    pub version: VersionDto,
    /// `semver`, `gps_time` or `raw`: the versioning type of the devices whose running version
    /// is nearest the image's (the same value first, and of the same kind: [`near`]), from
    /// their Version & Status package version answer; `raw` when no such device reported one.
    pub versioning: &'static str,
}

/// The API's name of a Version & Status versioning type.
pub fn versioning_name(vt: Option<i64>) -> &'static str {
    match vt.map(|t| VersioningType::from_nibble(t as u8)) {
        Some(VersioningType::MajorMinorPatch) => "semver",
        Some(VersioningType::GpsSeconds) => "gps_time",
        _ => "raw",
    }
}

/// The versioning type of the device running the version nearest an image's (`nearest`:
/// its type and running version), when it is of the same kind: within a factor of 16. A
/// major.minor.patch value (below 2^24) is never near a GPS time (around 2^30), so a tracker
/// image is not spelled like the sensors when only sensors have reported.
pub fn near(raw: u32, nearest: Option<(i64, i64)>) -> Option<i64> {
    let (vt, running) = nearest?;
    let (a, b) = (i64::from(raw).max(1), running.max(1));
    (a.max(b) <= a.min(b).saturating_mul(16)).then_some(vt)
}

/// `raw` as the image states it (`versioning` of the sidecar or the API: `semver`,
/// `gps_time`, `unix_time`, `raw`), else in the devices' type `vt`.
pub fn spell_as(raw: u32, stated: Option<&str>, vt: Option<i64>) -> SpelledVersion {
    match stated {
        Some("semver") => spell(raw, Some(1)),
        Some("gps_time") => spell(raw, Some(2)),
        Some("unix_time") => SpelledVersion {
            version: VersionDto {
                raw,
                display: lorafleet_codec::time::rfc3339_from_unix(raw.into()),
            },
            versioning: "unix_time",
        },
        Some(_) => spell(raw, None),
        None => spell(raw, vt),
    }
}

/// `raw` in the versioning type `vt` (a PackageVersionAns nibble), with the type's name.
pub fn spell(raw: u32, vt: Option<i64>) -> SpelledVersion {
    SpelledVersion {
        version: version_dto(i64::from(raw), vt),
        versioning: versioning_name(vt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_images_read_as_their_devices_read_them() {
        // demo-sensor-1.3.0.bin: 0x00010300, reported by sensors as major.minor.patch.
        let sensor = spell(66_304, Some(1));
        assert_eq!(sensor.version.display, "1.3.0");
        assert_eq!(sensor.versioning, "semver");
        // demo-tracker-2026-01-15.bin: GPS seconds of 2026-01-15T00:00:00Z.
        let tracker = spell(1_452_470_418, Some(2));
        assert_eq!(tracker.version.display, "2026-01-15T00:00:00Z");
        assert_eq!(tracker.versioning, "gps_time");
    }

    #[test]
    fn only_a_device_on_a_version_of_the_same_kind_tells_the_type() {
        assert_eq!(near(0x0001_0300, Some((1, 0x0001_0200))), Some(1));
        assert_eq!(
            near(1_452_470_418, Some((1, 0x0001_0200))),
            None,
            "GPS time vs semver"
        );
        assert_eq!(near(1_452_470_418, Some((2, 1_400_000_000))), Some(2));
        assert_eq!(near(5, Some((1, 0))), Some(1));
        assert_eq!(near(5, None), None);
    }

    #[test]
    fn what_the_image_states_wins_over_the_devices() {
        assert_eq!(
            spell_as(66_304, Some("semver"), Some(2)).version.display,
            "1.3.0"
        );
        let unix = spell_as(1_623_165_310, Some("unix_time"), Some(1));
        assert_eq!(unix.version.display, "2021-06-08T15:15:10Z");
        assert_eq!(unix.versioning, "unix_time");
        assert_eq!(spell_as(66_304, Some("raw"), Some(1)).versioning, "raw");
        assert_eq!(spell_as(66_304, None, Some(1)).versioning, "semver");
    }

    #[test]
    fn without_a_device_type_the_raw_value_is_shown_as_such() {
        let s = spell(0x0102_0304, None);
        assert_eq!(s.versioning, "raw");
        assert_eq!(s.version.raw, 0x0102_0304);
        assert!(
            s.version.display.contains("0x01020304"),
            "{}",
            s.version.display
        );
        assert_eq!(spell(7, Some(9)).versioning, "raw");
    }
}

//! The firmware library: images found in `firmware.dir` or uploaded, each described by its
//! signed-package trailer (when it has one) and by operator metadata from a sidecar
//! `<file>.toml` or the API.
//!
//! [`library`] reads files (scan, upload, hashing), [`store`] keeps the index in the database.

pub mod library;
pub mod spelling;
pub mod store;

use lorafleet_codec::firmware_trailer::{self, PackageKind, SignedTrailer};

// The library's types live next to their queries (storage names nothing of this folder).
pub use crate::storage::firmware::{FirmwareImage, Metadata, TrailerInfo, METADATA_FIELDS};

pub fn kind_name(kind: PackageKind) -> &'static str {
    match kind {
        PackageKind::Full => "full",
        PackageKind::JdiffDelta => "jdiff",
        PackageKind::DdeltaDelta => "ddelta",
    }
}

// Reading a trailer is the library's business; the type is stored in storage/firmware.rs.
impl TrailerInfo {
    pub fn from_trailer(t: &SignedTrailer) -> Self {
        Self {
            version: t.version,
            version_time: lorafleet_codec::time::rfc3339_from_unix(t.version.into()),
            kind: kind_name(t.kind).to_string(),
            old_firmware_size: t.old_firmware_size,
            manufacturer_uuid: firmware_trailer::format_uuid(&t.manufacturer_uuid),
            device_class_uuid: firmware_trailer::format_uuid(&t.device_class_uuid),
            signature_length: t.signature.len(),
        }
    }
}

/// Reads the trailer from the last `TRAILER_LEN` bytes of an image (see
/// [`firmware_trailer::detect`] for what counts as one).
pub fn detect_trailer(tail: &[u8]) -> Result<Option<TrailerInfo>, String> {
    firmware_trailer::detect(tail)
        .map(|t| t.as_ref().map(TrailerInfo::from_trailer))
        .map_err(|e| e.to_string())
}

/// The values `versioning` takes.
pub const VERSIONINGS: [&str; 4] = ["semver", "gps_time", "unix_time", "raw"];

/// Why a metadata value is refused (only `versioning` has a fixed set of values).
pub fn check_metadata(field: &str, value: &str) -> Result<(), String> {
    if field == "versioning" && !VERSIONINGS.contains(&value) {
        return Err(format!(
            "versioning must be one of {}, got {value:?}",
            VERSIONINGS.join(", ")
        ));
    }
    Ok(())
}

/// The sidecar's table of what the model's fragment decoder holds (`max_fragment_size`,
/// `max_fragments`, `max_parity`); campaigns for the image plan within it.
pub const DEVICE_LIMITS_TABLE: &str = "device_limits";

/// Parses a sidecar `<file>.toml`. Versions may be written as numbers; they are kept as text.
/// A `[device_limits]` table is checked here and read by [`sidecar_device_limits`].
pub fn parse_sidecar(text: &str) -> Result<Metadata, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut meta = Metadata::default();
    for (key, value) in table {
        if key == DEVICE_LIMITS_TABLE {
            parse_device_limits(&value)?;
            continue;
        }
        if !METADATA_FIELDS.contains(&key.as_str()) {
            return Err(format!(
                "unknown key {key:?} (expected {})",
                METADATA_FIELDS.join(", ")
            ));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => return Err(format!("{key} must be text, got a {}", other.type_str())),
        };
        check_metadata(&key, &text)?;
        meta.set(&key, Some(text));
    }
    Ok(meta)
}

/// `[device_limits]` of a sidecar: whole numbers, each within what TS004 can carry.
pub fn parse_device_limits(
    value: &toml::Value,
) -> Result<lorafleet_engine::packages::DeviceLimits, String> {
    let toml::Value::Table(t) = value else {
        return Err(format!(
            "{DEVICE_LIMITS_TABLE} must be a table ([{DEVICE_LIMITS_TABLE}]), got a {}",
            value.type_str()
        ));
    };
    let max_n = i64::from(lorafleet_codec::fragmentation::MAX_N);
    let mut limits = lorafleet_engine::packages::DeviceLimits::default();
    for (key, v) in t {
        let (slot, min, max) = match key.as_str() {
            "max_fragment_size" => (&mut limits.max_fragment_size, 1, 255),
            "max_fragments" => (&mut limits.max_fragments, 1, max_n),
            "max_parity" => (&mut limits.max_parity, 0, max_n),
            other => {
                return Err(format!(
                    "{DEVICE_LIMITS_TABLE}: unknown key {other:?} (expected max_fragment_size, max_fragments, max_parity)"
                ))
            }
        };
        match v.as_integer() {
            Some(n) if (min..=max).contains(&n) => *slot = u32::try_from(n).ok(),
            _ => {
                return Err(format!(
                    "{DEVICE_LIMITS_TABLE}.{key} must be a whole number {min}..{max}, got {v}"
                ))
            }
        }
    }
    Ok(limits)
}

/// The `[device_limits]` of the image at `path` (its sidecar `<path>.toml`), when it has any
/// that parse; the library scan reports a sidecar that does not.
pub fn sidecar_device_limits(path: &str) -> Option<lorafleet_engine::packages::DeviceLimits> {
    if path.is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(format!("{path}.toml")).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    parse_device_limits(table.get(DEVICE_LIMITS_TABLE)?).ok()
}

/// Why a file name is refused; the message names the problem.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the file has no name".into());
    }
    if name.len() > 200 {
        return Err("the file name is longer than 200 bytes".into());
    }
    if name.contains('/') || name.contains('\\') {
        return Err(format!("the file name {name:?} contains a path separator"));
    }
    if name.contains("..") {
        return Err(format!("the file name {name:?} contains \"..\""));
    }
    if name.chars().any(char::is_control) {
        return Err("the file name contains control characters".into());
    }
    if name.starts_with('.') {
        return Err(format!(
            "the file name {name:?} starts with a dot (hidden files are not indexed)"
        ));
    }
    if name.ends_with(".toml") {
        return Err(format!(
            "{name:?} ends in .toml, which the library reserves for sidecar metadata"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] =
        include_bytes!("../../../lorafleet-codec/tests/fixtures/patch_demo_jdiff_v1v2.bin_signed");

    #[test]
    fn fixture_trailer_is_detected() {
        let t = detect_trailer(FIXTURE).unwrap().unwrap();
        assert_eq!(t.version, 1_623_165_310);
        assert_eq!(t.version_time, "2021-06-08T15:15:10Z");
        assert_eq!(t.kind, "jdiff");
        assert_eq!(t.old_firmware_size, 254_140);
        assert_eq!(t.manufacturer_uuid, "ee33927e-e985-577b-ae88-fe98f5a4b587");
        assert_eq!(t.device_class_uuid, "22c3fa46-b797-595f-bd1d-2c18133d421f");
        assert_eq!(t.signature_length, 71);
    }

    #[test]
    fn plain_images_have_no_trailer() {
        assert_eq!(detect_trailer(&[0u8; 500]), Ok(None));
        assert_eq!(detect_trailer(b"short"), Ok(None));
        let mut bad = FIXTURE.to_vec();
        let n = bad.len();
        bad[n - 4] = 9; // diff kind
        assert!(detect_trailer(&bad).unwrap_err().contains("diff kind 9"));
    }

    #[test]
    fn sidecar() {
        let m = parse_sidecar(
            "target = \"meter-v2\"\nfrom_version = 1\nto_version = \"1.3.0\"\nnotes = \"\"\n",
        )
        .unwrap();
        assert_eq!(m.target.as_deref(), Some("meter-v2"));
        assert_eq!(m.from_version.as_deref(), Some("1"));
        assert_eq!(m.to_version.as_deref(), Some("1.3.0"));
        assert_eq!(m.notes, None);
        assert!(parse_sidecar("colour = \"red\"")
            .unwrap_err()
            .contains("colour"));
        assert!(parse_sidecar("target = [1]")
            .unwrap_err()
            .contains("target"));
        assert!(parse_sidecar("target = ").is_err());
    }

    #[test]
    fn sidecar_device_limits_table() {
        let text = "target = \"meter\"\n[device_limits]\nmax_fragment_size = 50\nmax_fragments = 21\nmax_parity = 5\n";
        assert_eq!(
            parse_sidecar(text).unwrap().target.as_deref(),
            Some("meter")
        );
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fw.bin");
        std::fs::write(format!("{}.toml", image.display()), text).unwrap();
        let limits = sidecar_device_limits(&image.display().to_string()).unwrap();
        assert_eq!(
            (
                limits.max_fragment_size,
                limits.max_fragments,
                limits.max_parity
            ),
            (Some(50), Some(21), Some(5))
        );
        assert_eq!(
            sidecar_device_limits(&dir.path().join("none.bin").display().to_string()),
            None
        );
        for (bad, says) in [
            ("device_limits = 5", "must be a table"),
            (
                "[device_limits]\nmax_fragment_size = 300",
                "device_limits.max_fragment_size must be a whole number 1..255, got 300",
            ),
            (
                "[device_limits]\nmax_fragments = \"many\"",
                "device_limits.max_fragments",
            ),
            ("[device_limits]\nslots = 2", "unknown key \"slots\""),
        ] {
            let e = parse_sidecar(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn file_names() {
        assert!(check_file_name("fw-1.2.bin").is_ok());
        assert!(check_file_name("patch_demo_jdiff_v1v2.bin_signed").is_ok());
        for bad in [
            "",
            "../x",
            "a/b",
            "a\\b",
            "x..y",
            "a\nb",
            ".hidden",
            "meta.toml",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }
}

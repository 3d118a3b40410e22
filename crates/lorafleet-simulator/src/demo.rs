//! Demo firmware: on a first start with an empty firmware directory, one image per simulated
//! device model, newer than what the devices run, so a campaign can be tried at once.

use std::path::{Path, PathBuf};

use lorafleet_codec::firmware_trailer::{self, PackageKind, SignedTrailer};
use lorafleet_codec::version_status::{render_version, VersioningType};

use super::device::{Model, MANUFACTURER_UUID, MODELS};

/// Body size of a demo image: big enough to need a real fragmentation session, small enough to
/// go out in well under a minute at DR5.
const DEMO_BODY_LEN: usize = 12 * 1024;

/// The file name of a model's demo image.
pub fn file_name(model: &Model) -> String {
    let version = render_version(model.demo_version, Some(model.versioning));
    let version = match model.versioning {
        // A GPS-time version renders as a timestamp; keep the date.
        VersioningType::GpsSeconds => version.chars().take(10).collect(),
        _ => version,
    };
    format!(
        "demo-{}-{}.bin",
        model.name,
        version.replace([' ', ':'], "-")
    )
}

/// A DER-encoded ECDSA signature with r = s = 1: shaped like the real thing, so the library and
/// the devices recognise the trailer, and obviously not a signature of anything.
pub const PLACEHOLDER_SIGNATURE: [u8; 8] = [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];

/// A model's demo image: firmware-like bytes (deterministic) followed by the signed-package
/// trailer with [`PLACEHOLDER_SIGNATURE`]: nothing here is signed.
pub fn image(model: &Model) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(model.demo_version);
    let body: Vec<u8> = (0..DEMO_BODY_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    firmware_trailer::build(
        &body,
        &SignedTrailer {
            signature: PLACEHOLDER_SIGNATURE.to_vec(),
            manufacturer_uuid: MANUFACTURER_UUID,
            device_class_uuid: model.device_class_uuid,
            version: model.demo_version,
            kind: PackageKind::Full,
            old_firmware_size: 0,
        },
    )
}

/// Writes the demo images into `dir` if it has no files; returns what was written.
pub fn write_if_empty(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let has_files = std::fs::read_dir(dir).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_file())))
    });
    if has_files {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("creating firmware.dir {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for model in &MODELS {
        let path = dir.join(file_name(model));
        std::fs::write(&path, image(model))
            .map_err(|e| anyhow::anyhow!("writing demo firmware {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_images_parse_and_are_newer() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_if_empty(dir.path()).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(
            written[0].file_name().unwrap().to_str(),
            Some("demo-sensor-1.3.0.bin")
        );
        assert_eq!(
            written[1].file_name().unwrap().to_str(),
            Some("demo-tracker-2026-01-15.bin")
        );
        for (path, model) in written.iter().zip(&MODELS) {
            let bytes = std::fs::read(path).unwrap();
            let t = firmware_trailer::detect(&bytes).unwrap().unwrap();
            assert_eq!(t.version, model.demo_version);
            assert!(t.version > model.factory_version);
        }
        assert!(write_if_empty(dir.path()).unwrap().is_empty());
    }
}

//! The compatibility guard (issue 10 item 6): which of a campaign's devices the image must not
//! go to, and why, decided at draft time for every driver.
//!
//! What the image says it is for:
//! - the sidecar's (or the API's) `target`: a model name;
//! - the trailer's device-class UUID: a model name when its 16 bytes are text (NUL-padded, as
//!   the simulated fleet's `sim-sensor-class`), else an opaque UUID;
//! - the trailer's manufacturer UUID: a manufacturer name when it is text, else opaque.
//!
//! What the device is: its model in the device list (a `model` tag, the device-profile name or
//! its reported description), its `model` / `device_class` tags, the device-profile name, the
//! Version & Status device description (`device_id`), its Firmware Management hardware
//! version (hex), and the manufacturer it reported (or a `manufacturer` tag).
//!
//! A model name matches a device name when every word of one stands for a word of the other,
//! ignoring case (a word of three letters or more may abbreviate a longer one): the image
//! `sim-sensor-class` is for `sim-sensor`, `sim-sensor-01` and `Simulated sensor`, not for
//! `sim-tracker`; `meter-2000` is not for `meter-3000`. A device is refused as `incompatible` only when lorafleet knows what it
//! is and none of that matches: a device that reported nothing (or only an opaque profile id)
//! is not refused, since nothing says it differs. An opaque UUID is compared only with names
//! that are UUIDs themselves (a `device_class` tag, say).
//!
//! A device whose running version is the trailer's version is refused as `already_running`
//! unless the campaign's `allow_reinstall` is true (without a trailer: the `to_version` text
//! against the device's running version as it writes it).

use crate::firmware::FirmwareImage;
use crate::storage::campaigns::Refusal;
use crate::storage::device_identity::DeviceIdentity;
use crate::storage::version_status::version_dto;

/// `incompatible`: the image is for another kind of device.
pub const INCOMPATIBLE: &str = "incompatible";
/// `already_running`: the device runs the image's version.
pub const ALREADY_RUNNING: &str = "already_running";

/// One thing the image says it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    /// A name, and where the image says it.
    Name(String, &'static str),
    /// A UUID that is not text (formatted, lower case).
    Uuid(String, &'static str),
}

/// The 16 bytes of a formatted UUID as text, when they are printable ASCII padded with NULs
/// (a naming convention, e.g. the simulated fleet's images); None for a real UUID.
fn uuid_text(formatted: &str) -> Option<String> {
    let bytes = uuid_bytes(formatted)?;
    let end = bytes.iter().rposition(|b| *b != 0)? + 1;
    let body = &bytes[..end];
    (body.len() >= 2 && body.iter().all(|b| b.is_ascii_graphic() || *b == b' '))
        .then(|| String::from_utf8_lossy(body).trim().to_string())
}

fn uuid_bytes(text: &str) -> Option<Vec<u8>> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32).then(|| hex::decode(&hex).ok()).flatten()
}

fn claim_of_uuid(formatted: &str, source: &'static str) -> Option<Claim> {
    if formatted.is_empty() || uuid_bytes(formatted)?.iter().all(|b| *b == 0) {
        // An all-zero UUID says nothing.
        return None;
    }
    Some(match uuid_text(formatted) {
        Some(text) => Claim::Name(text, source),
        None => Claim::Uuid(formatted.to_ascii_lowercase(), source),
    })
}

/// The words of a name, lower case: `Simulated sensor` is `simulated`, `sensor`.
fn words(name: &str) -> Vec<String> {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// One word stands for the other: equal, or an abbreviation of at least three letters
/// (`sim` for `simulated`, the truncated `clas` for `class`); numbers must be equal.
fn word_matches(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short == long
        || (short.len() >= 3
            && short.chars().all(char::is_alphabetic)
            && long.chars().all(char::is_alphabetic)
            && long.starts_with(short))
}

/// Whether two names name the same kind of device (see the module's rule): every word of one
/// stands for a word of the other.
pub fn names_match(a: &str, b: &str) -> bool {
    let (wa, wb) = (words(a), words(b));
    if wa.is_empty() || wb.is_empty() {
        return false;
    }
    let within =
        |x: &[String], y: &[String]| x.iter().all(|w| y.iter().any(|v| word_matches(w, v)));
    within(&wa, &wb) || within(&wb, &wa)
}

/// The names that say what kind of device it is, and where each comes from.
fn model_names(d: &DeviceIdentity) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = Vec::new();
    let mut push = |v: Option<&String>, what: &'static str| {
        if let Some(v) = v.filter(|v| !v.trim().is_empty()) {
            if !out.iter().any(|(n, _)| n.eq_ignore_ascii_case(v)) {
                out.push((v.clone(), what));
            }
        }
    };
    push(d.model.as_ref(), "model");
    push(d.tags.get("device_class"), "device_class tag");
    push(d.device_profile_name.as_ref(), "device profile");
    push(d.device_id.as_ref(), "device description");
    push(d.hardware_version.as_ref(), "hardware version");
    out
}

fn manufacturer_names(d: &DeviceIdentity) -> Vec<String> {
    [d.manufacturer_id.as_ref(), d.tags.get("manufacturer")]
        .into_iter()
        .flatten()
        .filter(|v| !v.trim().is_empty())
        .cloned()
        .collect()
}

/// Why `claim` rules the device out, given the names it is known by (`extra`: names that may
/// match but do not on their own say what the device is, such as a profile id).
fn refuses(claim: &Claim, names: &[String], extra: &[String]) -> bool {
    match claim {
        Claim::Name(want, _) => {
            !names.is_empty() && !names.iter().chain(extra).any(|n| names_match(want, n))
        }
        Claim::Uuid(want, _) => {
            let uuids: Vec<&String> = names.iter().filter(|n| uuid_bytes(n).is_some()).collect();
            !uuids.is_empty() && !uuids.iter().any(|n| uuid_bytes(n) == uuid_bytes(want))
        }
    }
}

fn claim_text(claim: &Claim) -> String {
    match claim {
        Claim::Name(n, source) => format!("{n} ({source})"),
        Claim::Uuid(u, source) => format!("{u} ({source})"),
    }
}

/// What an image says about itself that the guard compares.
#[derive(Debug, Clone, Default)]
pub struct ImageClaims {
    models: Vec<Claim>,
    manufacturer: Option<Claim>,
    version: Option<u32>,
    to_version: Option<String>,
}

impl ImageClaims {
    pub fn of(image: &FirmwareImage) -> Self {
        let mut models = Vec::new();
        if let Some(t) = image
            .metadata
            .target
            .as_ref()
            .filter(|t| !t.trim().is_empty())
        {
            models.push(Claim::Name(t.trim().to_string(), "target"));
        }
        let trailer = image.trailer.as_ref();
        if let Some(c) = trailer.and_then(|t| claim_of_uuid(&t.device_class_uuid, "device class")) {
            models.push(c);
        }
        ImageClaims {
            models,
            manufacturer: trailer.and_then(|t| claim_of_uuid(&t.manufacturer_uuid, "manufacturer")),
            version: trailer.map(|t| t.version),
            to_version: image.metadata.to_version.clone(),
        }
    }
}

/// Why the image must not go to device `d`, if it must not.
pub fn check(image: &ImageClaims, d: &DeviceIdentity, allow_reinstall: bool) -> Option<Refusal> {
    let refusal = |code: &str, reason: String| Refusal {
        dev_eui: d.dev_eui.clone(),
        reason,
        code: code.to_string(),
    };
    let named = model_names(d);
    let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
    let extra: Vec<String> = [d.device_profile_id.clone(), d.tags.get("model").cloned()]
        .into_iter()
        .flatten()
        .collect();
    for claim in &image.models {
        if refuses(claim, &names, &extra) {
            let (name, what) = &named[0];
            return Some(refusal(
                INCOMPATIBLE,
                format!(
                    "the image is for {}; {} is {name} ({what})",
                    claim_text(claim),
                    d.dev_eui
                ),
            ));
        }
    }
    if let Some(claim) = &image.manufacturer {
        let makers = manufacturer_names(d);
        if refuses(claim, &makers, &[]) {
            return Some(refusal(
                INCOMPATIBLE,
                format!(
                    "the image is made by {}; {} reports manufacturer {}",
                    claim_text(claim),
                    d.dev_eui,
                    makers[0]
                ),
            ));
        }
    }
    if allow_reinstall {
        return None;
    }
    let running = d.running_version?;
    let shown = version_dto(i64::from(running), d.versioning_type).display;
    let same = match (image.version, image.to_version.as_deref()) {
        (Some(v), _) => v == running,
        (None, Some(text)) => {
            text.trim().eq_ignore_ascii_case(&shown) || text.trim() == running.to_string()
        }
        (None, None) => false,
    };
    same.then(|| {
        refusal(
            ALREADY_RUNNING,
            format!(
                "{} already runs {shown}, the image's version; set allow_reinstall to send it again",
                d.dev_eui
            ),
        )
    })
}

/// The refusals for a campaign's devices (in the order given); devices the inventory does not
/// know are left to validation, which names them.
pub async fn refusals(
    db: &crate::storage::Db,
    image: Option<&FirmwareImage>,
    devices: &[String],
    allow_reinstall: bool,
) -> crate::storage::Result<Vec<Refusal>> {
    let Some(image) = image else {
        return Ok(Vec::new());
    };
    let claims = ImageClaims::of(image);
    let known = crate::storage::device_identity::identities(db, devices).await?;
    Ok(devices
        .iter()
        .filter_map(|eui| known.get(eui))
        .filter_map(|d| check(&claims, d, allow_reinstall))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim_image(class: &[u8; 16], version: u32) -> FirmwareImage {
        let t = lorafleet_codec::firmware_trailer::SignedTrailer {
            signature: vec![0x30],
            manufacturer_uuid: *b"lorafleet-sim\0\0\0",
            device_class_uuid: *class,
            version,
            kind: lorafleet_codec::firmware_trailer::PackageKind::Full,
            old_firmware_size: 0,
        };
        FirmwareImage {
            id: 1,
            file_name: "fw.bin".into(),
            source: "dir".into(),
            size: 100,
            sha256: String::new(),
            added_at: String::new(),
            missing_at: None,
            deleted_at: None,
            trailer: Some(crate::firmware::TrailerInfo::from_trailer(&t)),
            trailer_error: None,
            metadata: Default::default(),
            edited: Vec::new(),
            running_campaigns: Vec::new(),
            path: String::new(),
        }
    }

    fn sim_device(kind: &str, n: u32, running: Option<u32>) -> DeviceIdentity {
        DeviceIdentity {
            dev_eui: format!("4c4653494d00000{n}"),
            model: Some(format!("sim-{kind}")),
            device_profile_name: Some(format!("Simulated {kind}")),
            device_profile_id: Some(kind.to_string()),
            tags: [("model".to_string(), format!("sim-{kind}"))].into(),
            manufacturer_id: Some("lorafleet-sim".into()),
            device_id: Some(format!("sim-{kind}-0{n}")),
            running_version: running,
            versioning_type: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn names() {
        assert!(names_match("sim-sensor-class", "sim-sensor"));
        assert!(names_match("SIM-SENSOR", "sim-sensor-01"));
        assert!(names_match("sim-sensor-class", "Simulated sensor"));
        assert!(names_match("Meter", "meter"));
        assert!(names_match("meter-v2", "Acme Meter v2 EU868"));
        assert!(!names_match("meter-v2", "Acme Meter v3"));
        assert!(!names_match("meter-2000", "meter-3000"));
        assert!(!names_match("sim-sensor-class", "sim-tracker"));
        assert!(!names_match("sim-sensor-class", "Simulated tracker"));
        assert!(!names_match("sim-tracker-clas", "sim-sensor-01"));
        assert!(!names_match("", ""));
        assert_eq!(
            uuid_text("73696d2d-7365-6e73-6f72-2d636c617373").as_deref(),
            Some("sim-sensor-class")
        );
        assert_eq!(uuid_text("ee33927e-e985-577b-ae88-fe98f5a4b587"), None);
    }

    #[test]
    fn sensor_firmware_is_refused_for_a_tracker_naming_both() {
        let img = ImageClaims::of(&sim_image(b"sim-sensor-class", 0x0001_0300));
        assert_eq!(
            check(&img, &sim_device("sensor", 1, Some(0x0001_0200)), false),
            None
        );
        let r = check(&img, &sim_device("tracker", 4, None), false).unwrap();
        assert_eq!(r.code, INCOMPATIBLE);
        assert_eq!(r.dev_eui, "4c4653494d000004");
        assert!(
            r.reason.contains("sim-sensor-class (device class)"),
            "{}",
            r.reason
        );
        assert!(r.reason.contains("sim-tracker (model)"), "{}", r.reason);
    }

    #[test]
    fn a_device_that_says_nothing_is_not_refused() {
        let img = ImageClaims::of(&sim_image(b"sim-sensor-class", 7));
        let blank = DeviceIdentity {
            dev_eui: "0000000000000001".into(),
            device_profile_id: Some("2f0c-profile".into()),
            ..Default::default()
        };
        assert_eq!(check(&img, &blank, false), None);
    }

    #[test]
    fn the_manufacturer_must_match_when_reported() {
        let img = ImageClaims::of(&sim_image(b"sim-sensor-class", 7));
        let mut d = sim_device("sensor", 1, None);
        d.manufacturer_id = Some("acme".into());
        let r = check(&img, &d, false).unwrap();
        assert!(r.reason.contains("manufacturer acme"), "{}", r.reason);
    }

    #[test]
    fn opaque_uuids_are_compared_with_uuids_only() {
        let mut img = sim_image(&[2; 16], 7);
        img.trailer.as_mut().unwrap().manufacturer_uuid =
            "01010101-0101-0101-0101-010101010101".into();
        let claims = ImageClaims::of(&img);
        let mut d = sim_device("sensor", 1, None);
        assert_eq!(
            check(&claims, &d, false),
            None,
            "names are not UUIDs: unknown"
        );
        d.tags.insert(
            "device_class".into(),
            "03030303-0303-0303-0303-030303030303".into(),
        );
        assert_eq!(check(&claims, &d, false).unwrap().code, INCOMPATIBLE);
        d.tags.insert(
            "device_class".into(),
            "02020202-0202-0202-0202-020202020202".into(),
        );
        assert_eq!(check(&claims, &d, false), None);
    }

    #[test]
    fn the_running_version_is_refused_unless_reinstall_is_allowed() {
        let img = ImageClaims::of(&sim_image(b"sim-sensor-class", 0x0001_0300));
        let d = sim_device("sensor", 1, Some(0x0001_0300));
        let r = check(&img, &d, false).unwrap();
        assert_eq!(r.code, ALREADY_RUNNING);
        assert!(r.reason.contains("already runs 1.3.0"), "{}", r.reason);
        assert_eq!(check(&img, &d, true), None);
    }

    #[test]
    fn a_target_without_a_trailer() {
        let mut img = sim_image(b"sim-sensor-class", 1);
        img.trailer = None;
        img.metadata.target = Some("sim-tracker".into());
        img.metadata.to_version = Some("1.2.0".into());
        let claims = ImageClaims::of(&img);
        assert_eq!(
            check(&claims, &sim_device("sensor", 1, None), false)
                .unwrap()
                .code,
            INCOMPATIBLE
        );
        assert_eq!(
            check(&claims, &sim_device("tracker", 4, Some(0x0001_0200)), false)
                .unwrap()
                .code,
            ALREADY_RUNNING
        );
    }
}

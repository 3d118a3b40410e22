//! From the operator's request to checked settings: every default filled in, every value
//! checked against the field that carries it on the air and against the fleet's region, and
//! every problem reported with the field it belongs to, before anything is sent.
//!
//! Defaults (the seed's where they make sense):
//! - `driver`: `chirpstack-v4` when `network.kind` is chirpstack-v4, else `fuota-server-v3`
//! - `keys.lorawan_version`: `1.0` (McRootKey from the GenAppKey)
//! - `multicast.class` C; `dr` 5 in EU868, else the region's RX2 DR; `frequency` 868.1 MHz in
//!   EU868, else the region's RX2 frequency; `ping_slot_periodicity` 4 (Class B, one slot every
//!   16 s); `group_id` 0; `timeout_exp` the smallest that fits every fragment
//! - `unicast.timeout_s` 150, `attempts` 5
//! - `fragmentation.fragment_size` the largest the DR carries (max payload - 3, at most the image
//!   size); `redundancy` 10 frames; `session_index` 0, `matrix` 0, `block_ack_delay` 1,
//!   `descriptor_hex` "00000000"
//! - `request_frag_status`: `after_session`

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::plan::{self, Plan, PlanDevice, PlanInput};
use super::region::RegionInfo;
use super::{
    CampaignKeys, CampaignSettings, DeviceKey, DriverKind, FragStatusRequest,
    FragmentationSettings, MulticastClass, MulticastSettings, UnicastSettings,
};
use crate::config::Config;
use crate::devices::DevEui;
use crate::firmware::FirmwareImage;
use lorafleet_engine::keys::parse_key;

/// The body of `POST /api/campaigns` (and of `PATCH`, merged into the stored one).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    pub name: Option<String>,
    pub firmware_id: Option<i64>,
    pub devices: Option<Vec<String>>,
    /// `chirpstack-v4`, `fuota-server-v3` or `engine`.
    pub driver: Option<String>,
    pub keys: Option<KeysRequest>,
    pub multicast: Option<MulticastRequest>,
    pub unicast: Option<UnicastRequest>,
    pub fragmentation: Option<FragmentationRequest>,
    /// `none`, `after_enqueue` or `after_session`.
    pub request_frag_status: Option<String>,
    /// Engine only: the Version & Status check before and verification after.
    pub engine: Option<EngineRequest>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EngineRequest {
    /// `refuse` (default), `warn` or `off`.
    pub check: Option<String>,
    /// Default true.
    pub verify: Option<bool>,
    /// Default 60.
    pub reboot_delay_s: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysRequest {
    /// One GenAppKey for every LoRaWAN 1.0.x device without its own key (32 hex digits).
    pub gen_app_key: Option<String>,
    /// Keys per DevEUI: `{"gen_app_key": hex}` (1.0.x) or `{"app_key": hex}` (1.1).
    pub per_device: Option<BTreeMap<String, DeviceKeyRequest>>,
    /// `1.0` or `1.1`.
    pub lorawan_version: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceKeyRequest {
    pub gen_app_key: Option<String>,
    pub app_key: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MulticastRequest {
    /// `C` or `B`.
    pub class: Option<String>,
    pub dr: Option<i64>,
    /// Hz (a value below 10000 is read as MHz).
    pub frequency: Option<f64>,
    pub ping_slot_periodicity: Option<i64>,
    pub group_id: Option<i64>,
    pub timeout_exp: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnicastRequest {
    pub timeout_s: Option<i64>,
    pub attempts: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FragmentationRequest {
    /// Bytes per fragment; null, absent or "auto" for the largest the DR carries.
    #[schema(value_type = Option<Object>)]
    pub fragment_size: Option<serde_json::Value>,
    /// Parity fragments.
    pub redundancy: Option<i64>,
    /// Parity fragments as a percentage of the data fragments (instead of `redundancy`).
    pub redundancy_percent: Option<f64>,
    pub session_index: Option<i64>,
    pub matrix: Option<i64>,
    pub block_ack_delay: Option<i64>,
    pub descriptor_hex: Option<String>,
}

/// One problem with a request, naming its field (`multicast.dr`, `keys.per_device.<eui>`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub error: String,
}

/// Every problem found, in request order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn add(&mut self, field: impl Into<String>, error: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            error: error.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}

/// A device of the inventory, as validation and the plan need it.
#[derive(Debug, Clone)]
pub struct KnownDevice {
    pub dev_eui: String,
    pub application_id: Option<String>,
    pub device_profile_id: Option<String>,
    pub slot_size: Option<i64>,
}

/// What validation reads besides the request.
pub struct Context<'a> {
    pub config: &'a Config,
    pub region: &'a RegionInfo,
    pub image: Option<&'a FirmwareImage>,
    /// The requested devices found in the inventory, by lower-case DevEUI.
    pub devices: &'a HashMap<String, KnownDevice>,
    pub observed_uplink_interval_s: Option<f64>,
}

/// A request that passed: what a draft stores.
#[derive(Debug, Clone)]
pub struct Validated {
    pub name: String,
    pub firmware_id: i64,
    pub driver: DriverKind,
    pub devices: Vec<String>,
    pub settings: CampaignSettings,
    pub keys: CampaignKeys,
    pub plan: Plan,
}

fn in_range(
    errors: &mut FieldErrors,
    field: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
    why: &str,
) -> i64 {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        errors.add(field, format!("{field} must be {min}..{max}{why}, got {v}"));
        return default;
    }
    v
}

fn default_driver(config: &Config) -> DriverKind {
    match config.network.kind {
        crate::config::NetworkKind::ChirpstackV4 => DriverKind::ChirpstackV4,
        // Only lorafleet's engine speaks to the simulated devices.
        crate::config::NetworkKind::Simulated => DriverKind::Engine,
        _ => DriverKind::FuotaServerV3,
    }
}

/// The band's duty cycle as the network's gateways observe it; the simulated gateways have
/// none, so planning with one would announce sessions far longer than needed.
fn duty_cycle(ctx: &Context, frequency: u32) -> Option<f64> {
    if ctx.config.network.kind == crate::config::NetworkKind::Simulated {
        None
    } else {
        ctx.region.duty_cycle(frequency)
    }
}

/// Checks a request and fills in its defaults; `Err` lists every problem found.
pub fn validate(req: &CampaignRequest, ctx: &Context) -> Result<Validated, FieldErrors> {
    let mut errors = FieldErrors::default();

    // --- what, where, to whom
    let driver = match req.driver.as_deref() {
        None | Some("") => default_driver(ctx.config),
        Some(d) => d.parse().unwrap_or_else(|e: String| {
            errors.add("driver", e);
            default_driver(ctx.config)
        }),
    };
    let image_size = match (req.firmware_id, ctx.image) {
        (None, _) => {
            errors.add(
                "firmware_id",
                "firmware_id is required: the id of an image of the firmware library",
            );
            None
        }
        (Some(id), None) => {
            errors.add("firmware_id", format!("there is no firmware image {id}"));
            None
        }
        (Some(_), Some(img)) if img.deleted_at.is_some() => {
            errors.add(
                "firmware_id",
                format!("firmware image {} was deleted", img.id),
            );
            None
        }
        (Some(_), Some(img)) if img.missing_at.is_some() => {
            errors.add(
                "firmware_id",
                format!(
                    "the file of firmware image {} ({}) is gone from disk",
                    img.id, img.file_name
                ),
            );
            None
        }
        (Some(_), Some(img)) => Some(img.size as usize),
    };
    let name = match req.name.as_deref().map(str::trim) {
        Some(n) if n.chars().count() > 200 => {
            errors.add("name", "name must be at most 200 characters");
            String::new()
        }
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match ctx.image {
            Some(img) => format!("Update to {}", img.file_name),
            None => "FUOTA campaign".to_string(),
        },
    };

    let mut devices: Vec<String> = Vec::new();
    match &req.devices {
        None => errors.add("devices", "devices is required: a list of DevEUIs"),
        Some(list) if list.is_empty() => errors.add("devices", "add at least one device"),
        Some(list) => {
            let mut seen = HashSet::new();
            let mut unknown = Vec::new();
            for raw in list {
                match raw.parse::<DevEui>() {
                    Err(e) => errors.add("devices", e.to_string()),
                    Ok(eui) => {
                        let eui = eui.to_string();
                        if !seen.insert(eui.clone()) {
                            errors.add("devices", format!("{eui} is listed twice"));
                        } else if !ctx.devices.contains_key(&eui) {
                            unknown.push(eui);
                        } else {
                            devices.push(eui);
                        }
                    }
                }
            }
            if !unknown.is_empty() {
                errors.add(
                    "devices",
                    format!(
                        "lorafleet does not know {} {}; devices appear once ChirpStack reports them",
                        if unknown.len() == 1 { "device" } else { "devices" },
                        unknown.join(", ")
                    ),
                );
            }
        }
    }

    // --- keys
    let keys_req = req.keys.clone().unwrap_or_default();
    let lorawan_version = match keys_req.lorawan_version.as_deref() {
        None | Some("1.0") | Some("1.0.x") => "1.0".to_string(),
        Some("1.1") | Some("1.1.x") => "1.1".to_string(),
        Some(v) => {
            errors.add(
                "keys.lorawan_version",
                format!("keys.lorawan_version must be \"1.0\" or \"1.1\", got {v:?}"),
            );
            "1.0".to_string()
        }
    };
    let mut keys = CampaignKeys::default();
    let check_key = |errors: &mut FieldErrors, field: &str, text: &str| -> Option<[u8; 16]> {
        match parse_key(text) {
            Err(e) => {
                errors.add(field, format!("{field}: {e}"));
                None
            }
            Ok(k) if k == [0; 16] => {
                errors.add(
                    field,
                    format!("{field} is all zeros: that is what an unset key looks like, and devices would derive a multicast key anyone can compute"),
                );
                None
            }
            Ok(k) => Some(k),
        }
    };
    if let Some(text) = keys_req
        .gen_app_key
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    {
        if lorawan_version == "1.1" {
            errors.add(
                "keys.gen_app_key",
                "LoRaWAN 1.1 devices derive the McRootKey from their own AppKey: give keys.per_device.<dev_eui>.app_key instead",
            );
        } else {
            keys.gen_app_key = check_key(&mut errors, "keys.gen_app_key", text);
        }
    }
    for (raw_eui, k) in keys_req.per_device.iter().flatten() {
        let field = format!("keys.per_device.{raw_eui}");
        let Ok(eui) = raw_eui.parse::<DevEui>().map(|e| e.to_string()) else {
            errors.add(field, format!("{raw_eui:?} is not a DevEUI"));
            continue;
        };
        if !devices.contains(&eui) && req.devices.as_ref().is_some_and(|d| !d.is_empty()) {
            errors.add(
                &field,
                format!("{eui} is not one of the campaign's devices"),
            );
            continue;
        }
        match (k.gen_app_key.as_deref(), k.app_key.as_deref()) {
            (Some(g), None) => {
                if let Some(key) = check_key(&mut errors, &format!("{field}.gen_app_key"), g) {
                    keys.per_device.insert(eui, DeviceKey::GenAppKey(key));
                }
            }
            (None, Some(a)) => {
                if let Some(key) = check_key(&mut errors, &format!("{field}.app_key"), a) {
                    keys.per_device.insert(eui, DeviceKey::AppKey(key));
                }
            }
            _ => errors.add(
                field,
                "give exactly one of gen_app_key (LoRaWAN 1.0.x) or app_key (1.1)",
            ),
        }
    }
    // ChirpStack v4 holds the keys itself (read through DeviceService.GetKeys at start), and
    // the engine asks the network for missing ones in its preflight; the v3 FUOTA server needs
    // them here.
    if driver == DriverKind::FuotaServerV3 && !errors.has("keys.gen_app_key") {
        let missing: Vec<&String> = devices
            .iter()
            .filter(|d| keys.root_key(d, &lorawan_version).is_none())
            .filter(|d| {
                !keys_req
                    .per_device
                    .as_ref()
                    .is_some_and(|p| p.contains_key(*d))
            })
            .collect();
        if !missing.is_empty() {
            errors.add(
                "keys",
                format!(
                    "no key material for {}: give keys.gen_app_key{} or a key per device in keys.per_device",
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    if lorawan_version == "1.1" { " (1.0.x only)" } else { "" }
                ),
            );
        }
    }

    // --- multicast
    let mc = req.multicast.clone().unwrap_or_default();
    let class = match mc.class.as_deref() {
        None | Some("C") | Some("c") => MulticastClass::C,
        Some("B") | Some("b") => MulticastClass::B,
        Some(c) => {
            errors.add(
                "multicast.class",
                format!("multicast.class must be \"C\" or \"B\", got {c:?}"),
            );
            MulticastClass::C
        }
    };
    let eu868 = ctx.region.name == lrwn::region::CommonName::EU868;
    let (rx2_freq, rx2_dr) = ctx.region.rx2();
    let default_dr = if eu868 { 5 } else { i64::from(rx2_dr) };
    let dr = in_range(&mut errors, "multicast.dr", mc.dr, default_dr, 0, 15, "") as u8;
    let modulation = match ctx.region.downlink_modulation(dr) {
        Ok(m) => Some(m),
        Err(e) => {
            if !errors.has("multicast.dr") {
                errors.add("multicast.dr", e);
            }
            None
        }
    };
    let frequency = match mc.frequency {
        None => {
            if eu868 {
                868_100_000
            } else {
                rx2_freq
            }
        }
        Some(f) if f.is_finite() && f > 0.0 && f < 10_000.0 => (f * 1e6).round() as u32,
        Some(f) if f.is_finite() && f > 0.0 && f < 4e9 => f.round() as u32,
        Some(f) => {
            errors.add(
                "multicast.frequency",
                format!("multicast.frequency {f} is not a frequency in Hz"),
            );
            rx2_freq
        }
    };
    let (lo, hi) = ctx.region.band();
    if !(lo..=hi).contains(&frequency) && !errors.has("multicast.frequency") {
        errors.add(
            "multicast.frequency",
            format!(
                "{:.3} MHz is outside {}'s downlink band {:.3}..{:.3} MHz",
                f64::from(frequency) / 1e6,
                ctx.region.name,
                f64::from(lo) / 1e6,
                f64::from(hi) / 1e6
            ),
        );
    }
    let ping_slot_periodicity = in_range(
        &mut errors,
        "multicast.ping_slot_periodicity",
        mc.ping_slot_periodicity,
        4,
        0,
        7,
        " (one ping slot every 2^n seconds)",
    ) as u8;
    let group_id = in_range(
        &mut errors,
        "multicast.group_id",
        mc.group_id,
        0,
        0,
        3,
        " (TS005 has four multicast groups)",
    ) as u8;
    let explicit_timeout = match mc.timeout_exp {
        None => None,
        Some(t) if (0..=15).contains(&t) => Some(t as u8),
        Some(t) => {
            errors.add(
                "multicast.timeout_exp",
                format!(
                    "multicast.timeout_exp must be 0..15, got {t}: TS005 sends it in 4 bits and the session lasts 2^n seconds (Class C) or 2^n beacon periods (Class B), so {t} cannot be sent; leave it empty to have it computed from the plan"
                ),
            );
            None
        }
    };

    // --- unicast
    let uc = req.unicast.clone().unwrap_or_default();
    let timeout_s = in_range(
        &mut errors,
        "unicast.timeout_s",
        uc.timeout_s,
        150,
        1,
        86_400,
        " seconds (at least the devices' uplink interval)",
    ) as u32;
    let attempts = in_range(&mut errors, "unicast.attempts", uc.attempts, 5, 1, 100, "") as u32;

    // --- fragmentation
    let fr = req.fragmentation.clone().unwrap_or_default();
    let max_payload = if errors.has("multicast.dr") {
        None
    } else {
        match ctx.region.max_payload(dr) {
            Ok(n) => Some(n),
            Err(e) => {
                errors.add("multicast.dr", e);
                None
            }
        }
    };
    let max_fragment = max_payload.map(|n| n.saturating_sub(plan::FRAGMENT_HEADER).min(255));
    let (fragment_size, fragment_size_auto) = match &fr.fragment_size {
        None | Some(serde_json::Value::Null) => (
            max_fragment
                .map(|m| m.min(image_size.unwrap_or(m)).max(1))
                .unwrap_or(50),
            true,
        ),
        Some(serde_json::Value::String(s)) if s == "auto" => (
            max_fragment
                .map(|m| m.min(image_size.unwrap_or(m)).max(1))
                .unwrap_or(50),
            true,
        ),
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => {
            let v = n.as_u64().unwrap_or(0) as usize;
            match (max_payload, max_fragment) {
                _ if v == 0 => {
                    errors.add(
                        "fragmentation.fragment_size",
                        "fragmentation.fragment_size must be at least 1",
                    );
                    (1, false)
                }
                (Some(n), Some(m)) if v > m => {
                    errors.add(
                        "fragmentation.fragment_size",
                        format!(
                            "a fragment of {v} bytes plus its 3-byte header ({} bytes) does not fit DR{dr}'s maximum payload of {n} bytes in {}; use at most {m} (or leave it empty for the largest)",
                            v + 3,
                            ctx.region.name
                        ),
                    );
                    (m, false)
                }
                _ => (v.min(255), false),
            }
        }
        Some(other) => {
            errors.add(
                "fragmentation.fragment_size",
                format!("fragmentation.fragment_size must be a whole number of bytes or null (auto), got {other}"),
            );
            (50, false)
        }
    };
    let m = image_size.map(|s| plan::fragments_for(s, fragment_size).0);
    let max_n = lorafleet_codec::fragmentation::MAX_FRAGMENTS;
    if let Some(m) = m {
        if m > max_n {
            errors.add(
                "fragmentation.fragment_size",
                format!(
                    "the image needs {m} fragments of {fragment_size} bytes, more than the {max_n} TS004's 14-bit fragment number can count; use larger fragments (a faster DR) or a smaller image"
                ),
            );
        }
    }
    let redundancy = match (fr.redundancy, fr.redundancy_percent) {
        (Some(_), Some(_)) => {
            errors.add(
                "fragmentation.redundancy_percent",
                "give either fragmentation.redundancy (frames) or fragmentation.redundancy_percent, not both",
            );
            10
        }
        (Some(r), None) if r < 0 => {
            errors.add(
                "fragmentation.redundancy",
                format!("fragmentation.redundancy must be 0 or more, got {r}"),
            );
            10
        }
        (Some(r), None) => r as u64,
        (None, Some(p)) if !(0.0..=1000.0).contains(&p) || !p.is_finite() => {
            errors.add(
                "fragmentation.redundancy_percent",
                format!("fragmentation.redundancy_percent must be 0..1000, got {p}"),
            );
            10
        }
        (None, Some(p)) => ((m.unwrap_or(0) as f64) * p / 100.0).ceil() as u64,
        (None, None) => 10,
    };
    let redundancy_percent = fr
        .redundancy_percent
        .filter(|p| p.is_finite() && *p >= 0.0 && p.fract() == 0.0)
        .map(|p| p as u32);
    if let Some(m) = m.filter(|&m| m <= max_n) {
        if m as u64 + redundancy > max_n as u64 {
            errors.add(
                if fr.redundancy_percent.is_some() { "fragmentation.redundancy_percent" } else { "fragmentation.redundancy" },
                format!(
                    "{m} data fragments plus {redundancy} parity fragments exceed the {max_n} TS004's 14-bit fragment number can count; use at most {} parity fragments",
                    max_n - m
                ),
            );
        }
        if driver == DriverKind::ChirpstackV4 {
            let pct =
                redundancy_percent.unwrap_or_else(|| plan::v4_percent_for(m, redundancy as usize));
            if pct > 100 {
                errors.add(
                    if fr.redundancy_percent.is_some() { "fragmentation.redundancy_percent" } else { "fragmentation.redundancy" },
                    format!("ChirpStack v4 takes redundancy as a percentage of 0..100; {redundancy} parity fragments for {m} data fragments would be {pct} %"),
                );
            }
        }
    }
    let session_index = in_range(
        &mut errors,
        "fragmentation.session_index",
        fr.session_index,
        0,
        0,
        3,
        " (TS004 has four fragmentation sessions)",
    ) as u8;
    let matrix = in_range(
        &mut errors,
        "fragmentation.matrix",
        fr.matrix,
        0,
        0,
        7,
        " (a 3-bit field; 0 is the only matrix TS004 v1 defines)",
    ) as u8;
    let block_ack_delay = in_range(
        &mut errors,
        "fragmentation.block_ack_delay",
        fr.block_ack_delay,
        1,
        0,
        7,
        " (a 3-bit field)",
    ) as u8;
    let descriptor_hex = match fr.descriptor_hex.as_deref().map(str::trim) {
        None | Some("") => "00000000".to_string(),
        Some(d) => {
            let clean: String = d.chars().filter(|c| !c.is_whitespace()).collect();
            let clean = clean
                .strip_prefix("0x")
                .unwrap_or(&clean)
                .to_ascii_lowercase();
            match hex::decode(&clean) {
                Ok(b) if b.len() == 4 => clean,
                Ok(b) => {
                    errors.add(
                        "fragmentation.descriptor_hex",
                        format!(
                            "the descriptor is exactly 4 bytes (8 hex digits), got {} bytes",
                            b.len()
                        ),
                    );
                    "00000000".into()
                }
                Err(_) => {
                    errors.add(
                        "fragmentation.descriptor_hex",
                        "the descriptor must be 8 hex digits",
                    );
                    "00000000".into()
                }
            }
        }
    };
    let request_frag_status = match req.request_frag_status.as_deref() {
        None | Some("after_session") => FragStatusRequest::AfterSession,
        Some("after_enqueue") => FragStatusRequest::AfterEnqueue,
        Some("none") => FragStatusRequest::None,
        Some(o) => {
            errors.add(
                "request_frag_status",
                format!("request_frag_status must be \"none\", \"after_enqueue\" or \"after_session\", got {o:?}"),
            );
            FragStatusRequest::AfterSession
        }
    };

    let er = req.engine.clone().unwrap_or_default();
    let mut engine = super::EngineSettings::default();
    match er.check.as_deref() {
        None => {}
        Some("refuse") => engine.check = lorafleet_engine::machine::CheckMode::Refuse,
        Some("warn") => engine.check = lorafleet_engine::machine::CheckMode::Warn,
        Some("off") => engine.check = lorafleet_engine::machine::CheckMode::Off,
        Some(o) => errors.add(
            "engine.check",
            format!("engine.check must be \"refuse\", \"warn\" or \"off\", got {o:?}"),
        ),
    }
    if let Some(v) = er.verify {
        engine.verify = v;
    }
    engine.reboot_delay_s = in_range(
        &mut errors,
        "engine.reboot_delay_s",
        er.reboot_delay_s,
        i64::from(engine.reboot_delay_s),
        0,
        86_400,
        " seconds",
    ) as u32;

    let mut settings = CampaignSettings {
        lorawan_version,
        multicast: MulticastSettings {
            class,
            dr,
            frequency,
            ping_slot_periodicity,
            group_id,
            timeout_exp: explicit_timeout.unwrap_or(0),
            timeout_exp_auto: explicit_timeout.is_none(),
        },
        unicast: UnicastSettings {
            timeout_s,
            attempts,
        },
        fragmentation: FragmentationSettings {
            fragment_size: fragment_size.min(255) as u8,
            fragment_size_auto,
            redundancy: redundancy.min(u64::from(u32::MAX)) as u32,
            redundancy_percent,
            session_index,
            matrix,
            block_ack_delay,
            descriptor_hex,
        },
        request_frag_status,
        engine,
    };

    let (Some(modulation), Some(image_size), Some(max_fragment)) =
        (modulation, image_size, max_fragment)
    else {
        return Err(errors);
    };
    // The session exponent: computed, or checked against what the fragments need.
    let m = m.unwrap_or(0);
    let (r, _) = plan::effective_redundancy(&settings, driver, m);
    let frame = plan::FRAME_OVERHEAD + plan::FRAGMENT_HEADER + fragment_size;
    let airtime = plan::airtime_s(modulation, frame);
    let interval = plan::fragment_interval_s(
        class,
        airtime,
        duty_cycle(ctx, frequency),
        ctx.config.fuota.class_c_margin_s as f64,
        ping_slot_periodicity,
    );
    let (needed, exp) = plan::session_needed(class, m + r, interval, ping_slot_periodicity);
    if explicit_timeout.is_none() {
        match exp {
            Some(e) => settings.multicast.timeout_exp = e,
            None if !errors.has("multicast.timeout_exp") => errors.add(
                "multicast.timeout_exp",
                format!(
                    "sending {} fragments takes about {:.0} s, longer than the longest session TS005 can announce ({}); use a faster DR, larger fragments or less redundancy",
                    m + r,
                    needed,
                    match class {
                        MulticastClass::C => "2^15 s, about 9 h".to_string(),
                        MulticastClass::B => "2^15 beacon periods".to_string(),
                    }
                ),
            ),
            None => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let plan_devices: Vec<PlanDevice> = devices
        .iter()
        .map(|d| PlanDevice {
            dev_eui: d.clone(),
            slot_size: ctx.devices.get(d).and_then(|k| k.slot_size),
        })
        .collect();
    let plan = plan::compute(&PlanInput {
        region: ctx.region.name.to_string(),
        settings: &settings,
        driver,
        modulation,
        max_fragment_size: max_fragment,
        image_size,
        duty_cycle: duty_cycle(ctx, frequency),
        class_c_margin_s: ctx.config.fuota.class_c_margin_s as f64,
        devices: &plan_devices,
        observed_uplink_interval_s: ctx.observed_uplink_interval_s,
    });
    Ok(Validated {
        name,
        firmware_id: req.firmware_id.unwrap_or(0),
        driver,
        devices,
        settings,
        keys,
        plan,
    })
}

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
//!   size); `redundancy` 10 frames (the API raises it to the redundancy advice at the network's
//!   loss: `web::plan_network`); `session_index` 0, `matrix` 0, `block_ack_delay` 1,
//!   `descriptor_hex` "00000000"
//! - `request_frag_status`: `after_session`
//! - `fragmentation.parity` `fixed`; with `adaptive`, `parity_group` none (each group what the
//!   neediest device's answer asks for) and `status_wait_s` the longest answer delay
//!   BlockAckDelay allows plus 10 %
//! - `packages`, `device_overrides`: nothing (each device's profile on the network server, else
//!   v1 on FPorts 200/201/202/203); `device_limits`: the firmware sidecar's, if any
//!   (`campaigns::packages` checks them and says how the layers combine)

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use lrwn::region::CommonName;

use super::packages::{
    self as pkg, DeviceLimits, DeviceLimitsRequest, DeviceOverrideRequest, PackagesRequest,
};
use super::plan::{self, Plan, PlanDevice, PlanInput};
use super::region::{Modulation, RegionInfo};
use super::{
    CampaignKeys, CampaignSettings, DeviceKey, DriverKind, EngineSettings, FragStatusRequest,
    FragmentationSettings, MulticastClass, MulticastSettings, ParityMode, UnicastSettings,
};
use crate::config::Config;
use crate::devices::DevEui;
use crate::firmware::FirmwareImage;
pub use crate::storage::campaigns::Draft;
pub use crate::storage::devices::KnownDevice;
use lorafleet_engine::keys::parse_key;

/// The body of `POST /api/campaigns` (and of `PATCH`, merged into the stored one).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignRequest {
    pub name: Option<String>,
    pub firmware_id: Option<i64>,
    pub devices: Option<Vec<String>>,
    /// Instead of `devices`: the device list's filter parameters (`model`, `version`, ...),
    /// resolved into devices when the draft is saved and again when the campaign starts.
    pub device_filter: Option<crate::storage::devices::DeviceFilterParams>,
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
    /// Engine only: package versions and FPorts for every device.
    pub packages: Option<PackagesRequest>,
    /// What the devices' fragment decoders hold.
    pub device_limits: Option<DeviceLimitsRequest>,
    /// Per DevEUI: `{"packages": {...}, "device_limits": {...}}`.
    pub device_overrides: Option<BTreeMap<String, DeviceOverrideRequest>>,
    /// Engine only: roll out in waves of growing (cumulative) shares of the devices, each its
    /// own multicast session, with success and error thresholds (`campaigns::waves`).
    pub rollout: Option<super::waves::RolloutRequest>,
    /// RFC 3339 with an offset: a started campaign waits in state `scheduled` until the
    /// network's clock reaches it (one in the past starts at once).
    pub start_at: Option<String>,
    /// Send the image also to devices that already run its version (default false: they are
    /// refused as `already_running`).
    pub allow_reinstall: Option<bool>,
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
    /// `version_status`, `firmware_management`, `auto` (default) or `none`.
    pub check_method: Option<String>,
    /// `version_status`, `firmware_management`, `auto` (default) or `none`.
    pub verify_method: Option<String>,
    /// `reboot_time` (default) or `reboot_countdown`.
    pub reboot_with: Option<String>,
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
    /// Gateway IDs (EUI-64, hex) to send the multicast frames from; empty or absent: chosen.
    pub gateways: Option<Vec<String>>,
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
    /// `"fixed"` (default) or `"adaptive"`.
    pub parity: Option<String>,
    /// Adaptive parity: the most parity fragments per group (default: what the neediest
    /// device's answer asks for).
    pub parity_group: Option<i64>,
    /// Adaptive parity: seconds to wait for status answers (default from `block_ack_delay`).
    pub status_wait_s: Option<f64>,
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

/// What validation reads besides the request.
pub struct Context<'a> {
    pub config: &'a Config,
    pub region: &'a RegionInfo,
    pub image: Option<&'a FirmwareImage>,
    /// The requested devices found in the inventory, by lower-case DevEUI.
    pub devices: &'a HashMap<String, KnownDevice>,
    pub observed_uplink_interval_s: Option<f64>,
    /// The firmware sidecar's `[device_limits]`.
    pub model_limits: Option<DeviceLimits>,
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
    /// The checked `rollout`, stored beside the draft.
    pub rollout: Option<super::waves::Rollout>,
    pub start_at: Option<chrono::DateTime<chrono::Utc>>,
    pub allow_reinstall: bool,
    /// Devices the image must not go to (filled in by the API from the devices' reports:
    /// [`super::guards`]).
    pub refused: Vec<super::Refusal>,
}

impl Validated {
    /// What of it the draft's row and devices store.
    pub fn draft(&self) -> Draft<'_> {
        Draft {
            name: &self.name,
            firmware_id: self.firmware_id,
            driver: self.driver,
            devices: &self.devices,
            settings: &self.settings,
            keys: &self.keys,
        }
    }
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
    let driver = driver(req.driver.as_deref(), ctx.config, &mut errors);
    let image_size = image_size(req.firmware_id, ctx.image, &mut errors);
    let name = name(req.name.as_deref(), ctx.image, &mut errors);
    let devices = devices(req.devices.as_deref(), ctx.devices, &mut errors);
    let (lorawan_version, keys) = keys(
        &req.keys.clone().unwrap_or_default(),
        &devices,
        req.devices.as_ref().is_some_and(|d| !d.is_empty()),
        driver,
        &mut errors,
    );
    let mc = req.multicast.clone().unwrap_or_default();
    let (multicast, modulation) = multicast(&mc, ctx.region, &mut errors);
    let unicast = unicast(&req.unicast.clone().unwrap_or_default(), &mut errors);
    let speaks = pkg::check(
        &pkg::Given {
            packages: req.packages.as_ref(),
            device_limits: req.device_limits.as_ref(),
            device_overrides: req.device_overrides.as_ref(),
            driver,
            devices: &devices,
            status_port: ctx.config.status_protocol.f_port,
        },
        &mut errors,
    );
    let fragments = fragmentation(
        &req.fragmentation.clone().unwrap_or_default(),
        ctx.region,
        multicast.dr,
        (
            image_size,
            pkg::smallest_fragment_limit(
                &devices,
                speaks.device_limits,
                &speaks.device_overrides,
                ctx.model_limits,
            ),
        ),
        driver,
        &mut errors,
    );
    let request_frag_status = request_frag_status(req.request_frag_status.as_deref(), &mut errors);
    let start_at = start_at(req.start_at.as_deref(), &mut errors);
    let engine = engine(&req.engine.clone().unwrap_or_default(), &mut errors);
    let rollout = super::waves::check(req.rollout.as_ref(), driver, &mut errors);
    let mut settings = CampaignSettings {
        lorawan_version,
        multicast,
        unicast,
        fragmentation: fragments.settings,
        request_frag_status,
        engine,
        packages: speaks.packages,
        device_limits: speaks.device_limits,
        device_overrides: speaks.device_overrides,
        model_device_limits: ctx.model_limits,
    };

    let (Some(modulation), Some(image_size), Some(max_fragment)) =
        (modulation, image_size, fragments.max_fragment)
    else {
        return Err(errors);
    };
    let session = Session {
        driver,
        modulation,
        fragment_size: fragments.size,
        data_fragments: fragments.data_fragments.unwrap_or(0),
    };
    session_timeout(&mut settings, &session, ctx, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let plan = plan_for(&settings, &session, max_fragment, image_size, &devices, ctx);
    Ok(Validated {
        name,
        firmware_id: req.firmware_id.unwrap_or(0),
        driver,
        devices,
        settings,
        keys,
        plan,
        rollout,
        start_at,
        allow_reinstall: req.allow_reinstall.unwrap_or(false),
        refused: Vec::new(),
    })
}

/// `start_at` as a UTC time; it must say its offset (`Z` or `+01:00`), so that the time the
/// operator meant is the time it starts.
pub fn start_at(
    text: Option<&str>,
    errors: &mut FieldErrors,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = text.map(str::trim).filter(|t| !t.is_empty())?;
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => Some(t.with_timezone(&chrono::Utc)),
        Err(e) => {
            errors.add(
                "start_at",
                format!("start_at must be an RFC 3339 time with its offset, e.g. 2026-12-24T08:00:00+01:00, got {text:?} ({e})"),
            );
            None
        }
    }
}

// --- what, where, to whom

fn driver(text: Option<&str>, config: &Config, errors: &mut FieldErrors) -> DriverKind {
    match text {
        None | Some("") => default_driver(config),
        Some(d) => d.parse().unwrap_or_else(|e: String| {
            errors.add("driver", e);
            default_driver(config)
        }),
    }
}

/// The image's size in bytes, when the request names an image that can be sent.
fn image_size(
    firmware_id: Option<i64>,
    image: Option<&FirmwareImage>,
    errors: &mut FieldErrors,
) -> Option<usize> {
    match (firmware_id, image) {
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
    }
}

fn name(text: Option<&str>, image: Option<&FirmwareImage>, errors: &mut FieldErrors) -> String {
    match text.map(str::trim) {
        Some(n) if n.chars().count() > 200 => {
            errors.add("name", "name must be at most 200 characters");
            String::new()
        }
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match image {
            Some(img) => format!("Update to {}", img.file_name),
            None => "FUOTA campaign".to_string(),
        },
    }
}

/// The requested devices that the inventory knows, as lower-case DevEUIs in request order.
fn devices(
    list: Option<&[String]>,
    known: &HashMap<String, KnownDevice>,
    errors: &mut FieldErrors,
) -> Vec<String> {
    let mut devices: Vec<String> = Vec::new();
    let list = match list {
        None => {
            errors.add("devices", "devices is required: a list of DevEUIs");
            return devices;
        }
        Some([]) => {
            errors.add("devices", "add at least one device");
            return devices;
        }
        Some(list) => list,
    };
    let mut seen = HashSet::new();
    let mut unknown = Vec::new();
    for raw in list {
        match raw.parse::<DevEui>() {
            Err(e) => errors.add("devices", e.to_string()),
            Ok(eui) => {
                let eui = eui.to_string();
                if !seen.insert(eui.clone()) {
                    errors.add("devices", format!("{eui} is listed twice"));
                } else if !known.contains_key(&eui) {
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
                if unknown.len() == 1 {
                    "device"
                } else {
                    "devices"
                },
                unknown.join(", ")
            ),
        );
    }
    devices
}

// --- keys

/// The LoRaWAN version the keys are for and the keys; `listed` says the request named devices
/// (a per-device key for a device that is not among them is then refused).
fn keys(
    req: &KeysRequest,
    devices: &[String],
    listed: bool,
    driver: DriverKind,
    errors: &mut FieldErrors,
) -> (String, CampaignKeys) {
    let lorawan_version = lorawan_version(req.lorawan_version.as_deref(), errors);
    let mut keys = CampaignKeys::default();
    if let Some(text) = req.gen_app_key.as_deref().filter(|t| !t.trim().is_empty()) {
        if lorawan_version == "1.1" {
            errors.add(
                "keys.gen_app_key",
                "LoRaWAN 1.1 devices derive the McRootKey from their own AppKey: give keys.per_device.<dev_eui>.app_key instead",
            );
        } else {
            keys.gen_app_key = check_key(errors, "keys.gen_app_key", text);
        }
    }
    for (raw_eui, k) in req.per_device.iter().flatten() {
        per_device_key(raw_eui, k, devices, listed, &mut keys, errors);
    }
    // ChirpStack v4 holds the keys itself (read through DeviceService.GetKeys at start), and
    // the engine asks the network for missing ones in its preflight; the v3 FUOTA server needs
    // them here.
    if driver == DriverKind::FuotaServerV3 && !errors.has("keys.gen_app_key") {
        missing_keys(req, devices, &keys, &lorawan_version, errors);
    }
    (lorawan_version, keys)
}

fn lorawan_version(text: Option<&str>, errors: &mut FieldErrors) -> String {
    match text {
        None | Some("1.0" | "1.0.x") => "1.0".to_string(),
        Some("1.1" | "1.1.x") => "1.1".to_string(),
        Some(v) => {
            errors.add(
                "keys.lorawan_version",
                format!("keys.lorawan_version must be \"1.0\" or \"1.1\", got {v:?}"),
            );
            "1.0".to_string()
        }
    }
}

fn check_key(errors: &mut FieldErrors, field: &str, text: &str) -> Option<[u8; 16]> {
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
}

fn per_device_key(
    raw_eui: &str,
    k: &DeviceKeyRequest,
    devices: &[String],
    listed: bool,
    keys: &mut CampaignKeys,
    errors: &mut FieldErrors,
) {
    let field = format!("keys.per_device.{raw_eui}");
    let Ok(eui) = raw_eui.parse::<DevEui>().map(|e| e.to_string()) else {
        errors.add(field, format!("{raw_eui:?} is not a DevEUI"));
        return;
    };
    if !devices.contains(&eui) && listed {
        errors.add(
            &field,
            format!("{eui} is not one of the campaign's devices"),
        );
        return;
    }
    match (k.gen_app_key.as_deref(), k.app_key.as_deref()) {
        (Some(g), None) => {
            if let Some(key) = check_key(errors, &format!("{field}.gen_app_key"), g) {
                keys.per_device.insert(eui, DeviceKey::GenAppKey(key));
            }
        }
        (None, Some(a)) => {
            if let Some(key) = check_key(errors, &format!("{field}.app_key"), a) {
                keys.per_device.insert(eui, DeviceKey::AppKey(key));
            }
        }
        _ => errors.add(
            field,
            "give exactly one of gen_app_key (LoRaWAN 1.0.x) or app_key (1.1)",
        ),
    }
}

/// Devices with no key to derive their McRootKey from (a refused per-device key counts as
/// given: its own error says what is wrong with it).
fn missing_keys(
    req: &KeysRequest,
    devices: &[String],
    keys: &CampaignKeys,
    lorawan_version: &str,
    errors: &mut FieldErrors,
) {
    let missing: Vec<&String> = devices
        .iter()
        .filter(|d| keys.root_key(d, lorawan_version).is_none())
        .filter(|d| !req.per_device.as_ref().is_some_and(|p| p.contains_key(*d)))
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

/// The multicast settings (`timeout_exp` 0 and `timeout_exp_auto` when it is to be computed
/// from the plan) and the DR's modulation, when the DR is one the region sends.
fn multicast(
    mc: &MulticastRequest,
    region: &RegionInfo,
    errors: &mut FieldErrors,
) -> (MulticastSettings, Option<Modulation>) {
    let class = multicast_class(mc.class.as_deref(), errors);
    let (dr, modulation) = multicast_dr(mc.dr, region, errors);
    let frequency = multicast_frequency(mc.frequency, region, errors);
    let ping_slot_periodicity = in_range(
        errors,
        "multicast.ping_slot_periodicity",
        mc.ping_slot_periodicity,
        4,
        0,
        7,
        " (one ping slot every 2^n seconds)",
    ) as u8;
    let group_id = in_range(
        errors,
        "multicast.group_id",
        mc.group_id,
        0,
        0,
        3,
        " (TS005 has four multicast groups)",
    ) as u8;
    let explicit_timeout = timeout_exp(mc.timeout_exp, errors);
    let settings = MulticastSettings {
        class,
        dr,
        frequency,
        ping_slot_periodicity,
        group_id,
        timeout_exp: explicit_timeout.unwrap_or(0),
        timeout_exp_auto: explicit_timeout.is_none(),
        gateways: gateway_ids(mc.gateways.as_deref(), errors),
    };
    (settings, modulation)
}

/// `multicast.gateways`: ChirpStack's gateway IDs, 16 hex digits each, lower-cased.
fn gateway_ids(ids: Option<&[String]>, errors: &mut FieldErrors) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids.unwrap_or_default() {
        let id = id.trim().to_ascii_lowercase();
        if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            if !out.contains(&id) {
                out.push(id);
            }
        } else {
            errors.add(
                "multicast.gateways",
                format!("multicast.gateways must hold gateway IDs of 16 hex digits, got {id:?}"),
            );
        }
    }
    out
}

fn multicast_class(text: Option<&str>, errors: &mut FieldErrors) -> MulticastClass {
    match text {
        None | Some("C" | "c") => MulticastClass::C,
        Some("B" | "b") => MulticastClass::B,
        Some(c) => {
            errors.add(
                "multicast.class",
                format!("multicast.class must be \"C\" or \"B\", got {c:?}"),
            );
            MulticastClass::C
        }
    }
}

/// The DR (5 in EU868, else the region's RX2 DR) and its modulation.
fn multicast_dr(
    value: Option<i64>,
    region: &RegionInfo,
    errors: &mut FieldErrors,
) -> (u8, Option<Modulation>) {
    let default_dr = if region.name == CommonName::EU868 {
        5
    } else {
        i64::from(region.rx2().1)
    };
    let dr = in_range(errors, "multicast.dr", value, default_dr, 0, 15, "") as u8;
    let modulation = match region.downlink_modulation(dr) {
        Ok(m) => Some(m),
        Err(e) => {
            if !errors.has("multicast.dr") {
                errors.add("multicast.dr", e);
            }
            None
        }
    };
    (dr, modulation)
}

/// Hz: 868.1 MHz in EU868, else the region's RX2 frequency; a value below 10000 is MHz.
fn multicast_frequency(value: Option<f64>, region: &RegionInfo, errors: &mut FieldErrors) -> u32 {
    let rx2_freq = region.rx2().0;
    let frequency = match value {
        None => {
            if region.name == CommonName::EU868 {
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
    let (lo, hi) = region.band();
    if !(lo..=hi).contains(&frequency) && !errors.has("multicast.frequency") {
        errors.add(
            "multicast.frequency",
            format!(
                "{:.3} MHz is outside {}'s downlink band {:.3}..{:.3} MHz",
                f64::from(frequency) / 1e6,
                region.name,
                f64::from(lo) / 1e6,
                f64::from(hi) / 1e6
            ),
        );
    }
    frequency
}

/// The session exponent when given (and sendable); `None` has it computed from the plan.
fn timeout_exp(value: Option<i64>, errors: &mut FieldErrors) -> Option<u8> {
    match value {
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
    }
}

// --- unicast

fn unicast(uc: &UnicastRequest, errors: &mut FieldErrors) -> UnicastSettings {
    let timeout_s = in_range(
        errors,
        "unicast.timeout_s",
        uc.timeout_s,
        150,
        1,
        86_400,
        " seconds (at least the devices' uplink interval)",
    ) as u32;
    let attempts = in_range(errors, "unicast.attempts", uc.attempts, 5, 1, 100, "") as u32;
    UnicastSettings {
        timeout_s,
        attempts,
    }
}

// --- fragmentation

/// The fragmentation settings and what the session and the plan need from this section.
struct Fragments {
    settings: FragmentationSettings,
    /// Bytes per fragment, before the settings clamp it to a byte.
    size: usize,
    /// The largest fragment the DR carries, when the DR is valid.
    max_fragment: Option<usize>,
    /// Data fragments of the image, when there is an image.
    data_fragments: Option<usize>,
}

/// `sizes`: the image's, and the largest fragment every device takes (its `device_limits`).
fn fragmentation(
    fr: &FragmentationRequest,
    region: &RegionInfo,
    dr: u8,
    sizes: (Option<usize>, Option<usize>),
    driver: DriverKind,
    errors: &mut FieldErrors,
) -> Fragments {
    let (image_size, device_max) = sizes;
    let max_payload = max_payload(region, dr, errors);
    let max_fragment = max_payload.map(|n| n.saturating_sub(plan::FRAGMENT_HEADER).min(255));
    let limits = SizeLimits {
        region,
        dr,
        max_payload,
        max_fragment,
        image_size,
        device_max,
    };
    let (size, fragment_size_auto) = fragment_size(fr.fragment_size.as_ref(), &limits, errors);
    let m = image_size.map(|s| plan::fragments_for(s, size).0);
    check_fragment_count(m, size, errors);
    let redundancy = redundancy(fr, m, errors);
    let redundancy_percent = fr
        .redundancy_percent
        .filter(|p| p.is_finite() && *p >= 0.0 && p.fract() == 0.0)
        .map(|p| p as u32);
    if let Some(m) = m.filter(|&m| m <= lorafleet_codec::fragmentation::MAX_FRAGMENTS) {
        check_redundancy(fr, m, redundancy, redundancy_percent, driver, errors);
    }
    let (session_index, matrix, block_ack_delay) = session_fields(fr, errors);
    let settings = FragmentationSettings {
        fragment_size: size.min(255) as u8,
        fragment_size_auto,
        redundancy: redundancy.min(u64::from(u32::MAX)) as u32,
        redundancy_percent,
        session_index,
        matrix,
        block_ack_delay,
        descriptor_hex: descriptor_hex(fr.descriptor_hex.as_deref(), errors),
        parity: ParityMode::Fixed,
        parity_group: None,
        status_wait_s: None,
    };
    let settings = adaptive_parity(fr, settings, driver, errors);
    Fragments {
        settings,
        size,
        max_fragment,
        data_fragments: m,
    }
}

// --- adaptive parity (issue 8 item 5)

/// `fragmentation.parity`, `parity_group` and `status_wait_s`: checked, kept as given (their
/// defaults depend on M and BlockAckDelay, filled in where the engine starts).
fn adaptive_parity(
    fr: &FragmentationRequest,
    mut settings: FragmentationSettings,
    driver: DriverKind,
    errors: &mut FieldErrors,
) -> FragmentationSettings {
    settings.parity = match fr.parity.as_deref() {
        None | Some("fixed") => ParityMode::Fixed,
        Some("adaptive") => ParityMode::Adaptive,
        Some(other) => {
            errors.add(
                "fragmentation.parity",
                format!("fragmentation.parity must be \"fixed\" or \"adaptive\", got {other:?}"),
            );
            ParityMode::Fixed
        }
    };
    if settings.parity == ParityMode::Adaptive && driver != DriverKind::Engine {
        errors.add(
            "fragmentation.parity",
            "adaptive parity needs lorafleet's engine (\"driver\": \"engine\"): other FUOTA services send every parity fragment",
        );
    }
    settings.parity_group = match fr.parity_group {
        None => None,
        Some(g) if (1..=i64::from(lorafleet_codec::fragmentation::MAX_N)).contains(&g) => {
            Some(g as u32)
        }
        Some(g) => {
            errors.add(
                "fragmentation.parity_group",
                format!(
                    "fragmentation.parity_group must be 1..{} parity fragments, got {g}",
                    lorafleet_codec::fragmentation::MAX_N
                ),
            );
            None
        }
    };
    settings.status_wait_s = match fr.status_wait_s {
        None => None,
        Some(w) if w.is_finite() && (0.0..=86_400.0).contains(&w) => Some(w),
        Some(w) => {
            errors.add(
                "fragmentation.status_wait_s",
                format!("fragmentation.status_wait_s must be 0..86400 seconds, got {w}"),
            );
            None
        }
    };
    settings
}

/// The DR's maximum payload; unknown when the DR was refused already.
fn max_payload(region: &RegionInfo, dr: u8, errors: &mut FieldErrors) -> Option<usize> {
    if errors.has("multicast.dr") {
        return None;
    }
    match region.max_payload(dr) {
        Ok(n) => Some(n),
        Err(e) => {
            errors.add("multicast.dr", e);
            None
        }
    }
}

/// What bounds the fragment size.
struct SizeLimits<'a> {
    region: &'a RegionInfo,
    dr: u8,
    max_payload: Option<usize>,
    max_fragment: Option<usize>,
    image_size: Option<usize>,
    /// The smallest `max_fragment_size` of the campaign's devices.
    device_max: Option<usize>,
}

/// Bytes per fragment and whether they were chosen here (the largest the DR carries and every
/// device takes, at most the image's size).
fn fragment_size(
    value: Option<&serde_json::Value>,
    limits: &SizeLimits,
    errors: &mut FieldErrors,
) -> (usize, bool) {
    let auto = || {
        limits
            .max_fragment
            .map(|m| m.min(limits.device_max.unwrap_or(m)))
            .map(|m| m.min(limits.image_size.unwrap_or(m)).max(1))
            .unwrap_or(50)
    };
    match value {
        None | Some(serde_json::Value::Null) => (auto(), true),
        Some(serde_json::Value::String(s)) if s == "auto" => (auto(), true),
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => {
            let v = n.as_u64().unwrap_or(0) as usize;
            (explicit_fragment_size(v, limits, errors), false)
        }
        Some(other) => {
            errors.add(
                "fragmentation.fragment_size",
                format!("fragmentation.fragment_size must be a whole number of bytes or null (auto), got {other}"),
            );
            (50, false)
        }
    }
}

fn explicit_fragment_size(v: usize, limits: &SizeLimits, errors: &mut FieldErrors) -> usize {
    match (limits.max_payload, limits.max_fragment) {
        _ if v == 0 => {
            errors.add(
                "fragmentation.fragment_size",
                "fragmentation.fragment_size must be at least 1",
            );
            1
        }
        (Some(n), Some(m)) if v > m => {
            errors.add(
                "fragmentation.fragment_size",
                format!(
                    "a fragment of {v} bytes plus its 3-byte header ({} bytes) does not fit DR{}'s maximum payload of {n} bytes in {}; use at most {m} (or leave it empty for the largest)",
                    v + 3,
                    limits.dr,
                    limits.region.name
                ),
            );
            m
        }
        _ => v.min(255),
    }
}

fn check_fragment_count(m: Option<usize>, fragment_size: usize, errors: &mut FieldErrors) {
    let max_n = lorafleet_codec::fragmentation::MAX_FRAGMENTS;
    if let Some(m) = m.filter(|&m| m > max_n) {
        errors.add(
            "fragmentation.fragment_size",
            format!(
                "the image needs {m} fragments of {fragment_size} bytes, more than the {max_n} TS004's 14-bit fragment number can count; use larger fragments (a faster DR) or a smaller image"
            ),
        );
    }
}

/// Parity fragments: given as frames or as a percentage of the `m` data fragments; 10 by default.
fn redundancy(fr: &FragmentationRequest, m: Option<usize>, errors: &mut FieldErrors) -> u64 {
    match (fr.redundancy, fr.redundancy_percent) {
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
    }
}

/// What TS004 can count and ChirpStack v4 can take, reported on the field the redundancy was
/// given in.
fn check_redundancy(
    fr: &FragmentationRequest,
    m: usize,
    redundancy: u64,
    redundancy_percent: Option<u32>,
    driver: DriverKind,
    errors: &mut FieldErrors,
) {
    let max_n = lorafleet_codec::fragmentation::MAX_FRAGMENTS;
    let field = if fr.redundancy_percent.is_some() {
        "fragmentation.redundancy_percent"
    } else {
        "fragmentation.redundancy"
    };
    if m as u64 + redundancy > max_n as u64 {
        errors.add(
            field,
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
                field,
                format!("ChirpStack v4 takes redundancy as a percentage of 0..100; {redundancy} parity fragments for {m} data fragments would be {pct} %"),
            );
        }
    }
}

/// `session_index`, `matrix` and `block_ack_delay` of FragSessionSetupReq.
fn session_fields(fr: &FragmentationRequest, errors: &mut FieldErrors) -> (u8, u8, u8) {
    let session_index = in_range(
        errors,
        "fragmentation.session_index",
        fr.session_index,
        0,
        0,
        3,
        " (TS004 has four fragmentation sessions)",
    ) as u8;
    let matrix = in_range(
        errors,
        "fragmentation.matrix",
        fr.matrix,
        0,
        0,
        7,
        " (a 3-bit field; 0 is the only matrix TS004 v1 defines)",
    ) as u8;
    let block_ack_delay = in_range(
        errors,
        "fragmentation.block_ack_delay",
        fr.block_ack_delay,
        1,
        0,
        7,
        " (a 3-bit field)",
    ) as u8;
    (session_index, matrix, block_ack_delay)
}

/// The 4-byte descriptor as 8 lower-case hex digits (spaces and `0x` allowed in the request).
fn descriptor_hex(text: Option<&str>, errors: &mut FieldErrors) -> String {
    let d = match text.map(str::trim) {
        None | Some("") => return "00000000".to_string(),
        Some(d) => d,
    };
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

fn request_frag_status(text: Option<&str>, errors: &mut FieldErrors) -> FragStatusRequest {
    match text {
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
    }
}

// --- engine

fn engine(er: &EngineRequest, errors: &mut FieldErrors) -> EngineSettings {
    let mut engine = EngineSettings::default();
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
    engine.check_method = method(er.check_method.as_deref(), "engine.check_method", errors);
    engine.verify_method = method(er.verify_method.as_deref(), "engine.verify_method", errors);
    match er.reboot_with.as_deref() {
        None | Some("reboot_time") => {}
        Some("reboot_countdown") => {
            engine.reboot_with = lorafleet_engine::machine::RebootWith::RebootCountdown
        }
        Some(o) => errors.add(
            "engine.reboot_with",
            format!(
                "engine.reboot_with must be \"reboot_time\" or \"reboot_countdown\", got {o:?}"
            ),
        ),
    }
    engine.reboot_delay_s = in_range(
        errors,
        "engine.reboot_delay_s",
        er.reboot_delay_s,
        i64::from(engine.reboot_delay_s),
        0,
        86_400,
        " seconds",
    ) as u32;
    engine
}

/// `engine.check_method` / `engine.verify_method`.
fn method(
    text: Option<&str>,
    field: &str,
    errors: &mut FieldErrors,
) -> lorafleet_engine::machine::Method {
    use lorafleet_engine::machine::Method;
    match text {
        None | Some("auto") => Method::Auto,
        Some("version_status") => Method::VersionStatus,
        Some("firmware_management") => Method::FirmwareManagement,
        Some("none") => Method::None,
        Some(o) => {
            errors.add(
                field,
                format!("{field} must be \"version_status\", \"firmware_management\", \"auto\" or \"none\", got {o:?}"),
            );
            Method::Auto
        }
    }
}

// --- the session, from the sections together

/// What the session's length depends on besides the settings.
struct Session {
    driver: DriverKind,
    modulation: Modulation,
    fragment_size: usize,
    data_fragments: usize,
}

/// The session exponent: computed when not given, refused when no exponent TS005 can send
/// covers the fragments.
fn session_timeout(
    settings: &mut CampaignSettings,
    session: &Session,
    ctx: &Context,
    errors: &mut FieldErrors,
) {
    if !settings.multicast.timeout_exp_auto {
        return;
    }
    let m = session.data_fragments;
    let mc = &settings.multicast;
    let (class, ping_slot_periodicity) = (mc.class, mc.ping_slot_periodicity);
    let (r, _) = plan::effective_redundancy(settings, session.driver, m);
    let frame = plan::FRAME_OVERHEAD + plan::FRAGMENT_HEADER + session.fragment_size;
    let airtime = plan::airtime_s(session.modulation, frame);
    let interval = plan::fragment_interval_s(
        class,
        airtime,
        duty_cycle(ctx, mc.frequency),
        ctx.config.fuota.class_c_margin_s as f64,
        ping_slot_periodicity,
    );
    let (needed, exp) = plan::session_needed(class, m + r, interval, ping_slot_periodicity);
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

fn plan_for(
    settings: &CampaignSettings,
    session: &Session,
    max_fragment: usize,
    image_size: usize,
    devices: &[String],
    ctx: &Context,
) -> Plan {
    let plan_devices: Vec<PlanDevice> = devices
        .iter()
        .map(|d| PlanDevice {
            dev_eui: d.clone(),
            slot_size: ctx.devices.get(d).and_then(|k| k.slot_size),
        })
        .collect();
    let mut plan = plan::compute(&PlanInput {
        region: ctx.region.name.to_string(),
        settings,
        driver: session.driver,
        modulation: session.modulation,
        max_fragment_size: max_fragment,
        image_size,
        duty_cycle: duty_cycle(ctx, settings.multicast.frequency),
        class_c_margin_s: ctx.config.fuota.class_c_margin_s as f64,
        devices: &plan_devices,
        observed_uplink_interval_s: ctx.observed_uplink_interval_s,
    });
    plan.warnings.extend(pkg::limit_warnings(&pkg::Session {
        devices,
        campaign: settings.device_limits,
        overrides: &settings.device_overrides,
        model: settings.model_device_limits,
        fragment_size: plan.fragment_size,
        data_fragments: plan.data_fragments,
        parity: plan.redundancy_fragments,
    }));
    plan
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::NetworkKind;
    use lorafleet_engine::machine::CheckMode;

    const KEY: &str = "0302030405060708090a0b0c0d0e0f10";
    const A: &str = "0102030405060708";
    const B: &str = "1112131415161718";

    fn eu868() -> RegionInfo {
        RegionInfo::new(CommonName::EU868, false)
    }

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    /// (field, message) of every error, in order.
    type Errors = Vec<(String, String)>;

    fn list(errors: &FieldErrors) -> Errors {
        errors
            .0
            .iter()
            .map(|e| (e.field.clone(), e.error.clone()))
            .collect()
    }

    fn one(field: &str, message: &str) -> Errors {
        vec![(field.to_string(), message.to_string())]
    }

    fn image(size: i64) -> FirmwareImage {
        FirmwareImage {
            id: 7,
            file_name: "fw.bin".into(),
            source: "upload".into(),
            size,
            sha256: String::new(),
            added_at: String::new(),
            missing_at: None,
            deleted_at: None,
            trailer: None,
            trailer_error: None,
            metadata: Default::default(),
            edited: Vec::new(),
            running_campaigns: Vec::new(),
            path: String::new(),
        }
    }

    fn known(euis: &[&str]) -> HashMap<String, KnownDevice> {
        euis.iter()
            .map(|e| {
                let d = KnownDevice {
                    dev_eui: e.to_string(),
                    application_id: None,
                    device_profile_id: None,
                    slot_size: None,
                };
                (e.to_string(), d)
            })
            .collect()
    }

    #[test]
    fn driver_default_follows_the_network_and_names_are_parsed() {
        let cases = [
            (NetworkKind::None, None, DriverKind::FuotaServerV3),
            (
                NetworkKind::ChirpstackV3,
                Some(""),
                DriverKind::FuotaServerV3,
            ),
            (NetworkKind::ChirpstackV4, None, DriverKind::ChirpstackV4),
            (NetworkKind::Simulated, None, DriverKind::Engine),
            (NetworkKind::None, Some("engine"), DriverKind::Engine),
            (
                NetworkKind::None,
                Some("chirpstack-v4"),
                DriverKind::ChirpstackV4,
            ),
        ];
        for (kind, text, want) in cases {
            let mut config = Config::default();
            config.network.kind = kind;
            let mut errors = FieldErrors::default();
            assert_eq!(
                driver(text, &config, &mut errors),
                want,
                "{kind:?} {text:?}"
            );
            assert!(errors.is_empty());
        }
        let mut errors = FieldErrors::default();
        let d = driver(Some("v3"), &Config::default(), &mut errors);
        assert_eq!(d, DriverKind::Engine, "the default kind is simulated");
        assert_eq!(
            list(&errors),
            one(
                "driver",
                "driver must be \"chirpstack-v4\", \"fuota-server-v3\" or \"engine\", got \"v3\""
            )
        );
    }

    #[test]
    fn image_must_exist_and_be_on_disk() {
        let ok = image(1000);
        let mut deleted = image(1000);
        deleted.deleted_at = Some("2026-01-01T00:00:00.000Z".into());
        let mut missing = image(1000);
        missing.missing_at = Some("2026-01-01T00:00:00.000Z".into());
        let cases = [
            (Some(7), Some(&ok), Some(1000), ""),
            (
                None,
                Some(&ok),
                None,
                "firmware_id is required: the id of an image of the firmware library",
            ),
            (Some(3), None, None, "there is no firmware image 3"),
            (
                Some(7),
                Some(&deleted),
                None,
                "firmware image 7 was deleted",
            ),
            (
                Some(7),
                Some(&missing),
                None,
                "the file of firmware image 7 (fw.bin) is gone from disk",
            ),
        ];
        for (id, img, want, message) in cases {
            let mut errors = FieldErrors::default();
            assert_eq!(image_size(id, img, &mut errors), want, "{message}");
            let want_errors = if message.is_empty() {
                vec![]
            } else {
                one("firmware_id", message)
            };
            assert_eq!(list(&errors), want_errors);
        }
    }

    #[test]
    fn name_is_trimmed_defaulted_and_bounded() {
        let img = image(10);
        let long = "é".repeat(201);
        let longest = "é".repeat(200);
        let cases = [
            (Some("  meters 1.4 "), Some(&img), "meters 1.4", false),
            (Some("   "), Some(&img), "Update to fw.bin", false),
            (None, Some(&img), "Update to fw.bin", false),
            (None, None, "FUOTA campaign", false),
            (Some(longest.as_str()), None, longest.as_str(), false),
            (Some(long.as_str()), None, "", true),
        ];
        for (text, img, want, refused) in cases {
            let mut errors = FieldErrors::default();
            assert_eq!(name(text, img, &mut errors), want);
            let want_errors = if refused {
                one("name", "name must be at most 200 characters")
            } else {
                vec![]
            };
            assert_eq!(list(&errors), want_errors, "{text:?}");
        }
    }

    #[test]
    fn devices_are_parsed_deduplicated_and_looked_up() {
        let inventory = known(&[A, B]);
        let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let unknown = "lorafleet does not know device aaaaaaaaaaaaaaaa; devices appear once ChirpStack reports them";
        let cases: Vec<(Option<Vec<String>>, Vec<String>, Errors)> = vec![
            (None, vec![], one("devices", "devices is required: a list of DevEUIs")),
            (Some(vec![]), vec![], one("devices", "add at least one device")),
            (Some(strings(&[B, "0102030405060708"])), strings(&[B, A]), vec![]),
            (Some(strings(&["01020304050607 08"])), vec![], one("devices", "a DevEUI is 16 hex digits, got \"01020304050607 08\"")),
            (Some(strings(&[A, "0102030405060708"])), strings(&[A]), one("devices", "0102030405060708 is listed twice")),
            (Some(strings(&["AAAAAAAAAAAAAAAA", A])), strings(&[A]), one("devices", unknown)),
            (
                Some(strings(&["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"])),
                vec![],
                one("devices", "lorafleet does not know devices aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb; devices appear once ChirpStack reports them"),
            ),
        ];
        for (list_in, want, want_errors) in cases {
            let mut errors = FieldErrors::default();
            assert_eq!(
                devices(list_in.as_deref(), &inventory, &mut errors),
                want,
                "{list_in:?}"
            );
            assert_eq!(list(&errors), want_errors, "{list_in:?}");
        }
    }

    #[test]
    fn lorawan_versions() {
        for (text, want) in [
            (None, "1.0"),
            (Some("1.0.x"), "1.0"),
            (Some("1.1"), "1.1"),
            (Some("1.1.x"), "1.1"),
        ] {
            let mut errors = FieldErrors::default();
            assert_eq!(lorawan_version(text, &mut errors), want);
            assert!(errors.is_empty());
        }
        let mut errors = FieldErrors::default();
        assert_eq!(lorawan_version(Some("1.2"), &mut errors), "1.0");
        assert_eq!(
            list(&errors),
            one(
                "keys.lorawan_version",
                "keys.lorawan_version must be \"1.0\" or \"1.1\", got \"1.2\""
            )
        );
    }

    /// `keys()` of a request for devices A and B, with the given driver.
    fn keys_of(request: serde_json::Value, driver: DriverKind) -> (String, CampaignKeys, Errors) {
        let mut errors = FieldErrors::default();
        let devices = vec![A.to_string(), B.to_string()];
        let (version, keys) = keys(&from(request), &devices, true, driver, &mut errors);
        (version, keys, list(&errors))
    }

    #[test]
    fn keys_are_checked_field_by_field() {
        let zeros = "0".repeat(32);
        let v3 = DriverKind::FuotaServerV3;
        let per_a = format!("keys.per_device.{A}");
        let per_a_app = format!("keys.per_device.{A}.app_key");
        let cases = vec![
            (json!({"gen_app_key": "12"}), "keys.gen_app_key", "keys.gen_app_key: a key is 32 hex digits (16 bytes), got 2 characters".to_string()),
            (json!({"gen_app_key": "zz02030405060708090a0b0c0d0e0f10"}), "keys.gen_app_key", "keys.gen_app_key: a key is 32 hex digits".to_string()),
            (json!({"gen_app_key": zeros}), "keys.gen_app_key", "keys.gen_app_key is all zeros: that is what an unset key looks like, and devices would derive a multicast key anyone can compute".to_string()),
            (json!({"gen_app_key": KEY, "lorawan_version": "1.1", "per_device": {A: {"app_key": KEY}, B: {"app_key": KEY}}}), "keys.gen_app_key", "LoRaWAN 1.1 devices derive the McRootKey from their own AppKey: give keys.per_device.<dev_eui>.app_key instead".to_string()),
            (json!({"gen_app_key": KEY, "per_device": {"x": {"app_key": KEY}}}), "keys.per_device.x", "\"x\" is not a DevEUI".to_string()),
            (json!({"gen_app_key": KEY, "per_device": {"AAAAAAAAAAAAAAAA": {"app_key": KEY}}}), "keys.per_device.AAAAAAAAAAAAAAAA", "aaaaaaaaaaaaaaaa is not one of the campaign's devices".to_string()),
            (json!({"gen_app_key": KEY, "per_device": {A: {"app_key": KEY, "gen_app_key": KEY}}}), per_a.as_str(), "give exactly one of gen_app_key (LoRaWAN 1.0.x) or app_key (1.1)".to_string()),
            (json!({"gen_app_key": KEY, "per_device": {A: {}}}), per_a.as_str(), "give exactly one of gen_app_key (LoRaWAN 1.0.x) or app_key (1.1)".to_string()),
            (json!({"gen_app_key": KEY, "per_device": {A: {"app_key": "1"}}}), per_a_app.as_str(), format!("keys.per_device.{A}.app_key: a key is 32 hex digits (16 bytes), got 1 characters")),
            (json!({"per_device": {A: {"gen_app_key": KEY}}}), "keys", format!("no key material for {B}: give keys.gen_app_key or a key per device in keys.per_device")),
            (json!({"lorawan_version": "1.1"}), "keys", format!("no key material for {A}, {B}: give keys.gen_app_key (1.0.x only) or a key per device in keys.per_device")),
        ];
        for (request, field, message) in cases {
            let (_, _, errors) = keys_of(request.clone(), v3);
            assert_eq!(errors, one(field, &message), "{request}");
        }
    }

    #[test]
    fn accepted_keys() {
        let key: [u8; 16] = parse_key(KEY).unwrap();
        let (version, keys, errors) = keys_of(
            json!({"gen_app_key": KEY, "per_device": {B: {"app_key": KEY}}}),
            DriverKind::FuotaServerV3,
        );
        assert_eq!((version.as_str(), errors), ("1.0", vec![]));
        assert_eq!(keys.gen_app_key, Some(key));
        assert_eq!(
            keys.per_device,
            BTreeMap::from([(B.to_string(), DeviceKey::AppKey(key))])
        );
        let (version, keys, errors) = keys_of(
            json!({"lorawan_version": "1.1", "per_device": {A: {"app_key": KEY}, "1112131415161718": {"gen_app_key": KEY}}}),
            DriverKind::FuotaServerV3,
        );
        assert_eq!((version.as_str(), errors), ("1.1", vec![]));
        assert_eq!(keys.per_device.len(), 2);
        // A blank shared key is no key; ChirpStack v4 and the engine find keys themselves.
        for driver in [DriverKind::ChirpstackV4, DriverKind::Engine] {
            let (_, keys, errors) = keys_of(json!({"gen_app_key": "  "}), driver);
            assert_eq!((keys, errors), (CampaignKeys::default(), vec![]));
        }
    }

    #[test]
    fn a_per_device_key_needs_no_campaign_devices_to_be_listed() {
        let mut errors = FieldErrors::default();
        let request: KeysRequest = from(json!({"per_device": {A: {"gen_app_key": KEY}}}));
        let (_, keys) = keys(&request, &[], false, DriverKind::Engine, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(keys.per_device.len(), 1);
    }

    fn multicast_of(
        request: serde_json::Value,
        region: &RegionInfo,
    ) -> (MulticastSettings, Option<Modulation>, Errors) {
        let mut errors = FieldErrors::default();
        let (settings, modulation) = multicast(&from(request), region, &mut errors);
        (settings, modulation, list(&errors))
    }

    #[test]
    fn multicast_defaults_per_region() {
        let (s, m, errors) = multicast_of(json!({}), &eu868());
        assert_eq!(errors, vec![]);
        assert_eq!(
            s,
            MulticastSettings {
                class: MulticastClass::C,
                dr: 5,
                frequency: 868_100_000,
                ping_slot_periodicity: 4,
                group_id: 0,
                timeout_exp: 0,
                timeout_exp_auto: true,
                gateways: vec![],
            }
        );
        assert_eq!(
            m,
            Some(Modulation::Lora {
                spreading_factor: 7,
                bandwidth_hz: 125_000
            })
        );
        // Elsewhere the region's RX2 window: US915 923.3 MHz DR8 (SF12 BW500).
        let (s, m, errors) = multicast_of(json!({}), &RegionInfo::new(CommonName::US915, false));
        assert_eq!(errors, vec![]);
        assert_eq!((s.dr, s.frequency), (8, 923_300_000));
        assert_eq!(
            m,
            Some(Modulation::Lora {
                spreading_factor: 12,
                bandwidth_hz: 500_000
            })
        );
    }

    #[test]
    fn accepted_multicast_values() {
        let (s, _, errors) = multicast_of(
            json!({"class": "b", "dr": 3, "frequency": 869.525, "ping_slot_periodicity": 0, "group_id": 3, "timeout_exp": 15}),
            &eu868(),
        );
        assert_eq!(errors, vec![]);
        assert_eq!(
            s,
            MulticastSettings {
                class: MulticastClass::B,
                dr: 3,
                frequency: 869_525_000,
                ping_slot_periodicity: 0,
                group_id: 3,
                timeout_exp: 15,
                timeout_exp_auto: false,
                gateways: vec![],
            }
        );
        let (s, _, _) = multicast_of(json!({"frequency": 869_525_000.4}), &eu868());
        assert_eq!(s.frequency, 869_525_000, "Hz, rounded");
    }

    #[test]
    fn multicast_refusals() {
        let cases = [
            (json!({"class": "A"}), "multicast.class", "multicast.class must be \"C\" or \"B\", got \"A\""),
            (json!({"dr": 16}), "multicast.dr", "multicast.dr must be 0..15, got 16"),
            (json!({"dr": -1}), "multicast.dr", "multicast.dr must be 0..15, got -1"),
            (json!({"dr": 8}), "multicast.dr", "DR8 is uplink-only in EU868"),
            (json!({"dr": 15}), "multicast.dr", "DR15 does not exist in EU868"),
            (json!({"frequency": 915_000_000}), "multicast.frequency", "915.000 MHz is outside EU868's downlink band 863.000..870.000 MHz"),
            (json!({"frequency": -1}), "multicast.frequency", "multicast.frequency -1 is not a frequency in Hz"),
            (json!({"frequency": 5e9}), "multicast.frequency", "multicast.frequency 5000000000 is not a frequency in Hz"),
            (json!({"ping_slot_periodicity": 8}), "multicast.ping_slot_periodicity", "multicast.ping_slot_periodicity must be 0..7 (one ping slot every 2^n seconds), got 8"),
            (json!({"group_id": 4}), "multicast.group_id", "multicast.group_id must be 0..3 (TS005 has four multicast groups), got 4"),
            (json!({"timeout_exp": 16}), "multicast.timeout_exp", "multicast.timeout_exp must be 0..15, got 16: TS005 sends it in 4 bits and the session lasts 2^n seconds (Class C) or 2^n beacon periods (Class B), so 16 cannot be sent; leave it empty to have it computed from the plan"),
        ];
        for (request, field, message) in cases {
            let (s, _, errors) = multicast_of(request.clone(), &eu868());
            assert_eq!(errors, one(field, message), "{request}");
            assert!(s.timeout_exp_auto || field != "multicast.timeout_exp");
        }
        // A DR out of range is replaced by the default, so the other checks can go on.
        let (s, m, _) = multicast_of(json!({"dr": 16}), &eu868());
        let sf7 = Modulation::Lora {
            spreading_factor: 7,
            bandwidth_hz: 125_000,
        };
        assert_eq!((s.dr, m), (5, Some(sf7)));
        // A frequency that is no frequency falls back to RX2 (869.525 MHz) without a second error.
        let (s, _, _) = multicast_of(json!({"frequency": -1}), &eu868());
        assert_eq!(s.frequency, 869_525_000);
    }

    #[test]
    fn unicast_values_and_refusals() {
        let cases = [
            (json!({}), (150, 5), vec![]),
            (json!({"timeout_s": 1, "attempts": 100}), (1, 100), vec![]),
            (json!({"timeout_s": 86_400, "attempts": 1}), (86_400, 1), vec![]),
            (json!({"timeout_s": 0}), (150, 5), one("unicast.timeout_s", "unicast.timeout_s must be 1..86400 seconds (at least the devices' uplink interval), got 0")),
            (json!({"timeout_s": 86_401}), (150, 5), one("unicast.timeout_s", "unicast.timeout_s must be 1..86400 seconds (at least the devices' uplink interval), got 86401")),
            (json!({"attempts": 0}), (150, 5), one("unicast.attempts", "unicast.attempts must be 1..100, got 0")),
            (json!({"attempts": 101}), (150, 5), one("unicast.attempts", "unicast.attempts must be 1..100, got 101")),
        ];
        for (request, (timeout_s, attempts), want_errors) in cases {
            let mut errors = FieldErrors::default();
            let u = unicast(&from(request.clone()), &mut errors);
            assert_eq!(
                u,
                UnicastSettings {
                    timeout_s,
                    attempts
                },
                "{request}"
            );
            assert_eq!(list(&errors), want_errors, "{request}");
        }
    }

    /// `fragmentation()` in EU868 at `dr` for an image of `size` bytes.
    fn fragments_of(
        request: serde_json::Value,
        dr: u8,
        size: Option<usize>,
        driver: DriverKind,
    ) -> (Fragments, Errors) {
        let mut errors = FieldErrors::default();
        let f = fragmentation(
            &from(request),
            &eu868(),
            dr,
            (size, None),
            driver,
            &mut errors,
        );
        (f, list(&errors))
    }

    #[test]
    fn fragmentation_defaults() {
        let (f, errors) = fragments_of(json!({}), 5, Some(23_000), DriverKind::Engine);
        assert_eq!(errors, vec![]);
        assert_eq!(
            f.settings,
            FragmentationSettings {
                fragment_size: 239,
                fragment_size_auto: true,
                redundancy: 10,
                redundancy_percent: None,
                session_index: 0,
                matrix: 0,
                block_ack_delay: 1,
                descriptor_hex: "00000000".into(),
                parity: ParityMode::Fixed,
                parity_group: None,
                status_wait_s: None,
            }
        );
        assert_eq!(
            (f.size, f.max_fragment, f.data_fragments),
            (239, Some(239), Some(97))
        );
    }

    #[test]
    fn fragment_sizes() {
        // (request, DR, image size, size, chosen here)
        let cases = [
            (json!({"fragment_size": null}), 0, Some(10_000), 48, true),
            (json!({"fragment_size": "auto"}), 5, Some(100), 100, true),
            (json!({}), 5, None, 239, true),
            (json!({"fragment_size": 50}), 5, Some(10_000), 50, false),
            (json!({"fragment_size": 239}), 5, Some(10_000), 239, false),
        ];
        for (request, dr, size, want, auto) in cases {
            let (f, errors) = fragments_of(request.clone(), dr, size, DriverKind::Engine);
            assert_eq!(errors, vec![], "{request}");
            assert_eq!(
                (f.size, f.settings.fragment_size_auto),
                (want, auto),
                "{request}"
            );
        }
    }

    #[test]
    fn fragmentation_refusals() {
        let size = Some(23_000);
        let cases = [
            (json!({"fragment_size": 240}), "fragmentation.fragment_size", "a fragment of 240 bytes plus its 3-byte header (243 bytes) does not fit DR5's maximum payload of 242 bytes in EU868; use at most 239 (or leave it empty for the largest)".to_string()),
            (json!({"fragment_size": -5}), "fragmentation.fragment_size", "fragmentation.fragment_size must be a whole number of bytes or null (auto), got -5".into()),
            (json!({"fragment_size": "big"}), "fragmentation.fragment_size", "fragmentation.fragment_size must be a whole number of bytes or null (auto), got \"big\"".into()),
            (json!({"fragment_size": 1}), "fragmentation.fragment_size", "the image needs 23000 fragments of 1 bytes, more than the 16383 TS004's 14-bit fragment number can count; use larger fragments (a faster DR) or a smaller image".into()),
            (json!({"redundancy": 5, "redundancy_percent": 10}), "fragmentation.redundancy_percent", "give either fragmentation.redundancy (frames) or fragmentation.redundancy_percent, not both".into()),
            (json!({"redundancy": -1}), "fragmentation.redundancy", "fragmentation.redundancy must be 0 or more, got -1".into()),
            (json!({"redundancy_percent": 1000.5}), "fragmentation.redundancy_percent", "fragmentation.redundancy_percent must be 0..1000, got 1000.5".into()),
            (json!({"redundancy": 16_300}), "fragmentation.redundancy", "97 data fragments plus 16300 parity fragments exceed the 16383 TS004's 14-bit fragment number can count; use at most 16286 parity fragments".into()),
            (json!({"session_index": 4}), "fragmentation.session_index", "fragmentation.session_index must be 0..3 (TS004 has four fragmentation sessions), got 4".into()),
            (json!({"matrix": 8}), "fragmentation.matrix", "fragmentation.matrix must be 0..7 (a 3-bit field; 0 is the only matrix TS004 v1 defines), got 8".into()),
            (json!({"block_ack_delay": -1}), "fragmentation.block_ack_delay", "fragmentation.block_ack_delay must be 0..7 (a 3-bit field), got -1".into()),
            (json!({"descriptor_hex": "0102"}), "fragmentation.descriptor_hex", "the descriptor is exactly 4 bytes (8 hex digits), got 2 bytes".into()),
            (json!({"descriptor_hex": "0x0102030g"}), "fragmentation.descriptor_hex", "the descriptor must be 8 hex digits".into()),
        ];
        for (request, field, message) in cases {
            let (_, errors) = fragments_of(request.clone(), 5, size, DriverKind::Engine);
            assert_eq!(errors, one(field, &message), "{request}");
        }
        // Size 0 is refused and counted as 1, which the image's size then refuses too.
        let (f, errors) = fragments_of(json!({"fragment_size": 0}), 5, size, DriverKind::Engine);
        assert_eq!(f.size, 1);
        assert_eq!(
            errors.iter().map(|(f, e)| (f.as_str(), e.as_str())).collect::<Vec<_>>(),
            [
                ("fragmentation.fragment_size", "fragmentation.fragment_size must be at least 1"),
                ("fragmentation.fragment_size", "the image needs 23000 fragments of 1 bytes, more than the 16383 TS004's 14-bit fragment number can count; use larger fragments (a faster DR) or a smaller image"),
            ]
        );
    }

    #[test]
    fn a_dr_without_a_payload_size_is_refused_once() {
        let mut errors = FieldErrors::default();
        errors.add("multicast.dr", "multicast.dr must be 0..15, got 16");
        let f = fragmentation(
            &from(json!({})),
            &eu868(),
            5,
            (Some(1000), None),
            DriverKind::Engine,
            &mut errors,
        );
        assert_eq!(
            (f.max_fragment, f.size),
            (None, 50),
            "no DR: 50 bytes to go on with"
        );
        assert_eq!(errors.0.len(), 1);
    }

    #[test]
    fn redundancy_as_frames_or_percent() {
        // 23000 bytes in 239-byte fragments: 97 data fragments.
        let cases = [
            (json!({"redundancy": 0}), 0, None),
            (json!({"redundancy": 16_286}), 16_286, None),
            (json!({"redundancy_percent": 30}), 30, Some(30)),
            (json!({"redundancy_percent": 20.5}), 20, None),
            (json!({"redundancy_percent": 0}), 0, Some(0)),
        ];
        for (request, redundancy, percent) in cases {
            let (f, errors) = fragments_of(request.clone(), 5, Some(23_000), DriverKind::Engine);
            assert_eq!(errors, vec![], "{request}");
            assert_eq!(
                (f.settings.redundancy, f.settings.redundancy_percent),
                (redundancy, percent),
                "{request}"
            );
        }
    }

    #[test]
    fn chirpstack_v4_takes_at_most_100_percent() {
        let (_, errors) = fragments_of(
            json!({"redundancy_percent": 150}),
            5,
            Some(23_000),
            DriverKind::ChirpstackV4,
        );
        assert_eq!(
            errors,
            one("fragmentation.redundancy_percent", "ChirpStack v4 takes redundancy as a percentage of 0..100; 146 parity fragments for 97 data fragments would be 150 %")
        );
        let (_, errors) = fragments_of(
            json!({"redundancy_percent": 100}),
            5,
            Some(23_000),
            DriverKind::ChirpstackV4,
        );
        assert_eq!(errors, vec![]);
        let (_, errors) = fragments_of(
            json!({"redundancy_percent": 150}),
            5,
            Some(23_000),
            DriverKind::Engine,
        );
        assert_eq!(errors, vec![], "the engine counts frames");
    }

    #[test]
    fn descriptors() {
        for (text, want) in [
            (None, "00000000"),
            (Some("  "), "00000000"),
            (Some("0x0102 0A0b"), "01020a0b"),
            (Some("DEADBEEF"), "deadbeef"),
        ] {
            let mut errors = FieldErrors::default();
            assert_eq!(descriptor_hex(text, &mut errors), want);
            assert!(errors.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn frag_status_requests() {
        let cases = [
            (None, FragStatusRequest::AfterSession),
            (Some("after_session"), FragStatusRequest::AfterSession),
            (Some("after_enqueue"), FragStatusRequest::AfterEnqueue),
            (Some("none"), FragStatusRequest::None),
        ];
        for (text, want) in cases {
            let mut errors = FieldErrors::default();
            assert_eq!(request_frag_status(text, &mut errors), want);
            assert!(errors.is_empty());
        }
        let mut errors = FieldErrors::default();
        assert_eq!(
            request_frag_status(Some("always"), &mut errors),
            FragStatusRequest::AfterSession
        );
        assert_eq!(
            list(&errors),
            one("request_frag_status", "request_frag_status must be \"none\", \"after_enqueue\" or \"after_session\", got \"always\"")
        );
    }

    #[test]
    fn engine_methods() {
        use lorafleet_engine::machine::{Method, RebootWith};
        let mut errors = FieldErrors::default();
        let e = engine(&from(json!({})), &mut errors);
        assert_eq!(
            (e.check_method, e.verify_method, e.reboot_with),
            (Method::Auto, Method::Auto, RebootWith::RebootTime)
        );
        let e = engine(
            &from(
                json!({"check_method": "firmware_management", "verify_method": "none", "reboot_with": "reboot_countdown"}),
            ),
            &mut errors,
        );
        assert_eq!(
            (e.check_method, e.verify_method, e.reboot_with),
            (
                Method::FirmwareManagement,
                Method::None,
                RebootWith::RebootCountdown
            )
        );
        let e = engine(
            &from(json!({"check_method": "version_status"})),
            &mut errors,
        );
        assert_eq!(e.check_method, Method::VersionStatus);
        assert!(errors.is_empty());
        engine(
            &from(json!({"verify_method": "fmp", "reboot_with": "now"})),
            &mut errors,
        );
        let mut want = one(
            "engine.verify_method",
            "engine.verify_method must be \"version_status\", \"firmware_management\", \"auto\" or \"none\", got \"fmp\"",
        );
        want.extend(one(
            "engine.reboot_with",
            "engine.reboot_with must be \"reboot_time\" or \"reboot_countdown\", got \"now\"",
        ));
        assert_eq!(list(&errors), want);
    }

    #[test]
    fn engine_settings() {
        let cases = [
            (json!({}), (CheckMode::Refuse, true, 60), vec![]),
            (
                json!({"check": "warn", "verify": false, "reboot_delay_s": 0}),
                (CheckMode::Warn, false, 0),
                vec![],
            ),
            (
                json!({"check": "off", "reboot_delay_s": 86_400}),
                (CheckMode::Off, true, 86_400),
                vec![],
            ),
            (
                json!({"check": "refuse"}),
                (CheckMode::Refuse, true, 60),
                vec![],
            ),
            (
                json!({"check": "never"}),
                (CheckMode::Refuse, true, 60),
                one(
                    "engine.check",
                    "engine.check must be \"refuse\", \"warn\" or \"off\", got \"never\"",
                ),
            ),
            (
                json!({"reboot_delay_s": 86_401}),
                (CheckMode::Refuse, true, 60),
                one(
                    "engine.reboot_delay_s",
                    "engine.reboot_delay_s must be 0..86400 seconds, got 86401",
                ),
            ),
        ];
        for (request, (check, verify, reboot_delay_s), want_errors) in cases {
            let mut errors = FieldErrors::default();
            let e = engine(&from(request.clone()), &mut errors);
            assert_eq!(
                e,
                EngineSettings {
                    check,
                    verify,
                    reboot_delay_s,
                    ..EngineSettings::default()
                },
                "{request}"
            );
            assert_eq!(list(&errors), want_errors, "{request}");
        }
    }

    /// `validate()` in EU868 without a network, for devices A and B and a 23000-byte image.
    fn validate_json(request: serde_json::Value) -> Result<Validated, FieldErrors> {
        let mut config = Config::default();
        config.network.kind = NetworkKind::None;
        let region = eu868();
        let img = image(23_000);
        let devices = known(&[A, B]);
        let ctx = Context {
            config: &config,
            region: &region,
            image: Some(&img),
            devices: &devices,
            observed_uplink_interval_s: None,
            model_limits: None,
        };
        validate(&from(request), &ctx)
    }

    // --- packages and device limits (the field checks are tabled in `campaigns::packages`)

    /// The automatic fragment size is the smallest `max_fragment_size` over the devices (the
    /// device's override over the campaign's), the plan warns for a device that would refuse,
    /// and what was given is stored.
    #[test]
    fn device_limits_shape_the_fragment_size_and_the_plan() {
        let base = json!({"firmware_id": 7, "devices": [A, B], "keys": {"gen_app_key": KEY},
            "driver": "engine"});
        let cases = [
            (json!({}), 239, 0),
            (json!({"device_limits": {"max_fragment_size": 100}}), 100, 0),
            (
                json!({"device_limits": {"max_fragment_size": 100},
                    "device_overrides": {A: {"device_limits": {"max_fragment_size": 50}}}}),
                50,
                0,
            ),
            (json!({"device_limits": {"max_fragments": 21}}), 239, 2),
            (
                json!({"fragmentation": {"fragment_size": 200},
                    "device_overrides": {B: {"device_limits": {"max_fragment_size": 50}}}}),
                200,
                1,
            ),
        ];
        for (extra, size, refusing) in cases {
            let mut body = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let v = validate_json(body.clone()).unwrap_or_else(|e| panic!("{body}: {e:?}"));
            assert_eq!(v.settings.fragmentation.fragment_size, size, "{body}");
            let warned: Vec<&plan::PlanWarning> = v
                .plan
                .warnings
                .iter()
                .filter(|w| w.message.starts_with("the device would refuse"))
                .collect();
            assert_eq!(warned.len(), refusing, "{body}: {:?}", v.plan.warnings);
        }
        let v = validate_json(
            json!({"firmware_id": 7, "devices": [A, B], "keys": {"gen_app_key": KEY},
            "driver": "engine", "packages": {"fragmentation": {"version": 2, "f_port": 210}},
            "device_overrides": {A: {"packages": {"multicast_setup": {"f_port": 220}}}}}),
        )
        .unwrap();
        let stored = serde_json::to_value(&v.settings).unwrap();
        assert_eq!(
            stored["packages"],
            json!({"fragmentation": {"version": 2, "f_port": 210}})
        );
        assert_eq!(
            stored["device_overrides"][A],
            json!({"packages": {"multicast_setup": {"f_port": 220}}})
        );
    }

    #[test]
    fn the_models_limits_apply_when_nothing_closer_says() {
        let mut config = Config::default();
        config.network.kind = NetworkKind::None;
        let region = eu868();
        let img = image(23_000);
        let devices = known(&[A, B]);
        let ctx = Context {
            config: &config,
            region: &region,
            image: Some(&img),
            devices: &devices,
            observed_uplink_interval_s: None,
            model_limits: Some(DeviceLimits {
                max_fragment_size: Some(80),
                ..Default::default()
            }),
        };
        let body = json!({"firmware_id": 7, "devices": [A, B], "keys": {"gen_app_key": KEY},
            "driver": "engine", "device_overrides": {A: {"device_limits": {"max_fragment_size": 120}}}});
        let v = validate(&from(body), &ctx).unwrap();
        assert_eq!(
            v.settings.fragmentation.fragment_size, 80,
            "B has only the model's"
        );
        assert_eq!(
            v.settings.model_device_limits.unwrap().max_fragment_size,
            Some(80)
        );
    }

    #[test]
    fn the_session_exponent_is_computed_or_kept() {
        let base = json!({"firmware_id": 7, "devices": [A, B], "keys": {"gen_app_key": KEY}});
        let v = validate_json(base.clone()).unwrap();
        // 107 fragments of a 255-byte frame at 1 % duty cycle: about 39 s apart, 2^13 s.
        assert_eq!(
            (
                v.settings.multicast.timeout_exp,
                v.settings.multicast.timeout_exp_auto
            ),
            (13, true)
        );
        assert_eq!(v.plan.timeout_exp, 13);
        let mut given = base.clone();
        given["multicast"] = json!({"timeout_exp": 2});
        let v = validate_json(given).unwrap();
        assert_eq!(
            (
                v.settings.multicast.timeout_exp,
                v.settings.multicast.timeout_exp_auto
            ),
            (2, false)
        );
        let mut too_long = base;
        too_long["multicast"] = json!({"dr": 0});
        too_long["fragmentation"] = json!({"redundancy": 500});
        let errors = validate_json(too_long).unwrap_err();
        assert_eq!(
            list(&errors),
            one("multicast.timeout_exp", "sending 980 fragments takes about 274040 s, longer than the longest session TS005 can announce (2^15 s, about 9 h); use a faster DR, larger fragments or less redundancy")
        );
    }

    /// Issue 8 item 5's settings: kept as given, defaults left to the engine (they follow M
    /// and BlockAckDelay), each refusal naming its field.
    #[test]
    fn adaptive_parity_settings() {
        let base = json!({"firmware_id": 7, "devices": [A, B], "keys": {"gen_app_key": KEY}, "driver": "engine"});
        let v = validate_json(base.clone()).unwrap();
        assert_eq!(v.settings.fragmentation.parity, ParityMode::Fixed);
        let mut adaptive = base.clone();
        adaptive["fragmentation"] =
            json!({"parity": "adaptive", "parity_group": 4, "status_wait_s": 20.5});
        let f = validate_json(adaptive).unwrap().settings.fragmentation;
        assert_eq!(
            (f.parity, f.parity_group, f.status_wait_s),
            (ParityMode::Adaptive, Some(4), Some(20.5))
        );
        let cases = [
            (
                json!({"parity": "sometimes"}),
                "fragmentation.parity",
                "fragmentation.parity must be \"fixed\" or \"adaptive\", got \"sometimes\"",
            ),
            (
                json!({"parity": "adaptive", "parity_group": 0}),
                "fragmentation.parity_group",
                "fragmentation.parity_group must be 1..16383 parity fragments, got 0",
            ),
            (
                json!({"parity": "adaptive", "status_wait_s": -1}),
                "fragmentation.status_wait_s",
                "fragmentation.status_wait_s must be 0..86400 seconds, got -1",
            ),
        ];
        for (fragmentation, field, message) in cases {
            let mut r = base.clone();
            r["fragmentation"] = fragmentation.clone();
            let errors = validate_json(r).unwrap_err();
            assert_eq!(list(&errors), one(field, message), "{fragmentation}");
        }
        let mut other_driver = base;
        other_driver["driver"] = json!("fuota-server-v3");
        other_driver["fragmentation"] = json!({"parity": "adaptive"});
        let errors = validate_json(other_driver).unwrap_err();
        assert!(errors.has("fragmentation.parity"), "{errors:?}");
    }

    #[test]
    fn every_problem_comes_back_at_once_in_request_order() {
        let errors = validate_json(json!({
            "driver": "v5",
            "name": "x".repeat(201),
            "devices": [],
            "keys": {"lorawan_version": "2"},
            "multicast": {"dr": 16, "class": "D"},
            "unicast": {"attempts": 0},
            "fragmentation": {"descriptor_hex": "01"},
            "request_frag_status": "sometimes",
            "engine": {"check": "maybe"},
        }))
        .unwrap_err();
        let fields: Vec<String> = errors.0.iter().map(|e| e.field.clone()).collect();
        assert_eq!(
            fields,
            [
                "driver",
                "firmware_id",
                "name",
                "devices",
                "keys.lorawan_version",
                "multicast.class",
                "multicast.dr",
                "unicast.attempts",
                "fragmentation.descriptor_hex",
                "request_frag_status",
                "engine.check",
            ]
        );
    }
}

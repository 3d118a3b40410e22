//! What a campaign is, as stored and shown: its settings after validation, its state, each
//! device's stage and times, its log and progress history, and the rows of the campaign list.
//! `campaigns/` (validation, plan, runner, drivers) re-exports them under its own names.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use lorafleet_engine::keys::RootKey;
use lorafleet_engine::packages::{DeviceLimits, PackagesPatch};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which FUOTA service carries a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DriverKind {
    /// ChirpStack >= 4.12's built-in `api.FuotaService`.
    ChirpstackV4,
    /// chirpstack-fuota-server v3 (`fuota.FUOTAServerService`).
    FuotaServerV3,
    /// lorafleet's own TS003/TS004/TS005 engine (issue 4).
    Engine,
}

impl DriverKind {
    pub const ALL: [DriverKind; 3] = [
        DriverKind::ChirpstackV4,
        DriverKind::FuotaServerV3,
        DriverKind::Engine,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::ChirpstackV4 => "chirpstack-v4",
            DriverKind::FuotaServerV3 => "fuota-server-v3",
            DriverKind::Engine => "engine",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DriverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DriverKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("driver must be \"chirpstack-v4\", \"fuota-server-v3\" or \"engine\", got {s:?}")
            })
    }
}

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    Draft,
    /// Started with a `start_at` still ahead: the runner starts it when the network's clock
    /// reaches it.
    Scheduled,
    Running,
    /// Between waves, waiting for the operator (resume or cancel); holds its devices like a
    /// running campaign but is not polled.
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Draft => "draft",
            CampaignState::Scheduled => "scheduled",
            CampaignState::Running => "running",
            CampaignState::Paused => "paused",
            CampaignState::Completed => "completed",
            CampaignState::Failed => "failed",
            CampaignState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> CampaignState {
        match s {
            "scheduled" => CampaignState::Scheduled,
            "running" => CampaignState::Running,
            "paused" => CampaignState::Paused,
            "completed" => CampaignState::Completed,
            "failed" => CampaignState::Failed,
            "cancelled" => CampaignState::Cancelled,
            _ => CampaignState::Draft,
        }
    }

    pub fn is_over(self) -> bool {
        matches!(
            self,
            CampaignState::Completed | CampaignState::Failed | CampaignState::Cancelled
        )
    }

    /// Every state, for queries that list the states with a property.
    pub const ALL: [CampaignState; 7] = [
        CampaignState::Draft,
        CampaignState::Scheduled,
        CampaignState::Running,
        CampaignState::Paused,
        CampaignState::Completed,
        CampaignState::Failed,
        CampaignState::Cancelled,
    ];

    /// Whether a campaign in this state holds its devices: no other campaign may start on
    /// them (`POST /api/campaigns/{id}/start` answers 409). The one place that says so: a
    /// draft and a scheduled campaign have not sent anything yet, a finished one is done; any
    /// state in which the campaign may still send (running, paused between waves) holds.
    pub fn holds_devices(self) -> bool {
        match self {
            CampaignState::Running | CampaignState::Paused => true,
            CampaignState::Draft
            | CampaignState::Scheduled
            | CampaignState::Completed
            | CampaignState::Failed
            | CampaignState::Cancelled => false,
        }
    }
}

/// A device the campaign's image must not go to, and why (issue 10: the compatibility guard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Refusal {
    pub dev_eui: String,
    /// What the operator reads: what the image is for and what the device is.
    pub reason: String,
    /// `incompatible` (the image is for another device type or manufacturer) or
    /// `already_running` (the device runs the image's version; `allow_reinstall` lifts it).
    pub code: String,
}

/// The step a device is in: what the campaign is waiting for from it. The order is the order
/// of the FUOTA packages' steps, so "further along" compares with `<`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Not started yet.
    Pending,
    /// Engine: waiting for the Version & Status answers checked before the update.
    Check,
    /// Waiting for McGroupSetupAns (TS005).
    McGroupSetup,
    /// Waiting for FragSessionSetupAns (TS004).
    FragSessionSetup,
    /// Waiting for McClassC/BSessionAns (TS005).
    McSessionSetup,
    /// In the multicast session: fragments are being sent.
    Fragments,
    /// Waiting for FragSessionStatusAns (TS004).
    FragStatus,
    /// Engine: waiting for the reboot, then for VersionRunningAns with the new version.
    Verify,
    Completed,
    Failed,
    Cancelled,
}

impl Stage {
    pub const ALL: [Stage; 11] = [
        Stage::Pending,
        Stage::Check,
        Stage::McGroupSetup,
        Stage::FragSessionSetup,
        Stage::McSessionSetup,
        Stage::Fragments,
        Stage::FragStatus,
        Stage::Verify,
        Stage::Completed,
        Stage::Failed,
        Stage::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pending => "pending",
            Stage::Check => "check",
            Stage::McGroupSetup => "mc_group_setup",
            Stage::FragSessionSetup => "frag_session_setup",
            Stage::McSessionSetup => "mc_session_setup",
            Stage::Fragments => "fragments",
            Stage::FragStatus => "frag_status",
            Stage::Verify => "verify",
            Stage::Completed => "completed",
            Stage::Failed => "failed",
            Stage::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Stage {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .unwrap_or(Stage::Pending)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Stage::Completed | Stage::Failed | Stage::Cancelled)
    }
}

/// Multicast class of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum MulticastClass {
    B,
    C,
}

/// When the FUOTA service asks devices for their fragmentation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FragStatusRequest {
    None,
    AfterEnqueue,
    AfterSession,
}

impl FragStatusRequest {
    pub fn as_str(self) -> &'static str {
        match self {
            FragStatusRequest::None => "none",
            FragStatusRequest::AfterEnqueue => "after_enqueue",
            FragStatusRequest::AfterSession => "after_session",
        }
    }
}

/// Multicast settings, every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MulticastSettings {
    pub class: MulticastClass,
    pub dr: u8,
    /// Hz.
    pub frequency: u32,
    /// Class B: one ping slot every 2^n seconds (0..7).
    pub ping_slot_periodicity: u8,
    pub group_id: u8,
    /// Session length: Class C 2^n seconds, Class B 2^n beacon periods (0..15).
    pub timeout_exp: u8,
    /// The exponent was computed from the plan rather than given.
    pub timeout_exp_auto: bool,
    /// Gateway IDs to bind the multicast group to; empty: the fewest that heard every device
    /// recently (ChirpStack v4 with lorafleet's engine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UnicastSettings {
    /// How long to wait for a device's answer before retrying (its uplink interval at least).
    pub timeout_s: u32,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FragmentationSettings {
    pub fragment_size: u8,
    /// The size was the largest the DR allows rather than given.
    pub fragment_size_auto: bool,
    /// Parity fragments sent after the data fragments.
    pub redundancy: u32,
    /// The percentage it was derived from, when given that way.
    pub redundancy_percent: Option<u32>,
    pub session_index: u8,
    pub matrix: u8,
    pub block_ack_delay: u8,
    /// 4 bytes, hex.
    pub descriptor_hex: String,
    /// `fixed`: all `redundancy` parity fragments; `adaptive`: in groups, while a device
    /// still needs them (engine only).
    #[serde(default)]
    pub parity: ParityMode,
    /// Adaptive parity: the most parity fragments per group; `None`: what the neediest
    /// device's answer asks for.
    #[serde(default)]
    pub parity_group: Option<u32>,
    /// Adaptive parity: seconds to collect status answers after each request; `None` for
    /// the answer delay BlockAckDelay gives the devices plus 10 %.
    #[serde(default)]
    pub status_wait_s: Option<f64>,
}

/// How parity fragments are sent (`fragmentation.parity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParityMode {
    /// Every one of `redundancy`, after the data fragments.
    #[default]
    Fixed,
    /// In groups (what the neediest answer asks for, at most `parity_group`), with a multicast
    /// FragSessionStatusReq between them, while any answer says more is needed (up to
    /// `redundancy` and the session's end).
    Adaptive,
}

/// A campaign's settings after validation: every value present and within its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CampaignSettings {
    /// `1.0` (McRootKey from GenAppKey) or `1.1` (from AppKey).
    pub lorawan_version: String,
    pub multicast: MulticastSettings,
    pub unicast: UnicastSettings,
    pub fragmentation: FragmentationSettings,
    pub request_frag_status: FragStatusRequest,
    /// What only lorafleet's engine does (absent in campaigns stored before it existed).
    #[serde(default)]
    pub engine: EngineSettings,
    /// Package versions and FPorts for every device, as given: what is not given comes from
    /// each device's profile on the network server, else the packages' defaults
    /// (`campaigns::packages` says how the layers combine).
    #[serde(default, skip_serializing_if = "PackagesPatch::is_empty")]
    #[schema(value_type = Object)]
    pub packages: PackagesPatch,
    /// What every device's fragment decoder holds, as given.
    #[serde(default, skip_serializing_if = "DeviceLimits::is_empty")]
    #[schema(value_type = Object)]
    pub device_limits: DeviceLimits,
    /// Per device (lower-case DevEUI): its own `packages` and `device_limits`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub device_overrides: BTreeMap<String, DeviceOverride>,
    /// The firmware sidecar's `[device_limits]` (the model's) when the campaign was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub model_device_limits: Option<DeviceLimits>,
}

/// One device's override of a campaign's packages and limits, as stored: only what was given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceOverride {
    #[serde(default, skip_serializing_if = "PackagesPatch::is_empty")]
    #[schema(value_type = Object)]
    pub packages: PackagesPatch,
    #[serde(default, skip_serializing_if = "DeviceLimits::is_empty")]
    #[schema(value_type = Object)]
    pub device_limits: DeviceLimits,
}

/// The engine's check before and verification after an update (Version & Status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EngineSettings {
    /// `refuse` (leave out a device whose slot is too small or that runs another version than
    /// the delta's from_version), `warn` (update it anyway) or `off` (devices without Version &
    /// Status).
    #[schema(value_type = String)]
    pub check: lorafleet_engine::machine::CheckMode,
    /// Ask VersionRunning after the session; `verified` only when the device reports the new
    /// version.
    pub verify: bool,
    /// Seconds after the session before the devices are asked for their version.
    pub reboot_delay_s: u32,
    /// How the check asks a device's version: `version_status`, `firmware_management`,
    /// `auto` (Version & Status, then Firmware Management, remembered per device) or `none`.
    #[serde(default = "auto_method")]
    #[schema(value_type = String)]
    pub check_method: lorafleet_engine::machine::Method,
    /// How the verification asks it, the same values.
    #[serde(default = "auto_method")]
    #[schema(value_type = String)]
    pub verify_method: lorafleet_engine::machine::Method,
    /// Firmware Management devices: `reboot_time` (one GPS time for the whole group) or
    /// `reboot_countdown` (a countdown to that time).
    #[serde(default = "reboot_time")]
    #[schema(value_type = String)]
    pub reboot_with: lorafleet_engine::machine::RebootWith,
}

fn auto_method() -> lorafleet_engine::machine::Method {
    lorafleet_engine::machine::Method::Auto
}

fn reboot_time() -> lorafleet_engine::machine::RebootWith {
    lorafleet_engine::machine::RebootWith::RebootTime
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            check: lorafleet_engine::machine::CheckMode::Refuse,
            verify: true,
            reboot_delay_s: 60,
            check_method: auto_method(),
            verify_method: auto_method(),
            reboot_with: reboot_time(),
        }
    }
}

impl CampaignSettings {
    pub fn descriptor(&self) -> [u8; 4] {
        let mut d = [0u8; 4];
        let _ = hex::decode_to_slice(&self.fragmentation.descriptor_hex, &mut d);
        d
    }
}

/// Key material given with a campaign (kept until the driver no longer needs it; never shown).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignKeys {
    pub gen_app_key: Option<[u8; 16]>,
    pub per_device: BTreeMap<String, DeviceKey>,
}

/// A device's own key: the engine's [`RootKey`], stored under the same names.
pub use lorafleet_engine::keys::RootKey as DeviceKey;

impl CampaignKeys {
    /// Where one device's McRootKey comes from: its own key if given, else the campaign's
    /// GenAppKey. `None` when there is nothing to derive it from.
    pub fn root_key(&self, dev_eui: &str, lorawan_version: &str) -> Option<RootKey> {
        match self.per_device.get(dev_eui) {
            Some(k) => Some(*k),
            None if lorawan_version == "1.0" => self.gen_app_key.map(RootKey::GenAppKey),
            // A LoRaWAN 1.1 device's McRootKey comes from its own AppKey, never a shared key.
            None => None,
        }
    }
}

/// What the engine learnt about one device, read from its stored state for the device row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EngineDeviceReport {
    /// `version_status`, `firmware_management` or `none` (it answered neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_method_used: Option<String>,
    /// The same, for the verification after the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_method_used: Option<String>,
    /// The last FragSessionStatusAns exactly as received: `{"raw_hex", "fields", "reading"}`
    /// (`reading`: `count` or `highest_n`, how the device's stack fills the fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub frag_status: Option<serde_json::Value>,
    /// Firmware Management answers during the campaign (versions in hex as sent, the image's
    /// status, the reboot time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub firmware_management: Option<serde_json::Value>,
}

impl EngineDeviceReport {
    /// From the engine's per-device state (`driver_json`); empty for other drivers.
    pub fn from_driver_json(j: Option<&serde_json::Value>) -> EngineDeviceReport {
        let field = |k: &str| j.and_then(|j| j.get(k)).filter(|v| !v.is_null()).cloned();
        let text = |k: &str| field(k).and_then(|v| v.as_str().map(str::to_string));
        EngineDeviceReport {
            check_method_used: text("check_method_used"),
            verify_method_used: text("verify_method_used"),
            frag_status: field("frag_status_report"),
            firmware_management: field("fm").filter(|v| {
                v.as_object()
                    .is_some_and(|o| o.values().any(|v| !v.is_null() && v != false))
            }),
        }
    }
}

/// Per-device progress, as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CampaignDevice {
    pub dev_eui: String,
    pub stage: Stage,
    pub mc_group_setup_at: Option<String>,
    pub frag_session_setup_at: Option<String>,
    pub mc_session_setup_at: Option<String>,
    pub frag_status_at: Option<String>,
    pub completed_at: Option<String>,
    pub error: Option<String>,
    /// Attempts of the current step (drivers that retry themselves).
    pub attempts: u32,
    /// When the driver means to act on this device next.
    pub next_action_at: Option<String>,
    /// Engine: how the update ended, `verified`, `completed` (not verified), `not_updated`,
    /// `unreachable`, `refused` or `delivered_unverified` (fragments delivered, version not
    /// verifiable); the error says why.
    pub outcome: Option<String>,
    /// Engine: which methods checked and verified the device, and its status answer.
    #[serde(flatten)]
    pub engine: EngineDeviceReport,
    /// Driver-private state.
    #[serde(skip)]
    pub driver_json: Option<serde_json::Value>,
}

/// One line of a campaign's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogEntry {
    pub at: String,
    /// `info`, `warning` or `error`.
    pub level: String,
    /// `lorafleet` or `service` (the FUOTA service's own log).
    pub source: String,
    pub dev_eui: Option<String>,
    pub message: String,
}

/// Devices per stage at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProgressPoint {
    pub at: String,
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, u32>,
}

/// A campaign as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignDto {
    pub id: i64,
    pub name: String,
    pub state: CampaignState,
    /// The state as the operator reads it: "completed with failures" for a completed campaign
    /// with failed devices, else the state's name.
    pub state_label: String,
    pub driver: DriverKind,
    pub firmware_id: i64,
    pub firmware: Option<FirmwareRef>,
    /// The devices the campaign targets; for a draft with a `device_filter`, the devices the
    /// filter selects now (resolved again at start).
    pub device_count: u32,
    /// Devices the image must not go to, with the reason; while a draft has any, start
    /// answers 422 naming them (remove them, or set `allow_reinstall` for `already_running`).
    pub refused: Vec<Refusal>,
    /// When a started campaign begins (RFC 3339, as given); `scheduled` until then.
    pub start_at: Option<String>,
    /// Whether devices that already run the image's version may get it again.
    pub allow_reinstall: bool,
    pub settings: CampaignSettings,
    /// Which key material was given (never the keys themselves).
    #[schema(value_type = Object)]
    pub keys: serde_json::Value,
    #[schema(value_type = Object)]
    pub plan: serde_json::Value,
    /// The request as sent (without keys), for editing a draft.
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub error: Option<String>,
    /// The last error reaching the service, while polling retries.
    pub last_poll_error: Option<String>,
    /// The lorafleet instance running the campaign (random per process, in its log at
    /// start), or the last one that did; `None` before any instance claimed it.
    pub lease_owner: Option<String>,
    /// Until when `lease_owner` holds the campaign unless it renews (every `lease_s / 3`);
    /// `None` once released (the campaign ended, or its instance stopped).
    pub lease_until: Option<String>,
    /// Which owner's run this is: 1 for the first instance, one more at each takeover (sends
    /// are at most once per attempt).
    pub attempt: i64,
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, u32>,
    pub devices: Vec<CampaignDevice>,
    pub log: Vec<LogEntry>,
    pub progress: Vec<ProgressPoint>,
    /// The checked `rollout` (absent: every device in one session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::waves::Rollout>,
    /// Each wave with its devices, state and counts (empty without `rollout`).
    pub waves: Vec<super::waves::WaveDto>,
    /// Why a `paused` campaign waits for the operator.
    pub paused_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FirmwareRef {
    pub id: i64,
    pub file_name: String,
    pub size: i64,
    pub sha256: String,
    pub deleted: bool,
}

/// One row of the campaign list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignSummary {
    pub id: i64,
    pub name: String,
    pub state: CampaignState,
    /// See [`CampaignDto::state_label`].
    pub state_label: String,
    pub driver: DriverKind,
    pub firmware_id: i64,
    pub firmware_file_name: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub error: Option<String>,
    pub devices: u32,
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, u32>,
}

/// "completed with failures" when a completed campaign has failed devices, else the state.
pub fn state_label(state: CampaignState, counts: &BTreeMap<String, u32>) -> String {
    let failed = counts.get(Stage::Failed.as_str()).copied().unwrap_or(0);
    if state == CampaignState::Completed && failed > 0 {
        "completed with failures".to_string()
    } else {
        state.as_str().to_string()
    }
}

/// [`count_stages`] of stages already counted by the database (`(stage, devices)`; two stored
/// spellings of one stage add up).
pub fn count_stage_groups(groups: &[(Stage, u32)]) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for (s, n) in groups {
        *counts.entry(s.as_str().to_string()).or_insert(0) += n;
    }
    counts
}

pub fn count_stages<'a>(stages: impl Iterator<Item = &'a Stage>) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for s in stages {
        *counts.entry(s.as_str().to_string()).or_insert(0) += 1;
    }
    counts
}

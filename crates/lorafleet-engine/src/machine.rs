//! The engine's campaign state machine, without I/O: the driver feeds it the network's clock
//! and the devices' replies, carries out the [`Action`]s it returns and stores [`Run`] and each
//! [`Dev`] after every step, so a restart continues from the stored state.
//!
//! A campaign goes through these phases:
//! 1. **Setup**, per device and at its own pace: the Version & Status check (running version,
//!    slot size), McGroupSetupReq, FragSessionSetupReq; each unicast command is retried every
//!    `unicast_timeout` up to `attempts` times.
//! 2. **SessionSetup**, once every device is set up (or failed) or the setup deadline passed:
//!    the session start is fixed far enough ahead for McClassC/BSessionReq to reach every
//!    device with its retries, and the multicast group is created on the network.
//! 3. **Session**, from the session start: the driver streams the fragments on the group.
//! 4. **After**, once the session ended and the last fragment was sent (only then is the group
//!    deleted): FragSessionStatusReq if configured, and after the reboot delay VersionRunningReq
//!    to verify that each device runs the new firmware.

use chrono::{DateTime, TimeDelta, Utc};
use lorafleet_codec::version_status::{render_version, VersioningType};
use serde::{Deserialize, Serialize};

use crate::adaptive::{AdaptiveParity, AdaptiveState, Report};
use crate::commands::{self, FragSetup, MulticastClass, Reply, SessionReq};
use crate::keys;
use crate::packages::{self, DevicePackages, Packages};
use lorafleet_codec::eui::DevEui;
use lorafleet_codec::frag_status::{FragStatus, Reading};

mod verification;
pub use verification::{parse_firmware_management, FmReport, Method, RebootWith};

/// How long after the session start the first fragment goes out.
pub const STREAM_START_DELAY: TimeDelta = TimeDelta::seconds(2);

/// What the Version & Status check before a campaign does with a device that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckMode {
    /// No check (devices without Version & Status).
    Off,
    /// Log a warning and update the device anyway.
    Warn,
    /// Leave the device out, before any FUOTA command is sent to it.
    Refuse,
}

/// When devices are asked for their fragmentation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FragStatusWhen {
    /// Never (a device that ends up not updated is still asked, to learn why).
    Never,
    /// Once the last fragment was sent.
    AfterEnqueue,
    /// Once the session ended.
    AfterSession,
}

/// A campaign's settings as the engine uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub group_id: u8,
    pub class: MulticastClass,
    pub dr: u8,
    pub frequency: u32,
    pub timeout_exp: u8,
    pub unicast_timeout: TimeDelta,
    pub attempts: u32,
    pub frag: FragSetup,
    pub redundancy: usize,
    pub frag_status: FragStatusWhen,
    pub check: CheckMode,
    /// Ask VersionRunning after the session and the reboot delay.
    pub verify: bool,
    pub reboot_delay: TimeDelta,
    pub status_port: u8,
    /// How the check before the update asks the version (what `check` does with a mismatch).
    pub check_method: Method,
    /// How the verification after the update asks the version (when `verify` is on).
    pub verify_method: Method,
    /// FPort of Firmware Management (TS006).
    pub fm_port: u8,
    /// How Firmware Management devices are told to reboot into the new image.
    pub reboot_with: RebootWith,
    /// Adaptive parity (`fragmentation.parity: "adaptive"`); `None` sends all `redundancy`.
    pub adaptive: Option<AdaptiveParity>,
}

/// Which part of the settings makes a command that cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsPart {
    /// The multicast group id (McGroupSetupReq).
    GroupId,
    /// Class, frequency, data rate, session timeout, ping slot periodicity (the session request).
    MulticastSession,
    /// The fragmentation session (FragSessionSetupReq, FragSessionStatusReq).
    Fragmentation,
}

/// A command the settings make that the devices could not be sent; the message is the
/// encoder's, prefixed with the command's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct Unencodable {
    pub part: SettingsPart,
    pub error: String,
}

impl Settings {
    /// Encodes every command these settings make once (with a zero McKey and McAddr and the
    /// GPS epoch as session time, which cannot make an encoding fail), so a value that does
    /// not fit its field on the air is refused where the campaign is set up, not sent later.
    pub fn check(&self) -> Result<(), Vec<Unencodable>> {
        let session_req = SessionReq {
            session_time: 0,
            ..self.session_req(DateTime::UNIX_EPOCH)
        };
        let tries = [
            (
                SettingsPart::GroupId,
                commands::mc_group_setup_req(self.group_id, [0; 4], [0; 16], 0, 0xffff),
            ),
            (
                SettingsPart::MulticastSession,
                commands::mc_session_req(&session_req),
            ),
            (
                SettingsPart::Fragmentation,
                commands::frag_session_setup_req(&self.frag),
            ),
            (
                SettingsPart::Fragmentation,
                commands::frag_session_status_req(self.frag.index, true),
            ),
        ];
        let errors: Vec<Unencodable> = tries
            .into_iter()
            .filter_map(|(part, r)| r.err().map(|error| Unencodable { part, error }))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// How long the multicast session lasts.
    pub fn session_length(&self) -> TimeDelta {
        let periods = 1i64 << self.timeout_exp.min(15);
        match self.class {
            MulticastClass::C => TimeDelta::seconds(periods),
            // TS005: class B timeouts count beacon periods of 128 s.
            MulticastClass::B { .. } => TimeDelta::seconds(periods * 128),
        }
    }

    /// The session request for a session starting at `start`.
    fn session_req(&self, start: DateTime<Utc>) -> SessionReq {
        SessionReq {
            group_id: self.group_id,
            session_time: lorafleet_codec::time::unix_to_gps(start.timestamp()),
            timeout_exp: self.timeout_exp,
            frequency: self.frequency,
            dr: self.dr,
            class: self.class,
        }
    }

    /// Unicast steps before the session: the check (if any), McGroupSetup, FragSessionSetup.
    fn setup_steps(&self) -> i32 {
        match (self.check, self.check_method) {
            (CheckMode::Off, _) | (_, Method::None) => 2,
            // Version & Status first, then Firmware Management: two checks' worth of retries.
            (_, Method::Auto) => 4,
            _ => 3,
        }
    }

    /// Time for one unicast step with every retry.
    fn step_budget(&self) -> TimeDelta {
        self.unicast_timeout * self.attempts.max(1) as i32
    }
}

/// The firmware a campaign installs, as far as the check and the verification need it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    pub image_len: usize,
    /// The signed trailer's version: what a device reports after the update.
    pub version: Option<u32>,
    /// The version as text when there is no trailer (matched against the rendered version).
    pub to_version: Option<String>,
    /// A delta applies only to this version (rendered, or raw as decimal / 0x hex).
    pub from_version: Option<String>,
    pub is_delta: bool,
}

impl Target {
    fn is(&self, raw: u32, vt: Option<VersioningType>) -> Option<bool> {
        match (self.version, &self.to_version) {
            (Some(v), _) => Some(v == raw),
            (None, Some(text)) => Some(version_matches(text, raw, vt)),
            (None, None) => None,
        }
    }
}

/// Whether a version written by an operator names `raw`.
fn version_matches(text: &str, raw: u32, vt: Option<VersioningType>) -> bool {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse::<u32>().ok(),
    };
    parsed == Some(raw) || render_version(raw, vt) == text
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Setup,
    SessionSetup,
    Session,
    After,
    Done,
}

/// Where one device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Check,
    McGroupSetup,
    FragSessionSetup,
    /// Set up; waiting for the other devices and the session setup.
    Ready,
    McSessionSetup,
    /// In the multicast session, receiving fragments.
    InSession,
    FragStatus,
    /// Firmware Management: DevUpgradeImageReq, the received image's status.
    ImageStatus,
    /// Firmware Management: DevRebootTimeReq or DevRebootCountdownReq.
    Reboot,
    /// Waiting for the reboot delay to pass.
    RebootWait,
    Verify,
    Done,
}

impl Step {
    fn waits_for_answer(self) -> bool {
        matches!(
            self,
            Step::Check
                | Step::McGroupSetup
                | Step::FragSessionSetup
                | Step::McSessionSetup
                | Step::FragStatus
                | Step::ImageStatus
                | Step::Reboot
                | Step::Verify
        )
    }

    fn command(self) -> &'static str {
        match self {
            Step::Check => "the Version & Status check (VersionRunningReq, SpaceStatusReq)",
            Step::McGroupSetup => "McGroupSetupReq",
            Step::FragSessionSetup => "FragSessionSetupReq",
            Step::McSessionSetup => "the multicast session request",
            Step::FragStatus => "FragSessionStatusReq",
            Step::Verify => "VersionRunningReq",
            Step::ImageStatus => "DevUpgradeImageReq",
            Step::Reboot => "the reboot request (DevRebootTimeReq / DevRebootCountdownReq)",
            _ => "",
        }
    }
}

/// How a device's update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It reports the new firmware's version.
    Verified,
    /// The session went through; the device's version was not (or could not be) checked.
    Completed,
    /// It answered but does not run the new firmware; the error says why.
    NotUpdated,
    /// It stopped answering.
    Unreachable,
    /// The check before the campaign left it out.
    Refused,
    /// The fragments went out and the device took part, but it answers no version method:
    /// neither success nor failure ("fragments delivered, version not verifiable").
    DeliveredUnverified,
}

impl Outcome {
    pub fn succeeded(self) -> bool {
        matches!(self, Outcome::Verified | Outcome::Completed)
    }
}

/// One device's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dev {
    pub dev_eui: DevEui,
    pub step: Step,
    pub attempts: u32,
    /// When to send (again) or give up.
    pub next_action_at: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    /// McKey encrypted under this device's McKEKey.
    #[serde(with = "hex_key")]
    pub mc_key_encrypted: [u8; 16],
    /// The device's versioning type (Version & Status), to put versions into words.
    pub versioning_type: Option<u8>,
    pub running_version: Option<u32>,
    pub slot_size: Option<u32>,
    /// FragSessionStatusAns: (fragments received, fragments missing).
    pub frag_status: Option<(u16, u8)>,
    /// Asking the fragmentation status only to learn why the device was not updated.
    pub diagnosing: bool,
    pub mc_group_setup_at: Option<DateTime<Utc>>,
    pub frag_session_setup_at: Option<DateTime<Utc>>,
    pub mc_session_setup_at: Option<DateTime<Utc>>,
    pub frag_status_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The method of the check or verification being asked now (auto tries one after the
    /// other); fields below default for devices stored before Firmware Management.
    #[serde(default)]
    pub trying: Option<Method>,
    /// The method whose answer the check used (`none`: the device answered neither).
    #[serde(default)]
    pub check_method_used: Option<Method>,
    /// The method whose answer the verification used (`none`: not verifiable).
    #[serde(default)]
    pub verify_method_used: Option<Method>,
    /// The last FragSessionStatusAns exactly as received, with the reading it was taken in.
    #[serde(default)]
    pub frag_status_report: Option<FragStatus>,
    /// Firmware Management: what the device reported (versions as 8 hex digits, as sent).
    #[serde(default)]
    pub fm: verification::FmReport,
    /// The package versions, FPorts and limits of this device (absent in state stored before
    /// they existed: the defaults, v1 on the standard FPorts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<DevicePackages>,
    /// How the device's stack fills FragSessionStatusAns (`None`: as TS004 says, a count).
    #[serde(default)]
    pub frag_reading: Option<Reading>,
    /// Its last answer to an adaptive-parity status request, with the estimate from it.
    #[serde(default)]
    pub adaptive: Option<Report>,
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(k))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        let mut k = [0u8; 16];
        hex::decode_to_slice(s, &mut k).map_err(serde::de::Error::custom)?;
        Ok(k)
    }
}

impl Dev {
    /// A device about to start; `mc_key_encrypted` from [`keys::encrypted_mc_key`].
    pub fn new(
        dev_eui: DevEui,
        mc_key_encrypted: [u8; 16],
        versioning_type: Option<u8>,
        s: &Settings,
        now: DateTime<Utc>,
    ) -> Dev {
        let first = s.check_method.first();
        Dev {
            dev_eui,
            step: if s.check == CheckMode::Off || first.is_none() {
                Step::McGroupSetup
            } else {
                Step::Check
            },
            attempts: 0,
            next_action_at: Some(now),
            outcome: None,
            error: None,
            mc_key_encrypted,
            versioning_type,
            running_version: None,
            slot_size: None,
            frag_status: None,
            diagnosing: false,
            mc_group_setup_at: None,
            frag_session_setup_at: None,
            mc_session_setup_at: None,
            frag_status_at: None,
            completed_at: None,
            trying: first.filter(|_| s.check != CheckMode::Off),
            check_method_used: None,
            verify_method_used: None,
            frag_status_report: None,
            fm: verification::FmReport::default(),
            packages: None,
            frag_reading: None,
            adaptive: None,
        }
    }

    /// What the device speaks and holds.
    pub fn speaks(&self, s: &Settings) -> DevicePackages {
        self.packages.unwrap_or(DevicePackages {
            packages: Packages::defaults(s.status_port),
            limits: Default::default(),
            frag_v2: None,
        })
    }

    /// A device that cannot take part (no keys, ...): done before anything is sent.
    pub fn refused(dev_eui: DevEui, reason: String, now: DateTime<Utc>) -> Dev {
        let mut d = Dev::new(dev_eui, [0; 16], None, &Settings::placeholder(), now);
        d.step = Step::Done;
        d.outcome = Some(Outcome::Refused);
        d.error = Some(reason);
        d.next_action_at = None;
        d.completed_at = Some(now);
        d
    }

    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    fn version_text(&self, raw: u32) -> String {
        render_version(raw, self.versioning_type.map(VersioningType::from_nibble))
    }
}

impl Settings {
    fn placeholder() -> Settings {
        Settings {
            group_id: 0,
            class: MulticastClass::C,
            dr: 0,
            frequency: 0,
            timeout_exp: 0,
            unicast_timeout: TimeDelta::zero(),
            attempts: 0,
            frag: FragSetup {
                index: 0,
                group_mask: 0,
                nb_frag: 0,
                frag_size: 0,
                padding: 0,
                block_ack_delay: 0,
                matrix: 0,
                descriptor: [0; 4],
            },
            redundancy: 0,
            frag_status: FragStatusWhen::Never,
            check: CheckMode::Off,
            verify: false,
            reboot_delay: TimeDelta::zero(),
            status_port: 0,
            check_method: Method::None,
            verify_method: Method::None,
            fm_port: lorafleet_codec::firmware_management::DEFAULT_F_PORT,
            reboot_with: RebootWith::RebootTime,
            adaptive: None,
        }
    }
}

/// A unicast command: its FPort, its bytes (or why they could not be encoded), its name.
type Request = (u8, Result<Vec<u8>, String>, &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Unicast {
        dev_eui: DevEui,
        f_port: u8,
        data: Vec<u8>,
        what: &'static str,
    },
    /// Create the multicast group on the network (McAddr and keys from the [`Run`]) with these
    /// members; the driver stores the network's id in [`Run::group`].
    CreateGroup { members: Vec<DevEui> },
    /// Delete the multicast group (the session ended and the last fragment was sent).
    DeleteGroup,
    /// Send a command to the multicast group, after the fragments queued before it.
    Multicast {
        f_port: u8,
        data: Vec<u8>,
        what: &'static str,
    },
    Log {
        level: Level,
        dev_eui: Option<DevEui>,
        message: String,
    },
}

/// The session start for a setup finished at `now`: whole seconds (GPS time has no fraction),
/// far enough ahead for every device to get the session request with its retries.
fn session_start_after(now: DateTime<Utc>, s: &Settings) -> DateTime<Utc> {
    let lead = s.step_budget() + TimeDelta::seconds(1);
    DateTime::from_timestamp((now + lead).timestamp() + 1, 0).unwrap_or(now + lead)
}

/// The campaign-wide state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub phase: Phase,
    /// Most significant byte first.
    pub mc_addr: [u8; 4],
    #[serde(with = "hex_key")]
    pub mc_key: [u8; 16],
    /// The network's id of the multicast group, once created.
    pub group: Option<String>,
    pub group_deleted: bool,
    pub setup_deadline: DateTime<Utc>,
    pub session_start: Option<DateTime<Utc>>,
    /// Next DataFragment to enqueue (0-based index into the fragment list).
    pub next_fragment: usize,
    /// When the network had sent every fragment.
    pub fragments_sent_at: Option<DateTime<Utc>>,
    pub verify_at: Option<DateTime<Utc>>,
    /// Uplink rows up to this id are all read (or never will be: gaps of rolled-back ids).
    pub uplink_cursor: i64,
    /// Rows above `uplink_cursor` already read, each with when it was first seen (real
    /// time): with several writers a lower id may commit after a higher one, so the cursor
    /// only passes a row once it has been seen for longer than any write takes to commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_uplinks: Vec<(i64, DateTime<Utc>)>,
    /// Why the campaign ended without any device updated.
    pub failure: Option<String>,
    /// Adaptive parity's rounds (unused with fixed parity).
    #[serde(default)]
    pub adaptive: AdaptiveState,
}

impl Run {
    pub fn new(s: &Settings, mc_addr: [u8; 4], mc_key: [u8; 16], now: DateTime<Utc>) -> Run {
        Run {
            phase: Phase::Setup,
            mc_addr,
            mc_key,
            group: None,
            group_deleted: false,
            setup_deadline: now + s.step_budget() * s.setup_steps(),
            session_start: None,
            next_fragment: 0,
            fragments_sent_at: None,
            verify_at: None,
            uplink_cursor: 0,
            recent_uplinks: Vec::new(),
            failure: None,
            adaptive: AdaptiveState::default(),
        }
    }

    /// The multicast session keys (McAppSKey, McNwkSKey) for the network group.
    pub fn session_keys(&self) -> ([u8; 16], [u8; 16]) {
        keys::session_keys(self.mc_key, self.mc_addr)
    }

    pub fn session_end(&self, s: &Settings) -> Option<DateTime<Utc>> {
        self.session_start.map(|t| t + s.session_length())
    }

    /// Whether fragments should be streamed now: in the session, once its first seconds have
    /// passed (a device whose clock is a little behind opens its window a little late, and a
    /// first fragment sent on the very second would be lost to it).
    pub fn streaming(&self, now: DateTime<Utc>) -> bool {
        self.phase == Phase::Session
            && self.fragments_sent_at.is_none()
            && self
                .session_start
                .is_some_and(|start| now >= start + STREAM_START_DELAY)
    }

    /// The earliest time something is due (the driver sleeps until then, or a reply).
    pub fn next_wakeup(&self, devs: &[Dev], s: &Settings) -> Option<DateTime<Utc>> {
        let mut t = devs
            .iter()
            .filter(|d| !d.is_done())
            .filter_map(|d| d.next_action_at)
            .min();
        let mut consider = |x: Option<DateTime<Utc>>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        match self.phase {
            Phase::Setup => consider(Some(self.setup_deadline)),
            Phase::SessionSetup => consider(self.session_start),
            Phase::Session => consider(self.session_end(s)),
            Phase::After => consider(self.verify_at),
            Phase::Done => return None,
        }
        t
    }

    /// The command a device's step sends: its FPort, its bytes and its name in the log.
    fn request(&self, d: &Dev, s: &Settings, now: DateTime<Utc>) -> Option<Request> {
        if let Some(r) = self.fm_request(d, s, now) {
            return Some(r);
        }
        let speaks = d.speaks(s);
        let (mc, frag) = (
            speaks.packages.multicast_setup,
            speaks.packages.fragmentation,
        );
        let status_port = speaks.packages.version_status.f_port;
        Some(match d.step {
            Step::Check => (
                status_port,
                Ok(commands::check_req()),
                "Version & Status check",
            ),
            Step::McGroupSetup => (
                mc.f_port,
                packages::mc_group_setup_req(
                    mc.version,
                    s.group_id,
                    self.mc_addr,
                    d.mc_key_encrypted,
                    0xffff,
                ),
                "TS005 McGroupSetupReq",
            ),
            Step::FragSessionSetup => (
                frag.f_port,
                packages::frag_session_setup_req(frag.version, &s.frag, speaks.frag_v2),
                "TS004 FragSessionSetupReq",
            ),
            Step::McSessionSetup => {
                let start = self.session_start.unwrap_or(now);
                (
                    mc.f_port,
                    packages::mc_session_req(mc.version, &s.session_req(start)),
                    match s.class {
                        MulticastClass::C => "TS005 McClassCSessionReq",
                        MulticastClass::B { .. } => "TS005 McClassBSessionReq",
                    },
                )
            }
            Step::FragStatus => (
                frag.f_port,
                packages::frag_session_status_req(frag.version, s.frag.index, true),
                "TS004 FragSessionStatusReq",
            ),
            Step::Verify => (
                status_port,
                Ok(commands::version_running_req()),
                "Version & Status VersionRunningReq",
            ),
            _ => return None,
        })
    }

    /// Sends the command of the device's step (again). [`Settings::new`] encoded every command
    /// once, so an encoding error here is a bug; the device fails with it rather than being
    /// sent an empty frame.
    fn send(&self, d: &mut Dev, s: &Settings, now: DateTime<Utc>, out: &mut Vec<Action>) {
        let Some((f_port, data, what)) = self.request(d, s, now) else {
            return;
        };
        let data = match data {
            Ok(data) => data,
            Err(e) => {
                let e = format!("could not encode {what}: {e}");
                Self::finish(d, Outcome::NotUpdated, Some(e), now, out);
                return;
            }
        };
        d.attempts += 1;
        d.next_action_at = Some(now + s.unicast_timeout);
        out.push(Action::Unicast {
            dev_eui: d.dev_eui,
            f_port,
            data,
            what,
        });
    }

    /// Moves a device to `step` and sends its command at once.
    fn go(&self, d: &mut Dev, step: Step, s: &Settings, now: DateTime<Utc>, out: &mut Vec<Action>) {
        d.step = step;
        d.attempts = 0;
        d.next_action_at = None;
        if step.waits_for_answer() {
            self.send(d, s, now, out);
        }
    }

    fn finish(
        d: &mut Dev,
        outcome: Outcome,
        error: Option<String>,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        d.step = Step::Done;
        d.outcome = Some(outcome);
        d.next_action_at = None;
        d.completed_at = Some(now);
        let (level, message) = match (&error, outcome) {
            (_, Outcome::Verified) => (Level::Info, "verified: runs the new firmware".to_string()),
            (_, Outcome::Completed) => (Level::Info, "completed".to_string()),
            (_, Outcome::DeliveredUnverified) => (
                Level::Warning,
                format!(
                    "fragments delivered, version not verifiable{}",
                    error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            ),
            (Some(e), _) => (Level::Error, e.clone()),
            (None, o) => (Level::Error, format!("{o:?}")),
        };
        d.error = error;
        out.push(Action::Log {
            level,
            dev_eui: Some(d.dev_eui),
            message,
        });
    }

    /// After the session (or the fragmentation status): wait for the reboot, or finish.
    fn after_session(&self, d: &mut Dev, s: &Settings, now: DateTime<Utc>, out: &mut Vec<Action>) {
        if !s.verify {
            Self::finish(d, Outcome::Completed, None, now, out);
            return;
        }
        if self.verify_by_method(d, s, now, out) {
            return;
        }
        // Before the session ended (status asked after the last fragment), the device can
        // already have its image: it reboots within the reboot delay after the last fragment.
        let at = self
            .verify_at
            .unwrap_or_else(|| self.fragments_sent_at.unwrap_or(now) + s.reboot_delay);
        if now >= at {
            self.go(d, Step::Verify, s, now, out);
        } else {
            d.step = Step::RebootWait;
            d.attempts = 0;
            d.next_action_at = Some(at);
        }
    }

    /// Takes one reply from a device, received at `at`.
    pub fn reply(
        &mut self,
        d: &mut Dev,
        reply: Reply,
        s: &Settings,
        t: &Target,
        at: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        let Some(reply) = self.reply_by_method(d, reply, s, t, at, out) else {
            return;
        };
        match (d.step, reply) {
            (_, Reply::VersioningType { nibble }) => d.versioning_type = Some(nibble),
            (Step::Check, Reply::VersionRunning { version }) => {
                d.check_method_used = Some(Method::VersionStatus);
                d.running_version = Some(version);
                if d.slot_size.is_some() {
                    self.checked(d, s, t, at, out);
                }
            }
            (Step::Check, Reply::SpaceStatus { slot_size, .. }) => {
                d.check_method_used = Some(Method::VersionStatus);
                d.slot_size = Some(slot_size);
                if d.running_version.is_some() {
                    self.checked(d, s, t, at, out);
                }
            }
            (Step::McGroupSetup, Reply::McGroupSetup { group_id, result })
                if group_id == s.group_id =>
            {
                match result {
                    Ok(()) => {
                        d.mc_group_setup_at = Some(at);
                        self.go(d, Step::FragSessionSetup, s, at, out);
                    }
                    Err(e) => Self::finish(d, Outcome::NotUpdated, Some(e), at, out),
                }
            }
            (Step::FragSessionSetup, Reply::FragSessionSetup { index, result })
                if index == s.frag.index =>
            {
                match result {
                    Ok(()) => {
                        d.frag_session_setup_at = Some(at);
                        d.step = Step::Ready;
                        d.attempts = 0;
                        d.next_action_at = None;
                    }
                    Err(e) => {
                        let limits = d.speaks(s).limits;
                        let e = packages::explain_refusal(e, &s.frag, s.redundancy, &limits);
                        Self::finish(d, Outcome::NotUpdated, Some(e), at, out);
                    }
                }
            }
            (Step::McSessionSetup, Reply::McSession { group_id, result })
                if group_id == s.group_id =>
            {
                match result {
                    Ok(_) => {
                        d.mc_session_setup_at = Some(at);
                        d.step = Step::InSession;
                        d.attempts = 0;
                        d.next_action_at = None;
                    }
                    Err(e) => Self::finish(d, Outcome::NotUpdated, Some(e), at, out),
                }
            }
            (
                Step::FragStatus,
                Reply::FragStatus {
                    index,
                    received,
                    missing,
                    not_enough_memory,
                },
            ) if index == s.frag.index => {
                d.frag_status = Some((received, missing));
                d.frag_status_at = Some(at);
                self.frag_status_answered(d, not_enough_memory, s, at, out);
            }
            (
                Step::InSession,
                Reply::FragStatus {
                    index,
                    received,
                    missing,
                    not_enough_memory,
                },
            ) if index == s.frag.index && s.adaptive.is_some() => {
                let answer = (index, received, missing, not_enough_memory);
                crate::adaptive::answered(self, d, answer, s, at);
            }
            (Step::Verify, Reply::VersionRunning { version }) => {
                d.verify_method_used = Some(Method::VersionStatus);
                self.version_answered(d, version, s, t, at, out);
            }
            _ => {}
        }
    }

    /// FragSessionStatusAns (already stored in `d.frag_status`): why the device was not
    /// updated, or on to the verification.
    fn frag_status_answered(
        &self,
        d: &mut Dev,
        not_enough_memory: bool,
        s: &Settings,
        at: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        let (received, missing) = d.frag_status.unwrap_or_default();
        if !d.diagnosing && self.status_is_only_a_report(d, not_enough_memory, s, at, out) {
            return;
        }
        if not_enough_memory {
            let e = "FragSessionStatusAns: not enough memory for the decoding matrix".to_string();
            Self::finish(d, Outcome::NotUpdated, Some(e), at, out);
        } else if missing > 0 {
            let e = match d.frag_status_report.as_ref().map(|r| r.reading) {
                Some(lorafleet_codec::frag_status::Reading::HighestN) => format!(
                    "lacked fragments: its last fragment was N = {received} of the {} sent and it lost {missing} data fragments",
                    usize::from(s.frag.nb_frag) + s.redundancy
                ),
                _ => format!(
                    "lacked fragments: received {received} of the {} sent, {missing} more needed to rebuild the image",
                    usize::from(s.frag.nb_frag) + s.redundancy
                ),
            };
            Self::finish(d, Outcome::NotUpdated, Some(e), at, out);
        } else if d.diagnosing {
            let running = d
                .running_version
                .map_or("its old firmware".into(), |v| d.version_text(v));
            let e =
                format!("received the whole image but still runs {running}: it did not install it");
            Self::finish(d, Outcome::NotUpdated, Some(e), at, out);
        } else {
            self.after_session(d, s, at, out);
        }
    }

    /// VersionRunningAns after the update: verified, or asked why not.
    fn version_answered(
        &self,
        d: &mut Dev,
        version: u32,
        s: &Settings,
        t: &Target,
        at: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        d.running_version = Some(version);
        let vt = d.versioning_type.map(VersioningType::from_nibble);
        match t.is(version, vt) {
            Some(true) => Self::finish(d, Outcome::Verified, None, at, out),
            None => Self::finish(d, Outcome::Completed, None, at, out),
            Some(false) if d.frag_status.is_none() => {
                // Not updated: ask how far the fragmentation got, to say why.
                d.diagnosing = true;
                self.go(d, Step::FragStatus, s, at, out);
            }
            Some(false) => {
                let mut e = format!("still runs {} after the update", d.version_text(version));
                if let Some(r) = &d.adaptive {
                    e = format!("{e}; {}", r.describe());
                }
                Self::finish(d, Outcome::NotUpdated, Some(e), at, out);
            }
        }
    }

    /// The check's answers are in (or the check timed out with what was known).
    fn checked(
        &self,
        d: &mut Dev,
        s: &Settings,
        t: &Target,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        let mut problems = Vec::new();
        if let Some(slot) = d.slot_size {
            if (slot as usize) < t.image_len {
                problems.push(format!(
                    "its firmware slot ({slot} bytes) is smaller than the image ({} bytes)",
                    t.image_len
                ));
            }
        }
        if let (true, Some(from), Some(running)) = (t.is_delta, &t.from_version, d.running_version)
        {
            let vt = d.versioning_type.map(VersioningType::from_nibble);
            if !version_matches(from, running, vt) {
                problems.push(format!(
                    "it runs {}, but the delta applies to {from}",
                    d.version_text(running)
                ));
            }
        }
        if problems.is_empty() {
            self.go(d, Step::McGroupSetup, s, now, out);
            return;
        }
        let problems = problems.join("; ");
        match s.check {
            CheckMode::Refuse => {
                let e = format!("refused before the update: {problems}");
                Self::finish(d, Outcome::Refused, Some(e), now, out);
            }
            _ => {
                out.push(Action::Log {
                    level: Level::Warning,
                    dev_eui: Some(d.dev_eui),
                    message: format!("updating anyway: {problems}"),
                });
                self.go(d, Step::McGroupSetup, s, now, out);
            }
        }
    }

    /// A device did not answer its current command `attempts` times.
    fn gave_up(
        &self,
        d: &mut Dev,
        s: &Settings,
        t: &Target,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        let unanswered = format!(
            "no answer to {} after {} attempts",
            self.command_of(d),
            d.attempts
        );
        if self.gave_up_on_method(d, s, &unanswered, now, out) {
            return;
        }
        match d.step {
            Step::Check if s.check == CheckMode::Warn => {
                out.push(Action::Log {
                    level: Level::Warning,
                    dev_eui: Some(d.dev_eui),
                    message: format!("{unanswered}; updating without the check"),
                });
                self.go(d, Step::McGroupSetup, s, now, out);
            }
            Step::Check if d.running_version.is_some() || d.slot_size.is_some() => {
                self.checked(d, s, t, now, out);
            }
            // A device that does not say how far it got may still have installed the image.
            Step::FragStatus if !d.diagnosing && s.verify => {
                out.push(Action::Log {
                    level: Level::Warning,
                    dev_eui: Some(d.dev_eui),
                    message: unanswered,
                });
                self.after_session(d, s, now, out);
            }
            Step::FragStatus if d.diagnosing => {
                let running = d
                    .running_version
                    .map_or("its old firmware".into(), |v| d.version_text(v));
                let e = format!("still runs {running}; {unanswered}");
                Self::finish(d, Outcome::NotUpdated, Some(e), now, out);
            }
            _ => Self::finish(d, Outcome::Unreachable, Some(unanswered), now, out),
        }
    }

    /// Runs everything due at `now`: retries, time-outs and phase changes.
    pub fn tick(
        &mut self,
        devs: &mut [Dev],
        s: &Settings,
        t: &Target,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        self.retry_due(devs, s, t, now, out);
        match self.phase {
            Phase::Setup => self.tick_setup(devs, s, now, out),
            Phase::SessionSetup => self.tick_session_setup(devs, s, now, out),
            Phase::Session => self.tick_session(devs, s, now, out),
            Phase::After => self.tick_after(devs, out),
            Phase::Done => {}
        }
    }

    /// Every device whose time has come: sends its command again, gives up after the last
    /// attempt, or asks for the version once the reboot delay passed.
    fn retry_due(
        &self,
        devs: &mut [Dev],
        s: &Settings,
        t: &Target,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        for d in devs.iter_mut() {
            if d.next_action_at.is_none_or(|at| at > now) {
                continue;
            }
            if d.step == Step::RebootWait {
                self.go(d, Step::Verify, s, now, out);
            } else if d.step.waits_for_answer() {
                if d.attempts >= s.attempts.max(1) {
                    self.gave_up(d, s, t, now, out);
                } else {
                    self.send(d, s, now, out);
                }
            }
        }
    }

    /// Setup: once every device is set up (or done) or the deadline passed, the session start
    /// is fixed, the group created and the session request sent to every member.
    fn tick_setup(
        &mut self,
        devs: &mut [Dev],
        s: &Settings,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        let all_set = devs.iter().all(|d| d.is_done() || d.step == Step::Ready);
        if !all_set && now < self.setup_deadline {
            return;
        }
        for d in devs
            .iter_mut()
            .filter(|d| !d.is_done() && d.step != Step::Ready)
        {
            let e = format!(
                "the setup deadline passed while waiting for the answer to {} (attempt {} of {})",
                self.command_of(d),
                d.attempts,
                s.attempts
            );
            Self::finish(d, Outcome::Unreachable, Some(e), now, out);
        }
        let members: Vec<DevEui> = devs
            .iter()
            .filter(|d| d.step == Step::Ready)
            .map(|d| d.dev_eui)
            .collect();
        if members.is_empty() {
            self.end("no device completed the setup", out);
            return;
        }
        let start = session_start_after(now, s);
        self.session_start = Some(start);
        self.phase = Phase::SessionSetup;
        out.push(Action::Log {
            level: Level::Info,
            dev_eui: None,
            message: format!(
                "{} devices set up; the multicast session starts at {}",
                members.len(),
                start.to_rfc3339()
            ),
        });
        out.push(Action::CreateGroup { members });
        for d in devs.iter_mut().filter(|d| d.step == Step::Ready) {
            self.go(d, Step::McSessionSetup, s, now, out);
        }
    }

    /// SessionSetup: at the session start, devices that did not confirm are given up (retries
    /// that could not arrive before the start are pointless) and the session begins.
    fn tick_session_setup(
        &mut self,
        devs: &mut [Dev],
        s: &Settings,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        if self.session_start.is_none_or(|start| now < start) {
            return;
        }
        for d in devs.iter_mut().filter(|d| d.step == Step::McSessionSetup) {
            let e = "did not confirm the multicast session before it started".to_string();
            Self::finish(d, Outcome::Unreachable, Some(e), now, out);
        }
        let joined = devs.iter().filter(|d| d.step == Step::InSession).count();
        if joined == 0 {
            self.end("no device joined the multicast session", out);
            return;
        }
        self.phase = Phase::Session;
        out.push(Action::Log {
            level: Level::Info,
            dev_eui: None,
            message: format!(
                "multicast session started with {joined} devices; sending {} fragments",
                usize::from(s.frag.nb_frag) + s.redundancy
            ),
        });
    }

    /// Session: once the last fragment was sent (status asked then, if so configured) and the
    /// session ended, the group is deleted and every member moves on.
    fn tick_session(
        &mut self,
        devs: &mut [Dev],
        s: &Settings,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        self.tick_adaptive(devs, s, now, out);
        let Some(sent) = self.fragments_sent_at else {
            return;
        };
        if s.frag_status == FragStatusWhen::AfterEnqueue {
            for d in devs.iter_mut().filter(|d| d.step == Step::InSession) {
                self.go(d, Step::FragStatus, s, now, out);
            }
        }
        // Issue 8 item 7: once no device can gain from the rest of the session, the campaign
        // moves on instead of waiting for the session's timeout.
        let end = if s.adaptive.is_some() || !devs.iter().any(|d| d.step == Step::InSession) {
            sent
        } else {
            self.session_end(s).unwrap_or(sent).max(sent)
        };
        if now < end {
            return;
        }
        self.phase = Phase::After;
        self.verify_at = Some(end + s.reboot_delay);
        if !self.group_deleted {
            out.push(Action::DeleteGroup);
        }
        for d in devs.iter_mut().filter(|d| d.step == Step::InSession) {
            // Adaptive parity heard from the devices already (a device's report names it).
            if s.frag_status == FragStatusWhen::AfterSession && s.adaptive.is_none() {
                self.go(d, Step::FragStatus, s, now, out);
            } else {
                self.after_session(d, s, now, out);
            }
        }
    }

    /// After: once every device is done, the report; a campaign that updated no device fails.
    fn tick_after(&mut self, devs: &[Dev], out: &mut Vec<Action>) {
        if !devs.iter().all(Dev::is_done) {
            return;
        }
        self.phase = Phase::Done;
        let count = |o: Outcome| devs.iter().filter(|d| d.outcome == Some(o)).count();
        out.push(Action::Log {
            level: Level::Info,
            dev_eui: None,
            message: format!(
                "report: {} verified, {} completed without verification, {} delivered (version not verifiable), {} not updated, {} unreachable, {} refused",
                count(Outcome::Verified),
                count(Outcome::Completed),
                count(Outcome::DeliveredUnverified),
                count(Outcome::NotUpdated),
                count(Outcome::Unreachable),
                count(Outcome::Refused)
            ),
        });
        // Delivered but unverifiable devices are no failure of the campaign either.
        if !devs.iter().any(|d| {
            d.outcome
                .is_some_and(|o| o.succeeded() || o == Outcome::DeliveredUnverified)
        }) {
            self.failure = Some("no device was updated".into());
        }
    }

    fn end(&mut self, why: &str, out: &mut Vec<Action>) {
        self.phase = Phase::Done;
        self.failure = Some(why.to_string());
        if self.group.is_some() && !self.group_deleted {
            out.push(Action::DeleteGroup);
        }
        out.push(Action::Log {
            level: Level::Error,
            dev_eui: None,
            message: why.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            group_id: 0,
            class: MulticastClass::C,
            dr: 5,
            frequency: 869_525_000,
            timeout_exp: 6,
            unicast_timeout: TimeDelta::seconds(60),
            attempts: 3,
            frag: FragSetup::for_image(1000, 50, 0, 0, 0, 0, [0; 4]).unwrap(),
            redundancy: 5,
            frag_status: FragStatusWhen::Never,
            check: CheckMode::Refuse,
            verify: true,
            reboot_delay: TimeDelta::seconds(30),
            status_port: 111,
            check_method: Method::VersionStatus,
            verify_method: Method::VersionStatus,
            fm_port: 203,
            reboot_with: RebootWith::RebootTime,
            adaptive: None,
        }
    }

    fn target() -> Target {
        Target {
            image_len: 1000,
            version: Some(0x0001_0300),
            ..Default::default()
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn unicasts(out: &[Action]) -> Vec<(DevEui, u8, &'static str)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Unicast {
                    dev_eui,
                    f_port,
                    what,
                    ..
                } => Some((*dev_eui, *f_port, *what)),
                _ => None,
            })
            .collect()
    }

    /// Two devices through every phase: one is updated and verified, the other lacked
    /// fragments and says so when asked.
    #[test]
    fn a_campaign_from_check_to_report() {
        let s = settings();
        let t = target();
        let a = DevEui([1; 8]);
        let b = DevEui([2; 8]);
        let mut devs = vec![
            Dev::new(a, [0; 16], Some(1), &s, t0()),
            Dev::new(b, [0; 16], Some(1), &s, t0()),
        ];
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut out = Vec::new();
        run.tick(&mut devs, &s, &t, t0(), &mut out);
        assert_eq!(unicasts(&out).len(), 2);
        assert!(unicasts(&out).iter().all(|u| u.1 == 111));
        let at = t0() + TimeDelta::seconds(10);
        for d in devs.iter_mut() {
            answer_check_and_setup(&mut run, d, &s, &t, at, &mut out);
        }
        out.clear();
        run.tick(&mut devs, &s, &t, at, &mut out);
        assert_eq!(run.phase, Phase::SessionSetup);
        assert!(out.contains(&Action::CreateGroup {
            members: vec![a, b]
        }));
        let start = run.session_start.unwrap();
        assert_eq!(
            start,
            at + TimeDelta::seconds(182),
            "3 x 60 s of retries ahead, rounded up"
        );
        for d in devs.iter_mut() {
            run.reply(
                d,
                Reply::McSession {
                    group_id: 0,
                    result: Ok(170),
                },
                &s,
                &t,
                at,
                &mut out,
            );
        }
        run.tick(&mut devs, &s, &t, start, &mut out);
        assert!(!run.streaming(start));
        assert!(run.streaming(start + STREAM_START_DELAY));
        run.fragments_sent_at = Some(start + TimeDelta::seconds(20));
        out.clear();
        run.tick(&mut devs, &s, &t, start + TimeDelta::seconds(30), &mut out);
        assert_eq!(
            run.phase,
            Phase::Session,
            "the group lives until the session ends"
        );
        let end = start + TimeDelta::seconds(64);
        run.tick(&mut devs, &s, &t, end, &mut out);
        assert_eq!(out, vec![Action::DeleteGroup]);
        assert_eq!(devs[0].step, Step::RebootWait);
        verify_after_reboot(&mut run, &mut devs, &s, &t, end, &mut out);
    }

    /// One device of [`a_campaign_from_check_to_report`] answers the check, then takes its
    /// multicast group and fragmentation session, each answer drawing the next request.
    fn answer_check_and_setup(
        run: &mut Run,
        d: &mut Dev,
        s: &Settings,
        t: &Target,
        at: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        out.clear();
        run.reply(
            d,
            Reply::VersionRunning {
                version: 0x0001_0200,
            },
            s,
            t,
            at,
            out,
        );
        run.reply(
            d,
            Reply::SpaceStatus {
                slot_size: 4096,
                heap: None,
            },
            s,
            t,
            at,
            out,
        );
        assert_eq!(
            unicasts(out),
            vec![(d.dev_eui, 200, "TS005 McGroupSetupReq")]
        );
        out.clear();
        run.reply(
            d,
            Reply::McGroupSetup {
                group_id: 0,
                result: Ok(()),
            },
            s,
            t,
            at,
            out,
        );
        assert_eq!(unicasts(out)[0].2, "TS004 FragSessionSetupReq");
        run.reply(
            d,
            Reply::FragSessionSetup {
                index: 0,
                result: Ok(()),
            },
            s,
            t,
            at,
            out,
        );
        assert_eq!(d.step, Step::Ready);
    }

    /// After the session of [`a_campaign_from_check_to_report`], the first device runs the new
    /// version and the second, still on the old one, is asked what it lacked.
    fn verify_after_reboot(
        run: &mut Run,
        devs: &mut [Dev],
        s: &Settings,
        t: &Target,
        end: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        let b = devs[1].dev_eui;
        out.clear();
        run.tick(devs, s, t, end + TimeDelta::seconds(30), out);
        assert_eq!(unicasts(out).len(), 2, "VersionRunningReq to both");
        let v = end + TimeDelta::seconds(40);
        run.reply(
            &mut devs[0],
            Reply::VersionRunning {
                version: 0x0001_0300,
            },
            s,
            t,
            v,
            out,
        );
        assert_eq!(devs[0].outcome, Some(Outcome::Verified));
        out.clear();
        run.reply(
            &mut devs[1],
            Reply::VersionRunning {
                version: 0x0001_0200,
            },
            s,
            t,
            v,
            out,
        );
        assert_eq!(unicasts(out), vec![(b, 201, "TS004 FragSessionStatusReq")]);
        run.reply(
            &mut devs[1],
            Reply::FragStatus {
                index: 0,
                received: 8,
                missing: 12,
                not_enough_memory: false,
            },
            s,
            t,
            v,
            out,
        );
        assert_eq!(devs[1].outcome, Some(Outcome::NotUpdated));
        assert!(
            devs[1]
                .error
                .as_deref()
                .unwrap()
                .starts_with("lacked fragments"),
            "{:?}",
            devs[1].error
        );
        run.tick(devs, s, t, v, out);
        assert_eq!(run.phase, Phase::Done);
        assert_eq!(run.failure, None);
    }

    #[test]
    fn a_slot_too_small_is_refused_before_any_fuota_command() {
        let s = settings();
        let t = Target {
            image_len: 5000,
            ..target()
        };
        let mut d = Dev::new(DevEui([1; 8]), [0; 16], Some(1), &s, t0());
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut out = Vec::new();
        run.tick(std::slice::from_mut(&mut d), &s, &t, t0(), &mut out);
        out.clear();
        run.reply(
            &mut d,
            Reply::VersionRunning { version: 1 },
            &s,
            &t,
            t0(),
            &mut out,
        );
        run.reply(
            &mut d,
            Reply::SpaceStatus {
                slot_size: 4096,
                heap: None,
            },
            &s,
            &t,
            t0(),
            &mut out,
        );
        assert!(unicasts(&out).is_empty());
        assert_eq!(d.outcome, Some(Outcome::Refused));
        assert!(d.error.unwrap().contains("smaller than the image"));
    }

    #[test]
    fn unanswered_commands_are_retried_then_the_device_fails_with_the_reason() {
        let s = settings();
        let t = target();
        let mut devs = vec![Dev::new(DevEui([1; 8]), [0; 16], None, &s, t0())];
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut out = Vec::new();
        for k in 0..4 {
            run.tick(
                &mut devs,
                &s,
                &t,
                t0() + TimeDelta::seconds(60 * k),
                &mut out,
            );
        }
        assert_eq!(unicasts(&out).len(), 3);
        assert_eq!(devs[0].outcome, Some(Outcome::Unreachable));
        assert!(devs[0]
            .error
            .as_deref()
            .unwrap()
            .contains("after 3 attempts"));
        run.tick(&mut devs, &s, &t, t0() + TimeDelta::seconds(240), &mut out);
        assert_eq!(run.phase, Phase::Done);
        assert_eq!(
            run.failure.as_deref(),
            Some("no device completed the setup")
        );
    }

    /// With the status asked after the last fragment (before the session ends), a device that
    /// has everything is verified after the reboot delay, not at once.
    #[test]
    fn status_after_enqueue_waits_for_the_reboot_before_verifying() {
        let s = Settings {
            frag_status: FragStatusWhen::AfterEnqueue,
            check: CheckMode::Off,
            ..settings()
        };
        let t = target();
        let mut devs = vec![Dev::new(DevEui([1; 8]), [0; 16], Some(1), &s, t0())];
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut out = Vec::new();
        run.tick(&mut devs, &s, &t, t0(), &mut out);
        let d = &mut devs[0];
        run.reply(
            d,
            Reply::McGroupSetup {
                group_id: 0,
                result: Ok(()),
            },
            &s,
            &t,
            t0(),
            &mut out,
        );
        run.reply(
            d,
            Reply::FragSessionSetup {
                index: 0,
                result: Ok(()),
            },
            &s,
            &t,
            t0(),
            &mut out,
        );
        run.tick(&mut devs, &s, &t, t0(), &mut out);
        run.reply(
            &mut devs[0],
            Reply::McSession {
                group_id: 0,
                result: Ok(10),
            },
            &s,
            &t,
            t0(),
            &mut out,
        );
        let start = run.session_start.unwrap();
        run.tick(&mut devs, &s, &t, start, &mut out);
        let sent = start + TimeDelta::seconds(10);
        run.fragments_sent_at = Some(sent);
        out.clear();
        run.tick(&mut devs, &s, &t, sent, &mut out);
        assert_eq!(
            unicasts(&out),
            vec![(devs[0].dev_eui, 201, "TS004 FragSessionStatusReq")]
        );
        run.reply(
            &mut devs[0],
            Reply::FragStatus {
                index: 0,
                received: 25,
                missing: 0,
                not_enough_memory: false,
            },
            &s,
            &t,
            sent,
            &mut out,
        );
        assert_eq!(devs[0].step, Step::RebootWait);
        assert_eq!(devs[0].next_action_at, Some(sent + s.reboot_delay));
    }

    /// A device already at `step`, as the phase methods find it.
    fn dev_at(n: u8, step: Step, s: &Settings) -> Dev {
        let mut d = Dev::new(DevEui([n; 8]), [0; 16], Some(1), s, t0());
        d.step = step;
        d.next_action_at = None;
        d
    }

    #[test]
    fn retry_due_resends_only_what_is_due_and_verifies_after_the_reboot() {
        let s = settings();
        let run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut due = dev_at(1, Step::McGroupSetup, &s);
        due.attempts = 1;
        due.next_action_at = Some(t0());
        let mut later = dev_at(2, Step::McGroupSetup, &s);
        later.next_action_at = Some(t0() + TimeDelta::seconds(1));
        let mut rebooted = dev_at(3, Step::RebootWait, &s);
        rebooted.next_action_at = Some(t0());
        let mut devs = vec![due, later, rebooted];
        let mut out = Vec::new();
        run.retry_due(&mut devs, &s, &target(), t0(), &mut out);
        assert_eq!(
            unicasts(&out),
            vec![
                (DevEui([1; 8]), 200, "TS005 McGroupSetupReq"),
                (DevEui([3; 8]), 111, "Version & Status VersionRunningReq")
            ]
        );
        assert_eq!(devs[0].attempts, 2);
        assert_eq!(devs[0].next_action_at, Some(t0() + s.unicast_timeout));
        assert_eq!(devs[2].step, Step::Verify);
    }

    #[test]
    fn retry_due_gives_up_after_the_last_attempt() {
        let s = settings();
        let run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut d = dev_at(1, Step::FragSessionSetup, &s);
        d.attempts = s.attempts;
        d.next_action_at = Some(t0());
        let mut devs = vec![d];
        let mut out = Vec::new();
        run.retry_due(&mut devs, &s, &target(), t0(), &mut out);
        assert!(unicasts(&out).is_empty());
        assert_eq!(devs[0].outcome, Some(Outcome::Unreachable));
        assert_eq!(
            devs[0].error.as_deref(),
            Some("no answer to FragSessionSetupReq after 3 attempts")
        );
    }

    #[test]
    fn setup_waits_for_every_device_until_the_deadline() {
        let s = settings();
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut devs = vec![
            dev_at(1, Step::Ready, &s),
            dev_at(2, Step::FragSessionSetup, &s),
        ];
        let mut out = Vec::new();
        run.tick_setup(&mut devs, &s, t0(), &mut out);
        assert_eq!((run.phase, out.len()), (Phase::Setup, 0));
        let deadline = run.setup_deadline;
        run.tick_setup(&mut devs, &s, deadline, &mut out);
        assert_eq!(run.phase, Phase::SessionSetup);
        assert_eq!(devs[1].outcome, Some(Outcome::Unreachable));
        assert!(out.contains(&Action::CreateGroup {
            members: vec![DevEui([1; 8])]
        }));
        assert_eq!(
            unicasts(&out),
            vec![(DevEui([1; 8]), 200, "TS005 McClassCSessionReq")]
        );
        assert_eq!(devs[0].step, Step::McSessionSetup);
        assert_eq!(
            run.session_start,
            Some(deadline + TimeDelta::seconds(182)),
            "3 x 60 s of retries ahead, whole seconds"
        );
    }

    #[test]
    fn setup_without_any_ready_device_ends_the_campaign() {
        let s = settings();
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut devs = vec![dev_at(1, Step::Check, &s)];
        let mut out = Vec::new();
        run.tick_setup(&mut devs, &s, run.setup_deadline, &mut out);
        assert_eq!(run.phase, Phase::Done);
        assert_eq!(
            run.failure.as_deref(),
            Some("no device completed the setup")
        );
        assert!(!out.contains(&Action::DeleteGroup), "no group was created");
    }

    #[test]
    fn session_setup_gives_up_unconfirmed_devices_at_the_start() {
        let s = settings();
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let start = t0() + TimeDelta::seconds(100);
        run.phase = Phase::SessionSetup;
        run.session_start = Some(start);
        let mut devs = vec![
            dev_at(1, Step::InSession, &s),
            dev_at(2, Step::McSessionSetup, &s),
        ];
        let mut out = Vec::new();
        run.tick_session_setup(&mut devs, &s, start - TimeDelta::seconds(1), &mut out);
        assert_eq!((run.phase, out.len()), (Phase::SessionSetup, 0));
        run.tick_session_setup(&mut devs, &s, start, &mut out);
        assert_eq!(run.phase, Phase::Session);
        assert_eq!(devs[1].outcome, Some(Outcome::Unreachable));
        assert_eq!(devs[0].step, Step::InSession);
    }

    #[test]
    fn session_setup_without_members_deletes_the_group_and_fails() {
        let s = settings();
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        run.phase = Phase::SessionSetup;
        run.session_start = Some(t0());
        run.group = Some("g".into());
        let mut devs = vec![dev_at(1, Step::McSessionSetup, &s)];
        let mut out = Vec::new();
        run.tick_session_setup(&mut devs, &s, t0(), &mut out);
        assert_eq!(run.phase, Phase::Done);
        assert_eq!(
            run.failure.as_deref(),
            Some("no device joined the multicast session")
        );
        assert!(out.contains(&Action::DeleteGroup));
    }

    #[test]
    fn session_ends_once_the_fragments_are_sent_and_the_time_is_up() {
        let s = Settings {
            frag_status: FragStatusWhen::AfterSession,
            ..settings()
        };
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        run.phase = Phase::Session;
        run.session_start = Some(t0());
        let end = t0() + s.session_length();
        let mut devs = vec![dev_at(1, Step::InSession, &s)];
        let mut out = Vec::new();
        run.tick_session(&mut devs, &s, end, &mut out);
        assert_eq!((run.phase, out.len()), (Phase::Session, 0), "not all sent");
        run.fragments_sent_at = Some(t0() + TimeDelta::seconds(10));
        run.tick_session(&mut devs, &s, end - TimeDelta::seconds(1), &mut out);
        assert_eq!((run.phase, out.len()), (Phase::Session, 0), "session on");
        run.tick_session(&mut devs, &s, end, &mut out);
        assert_eq!(run.phase, Phase::After);
        assert_eq!(run.verify_at, Some(end + s.reboot_delay));
        assert_eq!(out[0], Action::DeleteGroup);
        assert_eq!(
            unicasts(&out),
            vec![(DevEui([1; 8]), 201, "TS004 FragSessionStatusReq")]
        );
    }

    #[test]
    fn after_reports_once_every_device_is_done() {
        let s = settings();
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        run.phase = Phase::After;
        let mut a = dev_at(1, Step::Verify, &s);
        let mut out = Vec::new();
        run.tick_after(std::slice::from_ref(&a), &mut out);
        assert_eq!((run.phase, out.len()), (Phase::After, 0));
        a.step = Step::Done;
        a.outcome = Some(Outcome::NotUpdated);
        run.tick_after(&[a], &mut out);
        assert_eq!(run.phase, Phase::Done);
        assert_eq!(run.failure.as_deref(), Some("no device was updated"));
        assert_eq!(
            out,
            vec![Action::Log {
                level: Level::Info,
                dev_eui: None,
                message: "report: 0 verified, 0 completed without verification, 0 delivered (version not verifiable), 1 not updated, 0 unreachable, 0 refused".into()
            }]
        );
    }

    #[test]
    fn settings_that_encode_pass_the_check() {
        assert_eq!(settings().check(), Ok(()));
        let class_b = Settings {
            class: MulticastClass::B {
                ping_slot_periodicity: 7,
            },
            ..settings()
        };
        assert_eq!(class_b.check(), Ok(()));
    }

    #[test]
    fn settings_that_cannot_be_sent_are_refused_naming_the_part() {
        let part_of = |s: Settings| {
            s.check()
                .unwrap_err()
                .into_iter()
                .map(|e| (e.part, e.error))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            part_of(Settings {
                group_id: 4,
                ..settings()
            })[0],
            (
                SettingsPart::GroupId,
                "McGroupSetupReq: Max mc_group_id value is 3".to_string()
            )
        );
        let session = part_of(Settings {
            frequency: 869_525_050,
            ..settings()
        });
        assert_eq!(
            session,
            vec![(
                SettingsPart::MulticastSession,
                "multicast session request: freq must be multiple of 100".to_string()
            )]
        );
        let timeout = part_of(Settings {
            timeout_exp: 16,
            ..settings()
        });
        assert_eq!(timeout[0].0, SettingsPart::MulticastSession);
        let periodicity = part_of(Settings {
            class: MulticastClass::B {
                ping_slot_periodicity: 8,
            },
            ..settings()
        });
        assert_eq!(periodicity[0].0, SettingsPart::MulticastSession);
        let mut frag = settings();
        frag.frag.index = 4;
        let frag = part_of(frag);
        assert_eq!(frag.len(), 2, "setup and status request: {frag:?}");
        assert!(frag.iter().all(|(p, _)| *p == SettingsPart::Fragmentation));
    }

    /// A command that cannot be encoded fails the device with the reason instead of sending it
    /// an empty frame (settings that skipped [`Settings::check`]).
    #[test]
    fn an_unencodable_command_fails_the_device_not_sends_nothing() {
        let s = Settings {
            group_id: 4,
            check: CheckMode::Off,
            ..settings()
        };
        let mut devs = vec![Dev::new(DevEui([1; 8]), [0; 16], None, &s, t0())];
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut out = Vec::new();
        run.tick(&mut devs, &s, &target(), t0(), &mut out);
        assert!(unicasts(&out).is_empty());
        assert_eq!(devs[0].outcome, Some(Outcome::NotUpdated));
        assert_eq!(
            devs[0].error.as_deref(),
            Some("could not encode TS005 McGroupSetupReq: McGroupSetupReq: Max mc_group_id value is 3")
        );
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = settings();
        let d = Dev::new(DevEui([1; 8]), [7; 16], Some(2), &s, t0());
        let back: Dev = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        let run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let back: Run = serde_json::from_value(serde_json::to_value(&run).unwrap()).unwrap();
        assert_eq!(back, run);
    }

    /// A device on TS004/TS005 v2 and its own FPorts is sent v2 commands there, and its
    /// "not enough memory" names the limits the session exceeds.
    #[test]
    fn each_device_is_spoken_to_in_its_packages() {
        use crate::packages::{DeviceLimits, FragV2, VersionedPatch};
        let s = Settings {
            check: CheckMode::Off,
            ..settings()
        };
        let v2 = |port| VersionedPatch {
            version: Some(2),
            f_port: Some(port),
        };
        let mut d = Dev::new(DevEui([1; 8]), [0; 16], None, &s, t0());
        d.packages = Some(DevicePackages {
            packages: Packages::defaults(111).with(&packages::PackagesPatch {
                multicast_setup: Some(v2(20)),
                fragmentation: Some(v2(21)),
                ..Default::default()
            }),
            limits: DeviceLimits {
                max_fragment_size: Some(40),
                ..Default::default()
            },
            frag_v2: Some(FragV2 {
                session_cnt: 3,
                mic: [1, 2, 3, 4],
            }),
        });
        let plain = Dev::new(DevEui([2; 8]), [0; 16], None, &s, t0());
        let mut devs = vec![d, plain];
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut out = Vec::new();
        run.tick(&mut devs, &s, &target(), t0(), &mut out);
        let ports: Vec<u8> = unicasts(&out).iter().map(|u| u.1).collect();
        assert_eq!(ports, vec![20, 200]);
        out.clear();
        let ok = Reply::McGroupSetup {
            group_id: 0,
            result: Ok(()),
        };
        run.reply(&mut devs[0], ok, &s, &target(), t0(), &mut out);
        let Some(Action::Unicast { f_port, data, .. }) = out.first() else {
            panic!("{out:?}");
        };
        assert_eq!(*f_port, 21);
        assert_eq!(
            data.len(),
            17,
            "CID + the 16 bytes of a v2 FragSessionSetupReq"
        );
        assert_eq!(&data[11..], &[3, 0, 1, 2, 3, 4], "SessionCnt and MIC");
        let refused = Reply::FragSessionSetup {
            index: 0,
            result: Err(format!(
                "FragSessionSetupAns: {}",
                commands::NOT_ENOUGH_MEMORY
            )),
        };
        run.reply(&mut devs[0], refused, &s, &target(), t0(), &mut out);
        assert_eq!(devs[0].outcome, Some(Outcome::NotUpdated));
        assert!(
            devs[0]
                .error
                .as_deref()
                .unwrap()
                .ends_with("50 bytes per fragment exceed its max_fragment_size of 40"),
            "{:?}",
            devs[0].error
        );
        let back: Dev = serde_json::from_value(serde_json::to_value(&devs[0]).unwrap()).unwrap();
        assert_eq!(back, devs[0]);
    }
}

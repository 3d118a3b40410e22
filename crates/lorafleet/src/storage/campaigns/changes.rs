//! What changes a campaign's rows: a draft as validation leaves it, and what a driver's `start`
//! or `poll` found out (its devices' stages and times, log lines, state, the end). Drivers
//! return these and the runner stores them; `campaigns::drivers` re-exports them.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::records::{CampaignKeys, CampaignSettings, DriverKind, Stage};

/// A draft's stored columns and devices, as validation left them (its plan is stored as JSON
/// beside it).
#[derive(Debug, Clone, Copy)]
pub struct Draft<'a> {
    pub name: &'a str,
    pub firmware_id: i64,
    pub driver: DriverKind,
    pub devices: &'a [String],
    pub settings: &'a CampaignSettings,
    pub keys: &'a CampaignKeys,
}

/// What a driver learnt about one device. `None` fields leave the stored value unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReport {
    pub dev_eui: String,
    pub stage: Stage,
    pub mc_group_setup_at: Option<DateTime<Utc>>,
    pub frag_session_setup_at: Option<DateTime<Utc>>,
    pub mc_session_setup_at: Option<DateTime<Utc>>,
    pub frag_status_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Set to show why the device failed (or what went wrong at its current step).
    pub error: Option<String>,
    pub attempts: Option<u32>,
    pub next_action_at: Option<DateTime<Utc>>,
    pub driver_json: Option<serde_json::Value>,
}

impl DeviceReport {
    pub fn new(dev_eui: impl Into<String>, stage: Stage) -> Self {
        Self {
            dev_eui: dev_eui.into(),
            stage,
            mc_group_setup_at: None,
            frag_session_setup_at: None,
            mc_session_setup_at: None,
            frag_status_at: None,
            completed_at: None,
            error: None,
            attempts: None,
            next_action_at: None,
            driver_json: None,
        }
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }
    }
}

/// A line for the campaign's log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub level: LogLevel,
    /// True for lines that come from the FUOTA service's own log.
    pub from_service: bool,
    pub dev_eui: Option<String>,
    pub message: String,
    /// Lines with a key are stored once per campaign: a driver may return the service's whole
    /// log on every poll. Lines without a key are always stored.
    pub dedup_key: Option<String>,
}

impl LogLine {
    pub fn info(message: impl Into<String>) -> Self {
        Self {
            at: Utc::now(),
            level: LogLevel::Info,
            from_service: false,
            dev_eui: None,
            message: message.into(),
            dedup_key: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Self {
            level: LogLevel::Warning,
            ..Self::info(message)
        }
    }
}

/// How a campaign ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Every device reached a final stage and at least one completed.
    Completed,
    /// The campaign could not go on, or no device completed.
    Failed(String),
}

/// What a `start` or `poll` found out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollOutcome {
    pub devices: Vec<DeviceReport>,
    pub log: Vec<LogLine>,
    /// Replaces the stored driver state when set.
    pub driver_state: Option<serde_json::Value>,
    pub finished: Option<Finished>,
    /// Poll again after this long instead of `fuota.poll_interval_s`.
    pub next_poll: Option<Duration>,
    /// The key material is no longer needed: the runner wipes it from the database.
    pub forget_keys: bool,
    /// Unicast commands the step sent, for the devices' downlink lists: written with the
    /// step, so a step whose lease was lost leaves no trace of them (the new owner sends and
    /// records them again).
    pub downlinks: Vec<SentDownlink>,
    /// Firmware-history entries the step adds (a device's campaign outcome), likewise.
    pub history: Vec<HistoryNote>,
}

/// A unicast command a driver sent in a step, and what the network answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentDownlink {
    pub dev_eui: lorafleet_codec::eui::DevEui,
    pub f_port: u8,
    pub data: Vec<u8>,
    pub confirmed: bool,
    /// What the command is, for the device's event log ("McGroupSetupReq").
    pub what: String,
    /// On the network's clock: when it was asked for, and when the network answered.
    pub requested_at: DateTime<Utc>,
    pub answered_at: DateTime<Utc>,
    /// The network's reference and frame counter, or why it refused.
    pub result: Result<(Option<String>, Option<u32>), String>,
}

/// A line a step adds to a device's firmware history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryNote {
    pub dev_eui: String,
    /// On the network's clock.
    pub at: DateTime<Utc>,
    /// The version the device was verified to run, if it was.
    pub version: Option<u32>,
    pub outcome: Option<String>,
    pub message: String,
}

impl PollOutcome {
    /// What a start that created the campaign on a FUOTA service returns: the service's
    /// references, what to log, the keys forgotten (the service holds what it needs) and a
    /// first poll a second later.
    pub fn started(driver_state: serde_json::Value, log: Vec<LogLine>) -> Self {
        Self {
            driver_state: Some(driver_state),
            log,
            forget_keys: true,
            next_poll: Some(Duration::from_secs(1)),
            ..Default::default()
        }
    }
}

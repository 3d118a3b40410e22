//! The seam between a campaign and whatever carries it to the devices.
//!
//! A driver turns a validated [`Campaign`] into work on a FUOTA service (or, for lorafleet's
//! own engine, into downlinks) and reports back what happened. It does not write campaign
//! rows itself: it returns a [`PollOutcome`] and the [runner](super::runner) stores it, logs
//! it, records the progress history and tells the console. That keeps drivers testable against
//! a fake service without a database, and keeps "what is stored" in one place.
//!
//! # Life of a campaign, as a driver sees it
//!
//! 1. [`CampaignDriver::preflight`] when the operator presses start: last checks that need the
//!    service (ChirpStack v4 reads each device's GenAppKey). Problems come back as field
//!    errors and the campaign stays a draft. Nothing may be sent here.
//! 2. [`CampaignDriver::start`] once, from the runner, with the campaign in state `running`.
//!    Create whatever the service needs and return its references in
//!    [`PollOutcome::driver_state`]; that JSON is stored and handed back in
//!    [`Campaign::driver_state`] on every later call, also after a restart of lorafleet.
//!    Returning `Err(DriverError::Unavailable)` makes the runner call `start` again later
//!    (so `start` should be safe to repeat when nothing was created); `Err(Refused)` fails
//!    the campaign with the service's message.
//! 3. [`CampaignDriver::poll`] repeatedly (every `fuota.poll_interval_s`, or sooner if
//!    [`PollOutcome::next_poll`] asks): read the service's state and map it to device
//!    [`Stage`]s and timestamps. Set [`PollOutcome::finished`] when the campaign is over.
//!    `Unavailable` errors are retried with back-off and shown on the campaign; the campaign
//!    keeps running, so a restart of the service is survived.
//! 4. [`CampaignDriver::cancel`] when the operator cancels a running campaign. Best effort:
//!    the campaign is marked cancelled whatever it returns, and the error is logged.
//!
//! # Per-device state
//!
//! Drivers that run the steps themselves (the engine) keep per-device state in
//! [`CampaignDevice`]: `stage`, `attempts`, `next_action_at` and a private `driver_json`,
//! all persisted through [`DeviceReport`], so a restart resumes each device where it stopped.
//! [`DriverContext::db`] is there for anything else a driver must persist (use its own
//! tables, never the campaign tables directly).
//!
//! The implementations live next to this module ([`chirpstack_v4`], [`fuota_server_v3`],
//! [`engine`]); which of them a running lorafleet has is decided in `app.rs`.

pub mod chirpstack_v4;
pub mod engine;
pub mod engine_state;
pub mod fuota_server_v3;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use super::validate::FieldError;
use super::{CampaignDevice, CampaignKeys, CampaignSettings, DriverKind, Stage};
use crate::config::Config;
use crate::firmware::FirmwareImage;
use crate::ingest::writer::{Change, CommittedUplink};
use crate::network::Network;
use crate::storage::Db;

/// What every driver call may use.
#[derive(Clone)]
pub struct DriverContext {
    pub config: Config,
    pub db: Db,
    /// The network backend (ChirpStack or simulated), for drivers that send downlinks.
    pub network: Arc<dyn Network>,
    /// Uplinks as they are committed, for drivers that wait for device answers.
    pub uplinks: broadcast::Sender<CommittedUplink>,
    /// Change notifications for the console.
    pub changes: broadcast::Sender<Change>,
}

impl DriverContext {
    pub fn from_app(app: &crate::App) -> Self {
        Self {
            config: app.config.clone(),
            db: app.db.clone(),
            network: app.network.clone(),
            uplinks: app.uplinks.clone(),
            changes: app.changes.clone(),
        }
    }

    /// The network's clock (a simulated network may run faster than real time).
    pub fn now(&self) -> DateTime<Utc> {
        self.network.now()
    }
}

/// A campaign as a driver receives it: settings validated, image bytes loaded.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    pub driver: DriverKind,
    pub settings: CampaignSettings,
    /// Key material given with the campaign (empty once the driver started).
    pub keys: CampaignKeys,
    pub firmware: FirmwareImage,
    /// The image bytes, checked against the library's SHA-256.
    pub payload: Arc<Vec<u8>>,
    /// Every device with its stored progress.
    pub devices: Vec<CampaignDevice>,
    /// What the driver returned as `driver_state` last time (`None` before `start`).
    pub driver_state: Option<serde_json::Value>,
    /// Device inventory facts a driver may need (application, device profile).
    pub inventory: Vec<super::validate::KnownDevice>,
    pub started_at: Option<DateTime<Utc>>,
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
}

/// Why a driver call did not work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The service could not be reached or did not answer; the runner tries again later.
    #[error("{0}")]
    Unavailable(String),
    /// The service refused, with its own message; the campaign fails.
    #[error("{0}")]
    Refused(String),
    /// The campaign cannot be carried by this driver (missing configuration, ...).
    #[error("{0}")]
    Invalid(String),
}

/// A way of carrying campaigns to devices. See the module documentation for the call order.
#[async_trait]
pub trait CampaignDriver: Send + Sync + 'static {
    fn kind(&self) -> DriverKind;

    /// Checks that need the service, before the campaign leaves the draft state. Return field
    /// errors (e.g. `keys.per_device.<dev_eui>`) for what the operator must fix.
    async fn preflight(
        &self,
        _ctx: &DriverContext,
        _campaign: &Campaign,
    ) -> Result<Vec<FieldError>, DriverError> {
        Ok(Vec::new())
    }

    /// Starts the campaign on the service; called once it is `running` (again after a
    /// restart if it had not succeeded).
    async fn start(
        &self,
        ctx: &DriverContext,
        campaign: &Campaign,
    ) -> Result<PollOutcome, DriverError>;

    /// Reads the campaign's progress.
    async fn poll(
        &self,
        ctx: &DriverContext,
        campaign: &Campaign,
    ) -> Result<PollOutcome, DriverError>;

    /// Stops the campaign on the service, as far as the service allows.
    async fn cancel(&self, ctx: &DriverContext, campaign: &Campaign) -> Result<(), DriverError>;
}

/// The drivers this build has, by kind.
#[derive(Clone, Default)]
pub struct DriverRegistry {
    drivers: Vec<Arc<dyn CampaignDriver>>,
}

impl DriverRegistry {
    /// Adds (or replaces) the driver of its kind.
    pub fn register(&mut self, driver: Arc<dyn CampaignDriver>) {
        self.drivers.retain(|d| d.kind() != driver.kind());
        self.drivers.push(driver);
    }

    pub fn get(&self, kind: DriverKind) -> Option<Arc<dyn CampaignDriver>> {
        self.drivers.iter().find(|d| d.kind() == kind).cloned()
    }
}

/// The stage a device is in from the steps it completed, for services that report
/// per-step completion times (both ChirpStack FUOTA services do).
pub fn stage_from_steps(
    mc_group_setup: bool,
    frag_session_setup: bool,
    mc_session_setup: bool,
    fragments_sent: bool,
    frag_status: bool,
    status_requested: bool,
) -> Stage {
    if !mc_group_setup {
        Stage::McGroupSetup
    } else if !frag_session_setup {
        Stage::FragSessionSetup
    } else if !mc_session_setup {
        Stage::McSessionSetup
    } else if !fragments_sent {
        Stage::Fragments
    } else if !status_requested {
        Stage::Completed
    } else if !frag_status {
        Stage::FragStatus
    } else {
        Stage::Completed
    }
}

/// Whether a campaign whose devices are all in a final stage succeeded.
pub fn outcome_of(devices: &[DeviceReport]) -> Finished {
    let completed = devices
        .iter()
        .filter(|d| d.stage == Stage::Completed)
        .count();
    if completed == 0 {
        Finished::Failed("no device completed the update".into())
    } else {
        Finished::Completed
    }
}

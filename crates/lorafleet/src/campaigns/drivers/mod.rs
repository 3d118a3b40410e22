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
pub mod chirpstack_v4_jobs;
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

// What a driver reports is what the runner stores: the types live next to their queries.
pub use crate::storage::campaigns::{DeviceReport, Finished, LogLevel, LogLine, PollOutcome};

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
    /// The multicast session the running wave's devices share, when the start grouped them
    /// (engine campaigns, issue 8 item 6); `None` otherwise.
    pub session: Option<lorafleet_engine::sessions::Session>,
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

    /// Whether the started campaign's next poll should wait: `Some(wait)` (real time) puts it
    /// off without loading the campaign. Asked before each poll; `None` polls now.
    fn not_due(&self, _ctx: &DriverContext, _campaign_id: i64) -> Option<Duration> {
        None
    }
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

    /// [`CampaignDriver::not_due`] of whichever driver knows the campaign: asked before the
    /// campaign's row is read (its request names every device, so reading it for each look
    /// at the clock cost the whole campaign again).
    pub fn not_due(&self, ctx: &DriverContext, campaign_id: i64) -> Option<Duration> {
        self.drivers
            .iter()
            .find_map(|d| d.not_due(ctx, campaign_id))
    }
}

/// A gRPC status from a FUOTA service (`name` at `url`) as a driver error: unreachable (the
/// runner tries again later) or a refusal with the service's own message and `hint`, what the
/// operator should check.
pub fn grpc_error(name: &str, url: &str, status: &tonic::Status, hint: &str) -> DriverError {
    use tonic::Code;
    let unreachable = match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => true,
        Code::Unknown => status.message().contains("transport error"),
        _ => false,
    };
    if unreachable {
        DriverError::Unavailable(format!(
            "cannot reach {name} at {url}: {}",
            status.message()
        ))
    } else {
        DriverError::Refused(format!(
            "{name} answered {:?}: {}{hint}",
            status.code(),
            status.message()
        ))
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

//! The task that carries running campaigns: it starts each one on its driver, polls it until
//! it is over and stores what it learns. Everything it needs is in the database, so after a
//! restart it simply picks up the running campaigns again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, Notify};

use super::drivers::{
    Campaign, DriverContext, DriverError, DriverRegistry, Finished, LogLine, PollOutcome,
};
use super::lease_guard::{GuardedNetwork, Lease};
use super::validate::FieldError;
use super::{CampaignState, Stage};
use crate::ingest::writer::Change;
use crate::storage::campaigns::leases::{self, Claimed, Next, StepSave};
use crate::storage::campaigns::waves::WaveWrite;
use crate::storage::campaigns::{self as store, CampaignRow};
use crate::App;

/// Campaign machinery shared by the runner and the API.
pub struct Campaigns {
    pub drivers: DriverRegistry,
    /// Wakes the runner (a campaign was started).
    pub wake: Notify,
    /// One campaign change at a time in this process: the runner's step, a start, a cancel.
    /// (Between instances, the campaign's lease decides who runs it.)
    pub lock: Mutex<()>,
    /// This process's name as a lease owner: random per start, so a restarted instance is a
    /// new owner and its first step a new attempt.
    pub instance: String,
    /// When this instance last renewed its leases.
    renewed: std::sync::Mutex<Option<Instant>>,
    /// Campaigns whose step ran but could not be stored: what it sent is not on record, so
    /// the next run of them here counts as a new attempt (at most one send per attempt).
    unsaved: std::sync::Mutex<HashSet<i64>>,
}

impl Campaigns {
    pub fn new(drivers: DriverRegistry) -> Self {
        Self {
            drivers,
            wake: Notify::new(),
            lock: Mutex::new(()),
            instance: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            renewed: std::sync::Mutex::new(None),
            unsaved: std::sync::Mutex::new(HashSet::new()),
        }
    }
}

/// Starts the runner task.
pub fn spawn(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tracing::info!(
        instance = %app.campaigns.instance,
        lease_s = app.config.campaigns.lease_s,
        "campaign runner: this instance's lease owner id"
    );
    // A send starts with at least two thirds of the lease left (see `lease_guard`): a request
    // to the network server that may take longer could outlast the lease.
    let (timeout_s, lease_s) = (
        app.config.network.request_timeout_s,
        app.config.campaigns.lease_s,
    );
    if timeout_s.saturating_mul(3) > lease_s.saturating_mul(2) {
        tracing::warn!(
            network_request_timeout_s = timeout_s,
            lease_s,
            "network.request_timeout_s should stay under two thirds of campaigns.lease_s: a slow request to the network server could end after another instance took its campaign over"
        );
    }
    tokio::spawn(async move {
        release_previous_process(&app).await;
        let mut stopping = app.shutdown.subscribe();
        loop {
            if *stopping.borrow() {
                return;
            }
            if let Err(e) = run_due(&app).await {
                tracing::warn!(error = %format!("{e:#}"), "campaign runner");
            }
            // Sleep until the earliest campaign is claimable: the engine asks for polls
            // milliseconds apart while it streams fragments on an accelerated simulated
            // network. At most a second (another instance may have started a campaign: it
            // cannot wake this one) and never past the next renewal of the leases.
            let idle = match leases::next_claimable(&app.db, &app.campaigns.instance).await {
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or_default(),
                _ => Duration::from_secs(1),
            }
            .min(Duration::from_secs(1))
            .min(renew_every(&app));
            tokio::select! {
                _ = app.campaigns.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
                _ = stopping.changed() => {}
            }
        }
    })
}

/// The previous process on this data dir is gone (this one has its data): its leases are
/// released, so a restart after a crash resumes its campaigns at once instead of after
/// `lease_s` (as a new attempt, like any takeover). The data dir keeps the owner id of the
/// process that last ran on it. Instances must not share a data dir: one starting would cost
/// the other's campaigns an attempt (never a double run: a step is stored only under a lease).
async fn release_previous_process(app: &App) {
    let path = app.config.server.data_dir.join("campaign-runner-instance");
    let me = &app.campaigns.instance;
    if let Ok(previous) = std::fs::read_to_string(&path) {
        let previous = previous.trim();
        if !previous.is_empty() && previous != me {
            match leases::release_all(&app.db, previous).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    campaigns = n,
                    previous,
                    "released the campaign leases of the previous process on this data dir"
                ),
                Err(e) => tracing::warn!(error = %e, "releasing the previous process's leases"),
            }
        }
    }
    if let Err(e) = std::fs::write(&path, format!("{me}\n")) {
        tracing::warn!(error = %e, path = %path.display(), "recording this instance's lease owner id");
    }
}

fn lease(app: &App) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(app.config.campaigns.lease_s).unwrap_or(30))
}

fn lease_until(app: &App) -> DateTime<Utc> {
    Utc::now() + lease(app)
}

fn renew_every(app: &App) -> Duration {
    Duration::from_secs(app.config.campaigns.lease_s.max(3) / 3)
}

/// Renews this instance's leases when `lease_s / 3` passed since the last renewal (each step
/// also renews its own campaign's).
async fn renew_if_due(app: &App) {
    let due = app
        .campaigns
        .renewed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_none_or(|at| at.elapsed() >= renew_every(app));
    if !due {
        return;
    }
    match leases::renew_all(&app.db, &app.campaigns.instance, lease_until(app)).await {
        Ok(_) => {
            *app.campaigns
                .renewed
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
        Err(e) => tracing::warn!(error = %e, "renewing the campaign leases"),
    }
}

/// Gives up this instance's campaign leases at a graceful stop, after the step in progress, so
/// another instance takes them over at once. The runner claims nothing once `app.shutdown`
/// is set.
pub async fn release(app: &App) {
    let _guard = app.campaigns.lock.lock().await;
    match leases::release_all(&app.db, &app.campaigns.instance).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(campaigns = n, "released the campaign leases"),
        Err(e) => tracing::warn!(error = %e, "releasing the campaign leases"),
    }
}

/// Starts the scheduled campaigns whose time has come, then claims and steps every running
/// campaign whose poll is due and which no other instance holds, one at a time, each at most
/// once per call.
pub async fn run_due(app: &App) -> anyhow::Result<()> {
    start_scheduled(app).await?;
    let mut done = HashSet::new();
    loop {
        renew_if_due(app).await;
        let _guard = app.campaigns.lock.lock().await;
        if *app.shutdown.borrow() {
            return Ok(());
        }
        let owner = &app.campaigns.instance;
        // Before the claim: the lease it takes runs at least this plus `lease_s`.
        let claimed_at = Instant::now();
        let Some(claimed) = leases::claim(&app.db, owner, Utc::now(), lease_until(app)).await?
        else {
            return Ok(());
        };
        if !done.insert(claimed.id) {
            return Ok(());
        }
        let id = claimed.id;
        if let Err(e) = process(app, &claimed, claimed_at).await {
            tracing::warn!(campaign = id, error = %format!("{e:#}"), "campaign step failed");
            // Keep the runner from spinning on a campaign whose step errors before polling.
            let at = net_now(app);
            let after = poll_interval(app);
            save(app, id, &poll_only(&at, after, Some(format!("{e:#}")))?).await?;
        }
    }
}

/// Moves each scheduled campaign whose `start_at` the network's clock has reached to running.
/// One whose devices another campaign still holds waits (saying so once per campaign and
/// device) and starts when they are free.
async fn start_scheduled(app: &App) -> anyhow::Result<()> {
    // A look at the clock, not a request: the runner looks every round, and a simulated
    // network's clock stands still after each request.
    for id in store::due_scheduled(&app.db, app.network.peek_now()).await? {
        let _guard = app.campaigns.lock.lock().await;
        let Some(row) = store::get(&app.db, id).await? else {
            continue;
        };
        if row.state != CampaignState::Scheduled {
            continue;
        }
        let overlaps = store::overlaps(&app.db, id).await?;
        if let Some(o) = overlaps.first() {
            let mut line = LogLine::warning(format!(
                "start time reached; waiting for campaign {} ({:?}) to finish with {}",
                o.campaign_id, o.campaign_name, o.dev_eui
            ));
            line.dedup_key = Some(format!("scheduled-overlap-{}-{}", o.campaign_id, o.dev_eui));
            log(app, id, line).await;
            continue;
        }
        if store::set_running(&app.db, id, &net_now(app)).await? {
            // The waves are split when the campaign runs, as a start at once does.
            super::rollout::begin(app, id).await?;
            store::record_progress(&app.db, id, &net_now(app)).await?;
            log(app, id, LogLine::info("start time reached: starting")).await;
            let _ = app.changes.send(Change::Campaign(id));
        }
    }
    Ok(())
}

/// The `start_at` of a campaign's request, when it has a valid one.
fn requested_start(row: &CampaignRow) -> Option<chrono::DateTime<Utc>> {
    let text = row.request.get("start_at")?.as_str()?;
    super::validate::start_at(Some(text), &mut super::validate::FieldErrors::default())
}

/// A campaign waiting for the pause between two waves is looked at again after at least this
/// (real time): a clock slower than its time_scale (a loaded machine) is not asked every
/// millisecond of the pause's end whether it got there.
const WAVE_RECHECK_MIN: Duration = Duration::from_millis(20);

fn poll_interval(app: &App) -> Duration {
    Duration::from_secs(app.config.fuota.poll_interval_s.max(1))
}

/// Builds what a driver receives: the stored campaign with its image bytes.
pub async fn load(app: &App, row: &CampaignRow) -> anyhow::Result<Campaign> {
    let firmware = crate::storage::firmware::get(&app.db, row.firmware_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("firmware image {} is gone", row.firmware_id))?;
    let payload = app.images.load(&firmware).await?;
    // With waves, the driver sees only the running wave's devices (its own session).
    let (devices, session) =
        super::rollout::current_devices(app, row.id, store::devices(&app.db, row.id).await?)
            .await?;
    let euis: Vec<String> = devices.iter().map(|d| d.dev_eui.clone()).collect();
    let inventory = crate::storage::devices::known(&app.db, &euis)
        .await?
        .into_values()
        .collect();
    Ok(Campaign {
        id: row.id,
        name: row.name.clone(),
        driver: row.driver,
        settings: row.settings.clone(),
        keys: row.keys.clone(),
        firmware,
        payload,
        devices,
        driver_state: row.driver_state.clone(),
        inventory,
        started_at: row
            .started_at
            .as_deref()
            .and_then(crate::storage::parse_time),
        session,
    })
}

/// Now on the network's clock: what a campaign's times are stamped with, like the devices'
/// (the runner's own scheduling, `next_poll_at`, stays on the real clock it sleeps on).
fn net_now(app: &App) -> String {
    crate::storage::fmt_time(app.network.now())
}

/// A log line stamped with the network's time.
fn stamped(app: &App, mut line: LogLine) -> LogLine {
    line.at = app.network.now();
    line
}

fn error_line(app: &App, message: &str) -> LogLine {
    stamped(
        app,
        LogLine {
            level: super::drivers::LogLevel::Error,
            ..LogLine::info(message)
        },
    )
}

async fn log(app: &App, id: i64, line: LogLine) {
    if let Err(e) = store::add_log(&app.db, id, &stamped(app, line)).await {
        tracing::warn!(campaign = id, error = %e, "writing the campaign log");
    }
}

/// Stores a step while this instance holds the campaign; when another took it over, the
/// step's results are dropped and the campaign no longer runs here (it is not claimable).
async fn save(app: &App, id: i64, step: &StepSave<'_>) -> anyhow::Result<()> {
    let owner = &app.campaigns.instance;
    match leases::save_step(&app.db, id, owner, lease_until(app), step).await {
        Ok(true) => {
            // The devices whose downlink list or firmware history the step wrote.
            let mut devices: Vec<crate::devices::DevEui> = Vec::new();
            if let Some(o) = step.outcome {
                devices.extend(o.downlinks.iter().map(|d| d.dev_eui));
                devices.extend(
                    o.history
                        .iter()
                        .filter_map(|h| h.dev_eui.parse::<crate::devices::DevEui>().ok()),
                );
            }
            devices.sort_unstable_by_key(|d| d.0);
            devices.dedup();
            for d in devices {
                let _ = app.changes.send(Change::Device(d));
            }
        }
        Ok(false) => tracing::warn!(
            campaign = id,
            instance = %owner,
            "the campaign is no longer this instance's (taken over, or ended elsewhere): this step's results are dropped"
        ),
        Err(e) => {
            app.campaigns
                .unsaved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id);
            return Err(e);
        }
    }
    let _ = app.changes.send(Change::Campaign(id));
    Ok(())
}

async fn fail(app: &App, id: i64, message: &str) -> anyhow::Result<()> {
    let waves = super::rollout::closed_states(app, id)
        .await?
        .map(WaveWrite::States);
    let at = net_now(app);
    let step = StepSave {
        at: &at,
        started: false,
        log_before: vec![error_line(app, message)],
        outcome: None,
        log_after: Vec::new(),
        next: Next::End {
            state: CampaignState::Failed,
            error: Some(message.to_string()),
            device_stage: Stage::Failed,
        },
        waves,
    };
    save(app, id, &step).await
}

/// Says in the campaign's log (and this instance's) that this claim starts a new attempt:
/// another owner ran the campaign before, or this one could not store a step of it.
async fn note_attempt(app: &App, claimed: &Claimed) -> anyhow::Result<()> {
    let me = &app.campaigns.instance;
    let unsaved = app
        .campaigns
        .unsaved
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&claimed.id);
    let message = match &claimed.previous {
        Some(p) if p.released => format!(
            "resumed by {me} after {} stopped, attempt {}",
            p.owner, claimed.attempt
        ),
        Some(p) => format!(
            "taken over from {} by {me} (its lease lapsed), attempt {}",
            p.owner, claimed.attempt
        ),
        None if unsaved => {
            let attempt = leases::new_attempt(&app.db, claimed.id, me).await?;
            format!("a step's results could not be stored: {me} goes on as attempt {attempt}")
        }
        None => return Ok(()),
    };
    tracing::info!(campaign = claimed.id, instance = %me, "{message}");
    log(app, claimed.id, LogLine::info(message)).await;
    Ok(())
}

/// The runner's own log lines around a driver call that succeeded, and what comes next.
fn after_outcome(
    app: &App,
    row: &CampaignRow,
    outcome: &PollOutcome,
    step: &mut StepSave<'_>,
) -> anyhow::Result<Next> {
    if !row.started {
        step.started = true;
        let line = LogLine::info(format!("started on {}", row.driver));
        step.log_before.push(stamped(app, line));
    }
    if row.last_poll_error.is_some() {
        let line = LogLine::info("the FUOTA service answers again");
        step.log_before.push(stamped(app, line));
    }
    Ok(match &outcome.finished {
        Some(Finished::Completed) => {
            let line = LogLine::info("campaign completed");
            step.log_after.push(stamped(app, line));
            Next::End {
                state: CampaignState::Completed,
                error: None,
                device_stage: Stage::Failed,
            }
        }
        Some(Finished::Failed(msg)) => {
            step.log_after.push(error_line(app, msg));
            Next::End {
                state: CampaignState::Failed,
                error: Some(msg.clone()),
                device_stage: Stage::Failed,
            }
        }
        None => {
            let next = outcome.next_poll.unwrap_or_else(|| poll_interval(app));
            Next::Poll {
                at: Utc::now() + chrono::Duration::from_std(next)?,
                error: None,
            }
        }
    })
}

/// The step in which a wave's session ended: the wave is judged (the next wave starts, the
/// campaign pauses, or it ends here) and all of it is stored as one step, under the lease.
async fn wave_step(
    app: &App,
    id: i64,
    mut step: StepSave<'_>,
    finished: &Finished,
) -> anyhow::Result<()> {
    step.log_after.clear();
    let reports = step.outcome.map_or(&[][..], |o| &o.devices[..]);
    let judged = super::rollout::wave_over(app, id, finished, reports).await?;
    step.log_after.extend(judged.log);
    step.waves = judged.write;
    step.next = match &judged.end {
        None => Next::Poll {
            at: Utc::now(),
            error: None,
        },
        Some(Finished::Completed) => {
            step.log_after
                .push(stamped(app, LogLine::info("campaign completed")));
            Next::End {
                state: CampaignState::Completed,
                error: None,
                device_stage: Stage::Failed,
            }
        }
        Some(Finished::Failed(msg)) => {
            step.log_after.push(error_line(app, msg));
            Next::End {
                state: CampaignState::Failed,
                error: Some(msg.clone()),
                device_stage: Stage::Failed,
            }
        }
    };
    save(app, id, &step).await
}

/// The running wave's session waits for the pause after the wave before it (on the network's
/// clock): the campaign is looked at again within a second, nothing is sent. Stamped with a
/// look at the clock, not a request (see [`super::rollout::wave_wait`]).
async fn wait_for_wave(app: &App, id: i64, wait: Duration) -> anyhow::Result<()> {
    tracing::debug!(campaign = id, ?wait, network_time = %app.network.peek_now(), "waiting for the pause between waves");
    let at = crate::storage::fmt_time(app.network.peek_now());
    let after = wait.clamp(WAVE_RECHECK_MIN, Duration::from_secs(1));
    save(app, id, &poll_only(&at, after, None)?).await
}

/// A step that stores nothing but when to look at the campaign again (`after` from now, real
/// time) and the error that made it fail, if one did.
fn poll_only(at: &str, after: Duration, error: Option<String>) -> anyhow::Result<StepSave<'_>> {
    Ok(StepSave {
        at,
        started: false,
        log_before: Vec::new(),
        outcome: None,
        log_after: Vec::new(),
        next: Next::Poll {
            at: Utc::now() + chrono::Duration::from_std(after)?,
            error,
        },
        waves: None,
    })
}

/// Puts the campaign's poll off when its driver says it is not due yet (an engine step waiting
/// for the simulated clock); true if so. Before reading the campaign, which at scale is what a
/// look costs.
async fn deferred(app: &App, id: i64) -> anyhow::Result<bool> {
    let ctx = DriverContext::from_app(app);
    let Some(wait) = app.campaigns.drivers.not_due(&ctx, id) else {
        return Ok(false);
    };
    let next = Utc::now() + chrono::Duration::from_std(wait)?;
    leases::defer(&app.db, id, &app.campaigns.instance, lease_until(app), next).await?;
    tracing::debug!(campaign = id, ?wait, network_time = %app.network.peek_now(), "step not due on the network's clock: put off");
    Ok(true)
}

async fn process(app: &App, claimed: &Claimed, claimed_at: Instant) -> anyhow::Result<()> {
    let id = claimed.id;
    note_attempt(app, claimed).await?;
    if deferred(app, id).await? {
        return Ok(());
    }
    let Some(row) = store::get(&app.db, id).await? else {
        return Ok(());
    };
    if row.state != CampaignState::Running {
        return Ok(());
    }
    let Some(driver) = app.campaigns.drivers.get(row.driver) else {
        return fail(
            app,
            id,
            &format!("driver {} is not available in this build", row.driver),
        )
        .await;
    };
    if !row.started {
        if let Some(wait) = super::rollout::wave_wait(app, id).await? {
            return wait_for_wave(app, id, wait).await;
        }
    }
    let campaign = match load(app, &row).await {
        Ok(c) => c,
        Err(e) => return fail(app, id, &format!("{e:#}")).await,
    };
    // Every send of the step checks the lease first (and renews it when it runs short).
    let length = lease(app).to_std().unwrap_or(Duration::from_secs(30));
    let held = Arc::new(Lease::new(
        app.db.clone(),
        id,
        &app.campaigns.instance,
        length,
        claimed_at + length,
    ));
    let mut ctx = DriverContext::from_app(app);
    ctx.network = Arc::new(GuardedNetwork::new(app.network.clone(), held));
    let result = if row.started {
        driver.poll(&ctx, &campaign).await
    } else {
        driver.start(&ctx, &campaign).await
    };
    let at = net_now(app);
    let mut step = StepSave {
        at: &at,
        started: false,
        log_before: Vec::new(),
        outcome: None,
        log_after: Vec::new(),
        next: Next::Poll {
            at: Utc::now(),
            error: None,
        },
        waves: None,
    };
    match result {
        Ok(mut outcome) => {
            tracing::debug!(campaign = id, next = ?outcome.next_poll, finished = ?outcome.finished, network_time = %app.network.peek_now(), "campaign step");
            if outcome.forget_keys && super::rollout::keys_still_needed(app, id).await? {
                // The next wave's devices need their root keys too.
                outcome.forget_keys = false;
            }
            step.next = after_outcome(app, &row, &outcome, &mut step)?;
            let wave_ended = match &outcome.finished {
                Some(f) if super::rollout::in_wave(app, id).await? => Some(f.clone()),
                _ => None,
            };
            step.outcome = Some(&outcome);
            match wave_ended {
                Some(finished) => wave_step(app, id, step, &finished).await,
                None => save(app, id, &step).await,
            }
        }
        Err(DriverError::Unavailable(msg)) => {
            // Back off up to 5 minutes; say so on the campaign once per distinct message.
            let failures = row.poll_failures.clamp(0, 5) as u32;
            let delay = (poll_interval(app) * 2u32.pow(failures)).min(Duration::from_secs(300));
            if row.last_poll_error.as_deref() != Some(msg.as_str()) {
                let line = LogLine::warning(format!(
                    "{msg} (retrying every {} s while the campaign runs)",
                    delay.as_secs()
                ));
                step.log_before.push(stamped(app, line));
            }
            step.next = Next::Poll {
                at: Utc::now() + chrono::Duration::from_std(delay)?,
                error: Some(msg),
            };
            save(app, id, &step).await
        }
        Err(DriverError::Refused(msg)) | Err(DriverError::Invalid(msg)) => {
            let what = if row.started { "polling" } else { "starting" };
            fail(app, id, &format!("{what} failed: {msg}")).await
        }
    }
}

/// Why a start was refused.
#[derive(Debug)]
pub enum StartError {
    NotDraft(CampaignState),
    /// Devices another campaign holds, with that campaign.
    Overlap(Vec<store::Overlap>),
    Fields(Vec<FieldError>),
    Unavailable(String),
    /// The service refused the checks (bad API key, ...), with its message.
    Refused(String),
    Other(anyhow::Error),
}

/// Moves a draft to running (or to scheduled, with a `start_at` ahead on the network's
/// clock) after the overlap check and the driver's preflight checks; the runner does the rest.
pub async fn start(app: &App, id: i64) -> Result<(), StartError> {
    // Under the lock: two campaigns on one device started at once cannot both pass.
    let _guard = app.campaigns.lock.lock().await;
    let row = store::get(&app.db, id)
        .await
        .map_err(StartError::Other)?
        .ok_or_else(|| StartError::Other(anyhow::anyhow!("no campaign {id}")))?;
    if row.state != CampaignState::Draft {
        return Err(StartError::NotDraft(row.state));
    }
    let overlaps = store::overlaps(&app.db, id)
        .await
        .map_err(|e| StartError::Other(e.into()))?;
    if !overlaps.is_empty() {
        return Err(StartError::Overlap(overlaps));
    }
    let Some(driver) = app.campaigns.drivers.get(row.driver) else {
        return Err(StartError::Fields(vec![FieldError {
            field: "driver".into(),
            error: format!(
                "driver {} is not available in this build; choose chirpstack-v4 or fuota-server-v3",
                row.driver
            ),
        }]));
    };
    let campaign = load(app, &row).await.map_err(|e| {
        StartError::Fields(vec![FieldError {
            field: "firmware_id".into(),
            error: format!("{e:#}"),
        }])
    })?;
    let ctx = DriverContext::from_app(app);
    match driver.preflight(&ctx, &campaign).await {
        Ok(errors) if !errors.is_empty() => return Err(StartError::Fields(errors)),
        Ok(_) => {}
        Err(DriverError::Unavailable(m)) => return Err(StartError::Unavailable(m)),
        Err(e) => return Err(StartError::Refused(e.to_string())),
    }
    if let Some(at) = requested_start(&row).filter(|at| *at > app.network.now()) {
        return schedule(app, id, at).await;
    }
    if !store::set_running(&app.db, id, &net_now(app))
        .await
        .map_err(|e| StartError::Other(e.into()))?
    {
        return Err(StartError::NotDraft(CampaignState::Running));
    }
    store::record_progress(&app.db, id, &net_now(app))
        .await
        .map_err(|e| StartError::Other(e.into()))?;
    super::rollout::begin(app, id)
        .await
        .map_err(StartError::Other)?;
    log(app, id, LogLine::info("start requested")).await;
    app.campaigns.wake.notify_one();
    let _ = app.changes.send(Change::Campaign(id));
    Ok(())
}

async fn schedule(app: &App, id: i64, at: chrono::DateTime<Utc>) -> Result<(), StartError> {
    if !store::set_scheduled(&app.db, id, at, &net_now(app))
        .await
        .map_err(|e| StartError::Other(e.into()))?
    {
        return Err(StartError::NotDraft(CampaignState::Scheduled));
    }
    log(
        app,
        id,
        LogLine::info(format!(
            "scheduled: starts at {}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
    )
    .await;
    app.campaigns.wake.notify_one();
    let _ = app.changes.send(Change::Campaign(id));
    Ok(())
}

/// Cancels a draft, scheduled or running campaign; false when it was already over.
pub async fn cancel(app: &App, id: i64) -> anyhow::Result<bool> {
    let _guard = app.campaigns.lock.lock().await;
    let Some(row) = store::get(&app.db, id).await? else {
        return Ok(false);
    };
    if row.state.is_over() {
        return Ok(false);
    }
    if row.state == CampaignState::Running && row.started {
        if let Some(driver) = app.campaigns.drivers.get(row.driver) {
            let ctx = DriverContext::from_app(app);
            let result = match load(app, &row).await {
                Ok(campaign) => driver.cancel(&ctx, &campaign).await,
                Err(e) => Err(DriverError::Invalid(format!("{e:#}"))),
            };
            match result {
                Ok(()) => log(app, id, LogLine::info("cancelled on the FUOTA service")).await,
                Err(e) => {
                    log(
                        app,
                        id,
                        LogLine::warning(format!("the FUOTA service could not cancel: {e}")),
                    )
                    .await
                }
            }
        }
    }
    log(app, id, LogLine::info("campaign cancelled")).await;
    super::rollout::close(app, id).await?;
    store::finish(
        &app.db,
        id,
        CampaignState::Cancelled,
        None,
        Stage::Cancelled,
        &net_now(app),
    )
    .await?;
    store::record_progress(&app.db, id, &net_now(app)).await?;
    let _ = app.changes.send(Change::Campaign(id));
    Ok(true)
}

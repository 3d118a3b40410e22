//! The task that carries running campaigns: it starts each one on its driver, polls it until
//! it is over and stores what it learns. Everything it needs is in the database, so after a
//! restart it simply picks up the running campaigns again.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Mutex, Notify};

use super::drivers::{Campaign, DriverContext, DriverError, DriverRegistry, Finished, LogLine};
use super::validate::FieldError;
use super::{CampaignState, Stage};
use crate::ingest::writer::Change;
use crate::storage::campaigns::{self as store, CampaignRow};
use crate::App;

/// Campaign machinery shared by the runner and the API.
pub struct Campaigns {
    pub drivers: DriverRegistry,
    /// Wakes the runner (a campaign was started).
    pub wake: Notify,
    /// One campaign change at a time: the runner's poll, a start, a cancel.
    pub lock: Mutex<()>,
}

impl Campaigns {
    pub fn new(drivers: DriverRegistry) -> Self {
        Self {
            drivers,
            wake: Notify::new(),
            lock: Mutex::new(()),
        }
    }
}

/// Starts the runner task.
pub fn spawn(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = run_due(&app).await {
                tracing::warn!(error = %format!("{e:#}"), "campaign runner");
            }
            // Sleep until the earliest poll is due: the engine asks for polls milliseconds
            // apart while it streams fragments on an accelerated simulated network.
            let idle = match store::next_due(&app.db).await {
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or_default(),
                _ => Duration::from_secs(1),
            }
            .min(Duration::from_secs(1));
            tokio::select! {
                _ = app.campaigns.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    })
}

/// Starts the scheduled campaigns whose time has come, then processes every running campaign
/// whose poll is due.
pub async fn run_due(app: &App) -> anyhow::Result<()> {
    start_scheduled(app).await?;
    for id in store::due(&app.db, Utc::now()).await? {
        let _guard = app.campaigns.lock.lock().await;
        if let Err(e) = process(app, id).await {
            tracing::warn!(campaign = id, error = %format!("{e:#}"), "campaign step failed");
            // Keep the runner from spinning on a campaign whose step errors before polling.
            let next = Utc::now() + chrono::Duration::seconds(poll_interval(app).as_secs() as i64);
            store::set_poll_result(&app.db, id, next, Some(&format!("{e:#}"))).await?;
        }
    }
    Ok(())
}

/// Moves each scheduled campaign whose `start_at` the network's clock has reached to running.
/// One whose devices another campaign still holds waits (saying so once per campaign and
/// device) and starts when they are free.
async fn start_scheduled(app: &App) -> anyhow::Result<()> {
    for id in store::due_scheduled(&app.db, app.network.now()).await? {
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

fn poll_interval(app: &App) -> Duration {
    Duration::from_secs(app.config.fuota.poll_interval_s.max(1))
}

/// Builds what a driver receives: the stored campaign with its image bytes.
pub async fn load(app: &App, row: &CampaignRow) -> anyhow::Result<Campaign> {
    let firmware = crate::storage::firmware::get(&app.db, row.firmware_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("firmware image {} is gone", row.firmware_id))?;
    let payload = app.images.load(&firmware).await?;
    let devices = store::devices(&app.db, row.id).await?;
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
    })
}

/// Now on the network's clock: what a campaign's times are stamped with, like the devices'
/// (the runner's own scheduling, `next_poll_at`, stays on the real clock it sleeps on).
fn net_now(app: &App) -> String {
    crate::storage::fmt_time(app.network.now())
}

async fn log(app: &App, id: i64, mut line: LogLine) {
    line.at = app.network.now();
    if let Err(e) = store::add_log(&app.db, id, &line).await {
        tracing::warn!(campaign = id, error = %e, "writing the campaign log");
    }
}

async fn fail(app: &App, id: i64, message: &str) -> anyhow::Result<()> {
    log(
        app,
        id,
        LogLine {
            level: super::drivers::LogLevel::Error,
            ..LogLine::info(message)
        },
    )
    .await;
    store::finish(
        &app.db,
        id,
        CampaignState::Failed,
        Some(message),
        Stage::Failed,
        &net_now(app),
    )
    .await?;
    store::record_progress(&app.db, id, &net_now(app)).await?;
    let _ = app.changes.send(Change::Campaign(id));
    Ok(())
}

async fn process(app: &App, id: i64) -> anyhow::Result<()> {
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
    let campaign = match load(app, &row).await {
        Ok(c) => c,
        Err(e) => return fail(app, id, &format!("{e:#}")).await,
    };
    let ctx = DriverContext::from_app(app);
    let result = if row.started {
        driver.poll(&ctx, &campaign).await
    } else {
        driver.start(&ctx, &campaign).await
    };
    match result {
        Ok(outcome) => {
            if !row.started {
                store::set_started(&app.db, id).await?;
                log(app, id, LogLine::info(format!("started on {}", row.driver))).await;
            }
            if row.last_poll_error.is_some() {
                log(app, id, LogLine::info("the FUOTA service answers again")).await;
            }
            store::apply_outcome(&app.db, id, &outcome, &net_now(app)).await?;
            match &outcome.finished {
                Some(Finished::Completed) => {
                    log(app, id, LogLine::info("campaign completed")).await;
                    let at = net_now(app);
                    store::finish(
                        &app.db,
                        id,
                        CampaignState::Completed,
                        None,
                        Stage::Failed,
                        &at,
                    )
                    .await?;
                    store::record_progress(&app.db, id, &at).await?;
                }
                Some(Finished::Failed(msg)) => return fail(app, id, msg).await,
                None => {
                    let next = outcome.next_poll.unwrap_or_else(|| poll_interval(app));
                    store::set_poll_result(
                        &app.db,
                        id,
                        Utc::now() + chrono::Duration::from_std(next)?,
                        None,
                    )
                    .await?;
                }
            }
            let _ = app.changes.send(Change::Campaign(id));
        }
        Err(DriverError::Unavailable(msg)) => {
            // Back off up to 5 minutes; say so on the campaign once per distinct message.
            let failures = row.poll_failures.clamp(0, 5) as u32;
            let delay = (poll_interval(app) * 2u32.pow(failures)).min(Duration::from_secs(300));
            if row.last_poll_error.as_deref() != Some(msg.as_str()) {
                log(
                    app,
                    id,
                    LogLine::warning(format!(
                        "{msg} (retrying every {} s while the campaign runs)",
                        delay.as_secs()
                    )),
                )
                .await;
            }
            store::set_poll_result(
                &app.db,
                id,
                Utc::now() + chrono::Duration::from_std(delay)?,
                Some(&msg),
            )
            .await?;
            let _ = app.changes.send(Change::Campaign(id));
        }
        Err(DriverError::Refused(msg)) | Err(DriverError::Invalid(msg)) => {
            let what = if row.started { "polling" } else { "starting" };
            return fail(app, id, &format!("{what} failed: {msg}")).await;
        }
    }
    Ok(())
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

//! The runner's side of waves ([`super::waves`] decides, this carries it out): the split at
//! start, the current wave's devices for the driver, what happens when a wave's session ends,
//! and the operator's resume. Called with the campaigns lock held, like the rest of the runner.

use std::time::Duration;

use chrono::Utc;

use super::drivers::{Finished, LogLine};
use super::waves::{self, Decision, WaveState};
use super::{CampaignDevice, CampaignState};
use crate::ingest::writer::Change;
use crate::storage::campaigns::{self as store, waves as stored};
use crate::App;

fn net_now(app: &App) -> String {
    crate::storage::fmt_time(app.network.now())
}

async fn log(app: &App, id: i64, line: LogLine) {
    let line = LogLine {
        at: app.network.now(),
        ..line
    };
    if let Err(e) = store::add_log(&app.db, id, &line).await {
        tracing::warn!(campaign = id, error = %e, "writing the campaign log");
    }
}

/// The devices the driver works on: the running wave's, or all of them without a rollout
/// (and before the start, so that the preflight checks every device).
pub async fn current_devices(
    app: &App,
    id: i64,
    devices: Vec<CampaignDevice>,
) -> anyhow::Result<Vec<CampaignDevice>> {
    let Some(wave) = stored::get(&app.db, id).await?.and_then(|r| r.current()) else {
        return Ok(devices);
    };
    let waves = stored::device_waves(&app.db, id).await?;
    Ok(devices
        .into_iter()
        .filter(|d| waves.get(&d.dev_eui) == Some(&wave))
        .collect())
}

/// At start: splits the devices (in their stored order, by DevEUI) into the waves and starts
/// the first wave that has devices.
pub async fn begin(app: &App, id: i64) -> anyhow::Result<()> {
    let Some(run) = stored::get(&app.db, id).await? else {
        return Ok(());
    };
    let euis: Vec<String> = store::devices(&app.db, id)
        .await?
        .into_iter()
        .map(|d| d.dev_eui)
        .collect();
    let own = waves::split(euis.len(), &run.rollout.waves);
    let first = own.iter().position(|n| *n > 0);
    let states: Vec<WaveState> = own
        .iter()
        .enumerate()
        .map(|(i, n)| match (Some(i) == first, *n) {
            (true, _) => WaveState::Running,
            (false, 0) => WaveState::Skipped,
            _ => WaveState::Pending,
        })
        .collect();
    stored::begin(
        &app.db,
        id,
        &waves::assign(&euis, &run.rollout.waves),
        &states,
        &net_now(app),
    )
    .await?;
    if let Some(first) = first {
        log(
            app,
            id,
            LogLine::info(format!(
                "wave {} of {} starts: {} of {} devices",
                first + 1,
                states.len(),
                own[first],
                euis.len()
            )),
        )
        .await;
    }
    Ok(())
}

/// Whether the campaign runs a wave (a driver's `finished` then ends the wave, not it).
pub async fn in_wave(app: &App, id: i64) -> anyhow::Result<bool> {
    Ok(stored::get(&app.db, id)
        .await?
        .is_some_and(|r| r.current().is_some()))
}

/// Whether the root keys must be kept for a wave still to come (the engine forgets them once
/// its session holds each device's McKey).
pub async fn keys_still_needed(app: &App, id: i64) -> anyhow::Result<bool> {
    Ok(stored::get(&app.db, id)
        .await?
        .is_some_and(|r| r.current().is_some_and(|w| r.next_after(w).is_some())))
}

/// A wave's session is over (the driver said `finished`). `None`: the campaign goes on (the
/// next wave, or paused for the operator); `Some`: it ends with that outcome.
pub async fn wave_over(
    app: &App,
    id: i64,
    finished: &Finished,
) -> anyhow::Result<Option<Finished>> {
    let Some(mut run) = stored::get(&app.db, id).await? else {
        return Ok(Some(finished.clone()));
    };
    let Some(wave) = run.current() else {
        return Ok(Some(finished.clone()));
    };
    let devices = store::devices(&app.db, id).await?;
    let map = stored::device_waves(&app.db, id).await?;
    let stages = stored::stages_of(wave, &map, &devices);
    // A failure before the wave's devices were done (no multicast group, ...) ends it all.
    if matches!(finished, Finished::Failed(_)) && !stages.iter().all(|s| s.is_final()) {
        return Ok(Some(finished.clone()));
    }
    let next = run.next_after(wave);
    let at = net_now(app);
    match waves::decide(&run.rollout, wave, next, &stages) {
        Decision::Next { next } => {
            run.states[wave] = WaveState::Succeeded;
            run.states[next] = WaveState::Running;
            let pause = Duration::from_secs(run.rollout.pause_between_s);
            let poll_at = Utc::now() + chrono::Duration::from_std(pause)?;
            stored::start_wave(&app.db, id, &run.states, next, poll_at, &at).await?;
            store::record_progress(&app.db, id, &at).await?;
            let count = map.values().filter(|w| **w == next).count();
            log(
                app,
                id,
                LogLine::info(format!(
                    "wave {} succeeded; wave {} starts{}: {count} devices",
                    wave + 1,
                    next + 1,
                    if pause.is_zero() {
                        String::new()
                    } else {
                        format!(" in {} s", pause.as_secs())
                    }
                )),
            )
            .await;
            Ok(None)
        }
        Decision::Pause { reason } => {
            run.states[wave] = WaveState::Failed;
            stored::pause(&app.db, id, &run.states, &reason, &at).await?;
            log(
                app,
                id,
                LogLine::warning(format!(
                    "paused: {reason}; resume to start the next wave, or cancel"
                )),
            )
            .await;
            Ok(None)
        }
        Decision::Done | Decision::DoneFailed => {
            let met = matches!(
                waves::decide(&run.rollout, wave, None, &stages),
                Decision::Done
            );
            run.states[wave] = if met {
                WaveState::Succeeded
            } else {
                WaveState::Failed
            };
            stored::set_states(&app.db, id, &run.states).await?;
            // The engine fails a session in which no device was updated; earlier waves that
            // updated devices still make the campaign a completed one (with failures).
            let any_updated = devices.iter().any(|d| d.stage == super::Stage::Completed);
            Ok(Some(match finished {
                Finished::Failed(_) if any_updated => Finished::Completed,
                f => f.clone(),
            }))
        }
    }
}

/// The campaign ended (failed or cancelled): the running wave failed, those to come are skipped.
pub async fn close(app: &App, id: i64) -> anyhow::Result<()> {
    let Some(mut run) = stored::get(&app.db, id).await? else {
        return Ok(());
    };
    for s in &mut run.states {
        *s = match *s {
            WaveState::Running => WaveState::Failed,
            WaveState::Pending => WaveState::Skipped,
            other => other,
        };
    }
    stored::set_states(&app.db, id, &run.states).await
}

/// Why a resume was refused.
#[derive(Debug)]
pub enum ResumeError {
    NotFound,
    NotPaused(CampaignState),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for ResumeError {
    fn from(e: anyhow::Error) -> Self {
        ResumeError::Other(e)
    }
}

/// The operator resumes a paused campaign: the next wave starts now. Returns its number.
pub async fn resume(app: &App, id: i64) -> Result<usize, ResumeError> {
    let _guard = app.campaigns.lock.lock().await;
    let row = store::get(&app.db, id)
        .await?
        .ok_or(ResumeError::NotFound)?;
    if row.state != CampaignState::Paused {
        return Err(ResumeError::NotPaused(row.state));
    }
    let mut run = stored::get(&app.db, id)
        .await?
        .ok_or(ResumeError::NotPaused(row.state))?;
    let Some(next) = run.states.iter().position(|s| *s == WaveState::Pending) else {
        return Err(ResumeError::NotPaused(row.state));
    };
    run.states[next] = WaveState::Running;
    let at = net_now(app);
    stored::start_wave(&app.db, id, &run.states, next, Utc::now(), &at).await?;
    store::record_progress(&app.db, id, &at)
        .await
        .map_err(anyhow::Error::from)?;
    log(
        app,
        id,
        LogLine::info(format!(
            "resumed by the operator after \"{}\": wave {} starts",
            run.paused_reason.unwrap_or_default(),
            next + 1
        )),
    )
    .await;
    app.campaigns.wake.notify_one();
    let _ = app.changes.send(Change::Campaign(id));
    Ok(next + 1)
}

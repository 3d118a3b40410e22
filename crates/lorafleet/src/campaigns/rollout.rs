//! The runner's side of waves ([`super::waves`] decides, this carries it out): the split at
//! start, the current wave's devices for the driver, what happens when a wave's session ends,
//! and the operator's resume. Called with the campaigns lock held, like the rest of the runner.

use std::time::Duration;

use chrono::Utc;

use lorafleet_engine::packages::Packages;
use lorafleet_engine::sessions::{self, Session};

use super::drivers::{DeviceReport, Finished, LogLine};
use super::waves::{self, Decision, Rollout, WaveState};
use super::{CampaignDevice, CampaignState, DriverKind};
use crate::devices::DevEui;
use crate::engine::packages;
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

/// The devices the driver works on and the multicast session they share: the running
/// wave's, or all of them without waves (and before the start, so that the preflight checks
/// every device).
pub async fn current_devices(
    app: &App,
    id: i64,
    devices: Vec<CampaignDevice>,
) -> anyhow::Result<(Vec<CampaignDevice>, Option<Session>)> {
    let Some(run) = stored::get(&app.db, id).await? else {
        return Ok((devices, None));
    };
    let Some(wave) = run.current() else {
        return Ok((devices, None));
    };
    let waves = stored::device_waves(&app.db, id).await?;
    let devices = devices
        .into_iter()
        .filter(|d| waves.get(&d.dev_eui) == Some(&wave))
        .collect();
    Ok((devices, run.session(wave)))
}

/// At start: splits the devices (in their stored order, by DevEUI) into the waves, one per
/// operator wave and multicast session ([`waves::split_by_session`]), and starts the first
/// wave that has devices. A campaign without rollout whose devices share one session keeps
/// no waves (one session, as always).
pub async fn begin(app: &App, id: i64) -> anyhow::Result<()> {
    let Some(row) = store::get(&app.db, id).await? else {
        return Ok(());
    };
    let given = stored::get(&app.db, id)
        .await?
        .filter(|r| r.given)
        .map(|r| r.rollout);
    let euis: Vec<String> = store::devices(&app.db, id)
        .await?
        .into_iter()
        .map(|d| d.dev_eui)
        .collect();
    let (sessions, group) = session_groups(app, id, &row, &euis).await;
    let rollout = match given {
        Some(r) => r,
        None if sessions.len() > 1 => Rollout::whole_fleet(),
        None => return Ok(()),
    };
    let (split, assigned) = waves::split_by_session(&euis, &group, &sessions, &rollout.waves);
    let own: Vec<usize> = (0..split.len())
        .map(|w| assigned.iter().filter(|(_, x)| *x == w).count())
        .collect();
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
    stored::begin(&app.db, id, &assigned, &split, &states, &net_now(app)).await?;
    if sessions.len() > 1 {
        log(app, id, LogLine::info(sessions_line(&sessions, &group))).await;
    }
    if let Some(first) = first {
        let session = match sessions.len() > 1 {
            true => format!(" ({})", split[first].session.describe()),
            false => String::new(),
        };
        let line = format!(
            "wave {} of {} starts: {} of {} devices{session}",
            first + 1,
            states.len(),
            own[first],
            euis.len()
        );
        log(app, id, LogLine::info(line)).await;
    }
    Ok(())
}

/// "the devices need 2 multicast sessions, each run as a wave of its own: TS004 v1 on FPort
/// 201 (9 devices), TS004 v2 on FPort 201 (3 devices)".
fn sessions_line(sessions: &[Session], group: &[usize]) -> String {
    let each: Vec<String> = sessions
        .iter()
        .enumerate()
        .map(|(g, s)| {
            let n = group.iter().filter(|x| **x == g).count();
            format!("{} ({n} devices)", s.describe())
        })
        .collect();
    format!(
        "the devices need {} multicast sessions, each run as a wave of its own: {}",
        sessions.len(),
        each.join(", ")
    )
}

/// The campaign's session groups and each device's (see `lorafleet_engine::sessions`): what
/// each device speaks (its profile on the network server under the campaign's and its own
/// `packages`, as the engine resolves it when its wave starts). Only the engine runs several
/// sessions; other drivers' devices are one group. A device whose profile cannot be read is
/// grouped by the campaign's packages and the defaults, and the log says how many.
async fn session_groups(
    app: &App,
    id: i64,
    row: &store::CampaignRow,
    euis: &[String],
) -> (Vec<Session>, Vec<usize>) {
    let status_port = app.config.status_protocol.f_port;
    let fallback = Session::of(&Packages::defaults(status_port).with(&row.settings.packages));
    if row.driver != DriverKind::Engine {
        return (vec![fallback], vec![0; euis.len()]);
    }
    let mut spoken = Vec::with_capacity(euis.len());
    let mut unread: Vec<String> = Vec::new();
    for eui in euis {
        let own = row
            .settings
            .device_overrides
            .get(eui)
            .map(|o| o.packages)
            .unwrap_or_default();
        let Ok(dev_eui) = eui.parse::<DevEui>() else {
            spoken.push(fallback);
            continue;
        };
        let (p, warning) = packages::speaks(
            app.network.as_ref(),
            dev_eui,
            &own,
            &row.settings.packages,
            status_port,
        )
        .await;
        if let Some(w) = warning {
            unread.push(format!("{eui}: {w}"));
        }
        spoken.push(Session::of(&p));
    }
    if let Some(example) = unread.first() {
        let line = LogLine::warning(format!(
            "{} devices are grouped into multicast sessions without their device profile ({example})",
            unread.len()
        ));
        log(app, id, line).await;
    }
    sessions::groups(&spoken)
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

/// What a wave's end does, for the runner to store with the step that ended it (one
/// transaction, under the campaign's lease): the waves' write, the log lines, and `end`:
/// `None` when the campaign goes on (the next wave, or paused for the operator), `Some` when it
/// ends with that outcome.
#[derive(Debug, Clone)]
pub struct WaveEnd {
    pub write: Option<stored::WaveWrite>,
    pub log: Vec<LogLine>,
    pub end: Option<Finished>,
}

impl WaveEnd {
    fn ends(finished: &Finished) -> Self {
        Self {
            write: None,
            log: Vec::new(),
            end: Some(finished.clone()),
        }
    }
}

/// A wave's session is over (the driver said `finished`; `reports`: the devices as the step
/// that said so leaves them, not yet stored). Writes nothing: see [`WaveEnd`].
pub async fn wave_over(
    app: &App,
    id: i64,
    finished: &Finished,
    reports: &[DeviceReport],
) -> anyhow::Result<WaveEnd> {
    let Some(mut run) = stored::get(&app.db, id).await? else {
        return Ok(WaveEnd::ends(finished));
    };
    let Some(wave) = run.current() else {
        return Ok(WaveEnd::ends(finished));
    };
    let mut devices = store::devices(&app.db, id).await?;
    for d in &mut devices {
        if let Some(r) = reports.iter().find(|r| r.dev_eui == d.dev_eui) {
            d.stage = r.stage;
        }
    }
    let map = stored::device_waves(&app.db, id).await?;
    let stages = stored::stages_of(wave, &map, &devices);
    // A failure before the wave's devices were done (no multicast group, ...) ends it all.
    if matches!(finished, Finished::Failed(_)) && !stages.iter().all(|s| s.is_final()) {
        return Ok(WaveEnd::ends(finished));
    }
    let next = run.next_after(wave);
    let now = app.network.now();
    let stamp = |line: LogLine| LogLine { at: now, ..line };
    let label = |w: usize| match (run.mixed(), run.session(w)) {
        (true, Some(s)) => format!("wave {} ({})", w + 1, s.describe()),
        _ => format!("wave {}", w + 1),
    };
    let (this, coming) = (label(wave), next.map(label).unwrap_or_default());
    Ok(match waves::decide_as(&run.rollout, &this, next, &stages) {
        Decision::Next { next } => {
            let done = if run.given {
                format!("{this} succeeded")
            } else {
                let updated = stages.iter().filter(|s| **s == super::Stage::Completed);
                let total = stages.len();
                format!(
                    "{this} over: {} of {total} devices updated",
                    updated.count()
                )
            };
            run.states[wave] = WaveState::Succeeded;
            run.states[next] = WaveState::Running;
            // On the network's clock, like every campaign time: simulated seconds on a
            // simulated network (the runner waits for it, see `wave_wait`).
            let pause = Duration::from_secs(run.rollout.pause_between_s);
            let start_at = (!pause.is_zero())
                .then(|| chrono::Duration::from_std(pause).map(|p| now + p))
                .transpose()?;
            let count = map.values().filter(|w| **w == next).count();
            let line = LogLine::info(format!(
                "{done}; {coming} starts{}: {count} devices",
                if pause.is_zero() {
                    String::new()
                } else {
                    format!(" in {} s", pause.as_secs())
                }
            ));
            WaveEnd {
                write: Some(stored::WaveWrite::Start {
                    states: run.states,
                    next,
                    start_at,
                }),
                log: vec![stamp(line)],
                end: None,
            }
        }
        Decision::Pause { reason } => {
            run.states[wave] = WaveState::Failed;
            let line = LogLine::warning(format!(
                "paused: {reason}; resume to start the next wave, or cancel"
            ));
            WaveEnd {
                write: Some(stored::WaveWrite::Pause {
                    states: run.states,
                    reason,
                }),
                log: vec![stamp(line)],
                end: None,
            }
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
            // The engine fails a session in which no device was updated; earlier waves that
            // updated devices still make the campaign a completed one (with failures).
            let any_updated = devices.iter().any(|d| d.stage == super::Stage::Completed);
            WaveEnd {
                write: Some(stored::WaveWrite::States(run.states)),
                log: Vec::new(),
                end: Some(match finished {
                    Finished::Failed(_) if any_updated => Finished::Completed,
                    f => f.clone(),
                }),
            }
        }
    })
}

/// How long (real time) the runner still waits before the running wave's session starts: the
/// pause after the wave before it, counted on the network's clock. `None`: it may start now.
///
/// A look at the clock, not a request ([`crate::network::Network::peek_now`]): the runner
/// looks again and again until the pause is over, and a simulated network's clock stands still
/// for a while after every request. Asking it the time, the runner's looks came closer than that
/// while in the pause's last few milliseconds and stopped the clock it waited for: the pause's
/// end, 3 real seconds away at time_scale 200, took 10 to over 100 (the first waves test's 45 to
/// 180 s).
pub async fn wave_wait(app: &App, id: i64) -> anyhow::Result<Option<Duration>> {
    let Some(start_at) = stored::get(&app.db, id).await?.and_then(|r| r.start_at) else {
        return Ok(None);
    };
    let left = start_at - app.network.peek_now();
    if left <= chrono::Duration::zero() {
        return Ok(None);
    }
    let scale = app.network.time_scale().max(1e-6);
    Ok(Some(left.to_std()?.div_f64(scale)))
}

/// The waves' states once the campaign ended (failed or cancelled): the running wave failed,
/// those to come are skipped. `None` without a rollout.
pub async fn closed_states(app: &App, id: i64) -> anyhow::Result<Option<Vec<WaveState>>> {
    let Some(mut run) = stored::get(&app.db, id).await? else {
        return Ok(None);
    };
    for s in &mut run.states {
        *s = match *s {
            WaveState::Running => WaveState::Failed,
            WaveState::Pending => WaveState::Skipped,
            other => other,
        };
    }
    Ok(Some(run.states))
}

/// The campaign was cancelled: [`closed_states`] stored.
pub async fn close(app: &App, id: i64) -> anyhow::Result<()> {
    match closed_states(app, id).await? {
        Some(states) => stored::set_states(&app.db, id, &states).await,
        None => Ok(()),
    }
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

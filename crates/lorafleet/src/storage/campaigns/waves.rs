//! A campaign's waves (issue 10 item 6), as stored: the checked rollout (`rollout_json`), each
//! wave's state (`waves_json`), each wave's session (`wave_sessions_json`, issue 8 item 6: a
//! mixed fleet runs one wave per multicast session), the reason of a pause (`paused_reason`)
//! and each device's wave (`campaign_devices.wave`, assigned once at start so the split never
//! changes afterwards). The decisions are `campaigns::waves`'; this file only reads and
//! writes them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use lorafleet_engine::sessions::Session;

use super::super::{time, Cols, Conn, Db, Result, Time};
use super::{count_stages, CampaignDevice, Stage};

/// A checked rollout, as stored in `campaigns.rollout_json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rollout {
    /// Cumulative percentages of the campaign's devices, strictly increasing, the last 100.
    pub waves: Vec<f64>,
    /// Share of a wave's devices that must be updated for the next wave to start.
    pub success_threshold: f64,
    /// Share of a wave's devices that may fail; above it the pause names the failures.
    pub error_threshold: f64,
    /// Seconds on the network's clock (simulated seconds on a simulated network) between a
    /// successful wave and the next.
    pub pause_between_s: u64,
}

impl Rollout {
    /// The rollout of a campaign that gave none but whose devices need several multicast
    /// sessions: every device in one wave, and the sessions one after the other whatever
    /// each achieved (as one session would have gone on with its failures).
    pub fn whole_fleet() -> Rollout {
        Rollout {
            waves: vec![100.0],
            success_threshold: 0.0,
            error_threshold: 1.0,
            pause_between_s: 0,
        }
    }
}

/// One wave as run: the operator's wave it is part of (0-based, into `Rollout::waves`) and
/// the multicast session its devices share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveSession {
    pub of: usize,
    pub session: Session,
}

/// Where a wave is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaveState {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Not run: it had no devices of its own, or the campaign ended before it.
    Skipped,
}

/// One wave as the campaign JSON shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WaveDto {
    /// 1 for the first wave (as the pause reason counts them).
    pub index: usize,
    /// The operator's wave (1 for the first of `rollout.waves`) this one is part of: a mixed
    /// fleet's operator wave runs as one wave per multicast session.
    pub rollout_wave: usize,
    /// The cumulative share of the campaign's devices its operator wave reaches.
    pub percent: f64,
    /// What the wave's devices share, set at start: `{"fragmentation": {"version": 2,
    /// "f_port": 201}}` (absent before the start).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub session: Option<Session>,
    /// The wave's own devices, in the stored order.
    pub devices: Vec<String>,
    pub state: WaveState,
    /// The wave's devices per stage.
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, u32>,
}

/// A campaign's rollout with its waves' states (empty before the start).
#[derive(Debug, Clone, PartialEq)]
pub struct WaveRun {
    /// The operator's, or [`Rollout::whole_fleet`] when `given` is false.
    pub rollout: Rollout,
    /// Whether the operator gave the rollout (false: the campaign runs waves only because its
    /// devices need several multicast sessions).
    pub given: bool,
    /// Each wave as run, set at start (empty before it, and for campaigns started before
    /// issue 8 item 6: their waves are the rollout's).
    pub sessions: Vec<WaveSession>,
    pub states: Vec<WaveState>,
    pub paused_reason: Option<String>,
    /// When the running wave's session may start, on the network's clock (the pause after
    /// the wave before it).
    pub start_at: Option<DateTime<Utc>>,
}

impl WaveRun {
    /// The wave whose session runs (or is about to start).
    pub fn current(&self) -> Option<usize> {
        self.states.iter().position(|s| *s == WaveState::Running)
    }

    /// The first wave after `wave` that has devices to run.
    pub fn next_after(&self, wave: usize) -> Option<usize> {
        (wave + 1..self.states.len()).find(|i| self.states[*i] == WaveState::Pending)
    }

    /// The session of wave `wave`, when the split is stored.
    pub fn session(&self, wave: usize) -> Option<Session> {
        self.sessions.get(wave).map(|w| w.session)
    }

    /// Whether the campaign's devices need more than one multicast session.
    pub fn mixed(&self) -> bool {
        self.sessions
            .iter()
            .any(|w| Some(w.session) != self.session(0))
    }
}

/// Stores (or clears) a draft's rollout.
pub async fn set_rollout(db: &Db, id: i64, rollout: Option<&Rollout>) -> anyhow::Result<()> {
    let json = rollout.map(serde_json::to_string).transpose()?;
    on!(db, c => sqlx::query("UPDATE campaigns SET rollout_json = $1 WHERE id = $2")
        .bind(json)
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The campaign's rollout, if it has one: the operator's, or the implicit one of a campaign
/// whose devices need several multicast sessions.
pub async fn get(db: &Db, id: i64) -> anyhow::Result<Option<WaveRun>> {
    let row = on!(db, c => sqlx::query(
        "SELECT rollout_json, waves_json, paused_reason, wave_start_at, wave_sessions_json
         FROM campaigns WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(c).await?
    .map(|r| (
        r.get::<Option<String>>("rollout_json"),
        r.get::<Option<String>>("waves_json"),
        r.get::<Option<String>>("paused_reason"),
        r.get::<Option<String>>("wave_start_at"),
        r.get::<Option<String>>("wave_sessions_json"),
    )));
    let Some((rollout, states, paused_reason, start_at, sessions)) = row else {
        return Ok(None);
    };
    let sessions: Vec<WaveSession> = sessions
        .map(|s| serde_json::from_str(&s))
        .transpose()?
        .unwrap_or_default();
    let (rollout, given) = match rollout {
        Some(r) => (serde_json::from_str(&r)?, true),
        None if !sessions.is_empty() => (Rollout::whole_fleet(), false),
        None => return Ok(None),
    };
    Ok(Some(WaveRun {
        rollout,
        given,
        sessions,
        states: states
            .map(|s| serde_json::from_str(&s))
            .transpose()?
            .unwrap_or_default(),
        paused_reason,
        start_at: start_at.as_deref().and_then(super::super::parse_time),
    }))
}

/// Each device's wave (devices without one, of a campaign without rollout, are left out).
pub async fn device_waves(db: &Db, id: i64) -> Result<BTreeMap<String, usize>> {
    let rows: Vec<(String, Option<i64>)> = on!(db, c => sqlx::query_as(
        "SELECT dev_eui, wave FROM campaign_devices WHERE campaign_id = $1",
    )
    .bind(id)
    .fetch_all(c).await)?;
    Ok(rows
        .into_iter()
        .filter_map(|(eui, w)| Some((eui, usize::try_from(w?).ok()?)))
        .collect())
}

/// At start: stores each device's wave, each wave's session and the waves' first states;
/// devices of the waves after the running one go back to `pending` (the start put every
/// device at its first step).
pub async fn begin(
    db: &Db,
    id: i64,
    assigned: &[(&str, usize)],
    sessions: &[WaveSession],
    states: &[WaveState],
    at: &str,
) -> anyhow::Result<()> {
    let running = states.iter().position(|s| *s == WaveState::Running);
    let mut tx = db.begin().await?;
    for (eui, wave) in assigned {
        let waiting = Some(*wave) != running;
        on!(&mut *tx, c => sqlx::query(
            "UPDATE campaign_devices SET wave = $1,
                stage = CASE WHEN $2 THEN 'pending' ELSE stage END, updated_at = $3
             WHERE campaign_id = $4 AND dev_eui = $5",
        )
        .bind(*wave as i64)
        .bind(waiting)
        .bind(time(at))
        .bind(id)
        .bind(*eui)
        .execute(c).await.map(|r| r.rows_affected()))?;
    }
    on!(&mut *tx, c => sqlx::query(
        "UPDATE campaigns SET waves_json = $1, wave_sessions_json = $2 WHERE id = $3",
    )
    .bind(serde_json::to_string(states)?)
    .bind(serde_json::to_string(sessions)?)
    .bind(id)
    .execute(c).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(())
}

/// Stores the waves' states alone (a wave ended with the campaign).
pub async fn set_states(db: &Db, id: i64, states: &[WaveState]) -> anyhow::Result<()> {
    set_states_on(&mut *db.acquire().await?, id, states).await
}

/// [`set_states`] inside the caller's transaction.
pub async fn set_states_on(conn: &mut Conn, id: i64, states: &[WaveState]) -> anyhow::Result<()> {
    on!(&mut *conn, c => sqlx::query("UPDATE campaigns SET waves_json = $1 WHERE id = $2")
        .bind(serde_json::to_string(states)?)
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// What a step that ended a wave stores of the waves, in the step's transaction (see
/// `leases::save_step`), after the step's own writes.
#[derive(Debug, Clone, PartialEq)]
pub enum WaveWrite {
    /// The next wave starts ([`start_wave_on`]), its session not before `start_at` on the
    /// network's clock.
    Start {
        states: Vec<WaveState>,
        next: usize,
        start_at: Option<DateTime<Utc>>,
    },
    /// The campaign pauses for the operator ([`pause_on`]).
    Pause {
        states: Vec<WaveState>,
        reason: String,
    },
    /// The waves' states alone: the campaign ends with this step.
    States(Vec<WaveState>),
}

/// Stores a [`WaveWrite`]; `poll_at` is when the runner looks at the campaign next, `at` the
/// network's time of the step.
pub async fn apply_on(
    conn: &mut Conn,
    id: i64,
    write: &WaveWrite,
    poll_at: DateTime<Utc>,
    at: &str,
) -> anyhow::Result<()> {
    match write {
        WaveWrite::Start {
            states,
            next,
            start_at,
        } => start_wave_on(conn, id, states, *next, (poll_at, *start_at), at).await,
        WaveWrite::Pause { states, reason } => pause_on(conn, id, states, reason, at).await,
        WaveWrite::States(states) => set_states_on(conn, id, states).await,
    }
}

/// Starts wave `next` (whose state in `states` is `running`): its devices go to their first
/// step, the driver's state of the last wave is dropped so that the runner calls the driver's
/// `start` again, and the first poll is due at `poll_at` (the runner's clock), the session's
/// start not before `start_at` (the network's clock: the pause between waves). Also what a
/// resume does, so it moves a paused campaign back to `running`.
pub async fn start_wave(
    db: &Db,
    id: i64,
    states: &[WaveState],
    next: usize,
    poll_at: DateTime<Utc>,
    at: &str,
) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    start_wave_on(&mut tx, id, states, next, (poll_at, None), at).await?;
    tx.commit().await?;
    Ok(())
}

/// [`start_wave`] inside the caller's transaction; `when`: the first poll (the runner's
/// clock) and the session's earliest start (the network's).
pub async fn start_wave_on(
    conn: &mut Conn,
    id: i64,
    states: &[WaveState],
    next: usize,
    when: (DateTime<Utc>, Option<DateTime<Utc>>),
    at: &str,
) -> anyhow::Result<()> {
    let (poll_at, start_at) = when;
    on!(&mut *conn, c => sqlx::query(
        "UPDATE campaign_devices SET stage = 'mc_group_setup', updated_at = $1
         WHERE campaign_id = $2 AND wave = $3",
    )
    .bind(time(at))
    .bind(id)
    .bind(next as i64)
    .execute(c).await.map(|r| r.rows_affected()))?;
    on!(&mut *conn, c => sqlx::query(
        "UPDATE campaigns SET state = 'running', waves_json = $1, paused_reason = NULL,
            started = FALSE, driver_state_json = NULL, next_poll_at = $2, poll_failures = 0,
            last_poll_error = NULL, updated_at = $3, wave_start_at = $4
         WHERE id = $5",
    )
    .bind(serde_json::to_string(states)?)
    .bind(Time::from(poll_at))
    .bind(time(at))
    .bind(start_at.map(Time::from))
    .bind(id)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Pauses a campaign after a wave: not polled until the operator resumes or cancels it. The
/// finished wave's driver state is dropped (its session is over) and the runner's lease
/// released (whichever instance claims it after the resume goes on from the stored state).
pub async fn pause_on(
    conn: &mut Conn,
    id: i64,
    states: &[WaveState],
    reason: &str,
    at: &str,
) -> anyhow::Result<()> {
    on!(&mut *conn, c => sqlx::query(
        "UPDATE campaigns SET state = 'paused', waves_json = $1, paused_reason = $2,
            started = FALSE, driver_state_json = NULL, next_poll_at = NULL, lease_until = NULL,
            updated_at = $3
         WHERE id = $4",
    )
    .bind(serde_json::to_string(states)?)
    .bind(reason)
    .bind(time(at))
    .bind(id)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The waves as the campaign JSON shows them: the stored split once started, else the
/// rollout's (empty without either).
pub fn dtos(
    run: &WaveRun,
    waves: &BTreeMap<String, usize>,
    devices: &[CampaignDevice],
) -> Vec<WaveDto> {
    let planned: Vec<(usize, Option<Session>)> = if run.sessions.is_empty() {
        (0..run.rollout.waves.len()).map(|i| (i, None)).collect()
    } else {
        run.sessions
            .iter()
            .map(|w| (w.of, Some(w.session)))
            .collect()
    };
    planned
        .into_iter()
        .enumerate()
        .map(|(i, (of, session))| {
            let own: Vec<&CampaignDevice> = devices
                .iter()
                .filter(|d| waves.get(&d.dev_eui) == Some(&i))
                .collect();
            WaveDto {
                index: i + 1,
                rollout_wave: of + 1,
                percent: run.rollout.waves.get(of).copied().unwrap_or(100.0),
                session,
                devices: own.iter().map(|d| d.dev_eui.clone()).collect(),
                state: run.states.get(i).copied().unwrap_or(WaveState::Pending),
                counts: count_stages(own.iter().map(|d| &d.stage)),
            }
        })
        .collect()
}

/// The stages of a wave's devices, for the decision after it.
pub fn stages_of(
    wave: usize,
    waves: &BTreeMap<String, usize>,
    devices: &[CampaignDevice],
) -> Vec<Stage> {
    devices
        .iter()
        .filter(|d| waves.get(&d.dev_eui) == Some(&wave))
        .map(|d| d.stage)
        .collect()
}

//! Campaign leases: which lorafleet instance runs a running campaign, so that instances on one
//! database never run a campaign twice, and one whose owner died is taken over.
//!
//! An instance (its owner id is random per process) [`claim`]s one due campaign at a time:
//! free, already its own, or whose lease lapsed. It holds every campaign it runs until the
//! campaign ends or the instance stops ([`release_all`]), renewing all of them at once
//! ([`renew_all`]) at least every `lease_s / 3`. A claim by another owner than the last one is a
//! new attempt (`lease_attempt` + 1): what the previous owner sent and did not commit may be
//! sent again, once, by the new attempt.
//!
//! Each step's results are stored by [`save_step`] in one transaction that first checks (and
//! renews) the lease: if another instance took the campaign over meanwhile, nothing of the
//! step is stored (its devices, log, engine state, the downlinks and firmware history of its
//! devices, its waves) and the caller stops running the campaign. Within a step, the runner
//! checks the lease before each send ([`renew`], `campaigns::lease_guard`).

use chrono::{DateTime, Utc};

use super::super::{begin_immediate, Cols, Db, Result, Time};
use super::waves::WaveWrite;
use super::{
    add_log_on, apply_outcome_on, finish_on, record_progress_on, set_poll_result_on, CampaignState,
    LogLine, PollOutcome, Stage,
};

/// A campaign an instance just claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    /// The attempt this owner runs (1 for the first owner).
    pub attempt: i64,
    /// The owner before this claim, if another one: it released the campaign when it stopped
    /// (`released`) or its lease lapsed (a takeover).
    pub previous: Option<Previous>,
}

/// Who held a campaign before another instance claimed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub owner: String,
    pub released: bool,
}

/// Claims one running campaign whose poll is due at `now` (the runner's real clock) for
/// `owner`, until `until`: one nobody holds, one `owner` already holds, or one whose lease
/// lapsed. `None` when there is none. Several instances may claim at once: PostgreSQL skips the
/// rows another claimer has locked (`FOR UPDATE SKIP LOCKED`), SQLite has one writer at a time.
pub async fn claim(
    db: &Db,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> anyhow::Result<Option<Claimed>> {
    // The same condition on both: due, and free, ours, released or lapsed.
    const PICK: &str = "SELECT id, lease_owner AS previous_owner, lease_until AS previous_until
        FROM campaigns
        WHERE state = 'running' AND (next_poll_at IS NULL OR next_poll_at <= $2)
          AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until IS NULL OR lease_until < $2)
        ORDER BY next_poll_at NULLS FIRST, id LIMIT 1";
    const SET: &str = "UPDATE campaigns SET lease_owner = $1, lease_until = $3,
        lease_attempt = lease_attempt
            + (CASE WHEN lease_owner IS NOT DISTINCT FROM $1 THEN 0 ELSE 1 END)";
    let now = Time::from(now);
    let until = Time::from(until);
    let picked = match db {
        Db::Postgres(p) => {
            // One statement: the row is locked from the pick to the update, and a row that
            // another instance is claiming is skipped rather than waited for.
            let sql = format!(
                "WITH picked AS ({PICK} FOR UPDATE SKIP LOCKED)
                 {SET} FROM picked WHERE campaigns.id = picked.id
                 RETURNING campaigns.id, campaigns.lease_attempt, picked.previous_owner,
                    picked.previous_until"
            )
            .replace(
                "lease_attempt = lease_attempt",
                "lease_attempt = campaigns.lease_attempt",
            )
            .replace("WHEN lease_owner IS", "WHEN campaigns.lease_owner IS");
            sqlx::query(&sql)
                .bind(owner)
                .bind(now)
                .bind(until)
                .fetch_optional(p)
                .await?
                .map(|r| claimed_from(&r, owner))
        }
        Db::Sqlite(_) => {
            // SQLite's RETURNING cannot name the picked row's old values: pick and update in
            // one write transaction (SQLite has one writer at a time, nobody claims between).
            let mut tx = begin_immediate(db).await?;
            let picked = on!(&mut *tx, c => sqlx::query(PICK)
                .bind(owner)
                .bind(now.clone())
                .fetch_optional(&mut *c)
                .await?
                .map(|r| (r.get::<i64>("id"), r.get::<Option<String>>("previous_owner"), r.get::<Option<String>>("previous_until"))));
            let Some((id, previous_owner, previous_until)) = picked else {
                return Ok(None);
            };
            let sql = format!("{SET} WHERE id = $2 RETURNING lease_attempt");
            let attempt: i64 = on!(&mut *tx, c => sqlx::query_scalar(&sql)
                .bind(owner)
                .bind(id)
                .bind(until)
                .fetch_one(c)
                .await)?;
            tx.commit().await?;
            Some(Claimed {
                id,
                attempt,
                previous: previous_of(previous_owner, previous_until, owner),
            })
        }
    };
    Ok(picked)
}

fn claimed_from(r: &impl Cols, owner: &str) -> Claimed {
    Claimed {
        id: r.get("id"),
        attempt: r.get("lease_attempt"),
        previous: previous_of(r.get("previous_owner"), r.get("previous_until"), owner),
    }
}

fn previous_of(owner: Option<String>, until: Option<String>, me: &str) -> Option<Previous> {
    owner.filter(|o| o != me).map(|owner| Previous {
        owner,
        released: until.is_none(),
    })
}

/// Extends every lease `owner` holds on a running campaign to `until`; how many it holds.
/// A lease another instance took over is not `owner`'s any more and stays untouched.
pub async fn renew_all(db: &Db, owner: &str, until: DateTime<Utc>) -> Result<u64> {
    on!(db, c => sqlx::query(
        "UPDATE campaigns SET lease_until = $2
         WHERE lease_owner = $1 AND state = 'running' AND lease_until IS NOT NULL",
    )
    .bind(owner)
    .bind(Time::from(until))
    .execute(c).await.map(|r| r.rows_affected()))
}

/// Extends `owner`'s lease of campaign `id` to `until`, if `owner` still holds it and the
/// campaign still runs: false when another instance took it over (or it ended), and then
/// `owner` must send nothing more for it. A lease that lapsed without a new claimer is still
/// `owner`'s: nobody else can have sent anything meanwhile.
pub async fn renew(db: &Db, id: i64, owner: &str, until: DateTime<Utc>) -> Result<bool> {
    on!(db, c => sqlx::query(
        "UPDATE campaigns SET lease_until = $3
         WHERE id = $1 AND lease_owner = $2 AND state = 'running' AND lease_until IS NOT NULL",
    )
    .bind(id)
    .bind(owner)
    .bind(Time::from(until))
    .execute(c).await.map(|r| r.rows_affected() > 0))
}

/// Puts off `owner`'s next poll of campaign `id` to `next_poll_at` without a step (the
/// engine's step is not due yet on the network's clock), renewing its lease to `until`;
/// false, with nothing changed, when `owner` no longer holds it or it ended.
pub async fn defer(
    db: &Db,
    id: i64,
    owner: &str,
    until: DateTime<Utc>,
    next_poll_at: DateTime<Utc>,
) -> Result<bool> {
    on!(db, c => sqlx::query(
        "UPDATE campaigns SET lease_until = $3, next_poll_at = $4
         WHERE id = $1 AND lease_owner = $2 AND state = 'running' AND lease_until IS NOT NULL",
    )
    .bind(id)
    .bind(owner)
    .bind(Time::from(until))
    .bind(Time::from(next_poll_at))
    .execute(c).await.map(|r| r.rows_affected() > 0))
}

/// Gives up every lease `owner` holds (a graceful stop): another instance may claim those
/// campaigns at once, without waiting for the leases to lapse.
pub async fn release_all(db: &Db, owner: &str) -> Result<u64> {
    on!(db, c => sqlx::query(
        "UPDATE campaigns SET lease_until = NULL WHERE lease_owner = $1 AND lease_until IS NOT NULL",
    )
    .bind(owner)
    .execute(c).await.map(|r| r.rows_affected()))
}

/// Makes `owner`'s run of campaign `id` a new attempt (a step of it sent and could not be
/// stored, so the record of what this attempt sent is incomplete); the new attempt's number.
pub async fn new_attempt(db: &Db, id: i64, owner: &str) -> Result<i64> {
    on!(db, c => sqlx::query_scalar(
        "UPDATE campaigns SET lease_attempt = lease_attempt + 1
         WHERE id = $1 AND lease_owner = $2 RETURNING lease_attempt",
    )
    .bind(id)
    .bind(owner)
    .fetch_one(c).await)
}

/// Whether `owner` holds campaign `id` (it was the last to claim it and has not released it).
pub async fn holds(db: &Db, id: i64, owner: &str) -> Result<bool> {
    let n: i64 = on!(db, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM campaigns WHERE id = $1 AND lease_owner = $2 AND lease_until IS NOT NULL",
    )
    .bind(id)
    .bind(owner)
    .fetch_one(c).await)?;
    Ok(n > 0)
}

/// When each running campaign may next be claimed by `owner`: its poll time, or for one
/// another instance holds, not before that lease lapses. The earliest of them, or `None` when
/// nothing runs.
pub async fn next_claimable(db: &Db, owner: &str) -> Result<Option<DateTime<Utc>>> {
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = on!(db, c => sqlx::query(
        "SELECT next_poll_at, lease_owner, lease_until FROM campaigns WHERE state = 'running'",
    )
    .fetch_all(c).await?
    .iter()
    .map(|r| (r.get("next_poll_at"), r.get("lease_owner"), r.get("lease_until")))
    .collect());
    let parse = |t: &Option<String>| t.as_deref().and_then(super::super::parse_time);
    Ok(rows
        .iter()
        .map(|(poll, lease_owner, lease_until)| {
            let poll = parse(poll).unwrap_or(DateTime::<Utc>::MIN_UTC);
            match (lease_owner, parse(lease_until)) {
                (Some(o), Some(until)) if o != owner => poll.max(until),
                _ => poll,
            }
        })
        .min())
}

/// How a step leaves the campaign.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Still running: poll again at this time (the runner's clock), with the error that made
    /// the step fail, if one did.
    Poll {
        at: DateTime<Utc>,
        error: Option<String>,
    },
    /// Over: the campaign's final state, its error, and the stage of devices not yet in a
    /// final one. The lease is released.
    End {
        state: CampaignState,
        error: Option<String>,
        device_stage: Stage,
    },
}

/// Everything one step of the runner stores, in order.
#[derive(Debug, Clone)]
pub struct StepSave<'a> {
    /// The network's time (for the devices' and the log's times).
    pub at: &'a str,
    /// The driver's `start` succeeded in this step.
    pub started: bool,
    /// The runner's own lines before the driver's.
    pub log_before: Vec<LogLine>,
    pub outcome: Option<&'a PollOutcome>,
    /// The runner's own lines after the driver's.
    pub log_after: Vec<LogLine>,
    pub next: Next,
    /// What the step changes of the campaign's waves (a wave ended), stored last.
    pub waves: Option<WaveWrite>,
}

/// Stores a step in one transaction, only while `owner` holds the campaign's lease (renewed to
/// `until`, or released if the step ended the campaign) and it still runs. False, with nothing
/// stored, when another instance took the campaign over or it was cancelled meanwhile.
pub async fn save_step(
    db: &Db,
    id: i64,
    owner: &str,
    until: DateTime<Utc>,
    step: &StepSave<'_>,
) -> anyhow::Result<bool> {
    let ends = matches!(step.next, Next::End { .. });
    // SQLite: the write lock from the start, so nothing commits between the check and the
    // writes. PostgreSQL: the lease check locks the campaign's row until the commit, so a
    // claimer waits for it (and then sees this owner's renewed lease).
    let mut tx = begin_immediate(db).await?;
    let held = on!(&mut *tx, c => sqlx::query(
        "UPDATE campaigns SET lease_until = $3, started = (started OR $4)
         WHERE id = $1 AND lease_owner = $2 AND lease_until IS NOT NULL AND state = 'running'",
    )
    .bind(id)
    .bind(owner)
    .bind((!ends).then(|| Time::from(until)))
    .bind(step.started)
    .execute(c).await.map(|r| r.rows_affected()))?;
    if held == 0 {
        // Dropping the transaction rolls it back: nothing of this step is stored.
        return Ok(false);
    }
    for line in &step.log_before {
        add_log_on(&mut tx, id, line).await?;
    }
    if let Some(outcome) = step.outcome {
        apply_outcome_on(&mut tx, id, outcome, step.at).await?;
    }
    for line in &step.log_after {
        add_log_on(&mut tx, id, line).await?;
    }
    match &step.next {
        Next::Poll { at, error } => {
            set_poll_result_on(&mut tx, id, *at, error.as_deref()).await?;
            if let Some(w) = &step.waves {
                super::waves::apply_on(&mut tx, id, w, *at, step.at).await?;
            }
        }
        Next::End {
            state,
            error,
            device_stage,
        } => {
            if let Some(w) = &step.waves {
                super::waves::apply_on(&mut tx, id, w, Utc::now(), step.at).await?;
            }
            finish_on(
                &mut tx,
                id,
                *state,
                error.as_deref(),
                *device_stage,
                step.at,
            )
            .await?;
        }
    }
    record_progress_on(&mut tx, id, step.at).await?;
    tx.commit().await?;
    Ok(true)
}

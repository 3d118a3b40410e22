//! Campaigns (`campaigns`), their devices (`campaign_devices`), log lines (`campaign_log`) and
//! progress history (`campaign_progress`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::{now, parse_time, time, Binds, Cols, Conn, Db, Result, Time};

mod changes;
pub mod device_facts;
pub mod leases;
mod records;
pub mod waves;

pub use changes::{
    DeviceReport, Draft, Finished, HistoryNote, LogLevel, LogLine, PollOutcome, SentDownlink,
};
pub use records::{
    count_stages, state_label, CampaignDevice, CampaignDto, CampaignKeys, CampaignSettings,
    CampaignState, CampaignSummary, DeviceKey, DeviceOverride, DriverKind, EngineDeviceReport,
    EngineSettings, FirmwareRef, FragStatusRequest, FragmentationSettings, LogEntry,
    MulticastClass, MulticastSettings, ParityMode, ProgressPoint, Refusal, Stage, UnicastSettings,
};

/// A campaign row with everything the runner needs (keys included: never serialise it).
#[derive(Debug, Clone)]
pub struct CampaignRow {
    pub id: i64,
    pub name: String,
    pub state: CampaignState,
    pub driver: DriverKind,
    pub firmware_id: i64,
    pub request: serde_json::Value,
    pub settings: CampaignSettings,
    pub keys: CampaignKeys,
    pub plan: serde_json::Value,
    pub driver_state: Option<serde_json::Value>,
    pub started: bool,
    pub poll_failures: i64,
    pub last_poll_error: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// When a scheduled campaign starts (UTC), set when it is started with a `start_at`.
    pub start_at: Option<String>,
    /// The instance holding the campaign's lease (the last one that did, once released).
    pub lease_owner: Option<String>,
    /// Until when the owner holds it; `None` when released (or never claimed).
    pub lease_until: Option<String>,
    /// How many owners have run the campaign (1 for the first, +1 at each takeover).
    pub lease_attempt: i64,
}

fn row_to_campaign(r: &impl Cols) -> anyhow::Result<CampaignRow> {
    let driver: String = r.get("driver");
    Ok(CampaignRow {
        id: r.get("id"),
        name: r.get("name"),
        state: CampaignState::parse(&r.get::<String>("state")),
        driver: driver.parse().map_err(anyhow::Error::msg)?,
        firmware_id: r.get("firmware_id"),
        request: serde_json::from_str(&r.get::<String>("request_json"))?,
        settings: serde_json::from_str(&r.get::<String>("settings_json"))?,
        keys: serde_json::from_str(&r.get::<String>("keys_json")).unwrap_or_default(),
        plan: serde_json::from_str(&r.get::<String>("plan_json")).unwrap_or_default(),
        driver_state: r
            .get::<Option<String>>("driver_state_json")
            .and_then(|s| serde_json::from_str(&s).ok()),
        started: r.get("started"),
        poll_failures: r.get("poll_failures"),
        last_poll_error: r.get("last_poll_error"),
        error: r.get("error"),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        completed_at: r.get("completed_at"),
        start_at: r.get("start_at"),
        lease_owner: r.get("lease_owner"),
        lease_until: r.get("lease_until"),
        lease_attempt: r.get("lease_attempt"),
    })
}

pub async fn get(db: &Db, id: i64) -> anyhow::Result<Option<CampaignRow>> {
    let row = on!(db, c => sqlx::query("SELECT * FROM campaigns WHERE id = $1")
        .bind(id)
        .fetch_optional(c).await?
        .as_ref()
        .map(row_to_campaign));
    row.transpose()
}

pub async fn insert_draft(
    db: &Db,
    v: Draft<'_>,
    request: &serde_json::Value,
    plan: &serde_json::Value,
    at: &str,
) -> anyhow::Result<i64> {
    let mut tx = db.begin().await?;
    let id: i64 = on!(&mut *tx, c => {
    let query = sqlx::query(
        "INSERT INTO campaigns (name, state, driver, firmware_id, request_json, settings_json,
            keys_json, plan_json, created_at, updated_at)
         VALUES ($1, 'draft', $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    );
    bind_draft(query, v, request, plan)?
        .bind(time(at))
        .bind(time(at))
        .fetch_one(c)
        .await?
        .get::<i64>("id")
    });
    insert_pending_devices(&mut tx, id, v.devices, at).await?;
    tx.commit().await?;
    Ok(id)
}

/// Replaces a draft's settings and devices; false when it is no longer a draft.
pub async fn update_draft(
    db: &Db,
    id: i64,
    v: Draft<'_>,
    request: &serde_json::Value,
    plan: &serde_json::Value,
    at: &str,
) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    let n = on!(&mut *tx, c => {
    let query = sqlx::query(
        "UPDATE campaigns SET name = $1, driver = $2, firmware_id = $3, request_json = $4,
            settings_json = $5, keys_json = $6, plan_json = $7, updated_at = $8
         WHERE id = $9 AND state = 'draft'",
    );
    bind_draft(query, v, request, plan)?
        .bind(time(at))
        .bind(id)
        .execute(c)
        .await?
        .rows_affected()
    });
    if n == 0 {
        return Ok(false);
    }
    on!(&mut *tx, c => sqlx::query("DELETE FROM campaign_devices WHERE campaign_id = $1")
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    insert_pending_devices(&mut tx, id, v.devices, at).await?;
    tx.commit().await?;
    Ok(true)
}

/// Binds a draft's columns in the order both `insert_draft` and `update_draft` name them
/// (name, driver, firmware_id, request_json, settings_json, keys_json, plan_json), so the two
/// statements cannot drift apart.
fn bind_draft<'q, Q: Binds<'q>>(
    query: Q,
    v: Draft<'q>,
    request: &serde_json::Value,
    plan: &serde_json::Value,
) -> anyhow::Result<Q> {
    Ok(query
        .bind(v.name)
        .bind(v.driver.as_str())
        .bind(v.firmware_id)
        .bind(request.to_string())
        .bind(serde_json::to_string(v.settings)?)
        .bind(serde_json::to_string(v.keys)?)
        .bind(plan.to_string()))
}

/// A draft's devices all start `pending`, whether the draft is new or replaced.
async fn insert_pending_devices(
    tx: &mut Conn,
    campaign_id: i64,
    devices: &[String],
    at: &str,
) -> anyhow::Result<()> {
    for d in devices {
        on!(&mut *tx, c => sqlx::query(
            "INSERT INTO campaign_devices (campaign_id, dev_eui, stage, updated_at) VALUES ($1, $2, 'pending', $3)",
        )
        .bind(campaign_id)
        .bind(d)
        .bind(time(at))
        .execute(c).await.map(|r| r.rows_affected()))?;
    }
    Ok(())
}

pub async fn set_plan(db: &Db, id: i64, plan: &serde_json::Value) -> anyhow::Result<()> {
    on!(db, c => sqlx::query("UPDATE campaigns SET plan_json = $1 WHERE id = $2")
        .bind(plan.to_string())
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn delete_draft(db: &Db, id: i64) -> anyhow::Result<bool> {
    let n = on!(db, c => sqlx::query("DELETE FROM campaigns WHERE id = $1 AND state IN ('draft', 'completed', 'failed', 'cancelled')")
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

fn device_from_row(r: &impl Cols) -> CampaignDevice {
    let driver_json: Option<serde_json::Value> = r
        .get::<Option<String>>("driver_json")
        .and_then(|s| serde_json::from_str(&s).ok());
    CampaignDevice {
        outcome: driver_json
            .as_ref()
            .and_then(|j| j.get("outcome"))
            .and_then(|o| o.as_str())
            .map(str::to_string),
        dev_eui: r.get("dev_eui"),
        stage: Stage::parse(&r.get::<String>("stage")),
        mc_group_setup_at: r.get("mc_group_setup_at"),
        frag_session_setup_at: r.get("frag_session_setup_at"),
        mc_session_setup_at: r.get("mc_session_setup_at"),
        frag_status_at: r.get("frag_status_at"),
        completed_at: r.get("completed_at"),
        error: r.get("error"),
        attempts: r.get::<i64>("attempts") as u32,
        next_action_at: r.get("next_action_at"),
        engine: EngineDeviceReport::from_driver_json(driver_json.as_ref()),
        driver_json,
    }
}

pub async fn devices(db: &Db, id: i64) -> Result<Vec<CampaignDevice>> {
    devices_on(&mut *db.acquire().await?, id).await
}

/// [`devices`] on a connection or inside a transaction.
pub async fn devices_on(conn: &mut Conn, id: i64) -> Result<Vec<CampaignDevice>> {
    let rows = on!(conn, c => sqlx::query("SELECT * FROM campaign_devices WHERE campaign_id = $1 ORDER BY dev_eui")
        .bind(id)
        .fetch_all(c).await?
        .iter()
        .map(device_from_row)
        .collect());
    Ok(rows)
}

/// The campaign's rows of the devices named (those it has), in chunks of a few hundred: a
/// step stores the devices it changed, and reading all of them for it made each step cost the
/// whole campaign.
pub async fn devices_named_on(
    conn: &mut Conn,
    id: i64,
    euis: &[&str],
) -> Result<Vec<CampaignDevice>> {
    const CHUNK: usize = 500;
    let mut out = Vec::with_capacity(euis.len());
    for chunk in euis.chunks(CHUNK) {
        let params: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT * FROM campaign_devices WHERE campaign_id = $1 AND dev_eui IN ({})",
            params.join(", ")
        );
        let rows: Vec<CampaignDevice> = on!(&mut *conn, c => {
            let mut q = sqlx::query(&sql).bind(id);
            for eui in chunk {
                q = q.bind(*eui);
            }
            q.fetch_all(c).await?.iter().map(device_from_row).collect()
        });
        out.extend(rows);
    }
    Ok(out)
}

/// Marks a draft (or a scheduled campaign whose time came) running at `at` (the network's
/// clock) with every device at its first step; false if it was neither. The first poll is due
/// now on the runner's own (real) clock.
pub async fn set_running(db: &Db, id: i64, at: &str) -> Result<bool> {
    let poll_now = now();
    let mut tx = db.begin().await?;
    let n = on!(&mut *tx, c => sqlx::query(
        "UPDATE campaigns SET state = 'running', started_at = $1, updated_at = $2, next_poll_at = $3,
            error = NULL WHERE id = $4 AND state IN ('draft', 'scheduled')",
    )
    .bind(time(at))
    .bind(time(at))
    .bind(time(&poll_now))
    .bind(id)
    .execute(c).await.map(|r| r.rows_affected()))?;
    if n == 1 {
        on!(&mut *tx, c => sqlx::query("UPDATE campaign_devices SET stage = 'mc_group_setup', updated_at = $1 WHERE campaign_id = $2")
            .bind(time(at))
            .bind(id)
            .execute(c).await.map(|r| r.rows_affected()))?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

/// Marks a draft scheduled to start at `start_at` (UTC, on the network's clock); false if it
/// was not a draft.
pub async fn set_scheduled(db: &Db, id: i64, start_at: DateTime<Utc>, at: &str) -> Result<bool> {
    let n = on!(db, c => sqlx::query(
        "UPDATE campaigns SET state = 'scheduled', start_at = $1, updated_at = $2, error = NULL
         WHERE id = $3 AND state = 'draft'",
    )
    .bind(Time::from(start_at))
    .bind(time(at))
    .bind(id)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Scheduled campaigns whose start time the network's clock has reached, earliest first.
pub async fn due_scheduled(db: &Db, net_now: DateTime<Utc>) -> Result<Vec<i64>> {
    on!(db, c => sqlx::query_scalar(
        "SELECT id FROM campaigns WHERE state = 'scheduled' AND start_at <= $1 ORDER BY start_at, id",
    )
    .bind(Time::from(net_now))
    .fetch_all(c).await)
}

/// A device of one campaign that another campaign holds (see [`CampaignState::holds_devices`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub dev_eui: String,
    pub campaign_id: i64,
    pub campaign_name: String,
}

/// The devices of campaign `id` that another campaign holds and has not finished with (a
/// device in a final stage of the other campaign is free again), in DevEUI order.
pub async fn overlaps(db: &Db, id: i64) -> Result<Vec<Overlap>> {
    let holding: Vec<&str> = CampaignState::ALL
        .into_iter()
        .filter(|s| s.holds_devices())
        .map(CampaignState::as_str)
        .collect();
    // The state names are the enum's own words, not input: safe to write into the statement.
    let states = holding
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT mine.dev_eui, o.id, o.name FROM campaign_devices mine
         JOIN campaign_devices theirs ON theirs.dev_eui = mine.dev_eui AND theirs.campaign_id <> mine.campaign_id
         JOIN campaigns o ON o.id = theirs.campaign_id
         WHERE mine.campaign_id = $1 AND o.state IN ({states})
           AND theirs.stage NOT IN ('completed', 'failed', 'cancelled')
         ORDER BY mine.dev_eui, o.id"
    );
    let rows: Vec<(String, i64, String)> = on!(db, c => sqlx::query_as(sql.as_str())
        .bind(id)
        .fetch_all(c).await)?;
    Ok(rows
        .into_iter()
        .map(|(dev_eui, campaign_id, campaign_name)| Overlap {
            dev_eui,
            campaign_id,
            campaign_name,
        })
        .collect())
}

/// Ends a campaign; devices not in a final stage take `device_stage`.
pub async fn finish(
    db: &Db,
    id: i64,
    state: CampaignState,
    error: Option<&str>,
    device_stage: Stage,
    at: &str,
) -> Result<()> {
    let mut tx = db.begin().await?;
    finish_on(&mut tx, id, state, error, device_stage, at).await?;
    tx.commit().await?;
    Ok(())
}

/// [`finish`] inside the caller's transaction.
pub async fn finish_on(
    tx: &mut Conn,
    id: i64,
    state: CampaignState,
    error: Option<&str>,
    device_stage: Stage,
    at: &str,
) -> Result<()> {
    on!(&mut *tx, c => sqlx::query(
        "UPDATE campaigns SET state = $1, completed_at = $2, updated_at = $3, error = COALESCE($4, error),
            next_poll_at = NULL, keys_json = '{}', lease_until = NULL WHERE id = $5",
    )
    .bind(state.as_str())
    .bind(time(at))
    .bind(time(at))
    .bind(error)
    .bind(id)
    .execute(c).await.map(|r| r.rows_affected()))?;
    on!(&mut *tx, c => sqlx::query(
        "UPDATE campaign_devices SET stage = $1, updated_at = $2
         WHERE campaign_id = $3 AND stage NOT IN ('completed', 'failed', 'cancelled')",
    )
    .bind(device_stage.as_str())
    .bind(time(at))
    .bind(id)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn add_log(db: &Db, id: i64, line: &LogLine) -> Result<bool> {
    add_log_on(&mut *db.acquire().await?, id, line).await
}

/// [`add_log`] on a connection or inside a transaction.
pub async fn add_log_on(conn: &mut Conn, id: i64, line: &LogLine) -> Result<bool> {
    let n = on!(conn, c => sqlx::query(
        "INSERT INTO campaign_log (campaign_id, at, level, source, dev_eui, message, dedup_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT(campaign_id, dedup_key) DO NOTHING",
    )
    .bind(id)
    .bind(Time::from(line.at))
    .bind(line.level.as_str())
    .bind(if line.from_service {
        "service"
    } else {
        "lorafleet"
    })
    .bind(&line.dev_eui)
    .bind(&line.message)
    .bind(&line.dedup_key)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Stores what a driver reported; true when anything the console shows changed.
pub async fn apply_outcome(
    db: &Db,
    id: i64,
    outcome: &PollOutcome,
    at: &str,
) -> anyhow::Result<bool> {
    // One transaction for all of it: the engine reports hundreds of devices at once.
    let mut tx = db.begin().await?;
    let changed = apply_outcome_on(&mut tx, id, outcome, at).await?;
    tx.commit().await?;
    Ok(changed)
}

/// [`apply_outcome`] inside the caller's transaction (the runner's step, see [`leases`]).
pub async fn apply_outcome_on(
    tx: &mut Conn,
    id: i64,
    outcome: &PollOutcome,
    at: &str,
) -> anyhow::Result<bool> {
    let mut changed = false;
    let reported: Vec<&str> = outcome.devices.iter().map(|d| d.dev_eui.as_str()).collect();
    let current: HashMap<String, CampaignDevice> = devices_named_on(&mut *tx, id, &reported)
        .await?
        .into_iter()
        .map(|d| (d.dev_eui.clone(), d))
        .collect();
    for report in &outcome.devices {
        let Some(before) = current.get(&report.dev_eui) else {
            continue;
        };
        if !device_differs(before, report) {
            continue;
        }
        changed = true;
        update_device(&mut *tx, id, report, at).await?;
    }
    for line in &outcome.log {
        changed |= add_log_on(&mut *tx, id, line).await?;
    }
    if let Some(state) = &outcome.driver_state {
        on!(&mut *tx, c => sqlx::query("UPDATE campaigns SET driver_state_json = $1 WHERE id = $2")
            .bind(state.to_string())
            .bind(id)
            .execute(c).await.map(|r| r.rows_affected()))?;
    }
    if outcome.forget_keys {
        on!(&mut *tx, c => sqlx::query("UPDATE campaigns SET keys_json = '{}' WHERE id = $1")
            .bind(id)
            .execute(c).await.map(|r| r.rows_affected()))?;
    }
    write_device_records(&mut *tx, id, outcome).await?;
    if changed {
        record_progress_on(&mut *tx, id, at).await?;
    }
    Ok(changed)
}

/// What a step did to its devices beyond the campaign's rows: the commands it sent (their
/// downlink list) and their firmware history, in the step's transaction.
async fn write_device_records(tx: &mut Conn, id: i64, outcome: &PollOutcome) -> Result<()> {
    for d in &outcome.downlinks {
        super::downlinks::record_sent(&mut *tx, d).await?;
    }
    for h in &outcome.history {
        let at = super::fmt_time(h.at);
        let entry = super::firmware_history::NewEntry {
            dev_eui: &h.dev_eui,
            at: &at,
            version: h.version,
            slot: None,
            campaign_id: Some(id),
            outcome: h.outcome.as_deref(),
            message: &h.message,
        };
        super::firmware_history::record(&mut *tx, &entry).await?;
    }
    Ok(())
}

async fn update_device(tx: &mut Conn, id: i64, report: &DeviceReport, at: &str) -> Result<()> {
    let t = |v: Option<DateTime<Utc>>| v.map(Time::from);
    on!(&mut *tx, c => sqlx::query(
        "UPDATE campaign_devices SET stage = $1,
            mc_group_setup_at = COALESCE($2, mc_group_setup_at),
            frag_session_setup_at = COALESCE($3, frag_session_setup_at),
            mc_session_setup_at = COALESCE($4, mc_session_setup_at),
            frag_status_at = COALESCE($5, frag_status_at),
            completed_at = COALESCE($6, completed_at),
            error = COALESCE($7, error),
            attempts = COALESCE($8, attempts),
            next_action_at = COALESCE($9, next_action_at),
            driver_json = COALESCE($10, driver_json),
            updated_at = $11
         WHERE campaign_id = $12 AND dev_eui = $13",
    )
    .bind(report.stage.as_str())
    .bind(t(report.mc_group_setup_at))
    .bind(t(report.frag_session_setup_at))
    .bind(t(report.mc_session_setup_at))
    .bind(t(report.frag_status_at))
    .bind(t(report.completed_at))
    .bind(&report.error)
    .bind(report.attempts.map(i64::from))
    .bind(t(report.next_action_at))
    .bind(report.driver_json.as_ref().map(|v| v.to_string()))
    .bind(time(at))
    .bind(id)
    .bind(&report.dev_eui)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

fn device_differs(before: &CampaignDevice, r: &DeviceReport) -> bool {
    let differs = |stored: &Option<String>, new: Option<DateTime<Utc>>| {
        new.is_some_and(|n| stored.as_deref().and_then(parse_time) != Some(n))
    };
    before.stage != r.stage
        || differs(&before.mc_group_setup_at, r.mc_group_setup_at)
        || differs(&before.frag_session_setup_at, r.frag_session_setup_at)
        || differs(&before.mc_session_setup_at, r.mc_session_setup_at)
        || differs(&before.frag_status_at, r.frag_status_at)
        || differs(&before.completed_at, r.completed_at)
        || differs(&before.next_action_at, r.next_action_at)
        || (r.error.is_some() && r.error != before.error)
        || r.attempts.is_some_and(|a| a != before.attempts)
        || (r.driver_json.is_some() && r.driver_json != before.driver_json)
}

/// Appends the current devices-per-stage counts to the history when they changed.
pub async fn record_progress(db: &Db, id: i64, at: &str) -> Result<()> {
    record_progress_on(&mut *db.acquire().await?, id, at).await
}

/// [`record_progress`] on a connection or inside a transaction.
pub async fn record_progress_on(conn: &mut Conn, id: i64, at: &str) -> Result<()> {
    // Counted by the database: a step records its progress, and reading every device's stage
    // for it made each step cost the whole campaign.
    let stages: Vec<(String, i64)> = on!(&mut *conn, c => sqlx::query_as(
            "SELECT stage, COUNT(*) FROM campaign_devices WHERE campaign_id = $1 GROUP BY stage",
        )
        .bind(id)
        .fetch_all(c).await)?;
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for (stage, n) in &stages {
        let key = Stage::parse(stage).as_str().to_string();
        *counts.entry(key).or_insert(0) += u32::try_from(*n).unwrap_or(u32::MAX);
    }
    let counts = serde_json::to_string(&counts).unwrap_or_default();
    let last: Option<String> = on!(&mut *conn, c => sqlx::query_scalar(
        "SELECT counts_json FROM campaign_progress WHERE campaign_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(c).await)?;
    if last.as_deref() != Some(counts.as_str()) {
        on!(&mut *conn, c => sqlx::query(
            "INSERT INTO campaign_progress (campaign_id, at, counts_json) VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(time(at))
        .bind(counts)
        .execute(c).await.map(|r| r.rows_affected()))?;
    }
    Ok(())
}

pub async fn set_poll_result(
    db: &Db,
    id: i64,
    next_poll_at: DateTime<Utc>,
    error: Option<&str>,
) -> Result<()> {
    set_poll_result_on(&mut *db.acquire().await?, id, next_poll_at, error).await
}

/// [`set_poll_result`] on a connection or inside a transaction.
pub async fn set_poll_result_on(
    conn: &mut Conn,
    id: i64,
    next_poll_at: DateTime<Utc>,
    error: Option<&str>,
) -> Result<()> {
    match error {
        None => on!(&mut *conn, c => sqlx::query(
            "UPDATE campaigns SET next_poll_at = $1, poll_failures = 0, last_poll_error = NULL WHERE id = $2",
        )
        .bind(Time::from(next_poll_at))
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?,
        Some(e) => on!(&mut *conn, c => sqlx::query(
            "UPDATE campaigns SET next_poll_at = $1, poll_failures = poll_failures + 1, last_poll_error = $2 WHERE id = $3",
        )
        .bind(Time::from(next_poll_at))
        .bind(e)
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?,
    };
    Ok(())
}

pub async fn set_started(db: &Db, id: i64) -> Result<()> {
    on!(db, c => sqlx::query("UPDATE campaigns SET started = TRUE WHERE id = $1")
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Which key material a campaign has, for display (never the keys).
pub fn keys_summary(
    keys: &CampaignKeys,
    settings: &CampaignSettings,
    started: bool,
) -> serde_json::Value {
    let per_device: BTreeMap<&String, &str> = keys
        .per_device
        .iter()
        .map(|(k, v)| {
            (
                k,
                match v {
                    DeviceKey::GenAppKey(_) => "gen_app_key",
                    DeviceKey::AppKey(_) => "app_key",
                },
            )
        })
        .collect();
    serde_json::json!({
        "lorawan_version": settings.lorawan_version,
        "gen_app_key": keys.gen_app_key.is_some(),
        "per_device": per_device,
        // Keys are wiped once the service has them.
        "forgotten": started && keys.gen_app_key.is_none() && keys.per_device.is_empty(),
    })
}

pub async fn list(db: &Db) -> anyhow::Result<Vec<CampaignSummary>> {
    let rows = on!(db, c => sqlx::query(
        "SELECT c.id, c.name, c.state, c.driver, c.firmware_id, c.created_at, c.started_at,
            c.completed_at, c.error, f.file_name
         FROM campaigns c LEFT JOIN firmware_images f ON f.id = c.firmware_id
         ORDER BY c.id DESC",
    )
    .fetch_all(c).await?
    .iter()
    .map(summary_from_row)
    .collect::<Vec<_>>());
    // Counted in the database: the list is polled (the console, the campaign benchmark every
    // second), and reading every device row of every campaign made each poll as long as the
    // fleet, which a 10,000-device campaign's server spent a minute of CPU on.
    let stage_rows: Vec<(i64, String, i64)> = on!(db, c => sqlx::query_as(
        "SELECT campaign_id, stage, COUNT(*) FROM campaign_devices GROUP BY campaign_id, stage",
    )
    .fetch_all(c).await)?;
    let mut stages: HashMap<i64, Vec<(Stage, u32)>> = HashMap::new();
    for (id, s, n) in stage_rows {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        stages.entry(id).or_default().push((Stage::parse(&s), n));
    }
    let mut out = Vec::new();
    for mut summary in rows {
        let st = stages.remove(&summary.id).unwrap_or_default();
        summary.devices = st.iter().map(|(_, n)| n).sum();
        summary.counts = records::count_stage_groups(&st);
        summary.state_label = records::state_label(summary.state, &summary.counts);
        out.push(summary);
    }
    Ok(out)
}

fn summary_from_row(r: &impl Cols) -> CampaignSummary {
    CampaignSummary {
        id: r.get("id"),
        name: r.get("name"),
        state: CampaignState::parse(&r.get::<String>("state")),
        driver: r
            .get::<String>("driver")
            .parse()
            .unwrap_or(DriverKind::FuotaServerV3),
        firmware_id: r.get("firmware_id"),
        firmware_file_name: r.get("file_name"),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        completed_at: r.get("completed_at"),
        error: r.get("error"),
        devices: 0,
        counts: count_stages(std::iter::empty()),
        state_label: String::new(),
    }
}

pub async fn dto(db: &Db, id: i64) -> anyhow::Result<Option<CampaignDto>> {
    let Some(row) = get(db, id).await? else {
        return Ok(None);
    };
    let devices = devices(db, id).await?;
    let firmware = super::firmware::get(db, row.firmware_id)
        .await?
        .map(|f| FirmwareRef {
            id: f.id,
            file_name: f.file_name,
            size: f.size,
            sha256: f.sha256,
            deleted: f.deleted_at.is_some(),
        });
    let log = on!(db, c => sqlx::query("SELECT at, level, source, dev_eui, message FROM campaign_log WHERE campaign_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(c).await?
        .iter()
        .map(|r| LogEntry {
            at: r.get("at"),
            level: r.get("level"),
            source: r.get("source"),
            dev_eui: r.get("dev_eui"),
            message: r.get("message"),
        })
        .collect());
    let progress = on!(db, c => sqlx::query(
        "SELECT at, counts_json FROM campaign_progress WHERE campaign_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(c).await?
    .iter()
    .map(|r| ProgressPoint {
        at: r.get("at"),
        counts: serde_json::from_str(&r.get::<String>("counts_json")).unwrap_or_default(),
    })
    .collect());
    let counts = count_stages(devices.iter().map(|d| &d.stage));
    let run = waves::get(db, id).await?;
    let wave_list = match &run {
        Some(run) => waves::dtos(run, &waves::device_waves(db, id).await?, &devices),
        None => Vec::new(),
    };
    Ok(Some(CampaignDto {
        id,
        name: row.name,
        state_label: records::state_label(row.state, &counts),
        state: row.state,
        device_count: devices.len() as u32,
        // The campaign API fills these in for drafts: they depend on the devices' reports.
        refused: Vec::new(),
        start_at: row.start_at.clone().or_else(|| {
            row.request
                .get("start_at")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        }),
        allow_reinstall: row
            .request
            .get("allow_reinstall")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        driver: row.driver,
        firmware_id: row.firmware_id,
        firmware,
        keys: keys_summary(&row.keys, &row.settings, row.started),
        settings: row.settings,
        plan: row.plan,
        request: row.request,
        created_at: row.created_at,
        started_at: row.started_at,
        completed_at: row.completed_at,
        error: row.error,
        last_poll_error: row.last_poll_error,
        lease_owner: row.lease_owner,
        lease_until: row.lease_until,
        attempt: row.lease_attempt,
        counts,
        devices,
        log,
        progress,
        paused_reason: run.as_ref().and_then(|r| r.paused_reason.clone()),
        // Only the operator's: a mixed fleet's implicit wave is no rollout of theirs.
        rollout: run.filter(|r| r.given).map(|r| r.rollout),
        waves: wave_list,
    }))
}

/// Makes every started engine campaign due for a poll now (answers arrived); true when there
/// was one.
pub async fn make_started_engine_campaigns_due(db: &Db) -> Result<bool> {
    let r = on!(db, c => sqlx::query(
        "UPDATE campaigns SET next_poll_at = NULL WHERE state = 'running' AND driver = 'engine' AND started = TRUE",
    )
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(r > 0)
}

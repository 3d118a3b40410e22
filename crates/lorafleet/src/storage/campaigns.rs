//! Campaigns (`campaigns`), their devices (`campaign_devices`), log lines (`campaign_log`) and
//! progress history (`campaign_progress`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{fmt_time, now, parse_time, Db, Query, Result};

mod changes;
mod records;

pub use changes::{DeviceReport, Draft, Finished, LogLevel, LogLine, PollOutcome};
pub use records::{
    count_stages, state_label, CampaignDevice, CampaignDto, CampaignKeys, CampaignSettings,
    CampaignState, CampaignSummary, DeviceKey, DeviceOverride, DriverKind, EngineDeviceReport,
    EngineSettings, FirmwareRef, FragStatusRequest, FragmentationSettings, LogEntry,
    MulticastClass, MulticastSettings, ParityMode, ProgressPoint, Stage, UnicastSettings,
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
}

fn row_to_campaign(r: &SqliteRow) -> anyhow::Result<CampaignRow> {
    let driver: String = r.get("driver");
    Ok(CampaignRow {
        id: r.get("id"),
        name: r.get("name"),
        state: CampaignState::parse(r.get::<&str, _>("state")),
        driver: driver.parse().map_err(anyhow::Error::msg)?,
        firmware_id: r.get("firmware_id"),
        request: serde_json::from_str(r.get::<&str, _>("request_json"))?,
        settings: serde_json::from_str(r.get::<&str, _>("settings_json"))?,
        keys: serde_json::from_str(r.get::<&str, _>("keys_json")).unwrap_or_default(),
        plan: serde_json::from_str(r.get::<&str, _>("plan_json")).unwrap_or_default(),
        driver_state: r
            .get::<Option<String>, _>("driver_state_json")
            .and_then(|s| serde_json::from_str(&s).ok()),
        started: r.get::<i64, _>("started") != 0,
        poll_failures: r.get("poll_failures"),
        last_poll_error: r.get("last_poll_error"),
        error: r.get("error"),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        completed_at: r.get("completed_at"),
    })
}

pub async fn get(db: &Db, id: i64) -> anyhow::Result<Option<CampaignRow>> {
    let row = sqlx::query("SELECT * FROM campaigns WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(row_to_campaign).transpose()
}

pub async fn insert_draft(
    db: &Db,
    v: Draft<'_>,
    request: &serde_json::Value,
    plan: &serde_json::Value,
    at: &str,
) -> anyhow::Result<i64> {
    let mut tx = db.begin().await?;
    let query = sqlx::query(
        "INSERT INTO campaigns (name, state, driver, firmware_id, request_json, settings_json,
            keys_json, plan_json, created_at, updated_at)
         VALUES (?, 'draft', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    );
    let id: i64 = bind_draft(query, v, request, plan)?
        .bind(at)
        .bind(at)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
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
    let query = sqlx::query(
        "UPDATE campaigns SET name = ?, driver = ?, firmware_id = ?, request_json = ?,
            settings_json = ?, keys_json = ?, plan_json = ?, updated_at = ?
         WHERE id = ? AND state = 'draft'",
    );
    let n = bind_draft(query, v, request, plan)?
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM campaign_devices WHERE campaign_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    insert_pending_devices(&mut tx, id, v.devices, at).await?;
    tx.commit().await?;
    Ok(true)
}

/// Binds a draft's columns in the order both `insert_draft` and `update_draft` name them
/// (name, driver, firmware_id, request_json, settings_json, keys_json, plan_json), so the two
/// statements cannot drift apart.
fn bind_draft<'q>(
    query: Query<'q>,
    v: Draft<'q>,
    request: &serde_json::Value,
    plan: &serde_json::Value,
) -> anyhow::Result<Query<'q>> {
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
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    campaign_id: i64,
    devices: &[String],
    at: &str,
) -> anyhow::Result<()> {
    for d in devices {
        sqlx::query(
            "INSERT INTO campaign_devices (campaign_id, dev_eui, stage, updated_at) VALUES (?, ?, 'pending', ?)",
        )
        .bind(campaign_id)
        .bind(d)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub async fn set_plan(db: &Db, id: i64, plan: &serde_json::Value) -> anyhow::Result<()> {
    sqlx::query("UPDATE campaigns SET plan_json = ? WHERE id = ?")
        .bind(plan.to_string())
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn delete_draft(db: &Db, id: i64) -> anyhow::Result<bool> {
    let n = sqlx::query("DELETE FROM campaigns WHERE id = ? AND state IN ('draft', 'completed', 'failed', 'cancelled')")
        .bind(id)
        .execute(db)
        .await?
        .rows_affected();
    Ok(n > 0)
}

fn device_from_row(r: &SqliteRow) -> CampaignDevice {
    let driver_json: Option<serde_json::Value> = r
        .get::<Option<String>, _>("driver_json")
        .and_then(|s| serde_json::from_str(&s).ok());
    CampaignDevice {
        outcome: driver_json
            .as_ref()
            .and_then(|j| j.get("outcome"))
            .and_then(|o| o.as_str())
            .map(str::to_string),
        dev_eui: r.get("dev_eui"),
        stage: Stage::parse(r.get::<&str, _>("stage")),
        mc_group_setup_at: r.get("mc_group_setup_at"),
        frag_session_setup_at: r.get("frag_session_setup_at"),
        mc_session_setup_at: r.get("mc_session_setup_at"),
        frag_status_at: r.get("frag_status_at"),
        completed_at: r.get("completed_at"),
        error: r.get("error"),
        attempts: r.get::<i64, _>("attempts") as u32,
        next_action_at: r.get("next_action_at"),
        engine: EngineDeviceReport::from_driver_json(driver_json.as_ref()),
        driver_json,
    }
}

pub async fn devices(db: &Db, id: i64) -> Result<Vec<CampaignDevice>> {
    let rows = sqlx::query("SELECT * FROM campaign_devices WHERE campaign_id = ? ORDER BY dev_eui")
        .bind(id)
        .fetch_all(db)
        .await?;
    Ok(rows.iter().map(device_from_row).collect())
}

/// Marks a draft running at `at` (the network's clock) with every device at its first step;
/// false if it was not a draft. The first poll is due now on the runner's own (real) clock.
pub async fn set_running(db: &Db, id: i64, at: &str) -> Result<bool> {
    let poll_now = now();
    let mut tx = db.begin().await?;
    let n = sqlx::query(
        "UPDATE campaigns SET state = 'running', started_at = ?, updated_at = ?, next_poll_at = ?,
            error = NULL WHERE id = ? AND state = 'draft'",
    )
    .bind(at)
    .bind(at)
    .bind(&poll_now)
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        sqlx::query("UPDATE campaign_devices SET stage = 'mc_group_setup', updated_at = ? WHERE campaign_id = ?")
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(n == 1)
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
    sqlx::query(
        "UPDATE campaigns SET state = ?, completed_at = ?, updated_at = ?, error = COALESCE(?, error),
            next_poll_at = NULL, keys_json = '{}' WHERE id = ?",
    )
    .bind(state.as_str())
    .bind(at)
    .bind(at)
    .bind(error)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE campaign_devices SET stage = ?, updated_at = ?
         WHERE campaign_id = ? AND stage NOT IN ('completed', 'failed', 'cancelled')",
    )
    .bind(device_stage.as_str())
    .bind(at)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Running campaigns whose next poll is due.
pub async fn due(db: &Db, at: DateTime<Utc>) -> Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT id FROM campaigns WHERE state = 'running' AND (next_poll_at IS NULL OR next_poll_at <= ?) ORDER BY next_poll_at, id",
    )
    .bind(fmt_time(at))
    .fetch_all(db)
    .await
}

/// When the earliest running campaign's poll is due.
pub async fn next_due(db: &Db) -> Result<Option<DateTime<Utc>>> {
    let at: Option<String> = sqlx::query_scalar(
        "SELECT MIN(COALESCE(next_poll_at, '')) FROM campaigns WHERE state = 'running'",
    )
    .fetch_one(db)
    .await?;
    Ok(at.map(|t| parse_time(&t).unwrap_or(DateTime::<Utc>::MIN_UTC)))
}

pub async fn add_log(db: &Db, id: i64, line: &LogLine) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO campaign_log (campaign_id, at, level, source, dev_eui, message, dedup_key)
         VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(campaign_id, dedup_key) DO NOTHING",
    )
    .bind(id)
    .bind(fmt_time(line.at))
    .bind(line.level.as_str())
    .bind(if line.from_service {
        "service"
    } else {
        "lorafleet"
    })
    .bind(&line.dev_eui)
    .bind(&line.message)
    .bind(&line.dedup_key)
    .execute(db)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Stores what a driver reported; true when anything the console shows changed.
pub async fn apply_outcome(
    db: &Db,
    id: i64,
    outcome: &PollOutcome,
    at: &str,
) -> anyhow::Result<bool> {
    let mut changed = false;
    let current: HashMap<String, CampaignDevice> = devices(db, id)
        .await?
        .into_iter()
        .map(|d| (d.dev_eui.clone(), d))
        .collect();
    let t = |v: Option<DateTime<Utc>>| v.map(fmt_time);
    // One transaction for all devices: the engine reports hundreds at once.
    let mut tx = db.begin().await?;
    for report in &outcome.devices {
        let Some(before) = current.get(&report.dev_eui) else {
            continue;
        };
        if !device_differs(before, report) {
            continue;
        }
        changed = true;
        sqlx::query(
            "UPDATE campaign_devices SET stage = ?,
                mc_group_setup_at = COALESCE(?, mc_group_setup_at),
                frag_session_setup_at = COALESCE(?, frag_session_setup_at),
                mc_session_setup_at = COALESCE(?, mc_session_setup_at),
                frag_status_at = COALESCE(?, frag_status_at),
                completed_at = COALESCE(?, completed_at),
                error = COALESCE(?, error),
                attempts = COALESCE(?, attempts),
                next_action_at = COALESCE(?, next_action_at),
                driver_json = COALESCE(?, driver_json),
                updated_at = ?
             WHERE campaign_id = ? AND dev_eui = ?",
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
        .bind(at)
        .bind(id)
        .bind(&report.dev_eui)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    for line in &outcome.log {
        changed |= add_log(db, id, line).await?;
    }
    if let Some(state) = &outcome.driver_state {
        sqlx::query("UPDATE campaigns SET driver_state_json = ? WHERE id = ?")
            .bind(state.to_string())
            .bind(id)
            .execute(db)
            .await?;
    }
    if outcome.forget_keys {
        sqlx::query("UPDATE campaigns SET keys_json = '{}' WHERE id = ?")
            .bind(id)
            .execute(db)
            .await?;
    }
    if changed {
        record_progress(db, id, at).await?;
    }
    Ok(changed)
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
    let stages: Vec<String> =
        sqlx::query_scalar("SELECT stage FROM campaign_devices WHERE campaign_id = ?")
            .bind(id)
            .fetch_all(db)
            .await?;
    let parsed: Vec<Stage> = stages.iter().map(|s| Stage::parse(s)).collect();
    let counts = serde_json::to_string(&count_stages(parsed.iter())).unwrap_or_default();
    let last: Option<String> = sqlx::query_scalar(
        "SELECT counts_json FROM campaign_progress WHERE campaign_id = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    if last.as_deref() != Some(counts.as_str()) {
        sqlx::query(
            "INSERT INTO campaign_progress (campaign_id, at, counts_json) VALUES (?, ?, ?)",
        )
        .bind(id)
        .bind(at)
        .bind(counts)
        .execute(db)
        .await?;
    }
    Ok(())
}

pub async fn set_poll_result(
    db: &Db,
    id: i64,
    next_poll_at: DateTime<Utc>,
    error: Option<&str>,
) -> Result<()> {
    match error {
        None => sqlx::query(
            "UPDATE campaigns SET next_poll_at = ?, poll_failures = 0, last_poll_error = NULL WHERE id = ?",
        )
        .bind(fmt_time(next_poll_at))
        .bind(id)
        .execute(db)
        .await?,
        Some(e) => sqlx::query(
            "UPDATE campaigns SET next_poll_at = ?, poll_failures = poll_failures + 1, last_poll_error = ? WHERE id = ?",
        )
        .bind(fmt_time(next_poll_at))
        .bind(e)
        .bind(id)
        .execute(db)
        .await?,
    };
    Ok(())
}

pub async fn set_started(db: &Db, id: i64) -> Result<()> {
    sqlx::query("UPDATE campaigns SET started = 1 WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
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
    let rows = sqlx::query(
        "SELECT c.id, c.name, c.state, c.driver, c.firmware_id, c.created_at, c.started_at,
            c.completed_at, c.error, f.file_name
         FROM campaigns c LEFT JOIN firmware_images f ON f.id = c.firmware_id
         ORDER BY c.id DESC",
    )
    .fetch_all(db)
    .await?;
    let stage_rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT campaign_id, stage FROM campaign_devices")
            .fetch_all(db)
            .await?;
    let mut stages: HashMap<i64, Vec<Stage>> = HashMap::new();
    for (id, s) in stage_rows {
        stages.entry(id).or_default().push(Stage::parse(&s));
    }
    let mut out = Vec::new();
    for r in rows {
        let id: i64 = r.get("id");
        let st = stages.remove(&id).unwrap_or_default();
        let state = CampaignState::parse(r.get::<&str, _>("state"));
        let counts = count_stages(st.iter());
        out.push(CampaignSummary {
            id,
            name: r.get("name"),
            state_label: records::state_label(state, &counts),
            state,
            driver: r
                .get::<String, _>("driver")
                .parse()
                .unwrap_or(DriverKind::FuotaServerV3),
            firmware_id: r.get("firmware_id"),
            firmware_file_name: r.get("file_name"),
            created_at: r.get("created_at"),
            started_at: r.get("started_at"),
            completed_at: r.get("completed_at"),
            error: r.get("error"),
            devices: st.len() as u32,
            counts,
        });
    }
    Ok(out)
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
    let log = sqlx::query("SELECT at, level, source, dev_eui, message FROM campaign_log WHERE campaign_id = ? ORDER BY id")
        .bind(id)
        .fetch_all(db)
        .await?
        .iter()
        .map(|r| LogEntry {
            at: r.get("at"),
            level: r.get("level"),
            source: r.get("source"),
            dev_eui: r.get("dev_eui"),
            message: r.get("message"),
        })
        .collect();
    let progress = sqlx::query(
        "SELECT at, counts_json FROM campaign_progress WHERE campaign_id = ? ORDER BY id",
    )
    .bind(id)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| ProgressPoint {
        at: r.get("at"),
        counts: serde_json::from_str(r.get::<&str, _>("counts_json")).unwrap_or_default(),
    })
    .collect();
    let counts = count_stages(devices.iter().map(|d| &d.stage));
    Ok(Some(CampaignDto {
        id,
        name: row.name,
        state_label: records::state_label(row.state, &counts),
        state: row.state,
        device_count: devices.len() as u32,
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
        counts,
        devices,
        log,
        progress,
    }))
}

/// Makes every started engine campaign due for a poll now (answers arrived); true when there
/// was one.
pub async fn make_started_engine_campaigns_due(db: &Db) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE campaigns SET next_poll_at = NULL WHERE state = 'running' AND driver = 'engine' AND started = 1",
    )
    .execute(db)
    .await?;
    Ok(r.rows_affected() > 0)
}

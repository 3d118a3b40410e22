//! Devices (`devices`): the inventory row of each device, created or refreshed by every event
//! about it, and the device list and page read from it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use lorafleet_codec::eui::DevEui;
use serde::Serialize;
use utoipa::ToSchema;

use super::device_events::DeviceEventDto;
use super::downlinks::{DownlinkDto, StatusRequestDto};
use super::firmware_history::HistoryEntry;
use super::integration_events::{DeviceIdentity, IntegrationEvent};
use super::uplinks::UplinkDto;
use super::version_status::{version_dto, StatusDto, VersionDto};
use super::{device_events, downlinks, firmware_history, uplinks, version_status};
use super::{time, Cols, Conn, Db, Result, Time};

/// A device the network server knows, listed through its API.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteDevice {
    pub dev_eui: DevEui,
    pub name: String,
    pub application_id: String,
    pub application_name: Option<String>,
    pub device_profile_id: Option<String>,
    pub device_profile_name: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// A device of the inventory, as campaign validation and the plan need it.
#[derive(Debug, Clone)]
pub struct KnownDevice {
    pub dev_eui: String,
    pub application_id: Option<String>,
    pub device_profile_id: Option<String>,
    pub slot_size: Option<i64>,
}

/// One row of the device list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceSummary {
    pub dev_eui: String,
    pub name: String,
    pub application: Option<String>,
    pub last_seen: Option<String>,
    pub running_version: Option<VersionDto>,
    /// Listed by the network server's API but never heard by lorafleet.
    pub never_seen: bool,
    /// Set when a device that was removed from the list sent again.
    pub reappeared_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceList {
    pub total: i64,
    pub devices: Vec<DeviceSummary>,
}

/// Everything the device page shows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceDetail {
    pub dev_eui: String,
    pub name: String,
    pub application: Option<String>,
    pub application_id: Option<String>,
    pub device_profile: Option<String>,
    pub device_profile_id: Option<String>,
    #[schema(value_type = Object)]
    pub tags: serde_json::Value,
    pub dev_addr: Option<String>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub joined_at: Option<String>,
    pub never_seen: bool,
    pub reappeared_at: Option<String>,
    pub battery: Option<f64>,
    pub margin: Option<i64>,
    pub last_uplink: Option<UplinkDto>,
    pub status: StatusDto,
    pub status_requests: Vec<StatusRequestDto>,
    pub downlinks: Vec<DownlinkDto>,
    pub events: Vec<DeviceEventDto>,
    /// Running versions over time and the campaigns that updated the device.
    pub firmware_history: Vec<HistoryEntry>,
}

fn tags_json(id: &DeviceIdentity) -> Option<String> {
    id.tags
        .as_ref()
        .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "{}".into()))
}

/// Creates or updates the device an event is about. Values the event does not carry keep what
/// was stored. `seen` marks an uplink or join: it moves last_seen and brings back a removed
/// device. True when the device was removed and has just come back.
pub async fn upsert(
    conn: &mut Conn,
    dev_eui: &str,
    id: &DeviceIdentity,
    at: &str,
    seen: bool,
) -> Result<bool> {
    let seen_at = if seen { Some(time(at)) } else { None };
    // One statement on the hot path: a removed device that is heard again is brought back here,
    // and RETURNING tells whether that just happened.
    on!(&mut *conn, c => sqlx::query_scalar(
        "INSERT INTO devices (dev_eui, name, application_id, application_name, device_profile_id,
            device_profile_name, tags_json, dev_addr, first_seen, last_seen, created_at)
         VALUES ($1, COALESCE($2, ''), $3, $4, $5, $6, COALESCE($7, '{}'), $8, $9, $9, $10)
         ON CONFLICT(dev_eui) DO UPDATE SET
            name = COALESCE($2, devices.name),
            application_id = COALESCE($3, devices.application_id),
            application_name = COALESCE($4, devices.application_name),
            device_profile_id = COALESCE($5, devices.device_profile_id),
            device_profile_name = COALESCE($6, devices.device_profile_name),
            tags_json = COALESCE($7, devices.tags_json),
            dev_addr = COALESCE($8, devices.dev_addr),
            first_seen = COALESCE(devices.first_seen, $9),
            last_seen = CASE WHEN $9 IS NOT NULL AND (devices.last_seen IS NULL OR devices.last_seen < $9)
                             THEN $9 ELSE devices.last_seen END,
            reappeared_at = CASE WHEN $9 IS NOT NULL AND devices.removed_at IS NOT NULL
                                 THEN $9 ELSE devices.reappeared_at END,
            removed_at = CASE WHEN $9 IS NOT NULL THEN NULL ELSE devices.removed_at END
         RETURNING ($9 IS NOT NULL AND reappeared_at IS NOT DISTINCT FROM $9)",
    )
    .bind(dev_eui)
    .bind(id.name.as_deref())
    .bind(id.application_id.as_deref())
    .bind(id.application_name.as_deref())
    .bind(id.device_profile_id.as_deref())
    .bind(id.device_profile_name.as_deref())
    .bind(tags_json(id))
    .bind(id.dev_addr.as_deref())
    .bind(seen_at)
    .bind(time(at))
    .fetch_one(c).await)
}

/// [`upsert`] for up to [`uplinks::BATCH_ROWS`] heard devices (uplinks) in one multi-row
/// statement. Returns each device row's EUI and `reappeared_at` after the statement, so the
/// caller can tell which devices came back at their event's time.
pub async fn upsert_heard_batch(
    conn: &mut Conn,
    events: &[&IntegrationEvent],
) -> Result<Vec<(String, Option<String>)>> {
    on!(conn, c, DB => {
    let mut devices = sqlx::QueryBuilder::<DB>::new(
        "INSERT INTO devices (dev_eui, name, application_id, application_name, device_profile_id,
            device_profile_name, tags_json, dev_addr, first_seen, last_seen, created_at) ",
    );
    devices.push_values(events.iter(), |mut row, ev| {
        let at = Time::from(ev.at);
        let id = &ev.device;
        row.push_bind(ev.dev_eui.to_string())
            .push_bind(id.name.clone().unwrap_or_default())
            .push_bind(id.application_id.clone())
            .push_bind(id.application_name.clone())
            .push_bind(id.device_profile_id.clone())
            .push_bind(id.device_profile_name.clone())
            .push_bind(tags_json(id).unwrap_or_else(|| "{}".into()))
            .push_bind(id.dev_addr.clone())
            .push_bind(at.clone())
            .push_bind(at.clone())
            .push_bind(at);
    });
    // `excluded` is the row as proposed: identity fields only overwrite when the event had
    // them, as in upsert. A removed device heard again comes back, and RETURNING names it so
    // the event log can say so.
    devices.push(
        " ON CONFLICT(dev_eui) DO UPDATE SET
            name = CASE WHEN excluded.name = '' THEN devices.name ELSE excluded.name END,
            application_id = COALESCE(excluded.application_id, devices.application_id),
            application_name = COALESCE(excluded.application_name, devices.application_name),
            device_profile_id = COALESCE(excluded.device_profile_id, devices.device_profile_id),
            device_profile_name = COALESCE(excluded.device_profile_name, devices.device_profile_name),
            tags_json = excluded.tags_json,
            dev_addr = COALESCE(excluded.dev_addr, devices.dev_addr),
            first_seen = COALESCE(devices.first_seen, excluded.first_seen),
            last_seen = CASE WHEN devices.last_seen IS NULL OR devices.last_seen < excluded.last_seen
                             THEN excluded.last_seen ELSE devices.last_seen END,
            reappeared_at = CASE WHEN devices.removed_at IS NOT NULL THEN excluded.last_seen
                                 ELSE devices.reappeared_at END,
            removed_at = NULL
         RETURNING dev_eui, reappeared_at",
    );
    Ok(devices
        .build()
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| (r.get("dev_eui"), r.get("reappeared_at")))
        .collect())
    })
}

pub async fn set_joined(conn: &mut Conn, dev_eui: &str, at: &str) -> Result<()> {
    on!(&mut *conn, c => sqlx::query("UPDATE devices SET joined_at = $1 WHERE dev_eui = $2")
        .bind(time(at))
        .bind(dev_eui)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Stores ChirpStack's device-status report (battery and link margin).
pub async fn set_device_status(
    conn: &mut Conn,
    dev_eui: &str,
    at: &str,
    battery: Option<f64>,
    margin: Option<i32>,
) -> Result<()> {
    on!(&mut *conn, c => sqlx::query(
        "UPDATE devices SET battery = $1, margin = $2, device_status_at = $3 WHERE dev_eui = $4",
    )
    .bind(battery)
    .bind(margin.map(i64::from))
    .bind(time(at))
    .bind(dev_eui)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Adds devices listed by the network server that lorafleet has not heard yet ("never seen").
pub async fn merge_remote(db: &Db, devices: &[RemoteDevice]) -> Result<usize> {
    let mut tx = super::begin(db).await?;
    let now = super::now();
    let mut added = 0;
    for d in devices {
        let r = on!(&mut *tx, c => sqlx::query(
            "INSERT INTO devices (dev_eui, name, application_id, application_name, device_profile_id,
                device_profile_name, source, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'network', $7)
             ON CONFLICT(dev_eui) DO UPDATE SET
                name = CASE WHEN devices.name = '' THEN excluded.name ELSE devices.name END,
                application_id = COALESCE(devices.application_id, excluded.application_id),
                device_profile_id = COALESCE(excluded.device_profile_id, devices.device_profile_id),
                device_profile_name = COALESCE(excluded.device_profile_name, devices.device_profile_name)",
        )
        .bind(d.dev_eui.to_string())
        .bind(&d.name)
        .bind(&d.application_id)
        .bind(d.application_name.as_deref())
        .bind(d.device_profile_id.as_deref())
        .bind(d.device_profile_name.as_deref())
        .bind(time(&now))
        .execute(c).await.map(|r| r.rows_affected()))?;
        added += r as usize;
    }
    tx.commit().await?;
    Ok(added)
}

/// Query of the device list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub search: Option<String>,
    pub limit: i64,
    pub offset: i64,
    /// `last_seen` (default, newest first), `name` or `dev_eui`.
    pub sort: String,
}

/// The search as a LIKE pattern with its wildcards escaped; None for no search.
fn like_pattern(search: Option<&str>) -> Option<String> {
    search.map(str::trim).filter(|s| !s.is_empty()).map(|s| {
        format!(
            "%{}%",
            s.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    })
}

fn summary_from_row(r: &impl Cols) -> DeviceSummary {
    let last_seen: Option<String> = r.get("last_seen");
    let running: Option<i64> = r.get("running_version");
    let application: Option<String> = r
        .get::<Option<String>>("application_name")
        .or(r.get("application_id"));
    DeviceSummary {
        dev_eui: r.get("dev_eui"),
        name: r.get("name"),
        application,
        never_seen: last_seen.is_none(),
        last_seen,
        running_version: running.map(|v| version_dto(v, r.get("versioning_type"))),
        reappeared_at: r.get("reappeared_at"),
    }
}

pub async fn list(db: &Db, q: &ListQuery) -> Result<DeviceList> {
    let pattern = like_pattern(q.search.as_deref());
    // Two shapes of query, so that the unfiltered list (the common case) can use the partial
    // index devices_listed; SQLite plans before it sees whether the pattern is NULL.
    // Case-insensitive on both: SQLite's LIKE is (for ASCII), PostgreSQL's is not.
    let like = if db.is_postgres() { "ILIKE" } else { "LIKE" };
    let filter = if pattern.is_some() {
        format!(
            "removed_at IS NULL AND (dev_eui {like} $1 ESCAPE '\\' OR name {like} $1 ESCAPE '\\'
             OR application_name {like} $1 ESCAPE '\\' OR dev_addr {like} $1 ESCAPE '\\')"
        )
    } else {
        "removed_at IS NULL AND $1 IS NULL".to_string()
    };
    let total: i64 = on!(db, c => sqlx::query_scalar(&format!("SELECT COUNT(*) FROM devices WHERE {filter}"))
        .bind(pattern.as_deref())
        .fetch_one(c).await)?;
    let order = match q.sort.as_str() {
        "name" => "name ASC, dev_eui ASC",
        "dev_eui" => "dev_eui ASC",
        // SQLite sorts NULL lowest, so never-seen devices come last and the index serves the
        // order; PostgreSQL sorts NULL highest, and its index is built NULLS LAST to match.
        _ if db.is_postgres() => "last_seen DESC NULLS LAST",
        _ => "last_seen DESC",
    };
    let rows = on!(db, c => sqlx::query(&format!(
        "SELECT dev_eui, name, application_name, application_id, last_seen, running_version,
                versioning_type, reappeared_at
         FROM devices WHERE {filter} ORDER BY {order} LIMIT $2 OFFSET $3"
    ))
    .bind(pattern.as_deref())
    .bind(q.limit)
    .bind(q.offset)
    .fetch_all(c).await?
    .iter()
    .map(summary_from_row)
    .collect());
    let devices = rows;
    Ok(DeviceList { total, devices })
}

/// Devices on the list (not removed), for the metrics gauge.
pub async fn count_listed(db: &Db) -> Result<i64> {
    on!(db, c => sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE removed_at IS NULL")
        .fetch_one(c).await)
}

pub async fn exists(db: &Db, dev_eui: DevEui) -> Result<bool> {
    let n: i64 = on!(db, c => sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE dev_eui = $1")
        .bind(dev_eui.to_string())
        .fetch_one(c).await)?;
    Ok(n > 0)
}

/// Everything the device page shows, or None for an unknown device.
pub async fn detail(db: &Db, dev_eui: DevEui) -> Result<Option<DeviceDetail>> {
    let eui = dev_eui.to_string();
    on!(db, c => {
        let Some(r) = sqlx::query("SELECT * FROM devices WHERE dev_eui = $1")
            .bind(&eui)
            .fetch_optional(c)
            .await?
        else {
            return Ok(None);
        };
        detail_from_row(db, &r, eui).await.map(Some)
    })
}

async fn detail_from_row(db: &Db, r: &(impl Cols + Sync), eui: String) -> Result<DeviceDetail> {
    let vt: Option<i64> = r.get("versioning_type");
    let (status_requests, downlinks) = downlinks::recent(db, &eui, 50).await?;
    let last_seen: Option<String> = r.get("last_seen");
    let tags: String = r.get("tags_json");
    Ok(DeviceDetail {
        name: r.get("name"),
        application: r
            .get::<Option<String>>("application_name")
            .or(r.get("application_id")),
        application_id: r.get("application_id"),
        device_profile: r
            .get::<Option<String>>("device_profile_name")
            .or(r.get("device_profile_id")),
        device_profile_id: r.get("device_profile_id"),
        tags: serde_json::from_str(&tags).unwrap_or(serde_json::json!({})),
        dev_addr: r.get("dev_addr"),
        first_seen: r.get("first_seen"),
        never_seen: last_seen.is_none(),
        last_seen,
        joined_at: r.get("joined_at"),
        reappeared_at: r.get("reappeared_at"),
        battery: r.get("battery"),
        margin: r.get("margin"),
        last_uplink: uplinks::last(db, &eui).await?,
        status: version_status::from_device_row(r),
        status_requests,
        downlinks,
        events: device_events::recent(db, &eui, 100).await?,
        firmware_history: firmware_history::of_device(db, &eui, vt).await?,
        dev_eui: eui,
    })
}

/// Hides a device from the list, with a log line saying by whom; false when it was not listed.
pub async fn remove(db: &Db, dev_eui: DevEui, by: &str) -> Result<bool> {
    let eui = dev_eui.to_string();
    let now = super::now();
    let mut tx = db.begin().await?;
    let n = on!(&mut *tx, c => sqlx::query("UPDATE devices SET removed_at = $1, reappeared_at = NULL WHERE dev_eui = $2 AND removed_at IS NULL")
        .bind(time(&now))
        .bind(&eui)
        .execute(c).await.map(|r| r.rows_affected()))?;
    if n > 0 {
        device_events::add(
            &mut tx,
            &eui,
            &now,
            "removed",
            &format!("removed from the device list by {by}"),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(n > 0)
}

/// The versioning type a device reported in PackageVersionAns, if it did.
pub async fn versioning_type(db: &Db, dev_eui: &str) -> Result<Option<i64>> {
    Ok(
        on!(db, c => sqlx::query_scalar("SELECT versioning_type FROM devices WHERE dev_eui = $1")
            .bind(dev_eui)
            .fetch_optional(c).await)?
        .flatten(),
    )
}

/// The inventory facts of the given devices (those lorafleet knows), for campaign validation.
pub async fn known(db: &Db, euis: &[String]) -> Result<HashMap<String, KnownDevice>> {
    let mut out = HashMap::new();
    for eui in euis {
        let row = on!(db, c => sqlx::query(
            "SELECT dev_eui, application_id, device_profile_id, slot_size FROM devices WHERE dev_eui = $1",
        )
        .bind(eui)
        .fetch_optional(c)
        .await?
        .map(|r| KnownDevice {
            dev_eui: r.get("dev_eui"),
            application_id: r.get("application_id"),
            device_profile_id: r.get("device_profile_id"),
            slot_size: r.get("slot_size"),
        }));
        if let Some(known) = row {
            out.insert(eui.clone(), known);
        }
    }
    Ok(out)
}

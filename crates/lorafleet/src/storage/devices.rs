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
use super::integration_events::{DeviceIdentity, EventBody, IntegrationEvent};
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
    /// A `model` tag, else the device-profile name, else the reported device description.
    pub model: Option<String>,
    pub last_seen: Option<String>,
    pub running_version: Option<VersionDto>,
    /// Listed by the network server's API but never heard by lorafleet.
    pub never_seen: bool,
    /// `online`, `offline` (not heard for the list's `offline_after_s`) or `never_seen`.
    pub status: String,
    /// RSSI (dBm) and SNR (dB) of the last uplink.
    pub rssi: Option<i64>,
    pub snr: Option<f64>,
    /// Battery level in percent from the last device-status report.
    pub battery: Option<f64>,
    /// Set when a device that was removed from the list sent again.
    pub reappeared_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceList {
    /// Devices the filter selects (all pages); with `total_is_lower_bound`, at least this many.
    pub total: i64,
    /// True when a name search matches more devices than `devices.search_count_cap`: counting
    /// stopped there, and more than `total` devices match.
    pub total_is_lower_bound: bool,
    /// Pass as `cursor=` for the next page; null on the last one.
    pub next_cursor: Option<String>,
    /// A device not heard for this long is `offline`.
    pub offline_after_s: u64,
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
    /// What the device reported through Firmware Management (TS006): `firmware_version`,
    /// `hardware_version`, `image` (`status`: absent, corrupt, incompatible or valid, with its
    /// `version`), `reboot`, each with the time (`at`) it was reported.
    #[schema(value_type = Option<Object>)]
    pub firmware_management: Option<serde_json::Value>,
    /// The app-layer packages in effect for the device outside a campaign (read-only): each
    /// package's `version` and `f_port` (`clock_sync` also `enabled`), from the packages'
    /// defaults and the device's profile on the network server (ChirpStack v4
    /// `app_layer_params`); `source` is `defaults` or `device_profile`, `device_profile` names
    /// it, `clock_sync_answered_by_network` is true when ChirpStack answers AppTimeReq itself,
    /// `note` says why the profile could not be read. A campaign's `packages` and its
    /// `device_overrides` apply on top while it runs.
    #[schema(value_type = Option<Object>)]
    pub packages: Option<serde_json::Value>,
    /// The device's fragment-decoder limits when known (read-only): `max_fragment_size`,
    /// `max_fragments`, `max_parity` as the newest campaign with the device held them (its
    /// override over the campaign's over the firmware sidecar's), with that `campaign_id`;
    /// null when no campaign stated any.
    #[schema(value_type = Option<Object>)]
    pub device_limits: Option<serde_json::Value>,
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
            device_profile_name, tags_json, dev_addr, first_seen, last_seen, created_at, changed_seq)
         VALUES ($1, COALESCE($2, ''), $3, $4, $5, $6, COALESCE($7, '{}'), $8, $9, $9, $10,
            (SELECT COALESCE(MAX(id), 0) + 1 FROM uplinks))
         ON CONFLICT(dev_eui) DO UPDATE SET
            changed_seq = excluded.changed_seq,
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
            device_profile_name, tags_json, dev_addr, first_seen, last_seen, created_at, rssi, snr,
            changed_seq) ",
    );
    devices.push_values(events.iter(), |mut row, ev| {
        let at = Time::from(ev.at);
        let id = &ev.device;
        let (rssi, snr) = match &ev.body {
            EventBody::Up(up) => (up.rssi.map(i64::from), up.snr),
            _ => (None, None),
        };
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
            .push_bind(at)
            .push_bind(rssi)
            .push_bind(snr)
            .push("(SELECT COALESCE(MAX(id), 0) + 1 FROM uplinks)");
    });
    // `excluded` is the row as proposed: identity fields only overwrite when the event had
    // them, as in upsert. A removed device heard again comes back, and RETURNING names it so
    // the event log can say so.
    devices.push(
        " ON CONFLICT(dev_eui) DO UPDATE SET
            changed_seq = excluded.changed_seq,
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
            rssi = CASE WHEN devices.last_seen IS NULL OR devices.last_seen <= excluded.last_seen
                        THEN excluded.rssi ELSE devices.rssi END,
            snr = CASE WHEN devices.last_seen IS NULL OR devices.last_seen <= excluded.last_seen
                       THEN excluded.snr ELSE devices.snr END,
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

/// What a run of uplinks says of one device whose events all carry the same identity: the
/// newest time heard and the link quality of the newest frame heard then (the last such event
/// wins a tie, as in [`upsert_heard_batch`]).
pub struct Heard<'e> {
    pub dev_eui: String,
    pub identity: &'e DeviceIdentity,
    pub at: DateTime<Utc>,
    pub rssi: Option<i32>,
    pub snr: Option<f64>,
}

/// SQLite: moves last_seen, rssi, snr and changed_seq of the listed devices whose stored row
/// the events' identity would leave as it is (heard before, not removed, no new name, ids,
/// tags or DevAddr), and returns them; the others still need [`upsert_heard_batch`]. SQLite
/// rewrites the entries of every index holding a column that a statement sets, or whose WHERE
/// reads one: the upsert sets the identity columns and `removed_at`, which all eleven partial
/// indexes of `devices` read, so each uplink rewrote twelve index entries; this statement sets
/// four columns, held by five indexes, and fires none of the triggers.
pub async fn refresh_heard_batch(conn: &mut Conn, heard: &[Heard<'_>]) -> Result<Vec<String>> {
    let super::Either::Sqlite(c) = super::Split::split(conn) else {
        return Ok(Vec::new());
    };
    if heard.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "WITH heard(h_eui, h_name, h_app_id, h_app_name, h_profile_id, h_profile_name, h_tags,
            h_addr, h_at, h_rssi, h_snr) AS (",
    );
    q.push_values(heard.iter(), |mut row, h| {
        let id = h.identity;
        row.push_bind(h.dev_eui.clone())
            .push_bind(id.name.clone().unwrap_or_default())
            .push_bind(id.application_id.clone())
            .push_bind(id.application_name.clone())
            .push_bind(id.device_profile_id.clone())
            .push_bind(id.device_profile_name.clone())
            .push_bind(tags_json(id).unwrap_or_else(|| "{}".into()))
            .push_bind(id.dev_addr.clone())
            .push_bind(Time::from(h.at))
            .push_bind(h.rssi.map(i64::from))
            .push_bind(h.snr);
    });
    // The SET list is the upsert's for a row whose identity stays: same CASEs, same sequence.
    q.push(
        ") UPDATE devices SET
            changed_seq = (SELECT COALESCE(MAX(id), 0) + 1 FROM uplinks),
            last_seen = CASE WHEN last_seen IS NULL OR last_seen < h_at THEN h_at ELSE last_seen END,
            rssi = CASE WHEN last_seen IS NULL OR last_seen <= h_at THEN h_rssi ELSE rssi END,
            snr = CASE WHEN last_seen IS NULL OR last_seen <= h_at THEN h_snr ELSE snr END
         FROM heard
         WHERE dev_eui = h_eui AND removed_at IS NULL AND first_seen IS NOT NULL
           AND (h_name = '' OR h_name = name)
           AND (h_app_id IS NULL OR h_app_id = application_id)
           AND (h_app_name IS NULL OR h_app_name = application_name)
           AND (h_profile_id IS NULL OR h_profile_id = device_profile_id)
           AND (h_profile_name IS NULL OR h_profile_name = device_profile_name)
           AND h_tags = tags_json
           AND (h_addr IS NULL OR h_addr = dev_addr)
         RETURNING dev_eui",
    );
    Ok(q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| r.get("dev_eui"))
        .collect())
}

/// The link quality of a device's newest uplink (the one that set its last_seen at `at`).
pub async fn set_link(
    conn: &mut Conn,
    dev_eui: &str,
    at: &str,
    rssi: Option<i32>,
    snr: Option<f64>,
) -> Result<()> {
    on!(&mut *conn, c => sqlx::query("UPDATE devices SET rssi = $1, snr = $2 WHERE dev_eui = $3 AND last_seen = $4")
        .bind(rssi.map(i64::from))
        .bind(snr)
        .bind(dev_eui)
        .bind(time(at))
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
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

/// Adds devices listed by the network server that lorafleet has not heard yet ("never seen"),
/// at `now` on the network's clock.
pub async fn merge_remote(db: &Db, devices: &[RemoteDevice], now: &str) -> Result<usize> {
    // The write lock up front: each insert also reads (the newest uplink id, the application's
    // name), and a deferred transaction that reads before it writes fails at once when the
    // ingest writer commits in between.
    let mut tx = super::begin_immediate(db).await?;
    let mut added = 0;
    for d in devices {
        let r = on!(&mut *tx, c => sqlx::query(
            "INSERT INTO devices (dev_eui, name, application_id, application_name, device_profile_id,
                device_profile_name, source, created_at, changed_seq)
             VALUES ($1, $2, $3,
                -- The network's name for the application, else the one its other devices sent.
                COALESCE($4, (SELECT o.application_name FROM devices o
                              WHERE o.application_id = $3 AND o.removed_at IS NULL
                                AND o.application_name IS NOT NULL LIMIT 1)),
                $5, $6, 'network', $7, (SELECT COALESCE(MAX(id), 0) + 1 FROM uplinks))
             ON CONFLICT(dev_eui) DO UPDATE SET
                changed_seq = excluded.changed_seq,
                name = CASE WHEN devices.name = '' THEN excluded.name ELSE devices.name END,
                application_id = COALESCE(devices.application_id, excluded.application_id),
                application_name = COALESCE(devices.application_name, excluded.application_name),
                device_profile_id = COALESCE(excluded.device_profile_id, devices.device_profile_id),
                device_profile_name = COALESCE(excluded.device_profile_name, devices.device_profile_name)",
        )
        .bind(d.dev_eui.to_string())
        .bind(&d.name)
        .bind(&d.application_id)
        .bind(d.application_name.as_deref())
        .bind(d.device_profile_id.as_deref())
        .bind(d.device_profile_name.as_deref())
        .bind(time(now))
        .execute(c).await.map(|r| r.rows_affected()))?;
        added += r as usize;
    }
    tx.commit().await?;
    Ok(added)
}

// The device list lives in `device_list` below (filters, sorts, keyset paging).

/// Devices on the list (not removed): the unfiltered list's `total` and the metrics gauge. Read
/// from `device_list_count`, which the devices' triggers keep (migration 20261209120100), where
/// a COUNT(*) read every listed device on each request.
pub async fn count_listed(db: &Db) -> Result<i64> {
    if !db.is_postgres() {
        return on!(db, c => sqlx::query_scalar("SELECT listed FROM device_list_count WHERE id = 1")
            .fetch_one(c).await);
    }
    let (listed, deltas): (i64, i64) = on!(db, c => sqlx::query_as(
        "SELECT COALESCE(SUM(delta), 0)::BIGINT, COUNT(*) FROM device_list_count",
    )
    .fetch_one(c).await)?;
    if deltas > LIST_COUNT_DELTAS {
        fold_list_count(db).await?;
    }
    Ok(listed)
}

/// How many of PostgreSQL's list-count deltas may pile up (one per device added, removed or
/// back) before [`count_listed`] folds them into one: few enough to sum in well under a
/// millisecond.
const LIST_COUNT_DELTAS: i64 = 256;

/// Replaces the deltas no other transaction holds by their sum, in one statement: readers see
/// the deltas or their sum, never both or neither. SKIP LOCKED: a concurrent fold's rows are
/// left to it instead of waited for.
async fn fold_list_count(db: &Db) -> Result<()> {
    on!(db, c => sqlx::query(
        "WITH folded AS (
            DELETE FROM device_list_count WHERE id IN (
                SELECT id FROM device_list_count FOR UPDATE SKIP LOCKED)
            RETURNING delta)
         INSERT INTO device_list_count (delta) SELECT SUM(delta) FROM folded HAVING COUNT(*) > 0",
    )
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
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
        firmware_management: r
            .get::<Option<String>>("firmware_management")
            .and_then(|t| serde_json::from_str(&t).ok()),
        // Filled by the API from the network server and the campaigns (devices::packages).
        packages: None,
        device_limits: None,
        dev_eui: eui,
    })
}

/// Hides a device from the list at `now` (the network's clock, which its uplinks are compared
/// with), with a log line saying by whom; false when it was not listed.
pub async fn remove(db: &Db, dev_eui: DevEui, by: &str, now: &str) -> Result<bool> {
    let eui = dev_eui.to_string();
    let mut tx = db.begin().await?;
    let n = on!(&mut *tx, c => sqlx::query("UPDATE devices SET removed_at = $1, reappeared_at = NULL WHERE dev_eui = $2 AND removed_at IS NULL")
        .bind(time(now))
        .bind(&eui)
        .execute(c).await.map(|r| r.rows_affected()))?;
    if n > 0 {
        device_events::add(
            &mut tx,
            &eui,
            now,
            "removed",
            &format!("removed from the device list by {by}"),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(n > 0)
}

/// The newest campaign that lists the device (highest id), if any: where the device page reads
/// the device limits a campaign held for it.
pub async fn latest_campaign(db: &Db, dev_eui: &str) -> Result<Option<i64>> {
    on!(db, c => sqlx::query_scalar(
        "SELECT MAX(campaign_id) FROM campaign_devices WHERE dev_eui = $1",
    )
    .bind(dev_eui)
    .fetch_one(c).await)
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
    // A campaign step reads every device of the campaign: one query per few hundred devices
    // instead of one per device (10,000 round trips a step at 10,000 devices). Well inside
    // SQLite's 32,766 and PostgreSQL's 65,535 bind parameters.
    const CHUNK: usize = 500;
    let mut out = HashMap::new();
    for chunk in euis.chunks(CHUNK) {
        let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT dev_eui, application_id, device_profile_id, slot_size FROM devices WHERE dev_eui IN ({})",
            params.join(", ")
        );
        let rows = on!(db, c => {
            let mut q = sqlx::query(&sql);
            for eui in chunk {
                q = q.bind(eui);
            }
            q.fetch_all(c).await?
                .into_iter()
                .map(|r| KnownDevice {
                    dev_eui: r.get("dev_eui"),
                    application_id: r.get("application_id"),
                    device_profile_id: r.get("device_profile_id"),
                    slot_size: r.get("slot_size"),
                })
                .collect::<Vec<_>>()
        });
        for known in rows {
            out.insert(known.dev_eui.clone(), known);
        }
    }
    Ok(out)
}

// --- The device list: filters, sort orders and keyset paging.
//
// Each sort order is an index over the same expression followed by dev_eui (migration
// 20261204200700_device_list_scale), so a page at any depth is one index range from the cursor.
// The name search uses the FTS5 trigram table `devices_search`, PostgreSQL a pg_trgm GIN index on
// the stored `search_text` (migration 20261207156000), when it selects few devices; one that
// selects many is tested row by row along the sort order (see `SearchPlan`).

/// What the device list can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    LastSeen,
    Name,
    DevEui,
    RunningVersion,
    Rssi,
    Snr,
    Battery,
}

impl SortKey {
    pub const ALL: [SortKey; 7] = [
        SortKey::LastSeen,
        SortKey::Name,
        SortKey::DevEui,
        SortKey::RunningVersion,
        SortKey::Rssi,
        SortKey::Snr,
        SortKey::Battery,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::LastSeen => "last_seen",
            SortKey::Name => "name",
            SortKey::DevEui => "dev_eui",
            SortKey::RunningVersion => "running_version",
            SortKey::Rssi => "rssi",
            SortKey::Snr => "snr",
            SortKey::Battery => "battery",
        }
    }

    pub fn parse(s: &str) -> Option<SortKey> {
        SortKey::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Newest activity first; everything else smallest first.
    pub fn default_desc(self) -> bool {
        self == SortKey::LastSeen
    }

    /// The sort expression, the one its index is built on. A missing value becomes one below
    /// every real value, so that it sorts last when descending and keyset comparisons are total.
    /// PostgreSQL's: times as the same text SQLite stores (`time_key`, stored as `last_seen_key`
    /// by migration 20261209120000: computed per row, the function cost more than the rest of a
    /// statement), text in byte order (`COLLATE "C"`), as [`SortValue::cmp`] compares.
    fn column(self, pg: bool) -> &'static str {
        match self {
            SortKey::LastSeen if pg => "d.last_seen_key",
            SortKey::LastSeen => "COALESCE(d.last_seen, '')",
            SortKey::Name if pg => "(d.name COLLATE \"C\")",
            SortKey::Name => "d.name",
            SortKey::DevEui => eui_key(pg),
            SortKey::RunningVersion => "COALESCE(d.running_version, -1)",
            SortKey::Rssi => "COALESCE(d.rssi, -1000000)",
            SortKey::Snr => "COALESCE(d.snr, -1000000.0)",
            SortKey::Battery => "COALESCE(d.battery, -1.0)",
        }
    }

    /// Pushes the key as it was when a walk started (the newest uplink id was `since`), for a
    /// device changed after: its last uplink up to `since` tells its last_seen, RSSI and SNR of
    /// that moment. The other keys rarely change and are read as they are now.
    fn push_as_of(self, b: &mut Sql, since: i64) {
        let last_up = "FROM uplinks u WHERE u.dev_eui = d.dev_eui AND u.id <= ";
        let newest = " ORDER BY u.id DESC LIMIT 1)";
        match self {
            SortKey::LastSeen if b.pg => {
                // Collated as the stored key, which the cursor's key is compared with.
                b.push(format!("(time_key((SELECT MAX(u.received_at) {last_up}"));
                b.bind(since).push(")) COLLATE \"C\")");
            }
            SortKey::LastSeen => {
                b.push(format!("COALESCE((SELECT MAX(u.received_at) {last_up}"));
                b.bind(since).push("), '')");
            }
            SortKey::Rssi => {
                b.push(format!("COALESCE((SELECT u.rssi {last_up}"));
                b.bind(since).push(newest).push(", -1000000)");
            }
            SortKey::Snr => {
                b.push(format!("COALESCE((SELECT u.snr {last_up}"));
                b.bind(since).push(newest).push(", -1000000.0)");
            }
            _ => {
                let pg = b.pg;
                b.push(self.column(pg));
            }
        }
    }

    /// The row-by-row search test that suits this order's index walk: the name order's index
    /// stores `search_key` (migration 20261208130000), the others would compute it from each
    /// row, which costs more than the four LIKEs.
    fn scan_plan(self, plan: SearchPlan) -> SearchPlan {
        if plan == SearchPlan::Scan && self == SortKey::Name {
            SearchPlan::ScanKey
        } else {
            plan
        }
    }

    fn value_from_row(self, r: &impl Cols) -> SortValue {
        match self {
            SortKey::LastSeen | SortKey::Name | SortKey::DevEui => {
                SortValue::Text(r.get("sort_key"))
            }
            SortKey::RunningVersion | SortKey::Rssi => SortValue::Int(r.get("sort_key")),
            SortKey::Snr | SortKey::Battery => SortValue::Real(r.get("sort_key")),
        }
    }
}

/// The DevEUI as the list's tie-break: byte order on both backends.
fn eui_key(pg: bool) -> &'static str {
    if pg {
        "(d.dev_eui COLLATE \"C\")"
    } else {
        "d.dev_eui"
    }
}

/// A statement of the device list assembled from parts, with its values bound as `$1`, `$2`,
/// ... (both backends read them), and which backend's text to write where they differ.
struct Sql {
    text: String,
    binds: Vec<SortValue>,
    pg: bool,
}

impl Sql {
    fn new(db: &Db, text: impl AsRef<str>) -> Sql {
        Sql {
            text: text.as_ref().to_string(),
            binds: Vec::new(),
            pg: db.is_postgres(),
        }
    }

    fn push(&mut self, text: impl AsRef<str>) -> &mut Sql {
        self.text.push_str(text.as_ref());
        self
    }

    fn bind(&mut self, value: impl Into<SortValue>) -> &mut Sql {
        self.binds.push(value.into());
        let n = self.binds.len();
        self.text.push_str(&format!("${n}"));
        self
    }
}

impl From<i64> for SortValue {
    fn from(v: i64) -> SortValue {
        SortValue::Int(v)
    }
}
impl From<String> for SortValue {
    fn from(v: String) -> SortValue {
        SortValue::Text(v)
    }
}

/// Binds a [`Sql`]'s values to a query of either backend.
macro_rules! bind_all {
    ($query:expr, $sql:expr) => {{
        let mut query = $query;
        for v in &$sql.binds {
            query = match v {
                SortValue::Int(v) => query.bind(*v),
                SortValue::Real(v) => query.bind(*v),
                SortValue::Text(v) => query.bind(v.as_str()),
            };
        }
        query
    }};
}

/// A row's position in a sort order (its sort expression's value).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum SortValue {
    Int(i64),
    Real(f64),
    Text(String),
}

impl SortValue {
    /// The order SQLite gives the same values (text compares as bytes, as Rust's does).
    fn cmp(&self, other: &SortValue) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (SortValue::Int(a), SortValue::Int(b)) => a.cmp(b),
            (SortValue::Real(a), SortValue::Real(b)) => a.total_cmp(b),
            (SortValue::Int(a), SortValue::Real(b)) => (*a as f64).total_cmp(b),
            (SortValue::Real(a), SortValue::Int(b)) => a.total_cmp(&(*b as f64)),
            (SortValue::Text(a), SortValue::Text(b)) => a.cmp(b),
            (SortValue::Text(_), _) => Ordering::Greater,
            (_, SortValue::Text(_)) => Ordering::Less,
        }
    }
}

/// Where the next page starts: the last row's position, and the walk's start (the newest uplink
/// id when the first page was read). Devices changed since keep the position they had at the
/// start for the rest of the walk, so a walk returns every device exactly once while devices
/// keep sending (in commit order, whatever the times the events carry).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    #[serde(rename = "s")]
    pub sort: String,
    #[serde(rename = "d")]
    pub desc: bool,
    /// The newest uplink id when the walk started.
    #[serde(rename = "u")]
    pub since: i64,
    #[serde(rename = "k")]
    pub key: SortValue,
    #[serde(rename = "e")]
    pub dev_eui: String,
}

impl Cursor {
    /// URL-safe text for `cursor=`.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        use base64::Engine;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// The filter parameters of `GET /api/devices`; a campaign's `device_filter` takes the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceFilterParams {
    /// Part of the EUI, name, application or DevAddr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// Running version: raw (decimal or 0x hex) or as shown (`1.3.0`, `2025-01-15T00:00:00Z`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Application name or id, case-insensitive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// A `model` tag, the device-profile name or the reported device description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `key:value`: the device's tag `key` is `value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// RFC 3339: last heard before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_before: Option<String>,
    /// RFC 3339: last heard after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_after: Option<String>,
    /// `online`, `offline` or `never_seen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `status=`: online = heard since `since`, offline = not heard since then, never seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusFilter {
    Online { since: String },
    Offline { since: String },
    NeverSeen,
}

/// The list's filters, already checked (times in [`fmt_time`]'s format).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFilter {
    pub search: Option<String>,
    /// Raw running versions, any of which matches; None for no version filter.
    pub versions: Option<Vec<i64>>,
    /// Application name or id, case-insensitive.
    pub application: Option<String>,
    /// The devices' `model` column, case-insensitive.
    pub model: Option<String>,
    /// `key:value` pairs, all of which must match.
    pub tags: Vec<(String, String)>,
    pub seen_before: Option<String>,
    pub seen_after: Option<String>,
    pub status: Option<StatusFilter>,
}

/// Query of the device list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filter: DeviceFilter,
    pub sort: SortKey,
    pub desc: bool,
    pub limit: i64,
    /// Rows skipped (paging by offset; ignored with a cursor).
    pub offset: i64,
    pub cursor: Option<Cursor>,
    /// A device heard since then is online (each row's `status`).
    pub online_since: String,
    pub offline_after_s: u64,
    /// A name search's matches are counted up to this many (`devices.search_count_cap`).
    pub search_count_cap: i64,
}

/// How a list statement applies the name search. Both give the same rows; they differ in what
/// the database reads to find them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchPlan {
    /// Through the trigram index (SQLite's FTS5 table, PostgreSQL's GIN index): reads every
    /// match, so it suits a search that selects few devices, and counting.
    Index,
    /// Tested on each row the sort order's index walk reaches, stopping after a page: reads
    /// about `limit / share of matches` rows, so it suits a search that many devices match.
    Scan,
    /// [`SearchPlan::Scan`] along an index that stores SQLite's `search_key` (the name order's,
    /// migration 20261208130000): one `instr` on the index entry instead of four LIKEs on the
    /// table row, so the rows the walk skips are never read from the table.
    ScanKey,
    /// The FTS5 table already drives the statement (SQLite's capped count): only the recheck.
    Joined,
    /// Not here: the statement applies the search around this part.
    Omit,
}

/// The search as an FTS5 phrase (a substring of 3 or more characters for the trigram index).
fn fts_phrase(search: &str) -> Option<String> {
    (search.chars().count() >= 3).then(|| format!("\"{}\"", search.replace('"', "\"\"")))
}

/// The search as a LIKE pattern with its wildcards escaped (searches too short for trigrams).
fn like_pattern(search: &str) -> String {
    format!(
        "%{}%",
        search
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

/// Appends the search condition as `plan` says. SQLite: the FTS5 trigram table for 3
/// characters or more, then (for an ASCII search) a LIKE recheck, ASCII case-insensitive, which
/// is also the scan's test, so that both plans select exactly the same rows (FTS5 also folds
/// non-ASCII case: a non-ASCII search always goes through it). PostgreSQL: [`push_search_pg`].
fn push_search(b: &mut Sql, search: &str, plan: SearchPlan) {
    if plan == SearchPlan::Omit {
        return;
    }
    if b.pg {
        push_search_pg(b, search, plan);
        return;
    }
    let ascii = search.is_ascii();
    if plan == SearchPlan::ScanKey && ascii && !search.contains('\u{1}') {
        // lower() folds ASCII only, as LIKE does: the same rows as the LIKEs below.
        b.push(" AND instr(d.search_key, lower(");
        b.bind(search.to_string()).push(")) > 0");
        return;
    }
    if plan == SearchPlan::Index || !ascii {
        if let Some(phrase) = fts_phrase(search) {
            b.push(" AND d.rowid IN (SELECT rowid FROM devices_search WHERE devices_search MATCH ");
            b.bind(phrase).push(")");
        }
    }
    if ascii || fts_phrase(search).is_none() {
        push_like_columns(b, search, "LIKE");
    }
}

/// `column LIKE '%search%'` (ILIKE on PostgreSQL) over each searched column.
fn push_like_columns(b: &mut Sql, search: &str, like: &str) {
    let p = like_pattern(search);
    b.push(format!(" AND (d.dev_eui {like} "));
    b.bind(p.clone())
        .push(format!(" ESCAPE '\\' OR d.name {like} "));
    b.bind(p.clone())
        .push(format!(" ESCAPE '\\' OR d.application_name {like} "));
    b.bind(p.clone())
        .push(format!(" ESCAPE '\\' OR d.dev_addr {like} "));
    b.bind(p).push(" ESCAPE '\\')");
}

/// The searched columns of a row as one lower-case text under a GIN index (PostgreSQL's
/// migration 20261207156000, its columns joined by U+0001).
const PG_SEARCH_TEXT: &str = "d.search_text";

/// PostgreSQL's search: a substring of the lower-cased searched columns (what ILIKE compares in a
/// UTF-8 database). `LIKE` is what the GIN index serves; `strpos` the same test that no index
/// serves, so the planner walks the sort order. A search holding the separator U+0001 could
/// match across two columns: it is compared column by column instead.
fn push_search_pg(b: &mut Sql, search: &str, plan: SearchPlan) {
    if search.contains('\u{1}') {
        push_like_columns(b, search, "ILIKE");
        return;
    }
    match plan {
        SearchPlan::Omit => {}
        SearchPlan::Index | SearchPlan::Joined => {
            b.push(format!(" AND {PG_SEARCH_TEXT} LIKE lower("));
            b.bind(like_pattern(search)).push(") ESCAPE '\\'");
        }
        SearchPlan::Scan | SearchPlan::ScanKey => {
            b.push(format!(" AND strpos({PG_SEARCH_TEXT}, lower("));
            b.bind(search.to_string()).push(")) > 0");
        }
    }
}

/// The search of a filter, if it has one.
fn search_of(f: &DeviceFilter) -> Option<&str> {
    f.search.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Appends the filter's conditions (after a WHERE that selects listed devices).
fn push_filter(b: &mut Sql, f: &DeviceFilter, plan: SearchPlan) {
    if let Some(search) = search_of(f) {
        push_search(b, search, plan);
    }
    if let Some(versions) = &f.versions {
        if versions.is_empty() {
            // No version matches: a value no version has (a constant false would leave the
            // INDEXED BY of the moved rows without a plan).
            b.push(" AND d.running_version = -1");
        } else {
            b.push(" AND d.running_version IN (");
            for (i, v) in versions.iter().enumerate() {
                if i > 0 {
                    b.push(", ");
                }
                b.bind(*v);
            }
            b.push(")");
        }
    }
    if let Some(app) = &f.application {
        if b.pg {
            b.push(" AND (lower(d.application_name) = lower(");
            b.bind(app.clone())
                .push(") OR lower(d.application_id) = lower(");
            b.bind(app.clone()).push("))");
        } else {
            b.push(" AND (d.application_name = ");
            b.bind(app.clone())
                .push(" COLLATE NOCASE OR d.application_id = ");
            b.bind(app.clone()).push(" COLLATE NOCASE)");
        }
    }
    if let Some(model) = &f.model {
        // SQLite's column is COLLATE NOCASE; PostgreSQL's index is on lower(model).
        if b.pg {
            b.push(" AND lower(d.model) = lower(")
                .bind(model.clone())
                .push(")");
        } else {
            b.push(" AND d.model = ").bind(model.clone());
        }
    }
    for (key, value) in &f.tags {
        if b.pg {
            b.push(" AND (d.tags_json::jsonb ->> ");
            b.bind(key.clone()).push(") = ");
        } else {
            b.push(" AND json_extract(d.tags_json, ");
            b.bind(format!("$.\"{key}\"")).push(") = ");
        }
        b.bind(value.clone());
    }
    push_seen(b, f);
}

/// Times compare through the last_seen index's expression, '' for never seen, so that each
/// of these is a range of it.
fn push_seen(b: &mut Sql, f: &DeviceFilter) {
    let seen = SortKey::LastSeen.column(b.pg);
    if let Some(t) = &f.seen_before {
        b.push(format!(" AND {seen} > '' AND {seen} < "))
            .bind(t.clone());
    }
    if let Some(t) = &f.seen_after {
        b.push(format!(" AND {seen} > ")).bind(t.clone());
    }
    match &f.status {
        Some(StatusFilter::Online { since }) => {
            b.push(format!(" AND {seen} >= ")).bind(since.clone());
        }
        Some(StatusFilter::Offline { since }) => {
            b.push(format!(" AND {seen} > '' AND {seen} < "))
                .bind(since.clone());
        }
        Some(StatusFilter::NeverSeen) => {
            b.push(format!(" AND {seen} = ''"));
        }
        None => {}
    }
}

const LIST_COLUMNS: &str = "d.dev_eui, d.name, d.application_name, d.application_id, d.last_seen,
    d.running_version, d.versioning_type, d.reappeared_at, d.model, d.rssi, d.snr, d.battery";

/// Pushes "after the cursor" (before it when descending): `key >= k AND (key > k OR dev_eui >
/// e)`, for the few moved rows (the settled ones take two index seeks instead).
fn push_after(b: &mut Sql, key: &str, desc: bool, c: &Cursor) {
    let (cmp, strict) = if desc { ("<=", "<") } else { (">=", ">") };
    let eui = eui_key(b.pg);
    b.push(format!(" AND {key} {cmp} "));
    b.bind(c.key.clone());
    b.push(format!(" AND ({key} {strict} "));
    b.bind(c.key.clone());
    b.push(format!(" OR {eui} {strict} "))
        .bind(c.dev_eui.clone())
        .push(")");
}

/// A row of the list read on either backend: its position and what the list shows.
struct ListRow {
    key: SortValue,
    dev_eui: String,
    summary: DeviceSummary,
}

/// Runs a list statement and reads its rows.
async fn fetch_rows(db: &Db, sql: &Sql, q: &ListQuery) -> Result<Vec<ListRow>> {
    on!(db, c => Ok(bind_all!(sqlx::query(&sql.text), sql)
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| ListRow {
            key: q.sort.value_from_row(r),
            dev_eui: r.get("dev_eui"),
            summary: summary_from_row(r, q),
        })
        .collect()))
}

/// Devices in the sort's index order from the cursor (or offset) on; with `since`, only those
/// not changed since the walk started.
async fn rows_settled(
    db: &Db,
    q: &ListQuery,
    since: Option<i64>,
    plan: SearchPlan,
) -> Result<Vec<ListRow>> {
    let Some(c) = &q.cursor else {
        return settled_part(db, q, since, None, plan).await;
    };
    // Two index seeks: the rest of the cursor's key (equal key, later DevEUIs), then the keys
    // after it. One condition for both would scan every row of a key shared by many devices
    // (an RSSI value, a version) from its first.
    let mut rows = settled_part(db, q, since, Some((c, true)), plan).await?;
    if (rows.len() as i64) < q.limit {
        let rest = settled_part(db, q, since, Some((c, false)), plan).await?;
        rows.extend(rest);
        rows.truncate(q.limit.max(0) as usize);
    }
    Ok(rows)
}

/// One index range of [`rows_settled`]: from the start (or offset), the cursor's key after its
/// DevEUI (`tie`), or the keys after the cursor's.
async fn settled_part(
    db: &Db,
    q: &ListQuery,
    since: Option<i64>,
    from: Option<(&Cursor, bool)>,
    plan: SearchPlan,
) -> Result<Vec<ListRow>> {
    let pg = db.is_postgres();
    let key = q.sort.column(pg);
    let eui = eui_key(pg);
    let mut b = Sql::new(
        db,
        format!(
            "SELECT {LIST_COLUMNS}, {key} AS sort_key FROM devices d WHERE d.removed_at IS NULL"
        ),
    );
    push_filter(&mut b, &q.filter, q.sort.scan_plan(plan));
    if let Some(since) = since {
        // Unary plus: never SQLite's changed_seq index here (it selects nearly every row).
        let plus = if pg { "" } else { "+" };
        b.push(format!(" AND {plus}d.changed_seq <= ")).bind(since);
    }
    let after = if q.desc { "<" } else { ">" };
    match from {
        Some((c, true)) => {
            b.push(format!(" AND {key} = "));
            b.bind(c.key.clone());
            b.push(format!(" AND {eui} {after} "))
                .bind(c.dev_eui.clone());
        }
        Some((c, false)) => {
            b.push(format!(" AND {key} {after} "));
            b.bind(c.key.clone());
        }
        None => {}
    }
    let seek = from.is_none() && q.offset > 0 && pg;
    if seek {
        push_offset_seek(&mut b, q, plan);
    }
    let dir = if q.desc { "DESC" } else { "ASC" };
    b.push(format!(" ORDER BY {key} {dir}, {eui} {dir} LIMIT "));
    b.bind(q.limit);
    if from.is_none() && !seek {
        b.push(" OFFSET ").bind(q.offset);
    }
    fetch_rows(db, &b, q).await
}

/// PostgreSQL's deep page by offset: "from the row at the offset on", that row found by a
/// subquery that reads only the sort index's key and DevEUI (an index-only scan where the pages
/// are all-visible). Read by `OFFSET`, every skipped row was fetched from the table and computed
/// as a list row: 280 ms at 50,000 rows. One statement, so the same snapshot and the same rows as
/// the offset gave; past the end the subquery has no row and the page is empty. SQLite keeps its
/// `OFFSET`: it does not range-scan an index on an expression by a row value.
fn push_offset_seek(b: &mut Sql, q: &ListQuery, plan: SearchPlan) {
    let (key, eui) = (q.sort.column(true), eui_key(true));
    let (cmp, dir) = if q.desc {
        ("<=", "DESC")
    } else {
        (">=", "ASC")
    };
    b.push(format!(
        " AND ({key}, {eui}) {cmp} (SELECT {key}, {eui} FROM devices d WHERE d.removed_at IS NULL"
    ));
    push_filter(b, &q.filter, q.sort.scan_plan(plan));
    b.push(format!(
        " ORDER BY {key} {dir}, {eui} {dir} LIMIT 1 OFFSET "
    ));
    b.bind(q.offset).push(")");
}

/// Devices changed since the walk started (few: those that sent during it), at the position
/// they had then.
async fn rows_moved(db: &Db, q: &ListQuery, since: i64) -> Result<Vec<ListRow>> {
    let mut b = Sql::new(db, format!("SELECT * FROM (SELECT {LIST_COLUMNS}, "));
    q.sort.push_as_of(&mut b, since);
    // Few rows changed since the walk began: start from them, whatever the filter's indexes
    // would suggest to SQLite's planner (it cannot know how few they are).
    b.push(" AS sort_key FROM devices d");
    if !b.pg {
        b.push(" INDEXED BY devices_changed");
    }
    b.push(" WHERE d.removed_at IS NULL");
    // Each changed row is tested on its own: through the trigram index, a broad search would
    // first collect all its matches.
    push_filter(&mut b, &q.filter, SearchPlan::Scan);
    b.push(" AND d.changed_seq > ").bind(since);
    b.push(") d WHERE TRUE");
    if let Some(c) = &q.cursor {
        push_after(&mut b, "d.sort_key", q.desc, c);
    }
    let dir = if q.desc { "DESC" } else { "ASC" };
    let eui = eui_key(b.pg);
    b.push(format!(" ORDER BY d.sort_key {dir}, {eui} {dir} LIMIT "));
    b.bind(q.limit);
    fetch_rows(db, &b, q).await
}

/// The newest uplink id: where a walk starts.
async fn newest_uplink(db: &Db) -> Result<i64> {
    on!(db, c => sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM uplinks")
        .fetch_one(c)
        .await)
}

/// How many listed devices the filter selects.
pub async fn count(db: &Db, filter: &DeviceFilter) -> Result<i64> {
    if *filter == DeviceFilter::default() {
        return count_listed(db).await;
    }
    if let Some(since) = online_only(filter) {
        return count_online(db, since).await;
    }
    if let Some(model) = model_only(filter) {
        return count_model(db, model).await;
    }
    let mut b = Sql::new(
        db,
        "SELECT COUNT(*) FROM devices d WHERE d.removed_at IS NULL",
    );
    push_filter(&mut b, filter, SearchPlan::Index);
    on!(db, c => bind_all!(sqlx::query_scalar(&b.text), b).fetch_one(c).await)
}

/// The time of `status=online` when it is the filter's only condition.
fn online_only(filter: &DeviceFilter) -> Option<&str> {
    match &filter.status {
        Some(StatusFilter::Online { since }) => {
            let rest = DeviceFilter {
                status: None,
                ..filter.clone()
            };
            (rest == DeviceFilter::default()).then_some(since.as_str())
        }
        _ => None,
    }
}

/// The model of `model=` when it is the filter's only condition.
fn model_only(filter: &DeviceFilter) -> Option<&str> {
    let rest = DeviceFilter {
        model: None,
        ..filter.clone()
    };
    filter
        .model
        .as_deref()
        .filter(|_| rest == DeviceFilter::default())
}

/// The listed devices of one model, from `device_model_count` (migration 20261210120000, kept
/// by the devices' triggers) where a COUNT(*) read every device of the model: a quarter of a
/// 100,000-device fleet of four models on each request. PostgreSQL's per-model deltas are
/// folded as [`count_listed`] folds the list's.
async fn count_model(db: &Db, model: &str) -> Result<i64> {
    if !db.is_postgres() {
        return on!(db, c => sqlx::query_scalar(
            "SELECT COALESCE((SELECT listed FROM device_model_count WHERE model = $1), 0)",
        )
        .bind(model)
        .fetch_one(c).await);
    }
    let (listed, deltas): (i64, i64) = on!(db, c => sqlx::query_as(
        "SELECT COALESCE(SUM(delta), 0)::BIGINT, COUNT(*) FROM device_model_count
         WHERE model_key = lower($1)",
    )
    .bind(model)
    .fetch_one(c).await)?;
    if deltas > LIST_COUNT_DELTAS {
        fold_model_count(db, model).await?;
    }
    Ok(listed)
}

/// [`fold_list_count`] for one model's deltas.
async fn fold_model_count(db: &Db, model: &str) -> Result<()> {
    on!(db, c => sqlx::query(
        "WITH folded AS (
            DELETE FROM device_model_count WHERE id IN (
                SELECT id FROM device_model_count WHERE model_key = lower($1)
                FOR UPDATE SKIP LOCKED)
            RETURNING delta)
         INSERT INTO device_model_count (model_key, delta)
         SELECT lower($1), SUM(delta) FROM folded HAVING COUNT(*) > 0",
    )
    .bind(model)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// `status=online` counted as the listed devices less those not heard since `since`: the
/// offline and never-seen devices are one range at the low end of the last-seen index, few in a
/// fleet that works, where the online ones were every row of it (100,000 index entries or
/// rows read on each request). A fleet mostly offline makes that range the whole index, as
/// counting the online ones did in a fleet that works.
async fn count_online(db: &Db, since: &str) -> Result<i64> {
    let listed = count_listed(db).await?;
    let seen = SortKey::LastSeen.column(db.is_postgres());
    let mut b = Sql::new(
        db,
        format!("SELECT COUNT(*) FROM devices d WHERE d.removed_at IS NULL AND {seen} < "),
    );
    b.bind(since.to_string());
    let quiet: i64 = on!(db, c => bind_all!(sqlx::query_scalar(&b.text), b).fetch_one(c).await)?;
    Ok(listed - quiet)
}

/// A search's `total` (at most the cap), whether more match, and the plan that finds its pages.
/// Proving "more than the cap" is cheapest where the matches are dense, at the top of the sort
/// order (the rows the first page reads anyway): only then the trigram index counts them.
async fn search_total(db: &Db, q: &ListQuery, search: &str) -> Result<(i64, bool, SearchPlan)> {
    let cap = q.search_count_cap.max(1);
    if window_hits(db, q, search, cap).await? > cap {
        return Ok((cap, true, SearchPlan::Scan));
    }
    let n = count_capped(db, &q.filter, search, cap).await?;
    Ok(if n > cap {
        (cap, true, SearchPlan::Scan)
    } else {
        (n, false, SearchPlan::Index)
    })
}

/// Matches among the first `2 × cap` rows of the sort order (with the filter's other
/// conditions), counted up to `cap + 1`: more than the cap there proves it for the whole list at
/// the price of reading at most twice the cap, where the trigram index would read every posting
/// of the search's commonest trigrams (all 100,000 devices share `70b`).
async fn window_hits(db: &Db, q: &ListQuery, search: &str, cap: i64) -> Result<i64> {
    let pg = db.is_postgres();
    if !pg && !search.is_ascii() {
        // Only the FTS5 table folds non-ASCII case: no row-by-row test to run here.
        return Ok(0);
    }
    let (key, eui) = (q.sort.column(pg), eui_key(pg));
    let dir = if q.desc { "DESC" } else { "ASC" };
    let text = if pg {
        ", d.search_text"
    } else {
        ", d.search_key"
    };
    let mut b = Sql::new(
        db,
        format!(
            "SELECT COUNT(*) FROM (SELECT 1 AS one FROM (
                SELECT d.dev_eui, d.name, d.application_name, d.dev_addr{text}
                FROM devices d WHERE d.removed_at IS NULL"
        ),
    );
    push_filter(&mut b, &q.filter, SearchPlan::Omit);
    b.push(format!(" ORDER BY {key} {dir}, {eui} {dir} LIMIT "));
    b.bind(cap.saturating_mul(2)).push(") d WHERE TRUE");
    push_search(&mut b, search, q.sort.scan_plan(SearchPlan::Scan));
    b.push(" LIMIT ").bind(cap.saturating_add(1)).push(") hits");
    on!(db, c => bind_all!(sqlx::query_scalar(&b.text), b).fetch_one(c).await)
}

/// How many listed devices the filter (with a search) selects, counting no further than
/// `cap + 1`: the trigram index yields matches one by one, so this reads about `cap` of them
/// however many there are.
async fn count_capped(db: &Db, filter: &DeviceFilter, search: &str, cap: i64) -> Result<i64> {
    let fts = (!db.is_postgres() && search.is_ascii())
        .then(|| fts_phrase(search))
        .flatten();
    let mut b = Sql::new(db, "SELECT COUNT(*) FROM (SELECT 1 AS one ");
    let plan = match fts {
        // A join, not `rowid IN (...)`: SQLite would first collect every match of the IN.
        Some(phrase) => {
            b.push("FROM devices_search s JOIN devices d ON d.rowid = s.rowid WHERE s.devices_search MATCH ");
            b.bind(phrase).push(" AND d.removed_at IS NULL");
            SearchPlan::Joined
        }
        None => {
            b.push("FROM devices d WHERE d.removed_at IS NULL");
            SearchPlan::Index
        }
    };
    push_filter(&mut b, filter, plan);
    b.push(" LIMIT ").bind(cap.saturating_add(1));
    b.push(") capped");
    on!(db, c => bind_all!(sqlx::query_scalar(&b.text), b).fetch_one(c).await)
}

/// Every listed device the filter selects, as DevEUIs (a campaign's `device_filter`).
pub async fn matching(db: &Db, filter: &DeviceFilter) -> Result<Vec<String>> {
    let mut b = Sql::new(
        db,
        "SELECT d.dev_eui FROM devices d WHERE d.removed_at IS NULL",
    );
    push_filter(&mut b, filter, SearchPlan::Index);
    b.push(format!(" ORDER BY {}", eui_key(b.pg)));
    on!(db, c => bind_all!(sqlx::query_scalar(&b.text), b).fetch_all(c).await)
}

/// The running versions of listed devices with their versioning types, for matching a version
/// written the way the console shows it.
pub async fn running_versions(db: &Db) -> Result<Vec<(i64, Option<i64>)>> {
    on!(db, c => Ok(sqlx::query(
        "SELECT DISTINCT running_version, versioning_type FROM devices
         WHERE removed_at IS NULL AND running_version IS NOT NULL",
    )
    .fetch_all(c)
    .await?
    .iter()
    .map(|r| (r.get("running_version"), r.get("versioning_type")))
    .collect()))
}

fn summary_from_row(r: &impl Cols, q: &ListQuery) -> DeviceSummary {
    let last_seen: Option<String> = r.get("last_seen");
    let running: Option<i64> = r.get("running_version");
    let application: Option<String> = r
        .get::<Option<String>>("application_name")
        .or(r.get("application_id"));
    let status = match &last_seen {
        None => "never_seen",
        Some(t) if *t >= q.online_since => "online",
        Some(_) => "offline",
    };
    DeviceSummary {
        dev_eui: r.get("dev_eui"),
        name: r.get("name"),
        application,
        model: r.get("model"),
        never_seen: last_seen.is_none(),
        status: status.to_string(),
        last_seen,
        running_version: running.map(|v| version_dto(v, r.get("versioning_type"))),
        rssi: r.get("rssi"),
        snr: r.get("snr"),
        battery: r.get("battery"),
        reappeared_at: r.get("reappeared_at"),
    }
}

fn by_position(a: &ListRow, b: &ListRow) -> std::cmp::Ordering {
    a.key.cmp(&b.key).then_with(|| a.dev_eui.cmp(&b.dev_eui))
}

/// One page of a walk: the settled rows and the moved ones in the walk's order. The two are read
/// by two statements, so a device that sent between them is in both (unchanged when the first
/// read it, changed when the second did): it is listed once, where the walk placed it.
fn merge_walk(settled: Vec<ListRow>, moved: Vec<ListRow>, desc: bool, limit: i64) -> Vec<ListRow> {
    let moved_euis: std::collections::HashSet<&str> =
        moved.iter().map(|r| r.dev_eui.as_str()).collect();
    let mut rows: Vec<ListRow> = settled
        .into_iter()
        .filter(|r| !moved_euis.contains(r.dev_eui.as_str()))
        .collect();
    rows.extend(moved);
    rows.sort_by(|a, b| {
        let o = by_position(a, b);
        if desc {
            o.reverse()
        } else {
            o
        }
    });
    rows.truncate(limit.max(0) as usize);
    rows
}

/// One page of the list, with the cursor of the next when there may be one.
pub async fn list(db: &Db, q: &ListQuery) -> Result<DeviceList> {
    // A search's count also chooses its plan: up to the cap, the trigram index's matches are few
    // enough to sort; beyond, a page is found sooner by walking the sort order.
    let (total, total_is_lower_bound, plan) = match search_of(&q.filter) {
        None => (count(db, &q.filter).await?, false, SearchPlan::Index),
        Some(search) => search_total(db, q, search).await?,
    };
    // A deep page by offset is read as the index has it (keyset paging is what stays stable).
    let walk = q.cursor.is_some() || q.offset == 0;
    let since = match &q.cursor {
        Some(c) => c.since,
        None => newest_uplink(db).await?,
    };
    let mut rows = rows_settled(db, q, walk.then_some(since), plan).await?;
    if walk {
        let moved = rows_moved(db, q, since).await?;
        rows = merge_walk(rows, moved, q.desc, q.limit);
    }
    let next_cursor = match rows.last() {
        Some(r) if rows.len() as i64 == q.limit => Some(
            Cursor {
                sort: q.sort.as_str().to_string(),
                desc: q.desc,
                since,
                key: r.key.clone(),
                dev_eui: r.dev_eui.clone(),
            }
            .encode(),
        ),
        _ => None,
    };
    Ok(DeviceList {
        total,
        total_is_lower_bound,
        next_cursor,
        offline_after_s: q.offline_after_s,
        devices: rows.into_iter().map(|r| r.summary).collect(),
    })
}

/// The reception times of the newest `per_device` uplinks of each of the `devices` devices
/// heard most recently, as `(dev_eui, received_at)` newest first per device: what the default
/// offline threshold measures the uplink interval from. One statement: read device by device it
/// was 21 statements on every device-list request. The devices come from the top of the list's
/// own last-seen index (`devices_listed`; ordered by the bare column SQLite sorted the whole
/// fleet), and each device's uplinks are one range of `uplinks_device` from its `per_device`-th
/// newest id, so it reads `devices x per_device` uplinks however long the fleet has run.
/// `CROSS JOIN`: SQLite keeps that join order (the 20 devices outside). Left to choose, the
/// SQLite that sqlx bundles (3.46) scanned all of `uplinks_device` outside, to save sorting the
/// 400 rows by `(dev_eui, id)`, and looked each uplink up in the 20: 16-25 ms on every list
/// request at 100,000 devices, against 0.1 ms this way (the 3.40 CLI had chosen this way).
/// PostgreSQL plans a CROSS JOIN with a WHERE as any inner join.
pub async fn recent_uplink_times(
    db: &Db,
    devices: i64,
    per_device: i64,
) -> Result<Vec<(String, String)>> {
    let sql = recent_uplink_times_sql(db.is_postgres());
    on!(db, c => Ok(sqlx::query(&sql)
        .bind(devices)
        .bind(per_device)
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| (r.get("dev_eui"), r.get("received_at")))
        .collect()))
}

/// [`recent_uplink_times`]'s statement: `$1` devices, `$2` uplinks each.
fn recent_uplink_times_sql(pg: bool) -> String {
    let (key, eui) = (SortKey::LastSeen.column(pg), eui_key(pg));
    format!(
        "SELECT u.dev_eui, u.received_at FROM (
            SELECT d.dev_eui, (SELECT f.id FROM uplinks f WHERE f.dev_eui = d.dev_eui
                               ORDER BY f.id DESC LIMIT 1 OFFSET $2) AS floor_id
            FROM devices d WHERE d.removed_at IS NULL AND d.last_seen IS NOT NULL
            ORDER BY {key} DESC, {eui} DESC LIMIT $1) r
         CROSS JOIN uplinks u
         WHERE u.dev_eui = r.dev_eui AND u.id > COALESCE(r.floor_id, 0)
         ORDER BY u.dev_eui, u.id DESC"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offline threshold's statement, run on every list request, must read the uplinks of
    /// its 20 devices only: the SQLite lorafleet bundles chose to scan every uplink (in index
    /// order, saving a sort) when the join order was left to it. Read through that SQLite.
    #[tokio::test]
    async fn the_offline_thresholds_statement_seeks_the_uplinks_of_its_devices() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let Db::Sqlite(pool) = crate::storage::connect(&url).await.unwrap() else {
            unreachable!("a sqlite:// URL opens SQLite");
        };
        let sql = format!("EXPLAIN QUERY PLAN {}", recent_uplink_times_sql(false));
        let plan: Vec<String> = sqlx::query(&sql)
            .bind(20_i64)
            .bind(20_i64)
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| sqlx::Row::get::<String, _>(r, 3))
            .collect();
        let outer: Vec<&String> = plan.iter().filter(|d| d.contains(" u ")).collect();
        assert!(
            outer.iter().all(|d| d.starts_with("SEARCH u ")),
            "uplinks must be sought per device, not scanned: {plan:?}"
        );
        assert!(!outer.is_empty(), "{plan:?}");
    }

    fn row(dev_eui: &str, key: i64) -> ListRow {
        ListRow {
            key: SortValue::Int(key),
            dev_eui: dev_eui.to_string(),
            summary: DeviceSummary {
                dev_eui: dev_eui.to_string(),
                name: dev_eui.to_string(),
                application: None,
                model: None,
                last_seen: None,
                running_version: None,
                never_seen: false,
                status: "online".to_string(),
                rssi: None,
                snr: None,
                battery: None,
                reappeared_at: None,
            },
        }
    }

    fn euis(rows: &[ListRow]) -> Vec<&str> {
        rows.iter().map(|r| r.dev_eui.as_str()).collect()
    }

    #[test]
    fn a_device_that_sent_between_the_two_reads_of_a_walk_is_listed_once() {
        let settled = vec![row("01", 1), row("02", 2), row("03", 3)];
        let moved = vec![row("02", 2), row("04", 4)];
        let page = merge_walk(settled, moved, false, 10);
        assert_eq!(euis(&page), ["01", "02", "03", "04"]);
    }

    #[test]
    fn a_walks_page_keeps_its_order_and_its_limit() {
        let settled = vec![row("03", 3), row("01", 1)];
        let moved = vec![row("02", 2), row("04", 4)];
        assert_eq!(
            euis(&merge_walk(settled, moved, true, 3)),
            ["04", "03", "02"]
        );
    }
}

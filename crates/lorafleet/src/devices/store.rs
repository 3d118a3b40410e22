//! Device rows, uplinks, events and downlinks in the database, next to the queries that read them.

use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection};

use super::*;
use crate::ingest::{DeviceIdentity, EventBody, IntegrationEvent};
use crate::network::RemoteDevice;
use crate::status::version_dto;
use crate::storage::{fmt_time, Db};

/// Limits of what is kept per device.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub uplink_history: u32,
    pub event_history: u32,
    pub status_f_port: u8,
}

pub async fn add_event(
    conn: &mut SqliteConnection,
    dev_eui: &str,
    at: &str,
    kind: &str,
    message: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO device_events (dev_eui, at, kind, message) VALUES (?, ?, ?, ?)")
        .bind(dev_eui)
        .bind(at)
        .bind(kind)
        .bind(message)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Per-device history tables that keep only the newest rows.
#[derive(Clone, Copy)]
enum History {
    Uplinks,
    Events,
}

/// Deletes all but the newest `keep` rows of a device's history.
async fn prune(
    conn: &mut SqliteConnection,
    table: History,
    dev_eui: &str,
    keep: u32,
) -> sqlx::Result<()> {
    let sql = match table {
        History::Uplinks => {
            "DELETE FROM uplinks WHERE dev_eui = ?1 AND id <= (
                SELECT id FROM uplinks WHERE dev_eui = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)"
        }
        History::Events => {
            "DELETE FROM device_events WHERE dev_eui = ?1 AND id <= (
                SELECT id FROM device_events WHERE dev_eui = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)"
        }
    };
    sqlx::query(sql)
        .bind(dev_eui)
        .bind(keep as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Creates or updates the device an event is about. Values the event does not carry keep what
/// was stored. `seen` marks an uplink or join: it moves last_seen and brings back a removed device.
async fn upsert_device(
    conn: &mut SqliteConnection,
    dev_eui: &str,
    id: &DeviceIdentity,
    at: &str,
    seen: bool,
) -> sqlx::Result<bool> {
    let tags = id
        .tags
        .as_ref()
        .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "{}".into()));
    let seen_at = if seen { Some(at) } else { None };
    // One statement on the hot path: a removed device that is heard again is brought back here,
    // and RETURNING tells whether that just happened.
    let reappeared: bool = sqlx::query_scalar(
        "INSERT INTO devices (dev_eui, name, application_id, application_name, device_profile_id,
            device_profile_name, tags_json, dev_addr, first_seen, last_seen, created_at)
         VALUES (?1, COALESCE(?2, ''), ?3, ?4, ?5, ?6, COALESCE(?7, '{}'), ?8, ?9, ?9, ?10)
         ON CONFLICT(dev_eui) DO UPDATE SET
            name = COALESCE(?2, devices.name),
            application_id = COALESCE(?3, devices.application_id),
            application_name = COALESCE(?4, devices.application_name),
            device_profile_id = COALESCE(?5, devices.device_profile_id),
            device_profile_name = COALESCE(?6, devices.device_profile_name),
            tags_json = COALESCE(?7, devices.tags_json),
            dev_addr = COALESCE(?8, devices.dev_addr),
            first_seen = COALESCE(devices.first_seen, ?9),
            last_seen = CASE WHEN ?9 IS NOT NULL AND (devices.last_seen IS NULL OR devices.last_seen < ?9)
                             THEN ?9 ELSE devices.last_seen END,
            reappeared_at = CASE WHEN ?9 IS NOT NULL AND devices.removed_at IS NOT NULL
                                 THEN ?9 ELSE devices.reappeared_at END,
            removed_at = CASE WHEN ?9 IS NOT NULL THEN NULL ELSE devices.removed_at END
         RETURNING (?9 IS NOT NULL AND reappeared_at IS ?9)",
    )
    .bind(dev_eui)
    .bind(id.name.as_deref())
    .bind(id.application_id.as_deref())
    .bind(id.application_name.as_deref())
    .bind(id.device_profile_id.as_deref())
    .bind(id.device_profile_name.as_deref())
    .bind(tags)
    .bind(id.dev_addr.as_deref())
    .bind(seen_at)
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    if reappeared {
        add_event(
            conn,
            dev_eui,
            at,
            "reappeared",
            "device sent again after it was removed from the list",
        )
        .await?;
    }
    Ok(reappeared)
}

/// Finds the downlink a delivery report is about: by ChirpStack's queue item id, else by the
/// frame counter, else the oldest one still in flight.
async fn find_downlink(
    conn: &mut SqliteConnection,
    dev_eui: &str,
    queue_item_id: Option<&str>,
    f_cnt: Option<u32>,
) -> sqlx::Result<Option<i64>> {
    if let Some(q) = queue_item_id {
        let id = sqlx::query_scalar("SELECT id FROM downlinks WHERE dev_eui = ? AND network_ref = ? ORDER BY id DESC LIMIT 1")
            .bind(dev_eui)
            .bind(q)
            .fetch_optional(&mut *conn)
            .await?;
        if id.is_some() {
            return Ok(id);
        }
    }
    if let Some(f) = f_cnt {
        let id = sqlx::query_scalar(
            "SELECT id FROM downlinks WHERE dev_eui = ? AND f_cnt = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(dev_eui)
        .bind(f as i64)
        .fetch_optional(&mut *conn)
        .await?;
        if id.is_some() {
            return Ok(id);
        }
    }
    sqlx::query_scalar("SELECT id FROM downlinks WHERE dev_eui = ? AND state IN ('enqueued', 'sent') ORDER BY id ASC LIMIT 1")
        .bind(dev_eui)
        .fetch_optional(&mut *conn)
        .await
}

/// Which of `keys` belong to uplinks already stored: those events are repeats.
pub async fn known_dedup_keys(
    conn: &mut SqliteConnection,
    keys: &[&str],
) -> sqlx::Result<std::collections::HashSet<String>> {
    let mut known = std::collections::HashSet::new();
    for chunk in keys.chunks(500) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT dedup_key FROM uplinks WHERE dedup_key IN (",
        );
        let mut list = q.separated(", ");
        for k in chunk {
            list.push_bind(*k);
        }
        q.push(")");
        let rows: Vec<String> = q.build_query_scalar().fetch_all(&mut *conn).await?;
        known.extend(rows);
    }
    Ok(known)
}

/// True for an uplink that only needs storing: no Version & Status answer to decode.
pub fn is_plain_uplink(ev: &IntegrationEvent, retention: Retention) -> bool {
    matches!(&ev.body, EventBody::Up(up) if up.f_port != Some(retention.status_f_port))
}

/// Stores many plain uplinks with two multi-row statements. Each statement costs a round trip
/// to SQLite's worker thread, so a burst of uplinks is far cheaper this way than one by one.
pub async fn apply_plain_uplinks(
    conn: &mut SqliteConnection,
    events: &[&IntegrationEvent],
    retention: Retention,
) -> sqlx::Result<()> {
    // SQLite allows 32766 bound values per statement; 13 per row (devices: 11).
    for chunk in events.chunks(1000) {
        let mut devices = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO devices (dev_eui, name, application_id, application_name, device_profile_id,
                device_profile_name, tags_json, dev_addr, first_seen, last_seen, created_at) ",
        );
        devices.push_values(chunk.iter(), |mut row, ev| {
            let at = fmt_time(ev.at);
            let id = &ev.device;
            row.push_bind(ev.dev_eui.to_string())
                .push_bind(id.name.clone().unwrap_or_default())
                .push_bind(id.application_id.clone())
                .push_bind(id.application_name.clone())
                .push_bind(id.device_profile_id.clone())
                .push_bind(id.device_profile_name.clone())
                .push_bind(
                    id.tags
                        .as_ref()
                        .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "{}".into()))
                        .unwrap_or_else(|| "{}".into()),
                )
                .push_bind(id.dev_addr.clone())
                .push_bind(at.clone())
                .push_bind(at.clone())
                .push_bind(at);
        });
        // `excluded` is the row as proposed: identity fields only overwrite when the event had
        // them, as in upsert_device. A removed device heard again comes back, and RETURNING
        // names it so the event log can say so.
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
        let returned: Vec<(String, Option<String>)> =
            devices.build_query_as().fetch_all(&mut *conn).await?;

        let mut uplinks = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO uplinks (dev_eui, received_at, f_cnt, f_port, dr, frequency, rssi, snr,
                gateway_count, confirmed, data, object_json, dedup_key) ",
        );
        uplinks.push_values(chunk.iter(), |mut row, ev| {
            let EventBody::Up(up) = &ev.body else {
                unreachable!("apply_plain_uplinks is only given uplinks")
            };
            row.push_bind(ev.dev_eui.to_string())
                .push_bind(fmt_time(up.received_at))
                .push_bind(up.f_cnt.map(|v| v as i64))
                .push_bind(up.f_port.map(|v| v as i64))
                .push_bind(up.dr.map(|v| v as i64))
                .push_bind(up.frequency.map(|v| v as i64))
                .push_bind(up.rssi.map(|v| v as i64))
                .push_bind(up.snr)
                .push_bind(up.gateway_count as i64)
                .push_bind(up.confirmed)
                .push_bind(up.data.clone())
                .push_bind(up.object.as_ref().map(|o| o.to_string()))
                .push_bind(up.dedup_key.clone());
        });
        uplinks.build().execute(&mut *conn).await?;

        for ev in chunk {
            let at = fmt_time(ev.at);
            let eui = ev.dev_eui.to_string();
            if returned
                .iter()
                .any(|(e, r)| *e == eui && r.as_deref() == Some(at.as_str()))
            {
                add_event(
                    conn,
                    &eui,
                    &at,
                    "reappeared",
                    "device sent again after it was removed from the list",
                )
                .await?;
            }
            if let EventBody::Up(up) = &ev.body {
                if up.f_cnt.is_none_or(|f| f % 8 == 0) {
                    prune(conn, History::Uplinks, &eui, retention.uplink_history).await?;
                }
            }
        }
    }
    Ok(())
}

/// Records one integration event in an open transaction.
pub async fn apply_event(
    conn: &mut SqliteConnection,
    ev: &IntegrationEvent,
    retention: Retention,
) -> sqlx::Result<()> {
    let eui = ev.dev_eui.to_string();
    let at = fmt_time(ev.at);
    let seen = matches!(ev.body, EventBody::Up(_) | EventBody::Join);
    upsert_device(conn, &eui, &ev.device, &at, seen).await?;
    match &ev.body {
        EventBody::Up(up) => {
            let object = up.object.as_ref().map(|o| o.to_string());
            sqlx::query(
                "INSERT INTO uplinks (dev_eui, received_at, f_cnt, f_port, dr, frequency, rssi, snr,
                    gateway_count, confirmed, data, object_json, dedup_key)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&eui)
            .bind(fmt_time(up.received_at))
            .bind(up.f_cnt.map(|v| v as i64))
            .bind(up.f_port.map(|v| v as i64))
            .bind(up.dr.map(|v| v as i64))
            .bind(up.frequency.map(|v| v as i64))
            .bind(up.rssi.map(|v| v as i64))
            .bind(up.snr)
            .bind(up.gateway_count as i64)
            .bind(up.confirmed)
            .bind(&up.data)
            .bind(object)
            .bind(&up.dedup_key)
            .execute(&mut *conn)
            .await?;
            // Pruning every 8th frame of a device keeps the cost off most uplinks; readers cap
            // at uplink_history, so the few extra rows are never shown.
            if up.f_cnt.is_none_or(|f| f % 8 == 0) {
                prune(conn, History::Uplinks, &eui, retention.uplink_history).await?;
            }
            if up.f_port == Some(retention.status_f_port) {
                let lines = crate::status::apply_payload(conn, ev.dev_eui, ev.at, &up.data).await?;
                for (kind, message) in lines {
                    add_event(conn, &eui, &at, kind, &message).await?;
                }
                prune(conn, History::Events, &eui, retention.event_history).await?;
            }
        }
        EventBody::Join => {
            sqlx::query("UPDATE devices SET joined_at = ? WHERE dev_eui = ?")
                .bind(&at)
                .bind(&eui)
                .execute(&mut *conn)
                .await?;
            let msg = match &ev.device.dev_addr {
                Some(a) => format!("joined, DevAddr {a}"),
                None => "joined".to_string(),
            };
            add_event(conn, &eui, &at, "join", &msg).await?;
            prune(conn, History::Events, &eui, retention.event_history).await?;
        }
        EventBody::Status {
            battery,
            external_power,
            margin,
        } => {
            sqlx::query("UPDATE devices SET battery = ?, margin = ?, device_status_at = ? WHERE dev_eui = ?")
                .bind(*battery)
                .bind(margin.map(|m| m as i64))
                .bind(&at)
                .bind(&eui)
                .execute(&mut *conn)
                .await?;
            let battery = match (battery, external_power) {
                (_, true) => "external power".to_string(),
                (Some(b), _) => format!("battery {b:.0} %"),
                (None, _) => "battery level unavailable".to_string(),
            };
            let margin = margin.map_or(String::new(), |m| format!(", link margin {m} dB"));
            add_event(conn, &eui, &at, "status", &format!("{battery}{margin}")).await?;
        }
        EventBody::Ack {
            acknowledged,
            f_cnt,
            queue_item_id,
        } => {
            let id = find_downlink(conn, &eui, queue_item_id.as_deref(), *f_cnt).await?;
            let (state, error, msg) = if *acknowledged {
                (
                    "acknowledged",
                    None,
                    "downlink acknowledged by the device".to_string(),
                )
            } else {
                (
                    "failed",
                    Some("the device did not acknowledge the confirmed downlink"),
                    "downlink NOT acknowledged by the device".to_string(),
                )
            };
            if let Some(id) = id {
                sqlx::query("UPDATE downlinks SET state = CASE WHEN state = 'answered' THEN state ELSE ? END, error = COALESCE(?, error), updated_at = ? WHERE id = ?")
                    .bind(state)
                    .bind(error)
                    .bind(&at)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            let kind = if *acknowledged {
                "downlink_acknowledged"
            } else {
                "downlink_failed"
            };
            add_event(conn, &eui, &at, kind, &msg).await?;
        }
        EventBody::TxAck {
            f_cnt,
            queue_item_id,
        } => {
            if let Some(id) = find_downlink(conn, &eui, queue_item_id.as_deref(), *f_cnt).await? {
                sqlx::query("UPDATE downlinks SET state = 'sent', updated_at = ? WHERE id = ? AND state IN ('requested', 'enqueued')")
                    .bind(&at)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            let fc = f_cnt.map_or(String::new(), |f| format!(" (FCnt {f})"));
            add_event(
                conn,
                &eui,
                &at,
                "downlink_sent",
                &format!("downlink sent by a gateway{fc}"),
            )
            .await?;
        }
        EventBody::Log { level, message } => {
            let kind = if level == "error" { "error" } else { "log" };
            add_event(conn, &eui, &at, kind, message).await?;
            prune(conn, History::Events, &eui, retention.event_history).await?;
        }
    }
    Ok(())
}

/// Adds devices listed by the network server that lorafleet has not heard yet ("never seen").
pub async fn merge_remote_devices(db: &Db, devices: &[RemoteDevice]) -> sqlx::Result<usize> {
    let mut tx = db.begin().await?;
    let now = crate::storage::now();
    let mut added = 0;
    for d in devices {
        let r = sqlx::query(
            "INSERT INTO devices (dev_eui, name, application_id, application_name, device_profile_id,
                device_profile_name, source, created_at)
             VALUES (?, ?, ?, ?, ?, ?, 'network', ?)
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
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        added += r.rows_affected() as usize;
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

pub async fn list(db: &Db, q: &ListQuery) -> sqlx::Result<DeviceList> {
    let pattern = q
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            format!(
                "%{}%",
                s.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            )
        });
    // Two shapes of query, so that the unfiltered list (the common case) can use the partial
    // index devices_listed; SQLite plans before it sees whether the pattern is NULL.
    let filter = if pattern.is_some() {
        "removed_at IS NULL AND (dev_eui LIKE ?1 ESCAPE '\\' OR name LIKE ?1 ESCAPE '\\'
         OR application_name LIKE ?1 ESCAPE '\\' OR dev_addr LIKE ?1 ESCAPE '\\')"
    } else {
        "removed_at IS NULL AND ?1 IS NULL"
    };
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM devices WHERE {filter}"))
        .bind(pattern.as_deref())
        .fetch_one(db)
        .await?;
    let order = match q.sort.as_str() {
        "name" => "name ASC, dev_eui ASC",
        "dev_eui" => "dev_eui ASC",
        // SQLite sorts NULL lowest, so never-seen devices come last and the index serves the order.
        _ => "last_seen DESC",
    };
    let rows = sqlx::query(&format!(
        "SELECT dev_eui, name, application_name, application_id, last_seen, running_version,
                versioning_type, reappeared_at
         FROM devices WHERE {filter} ORDER BY {order} LIMIT ?2 OFFSET ?3"
    ))
    .bind(pattern.as_deref())
    .bind(q.limit)
    .bind(q.offset)
    .fetch_all(db)
    .await?;
    let devices = rows
        .into_iter()
        .map(|r| {
            let last_seen: Option<String> = r.get("last_seen");
            let running: Option<i64> = r.get("running_version");
            let application: Option<String> = r
                .get::<Option<String>, _>("application_name")
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
        })
        .collect();
    Ok(DeviceList { total, devices })
}

fn uplink_from_row(r: &sqlx::sqlite::SqliteRow) -> UplinkDto {
    let data: Vec<u8> = r.get("data");
    let object: Option<String> = r.get("object_json");
    UplinkDto {
        received_at: r.get("received_at"),
        f_port: r.get("f_port"),
        f_cnt: r.get("f_cnt"),
        dr: r.get("dr"),
        frequency: r.get("frequency"),
        rssi: r.get("rssi"),
        snr: r.get("snr"),
        gateway_count: r.get("gateway_count"),
        confirmed: r.get("confirmed"),
        data_hex: hex::encode(&data),
        data_text: printable_text(&data),
        object: object.and_then(|o| serde_json::from_str(&o).ok()),
    }
}

pub async fn uplinks(db: &Db, dev_eui: DevEui, limit: i64) -> sqlx::Result<Vec<UplinkDto>> {
    let rows = sqlx::query("SELECT * FROM uplinks WHERE dev_eui = ? ORDER BY id DESC LIMIT ?")
        .bind(dev_eui.to_string())
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.iter().map(uplink_from_row).collect())
}

pub async fn exists(db: &Db, dev_eui: DevEui) -> sqlx::Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE dev_eui = ?")
        .bind(dev_eui.to_string())
        .fetch_one(db)
        .await?;
    Ok(n > 0)
}

/// Everything the device page shows, or None for an unknown device.
pub async fn detail(db: &Db, dev_eui: DevEui) -> sqlx::Result<Option<DeviceDetail>> {
    let eui = dev_eui.to_string();
    let Some(r) = sqlx::query("SELECT * FROM devices WHERE dev_eui = ?")
        .bind(&eui)
        .fetch_optional(db)
        .await?
    else {
        return Ok(None);
    };
    let last_uplink =
        sqlx::query("SELECT * FROM uplinks WHERE dev_eui = ? ORDER BY id DESC LIMIT 1")
            .bind(&eui)
            .fetch_optional(db)
            .await?
            .as_ref()
            .map(uplink_from_row);
    let vt: Option<i64> = r.get("versioning_type");
    let package = match (
        r.get::<Option<i64>, _>("pkg_identifier"),
        r.get::<Option<i64>, _>("pkg_version"),
    ) {
        (Some(identifier), Some(version)) => Some(PackageDto {
            identifier,
            version,
            versioning_type: vt.unwrap_or(0),
            slots: r.get::<Option<i64>, _>("nb_slots").unwrap_or(3),
        }),
        _ => None,
    };
    let running = match (
        r.get::<Option<i64>, _>("running_slot"),
        r.get::<Option<i64>, _>("running_version"),
    ) {
        (Some(slot), Some(v)) => Some(RunningDto {
            slot,
            version: version_dto(v, vt),
        }),
        _ => None,
    };
    let stored = r
        .get::<Option<String>, _>("stored_json")
        .and_then(|s| serde_json::from_str::<Vec<serde_json::Value>>(&s).ok())
        .map(|list| {
            list.iter()
                .filter_map(|v| {
                    Some(StoredDto {
                        slot: v.get("slot")?.as_i64()?,
                        version: version_dto(v.get("version")?.as_i64()?, vt),
                    })
                })
                .collect()
        });
    let status = StatusDto {
        package,
        running,
        stored,
        heap_available: r.get("heap_available"),
        slot_size: r.get("slot_size"),
        uptime_s: r.get("uptime_s"),
        manufacturer_id: r.get("manufacturer_id"),
        device_id: r.get("device_id"),
        reported_at: ReportedAt {
            package: r.get("pkg_reported_at"),
            running: r.get("running_reported_at"),
            stored: r.get("stored_reported_at"),
            space: r.get("space_reported_at"),
            uptime: r.get("uptime_reported_at"),
            description: r.get("description_reported_at"),
        },
    };
    let downlink_rows =
        sqlx::query("SELECT * FROM downlinks WHERE dev_eui = ? ORDER BY id DESC LIMIT 50")
            .bind(&eui)
            .fetch_all(db)
            .await?;
    let mut status_requests = Vec::new();
    let mut downlinks = Vec::new();
    for d in &downlink_rows {
        let data: Vec<u8> = d.get("data");
        let state: String = d.get("state");
        let command: Option<String> = d.get("status_command");
        if let Some(command) = &command {
            let ui_state = match state.as_str() {
                "answered" => "answered",
                "failed" => "failed",
                // An erase has no answer: delivery is all there is to wait for.
                "sent" | "acknowledged" if command == "erase_slot" => "answered",
                _ => "pending",
            };
            status_requests.push(StatusRequestDto {
                id: d.get("id"),
                command: command.clone(),
                payload_hex: hex::encode(&data),
                state: ui_state.to_string(),
                requested_at: d.get("requested_at"),
                answered_at: d.get("answered_at"),
                error: d.get("error"),
            });
        }
        downlinks.push(DownlinkDto {
            id: d.get("id"),
            f_port: d.get("f_port"),
            data_hex: hex::encode(&data),
            confirmed: d.get("confirmed"),
            status_command: command,
            state,
            requested_at: d.get("requested_at"),
            updated_at: d.get("updated_at"),
            error: d.get("error"),
        });
    }
    let events = sqlx::query("SELECT id, at, kind, message FROM device_events WHERE dev_eui = ? ORDER BY id DESC LIMIT 100")
        .bind(&eui)
        .fetch_all(db)
        .await?
        .into_iter()
        .map(|e| DeviceEventDto {
            id: e.get("id"),
            at: e.get("at"),
            kind: e.get("kind"),
            message: e.get("message"),
        })
        .collect();
    let last_seen: Option<String> = r.get("last_seen");
    let tags: String = r.get("tags_json");
    let firmware_history =
        crate::fuota::history::of_device(db, &eui, r.get("versioning_type")).await?;
    Ok(Some(DeviceDetail {
        dev_eui: eui,
        name: r.get("name"),
        application: r
            .get::<Option<String>, _>("application_name")
            .or(r.get("application_id")),
        application_id: r.get("application_id"),
        device_profile: r
            .get::<Option<String>, _>("device_profile_name")
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
        last_uplink,
        status,
        status_requests,
        downlinks,
        events,
        firmware_history,
    }))
}

/// Hides a device from the list; its history stays, and it comes back when it sends again.
pub async fn remove(db: &Db, dev_eui: DevEui, by: &str) -> sqlx::Result<bool> {
    let eui = dev_eui.to_string();
    let now = crate::storage::now();
    let mut tx = db.begin().await?;
    let r = sqlx::query("UPDATE devices SET removed_at = ?, reappeared_at = NULL WHERE dev_eui = ? AND removed_at IS NULL")
        .bind(&now)
        .bind(&eui)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() > 0 {
        add_event(
            &mut tx,
            &eui,
            &now,
            "removed",
            &format!("removed from the device list by {by}"),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(r.rows_affected() > 0)
}

/// Records a downlink lorafleet is about to ask the network for; returns its id.
pub async fn record_downlink_request(
    db: &Db,
    dev_eui: DevEui,
    f_port: u8,
    data: &[u8],
    confirmed: bool,
    status_command: Option<&str>,
) -> sqlx::Result<i64> {
    let mut conn = db.acquire().await?;
    insert_downlink_request(&mut conn, dev_eui, f_port, data, confirmed, status_command).await
}

/// [`record_downlink_request`] inside the caller's transaction (many downlinks at once).
pub async fn insert_downlink_request(
    conn: &mut SqliteConnection,
    dev_eui: DevEui,
    f_port: u8,
    data: &[u8],
    confirmed: bool,
    status_command: Option<&str>,
) -> sqlx::Result<i64> {
    let now = crate::storage::now();
    let id = sqlx::query_scalar(
        "INSERT INTO downlinks (dev_eui, f_port, data, confirmed, status_command, state, requested_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 'requested', ?, ?) RETURNING id",
    )
    .bind(dev_eui.to_string())
    .bind(f_port as i64)
    .bind(data)
    .bind(confirmed)
    .bind(status_command)
    .bind(&now)
    .bind(&now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Stores what the network answered to a downlink request, with an event-log line.
pub async fn record_downlink_outcome(
    db: &Db,
    id: i64,
    dev_eui: DevEui,
    outcome: Result<(Option<String>, Option<u32>), String>,
    what: &str,
) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    apply_downlink_outcome(&mut tx, id, dev_eui, outcome, what).await?;
    tx.commit().await?;
    Ok(())
}

/// [`record_downlink_outcome`] inside the caller's transaction.
pub async fn apply_downlink_outcome(
    conn: &mut SqliteConnection,
    id: i64,
    dev_eui: DevEui,
    outcome: Result<(Option<String>, Option<u32>), String>,
    what: &str,
) -> sqlx::Result<()> {
    let now = crate::storage::now();
    let eui = dev_eui.to_string();
    match outcome {
        Ok((network_ref, f_cnt)) => {
            sqlx::query("UPDATE downlinks SET state = 'enqueued', network_ref = ?, f_cnt = ?, updated_at = ? WHERE id = ? AND state = 'requested'")
                .bind(network_ref)
                .bind(f_cnt.map(|f| f as i64))
                .bind(&now)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            add_event(
                conn,
                &eui,
                &now,
                "downlink_enqueued",
                &format!("{what} enqueued"),
            )
            .await?;
        }
        Err(e) => {
            sqlx::query(
                "UPDATE downlinks SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
            )
            .bind(&e)
            .bind(&now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            add_event(
                conn,
                &eui,
                &now,
                "downlink_failed",
                &format!("{what} failed: {e}"),
            )
            .await?;
        }
    }
    Ok(())
}

pub fn parse_opt_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    s.and_then(crate::storage::parse_time)
}

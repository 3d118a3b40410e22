//! The device log (`device_events`): one line per thing that happened to a device, newest kept.

use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Conn, Db, Result};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceEventDto {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub message: String,
}

pub async fn add(
    conn: &mut Conn,
    dev_eui: &str,
    at: &str,
    kind: &str,
    message: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO device_events (dev_eui, at, kind, message) VALUES (?, ?, ?, ?)")
        .bind(dev_eui)
        .bind(at)
        .bind(kind)
        .bind(message)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes all but the newest `keep` lines of a device's log.
pub async fn prune(conn: &mut Conn, dev_eui: &str, keep: u32) -> Result<()> {
    super::keep_newest(conn, "device_events", dev_eui, keep).await
}

/// The newest lines of a device's log, newest first.
pub async fn recent(db: &Db, dev_eui: &str, limit: i64) -> Result<Vec<DeviceEventDto>> {
    let rows = sqlx::query(
        "SELECT id, at, kind, message FROM device_events WHERE dev_eui = ? ORDER BY id DESC LIMIT ?",
    )
    .bind(dev_eui)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|e| DeviceEventDto {
            id: e.get("id"),
            at: e.get("at"),
            kind: e.get("kind"),
            message: e.get("message"),
        })
        .collect())
}

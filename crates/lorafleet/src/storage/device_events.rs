//! The device log (`device_events`): one line per thing that happened to a device, newest kept.

use serde::Serialize;
use utoipa::ToSchema;

use super::{time, Cols, Conn, Db, Result};

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
    on!(&mut *conn, c => sqlx::query("INSERT INTO device_events (dev_eui, at, kind, message) VALUES ($1, $2, $3, $4)")
        .bind(dev_eui)
        .bind(time(at))
        .bind(kind)
        .bind(message)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// One device-log line to add.
#[derive(Debug, Clone)]
pub struct NewLine {
    pub dev_eui: String,
    pub at: String,
    pub kind: &'static str,
    pub message: String,
}

/// Adds many lines, in order, with one multi-row statement per 1000 (the writer's groups).
pub async fn add_many(conn: &mut Conn, lines: &[NewLine]) -> Result<()> {
    for chunk in lines.chunks(1000) {
        on!(&mut *conn, c, DB => {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO device_events (dev_eui, at, kind, message) ",
            );
            q.push_values(chunk, |mut row, l| {
                row.push_bind(l.dev_eui.as_str())
                    .push_bind(time(&l.at))
                    .push_bind(l.kind)
                    .push_bind(l.message.as_str());
            });
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

/// [`prune`] for many devices at once.
pub async fn prune_many(conn: &mut Conn, dev_euis: &[&str], keep: u32) -> Result<()> {
    super::keep_newest_of(conn, "device_events", dev_euis, keep).await
}

/// Deletes all but the newest `keep` lines of a device's log.
pub async fn prune(conn: &mut Conn, dev_eui: &str, keep: u32) -> Result<()> {
    super::keep_newest(conn, "device_events", dev_eui, keep).await
}

/// The newest lines of a device's log, newest first.
pub async fn recent(db: &Db, dev_eui: &str, limit: i64) -> Result<Vec<DeviceEventDto>> {
    let rows = on!(db, c => sqlx::query(
        "SELECT id, at, kind, message FROM device_events WHERE dev_eui = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(dev_eui)
    .bind(limit)
    .fetch_all(c).await?
    .iter()
    .map(|e| DeviceEventDto {
        id: e.get("id"),
        at: e.get("at"),
        kind: e.get("kind"),
        message: e.get("message"),
    })
    .collect());
    Ok(rows)
}

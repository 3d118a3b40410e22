//! A device's firmware history (`firmware_history`): every change of the running version it
//! reported and every engine campaign that updated (or tried to update) it.

use super::Cols;
use serde::Serialize;
use utoipa::ToSchema;

use super::version_status::{version_dto, VersionDto};
use super::{time, Conn, Db, Result};

/// One line of the history, newest first on the device page.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub at: String,
    /// The running version reported (or verified), when known.
    pub version: Option<VersionDto>,
    pub slot: Option<i64>,
    pub campaign_id: Option<i64>,
    /// For campaign entries: verified | completed | not_updated | unreachable | refused.
    pub outcome: Option<String>,
    pub message: String,
}

/// Keeps this many entries per device.
const KEEP: i64 = 200;

/// One entry to add.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    pub dev_eui: &'a str,
    pub at: &'a str,
    pub version: Option<u32>,
    pub slot: Option<u8>,
    pub campaign_id: Option<i64>,
    pub outcome: Option<&'a str>,
    pub message: &'a str,
}

/// Adds an entry and drops the device's oldest beyond [`KEEP`].
pub async fn record(conn: &mut Conn, e: &NewEntry<'_>) -> Result<()> {
    on!(&mut *conn, c => sqlx::query(
        "INSERT INTO firmware_history (dev_eui, at, version, slot, campaign_id, outcome, message)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(e.dev_eui)
    .bind(time(e.at))
    .bind(e.version.map(i64::from))
    .bind(e.slot.map(i64::from))
    .bind(e.campaign_id)
    .bind(e.outcome)
    .bind(e.message)
    .execute(c).await.map(|r| r.rows_affected()))?;
    on!(&mut *conn, c => sqlx::query(
        "DELETE FROM firmware_history WHERE dev_eui = $1 AND id <= (
            SELECT id FROM firmware_history WHERE dev_eui = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
    )
    .bind(e.dev_eui)
    .bind(KEEP)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// [`record`] for many entries, in order: one multi-row insert per 1000 and one pruning
/// statement for their devices (the ingest writer's groups).
pub async fn record_many(conn: &mut Conn, entries: &[NewEntry<'_>]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    for chunk in entries.chunks(1000) {
        on!(&mut *conn, c, DB => {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO firmware_history (dev_eui, at, version, slot, campaign_id, outcome, message) ",
            );
            q.push_values(chunk, |mut row, e| {
                row.push_bind(e.dev_eui)
                    .push_bind(time(e.at))
                    .push_bind(e.version.map(i64::from))
                    .push_bind(e.slot.map(i64::from))
                    .push_bind(e.campaign_id)
                    .push_bind(e.outcome)
                    .push_bind(e.message);
            });
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    let mut devices: Vec<&str> = entries.iter().map(|e| e.dev_eui).collect();
    devices.sort_unstable();
    devices.dedup();
    super::keep_newest_of(conn, "firmware_history", &devices, KEEP as u32).await
}

/// [`record`] on a connection of its own.
pub async fn record_now(db: &Db, e: &NewEntry<'_>) -> Result<()> {
    let mut conn = db.acquire().await?;
    record(&mut conn, e).await
}

/// The device's history, newest first; versions rendered by its versioning type.
pub async fn of_device(
    db: &Db,
    dev_eui: &str,
    versioning_type: Option<i64>,
) -> Result<Vec<HistoryEntry>> {
    let rows = on!(db, c => sqlx::query(
        "SELECT at, version, slot, campaign_id, outcome, message FROM firmware_history
         WHERE dev_eui = $1 ORDER BY id DESC LIMIT 50",
    )
    .bind(dev_eui)
    .fetch_all(c).await?
        .iter()
        .map(|r| HistoryEntry {
            at: r.get("at"),
            version: r
                .get::<Option<i64>>("version")
                .map(|v| version_dto(v, versioning_type)),
            slot: r.get("slot"),
            campaign_id: r.get("campaign_id"),
            outcome: r.get("outcome"),
            message: r.get("message"),
        })
        .collect());
    Ok(rows)
}

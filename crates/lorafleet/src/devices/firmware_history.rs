//! A device's firmware history: every change of the running version it reported and every
//! engine campaign that updated (or tried to update) it.

use serde::Serialize;
use sqlx::{Row, SqliteConnection};
use utoipa::ToSchema;

use super::{version_dto, VersionDto};
use crate::storage::Db;

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

#[allow(clippy::too_many_arguments)]
pub async fn record(
    conn: &mut SqliteConnection,
    dev_eui: &str,
    at: &str,
    version: Option<u32>,
    slot: Option<u8>,
    campaign_id: Option<i64>,
    outcome: Option<&str>,
    message: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO firmware_history (dev_eui, at, version, slot, campaign_id, outcome, message)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(dev_eui)
    .bind(at)
    .bind(version.map(i64::from))
    .bind(slot.map(i64::from))
    .bind(campaign_id)
    .bind(outcome)
    .bind(message)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM firmware_history WHERE dev_eui = ?1 AND id <= (
            SELECT id FROM firmware_history WHERE dev_eui = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )
    .bind(dev_eui)
    .bind(KEEP)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The device's history, newest first.
pub async fn of_device(
    db: &Db,
    dev_eui: &str,
    versioning_type: Option<i64>,
) -> sqlx::Result<Vec<HistoryEntry>> {
    let rows = sqlx::query(
        "SELECT at, version, slot, campaign_id, outcome, message FROM firmware_history
         WHERE dev_eui = ? ORDER BY id DESC LIMIT 50",
    )
    .bind(dev_eui)
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| HistoryEntry {
            at: r.get("at"),
            version: r
                .get::<Option<i64>, _>("version")
                .map(|v| version_dto(v, versioning_type)),
            slot: r.get("slot"),
            campaign_id: r.get("campaign_id"),
            outcome: r.get("outcome"),
            message: r.get("message"),
        })
        .collect())
}

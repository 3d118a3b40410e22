//! A device's Firmware Management record (`devices.firmware_management`, JSON), read and
//! written inside the ingest writer's transaction.

use super::{Conn, Db, Result};

/// The stored record, if the device ever answered.
pub async fn read(conn: &mut Conn, dev_eui: &str) -> Result<Option<serde_json::Value>> {
    let text: Option<Option<String>> = on!(&mut *conn, c => sqlx::query_scalar(
        "SELECT firmware_management FROM devices WHERE dev_eui = $1",
    )
    .bind(dev_eui)
    .fetch_optional(c)
    .await)?;
    Ok(text.flatten().and_then(|t| serde_json::from_str(&t).ok()))
}

/// Whether the device has answered Firmware Management but never Version & Status: an `auto`
/// check then asks Firmware Management first.
pub async fn answers_only_firmware_management(db: &Db, dev_eui: &str) -> Result<bool> {
    // A constant of one type on both backends (PostgreSQL's `1` is an INT4).
    let n: Option<String> = on!(db, c => sqlx::query_scalar(
        "SELECT dev_eui FROM devices WHERE dev_eui = $1 AND firmware_management IS NOT NULL
         AND running_version IS NULL AND versioning_type IS NULL",
    )
    .bind(dev_eui)
    .fetch_optional(c)
    .await)?;
    Ok(n.is_some())
}

pub async fn write(conn: &mut Conn, dev_eui: &str, record: &serde_json::Value) -> Result<()> {
    on!(&mut *conn, c => sqlx::query("UPDATE devices SET firmware_management = $1 WHERE dev_eui = $2")
        .bind(record.to_string())
        .bind(dev_eui)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

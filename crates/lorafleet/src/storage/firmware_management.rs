//! A device's Firmware Management record (`devices.firmware_management`, JSON), read and
//! written inside the ingest writer's transaction.

use super::{Conn, Db, Result};

/// The stored record, if the device ever answered.
pub async fn read(conn: &mut Conn, dev_eui: &str) -> Result<Option<serde_json::Value>> {
    let text: Option<Option<String>> =
        sqlx::query_scalar("SELECT firmware_management FROM devices WHERE dev_eui = ?")
            .bind(dev_eui)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(text.flatten().and_then(|t| serde_json::from_str(&t).ok()))
}

/// Whether the device has answered Firmware Management but never Version & Status: an `auto`
/// check then asks Firmware Management first.
pub async fn answers_only_firmware_management(db: &Db, dev_eui: &str) -> Result<bool> {
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM devices WHERE dev_eui = ? AND firmware_management IS NOT NULL
         AND running_version IS NULL AND versioning_type IS NULL",
    )
    .bind(dev_eui)
    .fetch_optional(db)
    .await?;
    Ok(n.is_some())
}

pub async fn write(conn: &mut Conn, dev_eui: &str, record: &serde_json::Value) -> Result<()> {
    sqlx::query("UPDATE devices SET firmware_management = ? WHERE dev_eui = ?")
        .bind(record.to_string())
        .bind(dev_eui)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

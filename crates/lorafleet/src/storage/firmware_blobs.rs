//! Firmware bytes in the database (`firmware_blobs`), addressed by their SHA-256: what lets any
//! instance on one database serve any campaign, whichever instance indexed or received the
//! image. Content-addressed, so a row never changes once written.

use super::{Cols, Db, Result};

/// Stores an image's bytes under its SHA-256 (lower-case hex); a second store of the same
/// bytes is a no-op.
pub async fn put(db: &Db, sha256: &str, bytes: &[u8]) -> Result<()> {
    on!(db, c => sqlx::query(
        "INSERT INTO firmware_blobs (sha256, size, data) VALUES ($1, $2, $3)
         ON CONFLICT(sha256) DO NOTHING",
    )
    .bind(sha256)
    .bind(bytes.len() as i64)
    .bind(bytes)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The bytes stored under a SHA-256, if any.
pub async fn get(db: &Db, sha256: &str) -> Result<Option<Vec<u8>>> {
    Ok(
        on!(db, c => sqlx::query("SELECT data FROM firmware_blobs WHERE sha256 = $1")
        .bind(sha256)
        .fetch_optional(c)
        .await?
        .map(|r| r.get("data"))),
    )
}

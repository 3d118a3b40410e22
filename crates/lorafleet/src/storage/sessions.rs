//! The `sessions` table: browser sessions, stored by the SHA-256 of the cookie value.

use chrono::{DateTime, Utc};

use super::{fmt_time, now, Db};

pub struct SessionRow {
    pub username: String,
    pub csrf_token: String,
    pub role: String,
}

pub async fn insert(
    db: &Db,
    id_sha256: &str,
    user_id: i64,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO sessions (id_sha256, user_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
        .bind(id_sha256)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now())
        .bind(fmt_time(expires_at))
        .execute(db)
        .await?;
    Ok(())
}

/// The unexpired session with this cookie hash, of a user who is not disabled.
pub async fn find(db: &Db, id_sha256: &str) -> anyhow::Result<Option<SessionRow>> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT u.username, s.csrf_token, u.role FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id_sha256 = ? AND s.expires_at > ? AND u.disabled = 0",
    )
    .bind(id_sha256)
    .bind(now())
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(username, csrf_token, role)| SessionRow {
        username,
        csrf_token,
        role,
    }))
}

/// Ends one session, and sweeps expired ones while at it.
pub async fn delete(db: &Db, id_sha256: &str) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_sha256 = ? OR expires_at < ?")
        .bind(id_sha256)
        .bind(now())
        .execute(db)
        .await?;
    Ok(())
}

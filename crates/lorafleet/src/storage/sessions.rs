//! The `sessions` table: browser sessions, stored by the SHA-256 of the cookie value.

use chrono::{DateTime, Utc};

use super::{time_now, Db, Time};

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
    on!(db, c => sqlx::query("INSERT INTO sessions (id_sha256, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id_sha256)
        .bind(user_id)
        .bind(csrf_token)
        .bind(time_now())
        .bind(Time::from(expires_at))
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The unexpired session with this cookie hash, of a user who is not disabled.
pub async fn find(db: &Db, id_sha256: &str) -> anyhow::Result<Option<SessionRow>> {
    let row: Option<(String, String, String)> = on!(db, c => sqlx::query_as(
        "SELECT u.username, s.csrf_token, u.role FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id_sha256 = $1 AND s.expires_at > $2 AND NOT u.disabled",
    )
    .bind(id_sha256)
    .bind(time_now())
    .fetch_optional(c).await)?;
    Ok(row.map(|(username, csrf_token, role)| SessionRow {
        username,
        csrf_token,
        role,
    }))
}

/// Ends one session, and sweeps expired ones while at it.
pub async fn delete(db: &Db, id_sha256: &str) -> anyhow::Result<()> {
    on!(db, c => sqlx::query("DELETE FROM sessions WHERE id_sha256 = $1 OR expires_at < $2")
        .bind(id_sha256)
        .bind(time_now())
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

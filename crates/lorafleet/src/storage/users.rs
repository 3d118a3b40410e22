//! The `users` table: names and argon2id password hashes.

use super::{now, Db};

/// Creates a user, or replaces the password hash of an existing one. Replacing it ends every
/// session of that user in the same transaction, so an old cookie cannot outlive the old
/// password (cached Basic credentials are checked against the hash, see [`password_hash`]).
pub async fn upsert(db: &Db, username: &str, password_hash: &str) -> anyhow::Result<i64> {
    let mut tx = db.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)
         ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash RETURNING id",
    )
    .bind(username)
    .bind(password_hash)
    .bind(now())
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn count(db: &Db) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(db)
        .await?)
}

/// The id and password hash of a user.
pub async fn credentials(db: &Db, username: &str) -> anyhow::Result<Option<(i64, String)>> {
    Ok(
        sqlx::query_as("SELECT id, password_hash FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn password_hash(db: &Db, username: &str) -> anyhow::Result<Option<String>> {
    Ok(credentials(db, username).await?.map(|(_, h)| h))
}

pub async fn id_of(db: &Db, username: &str) -> anyhow::Result<Option<i64>> {
    Ok(credentials(db, username).await?.map(|(id, _)| id))
}

/// A user as listed (never the hash).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UserInfo {
    pub username: String,
    pub created_at: String,
}

pub async fn list(db: &Db) -> anyhow::Result<Vec<UserInfo>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT username, created_at FROM users ORDER BY username")
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(username, created_at)| UserInfo {
            username,
            created_at,
        })
        .collect())
}

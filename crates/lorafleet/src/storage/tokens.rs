//! The `api_tokens` table (stored by SHA-256, with a scope) and the integration token's hash in
//! `settings`.

use chrono::Utc;

use super::{time_now, Cols, Conn, Db, Time};

pub async fn insert(
    db: &Db,
    user_id: i64,
    name: &str,
    token_sha256: &str,
    scope: &str,
) -> anyhow::Result<i64> {
    Ok(on!(db, c => sqlx::query_scalar(
        "INSERT INTO api_tokens (name, token_sha256, user_id, created_at, scope) VALUES ($1, $2, $3, $4, $5)
         RETURNING id",
    )
    .bind(name)
    .bind(token_sha256)
    .bind(user_id)
    .bind(time_now())
    .bind(scope)
    .fetch_one(c).await)?)
}

/// A token's user, the token's scope and the user's role.
pub struct TokenOwner {
    pub username: String,
    pub scope: String,
    pub role: String,
}

/// The owner of a token (not disabled), marking the token used (at minute resolution, which is
/// enough to see which tokens are in use and spares a write per call).
pub async fn find_and_touch(db: &Db, token_sha256: &str) -> anyhow::Result<Option<TokenOwner>> {
    let row: Option<(i64, String, String, String)> = on!(db, c => sqlx::query_as(
        "SELECT t.id, u.username, t.scope, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_sha256 = $1 AND NOT u.disabled",
    )
    .bind(token_sha256)
    .fetch_optional(c).await)?;
    let Some((id, username, scope, role)) = row else {
        return Ok(None);
    };
    let now = Utc::now();
    on!(db, c => sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)")
        .bind(Time::from(now))
        .bind(id)
        .bind(Time::from(now - chrono::Duration::seconds(60)))
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(Some(TokenOwner {
        username,
        scope,
        role,
    }))
}

/// An API token as listed (the secret itself is never shown again).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ApiTokenInfo {
    pub id: i64,
    pub name: String,
    pub username: String,
    /// `read`, `operate` or `admin`.
    pub scope: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

pub async fn list(db: &Db) -> anyhow::Result<Vec<ApiTokenInfo>> {
    Ok(on!(db, c => sqlx::query(
        "SELECT t.id, t.name, u.username, t.scope, t.created_at, t.last_used_at FROM api_tokens t
         JOIN users u ON u.id = t.user_id ORDER BY t.id",
    )
    .fetch_all(c)
    .await?
    .iter()
    .map(|r| ApiTokenInfo {
        id: r.get("id"),
        name: r.get("name"),
        username: r.get("username"),
        scope: r.get("scope"),
        created_at: r.get("created_at"),
        last_used_at: r.get("last_used_at"),
    })
    .collect()))
}

pub async fn delete(db: &Db, id: i64) -> anyhow::Result<bool> {
    let n = on!(db, c => sqlx::query("DELETE FROM api_tokens WHERE id = $1")
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Where the generated integration token's SHA-256 is kept.
const INTEGRATION_SHA256: &str = "integration_token_sha256";
/// Where releases before hashing kept the generated token itself.
const INTEGRATION_PLAIN: &str = "integration_token";

/// The SHA-256 of the generated integration token. A token stored in plain text by an older
/// release is replaced by its hash here, so it keeps working and stops being readable.
pub async fn integration_sha256(
    db: &Db,
    hash: impl Fn(&str) -> String,
) -> anyhow::Result<Option<String>> {
    let mut tx = db.begin().await?;
    let plain: Option<String> = on!(&mut *tx, c => sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(INTEGRATION_PLAIN)
        .fetch_optional(c).await)?;
    if let Some(plain) = plain {
        set(&mut tx, INTEGRATION_SHA256, &hash(&plain)).await?;
        on!(&mut *tx, c => sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(INTEGRATION_PLAIN)
            .execute(c).await.map(|r| r.rows_affected()))?;
    }
    let hashed: Option<String> = on!(&mut *tx, c => sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(INTEGRATION_SHA256)
        .fetch_optional(c).await)?;
    tx.commit().await?;
    Ok(hashed)
}

pub async fn set_integration_sha256(db: &Db, sha256: &str) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    set(&mut tx, INTEGRATION_SHA256, sha256).await?;
    tx.commit().await?;
    Ok(())
}

async fn set(tx: &mut Conn, key: &str, value: &str) -> anyhow::Result<()> {
    on!(&mut *tx, c => sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

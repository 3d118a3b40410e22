//! The `users` table: names, argon2id password hashes, roles and the disabled flag.

use super::{time_now, Cols, Conn, Db};

/// What the login and request checks need to know about a user.
#[derive(Debug, Clone)]
pub struct UserAuth {
    pub id: i64,
    pub password_hash: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    pub disabled: bool,
}

/// Creates a user (with the column's default role, `admin`, for the first user and the
/// command line), or replaces the password hash of an existing one. Replacing it ends every
/// session of that user in the same transaction, so an old cookie cannot outlive the old
/// password (cached Basic credentials are checked against the hash: `auth::BasicCache`).
pub async fn upsert(db: &Db, username: &str, password_hash: &str) -> anyhow::Result<i64> {
    let mut tx = db.begin().await?;
    let id: i64 = on!(&mut *tx, c => sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, created_at) VALUES ($1, $2, $3)
         ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash RETURNING id",
    )
    .bind(username)
    .bind(password_hash)
    .bind(time_now())
    .fetch_one(c).await)?;
    end_sessions(&mut tx, id).await?;
    tx.commit().await?;
    Ok(id)
}

/// Creates a user with a role; false when the name is taken.
pub async fn create(
    db: &Db,
    username: &str,
    password_hash: &str,
    role: &str,
) -> anyhow::Result<bool> {
    let r = on!(db, c => sqlx::query(
        "INSERT INTO users (username, password_hash, created_at, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT(username) DO NOTHING",
    )
    .bind(username)
    .bind(password_hash)
    .bind(time_now())
    .bind(role)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(r > 0)
}

/// Why a change to roles or the disabled flag was not made.
#[derive(Debug, PartialEq, Eq)]
pub enum AccessChange {
    Done,
    NoSuchUser,
    /// It would leave no enabled admin.
    LastAdmin,
}

/// Sets a user's role and/or disabled flag. Disabling ends the user's sessions. Refused when
/// no enabled admin would be left, checked in the same transaction as the change.
pub async fn set_access(
    db: &Db,
    username: &str,
    role: Option<&str>,
    disabled: Option<bool>,
) -> anyhow::Result<AccessChange> {
    let mut tx = db.begin().await?;
    let id: Option<i64> = on!(&mut *tx, c => sqlx::query_scalar(
        "UPDATE users SET role = COALESCE($1, role), disabled = COALESCE($2, disabled)
         WHERE username = $3 RETURNING id",
    )
    .bind(role)
    .bind(disabled)
    .bind(username)
    .fetch_optional(c).await)?;
    let Some(id) = id else {
        return Ok(AccessChange::NoSuchUser);
    };
    let admins: i64 = on!(&mut *tx, c => sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin' AND NOT disabled")
            .fetch_one(c).await)?;
    if admins == 0 {
        return Ok(AccessChange::LastAdmin);
    }
    if disabled == Some(true) {
        end_sessions(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(AccessChange::Done)
}

async fn end_sessions(tx: &mut Conn, user_id: i64) -> anyhow::Result<()> {
    on!(&mut *tx, c => sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn count(db: &Db) -> anyhow::Result<i64> {
    Ok(
        on!(db, c => sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(c).await)?,
    )
}

pub async fn find(db: &Db, username: &str) -> anyhow::Result<Option<UserAuth>> {
    let row: Option<(i64, String, String, bool)> = on!(db, c => sqlx::query_as("SELECT id, password_hash, role, disabled FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(c).await)?;
    Ok(row.map(|(id, password_hash, role, disabled)| UserAuth {
        id,
        password_hash,
        role,
        disabled,
    }))
}

/// The id and password hash of a user.
pub async fn credentials(db: &Db, username: &str) -> anyhow::Result<Option<(i64, String)>> {
    Ok(find(db, username).await?.map(|u| (u.id, u.password_hash)))
}

pub async fn id_of(db: &Db, username: &str) -> anyhow::Result<Option<i64>> {
    Ok(find(db, username).await?.map(|u| u.id))
}

/// A user as listed (never the hash).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UserInfo {
    pub username: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    pub disabled: bool,
    pub created_at: String,
}

pub async fn list(db: &Db) -> anyhow::Result<Vec<UserInfo>> {
    Ok(
        on!(db, c => sqlx::query("SELECT username, role, disabled, created_at FROM users ORDER BY username")
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| UserInfo {
            username: r.get("username"),
            role: r.get("role"),
            disabled: r.get("disabled"),
            created_at: r.get("created_at"),
        })
        .collect()),
    )
}

//! The `users` table: names, argon2id password hashes, roles and the disabled flag.

use super::{now, Db};

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
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)
         ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash RETURNING id",
    )
    .bind(username)
    .bind(password_hash)
    .bind(now())
    .fetch_one(&mut *tx)
    .await?;
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
    let r = sqlx::query(
        "INSERT INTO users (username, password_hash, created_at, role) VALUES (?, ?, ?, ?)
         ON CONFLICT(username) DO NOTHING",
    )
    .bind(username)
    .bind(password_hash)
    .bind(now())
    .bind(role)
    .execute(db)
    .await?;
    Ok(r.rows_affected() > 0)
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
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE users SET role = COALESCE(?, role), disabled = COALESCE(?, disabled)
         WHERE username = ? RETURNING id",
    )
    .bind(role)
    .bind(disabled)
    .bind(username)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        return Ok(AccessChange::NoSuchUser);
    };
    let admins: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0")
            .fetch_one(&mut *tx)
            .await?;
    if admins == 0 {
        return Ok(AccessChange::LastAdmin);
    }
    if disabled == Some(true) {
        end_sessions(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(AccessChange::Done)
}

async fn end_sessions(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    user_id: i64,
) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = ?")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn count(db: &Db) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(db)
        .await?)
}

pub async fn find(db: &Db, username: &str) -> anyhow::Result<Option<UserAuth>> {
    let row: Option<(i64, String, String, bool)> =
        sqlx::query_as("SELECT id, password_hash, role, disabled FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(db)
            .await?;
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
    let rows: Vec<(String, String, bool, String)> =
        sqlx::query_as("SELECT username, role, disabled, created_at FROM users ORDER BY username")
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(username, role, disabled, created_at)| UserInfo {
            username,
            role,
            disabled,
            created_at,
        })
        .collect())
}

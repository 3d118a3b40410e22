//! Failed logins (`login_failures`): per key (a user name at an address, or an address), how
//! many and when the last was. In the database rather than in memory, so that every instance
//! on one database applies the same back-off, whichever of them a guess reaches.

use chrono::{DateTime, Utc};

use super::{Cols, Db, Result, Time};

/// What a key counts: a user name at an address, or an address over all names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Name,
    Address,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Name => "name",
            Kind::Address => "address",
        }
    }
}

/// The failures counted under `key` since `since` (older ones are forgotten): count and time of
/// the last one.
pub async fn get(
    db: &Db,
    kind: Kind,
    key: &str,
    since: DateTime<Utc>,
) -> Result<Option<(i64, String)>> {
    Ok(on!(db, c => sqlx::query(
        "SELECT count, last_at FROM login_failures WHERE kind = $1 AND key = $2 AND last_at >= $3",
    )
    .bind(kind.as_str())
    .bind(key)
    .bind(Time::from(since))
    .fetch_optional(c)
    .await?
    .map(|r| (r.get("count"), r.get("last_at")))))
}

/// Counts one more failure under `key` at `at` (starting again from one when the last was
/// before `since`), forgets what is older than `since`, and keeps at most `capacity` keys of
/// the kind (the most recent): a flood of made-up names cannot grow the table.
pub async fn fail(
    db: &Db,
    kind: Kind,
    key: &str,
    at: DateTime<Utc>,
    since: DateTime<Utc>,
    capacity: i64,
) -> Result<()> {
    let mut tx = super::begin_immediate(db).await?;
    on!(&mut *tx, c => sqlx::query(
        "INSERT INTO login_failures (kind, key, count, last_at) VALUES ($1, $2, 1, $3)
         ON CONFLICT(kind, key) DO UPDATE SET
            count = CASE WHEN login_failures.last_at < $4 THEN 1 ELSE login_failures.count + 1 END,
            last_at = excluded.last_at",
    )
    .bind(kind.as_str())
    .bind(key)
    .bind(Time::from(at))
    .bind(Time::from(since))
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    on!(&mut *tx, c => sqlx::query("DELETE FROM login_failures WHERE last_at < $1")
        .bind(Time::from(since))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    on!(&mut *tx, c => sqlx::query(
        "DELETE FROM login_failures WHERE kind = $1 AND key NOT IN (
            SELECT key FROM login_failures WHERE kind = $1
            ORDER BY last_at DESC, count DESC LIMIT $2)",
    )
    .bind(kind.as_str())
    .bind(capacity)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await
}

/// Forgets the failures under `key` (a successful login).
pub async fn clear(db: &Db, kind: Kind, key: &str) -> Result<()> {
    on!(db, c => sqlx::query("DELETE FROM login_failures WHERE kind = $1 AND key = $2")
        .bind(kind.as_str())
        .bind(key)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Keys held of a kind.
pub async fn count(db: &Db, kind: Kind) -> Result<i64> {
    on!(db, c => sqlx::query_scalar("SELECT COUNT(*) FROM login_failures WHERE kind = $1")
        .bind(kind.as_str())
        .fetch_one(c)
        .await)
}

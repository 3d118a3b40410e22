//! The embedded SQLite database: connection, schema migrations, and the time format every table
//! uses.
//!
//! Every SQL statement of the server lives under this folder, one module per entity with its
//! queries next to its types; domain code calls these typed functions and names only the aliases
//! below ([`Db`], [`Conn`], [`Tx`], [`Error`], [`Result`]), so a second backend (PostgreSQL,
//! issue 9) can replace what they stand for without touching the callers.
//!
//! What is SQLite-specific today, for that second backend:
//! - `?` placeholders (PostgreSQL numbers them `$1`), `?1` re-used by number in a few statements;
//! - `BEGIN IMMEDIATE` ([`begin_immediate`]) to take the write lock up front;
//! - `MAX(a, b)` as a scalar function (`GREATEST` elsewhere) in `version_status`;
//! - `IS` as a null-safe comparison in `devices::upsert` (`IS NOT DISTINCT FROM` elsewhere);
//! - times as RFC 3339 text compared as text ([`fmt_time`]);
//! - `LIKE` is case-insensitive for ASCII in SQLite (`ILIKE` on PostgreSQL) in the device search;
//! - the device search's FTS5 trigram table `devices_search` kept by triggers (PostgreSQL: a
//!   pg_trgm GIN index on the same columns serves `ILIKE '%…%'`), its rowid join, the virtual
//!   generated column `devices.model`, `json_extract` for `tag=`, `INDEXED BY` and unary `+` to
//!   steer the planner between the sort indexes and `devices_changed` (all in `devices`);
//! - the 32766 bound values per statement that size the ingest batches in `uplinks`;
//! - booleans stored as 0/1 integers (`campaigns.started`).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub mod campaigns;
pub mod device_events;
pub mod devices;
pub mod downlinks;
pub mod firmware;
pub mod firmware_history;
pub mod integration_events;
pub mod sessions;
pub mod tokens;
pub mod uplinks;
pub mod users;
pub mod version_status;

/// The database handle shared by the whole server.
pub type Db = SqlitePool;

/// A statement still taking binds; helpers that bind a shared column list take and return it.
pub(crate) type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;
/// One connection, or an open transaction seen through it: what functions that must run inside
/// a caller's transaction take.
pub type Conn = sqlx::SqliteConnection;

/// Deletes all but the newest `keep` rows of a device in a per-device log table (`uplinks`,
/// `device_events`): rows are newest by `id`.
pub(crate) async fn keep_newest(
    conn: &mut Conn,
    table: &'static str,
    dev_eui: &str,
    keep: u32,
) -> Result<()> {
    // `table` is one of this module's constants, never input: formatting it in is safe.
    let sql = format!(
        "DELETE FROM {table} WHERE dev_eui = ?1 AND id <= (
            SELECT id FROM {table} WHERE dev_eui = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)"
    );
    sqlx::query(&sql)
        .bind(dev_eui)
        .bind(i64::from(keep))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
/// An open transaction; commits with [`commit`], rolls back when dropped.
pub type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;
/// A savepoint inside a [`Tx`].
pub type Savepoint<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;
pub type Error = sqlx::Error;
pub type Result<T> = std::result::Result<T, Error>;

/// Opens (creating if needed) and migrates the database.
pub async fn connect(url: &str) -> anyhow::Result<Db> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("database url {url:?}"))?
        .create_if_missing(true)
        // WAL lets the console read while the ingest writer commits; NORMAL keeps every commit
        // durable against a process crash, which is what "2xx means committed" promises.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .with_context(|| format!("opening database {url}"))?;
    restrict_database_files(url);
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("migrating the database schema")?;
    Ok(pool)
}

/// The database holds password and token hashes: owner-only files, whatever the umask.
fn restrict_database_files(url: &str) {
    #[cfg(unix)]
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        use std::os::unix::fs::PermissionsExt;
        let path = path.split('?').next().unwrap_or(path);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::set_permissions(
                format!("{path}{suffix}"),
                std::fs::Permissions::from_mode(0o600),
            );
        }
    }
}

/// Times are stored as RFC 3339 UTC text with milliseconds, so text order is time order.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub fn now() -> String {
    fmt_time(Utc::now())
}

pub async fn get_setting(db: &Db, key: &str) -> anyhow::Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn set_setting(db: &Db, key: &str, value: &str) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(db)
        .await?;
    Ok(())
}

/// A connection of its own from the pool; derefs to [`Conn`].
pub type Pooled = sqlx::pool::PoolConnection<sqlx::Sqlite>;

pub async fn acquire(db: &Db) -> Result<Pooled> {
    db.acquire().await
}

/// Closes a connection instead of handing it back to the pool: after a failed COMMIT (a full
/// disk) SQLite may already have rolled back while sqlx still counts the transaction as open,
/// and every later BEGIN on that connection would be refused.
pub fn discard(mut conn: Pooled) {
    conn.close_on_drop();
}

/// Opens a transaction.
pub async fn begin(db: &Db) -> Result<Tx> {
    db.begin().await
}

/// Opens a transaction that holds the write lock from its start: a deferred transaction that
/// reads first and then writes fails at once with "database is locked" when another writer (the
/// device-list sync, a campaign) committed in between, and no busy timeout helps with that.
pub async fn begin_immediate(db: &Db) -> Result<Tx> {
    db.begin_with("BEGIN IMMEDIATE").await
}

/// [`begin_immediate`] on a connection the caller holds (and may [`discard`] if it fails).
pub async fn begin_immediate_on(conn: &mut Conn) -> Result<Savepoint<'_>> {
    sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await
}

/// Opens a savepoint inside a transaction, so that one failing event does not cost the others.
pub async fn savepoint<'a>(tx: &'a mut Savepoint<'_>) -> Result<Savepoint<'a>> {
    sqlx::Connection::begin(&mut **tx).await
}

/// Commits a transaction (or releases a savepoint).
pub async fn commit(tx: Savepoint<'_>) -> Result<()> {
    tx.commit().await
}

pub async fn commit_savepoint(sp: Savepoint<'_>) -> Result<()> {
    sp.commit().await
}

/// One trivial statement: whether the database answers (`/health`).
pub async fn ping(db: &Db) -> Result<()> {
    sqlx::query_scalar::<_, i64>("SELECT 1")
        .fetch_one(db)
        .await
        .map(|_| ())
}

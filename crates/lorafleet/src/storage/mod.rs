//! The database: SQLite (embedded, the default) or PostgreSQL, behind one set of typed storage
//! functions; connection, schema migrations, and the time format every table uses.
//!
//! Every SQL statement of the server lives under this folder, one module per entity with its
//! queries next to its types; domain code calls these typed functions and names only the types
//! below ([`Db`], [`Conn`], [`Tx`], [`Error`], [`Result`]), never sqlx.
//!
//! # Two backends, one code path
//! `server.database_url` picks the backend: empty (the file in `server.data_dir`),
//! `sqlite://...` or `postgres://...`. [`Db`] is an enum of the two pools; [`Conn`] is any
//! connection or transaction of either (`&mut Conn` is what functions that run inside a
//! caller's transaction take; a [`Tx`] or a [`Pooled`] connection derefs to it). A storage
//! function is written once: the [`on!`] macro expands its body once per backend, so the same
//! tokens are type-checked against SQLite and against PostgreSQL, and the SQL text is shared:
//! - placeholders are `$1`, `$2`, ... (sqlx's SQLite accepts them; a number may repeat);
//! - rows are read through [`Cols::get`] (`r.get("col")`), which reads a PostgreSQL
//!   `timestamptz` as the same RFC 3339 text SQLite stores, and any integer as `i64`;
//! - times are bound as [`Time`] (text on SQLite, `timestamptz` on PostgreSQL);
//! - booleans are bound as `bool` and tested as `NOT col` / `col = TRUE` (SQLite stores 0/1);
//! - `IS NOT DISTINCT FROM`, `NULLS FIRST`/`NULLS LAST`, `CASE` instead of two-argument `MAX`;
//! - where the dialects really differ (`ILIKE`, `BEGIN IMMEDIATE`), [`Backend::is_postgres`]
//!   picks the text, in the storage function, never in the caller.
//!
//! ```ignore
//! pub async fn set_joined(conn: &mut Conn, dev_eui: &str, at: &str) -> Result<()> {
//!     on!(conn, c => sqlx::query("UPDATE devices SET joined_at = $1 WHERE dev_eui = $2")
//!         .bind(time(at))
//!         .bind(dev_eui)
//!         .execute(c)
//!         .await)?;
//!     Ok(())
//! }
//! ```
//! Inside `on!(x, c => ...)`, `c` is the concrete pool or connection of the backend (`&mut
//! *c` to use a connection twice); rows must be turned into domain values inside the body (a
//! `SqliteRow` and a `PgRow` are different types), with helpers taking `&impl Cols`.
//! `on!(x, c, DB => ...)` also names the backend's sqlx type, for `sqlx::QueryBuilder::<DB>`.
//!
//! Porting a function written for SQLite alone: `?` becomes `$1`, `$2`, ...; wrap each sqlx
//! call in `on!` with `c` as its executor (`.execute(c).await.map(|r| r.rows_affected())`:
//! the two backends' query results differ); bind times with [`time`] / [`Time::from`] /
//! [`time_now`] instead of text; read rows in the body, with `r.get::<T>("col")` (one type
//! argument) or a helper taking `&impl Cols` instead of `&SqliteRow`; take `&mut Conn` where
//! a `&mut sqlx::Transaction` was taken and pass `&mut *tx`; `db.begin()`, `tx.commit()` and
//! `db.acquire()` keep working. Then add the schema change to both migration folders.
//!
//! # Times
//! PostgreSQL stores `timestamptz`. SQLite has no time type: it stores RFC 3339 UTC text with
//! milliseconds ([`fmt_time`]), always in that one format, so text order is time order and
//! comparisons and indexes in SQL stay correct. The storage API speaks that text on both.
//!
//! # Migrations
//! `migrations/*.sql` are SQLite's, `migrations/postgres/*.sql` PostgreSQL's; both applied at
//! start. A schema change adds a file to each.
//!
//! What remains backend-specific: SQLite's 32766 bound values per statement size the ingest
//! batches in `uplinks` (PostgreSQL allows 65535); SQLite takes the write lock with `BEGIN
//! IMMEDIATE` ([`begin_immediate`]), PostgreSQL locks rows as it writes.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgConnectOptions, PgPoolOptions, PgRow, PgTypeInfo};
use sqlx::sqlite::{
    SqliteArgumentValue, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous, SqliteTypeInfo,
};
use sqlx::{
    Column, Encode, PgConnection, PgPool, Postgres, Row, Sqlite, SqliteConnection, SqlitePool,
    Type, TypeInfo,
};

/// Runs a body once per backend: `on!(db_or_conn, c => body)` or `on!(x, c, DB => body)`.
/// The module docs say how to write a storage function with it.
macro_rules! on {
    ($target:expr, $c:ident => $body:expr) => {
        match $crate::storage::Split::split($target) {
            $crate::storage::Either::Sqlite($c) => $body,
            $crate::storage::Either::Postgres($c) => $body,
        }
    };
    ($target:expr, $c:ident, $db:ident => $body:expr) => {
        match $crate::storage::Split::split($target) {
            $crate::storage::Either::Sqlite($c) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            $crate::storage::Either::Postgres($c) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on;

pub mod advisory;
pub mod campaigns;
pub mod device_events;
pub mod device_identity;
pub mod devices;
pub mod downlinks;
pub mod firmware;
pub mod firmware_blobs;
pub mod firmware_history;
pub mod firmware_management;
pub mod integration_events;
pub mod login_failures;
pub mod notify;
pub mod sessions;
pub mod tokens;
pub mod uplinks;
pub mod users;
pub mod version_status;

/// The database handle shared by the whole server.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Opens a transaction ([`begin`]).
    pub async fn begin(&self) -> Result<Tx> {
        begin(self).await
    }

    /// A connection of its own ([`acquire`]).
    pub async fn acquire(&self) -> Result<Pooled> {
        acquire(self).await
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// One of the two backends' values.
pub enum Either<S, P> {
    Sqlite(S),
    Postgres(P),
}

/// A connection of either backend. `&mut Conn` is what functions that must run inside a
/// caller's transaction take.
pub trait Backend: Send {
    fn backend(&mut self) -> Either<&mut SqliteConnection, &mut PgConnection>;
    fn is_postgres(&mut self) -> bool {
        matches!(self.backend(), Either::Postgres(_))
    }
}
impl Backend for SqliteConnection {
    fn backend(&mut self) -> Either<&mut SqliteConnection, &mut PgConnection> {
        Either::Sqlite(self)
    }
}
impl Backend for PgConnection {
    fn backend(&mut self) -> Either<&mut SqliteConnection, &mut PgConnection> {
        Either::Postgres(self)
    }
}

/// One connection, or an open transaction seen through it. A [`Tx`] or a [`Pooled`]
/// connection coerces to `&mut Conn` as is; a transaction on a borrowed connection (a
/// [`Savepoint`] with a lifetime) is passed as `&mut *sp`.
pub type Conn = dyn Backend;

/// What [`on!`] takes apart: a pool, a connection, a transaction.
pub trait Split {
    type S;
    type P;
    fn split(self) -> Either<Self::S, Self::P>;
}
impl<'a> Split for &'a Db {
    type S = &'a SqlitePool;
    type P = &'a PgPool;
    fn split(self) -> Either<Self::S, Self::P> {
        match self {
            Db::Sqlite(p) => Either::Sqlite(p),
            Db::Postgres(p) => Either::Postgres(p),
        }
    }
}
impl<'a, 'b> Split for &'a mut (dyn Backend + 'b) {
    type S = &'a mut SqliteConnection;
    type P = &'a mut PgConnection;
    fn split(self) -> Either<Self::S, Self::P> {
        self.backend()
    }
}
impl<'a, 'b> Split for &'a mut Savepoint<'b> {
    type S = &'a mut SqliteConnection;
    type P = &'a mut PgConnection;
    fn split(self) -> Either<Self::S, Self::P> {
        (**self).backend()
    }
}

/// Reading a column the same way from both backends' rows.
pub trait Cols {
    fn get<T: Col>(&self, name: &str) -> T;
}
impl Cols for SqliteRow {
    fn get<T: Col>(&self, name: &str) -> T {
        T::sqlite(self, name)
    }
}
impl Cols for PgRow {
    fn get<T: Col>(&self, name: &str) -> T {
        T::postgres(self, name)
    }
}

/// A column type both backends read; like sqlx's `Row::get` it panics on a column that is
/// missing or of the wrong type (a bug in the statement, never in the data).
pub trait Col: Sized {
    fn sqlite(r: &SqliteRow, name: &str) -> Self;
    fn postgres(r: &PgRow, name: &str) -> Self;
}

fn pg_type(r: &PgRow, name: &str) -> String {
    r.try_column(name)
        .map(|c| c.type_info().name().to_string())
        .unwrap_or_default()
}

macro_rules! plain_col {
    ($($t:ty),*) => {$(
        impl Col for $t {
            fn sqlite(r: &SqliteRow, name: &str) -> Self { Row::get(r, name) }
            fn postgres(r: &PgRow, name: &str) -> Self { Row::get(r, name) }
        }
    )*};
}
plain_col!(
    f64,
    Option<f64>,
    bool,
    Option<bool>,
    Vec<u8>,
    Option<Vec<u8>>
);

impl Col for Option<String> {
    fn sqlite(r: &SqliteRow, name: &str) -> Self {
        Row::get(r, name)
    }
    fn postgres(r: &PgRow, name: &str) -> Self {
        if pg_type(r, name) == "TIMESTAMPTZ" {
            Row::get::<Option<DateTime<Utc>>, _>(r, name).map(fmt_time)
        } else {
            Row::get(r, name)
        }
    }
}
impl Col for String {
    fn sqlite(r: &SqliteRow, name: &str) -> Self {
        Row::get(r, name)
    }
    fn postgres(r: &PgRow, name: &str) -> Self {
        <Option<String> as Col>::postgres(r, name).unwrap_or_default()
    }
}
impl Col for Option<i64> {
    fn sqlite(r: &SqliteRow, name: &str) -> Self {
        Row::get(r, name)
    }
    fn postgres(r: &PgRow, name: &str) -> Self {
        match pg_type(r, name).as_str() {
            "INT4" => Row::get::<Option<i32>, _>(r, name).map(i64::from),
            "INT2" => Row::get::<Option<i16>, _>(r, name).map(i64::from),
            _ => Row::get(r, name),
        }
    }
}
impl Col for i64 {
    fn sqlite(r: &SqliteRow, name: &str) -> Self {
        Row::get(r, name)
    }
    fn postgres(r: &PgRow, name: &str) -> Self {
        <Option<i64> as Col>::postgres(r, name).unwrap_or_default()
    }
}

/// A time to bind: RFC 3339 text on SQLite (as [`fmt_time`] writes it), `timestamptz` on
/// PostgreSQL.
#[derive(Debug, Clone)]
pub struct Time(String);

/// A stored time (text as [`fmt_time`] writes it) to bind.
pub fn time(at: &str) -> Time {
    Time(at.to_string())
}

impl From<DateTime<Utc>> for Time {
    fn from(t: DateTime<Utc>) -> Self {
        Time(fmt_time(t))
    }
}

impl Type<Sqlite> for Time {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}
impl<'q> Encode<'q, Sqlite> for Time {
    fn encode_by_ref(
        &self,
        buf: &mut Vec<SqliteArgumentValue<'q>>,
    ) -> std::result::Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(self.0.clone(), buf)
    }
}
impl Type<Postgres> for Time {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}
impl Encode<'_, Postgres> for Time {
    fn encode_by_ref(
        &self,
        buf: &mut PgArgumentBuffer,
    ) -> std::result::Result<IsNull, BoxDynError> {
        let t = parse_time(&self.0).ok_or_else(|| format!("not an RFC 3339 time: {:?}", self.0))?;
        <DateTime<Utc> as Encode<'_, Postgres>>::encode_by_ref(&t, buf)
    }
}

/// A value both backends bind.
pub trait Value<'q>:
    'q + Send + Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>
{
}
impl<'q, T> Value<'q> for T where
    T: 'q + Send + Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>
{
}

/// A statement of either backend still taking binds: helpers that bind a shared column list
/// take and return `impl Binds<'q>`.
pub trait Binds<'q>: Sized {
    fn bind<T: Value<'q>>(self, value: T) -> Self;
}
impl<'q> Binds<'q> for sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    fn bind<T: Value<'q>>(self, value: T) -> Self {
        sqlx::query::Query::bind(self, value)
    }
}
impl<'q> Binds<'q> for sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    fn bind<T: Value<'q>>(self, value: T) -> Self {
        sqlx::query::Query::bind(self, value)
    }
}

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
        "DELETE FROM {table} WHERE dev_eui = $1 AND id <= (
            SELECT id FROM {table} WHERE dev_eui = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)"
    );
    on!(conn, c => sqlx::query(&sql)
        .bind(dev_eui)
        .bind(i64::from(keep))
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// [`keep_newest`] for many devices in one statement per 500: the ingest writer prunes every
/// device of a group at once instead of paying a round trip per device.
pub(crate) async fn keep_newest_of(
    conn: &mut Conn,
    table: &'static str,
    dev_euis: &[&str],
    keep: u32,
) -> Result<()> {
    for chunk in dev_euis.chunks(500) {
        on!(&mut *conn, c, DB => {
            // `table` is one of this module's constants, never input: formatting it in is safe.
            let mut q = sqlx::QueryBuilder::<DB>::new(format!(
                "DELETE FROM {table} WHERE id IN (SELECT id FROM (
                    SELECT id, ROW_NUMBER() OVER (PARTITION BY dev_eui ORDER BY id DESC) AS rn
                    FROM {table} WHERE dev_eui IN ("
            ));
            let mut list = q.separated(", ");
            for eui in chunk {
                list.push_bind(*eui);
            }
            q.push(")) AS ranked WHERE rn > ");
            q.push_bind(i64::from(keep));
            q.push(")");
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

/// An open transaction (or a savepoint inside one); commits with [`commit`], rolls back when
/// dropped. Derefs to [`Conn`].
pub enum Savepoint<'a> {
    Sqlite(sqlx::Transaction<'a, Sqlite>),
    Postgres(sqlx::Transaction<'a, Postgres>),
}
/// An open transaction of its own.
pub type Tx = Savepoint<'static>;

impl Savepoint<'_> {
    /// Commits the transaction (or releases the savepoint).
    pub async fn commit(self) -> Result<()> {
        commit(self).await
    }
}

impl Backend for Savepoint<'_> {
    fn backend(&mut self) -> Either<&mut SqliteConnection, &mut PgConnection> {
        match self {
            Savepoint::Sqlite(t) => Either::Sqlite(t),
            Savepoint::Postgres(t) => Either::Postgres(t),
        }
    }
}
impl Backend for Pooled {
    fn backend(&mut self) -> Either<&mut SqliteConnection, &mut PgConnection> {
        match self {
            Pooled::Sqlite(c) => Either::Sqlite(c),
            Pooled::Postgres(c) => Either::Postgres(c),
        }
    }
}

impl Deref for Savepoint<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        match self {
            Savepoint::Sqlite(t) => {
                let c: &SqliteConnection = t;
                c
            }
            Savepoint::Postgres(t) => {
                let c: &PgConnection = t;
                c
            }
        }
    }
}
impl DerefMut for Savepoint<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        match self {
            Savepoint::Sqlite(t) => {
                let c: &mut SqliteConnection = t;
                c
            }
            Savepoint::Postgres(t) => {
                let c: &mut PgConnection = t;
                c
            }
        }
    }
}

pub type Error = sqlx::Error;
pub type Result<T> = std::result::Result<T, Error>;

/// How much of an SQLite file is read through a memory map (address space, not memory: the
/// pages are the operating system's file cache).
const MMAP_BYTES: u64 = 1 << 30;

/// Connects to (creating an SQLite file if needed) and migrates the database named by a
/// `sqlite:` or `postgres:` URL.
pub async fn connect(url: &str) -> anyhow::Result<Db> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        return connect_postgres(url).await;
    }
    if !url.starts_with("sqlite:") {
        anyhow::bail!(
            "server.database_url {:?}: expected sqlite://<file> or postgres://<user>@<host>/<database>",
            redact(url)
        );
    }
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("database url {url:?}"))?
        .create_if_missing(true)
        // WAL lets the console read while the ingest writer commits; NORMAL keeps every commit
        // durable against a process crash, which is what "2xx means committed" promises.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // Pages read through a memory map instead of a read() copy each: a connection whose
        // page cache another connection's commit made stale reads its pages again, which with
        // copies was a large share of the writer's and the console's time. Writes still go
        // through the WAL file, so durability is unchanged.
        .pragma("mmap_size", MMAP_BYTES.to_string());
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
    Ok(Db::Sqlite(pool))
}

async fn connect_postgres(url: &str) -> anyhow::Result<Db> {
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("database url {:?}", redact(url)))?;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .context("migrating the PostgreSQL schema")?;
    Ok(Db::Postgres(pool))
}

/// A database URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
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

/// The current time to bind.
pub fn time_now() -> Time {
    Time::from(Utc::now())
}

/// Real time, for what is not the fleet's: accounts, sessions and tokens, the firmware
/// library's files, and the runner's own scheduling (`next_poll_at`). Everything the fleet
/// sees (requests, downlinks, campaigns, device logs) is stamped with `Network::now` by its
/// caller, so a simulated network running faster than real time shows one clock (issue 10).
pub fn now() -> String {
    fmt_time(Utc::now())
}

pub async fn get_setting(db: &Db, key: &str) -> anyhow::Result<Option<String>> {
    Ok(
        on!(db, c => sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_optional(c)
        .await)?,
    )
}

pub async fn set_setting(db: &Db, key: &str, value: &str) -> anyhow::Result<()> {
    on!(db, c => sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// A connection of its own from the pool; derefs to [`Conn`].
pub enum Pooled {
    Sqlite(sqlx::pool::PoolConnection<Sqlite>),
    Postgres(sqlx::pool::PoolConnection<Postgres>),
}
impl Deref for Pooled {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        match self {
            Pooled::Sqlite(c) => {
                let c: &SqliteConnection = c;
                c
            }
            Pooled::Postgres(c) => {
                let c: &PgConnection = c;
                c
            }
        }
    }
}
impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        match self {
            Pooled::Sqlite(c) => {
                let c: &mut SqliteConnection = c;
                c
            }
            Pooled::Postgres(c) => {
                let c: &mut PgConnection = c;
                c
            }
        }
    }
}

pub async fn acquire(db: &Db) -> Result<Pooled> {
    Ok(match db {
        Db::Sqlite(p) => Pooled::Sqlite(p.acquire().await?),
        Db::Postgres(p) => Pooled::Postgres(p.acquire().await?),
    })
}

/// Closes a connection instead of handing it back to the pool: after a failed COMMIT (a full
/// disk) SQLite may already have rolled back while sqlx still counts the transaction as open,
/// and every later BEGIN on that connection would be refused.
pub fn discard(conn: Pooled) {
    match conn {
        Pooled::Sqlite(mut c) => c.close_on_drop(),
        Pooled::Postgres(mut c) => c.close_on_drop(),
    }
}

/// Opens a transaction.
pub async fn begin(db: &Db) -> Result<Tx> {
    Ok(match db {
        Db::Sqlite(p) => Savepoint::Sqlite(p.begin().await?),
        Db::Postgres(p) => Savepoint::Postgres(p.begin().await?),
    })
}

/// Opens a transaction that holds the write lock from its start: on SQLite a deferred
/// transaction that reads first and then writes fails at once with "database is locked" when
/// another writer (the device-list sync, a campaign) committed in between, and no busy timeout
/// helps with that. PostgreSQL locks rows as it writes: a plain BEGIN.
pub async fn begin_immediate(db: &Db) -> Result<Tx> {
    Ok(match db {
        Db::Sqlite(p) => Savepoint::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        Db::Postgres(p) => Savepoint::Postgres(p.begin().await?),
    })
}

/// [`begin_immediate`] on a connection the caller holds (and may [`discard`] if it fails).
pub async fn begin_immediate_on(conn: &mut Conn) -> Result<Savepoint<'_>> {
    Ok(match conn.backend() {
        Either::Sqlite(c) => {
            Savepoint::Sqlite(sqlx::Connection::begin_with(c, "BEGIN IMMEDIATE").await?)
        }
        Either::Postgres(c) => Savepoint::Postgres(sqlx::Connection::begin(c).await?),
    })
}

/// Opens a savepoint inside a transaction, so that one failing event does not cost the others.
pub async fn savepoint<'a>(tx: &'a mut Savepoint<'_>) -> Result<Savepoint<'a>> {
    Ok(match tx {
        Savepoint::Sqlite(t) => Savepoint::Sqlite(sqlx::Connection::begin(&mut **t).await?),
        Savepoint::Postgres(t) => Savepoint::Postgres(sqlx::Connection::begin(&mut **t).await?),
    })
}

/// Commits a transaction (or releases a savepoint).
pub async fn commit(tx: Savepoint<'_>) -> Result<()> {
    match tx {
        Savepoint::Sqlite(t) => t.commit().await,
        Savepoint::Postgres(t) => t.commit().await,
    }
}

pub async fn commit_savepoint(sp: Savepoint<'_>) -> Result<()> {
    commit(sp).await
}

/// One trivial statement: whether the database answers (`/health`).
pub async fn ping(db: &Db) -> Result<()> {
    on!(db, c => sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(c)
        .await
        .map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_hide_the_password() {
        assert_eq!(
            redact("postgres://lorafleet:secret@db:5432/lorafleet"),
            "postgres://lorafleet:***@db:5432/lorafleet"
        );
        assert_eq!(
            redact("sqlite:///data/lorafleet.db"),
            "sqlite:///data/lorafleet.db"
        );
    }

    #[tokio::test]
    async fn an_unknown_database_kind_is_refused_naming_the_key() {
        let e = connect("mysql://root:pw@localhost/x").await.unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("server.database_url"), "{text}");
        assert!(!text.contains("pw@"), "{text}");
    }

    /// Text order is time order for the SQLite format, which the SQL comparisons rely on.
    #[test]
    fn stored_times_sort_as_text_in_time_order() {
        let a = DateTime::parse_from_rfc3339("2026-12-04T09:59:59.999Z").unwrap();
        let b = DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z").unwrap();
        let (a, b) = (
            fmt_time(a.with_timezone(&Utc)),
            fmt_time(b.with_timezone(&Utc)),
        );
        assert!(a < b, "{a} {b}");
        assert_eq!(b, "2026-12-04T10:00:00.000Z");
    }
}

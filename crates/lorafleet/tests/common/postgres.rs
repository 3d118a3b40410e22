//! PostgreSQL for the integration tests. `scripts/test` starts a throw-away cluster and sets
//! `LORAFLEET_TEST_POSTGRES_URL` (its `postgres` database); its second nextest run also sets
//! `LORAFLEET_TEST_BACKEND=postgres`, and then every [`super::test_config`] gets a fresh database
//! of its own on that cluster (so nextest runs tests side by side). Tests that need PostgreSQL
//! whatever the backend (two instances on one database) call [`fresh_database`] themselves.

use std::sync::atomic::{AtomicU32, Ordering};

pub const URL_VAR: &str = "LORAFLEET_TEST_POSTGRES_URL";
pub const BACKEND_VAR: &str = "LORAFLEET_TEST_BACKEND";

/// Whether this run's tests use PostgreSQL (`LORAFLEET_TEST_BACKEND=postgres`).
pub fn backend_is_postgres() -> bool {
    std::env::var(BACKEND_VAR).is_ok_and(|b| b == "postgres")
}

/// A new empty database on the test cluster, as a URL; `None`, with a notice on stderr, when
/// `LORAFLEET_TEST_POSTGRES_URL` is not set (a developer without PostgreSQL). When it is set
/// (always in CI) and the cluster does not answer, this panics: the test fails, never skips.
pub fn fresh_database() -> Option<String> {
    let admin = match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!("notice: {URL_VAR} is not set; skipping what needs PostgreSQL (scripts/test starts one)");
            return None;
        }
    };
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!(
        "lorafleet_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let create = format!("CREATE DATABASE {name}");
    let url = admin.clone();
    // A thread of its own: test_config is synchronous and may be called inside a runtime.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("{URL_VAR}={url}: {e}"));
                sqlx::Executor::execute(&mut conn, create.as_str())
                    .await
                    .unwrap_or_else(|e| panic!("creating a test database on {url}: {e}"));
            })
    })
    .join()
    .unwrap();
    Some(with_database(&admin, &name))
}

/// `url` naming database `name` instead of the one it names.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let host_end = base
        .find("://")
        .map(|s| s + 3)
        .and_then(|s| base[s..].find('/').map(|i| s + i))
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs a body once per backend on a [`lorafleet::storage::Db`]: `on_db!(&app.db, p =>
/// sqlx::query("...$1...").bind(x).execute(p).await.unwrap())`, `p` being the backend's pool.
/// Statements use `$1` placeholders, which both accept.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            lorafleet::storage::Db::Sqlite($p) => $body,
            lorafleet::storage::Db::Postgres($p) => $body,
        }
    };
}

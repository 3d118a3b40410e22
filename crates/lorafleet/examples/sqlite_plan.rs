//! One SQL statement through the SQLite that lorafleet bundles (libsqlite3-sys), not the
//! system's `sqlite3` CLI: its `EXPLAIN QUERY PLAN` and the CPU time of running it. The two
//! SQLite versions plan some statements differently (BENCHMARKS.md, device list: a statement
//! of 0.3 ms in the CLI took tens of ms in the server), so a plan is read here.
//!
//! Usage: sqlite_plan <database file> <runs> <sql> [bind ...]
//! A bind that parses as a whole number is bound as one, everything else as text, in order
//! (`$1`, `$2`, ... in the SQL, as the storage layer writes them). The database is opened
//! read-only.
// A tool: a panic is its report.
#![allow(clippy::unwrap_used)]

use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Connection, Row};

/// User + system CPU time of this process, in clock ticks (100 per second on Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn bound<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    binds: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for b in binds {
        query = match b.parse::<i64>() {
            Ok(n) => query.bind(n),
            Err(_) => query.bind(b.as_str()),
        };
    }
    query
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: sqlite_plan <database file> <runs> <sql> [bind ...]"
    );
    let runs: u32 = args[2].parse()?;
    let sql = &args[3];
    let binds = &args[4..];
    let options = SqliteConnectOptions::new()
        .filename(&args[1])
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&mut conn)
        .await?;
    println!("SQLite {version}");
    let plan_sql = format!("EXPLAIN QUERY PLAN {sql}");
    let plan: Vec<SqliteRow> = bound(sqlx::query(&plan_sql), binds)
        .fetch_all(&mut conn)
        .await?;
    for row in &plan {
        let (id, parent): (i64, i64) = (row.get(0), row.get(1));
        let detail: String = row.get(3);
        println!("{id:>4} {parent:>4}  {detail}");
    }
    let mut rows = 0;
    let (t0, c0) = (std::time::Instant::now(), cpu_ticks());
    for _ in 0..runs {
        rows = bound(sqlx::query(sql), binds)
            .fetch_all(&mut conn)
            .await?
            .len();
    }
    let (wall, cpu) = (t0.elapsed(), cpu_ticks() - c0);
    let n = f64::from(runs.max(1));
    println!(
        "{rows} rows; per run: {:.2} ms CPU, {:.2} ms elapsed ({runs} runs)",
        cpu as f64 * 10.0 / n,
        wall.as_secs_f64() * 1e3 / n
    );
    Ok(())
}

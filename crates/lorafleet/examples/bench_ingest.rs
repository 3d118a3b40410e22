//! Ingest and device-list benchmark against the real release binary (see scripts/bench).
//!
//! 1. Sustained ChirpStack v4 JSON uplinks over HTTP from concurrent clients, database on:
//!    events/s and latency percentiles.
//! 2. `GET /api/devices` latency with 100,000 devices in the database.
//! 3. The server's resident memory with 100,000 devices.
//!
//! Usage: bench_ingest <path to lorafleet binary> [seconds] [devices] [concurrency]
//!
//! With `BENCH_MIX=1`: the realistic mix over HTTP and over MQTT instead (support/bench_mqtt.rs);
//! with `BENCH_TWO_INSTANCES=1` (and `BENCH_POSTGRES_URL`): the mix over HTTP against two
//! instances sharing one PostgreSQL database.
//! With `BENCH_POSTGRES_URL=postgres://...`: lorafleet on a new database of that PostgreSQL
//! server instead of SQLite.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;

#[path = "support/bench_mqtt.rs"]
mod bench_mqtt;

const TOKEN: &str = "bench-integration-token";
const PASSWORD: &str = "bench-password-123";

fn uplink(eui: u64, f_cnt: u32) -> String {
    serde_json::json!({
        // One id per frame, as ChirpStack gives: a repeated id is stored once.
        "deduplicationId": format!("{eui:016x}-{f_cnt:08x}"),
        "time": chrono::Utc::now().to_rfc3339(),
        "deviceInfo": {
            "tenantId": "t", "tenantName": "bench", "applicationId": "a1", "applicationName": "bench-app",
            "deviceProfileId": "p1", "deviceProfileName": MODELS[(eui % 4) as usize],
            "deviceName": format!("bench-{eui:016x}"), "devEui": format!("{eui:016x}"), "tags": {}
        },
        "devAddr": "01020304", "adr": true, "dr": 5, "fCnt": f_cnt, "fPort": 2, "confirmed": false,
        "data": base64::engine::general_purpose::STANDARD.encode([1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        "object": {"temperature": 21.5, "humidity": 40},
        "rxInfo": [{"gatewayId": "0016c001ff10d3f6", "rssi": -57 - (eui % 60) as i64, "snr": 9.5 - (eui % 20) as f64}],
        "txInfo": {"frequency": 868100000}
    })
    .to_string()
}

/// Device profiles of the bench fleet, one in four each: what `model=` filters by.
const MODELS: [&str; 4] = ["meter", "tracker", "sensor", "valve"];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends `total` uplinks (or for `duration`) over `concurrency` connections; returns latencies.
async fn load(
    url: Arc<String>,
    concurrency: usize,
    devices: u64,
    duration: Option<Duration>,
    total: Option<u64>,
) -> (Vec<Duration>, Duration, u64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.clone();
        let next = next.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if total.is_some_and(|t| n >= t) || duration.is_some_and(|d| start.elapsed() >= d) {
                    break;
                }
                let eui = 0x70b3_d500_0000_0000u64 + (n % devices);
                let body = uplink(eui, (n / devices) as u32);
                let t0 = Instant::now();
                let r = client
                    .post(url.as_str())
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => lat.push(t0.elapsed()),
                    _ => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort();
    (
        all,
        elapsed,
        failures.load(std::sync::atomic::Ordering::Relaxed),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/release/lorafleet".into());
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let list_devices: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let concurrency: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(32);
    if std::env::var_os("BENCH_TWO_INSTANCES").is_some() {
        return bench_mqtt::two_instances(&bin, seconds).await;
    }
    if std::env::var_os("BENCH_MIX").is_some() {
        // BENCH_MIX_TRANSPORT=http or mqtt runs one of the two (profiling one path).
        let only = std::env::var("BENCH_MIX_TRANSPORT").unwrap_or_default();
        if only != "mqtt" {
            bench_mqtt::http(&bin, seconds).await?;
        }
        if only == "http" {
            return Ok(());
        }
        let window = std::env::var("BENCH_MQTT_WINDOW")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(64);
        return bench_mqtt::mqtt(&bin, seconds, window).await;
    }

    let dir = tempfile::tempdir()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut command = tokio::process::Command::new(&bin);
    let database = bench_mqtt::database_url().await?;
    if let Some(url) = &database {
        command.env("LORAFLEET__SERVER__DATABASE_URL", url);
    }
    let mut child = command
        .env("LORAFLEET__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("LORAFLEET__SERVER__DATA_DIR", dir.path())
        .env("LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD", PASSWORD)
        .env("LORAFLEET__INTEGRATION__TOKEN", TOKEN)
        .env("LORAFLEET__NETWORK__KIND", "none")
        .env("LORAFLEET__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = Arc::new(format!("{base}/api/integrations/chirpstack?event=up"));

    // 1. Sustained ingest over 10,000 devices.
    let (lat, elapsed, failures) = load(
        url.clone(),
        concurrency,
        10_000,
        Some(Duration::from_secs(seconds)),
        None,
    )
    .await;
    let rate = lat.len() as f64 / elapsed.as_secs_f64();
    println!("ingest: {} events in {:.1} s over {concurrency} connections = {rate:.0} events/s, {failures} failed", lat.len(), elapsed.as_secs_f64());
    println!(
        "ingest latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.9).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        percentile(&lat, 1.0).as_secs_f64() * 1e3
    );

    // 2. Fill up to `list_devices` distinct devices, then time the list.
    let (_, fill_elapsed, _) = load(
        url.clone(),
        concurrency,
        list_devices,
        None,
        Some(list_devices),
    )
    .await;
    println!(
        "filled {list_devices} devices in {:.1} s",
        fill_elapsed.as_secs_f64()
    );
    if let Some(url) = &database {
        settle_postgres(url).await?;
    }
    list_bench(&http, &base, list_devices).await?;
    println!(
        "server memory with {list_devices} devices: RSS {} MiB, peak {} MiB",
        rss_kib(pid, "VmRSS:") / 1024,
        rss_kib(pid, "VmHWM:") / 1024
    );
    child.kill().await.ok();
    Ok(())
}

/// What autovacuum does to a table within about a minute of a bulk load (PostgreSQL 13 and later
/// vacuum after inserts too), done at once so that every run times the list in the same state:
/// planner statistics for the new rows (ANALYZE), and the visibility map that lets a count or an
/// offset read an index without the table (VACUUM). A fleet that keeps sending clears the map
/// page by page between vacuums; BENCHMARKS.md says what that costs.
async fn settle_postgres(url: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let t0 = Instant::now();
    sqlx::Executor::execute(&mut conn, "VACUUM (ANALYZE) devices, uplinks").await?;
    println!(
        "PostgreSQL: VACUUM (ANALYZE) devices, uplinks after the fill: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `GET /api/devices` by kind of request: the first page, pages deep in the list by cursor (and,
/// for comparison, by offset), a filter, a filter deep down, the name search. Each 60 times.
async fn list_bench(http: &reqwest::Client, base: &str, devices: u64) -> anyhow::Result<()> {
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let t0 = Instant::now();
            let r = http
                .get(url)
                .basic_auth("admin", Some(PASSWORD))
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
            let body: serde_json::Value = r.json().await?;
            Ok::<_, anyhow::Error>((t0.elapsed(), body))
        }
    };
    // A cursor deep in a list: the next_cursor of a one-row page at that offset.
    let cursor_at = |query: String| async move {
        let (_, body) = get(format!("/api/devices?{query}&limit=1")).await?;
        Ok::<_, anyhow::Error>(body["next_cursor"].as_str().unwrap_or_default().to_string())
    };
    let half = devices / 2;
    let near_end = devices.saturating_sub(100);
    let kinds = [
        ("first page (last seen)", "/api/devices".to_string()),
        (
            "first page, limit=100",
            "/api/devices?limit=100".to_string(),
        ),
        (
            "cursor at half (last seen)",
            format!(
                "/api/devices?cursor={}",
                cursor_at(format!("offset={half}")).await?
            ),
        ),
        (
            "cursor near the end (last seen)",
            format!(
                "/api/devices?cursor={}",
                cursor_at(format!("offset={near_end}")).await?
            ),
        ),
        (
            "cursor at half, sort=rssi",
            format!(
                "/api/devices?sort=rssi&cursor={}",
                cursor_at(format!("sort=rssi&offset={half}")).await?
            ),
        ),
        (
            "cursor at half, sort=name desc",
            format!(
                "/api/devices?sort=name&order=desc&cursor={}",
                cursor_at(format!("sort=name&order=desc&offset={half}")).await?
            ),
        ),
        (
            "offset at half (legacy)",
            format!("/api/devices?offset={half}"),
        ),
        (
            "filter model=tracker",
            "/api/devices?model=tracker".to_string(),
        ),
        (
            "filter model=tracker, cursor at 1/8",
            format!(
                "/api/devices?model=tracker&cursor={}",
                cursor_at(format!("model=tracker&offset={}", devices / 8)).await?
            ),
        ),
        (
            "filter status=online",
            "/api/devices?status=online".to_string(),
        ),
        (
            "name search (trigram index)",
            "/api/devices?search=bench-70b3d50000000123".to_string(),
        ),
        (
            "name search, many matches",
            "/api/devices?search=70b3d5000001".to_string(),
        ),
        (
            "name search, many matches, cursor at 20,000",
            format!(
                "/api/devices?search=70b3d5000001&cursor={}",
                cursor_at("search=70b3d5000001&offset=20000".to_string()).await?
            ),
        ),
        (
            "name search, many matches, sort=name",
            "/api/devices?search=70b3d5000001&sort=name".to_string(),
        ),
    ];
    println!("GET /api/devices with {devices} devices, 60 requests each:");
    println!("| request | p50 | p90 | total |");
    println!("|---|---|---|---|");
    for (name, path) in kinds {
        let mut lat = Vec::new();
        let mut total = String::new();
        for _ in 0..60 {
            let (t, body) = get(path.clone()).await?;
            lat.push(t);
            total = body["total"].to_string();
            if body["total_is_lower_bound"] == serde_json::Value::Bool(true) {
                // The search stopped counting there.
                total = format!("more than {total}");
            }
        }
        lat.sort();
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {total} |",
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.9).as_secs_f64() * 1e3
        );
    }
    Ok(())
}

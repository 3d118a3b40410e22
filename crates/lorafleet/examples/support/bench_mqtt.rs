//! The ingest benchmark's realistic mix, over HTTP and over MQTT in one run (issue 9 item 9):
//! ChirpStack v4 JSON uplinks from 1,000 devices, one in ten a Version & Status answer on
//! FPort 111. HTTP: 16 keep-alive connections, each waiting for its answer (= the commit).
//! MQTT: a mosquitto of the benchmark's own on loopback; publishers keep at most `window`
//! messages between publication and commit, and a message's latency is the time from its
//! publication until lorafleet's committed counter covers it (`/metrics`, sampled every 2 ms).

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const DEVICES: u64 = 1_000;
const HTTP_CONNECTIONS: usize = 16;
const PUBLISHERS: usize = 4;
/// PackageVersionAns and DevVersionAns (the engine's check before a campaign).
const STATUS_ANSWER: [u8; 6] = [0x01, 0x02, 0x03, 0x02, 0x01, 0x00];

/// The `seq`-th event of the mix.
pub fn mixed_uplink(seq: u64) -> (u64, String) {
    let eui = 0x70b3_d500_0000_0000u64 + (seq % DEVICES);
    let f_cnt = (seq / DEVICES) as u32;
    let (f_port, data): (u32, &[u8]) = if seq % 10 == 9 {
        (111, &STATUS_ANSWER)
    } else {
        (2, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    };
    let body = serde_json::json!({
        "deduplicationId": format!("{eui:016x}-{f_cnt:08x}"),
        "time": chrono::Utc::now().to_rfc3339(),
        "deviceInfo": {
            "tenantId": "t", "tenantName": "bench", "applicationId": "a1", "applicationName": "bench-app",
            "deviceProfileId": "p1", "deviceProfileName": "class-a",
            "deviceName": format!("bench-{eui:016x}"), "devEui": format!("{eui:016x}"), "tags": {}
        },
        "devAddr": "01020304", "adr": true, "dr": 5, "fCnt": f_cnt, "fPort": f_port, "confirmed": false,
        "data": base64::engine::general_purpose::STANDARD.encode(data),
        "rxInfo": [{"gatewayId": "0016c001ff10d3f6", "rssi": -57, "snr": 9.5}],
        "txInfo": {"frequency": 868100000}
    })
    .to_string();
    (eui, body)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU time (user + system, all threads) a process has used so far, from `/proc/<pid>/stat`:
/// the server's cost per event, which holds on a loaded machine where events/s does not.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (2nd field) is in parentheses and may hold spaces: count after it.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // Linux reports these in USER_HZ, which is 100 on every architecture it runs on.
    Duration::from_millis(ticks * 10)
}

/// The server's CPU time over a run, per committed event, and the writer's mean group size
/// (events per transaction, from `lorafleet_ingest_commits_total`).
async fn report_cpu(label: &str, cpu: Duration, events: usize, base: &str) {
    let commits = counter(
        &reqwest::Client::new(),
        base,
        "lorafleet_ingest_commits_total",
    )
    .await
    .unwrap_or(0);
    println!(
        "{label}: server CPU {:.1} s = {:.0} us per event; {commits} commits, {:.1} events per commit",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / events.max(1) as f64,
        events as f64 / commits.max(1) as f64
    );
}

fn report(label: &str, lat: &mut [Duration], elapsed: Duration) {
    lat.sort();
    let p = |q: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{label}: {} events in {:.1} s = {:.0} events/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(p(0.5)),
        ms(p(0.99)),
        ms(p(1.0))
    );
}

struct Server {
    child: tokio::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// With `BENCH_POSTGRES_URL` (a PostgreSQL server, naming any database its user may connect
/// to): a new empty database there for one lorafleet run, as its `server.database_url`. Without
/// it lorafleet uses SQLite in its temporary data directory.
pub async fn database_url() -> anyhow::Result<Option<String>> {
    let admin = match std::env::var("BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => return Ok(None),
    };
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let name = format!("lorafleet_bench_{}_{nanos}", std::process::id());
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await?;
    // The URL with the new database's name in place of the one it names.
    let (base, query) = admin.split_once('?').unwrap_or((admin.as_str(), ""));
    let host_end = base
        .find("://")
        .and_then(|s| base[s + 3..].find('/').map(|i| s + 3 + i))
        .unwrap_or(base.len());
    let mut url = format!("{}/{name}", &base[..host_end]);
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    eprintln!("backend: PostgreSQL, database {name}");
    Ok(Some(url))
}

async fn start_lorafleet(bin: &str, env: &[(&str, String)]) -> anyhow::Result<Server> {
    start_on(bin, env, database_url().await?).await
}

/// lorafleet on `database` (a URL), or on SQLite in its data directory.
async fn start_on(
    bin: &str,
    env: &[(&str, String)],
    database: Option<String>,
) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let mut cmd = tokio::process::Command::new(bin);
    if let Some(url) = database {
        cmd.env("LORAFLEET__SERVER__DATABASE_URL", url);
    }
    cmd.env("LORAFLEET__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("LORAFLEET__SERVER__DATA_DIR", dir.path())
        .env(
            "LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD",
            "bench-password-123",
        )
        .env("LORAFLEET__INTEGRATION__TOKEN", super::TOKEN)
        .env("LORAFLEET__NETWORK__KIND", "none")
        .env("LORAFLEET__LOG__LEVEL", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(Server {
        child,
        base,
        _dir: dir,
    })
}

/// HTTP, closed loop: each connection posts the next event once the previous one is committed.
pub async fn http(bin: &str, seconds: u64) -> anyhow::Result<()> {
    let mut server = start_lorafleet(bin, &[]).await?;
    let pid = server.child.id().unwrap_or(0);
    let cpu_before = cpu_time(pid);
    let (mut lat, elapsed) = http_load(std::slice::from_ref(&server.base), seconds).await?;
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    report("HTTP mix (16 connections)", &mut lat, elapsed);
    report_cpu("HTTP mix", cpu, lat.len(), &server.base).await;
    server.child.kill().await.ok();
    Ok(())
}

/// Two lorafleet processes on one PostgreSQL database (`BENCH_POSTGRES_URL`), the 16
/// connections split between them: what a second instance behind a load balancer adds.
pub async fn two_instances(bin: &str, seconds: u64) -> anyhow::Result<()> {
    let Some(url) = database_url().await? else {
        println!("two instances: needs BENCH_POSTGRES_URL");
        return Ok(());
    };
    let mut a = start_on(bin, &[], Some(url.clone())).await?;
    let mut b = start_on(bin, &[], Some(url)).await?;
    let (mut lat, elapsed) = http_load(&[a.base.clone(), b.base.clone()], seconds).await?;
    report(
        "HTTP mix, two instances on one database (8 + 8 connections)",
        &mut lat,
        elapsed,
    );
    a.child.kill().await.ok();
    b.child.kill().await.ok();
    Ok(())
}

/// The closed loop over [`HTTP_CONNECTIONS`] connections, spread over the `bases` in turn;
/// every answer comes after the commit. Returns each request's latency and the run's length.
async fn http_load(bases: &[String], seconds: u64) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..HTTP_CONNECTIONS {
        let url = format!(
            "{}/api/integrations/chirpstack?event=up",
            bases[i % bases.len()]
        );
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while start.elapsed() < Duration::from_secs(seconds) {
                let (_, body) = mixed_uplink(next.fetch_add(1, Ordering::Relaxed));
                let t0 = Instant::now();
                let r = client
                    .post(url.as_str())
                    .bearer_auth(super::TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    lat.push(t0.elapsed());
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    Ok((lat, start.elapsed()))
}

struct Mosquitto {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mosquitto() -> anyhow::Result<Mosquitto> {
    let binary = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .ok_or_else(|| anyhow::anyhow!("mosquitto is not installed (apt-get install mosquitto)"))?;
    let user = std::process::Command::new("id").arg("-un").output()?;
    let user = String::from_utf8_lossy(&user.stdout).trim().to_string();
    let dir = tempfile::tempdir()?;
    for _ in 0..20 {
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser {user}\n\
                 max_queued_messages 0\nmax_inflight_messages 1000\n"
            ),
        )?;
        let mut child = std::process::Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        for _ in 0..500 {
            if child.try_wait()?.is_some() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Mosquitto {
                    child,
                    port,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
    }
    anyhow::bail!("mosquitto did not start")
}

/// lorafleet's committed counter, sampled: (when, how many).
async fn committed(http: &reqwest::Client, base: &str) -> Option<u64> {
    counter(http, base, "lorafleet_mqtt_messages_committed_total").await
}

/// One counter of lorafleet's `/metrics`.
async fn counter(http: &reqwest::Client, base: &str, name: &str) -> Option<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// MQTT: publishers keep at most `window` messages between publication and commit.
pub async fn mqtt(bin: &str, seconds: u64, window: u64) -> anyhow::Result<()> {
    let broker = start_mosquitto()?;
    let env = [
        ("LORAFLEET__INTEGRATION__MQTT__ENABLED", "true".to_string()),
        (
            "LORAFLEET__INTEGRATION__MQTT__SERVER",
            format!("tcp://127.0.0.1:{}", broker.port),
        ),
    ];
    let mut server = start_lorafleet(bin, &env).await?;
    let http = reqwest::Client::new();
    while committed(&http, &server.base).await.is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give the subscription time to be in place before the first publication.
    for _ in 0..200 {
        let h: serde_json::Value = http
            .get(format!("{}/health", server.base))
            .send()
            .await?
            .json()
            .await?;
        if h["mqtt"] == "connected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = server.child.id().unwrap_or(0);
    let cpu_before = cpu_time(pid);
    let published = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let start = Instant::now();
    let mut publishers = Vec::new();
    for i in 0..PUBLISHERS {
        let mut o = MqttOptions::new(format!("bench-pub-{i}"), "127.0.0.1", broker.port);
        o.set_inflight(100);
        let (client, mut events) = AsyncClient::new(o, 256);
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
        let (published, done, stop, sent) =
            (published.clone(), done.clone(), stop.clone(), sent.clone());
        publishers.push(tokio::spawn(async move {
            while start.elapsed() < Duration::from_secs(seconds) {
                if published.load(Ordering::Relaxed) >= done.load(Ordering::Relaxed) + window {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                let seq = published.fetch_add(1, Ordering::Relaxed);
                let (eui, body) = mixed_uplink(seq);
                let topic = format!("application/a1/device/{eui:016x}/event/up");
                sent.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Instant::now());
                if client
                    .publish(topic, QoS::AtLeastOnce, false, body)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            stop.store(true, Ordering::Relaxed);
        }));
    }
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    loop {
        if let Some(n) = committed(&http, &server.base).await {
            samples.push((Instant::now(), n));
            done.store(n, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) && n >= published.load(Ordering::Relaxed) {
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(seconds + 60) {
            println!("MQTT: gave up waiting for the commits");
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for p in publishers {
        p.await?;
    }
    let elapsed = samples.last().map_or(start.elapsed(), |s| s.0 - start);
    // Includes answering the 2 ms /metrics samples, a small share next to the events.
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    sent.sort();
    let mut lat = Vec::with_capacity(sent.len());
    let mut s = 0;
    for (k, t) in sent.iter().enumerate() {
        while s < samples.len() && samples[s].1 < k as u64 + 1 {
            s += 1;
        }
        if let Some((at, _)) = samples.get(s) {
            lat.push(at.saturating_duration_since(*t));
        }
    }
    report(
        &format!("MQTT mix (QoS 1, {PUBLISHERS} publishers, window {window})"),
        &mut lat,
        elapsed,
    );
    report_cpu("MQTT mix", cpu, lat.len(), &server.base).await;
    server.child.kill().await.ok();
    Ok(())
}

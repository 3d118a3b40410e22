//! Cheap attacks against the real release binary on 127.0.0.1, re-measuring issue 11's numbers
//! (see scripts/abuse). Every phase is bounded in count and time, and nothing leaves loopback.
//!
//! 1. 300 logins with 1 MB user names: the server's RSS before and after, and its log size.
//! 2. 64 parallel clients sending HTTP Basic with made-up users for `FLOOD_SECONDS`: the admin's
//!    login latency meanwhile, and the server's peak RSS.
//! 3. 1,100 idle sockets held open: `/health` latency and status.
//!
//! Usage: abuse <path to lorafleet binary> [flood seconds]
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::process::Stdio;
use std::time::{Duration, Instant};

const PASSWORD: &str = "abuse-password-123";

fn rss_mib(pid: u32, field: &str) -> f64 {
    let kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kib as f64 / 1024.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

async fn admin_login(http: &reqwest::Client, base: &str) -> (Duration, u16) {
    let started = Instant::now();
    let status = http
        .post(format!("{base}/api/session"))
        .json(&serde_json::json!({"username": "admin", "password": PASSWORD}))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    (started.elapsed(), status)
}

async fn long_name_logins(http: &reqwest::Client, base: &str, pid: u32) {
    let before = rss_mib(pid, "VmRSS:");
    // 1 MB, not 1 MiB: the body then fits server.max_body_bytes (1 MiB) and reaches the login
    // code, which is what the issue measured.
    let name = "u".repeat(1_000_000);
    let mut statuses = std::collections::BTreeMap::new();
    let started = Instant::now();
    for _ in 0..300 {
        let status = http
            .post(format!("{base}/api/session"))
            .json(&serde_json::json!({"username": name, "password": "wrong-password"}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        *statuses.entry(status).or_insert(0u32) += 1;
    }
    println!(
        "1. 300 logins with 1 MB user names in {:.1} s: answers {statuses:?} (0 = no answer); RSS {before:.1} -> {:.1} MiB (peak {:.1} MiB)",
        started.elapsed().as_secs_f64(),
        rss_mib(pid, "VmRSS:"),
        rss_mib(pid, "VmHWM:"),
    );
}

async fn basic_flood(base: &str, pid: u32, seconds: u64) {
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut flood = Vec::new();
    for t in 0..64u32 {
        let url = format!("{base}/api/info");
        flood.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while Instant::now() < stop {
                let _ = http
                    .get(&url)
                    .basic_auth(format!("made-up-{t}-{n}"), Some("guess"))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                n += 1;
            }
            n
        }));
    }
    // The admin logs in from another loopback address than the flood: back-off is per client
    // address, and what matters is whether the flood slows or locks out everyone else.
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("a client bound to 127.0.0.2");
    let mut logins = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    while Instant::now() + Duration::from_secs(1) < stop {
        logins.push(admin_login(&http, base).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut sent = 0;
    for f in flood {
        sent += f.await.unwrap_or(0);
    }
    let mut times: Vec<Duration> = logins.iter().map(|(d, _)| *d).collect();
    times.sort();
    let ok = logins.iter().filter(|(_, s)| *s == 200).count();
    let mut statuses = std::collections::BTreeMap::new();
    for (_, s) in &logins {
        *statuses.entry(*s).or_insert(0u32) += 1;
    }
    println!(
        "2. {seconds} s of 64 parallel Basic requests with made-up users from 127.0.0.1 ({sent} sent): admin login from 127.0.0.2 {ok}/{} answered 200 ({statuses:?}), latency p50 {:?} max {:?}; peak RSS {:.1} MiB",
        logins.len(),
        times.get(times.len() / 2).copied().unwrap_or_default(),
        times.last().copied().unwrap_or_default(),
        rss_mib(pid, "VmHWM:"),
    );
}

async fn idle_sockets(base: &str, port: u16) {
    let _ = rlimit::increase_nofile_limit(8192);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..1100 {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => held.push(s),
            Err(_) => refused += 1,
        }
    }
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let status = http
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        answers.push((status, started.elapsed()));
    }
    println!(
        "3. {} idle sockets open ({refused} refused): /health {:?} (0 = timed out after 10 s)",
        held.len(),
        answers
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args
        .get(1)
        .expect("usage: abuse <lorafleet binary> [flood seconds]");
    let seconds: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .min(120);
    let dir = tempfile::tempdir().expect("a temporary data dir");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("server.log")).expect("a log file");
    let mut child = tokio::process::Command::new(binary)
        .arg("serve")
        .env("LORAFLEET__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("LORAFLEET__SERVER__DATA_DIR", dir.path().join("data"))
        .env("LORAFLEET__NETWORK__KIND", "none")
        .env("LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("lorafleet starts");
    let pid = child.id().expect("a pid");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "lorafleet did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (quiet, _) = admin_login(&http, &base).await;
    println!("0. admin login on a quiet server: {quiet:?}");
    long_name_logins(&http, &base, pid).await;
    let log_bytes = std::fs::metadata(dir.path().join("server.log")).map_or(0, |m| m.len());
    println!(
        "   server log after phase 1: {:.1} MiB",
        log_bytes as f64 / 1048576.0
    );
    basic_flood(&base, pid, seconds).await;
    idle_sockets(&base, port).await;
    let _ = child.kill().await;
}

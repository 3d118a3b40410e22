//! Faults and hostile clients against the real binary on 127.0.0.1 (issue 11): a full disk, a
//! second instance, idle and slow sockets, huge declared bodies, stops mid-request, aborted
//! uploads, a read-only data dir. Every wait is bounded by a deadline.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{run_binary_to_exit, spawn_binary, test_config, TestBinary, TestConfig};
use common::{INTEGRATION_TOKEN as TOKEN, PASSWORD};
use lorafleet::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The binary on the test configuration changed by `configure` (a tmpfs data dir, timeouts).
async fn start(configure: impl FnOnce(&mut Config)) -> TestBinary {
    spawn_binary(test_config().with(configure)).await
}

/// The test configuration on a data dir of the test's choosing.
fn on_data_dir(data_dir: &Path) -> TestConfig {
    let data_dir = data_dir.to_path_buf();
    test_config().with(|c| c.server.data_dir = data_dir)
}

async fn connect(server: &TestBinary) -> TcpStream {
    TcpStream::connect(server.address()).await.unwrap()
}

async fn ingest(
    server: &TestBinary,
    http: &reqwest::Client,
    eui: &str,
    f_cnt: u32,
) -> reqwest::Response {
    http.post(server.url("/api/integrations/chirpstack?event=up"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(uplink(eui, f_cnt))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
}

/// Waits until the listener refuses connections: the server stopped accepting.
async fn wait_not_accepting(server: &TestBinary) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(server.address()).await.is_ok() {
        assert!(Instant::now() < deadline, "the server kept accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn uplink(eui: &str, f_cnt: u32) -> Vec<u8> {
    serde_json::json!({
        "deduplicationId": format!("{eui}-{f_cnt:08x}"),
        "time": "2026-11-27T10:00:00.123Z",
        "deviceInfo": {"deviceName": format!("meter-{eui}"), "devEui": eui, "tags": {"site": "north"}},
        "fCnt": f_cnt,
        "fPort": 2,
        "data": "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
        "rxInfo": [{"gatewayId": "0016c001ff10d3f6", "rssi": -57, "snr": 9.5}],
        "txInfo": {"frequency": 868100000}
    })
    .to_string()
    .into_bytes()
}

/// Reads until the peer closes the connection or `limit` passes; returns what arrived, or None
/// when the connection was still open at the limit.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

/// Reads one HTTP response head and as much body as arrived with it.
async fn read_response(stream: &mut TcpStream, limit: Duration) -> String {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= head_end + 4 + len {
                            return;
                        }
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

fn basic_auth() -> String {
    use base64::Engine;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"));
    format!("Basic {creds}")
}

/// A multipart upload of `size` bytes of image, cut into the head (headers and the part's
/// preamble), the image bytes, and the tail.
fn upload_parts(file_name: &str, size: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let boundary = "faultboundary1234";
    let preamble = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let image: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let len = preamble.len() + image.len() + tail.len();
    let head = format!(
        "POST /api/firmware HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len}\r\n\r\n{preamble}",
        basic_auth()
    );
    (head.into_bytes(), image, tail.into_bytes())
}

fn part_files(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("firmware")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect()
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small tmpfs (as root); None, with the reason printed, where it cannot be mounted.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(options: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, options: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes a file until the file system is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 16 * 1024];
    // Bounded by the mount's size: the tmpfs is a few MiB.
    for _ in 0..100_000 {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = file.sync_all();
    path
}

#[tokio::test]
async fn a_full_disk_refuses_ingest_with_503_and_both_recover_when_space_is_freed() {
    let Some(fs) = Tmpfs::mount("size=6m") else {
        return;
    };
    let server = spawn_binary(on_data_dir(&fs.path().join("data"))).await;
    let http = reqwest::Client::new();
    assert_eq!(
        ingest(&server, &http, "0102030405060708", 1).await.status(),
        200
    );

    let filler = fill(fs.path());
    // The WAL reuses pages it already has, so the first writes may still fit: send until one
    // is refused (bounded).
    let mut refused = None;
    for i in 0..3000u32 {
        let eui = format!("aa{:014x}", i);
        let r = ingest(&server, &http, &eui, i).await;
        if r.status() != 200 {
            refused = Some((r.status().as_u16(), r.text().await.unwrap()));
            break;
        }
    }
    let (status, body) = refused.expect("an ingest was refused on the full disk");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("full"), "{body}");
    let health = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["database"], "error", "{health}");
    assert!(
        health["database_error"].as_str().unwrap().contains("full"),
        "{health}"
    );

    std::fs::remove_file(filler).unwrap();
    // The very next event is stored: the writer recovered by itself, no restart.
    let r = ingest(&server, &http, "0102030405060708", 2).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let health = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["database"], "ok", "{health}");
    let device: serde_json::Value = http
        .get(server.url("/api/devices/0102030405060708"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(device["last_uplink"]["f_cnt"], 2, "{device}");
}

#[tokio::test]
async fn a_second_instance_on_the_same_data_dir_exits_1_naming_the_dir_and_the_pid() {
    let first = start(|_| {}).await;
    let dir = first.data_dir();
    let (status, text) = run_binary_to_exit(&on_data_dir(dir), Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains(&dir.display().to_string()), "{text}");
    assert!(text.contains(&format!("PID {}", first.pid())), "{text}");
}

#[tokio::test]
async fn idle_sockets_beyond_the_connection_cap_do_not_keep_health_out() {
    let server = start(|c| c.server.max_connections = 50).await;
    let mut idle = Vec::new();
    for _ in 0..120 {
        idle.push(connect(&server).await);
    }
    let health = reqwest::Client::new()
        .get(server.url("/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/health answered with 120 idle sockets open and a cap of 50");
    assert_eq!(health.status(), 200);
    // The oldest idle sockets were closed to make room.
    let mut closed = 0;
    for s in idle.iter_mut().take(70) {
        if read_to_close(s, Duration::from_secs(5)).await.is_some() {
            closed += 1;
        }
    }
    assert!(
        closed >= 70,
        "only {closed} of the 70 oldest idle sockets were closed"
    );
}

#[tokio::test]
async fn eleven_hundred_idle_sockets_do_not_make_health_time_out() {
    // The test itself holds 1,100 sockets too.
    let _ = rlimit::increase_nofile_limit(8192);
    let server = start(|_| {}).await;
    let mut idle = Vec::new();
    for _ in 0..1100 {
        idle.push(connect(&server).await);
    }
    let started = Instant::now();
    let health = reqwest::Client::new()
        .get(server.url("/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/health answered with 1,100 idle sockets open");
    assert_eq!(health.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_headers_is_disconnected() {
    let server = start(|c| c.server.header_timeout_s = 1).await;
    let mut slow = connect(&server).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    assert!(
        read_to_close(&mut slow, Duration::from_secs(5))
            .await
            .is_some(),
        "the connection stayed open past server.header_timeout_s"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = start(|c| c.server.idle_timeout_s = 1).await;
    let mut conn = connect(&server).await;
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut conn, Duration::from_secs(5))
        .await
        .expect("the idle keep-alive connection was closed");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "the request itself was answered"
    );
}

#[tokio::test]
async fn a_huge_declared_login_body_is_refused_with_413_at_once() {
    let server = start(|_| {}).await;
    let mut conn = connect(&server).await;
    conn.write_all(
        b"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let answer = read_response(&mut conn, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""field":"body""#), "{answer}");
}

#[tokio::test]
async fn sigterm_exits_within_the_shutdown_timeout_despite_a_half_sent_request() {
    let mut server = start(|c| c.server.shutdown_timeout_s = 2).await;
    let mut half = connect(&server).await;
    half.write_all(
        b"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
    )
    .await
    .unwrap();
    let mut half_headers = connect(&server).await;
    half_headers
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // Both requests have reached the server once it answers another one after them.
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let started = Instant::now();
    server.signal("-TERM");
    let status = server.exit_within(Duration::from_secs(8)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "it waited for the request in flight"
    );
}

#[tokio::test]
async fn sigterm_lets_an_upload_in_flight_finish_and_the_image_is_kept() {
    let mut server = start(|_| {}).await;
    let data = server.data_dir().to_path_buf();
    let (head, image, tail) = upload_parts("inflight.bin", 64 * 1024);
    let mut conn = connect(&server).await;
    conn.write_all(&head).await.unwrap();
    conn.write_all(&image[..1000]).await.unwrap();
    wait_until(
        "the upload is being received",
        Duration::from_secs(10),
        || !part_files(&data).is_empty(),
    )
    .await;
    server.signal("-TERM");
    wait_not_accepting(&server).await;
    conn.write_all(&image[1000..]).await.unwrap();
    conn.write_all(&tail).await.unwrap();
    let answer = read_response(&mut conn, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let status = server.exit_within(Duration::from_secs(12)).await;
    assert!(status.success(), "{status:?}");

    server.restart().await;
    let list: serde_json::Value = reqwest::Client::new()
        .get(server.url("/api/firmware"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["images"][0]["file_name"], "inflight.bin", "{list}");
    assert_eq!(list["images"][0]["size"], 64 * 1024, "{list}");
}

#[tokio::test]
async fn a_slow_upload_that_keeps_progressing_outlives_the_request_timeout() {
    let server = start(|c| {
        c.server.request_timeout_s = 1;
        c.server.idle_timeout_s = 2;
    })
    .await;
    let (head, image, tail) = upload_parts("slow.bin", 10 * 1024);
    let mut conn = connect(&server).await;
    conn.write_all(&head).await.unwrap();
    let started = Instant::now();
    // Paced, not waited on: ten pieces 300 ms apart take three times the request timeout.
    for piece in image.chunks(1024) {
        conn.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    conn.write_all(&tail).await.unwrap();
    let answer = read_response(&mut conn, Duration::from_secs(10)).await;
    assert!(started.elapsed() > Duration::from_secs(2));
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

#[tokio::test]
async fn an_aborted_or_stalled_upload_leaves_no_part_file() {
    let server = start(|c| c.server.idle_timeout_s = 1).await;
    let data = server.data_dir().to_path_buf();
    let (head, image, _) = upload_parts("aborted.bin", 64 * 1024);
    let mut aborted = connect(&server).await;
    aborted.write_all(&head).await.unwrap();
    aborted.write_all(&image[..4096]).await.unwrap();
    wait_until(
        "the upload is being received",
        Duration::from_secs(10),
        || !part_files(&data).is_empty(),
    )
    .await;
    drop(aborted);
    wait_until(
        "the aborted upload's .part is removed",
        Duration::from_secs(10),
        || part_files(&data).is_empty(),
    )
    .await;

    // A client that stops sending is cut by the idle timeout, with the same clean-up.
    let mut stalled = connect(&server).await;
    stalled.write_all(&head).await.unwrap();
    stalled.write_all(&image[..4096]).await.unwrap();
    assert!(read_to_close(&mut stalled, Duration::from_secs(10))
        .await
        .is_some());
    wait_until(
        "the stalled upload's .part is removed",
        Duration::from_secs(10),
        || part_files(&data).is_empty(),
    )
    .await;
}

#[tokio::test]
async fn part_files_left_by_a_killed_run_are_removed_at_start() {
    let config = test_config();
    let data = config.server.data_dir.clone();
    std::fs::create_dir_all(data.join("firmware")).unwrap();
    std::fs::write(data.join("firmware/.upload-left.part"), b"half").unwrap();
    std::fs::write(data.join("firmware/kept.bin"), b"image").unwrap();
    let _server = spawn_binary(config).await;
    wait_until(
        "the stale .part is removed",
        Duration::from_secs(10),
        || part_files(&data).is_empty(),
    )
    .await;
    assert!(data.join("firmware/kept.bin").exists());
}

async fn start_failure(data_dir: &Path) -> String {
    let (status, text) = run_binary_to_exit(&on_data_dir(data_dir), Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1), "{text}");
    text
}

#[tokio::test]
async fn a_read_only_data_dir_at_start_is_named_with_what_to_do() {
    let Some(fs) = Tmpfs::mount("size=4m") else {
        return;
    };
    std::fs::create_dir(fs.path().join("data")).unwrap();
    fs.remount("ro");
    let data = fs.path().join("data");
    let text = start_failure(&data).await;
    assert!(text.contains(&data.display().to_string()), "{text}");
    assert!(text.contains("read-only"), "{text}");
    assert!(text.contains("server.data_dir"), "{text}");
}

#[tokio::test]
async fn a_full_disk_at_start_is_named_with_what_to_do() {
    let Some(fs) = Tmpfs::mount("size=1m") else {
        return;
    };
    let data = fs.path().join("data");
    std::fs::create_dir(&data).unwrap();
    fill(fs.path());
    let text = start_failure(&data).await;
    assert!(text.contains(&data.display().to_string()), "{text}");
    assert!(text.contains("free some space"), "{text}");
}

async fn post_event(
    server: &TestBinary,
    http: &reqwest::Client,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = http
        .post(server.url("/api/integrations/chirpstack?event=up"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn get_json(server: &TestBinary, http: &reqwest::Client, path: &str) -> serde_json::Value {
    http.get(server.url(path))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_repeated_uplink_is_acknowledged_and_stored_once() {
    let server = start(|_| {}).await;
    let http = reqwest::Client::new();
    let v4: serde_json::Value = serde_json::from_slice(&uplink("0102030405060708", 7)).unwrap();
    for _ in 0..3 {
        assert_eq!(post_event(&server, &http, &v4).await.0, 200);
    }
    // Sent together, the repeats share one group commit.
    let together = futures::future::join_all((0..4).map(|_| post_event(&server, &http, &v4))).await;
    assert!(together.iter().all(|(s, _)| *s == 200), "{together:?}");
    let ups = get_json(&server, &http, "/api/devices/0102030405060708/uplinks").await;
    assert_eq!(ups["uplinks"].as_array().unwrap().len(), 1, "{ups}");
    // Another frame with its own id is stored.
    let mut other = v4.clone();
    other["deduplicationId"] = "another-id".into();
    assert_eq!(post_event(&server, &http, &other).await.0, 200);
    let ups = get_json(&server, &http, "/api/devices/0102030405060708/uplinks").await;
    assert_eq!(ups["uplinks"].as_array().unwrap().len(), 2, "{ups}");

    // v3 has no id: the same DevEUI, FCnt and time is the same frame.
    let v3 = serde_json::json!({
        "applicationID": "12", "deviceName": "old-meter", "devEUI": "AQIDBAUGBwk=",
        "fCnt": 99, "fPort": 3, "data": "aGk=", "publishedAt": "2026-11-27T09:00:00Z"
    });
    assert_eq!(post_event(&server, &http, &v3).await.0, 200);
    assert_eq!(post_event(&server, &http, &v3).await.0, 200);
    let mut later = v3.clone();
    later["publishedAt"] = "2026-11-27T09:10:00Z".into();
    assert_eq!(post_event(&server, &http, &later).await.0, 200);
    let ups = get_json(&server, &http, "/api/devices/0102030405060709/uplinks").await;
    assert_eq!(ups["uplinks"].as_array().unwrap().len(), 2, "{ups}");
}

#[tokio::test]
async fn an_implausible_event_time_becomes_the_reception_time_with_a_device_log_note() {
    let server = start(|_| {}).await;
    let http = reqwest::Client::new();
    for (eui, time) in [
        ("0a0a0a0a0a0a0a01", "1970-01-01T00:00:00Z"),
        ("0a0a0a0a0a0a0a02", "2031-06-01T00:00:00Z"),
    ] {
        let mut body: serde_json::Value = serde_json::from_slice(&uplink(eui, 1)).unwrap();
        body["time"] = time.into();
        let before = chrono::Utc::now() - chrono::Duration::seconds(1);
        assert_eq!(post_event(&server, &http, &body).await.0, 200);
        let device = get_json(&server, &http, &format!("/api/devices/{eui}")).await;
        let seen = chrono::DateTime::parse_from_rfc3339(
            device["last_uplink"]["received_at"].as_str().unwrap(),
        )
        .unwrap();
        assert!(seen >= before && seen <= chrono::Utc::now(), "{device}");
        let notes: Vec<&str> = device["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["message"].as_str())
            .filter(|m| m.contains("implausible"))
            .collect();
        assert_eq!(notes.len(), 1, "{device}");
        assert!(notes[0].contains(&time[..10]), "{notes:?}");
    }
    // A plausible time is kept as sent.
    let body: serde_json::Value = serde_json::from_slice(&uplink("0a0a0a0a0a0a0a03", 1)).unwrap();
    assert_eq!(post_event(&server, &http, &body).await.0, 200);
    let device = get_json(&server, &http, "/api/devices/0a0a0a0a0a0a0a03").await;
    assert_eq!(
        device["last_uplink"]["received_at"],
        "2026-11-27T10:00:00.123Z"
    );
}

#[tokio::test]
async fn long_device_names_and_big_tag_maps_are_refused_naming_the_field() {
    let server = start(|_| {}).await;
    let http = reqwest::Client::new();
    let base: serde_json::Value = serde_json::from_slice(&uplink("0b0b0b0b0b0b0b0b", 1)).unwrap();
    let mut long = base.clone();
    long["deviceInfo"]["deviceName"] = "x".repeat(1_000_000).into();
    let (status, body) = post_event(&server, &http, &long).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("deviceInfo.deviceName")),
        "{body}"
    );
    let mut tags = base.clone();
    tags["deviceInfo"]["tags"] = (0..100)
        .map(|i| (format!("t{i}"), serde_json::Value::from("v")))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let (status, body) = post_event(&server, &http, &tags).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("deviceInfo.tags")),
        "{body}"
    );
    let mut v3 = serde_json::json!({"applicationID": "1", "devEUI": "CwsLCwsLCws=", "fCnt": 1, "publishedAt": "2026-11-27T09:00:00Z"});
    v3["deviceName"] = "y".repeat(257).into();
    let (status, body) = post_event(&server, &http, &v3).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("deviceName")),
        "{body}"
    );
    // Nothing of the refused events was stored; a name at the limit is.
    let mut at_limit = base.clone();
    at_limit["deviceInfo"]["deviceName"] = "n".repeat(256).into();
    assert_eq!(post_event(&server, &http, &at_limit).await.0, 200);
    let list = get_json(&server, &http, "/api/devices").await;
    assert_eq!(list["devices"].as_array().unwrap().len(), 1, "{list}");
}

async fn health(server: &TestBinary, http: &reqwest::Client) -> (u16, serde_json::Value) {
    let r = http.get(server.url("/health")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn wait_for_health(
    server: &TestBinary,
    http: &reqwest::Client,
    status: u16,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let (got, body) = health(server, http).await;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/health stayed {got} {body}, expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_simulated_networks_writes_recover_from_a_full_disk_too() {
    let Some(fs) = Tmpfs::mount("size=8m") else {
        return;
    };
    let config = on_data_dir(&fs.path().join("data")).with(|c| {
        c.network.kind = lorafleet::config::NetworkKind::Simulated;
        c.network.simulated.devices = 20;
        c.network.simulated.time_scale = 1000.0;
        c.network.simulated.uplink_interval_s = 30;
    });
    let server = spawn_binary(config).await;
    let http = reqwest::Client::new();
    let filler = fill(fs.path());
    // The simulation's uplinks are its only writes; one of them fails once the WAL needs room.
    wait_for_health(&server, &http, 503, Duration::from_secs(60)).await;
    let (_, body) = health(&server, &http).await;
    assert_eq!(body["database"], "error", "{body}");
    std::fs::remove_file(filler).unwrap();
    wait_for_health(&server, &http, 200, Duration::from_secs(90)).await;
    let (_, body) = health(&server, &http).await;
    assert_eq!(body["database"], "ok", "{body}");
}

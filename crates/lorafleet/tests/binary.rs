//! The real `lorafleet` binary: first start, the printed configuration, graceful shutdown.

use std::process::Stdio;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn configfile_prints_the_commented_defaults() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lorafleet"))
        .arg("configfile")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("bind = \"0.0.0.0:8091\""));
    assert!(text.contains("# "), "commented");
    let parsed: lorafleet::config::Config = toml::from_str(&text).unwrap();
    assert_eq!(parsed, lorafleet::config::Config::default());
}

#[tokio::test]
async fn sigterm_stops_the_server_even_with_an_open_event_stream() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lorafleet"))
        .arg("serve")
        .env("LORAFLEET__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("LORAFLEET__SERVER__DATA_DIR", dir.path())
        .env("LORAFLEET__NETWORK__KIND", "none")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{base}/health")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // First start without a configured password: one is generated and written owner-only.
    let password = std::fs::read_to_string(dir.path().join("initial-admin-password")).unwrap();
    let stream = http
        .get(format!("{base}/api/stream"))
        .basic_auth("admin", Some(password.trim()))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the server stopped within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    drop(stream);
}

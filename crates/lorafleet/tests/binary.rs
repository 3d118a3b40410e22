//! The real `lorafleet` binary: first start, the printed configuration, the address it bound,
//! graceful shutdown.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::time::Duration;

use common::{spawn_binary, test_config};

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
    let mut config = test_config();
    config.auth.initial_admin_password.clear();
    config.integration.token.clear();
    let mut server = spawn_binary(config).await;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // First start without a configured password: one is generated and written owner-only.
    let password =
        std::fs::read_to_string(server.data_dir().join("initial-admin-password")).unwrap();
    let stream = http
        .get(format!("{base}/api/stream"))
        .basic_auth("admin", Some(password.trim()))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let pid = server.pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("the server stopped within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    drop(stream);
}

#[tokio::test]
async fn port_0_is_reported_on_stdout_and_in_the_data_dir_until_shutdown() {
    let mut server = spawn_binary(test_config()).await;
    let file = server.data_dir().join("listen-address");
    let address = std::fs::read_to_string(&file).unwrap();
    let port = address.trim().strip_prefix("127.0.0.1:").unwrap();
    assert_ne!(port, "0", "the bound port, not the configured one");
    assert_eq!(server.base, format!("http://{}", address.trim()));
    assert!(
        server
            .output()
            .contains(&format!("listening on http://127.0.0.1:{port}\n")),
        "{}",
        server.output()
    );
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);

    std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("the server stopped within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!file.exists(), "the address of a stopped server is gone");
}

//! The real binary on the simulated network: a campaign created and started through the API
//! with the demo image written on the first start, the server killed with SIGKILL while the
//! devices receive fragments, restarted, and the campaign resumed to the end: the engine picks
//! up its state from the database, the simulated devices theirs (with the fragments received)
//! from the data directory.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::time::{Duration, Instant};

use common::{spawn_binary, test_config, TestBinary};
use serde_json::{json, Value};

const PASSWORD: &str = "resume-test-password";

fn config() -> common::TestConfig {
    let mut config = test_config();
    config.auth.initial_admin_password = PASSWORD.into();
    config.network.kind = lorafleet::config::NetworkKind::Simulated;
    config.network.simulated.devices = 6;
    config.network.simulated.time_scale = 200.0;
    config.network.simulated.uplink_interval_s = 30;
    config.log.level = "warn".into();
    config
}

/// The test's calls, with its password; a trait because the harness's binary is not this file's.
trait Api {
    async fn get(&self, path: &str) -> Value;
    async fn post(&self, path: &str, body: &Value) -> (u16, Value);
}

impl Api for TestBinary {
    async fn get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .basic_auth("admin", Some(PASSWORD))
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_survives_kill_9_and_completes() {
    let mut server = spawn_binary(config()).await;

    let firmware = server.get("/api/firmware").await;
    let images = firmware
        .as_array()
        .or_else(|| firmware["images"].as_array())
        .cloned()
        .unwrap_or_default();
    let demo = images
        .iter()
        .find(|i| i["file_name"] == "demo-sensor-1.3.0.bin")
        .unwrap_or_else(|| panic!("the demo image is in the library: {firmware}"));
    // The sensors among the six devices (every fourth device is a tracker).
    let sensors = [
        "4c4653494d000001",
        "4c4653494d000002",
        "4c4653494d000003",
        "4c4653494d000005",
    ];
    let started = Instant::now();
    let (status, c) = loop {
        let (status, c) = server
            .post(
                "/api/campaigns",
                &json!({
                    "name": "resume",
                    "firmware_id": demo["id"],
                    "devices": sensors,
                    "driver": "engine",
                    "unicast": {"timeout_s": 60, "attempts": 8},
                    "fragmentation": {"redundancy_percent": 30},
                    "engine": {"reboot_delay_s": 30},
                }),
            )
            .await;
        // The devices appear once the network's device list was read at start.
        if status != 422 || started.elapsed() > Duration::from_secs(10) {
            break (status, c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 201, "{c}");
    let id = c["id"].as_i64().unwrap();
    let (status, c) = server
        .post(&format!("/api/campaigns/{id}/start"), &json!({}))
        .await;
    assert_eq!(status, 202, "{c}");

    // Kill it in the middle of the fragments: the simulated devices log what they receive
    // (one frame record of about 250 bytes and 16 bytes per receiving device for each of the
    // 69 fragments, about 21 KB in all). Past 12 KB most of the data fragments are in, so the
    // devices can only complete if the restart gives them back what they had received.
    let log = server.data_dir().join("simulated/receptions.log");
    let started = Instant::now();
    loop {
        let size = std::fs::metadata(&log).map_or(0, |m| m.len());
        if size > 12_000 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the fragments never came: {}",
            server.get(&format!("/api/campaigns/{id}")).await
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill().await;

    server.restart().await;
    let started = Instant::now();
    let c = loop {
        let c = server.get(&format!("/api/campaigns/{id}")).await;
        if c["state"] != "running" {
            break c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "did not complete after the restart: {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(c["state"], "completed", "{c}");
    for d in c["devices"].as_array().unwrap() {
        assert_eq!(d["outcome"], "verified", "{d}");
        assert_eq!(d["stage"], "completed", "{d}");
        // The demo devices speak Version & Status, which `auto` asks first; their status
        // answer after the session is kept as received, in the specification's reading.
        assert_eq!(d["check_method_used"], "version_status", "{d}");
        assert_eq!(d["verify_method_used"], "version_status", "{d}");
        assert_eq!(d["frag_status"]["reading"], "count", "{d}");
        assert_eq!(
            d["frag_status"]["raw_hex"].as_str().unwrap().len(),
            10,
            "{d}"
        );
    }
    let log = common::campaign_log(&c);
    assert!(
        log.iter().any(|m| m.starts_with("report: 4 verified")),
        "{log:#?}"
    );
    for eui in sensors {
        let d = server.get(&format!("/api/devices/{eui}")).await;
        assert_eq!(
            d["status"]["running"]["version"]["display"], "1.3.0",
            "{eui}"
        );
        // The device page's firmware history: the campaign's outcome and the version change.
        let history = d["firmware_history"].as_array().unwrap();
        assert!(
            history
                .iter()
                .any(|e| e["campaign_id"] == id && e["outcome"] == "verified"),
            "{history:#?}"
        );
        assert!(
            history.iter().any(|e| e["message"]
                .as_str()
                .unwrap()
                .starts_with("now runs 1.3.0 in slot 1 (was 1.2.0)")),
            "{history:#?}"
        );
    }
}

//! Waves (issue 10 item 6) on the real binary with the simulated network and the engine: the
//! waves run in order, each its own session over its share of the devices; a wave over the
//! error threshold (a device that never answers) pauses the campaign with the reason and
//! nothing more is sent until the operator resumes; a rollout that is wrong is refused naming
//! its field, and one for a driver that cannot run waves naming the driver; a mixed fleet's
//! operator waves run as one wave per multicast session, each judged by the thresholds.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::{spawn_app, spawn_binary, test_config, TestApp, TestBinary, FIXTURE};
use lorafleet::config::{NetworkKind, SimulatedDeviceOverride};
use lorafleet::network::{Downlink, Enqueued, Network, NetworkError, RemoteDevice};
use lorafleet::storage::campaigns::leases::{self, Next, StepSave};
use lorafleet::storage::campaigns::waves::{WaveState, WaveWrite};
use serde_json::{json, Value};

const PASSWORD: &str = "waves-test-password";
/// The devices that never answer (every frame to and from them is lost).
const SILENT: &str = "4c4653494d000001";

/// The devices speaking TS004/TS005 v2 (LoRa-Basics-Modem-like) in the mixed-fleet test.
const V2: [&str; 2] = ["4c4653494d000002", "4c4653494d000006"];

fn config(devices: u32, silent: &[&str]) -> common::TestConfig {
    let mut config = test_config();
    config.auth.initial_admin_password = PASSWORD.into();
    config.network.kind = lorafleet::config::NetworkKind::Simulated;
    config.network.simulated.devices = devices;
    config.network.simulated.time_scale = 200.0;
    config.network.simulated.uplink_interval_s = 30;
    for eui in silent {
        config.network.simulated.overrides.insert(
            (*eui).to_string(),
            SimulatedDeviceOverride {
                loss: Some(1.0),
                ..SimulatedDeviceOverride::default()
            },
        );
    }
    config.log.level = "warn".into();
    config
}

async fn get(server: &TestBinary, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", server.base))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn post(server: &TestBinary, path: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .basic_auth("admin", Some(PASSWORD))
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Creates and starts an engine campaign of the demo sensor image with `rollout`.
async fn start_campaign(server: &TestBinary, devices: &[&str], rollout: Value) -> i64 {
    start_campaign_with(
        server,
        devices,
        json!({"timeout_s": 60, "attempts": 2}),
        rollout,
    )
    .await
}

/// [`start_campaign`] with the campaign's `unicast` settings.
async fn start_campaign_with(
    server: &TestBinary,
    devices: &[&str],
    unicast: Value,
    rollout: Value,
) -> i64 {
    let firmware = get(server, "/api/firmware").await;
    let demo = firmware["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["file_name"] == "demo-sensor-1.3.0.bin")
        .cloned()
        .unwrap_or_else(|| panic!("the demo image is in the library: {firmware}"));
    create_and_start(
        server,
        &json!({
            "name": "waves",
            "firmware_id": demo["id"],
            "devices": devices,
            "driver": "engine",
            "unicast": unicast,
            "fragmentation": {"redundancy_percent": 30},
            "engine": {"reboot_delay_s": 30},
            "rollout": rollout,
        }),
    )
    .await
}

/// Creates the campaign `body` describes and starts it; returns its id.
async fn create_and_start(server: &TestBinary, body: &Value) -> i64 {
    let started = Instant::now();
    let (status, c) = loop {
        let (status, c) = post(server, "/api/campaigns", body).await;
        // The devices appear once the network's device list was read at start.
        if status != 422 || started.elapsed() > Duration::from_secs(10) {
            break (status, c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 201, "{c}");
    let id = c["id"].as_i64().unwrap();
    let (status, c) = post(server, &format!("/api/campaigns/{id}/start"), &json!({})).await;
    assert_eq!(status, 202, "{c}");
    id
}

/// The campaign once `done` holds, within `limit`.
async fn wait_for(
    server: &TestBinary,
    id: i64,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let c = get(server, &format!("/api/campaigns/{id}")).await;
        if done(&c) {
            return c;
        }
        assert!(started.elapsed() < limit, "{what} within {limit:?}: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The states of the campaign's first `n` waves.
fn wave_states(c: &Value, n: usize) -> Vec<&str> {
    (0..n)
        .map(|i| c["waves"][i]["state"].as_str().unwrap_or("(none)"))
        .collect()
}

fn wave_devices(c: &Value, index: usize) -> Vec<String> {
    c["waves"][index]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

fn device<'a>(c: &'a Value, eui: &str) -> &'a Value {
    c["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dev_eui"] == eui)
        .unwrap()
}

/// The pause between waves of the first test, in seconds of the network's clock.
const PAUSE_S: u64 = 600;

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_that_meet_the_threshold_run_in_order_to_the_end() {
    let server = spawn_binary(config(8, &[])).await;
    // The six sensors among the eight devices (every fourth is a tracker).
    let sensors = [
        "4c4653494d000007",
        "4c4653494d000001",
        "4c4653494d000002",
        "4c4653494d000003",
        "4c4653494d000005",
        "4c4653494d000006",
    ];
    let id = start_campaign(
        &server,
        &sensors,
        json!({"waves": [{"percent": 20}, {"percent": 50}, {"percent": 100}], "success_threshold": 1.0, "pause_between_s": PAUSE_S}),
    )
    .await;

    // The split is stored at start, in DevEUI order: 20 % of 6 is 2 devices, 50 % 3 (one more).
    let c = get(&server, &format!("/api/campaigns/{id}")).await;
    assert_eq!(c["rollout"]["waves"], json!([20.0, 50.0, 100.0]), "{c}");
    assert_eq!(
        wave_devices(&c, 0),
        ["4c4653494d000001", "4c4653494d000002"]
    );
    assert_eq!(wave_devices(&c, 1), ["4c4653494d000003"]);
    assert_eq!(
        wave_devices(&c, 2),
        ["4c4653494d000005", "4c4653494d000006", "4c4653494d000007"]
    );
    assert_eq!(c["waves"][0]["state"], "running", "{c}");
    assert_eq!(c["waves"][1]["state"], "pending", "{c}");
    assert_eq!(c["waves"][0]["index"], 1);
    // The later waves' devices wait, untouched, while the first wave runs.
    assert_eq!(c["waves"][2]["counts"], json!({"pending": 3}), "{c}");

    let c = wait_for(
        &server,
        id,
        Duration::from_secs(180),
        "the campaign ends",
        |c| c["state"] != "running",
    )
    .await;
    assert_eq!(c["state"], "completed", "{c}");
    assert_eq!(c["state_label"], "completed", "{c}");
    let states = wave_states(&c, 3);
    assert_eq!(states, ["succeeded", "succeeded", "succeeded"], "{c}");
    assert_eq!(c["waves"][2]["counts"], json!({"completed": 3}), "{c}");
    assert!(c["paused_reason"].is_null(), "{c}");
    for eui in sensors {
        assert_eq!(device(&c, eui)["outcome"], "verified", "{eui}: {c}");
    }
    // In order: a wave's session starts only after every device of the previous one is done
    // and the pause after it passed, both on the network's clock (the pause's 600 simulated
    // seconds are 3 real ones at x200: real seconds would outlast the test's deadline).
    let pause = chrono::Duration::seconds(PAUSE_S as i64);
    for w in 1..3 {
        let previous_done = wave_devices(&c, w - 1)
            .iter()
            .map(|e| time(&device(&c, e)["completed_at"]))
            .max()
            .unwrap();
        for eui in wave_devices(&c, w) {
            let setup = time(&device(&c, &eui)["mc_group_setup_at"]);
            assert!(
                setup >= previous_done + pause,
                "wave {} device {eui} set up at {setup}, before wave {w} ended at {previous_done} and {PAUSE_S} s passed",
                w + 1
            );
        }
    }
    let log = common::campaign_log(&c);
    assert!(
        log.contains(&"wave 1 of 3 starts: 2 of 6 devices"),
        "{log:#?}"
    );
    assert!(
        log.contains(&"wave 2 succeeded; wave 3 starts in 600 s: 3 devices"),
        "{log:#?}"
    );

    // Only a paused campaign can be resumed.
    let (status, e) = post(&server, &format!("/api/campaigns/{id}/resume"), &json!({})).await;
    assert_eq!(status, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("completed"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_over_the_error_threshold_pauses_until_the_operator_resumes() {
    let server = spawn_binary(config(6, &[SILENT])).await;
    let sensors = [
        "4c4653494d000001",
        "4c4653494d000002",
        "4c4653494d000003",
        "4c4653494d000005",
    ];
    // 25 % of 4: the first wave is the silent device alone.
    let id = start_campaign(
        &server,
        &sensors,
        json!({"waves": [{"percent": 25}, {"percent": 100}], "success_threshold": 0.9, "error_threshold": 0.2}),
    )
    .await;
    let c = wait_for(
        &server,
        id,
        Duration::from_secs(120),
        "the first wave ends",
        |c| c["state"] != "running",
    )
    .await;
    assert_eq!(c["state"], "paused", "{c}");
    assert_eq!(
        c["paused_reason"], "wave 1: 1 of 1 devices failed (100 % > 20 %)",
        "{c}"
    );
    assert_eq!(c["waves"][0]["state"], "failed", "{c}");
    assert_eq!(c["waves"][0]["counts"], json!({"failed": 1}), "{c}");
    assert_eq!(c["waves"][1]["state"], "pending", "{c}");
    // Paused means nothing is sent: the second wave's devices are still untouched.
    for eui in &sensors[1..] {
        let d = device(&c, eui);
        assert_eq!(d["stage"], "pending", "{d}");
        assert!(d["mc_group_setup_at"].is_null(), "{d}");
    }
    // A paused campaign is no draft: it cannot be started again.
    let (status, _) = post(&server, &format!("/api/campaigns/{id}/start"), &json!({})).await;
    assert_eq!(status, 409);

    let (status, c) = post(&server, &format!("/api/campaigns/{id}/resume"), &json!({})).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["state"], "running", "{c}");
    assert_eq!(c["waves"][1]["state"], "running", "{c}");
    assert!(c["paused_reason"].is_null(), "{c}");

    let c = wait_for(
        &server,
        id,
        Duration::from_secs(180),
        "the second wave ends",
        |c| c["state"] != "running",
    )
    .await;
    assert_eq!(c["state"], "completed", "{c}");
    assert_eq!(c["state_label"], "completed with failures", "{c}");
    assert_eq!(c["waves"][1]["state"], "succeeded", "{c}");
    assert_eq!(c["waves"][1]["counts"], json!({"completed": 3}), "{c}");
    for eui in &sensors[1..] {
        assert_eq!(device(&c, eui)["outcome"], "verified", "{c}");
    }
    let log = common::campaign_log(&c);
    assert!(
        log.iter().any(|m| m.starts_with(
            "resumed by the operator after \"wave 1: 1 of 1 devices failed (100 % > 20 %)\": wave 2 starts"
        )),
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_paused_campaign_skips_the_waves_to_come() {
    let server = spawn_binary(config(6, &[SILENT])).await;
    let id = start_campaign(
        &server,
        &["4c4653494d000001", "4c4653494d000002", "4c4653494d000003"],
        json!({"waves": [{"percent": 30}, {"percent": 60}, {"percent": 100}]}),
    )
    .await;
    let c = wait_for(
        &server,
        id,
        Duration::from_secs(120),
        "the first wave ends",
        |c| c["state"] != "running",
    )
    .await;
    assert_eq!(c["state"], "paused", "{c}");
    let (status, c) = post(&server, &format!("/api/campaigns/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["state"], "cancelled", "{c}");
    let states = wave_states(&c, 3);
    assert_eq!(states, ["failed", "skipped", "skipped"], "{c}");
    assert_eq!(device(&c, "4c4653494d000003")["stage"], "cancelled", "{c}");
}

/// Issue 8 item 6 with operator waves: the 5 % canary of a fleet of demo and v2 devices is one
/// wave per session (a device of each), the v2 canary never answers and pauses the campaign
/// with its session named, and after the resume the rest runs as a v1 and a v2 wave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleets_waves_are_one_per_session_and_keep_the_thresholds() {
    let mut config = config(8, &[V2[0]]);
    for eui in V2 {
        let o = config
            .network
            .simulated
            .overrides
            .entry(eui.to_string())
            .or_default();
        o.stack = Some("lora-basics-modem".into());
    }
    let server = spawn_binary(config).await;
    let sensors = [
        "4c4653494d000001",
        "4c4653494d000002",
        "4c4653494d000003",
        "4c4653494d000005",
        "4c4653494d000006",
        "4c4653494d000007",
    ];
    // The v2 devices answer only Firmware Management: `auto` tries Version & Status first.
    let id = start_campaign_with(
        &server,
        &sensors,
        json!({"timeout_s": 60, "attempts": 3}),
        json!({"waves": [{"percent": 5}, {"percent": 100}], "success_threshold": 0.9, "error_threshold": 0.2}),
    )
    .await;
    let v1 = json!({"fragmentation": {"version": 1, "f_port": 201}});
    let v2 = json!({"fragmentation": {"version": 2, "f_port": 201}});
    let c = get(&server, &format!("/api/campaigns/{id}")).await;
    let waves = c["waves"].as_array().unwrap();
    assert_eq!(waves.len(), 4, "{c}");
    let plan: Vec<(Value, Value)> = waves
        .iter()
        .map(|w| (w["rollout_wave"].clone(), w["session"].clone()))
        .collect();
    assert_eq!(
        plan,
        [
            (json!(1), v1.clone()),
            (json!(1), v2.clone()),
            (json!(2), v1.clone()),
            (json!(2), v2.clone())
        ],
        "{c}"
    );
    assert_eq!(wave_devices(&c, 0), ["4c4653494d000001"]);
    assert_eq!(wave_devices(&c, 1), [V2[0]]);
    assert_eq!(
        wave_devices(&c, 2),
        ["4c4653494d000003", "4c4653494d000005", "4c4653494d000007"]
    );
    assert_eq!(wave_devices(&c, 3), [V2[1]]);
    assert_eq!(c["waves"][0]["percent"], 5.0, "{c}");
    assert_eq!(c["waves"][3]["percent"], 100.0, "{c}");

    let c = wait_for(
        &server,
        id,
        Duration::from_secs(180),
        "the v2 canary pauses the campaign",
        |c| c["state"] != "running",
    )
    .await;
    assert_eq!(c["state"], "paused", "{c}");
    assert_eq!(
        c["paused_reason"], "wave 2 (TS004 v2 on FPort 201): 1 of 1 devices failed (100 % > 20 %)",
        "{c}"
    );
    let states = wave_states(&c, 4);
    assert_eq!(states, ["succeeded", "failed", "pending", "pending"], "{c}");
    assert_eq!(device(&c, "4c4653494d000001")["outcome"], "verified", "{c}");
    for eui in wave_devices(&c, 2).iter().chain(&wave_devices(&c, 3)) {
        let d = device(&c, eui);
        assert_eq!(d["stage"], "pending", "{d}");
        assert!(d["mc_group_setup_at"].is_null(), "{d}");
    }

    let (status, c) = post(&server, &format!("/api/campaigns/{id}/resume"), &json!({})).await;
    assert_eq!(status, 200, "{c}");
    let c = wait_for(
        &server,
        id,
        Duration::from_secs(240),
        "the last waves end",
        |c| c["state"] != "running",
    )
    .await;
    assert_eq!(c["state"], "completed", "{c}");
    assert_eq!(c["state_label"], "completed with failures", "{c}");
    let states = wave_states(&c, 4);
    assert_eq!(
        states,
        ["succeeded", "failed", "succeeded", "succeeded"],
        "{c}"
    );
    for eui in sensors.iter().filter(|e| **e != V2[0]) {
        let d = device(&c, eui);
        assert_eq!(d["outcome"], "verified", "{d}");
        let method = if V2.contains(eui) {
            "firmware_management"
        } else {
            "version_status"
        };
        assert_eq!(d["verify_method_used"], method, "{d}");
    }
    let log = common::campaign_log(&c);
    assert!(
        log.contains(
            &"wave 3 (TS004 v1 on FPort 201) succeeded; wave 4 (TS004 v2 on FPort 201) starts: 1 devices"
        ),
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_wrong_rollout_is_refused_naming_its_field_and_other_drivers_naming_the_driver() {
    let t = spawn_app(test_config()).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
    t.add_device("0000000000000001", None, Some(100_000)).await;
    let body = |driver: &str, rollout: Value| {
        json!({
            "name": "waves",
            "firmware_id": img["id"],
            "devices": ["0000000000000001"],
            "driver": driver,
            "keys": {"gen_app_key": "0302030405060708090a0b0c0d0e0f10"},
            "multicast": {"class": "C", "dr": 5, "frequency": 868100000},
            "rollout": rollout,
        })
    };
    for (rollout, field) in [
        (json!({"waves": []}), "rollout.waves"),
        (
            json!({"waves": [{"percent": 50}, {"percent": 40}, {"percent": 100}]}),
            "rollout.waves[1].percent",
        ),
        (
            json!({"waves": [{"percent": 10}, {"percent": 90}]}),
            "rollout.waves[1].percent",
        ),
        (
            json!({"waves": [{"percent": 100}], "success_threshold": 1.2}),
            "rollout.success_threshold",
        ),
        (
            json!({"waves": [{"percent": 100}], "error_threshold": -0.5}),
            "rollout.error_threshold",
        ),
        (
            json!({"waves": [{"percent": "half"}]}),
            "rollout.waves[0].percent",
        ),
        (json!({"wave": []}), "rollout"),
    ] {
        let r = t
            .post("/api/campaigns")
            .json(&body("engine", rollout.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{rollout}");
        let e: Value = r.json().await.unwrap();
        let fields: Vec<&str> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.iter().any(|f| f.starts_with(field)),
            "{rollout}: {e}"
        );
    }
    for driver in ["chirpstack-v4", "fuota-server-v3"] {
        let r = t
            .post("/api/campaigns")
            .json(&body(
                driver,
                json!({"waves": [{"percent": 50}, {"percent": 100}]}),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{driver}");
        let e: Value = r.json().await.unwrap();
        let refusal = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == "rollout")
            .unwrap_or_else(|| panic!("{driver}: {e}"));
        assert!(
            refusal["error"].as_str().unwrap().contains(driver),
            "{refusal}"
        );
    }
    // A good rollout is stored with its defaults; a PATCH can take it away again.
    let r = t
        .post("/api/campaigns")
        .json(&body(
            "engine",
            json!({"waves": [{"percent": 5}, {"percent": 25}, {"percent": 100}]}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    assert_eq!(
        c["rollout"],
        json!({"waves": [5.0, 25.0, 100.0], "success_threshold": 0.9, "error_threshold": 0.2, "pause_between_s": 0})
    );
    assert_eq!(c["waves"].as_array().unwrap().len(), 3, "{c}");
    assert_eq!(c["waves"][0]["state"], "pending", "{c}");
    let id = c["id"].as_i64().unwrap();
    let c: Value = t
        .patch(&format!("/api/campaigns/{id}"))
        .json(&json!({"rollout": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(c.get("rollout").is_none(), "{c}");
    assert_eq!(c["waves"], json!([]), "{c}");

    // The API's document knows the resume and the campaign's waves.
    let doc: Value = t
        .get("/api/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/campaigns/{id}/resume"]["post"].is_object());
    let dto = &doc["components"]["schemas"]["CampaignDto"]["properties"];
    for field in ["waves", "paused_reason", "rollout"] {
        assert!(dto[field].is_object(), "{field}: {dto}");
    }
    let request = &doc["components"]["schemas"]["CampaignRequest"]["properties"];
    assert!(request["rollout"].is_object(), "{request}");
}

/// A campaign started with a `start_at` ahead runs its waves as one started at once does: the
/// split is stored when the start time comes (the runner's scheduled start, not the start
/// request), with every device in exactly one wave and the first wave running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_campaign_splits_its_waves_when_its_start_time_comes() {
    let server = spawn_binary(config(4, &[])).await;
    let devices = ["4c4653494d000001", "4c4653494d000002", "4c4653494d000003"];
    let demo = wait_for_demo_image(&server).await;
    // The start time is on the network's clock (simulated, 200x): a minute ahead of it.
    let info = get(&server, "/api/info").await;
    let now = chrono::DateTime::parse_from_rfc3339(info["network"]["now"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("network time in {info}: {e}"));
    let start_at = (now + chrono::Duration::seconds(60)).to_rfc3339();
    let body = json!({
        "name": "scheduled waves",
        "firmware_id": demo,
        "devices": devices,
        "driver": "engine",
        "fragmentation": {"redundancy_percent": 30},
        "rollout": {"waves": [{"percent": 34}, {"percent": 100}]},
        "start_at": start_at,
    });
    let id = create_and_start(&server, &body).await;
    let c = wait_for(
        &server,
        id,
        Duration::from_secs(60),
        "the scheduled start",
        |c| c["state"] != "scheduled",
    )
    .await;
    assert_eq!(c["state"], "running", "{c}");
    assert_eq!(wave_states(&c, 2), ["running", "pending"], "{c}");
    let mut listed = [wave_devices(&c, 0), wave_devices(&c, 1)].concat();
    listed.sort();
    assert_eq!(listed, devices, "each device in exactly one wave: {c}");
    assert_eq!(
        wave_devices(&c, 0).len(),
        2,
        "34 % of 3 is two devices: {c}"
    );
}

/// The demo sensor image's id, once the library has it.
async fn wait_for_demo_image(server: &TestBinary) -> Value {
    let started = Instant::now();
    loop {
        let firmware = get(server, "/api/firmware").await;
        let demo = firmware["images"].as_array().and_then(|images| {
            images
                .iter()
                .find(|i| i["file_name"] == "demo-sensor-1.3.0.bin")
                .map(|i| i["id"].clone())
        });
        if let Some(id) = demo {
            return id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the demo image in the library: {firmware}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
/// A network on an accelerated clock that the test sets, counting how often it was asked the
/// time ([`Network::now`], a request, which a simulated network's clock stands still after)
/// rather than looked at ([`Network::peek_now`]).
struct Clocked {
    at: Mutex<DateTime<Utc>>,
    asked: AtomicUsize,
}

impl Clocked {
    fn set(&self, at: DateTime<Utc>) {
        *self.at.lock().unwrap() = at;
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Network for Clocked {
    fn kind(&self) -> NetworkKind {
        NetworkKind::Simulated
    }
    fn now(&self) -> DateTime<Utc> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.peek_now()
    }
    fn peek_now(&self) -> DateTime<Utc> {
        *self.at.lock().unwrap()
    }
    fn time_scale(&self) -> f64 {
        200.0
    }
    async fn enqueue(&self, _d: &Downlink) -> Result<Enqueued, NetworkError> {
        Err(NetworkError::Other("the test sends nothing".into()))
    }
    async fn list_devices(&self) -> Result<Vec<RemoteDevice>, NetworkError> {
        Ok(Vec::new())
    }
}

/// Makes the campaign due for the runner now (its real clock) and runs one round of it.
async fn run_round(t: &TestApp, id: i64) {
    lorafleet::storage::campaigns::set_poll_result(&t.app.db, id, Utc::now(), None)
        .await
        .unwrap();
    lorafleet::campaigns::runner::run_due(&t.app).await.unwrap();
}

/// How long after `since` (real time) the runner will look at its campaigns again.
async fn next_look(t: &TestApp, since: DateTime<Utc>) -> Duration {
    let at = leases::next_claimable(&t.app.db, &t.app.campaigns.instance)
        .await
        .unwrap()
        .unwrap();
    (at - since).to_std().unwrap_or_default()
}

/// The runner waits for the pause between two waves by looking at the network's clock, never
/// asking it the time: a simulated network's clock stands still for a while after each request,
/// so a runner asking it as it looked again and again near the pause's end stopped the clock it
/// waited for (the first test above took 45 to over 180 s). It looks again as the clock's pace
/// says, within a second, and, near the end, not sooner than 20 ms later.
#[tokio::test]
async fn the_pause_between_waves_is_waited_for_without_asking_the_network_the_time() {
    let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let network = Arc::new(Clocked {
        at: Mutex::new(start),
        asked: AtomicUsize::new(0),
    });
    let t = spawn_app(test_config().with_network(network.clone())).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201, "{img}");
    let devices = ["0000000000000001", "0000000000000002"];
    for eui in devices {
        t.add_device(eui, None, Some(100_000)).await;
    }
    let r = t
        .post("/api/campaigns")
        .json(&json!({
            "name": "paused between waves",
            "firmware_id": img["id"],
            "devices": devices,
            "driver": "engine",
            "keys": {"gen_app_key": "0302030405060708090a0b0c0d0e0f10"},
            "multicast": {"class": "C", "dr": 5, "frequency": 868100000},
            "rollout": {"waves": [{"percent": 50}, {"percent": 100}], "pause_between_s": PAUSE_S},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let db = &t.app.db;
    let at = "2027-01-15T08:00:00.000Z";
    assert!(lorafleet::storage::campaigns::set_running(db, id, at)
        .await
        .unwrap());
    lorafleet::campaigns::rollout::begin(&t.app, id)
        .await
        .unwrap();
    // Wave 1 ended now: wave 2's session starts after the pause, on the network's clock.
    let owner = &t.app.campaigns.instance;
    let until = Utc::now() + TimeDelta::seconds(30);
    leases::claim(db, owner, Utc::now(), until).await.unwrap();
    let ended = StepSave {
        at,
        started: false,
        log_before: Vec::new(),
        outcome: None,
        log_after: Vec::new(),
        next: Next::Poll {
            at: Utc::now(),
            error: None,
        },
        waves: Some(WaveWrite::Start {
            states: vec![WaveState::Succeeded, WaveState::Running],
            next: 1,
            start_at: Some(start + TimeDelta::seconds(PAUSE_S as i64)),
        }),
    };
    assert!(leases::save_step(db, id, owner, until, &ended)
        .await
        .unwrap());

    let asked = network.asked();
    // 600 simulated seconds are 3 real ones at x200: looked at again within a second.
    let before = Utc::now();
    run_round(&t, id).await;
    let wait = next_look(&t, before).await;
    // (Poll times are stored to the millisecond.)
    assert!(wait >= Duration::from_millis(999), "{wait:?}");
    // The pause's last simulated millisecond (5 real microseconds): not looked at at once.
    network.set(start + TimeDelta::seconds(PAUSE_S as i64) - TimeDelta::milliseconds(1));
    for _ in 0..3 {
        let before = Utc::now();
        run_round(&t, id).await;
        let wait = next_look(&t, before).await;
        assert!(wait >= Duration::from_millis(19), "{wait:?}");
    }
    assert_eq!(
        network.asked(),
        asked,
        "asked the network the time while waiting"
    );

    // The pause is over: the wave's session starts, which asks the network.
    network.set(start + TimeDelta::seconds(PAUSE_S as i64));
    run_round(&t, id).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    let log = common::campaign_log(&c);
    assert!(
        log.iter().any(|m| m.starts_with("engine started")),
        "{log:#?}"
    );
    assert!(network.asked() > asked);
}

/// What the console reads again and again (a campaign's page, the server's info, the device
/// list) only looks at the network's clock: asking a simulated network the time would keep its
/// clock standing a while after each read, and a page refreshed every 50 ms slowed the
/// campaign it showed by a quarter.
#[tokio::test]
async fn the_consoles_reads_do_not_ask_the_network_the_time() {
    let network = Arc::new(Clocked {
        at: Mutex::new(DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
        asked: AtomicUsize::new(0),
    });
    let t = spawn_app(test_config().with_network(network.clone())).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201, "{img}");
    t.add_device("0000000000000001", None, Some(100_000)).await;
    let r = t
        .post("/api/campaigns")
        .json(&json!({
            "name": "watched",
            "firmware_id": img["id"],
            "devices": ["0000000000000001"],
            "driver": "engine",
            "keys": {"gen_app_key": "0302030405060708090a0b0c0d0e0f10"},
            "multicast": {"class": "C", "dr": 5, "frequency": 868100000},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let asked = network.asked();
    for path in [
        format!("/api/campaigns/{id}"),
        "/api/info".to_string(),
        "/api/devices?status=online".to_string(),
    ] {
        let r = t.get(&path).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(network.asked(), asked, "{path} asked the network the time");
    }
    let info = t.get_json("/api/info").await;
    assert_eq!(info["network"]["now"], "2027-01-15T08:00:00.000Z", "{info}");
}

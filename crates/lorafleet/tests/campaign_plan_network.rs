//! Plans from the real network (issue 10 item 8): the uplink interval comes from ChirpStack
//! v4's device profile (`uplink_interval`, served by the fake), the loss from the frame-counter
//! gaps of the campaign's devices' uplinks, or from the simulated network's configuration;
//! every sub-band the campaign sends in has its duty-cycle figure; and a default campaign gets
//! the advised redundancy instead of a warning about its own default.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_chirpstack_v4::{self, FakeDeviceService};
use common::{spawn_app, test_config, v4_uplink_json, TestApp, FIXTURE};
use lorafleet::network::chirpstack_v4::ChirpstackV4;
use serde_json::{json, Value};

const A: &str = "0102030405060708";
const B: &str = "0102030405060709";
const GEN_APP_KEY: &str = "0302030405060708090a0b0c0d0e0f10";
/// Device 1 of the simulated fleet.
const SIM_DEVICE: &str = "4c4653494d000001";

async fn app_on(fake: &FakeDeviceService) -> TestApp {
    let url = fake_chirpstack_v4::serve(fake.clone()).await;
    let mut config = test_config();
    config.network.kind = lorafleet::config::NetworkKind::ChirpstackV4;
    config.network.chirpstack_v4.api_url = url;
    config.network.chirpstack_v4.api_token = "fake-api-token".into();
    config.network.request_timeout_s = 2;
    let network = ChirpstackV4::new(&config.network.chirpstack_v4, Duration::from_secs(2))
        .unwrap()
        .with_region("EU868")
        .unwrap();
    spawn_app(config.with_network(Arc::new(network))).await
}

/// The device's uplinks with these frame counters, through ChirpStack's HTTP integration.
async fn uplinks(t: &TestApp, eui: &str, counters: impl Iterator<Item = u32>) {
    for f_cnt in counters {
        let r = t
            .ingest(
                "up",
                "application/json",
                v4_uplink_json(eui, 2, f_cnt, &[1, 2]),
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

async fn preview(t: &TestApp, body: &Value) -> Value {
    let r = t
        .post("/api/campaigns/preview")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["plan"].clone()
}

fn band<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["sub_bands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["band"] == name)
        .unwrap_or_else(|| panic!("no sub-band {name} in {}", plan["sub_bands"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chirpstack_plans_take_the_profiles_interval_and_the_counters_loss() {
    let fake = FakeDeviceService::default();
    {
        let mut s = fake.state.lock().unwrap();
        s.put_profile("dp-1", "meters", (0, 0), (1, 201), (1, 200));
        s.set_uplink_interval("dp-1", 600);
        s.put_device(A, "dp-1");
        s.put_device(B, "dp-1");
    }
    let t = app_on(&fake).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
    // A: frames 1..=31 with 5, 10 and 15 lost (30 expected); B: 1..=11, none lost (10).
    uplinks(&t, A, (1..=31).filter(|f| ![5, 10, 15].contains(f))).await;
    uplinks(&t, B, 1..=11).await;

    let body = json!({
        "name": "from the network", "firmware_id": img["id"], "devices": [A, B], "driver": "engine",
        "keys": {"gen_app_key": GEN_APP_KEY},
        "multicast": {"class": "C", "dr": 5, "frequency": 868100000, "group_id": 1},
        "unicast": {"timeout_s": 60, "attempts": 2},
        "fragmentation": {"redundancy": 10},
    });
    let p = preview(&t, &body).await;
    assert_eq!(p["uplink_interval_source"], "device_profile", "{p}");
    assert_eq!(p["uplink_interval_s"], 600.0);
    assert_eq!(p["uplink_interval_observed"], false);
    let steps = p["unicast_steps"].as_f64().unwrap();
    let session = p["session_length_s"].as_f64().unwrap();
    assert_eq!(
        p["expected_duration_s"].as_f64().unwrap(),
        steps * 600.0 + session
    );
    assert_eq!(
        p["loss"],
        json!({"value": 0.075, "source": "fcnt_gaps", "frames": 40})
    );
    assert_eq!(p["redundancy_advice"]["loss"], 0.075);

    // Fragments at 868.1 MHz (1 %), unicast setup at RX2's 869.525 MHz (10 %).
    let multicast = band(&p, "868–868.6 MHz");
    assert_eq!(multicast["duty_cycle"], 0.01);
    assert_eq!(multicast["allowed_per_hour_s"], 36.0);
    assert_eq!(multicast["frequencies"], json!([868_100_000]));
    assert_eq!(multicast["carries"], json!(["multicast fragments"]));
    assert_eq!(multicast["airtime_s"], p["airtime_total_s"]);
    let rx2 = band(&p, "869.4–869.65 MHz");
    assert_eq!(rx2["duty_cycle"], 0.1);
    assert_eq!(rx2["carries"], json!(["unicast setup (RX2)"]));
    assert!(rx2["airtime_s"].as_f64().unwrap() > 0.0, "{rx2}");
    assert_eq!(p["sub_bands"].as_array().unwrap().len(), 2);

    // The draft stores the same plan.
    let r = t.post("/api/campaigns").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["plan"]["uplink_interval_source"], "device_profile");
    assert_eq!(c["plan"]["loss"]["source"], "fcnt_gaps");

    // The draft's page: what it waits for (nothing yet) and its devices by name.
    let id = c["id"].as_i64().unwrap();
    let d = t.get_json(&format!("/api/campaigns/{id}")).await;
    let s = &d["progress_summary"];
    assert_eq!(s["phase"], "draft", "{s}");
    assert_eq!(s["fragments_total"], c["plan"]["total_fragments"]);
    assert_eq!(
        s["fragments_sent"],
        Value::Null,
        "nothing sent before the start"
    );
    assert_eq!(s["next_step"], Value::Null);
    assert_eq!(s["elapsed"], Value::Null);
    assert_eq!(
        s["expected"]["simulated_s"], c["plan"]["expected_duration_s"],
        "{s}"
    );
    assert_eq!(
        s["expected"]["real_s"], s["expected"]["simulated_s"],
        "real time"
    );
    let facts = s["device_facts"].as_array().unwrap();
    let names: Vec<&str> = facts.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, [format!("meter-{A}"), format!("meter-{B}")]);
    assert!(facts.iter().all(|f| f["stage"] == "pending"), "{s}");

    // The new fields are in the API's description.
    let doc = t.get_json("/api/openapi.json").await;
    for schema in ["ProgressSummary", "DeviceFact", "LossFigure", "SubBandUse"] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} in {}",
            doc["components"]["schemas"]
        );
    }

    // A profile without an interval leaves it to the devices' traffic or the default.
    fake.state.lock().unwrap().set_uplink_interval("dp-1", 0);
    let p = preview(&t, &body).await;
    let source = p["uplink_interval_source"].as_str().unwrap();
    assert!(["observed", "default"].contains(&source), "{p}");
    assert_eq!(p["uplink_interval_observed"], source == "observed");
    assert_ne!(p["uplink_interval_s"], 600.0);
}

/// The simulated fleet's devices, once the network's device list has been read.
async fn simulated_app(loss: f64) -> TestApp {
    let config = test_config().with(|c| {
        c.network.kind = lorafleet::config::NetworkKind::Simulated;
        c.network.simulated.devices = 3;
        c.network.simulated.loss = loss;
        c.network.simulated.time_scale = 50.0;
    });
    let t = spawn_app(config).await;
    let started = Instant::now();
    loop {
        let r = t
            .get(&format!("/api/devices/{SIM_DEVICE}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the simulated device never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn redundancy_warnings(plan: &Value) -> Vec<String> {
    plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["message"].as_str().unwrap().to_string())
        .filter(|m| m.contains("parity fragments complete"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_campaign_takes_the_advice_at_the_simulated_loss_and_does_not_warn() {
    let t = simulated_app(0.2).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
    let default = json!({"name": "defaults", "firmware_id": img["id"], "devices": [SIM_DEVICE]});
    let p = preview(&t, &default).await;
    assert_eq!(
        p["loss"],
        json!({"value": 0.2, "source": "simulated", "frames": 0})
    );
    let advice = &p["redundancy_advice"];
    assert_eq!(advice["loss"], 0.2);
    let suggested = advice["suggested_redundancy"].as_u64().unwrap();
    assert!(
        suggested > 10,
        "at 20 % loss the advice is above the old default: {advice}"
    );
    assert!(
        p["redundancy_fragments"].as_u64().unwrap() >= suggested,
        "the default redundancy is raised to the advice: {p}"
    );
    assert!(
        advice["completion_at_planned"].as_f64().unwrap()
            >= advice["target"].as_f64().unwrap() - 0.02,
        "{advice}"
    );
    assert_eq!(redundancy_warnings(&p), Vec::<String>::new());
    assert!(!p["sub_bands"].as_array().unwrap().is_empty(), "{p}");

    // A redundancy the operator sets is kept, and warned about when below the advice.
    let mut low = default.clone();
    low["fragmentation"] = json!({"redundancy": 2});
    let p = preview(&t, &low).await;
    assert_eq!(p["redundancy_fragments"], 2);
    let warned = redundancy_warnings(&p);
    assert_eq!(warned.len(), 1, "{p}");
    assert!(
        warned[0].contains("at 20.0 % loss (the simulated network's configured loss)"),
        "{}",
        warned[0]
    );
}

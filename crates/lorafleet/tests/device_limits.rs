//! Device limits through the real router: the firmware sidecar's `[device_limits]` (the
//! model's) and a campaign's per-device override decide the automatic fragment size (the
//! smallest over the campaign's devices), the plan warns for a device that would refuse the
//! session, and a malformed sidecar table is reported by the library scan.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::{spawn_app, test_config, FIXTURE};
use serde_json::{json, Value};

const A: &str = "0102030405060708";
const B: &str = "0102030405060709";

#[tokio::test]
async fn the_models_and_the_devices_limits_shape_the_plan() {
    let config = test_config();
    let dir = config.firmware.dir.clone();
    std::fs::write(dir.join("meter.bin"), FIXTURE).unwrap();
    std::fs::write(
        dir.join("meter.bin.toml"),
        "target = \"meter\"\n[device_limits]\nmax_fragment_size = 120\nmax_fragments = 1000\nmax_parity = 40\n",
    )
    .unwrap();
    std::fs::write(dir.join("odd.bin"), b"odd").unwrap();
    std::fs::write(
        dir.join("odd.bin.toml"),
        "[device_limits]\nmax_parity = -2\n",
    )
    .unwrap();
    let t = spawn_app(config).await;
    let r = t.post("/api/firmware/rescan").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["errors"][0]["file"], "odd.bin.toml", "{report}");
    let list = t.get_json("/api/firmware").await;
    let id = list["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["file_name"] == "meter.bin")
        .unwrap()["id"]
        .clone();
    t.add_device(A, None, None).await;
    t.add_device(B, None, None).await;

    let body = |extra: Value| {
        let mut b = json!({
            "name": "limits", "firmware_id": id, "devices": [A, B], "driver": "engine",
            "keys": {"gen_app_key": "0302030405060708090a0b0c0d0e0f10"},
            "multicast": {"class": "C", "dr": 5, "frequency": 869525000},
        });
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    // The model's 120 bytes instead of DR5's 239.
    let r = t
        .post("/api/campaigns")
        .json(&body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["settings"]["fragmentation"]["fragment_size"], 120);
    assert_eq!(
        c["settings"]["model_device_limits"]["max_fragment_size"],
        120
    );
    assert_eq!(c["plan"]["fragment_size"], 120);

    // One device holds less: its 50 bytes for everyone; 50 parity fragments exceed the
    // model's 40 for both devices, which the plan says device by device.
    let r = t
        .post("/api/campaigns")
        .json(&body(json!({
            "fragmentation": {"redundancy": 50},
            "device_overrides": {B: {"device_limits": {"max_fragment_size": 50}}},
        })))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["plan"]["fragment_size"], 50);
    let refusing: Vec<(String, String)> = c["plan"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            w["message"]
                .as_str()
                .unwrap()
                .starts_with("the device would refuse")
        })
        .map(|w| {
            (
                w["dev_eui"].as_str().unwrap().to_string(),
                w["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(refusing.len(), 2, "{}", c["plan"]["warnings"]);
    assert!(refusing
        .iter()
        .all(|(_, m)| m.ends_with("50 parity fragments exceed its max_parity of 40")));

    // The device page reads the limits the newest campaign held for each device: B's own
    // fragment size over the model's, with that campaign named; and the packages in effect
    // outside a campaign (no device profiles on this network: the defaults).
    let newest = c["id"].clone();
    let d = t.get_json(&format!("/api/devices/{B}")).await;
    assert_eq!(
        d["device_limits"],
        json!({"max_fragment_size": 50, "max_fragments": 1000, "max_parity": 40, "campaign_id": newest}),
        "{d}"
    );
    let d = t.get_json(&format!("/api/devices/{A}")).await;
    assert_eq!(d["device_limits"]["max_fragment_size"], 120, "{d}");
    assert_eq!(d["packages"]["source"], "defaults", "{d}");
    assert_eq!(
        d["packages"]["fragmentation"],
        json!({"version": 1, "f_port": 201})
    );
    assert_eq!(d["packages"]["clock_sync"]["enabled"], true);
    assert_eq!(d["packages"]["device_profile"], Value::Null);

    // A limit that is not one: 422 naming the field.
    let r = t
        .post("/api/campaigns")
        .json(&body(json!({"device_limits": {"max_fragment_size": 0}})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        e["fields"][0]["field"], "device_limits.max_fragment_size",
        "{e}"
    );
}

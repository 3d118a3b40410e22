//! The device's record tells the truth (issue 10 item 11): a downlink ChirpStack dropped is
//! `failed` with ChirpStack's reason, a MAC-only uplink does not hide the last application
//! uplink, and devices listed before their first uplink show their application's name.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::*;
use serde_json::{json, Value};

const EUI: &str = "0102030405060708";

async fn v4_app(fake: fake_chirpstack_v4::FakeDeviceService) -> TestApp {
    let url = fake_chirpstack_v4::serve(fake).await;
    spawn(
        |c| {
            c.network.kind = lorafleet::config::NetworkKind::ChirpstackV4;
            c.network.chirpstack_v4.api_url = url.clone();
            c.network.chirpstack_v4.api_token = "fake-api-token".into();
            c.network.chirpstack_v4.application_ids =
                vec!["ff2b8a3f-0000-4000-8000-000000000001".into()];
        },
        None,
    )
    .await
}

async fn send_downlink(t: &TestApp, bytes: usize) -> i64 {
    let r = t
        .post(&format!("/api/devices/{EUI}/downlinks"))
        .json(&json!({"f_port": 10, "data_hex": "ab".repeat(bytes)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

#[tokio::test]
async fn a_downlink_chirpstack_dropped_is_failed_with_its_reason() {
    let t = v4_app(fake_chirpstack_v4::FakeDeviceService::default()).await;
    let r = t
        .ingest("up", "application/json", v4_uplink_json(EUI, 2, 1, b"hi"))
        .await;
    assert_eq!(r.status(), 200);
    let dropped = send_downlink(&t, 100).await;
    let other = send_downlink(&t, 10).await;
    let d = t.device(EUI).await;
    assert!(
        d["downlinks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["state"] == "enqueued"),
        "{d}"
    );
    // ChirpStack's log event when a class-C item is over the data rate's limit.
    let info = json!({"applicationId": "ff2b8a3f-0000-4000-8000-000000000001", "applicationName": "meters", "deviceName": "d", "devEui": EUI});
    let log = json!({
        "time": "2026-11-27T10:00:05Z", "deviceInfo": info, "level": "ERROR",
        "code": "DOWNLINK_PAYLOAD_SIZE",
        "description": "Device queue-item discarded because it exceeds the max. payload size",
        "context": {"item_size": "100", "queue_item_id": "queue-item-1", "max_payload_size": "51"}
    });
    let r = t
        .ingest("log", "application/json", log.to_string().into_bytes())
        .await;
    assert_eq!(r.status(), 200);
    let d = t.device(EUI).await;
    let by_id = |id: i64| {
        d["downlinks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()
            .clone()
    };
    let failed = by_id(dropped);
    assert_eq!(failed["state"], "failed", "{failed}");
    let reason = failed["error"].as_str().unwrap();
    assert!(
        reason.contains("exceeds the max. payload size") && reason.contains("max_payload_size=51"),
        "{reason}"
    );
    assert_eq!(
        by_id(other)["state"],
        "enqueued",
        "only the item ChirpStack named"
    );
    assert_eq!(d["events"][0]["kind"], "downlink_failed");
    // An error that names no queue item stays a log line.
    let log = json!({"time": "2026-11-27T10:00:06Z", "deviceInfo": info, "level": "ERROR", "code": "UPLINK_CODEC", "description": "codec failed", "context": {}});
    t.ingest("log", "application/json", log.to_string().into_bytes())
        .await;
    let d = t.device(EUI).await;
    assert_eq!(d["events"][0]["kind"], "error");
    assert_eq!(by_id(other)["state"], "enqueued");
}

#[tokio::test]
async fn a_mac_only_uplink_does_not_replace_the_last_application_uplink() {
    let t = spawn(|_| {}, None).await;
    t.ingest("up", "application/json", v4_uplink_json(EUI, 2, 1, b"app"))
        .await;
    // No FPort: the frame carried MAC commands only (ChirpStack leaves fPort out).
    let mut mac: Value = serde_json::from_slice(&v4_uplink_json(EUI, 2, 2, b"")).unwrap();
    mac.as_object_mut().unwrap().remove("fPort");
    mac.as_object_mut().unwrap().remove("data");
    mac["time"] = json!("2026-11-27T10:05:00Z");
    let r = t
        .ingest("up", "application/json", mac.to_string().into_bytes())
        .await;
    assert_eq!(r.status(), 200);
    let d = t.device(EUI).await;
    assert_eq!(d["last_uplink"]["f_cnt"], 1, "{}", d["last_uplink"]);
    assert_eq!(d["last_uplink"]["data_text"], "app");
    assert_eq!(
        d["last_seen"], "2026-11-27T10:05:00.000Z",
        "the device was heard all the same"
    );
    let ups = t.get_json(&format!("/api/devices/{EUI}/uplinks")).await;
    assert_eq!(
        ups["uplinks"].as_array().unwrap().len(),
        2,
        "both are stored"
    );
}

#[tokio::test]
async fn devices_listed_before_any_uplink_show_the_application_name() {
    let fake = fake_chirpstack_v4::FakeDeviceService::default();
    fake.state.lock().unwrap().devices.insert(
        "ff2b8a3f-0000-4000-8000-000000000001".into(),
        vec![chirpstack_api::api::DeviceListItem {
            dev_eui: "aa00000000000001".into(),
            name: "listed".into(),
            ..Default::default()
        }],
    );
    let t = v4_app(fake).await;
    // Another device of the application has sent (the fake has no ApplicationService to ask).
    t.ingest("up", "application/json", v4_uplink_json(EUI, 2, 1, b"hi"))
        .await;
    t.app.sync_network_devices().await.unwrap();
    let listed = t.device("aa00000000000001").await;
    assert_eq!(listed["never_seen"], true);
    assert_eq!(listed["application"], "meters", "{listed}");
    let list = t.get_json("/api/devices?search=listed").await;
    assert_eq!(list["devices"][0]["application"], "meters");
}

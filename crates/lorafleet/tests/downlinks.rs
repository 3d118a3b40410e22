//! Downlinks and Version & Status requests through each network backend, checked against fake
//! peers: the exact DevEUI, FPort, bytes and API token ChirpStack receives.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use base64::Engine;
use common::fake_chirpstack_v4;
use common::*;
use serde_json::{json, Value};

const EUI: &str = "0102030405060708";

async fn with_device(t: &TestApp) {
    let r = t
        .ingest("up", "application/json", v4_uplink_json(EUI, 1, 1, b"x"))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn v4_enqueue_carries_eui_port_bytes_and_token() {
    let fake = fake_chirpstack_v4::FakeDeviceService::default();
    let url = fake_chirpstack_v4::serve(fake.clone()).await;
    let t = spawn(
        |c| {
            c.network.kind = lorafleet::config::NetworkKind::ChirpstackV4;
            c.network.chirpstack_v4.api_url = url.clone();
            c.network.chirpstack_v4.api_token = "fake-api-token".into();
        },
        None,
    )
    .await;
    with_device(&t).await;

    let r = t
        .post(&format!("/api/devices/{EUI}/status-requests"))
        .json(&json!({"command": "version_stored", "nb_slots": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["f_port"], 111);
    assert_eq!(body["payload_hex"], "0203");

    let r = t
        .post(&format!("/api/devices/{EUI}/downlinks"))
        .json(&json!({"f_port": 10, "data_hex": "CAFE01", "confirmed": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let enqueued = fake.state.lock().unwrap().enqueued.clone();
    assert_eq!(enqueued.len(), 2);
    let (auth, req) = &enqueued[0];
    assert_eq!(auth, "Bearer fake-api-token");
    let item = req.queue_item.as_ref().unwrap();
    assert_eq!(item.dev_eui, EUI);
    assert_eq!(item.f_port, 111);
    assert_eq!(item.data, vec![0x02, 0x03]);
    assert!(!item.confirmed);
    let item = enqueued[1].1.queue_item.as_ref().unwrap();
    assert_eq!(
        (item.f_port, item.data.clone(), item.confirmed),
        (10, vec![0xca, 0xfe, 0x01], true)
    );

    let d = t.device(EUI).await;
    assert_eq!(d["status_requests"][0]["command"], "version_stored");
    assert_eq!(d["status_requests"][0]["state"], "pending");
    assert_eq!(d["downlinks"][1]["state"], "enqueued");
    let kinds: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(&kinds[..2], &["downlink_enqueued", "downlink_enqueued"]);

    // The device answers (spec layout: slots 0 and 2 hold images) and the request is settled.
    let answer = [0x02, 0b101, 0x03, 0x02, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00];
    assert_eq!(
        t.ingest(
            "up",
            "application/json",
            v4_uplink_json(EUI, 111, 2, &answer)
        )
        .await
        .status(),
        200
    );
    let d = t.device(EUI).await;
    assert_eq!(d["status_requests"][0]["state"], "answered");
    assert_eq!(d["status"]["stored"][0]["slot"], 0);
    assert_eq!(d["status"]["stored"][0]["version"]["raw"], 0x00010203);
    assert_eq!(d["status"]["stored"][1]["slot"], 2);
    assert_eq!(d["status"]["stored"][1]["version"]["raw"], 0x00020000);

    // The ack of the confirmed downlink is matched to it by ChirpStack's queue item id.
    let ack = json!({"deduplicationId": "a", "time": "2026-11-27T10:05:00Z", "deviceInfo": {"devEui": EUI}, "queueItemId": "queue-item-2", "acknowledged": true, "fCntDown": 4});
    assert_eq!(
        t.ingest("ack", "application/json", ack.to_string().into_bytes())
            .await
            .status(),
        200
    );
    let d = t.device(EUI).await;
    assert_eq!(d["downlinks"][0]["data_hex"], "cafe01");
    assert_eq!(d["downlinks"][0]["state"], "acknowledged");
}

#[tokio::test]
async fn v4_refusal_is_shown_with_chirpstacks_message() {
    let fake = fake_chirpstack_v4::FakeDeviceService::default();
    fake.state.lock().unwrap().fail_enqueue = Some(tonic::Status::not_found(
        "Object does not exist (id: 0102030405060708)",
    ));
    let url = fake_chirpstack_v4::serve(fake.clone()).await;
    let t = spawn(
        |c| {
            c.network.kind = lorafleet::config::NetworkKind::ChirpstackV4;
            c.network.chirpstack_v4.api_url = url.clone();
        },
        None,
    )
    .await;
    with_device(&t).await;
    let r = t
        .post(&format!("/api/devices/{EUI}/status-requests"))
        .json(&json!({"command": "uptime"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("Object does not exist"),
        "{e}"
    );
    let d = t.device(EUI).await;
    assert_eq!(d["status_requests"][0]["state"], "failed");
    assert_eq!(d["events"][0]["kind"], "downlink_failed");
}

#[tokio::test]
async fn v4_device_list_adds_never_seen_devices() {
    let fake = fake_chirpstack_v4::FakeDeviceService::default();
    fake.state.lock().unwrap().devices.insert(
        "app-1".into(),
        (0..3)
            .map(|i| chirpstack_api::api::DeviceListItem {
                dev_eui: format!("aa0000000000000{i}"),
                name: format!("listed-{i}"),
                device_profile_id: "dp".into(),
                device_profile_name: "profile".into(),
                ..Default::default()
            })
            .collect(),
    );
    let url = fake_chirpstack_v4::serve(fake.clone()).await;
    let t = spawn(
        |c| {
            c.network.kind = lorafleet::config::NetworkKind::ChirpstackV4;
            c.network.chirpstack_v4.api_url = url.clone();
            c.network.chirpstack_v4.api_token = "fake-api-token".into();
            c.network.chirpstack_v4.application_ids = vec!["app-1".into()];
        },
        None,
    )
    .await;
    assert_eq!(t.app.sync_network_devices().await.unwrap(), 3);
    let list: Value = t
        .get("/api/devices")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 3);
    assert!(list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["never_seen"] == true));
    assert_eq!(
        t.device("aa00000000000001").await["device_profile"],
        "profile"
    );
}

#[derive(Default, Clone)]
struct V3Seen {
    requests: Arc<Mutex<Vec<(String, String, Value)>>>,
}

/// A fake ChirpStack v3 Application Server REST API.
async fn fake_v3(seen: V3Seen) -> String {
    let s1 = seen.clone();
    let app = axum::Router::new()
        .route(
            "/api/devices/{eui}/queue",
            post(move |axum::extract::Path(eui): axum::extract::Path<String>, headers: axum::http::HeaderMap, body: axum::Json<Value>| {
                let seen = s1.clone();
                async move {
                    let auth = headers.get("grpc-metadata-authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    seen.requests.lock().unwrap().push((eui, auth, body.0));
                    axum::Json(json!({"fCnt": 17}))
                }
            }),
        )
        .route(
            "/api/devices",
            get(|q: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                assert_eq!(q.get("applicationID").map(String::as_str), Some("7"));
                axum::Json(json!({"totalCount": "1", "result": [{"devEUI": "bb00000000000001", "name": "v3-listed", "applicationID": "7", "deviceProfileName": "p3"}]}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn v3_queue_request_is_exactly_what_the_application_server_expects() {
    let seen = V3Seen::default();
    let url = fake_v3(seen.clone()).await;
    let t = spawn(
        |c| {
            c.network.kind = lorafleet::config::NetworkKind::ChirpstackV3;
            c.network.chirpstack_v3.api_url = url.clone();
            c.network.chirpstack_v3.api_token = "v3-token".into();
            c.network.chirpstack_v3.application_ids = vec!["7".into()];
        },
        None,
    )
    .await;
    with_device(&t).await;
    let r = t
        .post(&format!("/api/devices/{EUI}/status-requests"))
        .json(&json!({"command": "erase_slot", "slot": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let reqs = seen.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    let (eui, auth, body) = &reqs[0];
    assert_eq!(eui, EUI);
    assert_eq!(auth, "Bearer v3-token");
    let item = &body["deviceQueueItem"];
    assert_eq!(item["devEUI"], EUI);
    assert_eq!(item["fPort"], 111);
    assert_eq!(item["confirmed"], false);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(item["data"].as_str().unwrap())
            .unwrap(),
        vec![0x05, 0x02]
    );
    let d = t.device(EUI).await;
    assert_eq!(d["status_requests"][0]["state"], "pending");
    // EraseSlotReq has no answer: the stored versions that follow settle it.
    let stored = [0x02, 0b001, 0x03, 0x02, 0x01, 0x00];
    assert_eq!(
        t.ingest(
            "up",
            "application/json",
            v4_uplink_json(EUI, 111, 5, &stored)
        )
        .await
        .status(),
        200
    );
    let d = t.device(EUI).await;
    assert_eq!(d["status_requests"][0]["command"], "erase_slot");
    assert_eq!(d["status_requests"][0]["state"], "answered");
    assert_eq!(t.app.sync_network_devices().await.unwrap(), 1);
    assert_eq!(t.device("bb00000000000001").await["never_seen"], true);
}

#[tokio::test]
async fn without_a_network_an_enqueue_is_a_clear_error() {
    let t = spawn(|_| {}, None).await;
    with_device(&t).await;
    let r = t
        .post(&format!("/api/devices/{EUI}/status-requests"))
        .json(&json!({"command": "uptime"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("network.kind"), "{e}");
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let t = spawn(|_| {}, None).await;
    with_device(&t).await;
    let cases = [
        (
            format!("/api/devices/{EUI}/status-requests"),
            json!({"command": "reboot"}),
            "command",
        ),
        (
            format!("/api/devices/{EUI}/status-requests"),
            json!({"command": "erase_slot"}),
            "slot",
        ),
        (
            format!("/api/devices/{EUI}/status-requests"),
            json!({"command": "erase_slot", "slot": 16}),
            "slot",
        ),
        (
            format!("/api/devices/{EUI}/status-requests"),
            json!({"command": "version_stored", "nb_slots": 0}),
            "nb_slots",
        ),
        (
            format!("/api/devices/{EUI}/status-requests"),
            json!({"slot": 1}),
            "command",
        ),
        (
            format!("/api/devices/{EUI}/downlinks"),
            json!({"f_port": 0, "data_hex": "00"}),
            "f_port",
        ),
        (
            format!("/api/devices/{EUI}/downlinks"),
            json!({"f_port": 1, "data_hex": "zz"}),
            "data_hex",
        ),
        (
            format!("/api/devices/{EUI}/downlinks"),
            json!({"f_port": "one", "data_hex": "00"}),
            "f_port",
        ),
        (
            "/api/devices/12345/status-requests".to_string(),
            json!({"command": "uptime"}),
            "dev_eui",
        ),
    ];
    for (path, body, field) in cases {
        let r = t.post(&path).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path} {body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["field"], field, "{path} {body}: {e}");
    }
    let r = t
        .post("/api/devices/ffffffffffffffff/status-requests")
        .json(&json!({"command": "uptime"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = t.get("/api/devices?limit=abc").send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "limit");
}

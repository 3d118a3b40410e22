//! Firmware Management (TS006) through the real router: the device page's requests go out on
//! FPort 203 with the exact bytes, a bad body is a 400 naming the field, and the answers a
//! device sends are read into its `firmware_management` record, each with its time.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::fake_chirpstack_v4;
use common::*;
use serde_json::{json, Value};

const EUI: &str = "0102030405060708";

#[tokio::test]
async fn requests_go_out_on_port_203_and_answers_fill_the_record() {
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
    let r = t
        .ingest("up", "application/json", v4_uplink_json(EUI, 1, 1, b"x"))
        .await;
    assert_eq!(r.status(), 200);
    let path = format!("/api/devices/{EUI}/firmware-management-requests");
    for (body, want) in [
        (json!({"command": "dev_version"}), "01"),
        (json!({"command": "upgrade_image"}), "04"),
        (
            json!({"command": "reboot_countdown", "countdown_s": 300}),
            "032c0100",
        ),
        (
            json!({"command": "reboot_time", "gps_seconds": 16909060}),
            "0204030201",
        ),
        (
            json!({"command": "delete_image", "version": "00030100"}),
            "0500030100",
        ),
        (json!({"command": "package_version"}), "00"),
    ] {
        let r = t.post(&path).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 202, "{body}");
        let got: Value = r.json().await.unwrap();
        assert_eq!(
            (got["f_port"].clone(), got["payload_hex"].clone()),
            (json!(203), json!(want))
        );
    }
    let enqueued = fake.state.lock().unwrap().enqueued.clone();
    let item = enqueued[0].1.queue_item.as_ref().unwrap();
    assert_eq!((item.f_port, item.data.clone()), (203, vec![0x01]));

    let r = t
        .post(&path)
        .json(&json!({"command": "reboot_countdown"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e.to_string().contains("countdown_s"), "{e}");

    // DevVersionAns then DevUpgradeImageAns (valid, 1.3.0).
    let dev_version = [0x01, 0x00, 0x03, 0x01, 0x00, 0x07, 0x00, 0x00, 0x00];
    let r = t
        .ingest(
            "up",
            "application/json",
            v4_uplink_json(EUI, 203, 2, &dev_version),
        )
        .await;
    assert_eq!(r.status(), 200);
    let image = [0x04, 0x03, 0x00, 0x03, 0x01, 0x00];
    let r = t
        .ingest(
            "up",
            "application/json",
            v4_uplink_json(EUI, 203, 3, &image),
        )
        .await;
    assert_eq!(r.status(), 200);
    let d = t.device(EUI).await;
    let fm = &d["firmware_management"];
    assert_eq!(fm["firmware_version"]["hex"], "00030100", "{fm}");
    assert_eq!(fm["hardware_version"]["hex"], "07000000");
    assert_eq!(fm["image"]["status"], "valid");
    assert_eq!(fm["image"]["version"]["value"], 0x0001_0300);
    assert!(fm["image"]["at"]
        .as_str()
        .unwrap()
        .starts_with("2026-11-27T10:00:00"));

    // A malformed answer changes nothing and is logged.
    let r = t
        .ingest(
            "up",
            "application/json",
            v4_uplink_json(EUI, 203, 4, &[0x04]),
        )
        .await;
    assert_eq!(r.status(), 200);
    let d = t.device(EUI).await;
    assert_eq!(d["firmware_management"], *fm);
    assert!(d["events"].as_array().unwrap().iter().any(|e| e["message"]
        .as_str()
        .unwrap_or("")
        .contains("Firmware Management answer 04")));
}

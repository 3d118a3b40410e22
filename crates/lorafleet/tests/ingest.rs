//! ChirpStack's HTTP integration: every body format ChirpStack sends, the seed's URL, and the
//! refusals that must leave the database untouched.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use chirpstack_api::integration as v4;
use chirpstack_api::prost::Message;
use common::*;
use lorafleet::ingest::chirpstack_v3::pb as v3;
use serde_json::Value;

async fn device_count(t: &TestApp) -> i64 {
    let r: Value = t
        .get("/api/devices")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["total"].as_i64().unwrap()
}

#[tokio::test]
async fn v4_json_uplink_is_stored_with_its_metadata() {
    let t = spawn(|_| {}, None).await;
    let r = t
        .ingest(
            "up",
            "application/json",
            v4_uplink_json("0102030405060708", 2, 42, b"hello"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let d = t.device("0102030405060708").await;
    assert_eq!(d["name"], "meter-0102030405060708");
    assert_eq!(d["application"], "meters");
    assert_eq!(d["device_profile"], "class-a");
    assert_eq!(d["dev_addr"], "01fa2b3c");
    assert_eq!(d["tags"]["site"], "north");
    assert_eq!(d["last_seen"], "2026-11-27T10:00:00.123Z");
    let up = &d["last_uplink"];
    assert_eq!(up["f_cnt"], 42);
    assert_eq!(up["f_port"], 2);
    assert_eq!(up["dr"], 5);
    assert_eq!(up["frequency"], 868100000);
    assert_eq!(up["rssi"], -57, "best RSSI of the two gateways");
    assert_eq!(up["snr"], 9.5);
    assert_eq!(up["gateway_count"], 2);
    assert_eq!(up["data_hex"], "68656c6c6f");
    assert_eq!(up["data_text"], "hello");
    assert_eq!(up["object"]["temperature"], 21.5);
}

#[tokio::test]
async fn v4_protobuf_uplink_built_from_the_official_types() {
    let t = spawn(|_| {}, None).await;
    let event = v4::UplinkEvent {
        deduplication_id: "d".into(),
        time: Some(chirpstack_api::pbjson_types::Timestamp {
            seconds: 1_780_000_000,
            nanos: 0,
        }),
        device_info: Some(v4::DeviceInfo {
            application_id: "app-uuid".into(),
            application_name: "pb-app".into(),
            device_name: "pb-device".into(),
            dev_eui: "A1B2C3D4E5F60708".into(),
            ..Default::default()
        }),
        dev_addr: "00112233".into(),
        dr: 3,
        f_cnt: 7,
        f_port: 9,
        confirmed: true,
        data: vec![0xde, 0xad, 0x00],
        rx_info: vec![chirpstack_api::gw::UplinkRxInfo {
            rssi: -80,
            snr: 2.5,
            ..Default::default()
        }],
        tx_info: Some(chirpstack_api::gw::UplinkTxInfo {
            frequency: 867_100_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = t
        .ingest("up", "application/octet-stream", event.encode_to_vec())
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let d = t.device("a1b2c3d4e5f60708").await;
    assert_eq!(d["name"], "pb-device");
    assert_eq!(d["last_uplink"]["f_cnt"], 7);
    assert_eq!(d["last_uplink"]["confirmed"], true);
    assert_eq!(d["last_uplink"]["data_hex"], "dead00");
    assert_eq!(
        d["last_uplink"]["data_text"],
        Value::Null,
        "binary payload is not text"
    );
    assert_eq!(d["last_uplink"]["frequency"], 867100000);
    assert_eq!(d["last_seen"], "2026-05-28T20:26:40.000Z");
}

#[tokio::test]
async fn v3_json_uplink_with_base64_euis() {
    let t = spawn(|_| {}, None).await;
    let body = serde_json::json!({
        "applicationID": "12",
        "applicationName": "legacy",
        "deviceName": "old-meter",
        "devEUI": "AQIDBAUGBwg=",
        "rxInfo": [{"gatewayID": "ABbAAf8Q0/Y=", "rssi": -66, "loRaSNR": 7.25, "name": "gw"}],
        "txInfo": {"frequency": 868300000, "dr": 4},
        "adr": true,
        "dr": 4,
        "fCnt": 99,
        "fPort": 3,
        "data": "aGk=",
        "objectJSON": "{\"battery\":3.6}",
        "tags": {"floor": "2"},
        "confirmedUplink": false,
        "devAddr": "AQIDBA==",
        "publishedAt": "2026-11-27T09:00:00Z"
    });
    let r = t
        .ingest("up", "application/json", body.to_string().into_bytes())
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let d = t.device("0102030405060708").await;
    assert_eq!(d["name"], "old-meter");
    assert_eq!(d["application"], "legacy");
    assert_eq!(d["application_id"], "12");
    assert_eq!(d["dev_addr"], "01020304");
    assert_eq!(d["tags"]["floor"], "2");
    assert_eq!(d["last_uplink"]["f_cnt"], 99);
    assert_eq!(d["last_uplink"]["snr"], 7.25);
    assert_eq!(d["last_uplink"]["data_text"], "hi");
    assert_eq!(d["last_uplink"]["object"]["battery"], 3.6);
}

#[tokio::test]
async fn v3_protobuf_uplink_when_the_network_is_v3() {
    let t = spawn(
        |c| c.integration.chirpstack_version = lorafleet::config::ChirpstackVersion::V3,
        None,
    )
    .await;
    let event = v3::UplinkEvent {
        application_id: 5,
        application_name: "pb3".into(),
        device_name: "pb3-dev".into(),
        dev_eui: vec![1, 1, 2, 2, 3, 3, 4, 4],
        rx_info: vec![v3::UplinkRxInfo {
            gateway_id: vec![0; 8],
            rssi: -70,
            lora_snr: 4.0,
        }],
        tx_info: Some(v3::UplinkTxInfo {
            frequency: 868_500_000,
            modulation_info: None,
        }),
        dr: 2,
        f_cnt: 12,
        f_port: 111,
        data: vec![0x04, 0x10, 0x0e, 0x00, 0x00],
        dev_addr: vec![0x26, 0x01, 0x02, 0x03],
        ..Default::default()
    };
    let r = t
        .ingest("up", "application/octet-stream", event.encode_to_vec())
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let d = t.device("0101020203030404").await;
    assert_eq!(d["application"], "pb3");
    assert_eq!(d["dev_addr"], "26010203");
    // FPort 111 went through the Version & Status codec: UptimeAns 0x0e10 = 3600 s.
    assert_eq!(d["status"]["uptime_s"], 3600);
    assert!(d["status"]["reported_at"]["uptime"].is_string());
}

#[tokio::test]
async fn join_status_ack_and_log_events() {
    let t = spawn(|_| {}, None).await;
    let info = serde_json::json!({"applicationId": "a", "applicationName": "app", "deviceName": "d", "devEui": "1111111111111111"});
    let join = serde_json::json!({"deduplicationId": "j", "time": "2026-11-27T08:00:00Z", "deviceInfo": info, "devAddr": "0a0b0c0d"});
    assert_eq!(
        t.ingest("join", "application/json", join.to_string().into_bytes())
            .await
            .status(),
        200
    );
    let status = serde_json::json!({"deduplicationId": "s", "time": "2026-11-27T08:01:00Z", "deviceInfo": info, "margin": 7, "batteryLevel": 88.5});
    assert_eq!(
        t.ingest(
            "status",
            "application/json",
            status.to_string().into_bytes()
        )
        .await
        .status(),
        200
    );
    let log = serde_json::json!({"time": "2026-11-27T08:02:00Z", "deviceInfo": info, "level": "ERROR", "code": "UPLINK_CODEC", "description": "codec failed", "context": {"deduplication_id": "x"}});
    assert_eq!(
        t.ingest("log", "application/json", log.to_string().into_bytes())
            .await
            .status(),
        200
    );
    let ack = serde_json::json!({"deduplicationId": "a", "time": "2026-11-27T08:03:00Z", "deviceInfo": info, "queueItemId": "q1", "acknowledged": true, "fCntDown": 3});
    assert_eq!(
        t.ingest("ack", "application/json", ack.to_string().into_bytes())
            .await
            .status(),
        200
    );
    let d = t.device("1111111111111111").await;
    assert_eq!(d["dev_addr"], "0a0b0c0d");
    assert_eq!(d["joined_at"], "2026-11-27T08:00:00.000Z");
    assert_eq!(d["battery"], 88.5);
    assert_eq!(d["margin"], 7);
    let kinds: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["downlink_acknowledged", "error", "status", "join"]
    );
    assert!(d["events"][1]["message"]
        .as_str()
        .unwrap()
        .contains("UPLINK_CODEC: codec failed"));
}

#[tokio::test]
async fn malformed_bodies_are_refused_and_store_nothing() {
    let t = spawn(|_| {}, None).await;
    assert_eq!(
        t.ingest(
            "up",
            "application/json",
            v4_uplink_json("0102030405060708", 1, 1, b"a")
        )
        .await
        .status(),
        200
    );
    let before = t.device("0102030405060708").await;

    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("application/json", b"{not json".to_vec(), None),
        (
            "application/json",
            br#"{"deviceInfo": {"devEui": "xyz"}}"#.to_vec(),
            Some("deviceInfo.devEui"),
        ),
        (
            "application/json",
            br#"{"fPort": 2}"#.to_vec(),
            Some("deviceInfo"),
        ),
        (
            "application/octet-stream",
            vec![0xff, 0xff, 0xff, 0x01],
            None,
        ),
        (
            "application/json",
            br#"{"deviceInfo": {"devEui": "0102030405060708"}, "fCnt": -5}"#.to_vec(),
            Some("fCnt"),
        ),
        (
            "application/json",
            br#"{"deviceInfo": {"devEui": "0102030405060708"}, "dr": 1e308}"#.to_vec(),
            Some("dr"),
        ),
        (
            "application/json",
            br#"{"deviceInfo": {"devEui": "0102030405060708"}, "data": "!!!not b64"}"#.to_vec(),
            Some("data"),
        ),
        (
            "application/json",
            br#"{"deviceInfo": {"devEui": "0102030405060708"}, "time": "yesterday"}"#.to_vec(),
            Some("time"),
        ),
        (
            "application/json",
            br#"{"deviceInfo": {"devEui": "0102030405060708"}, "devAddr": "<script>"}"#.to_vec(),
            Some("devAddr"),
        ),
        (
            "application/json",
            br#"{"deviceInfo": {"devEui": "0102030405060708"}, "fPort": 300}"#.to_vec(),
            Some("fPort"),
        ),
        (
            "application/json",
            br#"{"deviceInfo": {"devEui": "0102030405060708", "tags": {"a": 1}}}"#.to_vec(),
            Some("deviceInfo.tags.a"),
        ),
        (
            "application/json",
            br#"{"devEUI": "AQIDBAUGBwg=", "fCnt": "x"}"#.to_vec(),
            Some("fCnt"),
        ),
        (
            "application/json",
            br#"{"devEUI": "AQIDBAUGBwg=", "devAddr": "AQID"}"#.to_vec(),
            Some("devAddr"),
        ),
    ];
    for (ct, body, field) in cases {
        let r = t.ingest("up", ct, body.clone()).await;
        assert_eq!(r.status(), 400, "body {:?}", String::from_utf8_lossy(&body));
        let e: Value = r.json().await.unwrap();
        assert!(!e["error"].as_str().unwrap().is_empty());
        if let Some(f) = field {
            assert_eq!(e["field"], f, "{e}");
            assert!(!e["error"].as_str().unwrap().contains("untagged"), "{e}");
        }
    }
    let r = t.ingest("up", "text/plain", b"x".to_vec()).await;
    assert_eq!(r.status(), 415);
    let after = t.device("0102030405060708").await;
    assert_eq!(before["last_uplink"], after["last_uplink"]);
    assert_eq!(device_count(&t).await, 1);
}

#[tokio::test]
async fn integration_requires_the_token_and_limits_the_body() {
    let t = spawn(|_| {}, None).await;
    let body = v4_uplink_json("0102030405060708", 1, 1, b"a");
    let no_token = t
        .http
        .post(t.url("/api/integrations/chirpstack?event=up"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let wrong = t
        .http
        .post(t.url("/api/integrations/chirpstack?event=up"))
        .bearer_auth("nope")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // A user's password is not the integration token, even from loopback.
    let basic = t
        .post("/api/integrations/chirpstack?event=up")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    let big = vec![b' '; 1024 * 1024 + 1];
    assert_eq!(t.ingest("up", "application/json", big).await.status(), 413);
    assert_eq!(device_count(&t).await, 0);
}

#[tokio::test]
async fn seed_url_and_ignored_event_types() {
    let t = spawn(|_| {}, None).await;
    let r = t
        .http
        .post(t.url("/?event=up"))
        .bearer_auth(INTEGRATION_TOKEN)
        .header("content-type", "application/json")
        .body(v4_uplink_json("0102030405060709", 1, 1, b"seed"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        t.device("0102030405060709").await["last_uplink"]["data_text"],
        "seed"
    );
    let r = t
        .ingest("location", "application/json", b"{}".to_vec())
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["outcome"], "ignored");
    let metrics = t
        .http
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("lorafleet_integration_events_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn uplink_history_is_pruned_and_removed_devices_reappear() {
    let t = spawn(|c| c.devices.uplink_history = 3, None).await;
    for f_cnt in 1..=5 {
        assert_eq!(
            t.ingest(
                "up",
                "application/json",
                v4_uplink_json("2222222222222222", 1, f_cnt, b"x")
            )
            .await
            .status(),
            200
        );
    }
    let ups: Value = t
        .get("/api/devices/2222222222222222/uplinks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cnts: Vec<i64> = ups["uplinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["f_cnt"].as_i64().unwrap())
        .collect();
    assert_eq!(cnts, vec![5, 4, 3]);

    assert_eq!(
        t.delete("/api/devices/2222222222222222")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(device_count(&t).await, 0);
    assert_eq!(
        t.device("2222222222222222").await["events"][0]["kind"],
        "removed"
    );
    assert_eq!(
        t.ingest(
            "up",
            "application/json",
            v4_uplink_json("2222222222222222", 1, 6, b"x")
        )
        .await
        .status(),
        200
    );
    let list: Value = t
        .get("/api/devices")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 1);
    assert!(list["devices"][0]["reappeared_at"].is_string());
}

#[tokio::test]
async fn version_status_answers_update_the_record_and_bad_ones_are_logged() {
    let t = spawn(|_| {}, None).await;
    let eui = "3333333333333333";
    // Running version first: rendered raw until the versioning type is known.
    let r = t
        .ingest(
            "up",
            "application/json",
            v4_uplink_json(eui, 111, 1, &[0x01, 0x02, 0x03, 0x02, 0x01, 0x00]),
        )
        .await;
    assert_eq!(r.status(), 200);
    let d = t.device(eui).await;
    assert_eq!(d["status"]["running"]["slot"], 2);
    assert_eq!(d["status"]["running"]["version"]["raw"], 0x00010203);
    // PackageVersionAns (type 1 = Major/Minor/Patch, 3 slots) and a DeviceDescriptionAns in one
    // payload (the spec's Table 19 body).
    let mut payload = vec![0x00, 0x0a, 0x01, 0x13, 0x06, 0x03, 0x04];
    payload.extend_from_slice(b"LTEK");
    payload.push(0x06);
    payload.extend_from_slice(b"FF1705");
    assert_eq!(
        t.ingest(
            "up",
            "application/json",
            v4_uplink_json(eui, 111, 2, &payload)
        )
        .await
        .status(),
        200
    );
    let d = t.device(eui).await;
    assert_eq!(d["status"]["package"]["identifier"], 10);
    assert_eq!(d["status"]["package"]["versioning_type"], 1);
    assert_eq!(d["status"]["running"]["version"]["display"], "1.2.3");
    assert_eq!(d["status"]["manufacturer_id"], "LTEK");
    assert_eq!(d["status"]["device_id"], "FF1705");
    // SpaceStatusAns with heap 0 ("could not be read") followed by a truncated answer.
    let bad = [0x03, 0, 0, 0, 0, 0x00, 0x00, 0x01, 0x00, 0x04, 0x01];
    assert_eq!(
        t.ingest("up", "application/json", v4_uplink_json(eui, 111, 3, &bad))
            .await
            .status(),
        200
    );
    let d = t.device(eui).await;
    assert_eq!(d["last_uplink"]["f_cnt"], 3, "the uplink itself is kept");
    assert_eq!(d["status"]["slot_size"], 65536);
    assert_eq!(d["status"]["heap_available"], Value::Null);
    assert_eq!(d["events"][0]["kind"], "decode_error");
    assert!(d["events"][0]["message"]
        .as_str()
        .unwrap()
        .contains("0300000000000001000401"));
    assert_eq!(d["events"][1]["kind"], "status_answer");
}

#[tokio::test]
async fn body_limit_after_auth_and_event_parameter_checks() {
    let t = spawn(|_| {}, None).await;
    let big = vec![b' '; 1024 * 1024 + 1];
    let stranger = t
        .http
        .post(t.url("/?event=up"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        stranger.status(),
        401,
        "the token is checked before the body is read"
    );
    let r = t.ingest("up", "application/json", big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "body");
    for query in ["?event=", "?event=up&event=join", ""] {
        let r = t
            .http
            .post(t.url(&format!("/api/integrations/chirpstack{query}")))
            .bearer_auth(INTEGRATION_TOKEN)
            .header("content-type", "application/json")
            .body(v4_uplink_json("0102030405060708", 1, 1, b"x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["field"],
            "event",
            "{query}"
        );
    }
    assert_eq!(device_count(&t).await, 0);
}

#[tokio::test]
async fn a_time_in_the_future_is_replaced_by_the_time_of_reception() {
    let t = spawn(|_| {}, None).await;
    let body = String::from_utf8(v4_uplink_json("4444444444444444", 1, 1, b"x"))
        .unwrap()
        .replace("2026-11-27T10:00:00.123Z", "9999-12-31T23:59:59Z");
    assert_eq!(
        t.ingest("up", "application/json", body.into_bytes())
            .await
            .status(),
        200
    );
    let d = t.device("4444444444444444").await;
    let seen = chrono::DateTime::parse_from_rfc3339(d["last_seen"].as_str().unwrap()).unwrap();
    assert!(
        (chrono::Utc::now() - seen.with_timezone(&chrono::Utc))
            .num_seconds()
            .abs()
            < 60
    );
}

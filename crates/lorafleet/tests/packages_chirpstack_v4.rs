//! Package versions and FPorts per device against the ChirpStack v4 fake (tests/common): the
//! engine takes each device's TS004/TS005 version and FPorts from its device profile (read
//! through DeviceService.Get and DeviceProfileService.Get at start), sends v2 commands there,
//! reads the answers there, names the device's limits when it refuses the session for lack of
//! memory; lorafleet stays silent on AppTimeReq where the profile has TS003 (ChirpStack answers
//! it); and a ChirpStack-FUOTA campaign over a profile without TS004/TS005 is refused at start
//! naming the profile.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::fake_chirpstack_v4::{self, FakeDeviceService};
use common::{spawn_app, test_config, v4_uplink_json, TestApp, FIXTURE};
use lorafleet::network::chirpstack_v4::ChirpstackV4;
use serde_json::{json, Value};

const DEV: &str = "0102030405060708";
const OTHER: &str = "0102030405060709";
const GEN_APP_KEY: &str = "0302030405060708090a0b0c0d0e0f10";

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

/// Lets the runner take one step now.
async fn step(t: &TestApp) {
    crate::on_db!(&t.app.db, p => sqlx::query("UPDATE campaigns SET next_poll_at = NULL WHERE state = 'running'")
        .execute(p)
        .await
        .map(|_| ())
        .unwrap());
    lorafleet::campaigns::runner::run_due(&t.app).await.unwrap();
}

/// The device's frame through ChirpStack's HTTP integration, received now (the engine times
/// its retries from the answers' reception times).
async fn uplink(t: &TestApp, eui: &str, f_port: u32, data: &[u8], f_cnt: u32) {
    let mut body: Value =
        serde_json::from_slice(&v4_uplink_json(eui, f_port, f_cnt, data)).unwrap();
    body["time"] = json!(Utc::now().to_rfc3339());
    let r = t
        .http
        .post(t.url("/api/integrations/chirpstack?event=up"))
        .bearer_auth("integration-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// The `n`th command enqueued (1-based), waiting for it with a deadline (stepping the runner).
async fn nth_enqueued(t: &TestApp, fake: &FakeDeviceService, n: usize) -> (String, u32, Vec<u8>) {
    let started = Instant::now();
    loop {
        step(t).await;
        if let Some((_, r)) = fake.state.lock().unwrap().enqueued.get(n - 1) {
            let item = r.queue_item.clone().unwrap();
            return (item.dev_eui, item.f_port, item.data);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "command #{n} never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_speaks_each_profiles_versions_on_its_ports() {
    let fake = FakeDeviceService::default();
    {
        let mut s = fake.state.lock().unwrap();
        // TS003 v2 on 202 (ChirpStack answers clock sync), TS004 v2 on 51, TS005 v2 on 50.
        s.put_profile("dp-v2", "meters v2", (2, 202), (2, 51), (2, 50));
        s.put_device(DEV, "dp-v2");
    }
    let t = app_on(&fake).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
    t.add_device(DEV, Some("stale-profile-from-an-uplink"), None)
        .await;

    let body = json!({
        "name": "v2 devices", "firmware_id": img["id"], "devices": [DEV], "driver": "engine",
        "keys": {"gen_app_key": GEN_APP_KEY},
        "multicast": {"class": "C", "dr": 5, "frequency": 869525000, "group_id": 1, "timeout_exp": 3},
        "unicast": {"timeout_s": 30, "attempts": 1},
        "fragmentation": {"fragment_size": 200, "redundancy": 4, "session_index": 2, "descriptor_hex": "0a0b0c0d"},
        "engine": {"check": "off"},
        "device_overrides": {DEV: {"device_limits": {"max_fragment_size": 50, "max_parity": 8}}},
    });
    let r = t.post("/api/campaigns").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let c: Value = r.json().await.unwrap();
    let id = c["id"].as_i64().unwrap();
    // The device page shows what the profile (read from ChirpStack, not the stale one of the
    // uplink) sets, and the limits the campaign holds for the device.
    let d = t.get_json(&format!("/api/devices/{DEV}")).await;
    let p = &d["packages"];
    assert_eq!(p["source"], "device_profile", "{d}");
    assert_eq!(p["device_profile"]["id"], "dp-v2", "{d}");
    assert_eq!(
        p["multicast_setup"],
        json!({"version": 2, "f_port": 50}),
        "{d}"
    );
    assert_eq!(
        p["fragmentation"],
        json!({"version": 2, "f_port": 51}),
        "{d}"
    );
    assert_eq!(p["clock_sync"]["enabled"], false, "{d}");
    assert_eq!(p["clock_sync_answered_by_network"], true, "{d}");
    assert_eq!(d["device_limits"]["max_fragment_size"], 50, "{d}");
    assert_eq!(d["device_limits"]["campaign_id"], id, "{d}");
    let warnings = c["plan"]["warnings"].to_string();
    assert!(
        warnings.contains("200 bytes per fragment exceed its max_fragment_size of 50"),
        "{warnings}"
    );
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());

    // TS005 v2 McGroupSetupReq on the profile's FPort 50.
    let (eui, port, req) = nth_enqueued(&t, &fake, 1).await;
    assert_eq!((eui.as_str(), port), (DEV, 50));
    assert_eq!(req[0..2], [0x02, 0x01]);
    assert_eq!(req.len(), 30);
    uplink(&t, DEV, 50, &[0x02, 0x01], 1).await;

    // TS004 v2 FragSessionSetupReq on FPort 51: 16 bytes after the CID, SessionCnt = the
    // campaign's id, MIC over the unpadded image with the GenAppKey's DataBlockIntKey.
    let (_, port, req) = nth_enqueued(&t, &fake, 2).await;
    assert_eq!(port, 51);
    let nb = FIXTURE.len().div_ceil(200);
    let padding = nb * 200 - FIXTURE.len();
    let mut expected = vec![0x02, 0x22];
    expected.extend_from_slice(&(nb as u16).to_le_bytes());
    expected.extend_from_slice(&[200, 0x01, padding as u8, 0x0a, 0x0b, 0x0c, 0x0d]);
    let session_cnt = id as u16;
    expected.extend_from_slice(&session_cnt.to_le_bytes());
    let gen: [u8; 16] = hex::decode(GEN_APP_KEY).unwrap().try_into().unwrap();
    let key =
        lrwn::applayer::fragmentation::v2::get_data_block_int_key(lrwn::AES128Key::from_bytes(gen))
            .unwrap();
    let mic = lrwn::applayer::fragmentation::v2::calculate_mic(
        key,
        session_cnt,
        2,
        [0x0a, 0x0b, 0x0c, 0x0d],
        FIXTURE,
    )
    .unwrap();
    expected.extend_from_slice(&mic);
    assert_eq!(hex::encode(&req), hex::encode(&expected));

    // A v2 FragSessionSetupAns on FPort 51: "not enough memory" for session 2.
    uplink(&t, DEV, 51, &[0x02, 0x82], 2).await;
    let started = Instant::now();
    let device = loop {
        step(&t).await;
        let c = t.get_json(&format!("/api/campaigns/{id}")).await;
        let d = c["devices"][0].clone();
        if d["outcome"] != Value::Null {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(device["outcome"], "not_updated", "{device}");
    let error = device["error"].as_str().unwrap();
    assert!(
        error.contains("not enough memory")
            && error.contains("200 bytes per fragment exceed its max_fragment_size of 50"),
        "{error}"
    );
    let log = t.get_json(&format!("/api/campaigns/{id}")).await["log"].to_string();
    assert!(
        !log.contains("could not read the device profile"),
        "the profile was read: {log}"
    );
    assert!(
        log.contains("speaks TS005 v2 on FPort 50, TS004 v2 on FPort 51, TS003 v2 on FPort 202 (not answered by lorafleet)"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_sync_is_left_to_chirpstack_where_the_profile_has_ts003() {
    let fake = FakeDeviceService::default();
    {
        let mut s = fake.state.lock().unwrap();
        s.put_profile(
            "dp-sync",
            "synced by ChirpStack",
            (1, 202),
            (1, 201),
            (1, 200),
        );
        s.put_profile("dp-plain", "plain", (0, 0), (1, 201), (1, 200));
        s.put_device(DEV, "dp-sync");
        s.put_device(OTHER, "dp-plain");
    }
    let t = app_on(&fake).await;
    let gps_now = lorafleet_codec::time::unix_to_gps(Utc::now().timestamp());
    // AppTimeReq: DeviceTime 100 s behind, token 3, answer required.
    let mut req = vec![0x01];
    req.extend_from_slice(&(gps_now - 100).to_le_bytes());
    req.push(0x13);
    uplink(&t, DEV, 202, &req, 1).await;
    uplink(&t, OTHER, 202, &req, 1).await;
    let started = Instant::now();
    loop {
        let answered: Vec<(String, u32)> = fake
            .state
            .lock()
            .unwrap()
            .enqueued
            .iter()
            .map(|(_, r)| {
                let i = r.queue_item.clone().unwrap();
                (i.dev_eui, i.f_port)
            })
            .collect();
        if !answered.is_empty() {
            // The responder takes uplinks in order: DEV's request was decided before OTHER's.
            assert_eq!(answered, vec![(OTHER.to_string(), 202)]);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no AppTimeAns for the device without TS003 in its profile"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_chirpstack_fuota_campaign_needs_ts004_and_ts005_in_every_profile() {
    let fake = FakeDeviceService::default();
    {
        let mut s = fake.state.lock().unwrap();
        s.put_profile("dp-fuota", "fuota ready", (1, 202), (1, 201), (1, 200));
        s.put_profile("dp-plain", "plain sensors", (0, 0), (0, 0), (1, 200));
        s.put_device(DEV, "dp-fuota");
        s.put_device(OTHER, "dp-plain");
        for eui in [DEV, OTHER] {
            s.keys.insert(
                eui.to_string(),
                chirpstack_api::api::DeviceKeys {
                    dev_eui: eui.to_string(),
                    nwk_key: GEN_APP_KEY.to_string(),
                    app_key: "0".repeat(32),
                    gen_app_key: GEN_APP_KEY.to_string(),
                },
            );
        }
    }
    let t = app_on(&fake).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
    t.add_device(DEV, Some("dp-fuota"), None).await;
    t.add_device(OTHER, Some("dp-plain"), None).await;
    let body = json!({
        "name": "via ChirpStack", "firmware_id": img["id"], "devices": [DEV, OTHER],
        "driver": "chirpstack-v4",
        "multicast": {"class": "C", "dr": 5, "frequency": 869525000, "timeout_exp": 9},
    });
    let r = t.post("/api/campaigns").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let text = body.to_string();
    assert!(
        text.contains("device profile \\\"plain sensors\\\" (dp-plain) does not enable TS004 (Fragmented Data Block Transport)")
            && text.contains("used by 0102030405060709"),
        "{text}"
    );
    assert!(!text.contains("dp-fuota"), "{text}");
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "draft");
}

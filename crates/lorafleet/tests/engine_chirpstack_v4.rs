//! The engine driver against a fake ChirpStack v4 built from chirpstack_api's own
//! `DeviceService` and `MulticastGroupService` traits. The device is played by the test: it
//! answers through ChirpStack's HTTP integration, like a real device would through ChirpStack.
//! Checked: the exact bytes of every command per FPort, the multicast group's keys (derived from
//! the McKey the device recovers from McGroupSetupReq), the fragment stream, and that the group
//! is deleted only after the session ended and the last fragment went out.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use chirpstack_api::api;
use chrono::{DateTime, Utc};
use common::fake_network_server::{self as fake_ns, Fake, GEN_APP_KEY, TOKEN};
use common::{spawn_app, test_config, TestApp, FIXTURE};
use lorafleet::network::chirpstack_v4::ChirpstackV4;
use lorafleet_engine::keys;
use serde_json::{json, Value};

const DEV: &str = "0102030405060708";
const FIXTURE_VERSION: u32 = 1_623_165_310;

/// Lets the runner take one step now.
async fn step(t: &TestApp) {
    crate::on_db!(&t.app.db, p => sqlx::query("UPDATE campaigns SET next_poll_at = NULL WHERE state = 'running'")
        .execute(p).await.map(|_| ()))
        .unwrap();
    lorafleet::campaigns::runner::run_due(&t.app).await.unwrap();
}

/// The device's answer, through ChirpStack's HTTP integration.
async fn uplink(t: &TestApp, f_port: u8, data: &[u8], f_cnt: u32) {
    let r = t
        .http
        .post(t.url("/api/integrations/chirpstack?event=up"))
        .bearer_auth("integration-token")
        .json(&fake_ns::answer_json(DEV, f_port, data, f_cnt))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Steps until the fake received `n` unicast commands; returns the last.
async fn next_unicast(t: &TestApp, fake: &Fake, n: usize) -> (u32, Vec<u8>) {
    let started = Instant::now();
    loop {
        step(t).await;
        if let Some((eui, port, data)) = fake.unicast.lock().unwrap().get(n - 1).cloned() {
            assert_eq!(eui, DEV);
            return (port, data);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "unicast command #{n} never came"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn aes_encrypt(key: [u8; 16], block: [u8; 16]) -> [u8; 16] {
    let mut b = GenericArray::from(block);
    aes::Aes128::new(GenericArray::from_slice(&key)).encrypt_block(&mut b);
    b.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_commands_per_port_and_multicast_keys() {
    let (fake, url) = fake_ns::start().await;
    let mut config = test_config();
    config.network.kind = lorafleet::config::NetworkKind::ChirpstackV4;
    config.network.chirpstack_v4.api_url = url;
    config.network.chirpstack_v4.api_token = TOKEN.into();
    config.network.request_timeout_s = 2;
    let network = ChirpstackV4::new(&config.network.chirpstack_v4, Duration::from_secs(2))
        .unwrap()
        .with_region("EU868")
        .unwrap();
    let t = spawn_app(config.with_network(Arc::new(network))).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
    t.add_device(DEV, Some("profile-1"), None).await;

    let body = json!({
        "name": "engine on v4", "firmware_id": img["id"], "devices": [DEV], "driver": "engine",
        "multicast": {"class": "C", "dr": 5, "frequency": 869525000, "group_id": 1, "timeout_exp": 3},
        "unicast": {"timeout_s": 3, "attempts": 1},
        "fragmentation": {"fragment_size": 200, "redundancy": 4, "session_index": 2, "block_ack_delay": 2, "descriptor_hex": "0a0b0c0d"},
        "request_frag_status": "after_session",
        "engine": {"check": "refuse", "reboot_delay_s": 0},
    });
    let r = t.post("/api/campaigns").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let c: Value = r.json().await.unwrap();
    let id = c["id"].as_i64().unwrap();
    // No uplink yet: no gateway known to reach the device, and the plan says so.
    assert_eq!(
        c["plan"]["gateways"],
        json!({"gateways": [], "explicit": false, "unheard": [DEV]})
    );
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());

    // Version & Status check on FPort 111: PackageVersionReq, VersionRunningReq, SpaceStatusReq.
    assert_eq!(
        next_unicast(&t, &fake, 1).await,
        (111, vec![0x00, 0x01, 0x03])
    );
    // PackageVersionAns (V&S 1, type 2 = GPS time, 3 slots), VersionRunningAns, SpaceStatusAns.
    let mut ans = vec![0x00, 10, 1, 0x23, 0x01, 0x00];
    ans.extend_from_slice(&1_600_000_000u32.to_le_bytes());
    ans.extend_from_slice(&[0x03, 0x00, 0x80, 0x00, 0x00]);
    ans.extend_from_slice(&300_000u32.to_le_bytes());
    uplink(&t, 111, &ans, 1).await;

    // TS005 McGroupSetupReq on FPort 200.
    let (port, req) = next_unicast(&t, &fake, 2).await;
    assert_eq!(port, 200);
    assert_eq!(req.len(), 30);
    assert_eq!(req[0..2], [0x02, 0x01], "McGroupSetupReq for group 1");
    let mc_addr_le: [u8; 4] = req[2..6].try_into().unwrap();
    let enc: [u8; 16] = req[6..22].try_into().unwrap();
    assert_eq!(req[22..30], [0, 0, 0, 0, 0xff, 0xff, 0, 0], "FCnt 0..65535");
    // What the device does: McKey = aes128_encrypt(McKEKey, encrypted McKey).
    let gen: [u8; 16] = hex::decode(GEN_APP_KEY).unwrap().try_into().unwrap();
    let ke = keys::mc_ke_key(keys::mc_root_key(keys::RootKey::GenAppKey(gen)));
    let mc_key = aes_encrypt(ke, enc);
    uplink(&t, 200, &[0x02, 0x01], 2).await;

    // TS004 FragSessionSetupReq on FPort 201: index 2 | group 1 mask, fragments, size 200,
    // control (block ack delay 2, matrix 0), padding, descriptor.
    let (port, req) = next_unicast(&t, &fake, 3).await;
    assert_eq!(port, 201);
    let nb = FIXTURE.len().div_ceil(200);
    let padding = nb * 200 - FIXTURE.len();
    let mut expected = vec![0x02, 0x22];
    expected.extend_from_slice(&(nb as u16).to_le_bytes());
    expected.extend_from_slice(&[200, 0x02, padding as u8, 0x0a, 0x0b, 0x0c, 0x0d]);
    assert_eq!(req, expected);
    assert!(
        fake.groups.lock().unwrap().is_empty(),
        "no group before the setup is done"
    );
    uplink(&t, 201, &[0x02, 0x80], 3).await;

    // The setup is done: the group is created with the keys the device derives, and the
    // session is announced on FPort 200.
    let (port, req) = next_unicast(&t, &fake, 4).await;
    let mut mc_addr = mc_addr_le;
    mc_addr.reverse();
    {
        let groups = fake.groups.lock().unwrap();
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        let (app_s, nwk_s) = keys::session_keys(mc_key, mc_addr);
        assert_eq!(g.mc_addr, hex::encode(mc_addr));
        assert_eq!(g.mc_app_s_key, hex::encode(app_s));
        assert_eq!(g.mc_nwk_s_key, hex::encode(nwk_s));
        assert_eq!(g.application_id, "app-1");
        assert_eq!(g.group_type, api::MulticastGroupType::ClassC as i32);
        assert_eq!((g.dr, g.frequency, g.f_cnt), (5, 869_525_000, 0));
        assert_eq!(g.region, chirpstack_api::common::Region::Eu868 as i32);
    }
    assert_eq!(
        *fake.members.lock().unwrap(),
        vec![("mc-1".to_string(), DEV.to_string())]
    );
    // Bound to the one gateway that heard the device's answers (their rxInfo).
    assert_eq!(
        *fake.gateways.lock().unwrap(),
        vec![("mc-1".to_string(), "0016c001ff10d3f6".to_string())]
    );
    assert_eq!(port, 200);
    assert_eq!(req.len(), 11);
    assert_eq!(req[0..2], [0x04, 0x01], "McClassCSessionReq for group 1");
    let session_gps = u32::from_le_bytes(req[2..6].try_into().unwrap());
    assert_eq!(req[6], 3, "timeout exponent");
    assert_eq!(req[7..10], [0xd2, 0xad, 0x84], "869.525 MHz in 100 Hz");
    assert_eq!(req[10], 5, "DR5");
    let now_gps = lorafleet_codec::time::unix_to_gps(Utc::now().timestamp());
    assert!(
        session_gps > now_gps && session_gps <= now_gps + 6,
        "{session_gps} vs {now_gps}"
    );
    uplink(&t, 200, &[0x04, 0x01, 0x03, 0x00, 0x00], 4).await;

    // The fragments on the group, after the session started: uncoded first in increasing N,
    // then the parity fragments, each DataFragment with session index 2.
    let started = Instant::now();
    while fake.deleted.lock().unwrap().is_empty() {
        step(&t).await;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the group was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let frames = fake.multicast.lock().unwrap().clone();
    assert_eq!(frames.len(), nb + 4);
    let session_start =
        DateTime::from_timestamp(lorafleet_codec::time::gps_to_unix(session_gps), 0).unwrap();
    let mut padded = FIXTURE.to_vec();
    padded.resize(nb * 200, 0);
    for (i, (group, port, data, at)) in frames.iter().enumerate() {
        assert_eq!((group.as_str(), *port), ("mc-1", 201));
        assert!(
            *at >= session_start,
            "fragment {} before the session",
            i + 1
        );
        assert_eq!(data[0], 0x08);
        let index_and_n = u16::from_le_bytes([data[1], data[2]]);
        assert_eq!(index_and_n, (2 << 14) | (i as u16 + 1));
        if i < nb {
            assert_eq!(&data[3..], &padded[i * 200..(i + 1) * 200]);
        }
    }
    let (deleted, deleted_at) = fake.deleted.lock().unwrap()[0].clone();
    assert_eq!(deleted, "mc-1");
    let session_end = session_start + chrono::TimeDelta::seconds(8);
    assert!(
        deleted_at >= session_end,
        "deleted at {deleted_at}, before the session end {session_end}"
    );
    assert!(deleted_at >= frames.last().unwrap().3);

    // After the session: FragSessionStatusReq (participants, index 2), then VersionRunningReq.
    let (port, req) = next_unicast(&t, &fake, 5).await;
    assert_eq!((port, req), (201, vec![0x01, 0x05]));
    let total = (nb + 4) as u16;
    let mut status = vec![0x01];
    status.extend_from_slice(&(total | (2 << 14)).to_le_bytes());
    status.extend_from_slice(&[0x00, 0x00]);
    uplink(&t, 201, &status, 5).await;
    let (port, req) = next_unicast(&t, &fake, 6).await;
    assert_eq!((port, req), (111, vec![0x01]));
    let mut running = vec![0x01, 0x01];
    running.extend_from_slice(&FIXTURE_VERSION.to_le_bytes());
    uplink(&t, 111, &running, 6).await;

    let started = Instant::now();
    let c = loop {
        step(&t).await;
        let c = t.get_json(&format!("/api/campaigns/{id}")).await;
        if c["state"] != "running" {
            break c;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(c["state"], "completed", "{c}");
    let d = &c["devices"][0];
    assert_eq!(
        (d["stage"].as_str(), d["outcome"].as_str()),
        (Some("completed"), Some("verified")),
        "{d}"
    );
    assert_eq!(
        fake.unicast.lock().unwrap().len(),
        6,
        "no other command was sent"
    );
}

/// An uplink of `dev_eui` heard by `gateways`, through ChirpStack's HTTP integration.
async fn heard_by(t: &TestApp, dev_eui: &str, gateways: &[&str], f_cnt: u32) {
    let rx: Vec<Value> = gateways
        .iter()
        .map(|g| json!({"gatewayId": g, "rssi": -90, "snr": 3.0}))
        .collect();
    let body = json!({
        "deduplicationId": format!("dedup-{dev_eui}-{f_cnt}"),
        "time": Utc::now().to_rfc3339(),
        "deviceInfo": {"applicationId": "app-1", "deviceProfileId": "profile-1", "devEui": dev_eui, "deviceName": "dev"},
        "fCnt": f_cnt,
        "fPort": 1,
        "data": "AQ==",
        "rxInfo": rx,
    });
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

#[tokio::test]
async fn the_plan_shows_the_fewest_gateways_that_heard_every_device_or_the_given_list() {
    let (_fake, url) = fake_ns::start().await;
    let mut config = test_config();
    config.network.kind = lorafleet::config::NetworkKind::ChirpstackV4;
    config.network.chirpstack_v4.api_url = url;
    config.network.chirpstack_v4.api_token = TOKEN.into();
    let network = ChirpstackV4::new(&config.network.chirpstack_v4, Duration::from_secs(2))
        .unwrap()
        .with_region("EU868")
        .unwrap();
    let t = spawn_app(config.with_network(Arc::new(network))).await;
    let (_, img) = t.upload("fw.bin_signed", FIXTURE).await;
    let (a, b, c, d) = (
        "0102030405060708",
        "1112131415161718",
        "2122232425262728",
        "3132333435363738",
    );
    // aa (the roof) hears a and b; bb (the cellar) only c; cc (the yard) a, c and d: aa and
    // cc reach all four, no single gateway does, and no other pair.
    heard_by(&t, a, &["00000000000000aa", "00000000000000cc"], 1).await;
    heard_by(&t, b, &["00000000000000aa"], 1).await;
    heard_by(&t, c, &["00000000000000bb"], 1).await;
    heard_by(&t, c, &["00000000000000cc"], 2).await;
    heard_by(&t, d, &["00000000000000cc"], 1).await;
    let body = |gateways: Value| {
        json!({
            "name": "gateways", "firmware_id": img["id"], "devices": [a, b, c, d], "driver": "engine",
            "multicast": {"class": "C", "dr": 5, "frequency": 869525000, "gateways": gateways},
        })
    };
    let r = t
        .post("/api/campaigns")
        .json(&body(json!([])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let plan = &r.json::<Value>().await.unwrap()["plan"];
    assert_eq!(
        plan["gateways"],
        json!({"gateways": ["00000000000000aa", "00000000000000cc"], "explicit": false, "unheard": []})
    );

    let r = t
        .post("/api/campaigns")
        .json(&body(json!(["00000000000000BB"])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let plan = &r.json::<Value>().await.unwrap()["plan"];
    assert_eq!(
        plan["gateways"],
        json!({"gateways": ["00000000000000bb"], "explicit": true, "unheard": []})
    );

    let r = t
        .post("/api/campaigns")
        .json(&body(json!(["roof"])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let e = r.text().await.unwrap();
    assert!(e.contains("multicast.gateways"), "{e}");
}

/// The DevEUIs the fake received unicast commands for, in order, with duplicates removed.
fn unicast_devices(fake: &Fake) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (eui, _, _) in fake.unicast.lock().unwrap().iter() {
        if !out.contains(eui) {
            out.push(eui.clone());
        }
    }
    out
}

/// Waves (issue 10 item 6) on ChirpStack v4: the engine sends only to the running wave's
/// device; the first device never answers, so its wave fails and the campaign pauses without
/// a command to the second; resume sends the second device its first command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_reach_only_the_running_waves_devices() {
    const SECOND: &str = "0102030405060709";
    let (fake, url) = fake_ns::start().await;
    let mut config = test_config();
    config.network.kind = lorafleet::config::NetworkKind::ChirpstackV4;
    config.network.chirpstack_v4.api_url = url;
    config.network.chirpstack_v4.api_token = TOKEN.into();
    config.network.request_timeout_s = 2;
    let network = ChirpstackV4::new(&config.network.chirpstack_v4, Duration::from_secs(2))
        .unwrap()
        .with_region("EU868")
        .unwrap();
    let t = spawn_app(config.with_network(Arc::new(network))).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
    t.add_device(DEV, Some("profile-1"), None).await;
    t.add_device(SECOND, Some("profile-1"), None).await;
    let body = json!({
        "name": "waves on v4", "firmware_id": img["id"], "devices": [SECOND, DEV], "driver": "engine",
        "multicast": {"class": "C", "dr": 5, "frequency": 869525000, "group_id": 1, "timeout_exp": 3},
        "unicast": {"timeout_s": 1, "attempts": 1},
        "engine": {"check": "refuse", "reboot_delay_s": 0},
        "rollout": {"waves": [{"percent": 50}, {"percent": 100}]},
    });
    let r = t.post("/api/campaigns").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());

    // DEV sorts first: the first wave is DEV alone; it never answers and the campaign pauses.
    let started = Instant::now();
    let c = loop {
        step(&t).await;
        let c = t.get_json(&format!("/api/campaigns/{id}")).await;
        if c["state"] != "running" {
            break c;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(c["state"], "paused", "{c}");
    assert_eq!(c["waves"][0]["devices"], json!([DEV]), "{c}");
    assert_eq!(
        unicast_devices(&fake),
        [DEV],
        "nothing for the second wave yet"
    );

    let r = t
        .post(&format!("/api/campaigns/{id}/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let started = Instant::now();
    while unicast_devices(&fake).len() < 2 {
        step(&t).await;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the second wave's device got no command"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(unicast_devices(&fake), [DEV, SECOND]);
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["waves"][1]["state"], "running", "{c}");
}

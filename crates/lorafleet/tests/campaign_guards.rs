//! Rollouts an operator can steer (issue 10 item 6): the compatibility guard refuses, per
//! device and naming it, an image for another model and an image the device already runs
//! (unless `allow_reinstall`); a device in a running campaign cannot start in another (409);
//! a `start_at` ahead keeps a started campaign `scheduled` until the clock reaches it; retry
//! and duplicate make new drafts.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::time::{Duration, Instant};

use common::{spawn_app, test_config, TestApp};
use lorafleet_simulator::device::MODELS;
use serde_json::{json, Value};

const GEN_APP_KEY: &str = "0302030405060708090a0b0c0d0e0f10";
const S1: &str = "4c4653494d000001";
const S2: &str = "4c4653494d000002";
const S3: &str = "4c4653494d000003";
const T4: &str = "4c4653494d000004";

/// A device as the simulated fleet's would be stored: its model tag and profile from the
/// network, its device description and running version from Version & Status.
async fn sim_device(t: &TestApp, eui: &str, kind: &str, n: u32, running: u32) {
    t.add_device(eui, Some(kind), None).await;
    // PackageVersionAns versioning types: 1 major.minor.patch (sensors), 2 GPS time (trackers).
    let vt: i64 = if kind == "sensor" { 1 } else { 2 };
    crate::on_db!(&t.app.db, p => sqlx::query(
        "UPDATE devices SET tags_json = $1, device_profile_name = $2, manufacturer_id = 'lorafleet-sim',
            device_id = $3, running_version = $4, versioning_type = $5 WHERE dev_eui = $6",
    )
    .bind(json!({"model": format!("sim-{kind}"), "simulated": "true"}).to_string())
    .bind(format!("Simulated {kind}"))
    .bind(format!("sim-{kind}-{n:02}"))
    .bind(i64::from(running))
    .bind(vt)
    .bind(eui)
    .execute(p)
    .await
    .map(|_| ()))
    .unwrap();
}

/// The simulated fleet: three sensors on 1.2.0 except S2 on 1.3.0 (the demo image's version),
/// one tracker; the demo sensor image in the library.
async fn fleet() -> (TestApp, i64) {
    let t = spawn_app(test_config()).await;
    let (status, img) = t
        .upload(
            "demo-sensor-1.3.0.bin",
            &lorafleet_simulator::demo::image(&MODELS[0]),
        )
        .await;
    assert_eq!(status, 201, "{img}");
    sim_device(&t, S1, "sensor", 1, MODELS[0].factory_version).await;
    sim_device(&t, S2, "sensor", 2, MODELS[0].demo_version).await;
    sim_device(&t, S3, "sensor", 3, MODELS[0].factory_version).await;
    sim_device(&t, T4, "tracker", 4, MODELS[1].factory_version).await;
    (t, img["id"].as_i64().unwrap())
}

fn body(firmware_id: i64, devices: &[&str]) -> Value {
    json!({
        "name": "sensors to 1.3.0",
        "firmware_id": firmware_id,
        "devices": devices,
        "driver": "fuota-server-v3",
        "keys": {"gen_app_key": GEN_APP_KEY},
        "multicast": {"class": "C", "dr": 5, "frequency": 868100000},
        "fragmentation": {"redundancy": 7},
    })
}

async fn send(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn create(t: &TestApp, b: &Value) -> i64 {
    let (status, c) = send(t.post("/api/campaigns").json(b)).await;
    assert_eq!(status, 201, "{c}");
    c["id"].as_i64().unwrap()
}

async fn start(t: &TestApp, id: i64) -> (u16, Value) {
    send(t.post(&format!("/api/campaigns/{id}/start"))).await
}

fn refused(v: &Value) -> Vec<(String, String, String)> {
    v["refused"]
        .as_array()
        .unwrap_or_else(|| panic!("no refused list: {v}"))
        .iter()
        .map(|r| {
            (
                r["dev_eui"].as_str().unwrap().to_string(),
                r["code"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_image_for_another_model_or_already_running_is_refused_naming_the_device() {
    let (t, fw) = fleet().await;
    let all = [S1, S2, T4];

    // The preview says it before anything is stored.
    let (status, p) = send(t.post("/api/campaigns/preview").json(&body(fw, &all))).await;
    assert_eq!(status, 200, "{p}");
    let r = refused(&p);
    assert_eq!(r.len(), 2, "{p}");
    assert_eq!((r[0].0.as_str(), r[0].1.as_str()), (S2, "already_running"));
    assert!(r[0].2.contains("already runs 1.3.0"), "{}", r[0].2);
    assert_eq!((r[1].0.as_str(), r[1].1.as_str()), (T4, "incompatible"));
    assert!(
        r[1].2.contains("sim-sensor-class") && r[1].2.contains("sim-tracker"),
        "the reason names what the image is for and what the device is: {}",
        r[1].2
    );

    // The draft shows them; start is refused while they remain, naming each device.
    let id = create(&t, &body(fw, &all)).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(refused(&c), r);
    let (status, e) = start(&t, id).await;
    assert_eq!(status, 422, "{e}");
    let errors: Vec<&str> = e["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["error"].as_str().unwrap())
        .collect();
    assert!(errors.iter().any(|m| m.contains(S2)), "{e}");
    assert!(errors.iter().any(|m| m.contains(T4)), "{e}");
    assert_eq!(e["fields"][0]["field"], "devices");
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "draft");

    // allow_reinstall lifts the version refusal, never the model one.
    let (status, c) = send(
        t.patch(&format!("/api/campaigns/{id}"))
            .json(&json!({"allow_reinstall": true})),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["allow_reinstall"], true);
    let r = refused(&c);
    assert_eq!(r.len(), 1, "{c}");
    assert_eq!((r[0].0.as_str(), r[0].1.as_str()), (T4, "incompatible"));
    assert_eq!(start(&t, id).await.0, 422);

    // Without the tracker nothing is refused and the campaign starts.
    let (status, c) = send(
        t.patch(&format!("/api/campaigns/{id}"))
            .json(&json!({"devices": [S1, S2]})),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert!(refused(&c).is_empty(), "{c}");
    let (status, c) = start(&t, id).await;
    assert_eq!(status, 202, "{c}");
    assert_eq!(c["state"], "running");
}

#[tokio::test]
async fn a_device_in_a_running_campaign_cannot_start_in_another() {
    let (t, fw) = fleet().await;
    let mut first = body(fw, &[S1, S3]);
    first["name"] = json!("first wave");
    let a = create(&t, &first).await;
    assert_eq!(start(&t, a).await.0, 202);

    let b = create(&t, &body(fw, &[S3, S1])).await;
    let (status, e) = start(&t, b).await;
    assert_eq!(status, 409, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains(S1) && msg.contains(&format!("campaign {a}")) && msg.contains("first wave"),
        "names the device and the other campaign: {msg}"
    );
    let overlaps: Vec<&str> = e["overlaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["campaign_id"], a);
            o["dev_eui"].as_str().unwrap()
        })
        .collect();
    assert_eq!(overlaps, [S1, S3]);
    assert_eq!(
        t.get_json(&format!("/api/campaigns/{b}")).await["state"],
        "draft"
    );

    // Other devices are free; once the first campaign is over, so are its devices.
    let mut b2 = body(fw, &[S2]);
    b2["allow_reinstall"] = json!(true);
    let other = create(&t, &b2).await;
    assert_eq!(start(&t, other).await.0, 202);
    let (status, _) = send(t.post(&format!("/api/campaigns/{a}/cancel"))).await;
    assert_eq!(status, 200);
    let (status, c) = start(&t, b).await;
    assert_eq!(status, 202, "{c}");
}

/// Calls the runner until the campaign leaves `scheduled`, within `limit`.
async fn run_until_started(t: &TestApp, id: i64, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        lorafleet::campaigns::runner::run_due(&t.app).await.unwrap();
        let c = t.get_json(&format!("/api/campaigns/{id}")).await;
        if c["state"] != "scheduled" {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "still scheduled after {limit:?}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_scheduled_campaign_waits_until_its_start_at_and_can_be_cancelled() {
    let (t, fw) = fleet().await;
    let now = chrono::Utc::now();
    let rfc = |d: chrono::DateTime<chrono::FixedOffset>| {
        d.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    };
    let cet = chrono::FixedOffset::east_opt(3600).unwrap();

    let mut bad = body(fw, &[S1]);
    bad["start_at"] = json!("tomorrow at eight");
    let (status, e) = send(t.post("/api/campaigns").json(&bad)).await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["field"], "start_at");
    bad["start_at"] = json!("2026-12-24T08:00:00");
    let (status, e) = send(t.post("/api/campaigns").json(&bad)).await;
    assert_eq!(status, 422, "an offset is required: {e}");

    // An hour ahead, written in +01:00: scheduled, and it stays so however often the runner
    // looks; cancel works while scheduled.
    let later = rfc((now + chrono::Duration::hours(1)).with_timezone(&cet));
    let mut b = body(fw, &[S1]);
    b["start_at"] = json!(later);
    let id = create(&t, &b).await;
    assert_eq!(
        t.get_json(&format!("/api/campaigns/{id}")).await["start_at"],
        later
    );
    let (status, c) = start(&t, id).await;
    assert_eq!(status, 202, "{c}");
    assert_eq!(c["state"], "scheduled");
    let at = chrono::DateTime::parse_from_rfc3339(c["start_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        at.timestamp(),
        (now + chrono::Duration::hours(1)).timestamp()
    );
    for _ in 0..3 {
        lorafleet::campaigns::runner::run_due(&t.app).await.unwrap();
    }
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "scheduled", "{c}");
    assert!(c["started_at"].is_null(), "{c}");

    // A scheduled campaign holds no device yet: another may start on S1 meanwhile.
    let mut now_b = body(fw, &[S1]);
    now_b["name"] = json!("right now");
    let running = create(&t, &now_b).await;
    assert_eq!(start(&t, running).await.0, 202);
    let (status, _) = send(t.post(&format!("/api/campaigns/{running}/cancel"))).await;
    assert_eq!(status, 200);

    let (status, c) = send(t.post(&format!("/api/campaigns/{id}/cancel"))).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["state"], "cancelled");

    // A few seconds ahead: scheduled, then started by the runner once the clock gets there.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(4);
    let mut b = body(fw, &[S1]);
    b["start_at"] = json!(rfc(soon.with_timezone(&cet)));
    let id = create(&t, &b).await;
    let (status, c) = start(&t, id).await;
    assert_eq!(status, 202, "{c}");
    assert_eq!(c["state"], "scheduled");
    let c = run_until_started(&t, id, Duration::from_secs(20)).await;
    assert_eq!(c["state"], "running", "{c}");
    let started = chrono::DateTime::parse_from_rfc3339(c["started_at"].as_str().unwrap()).unwrap();
    assert!(
        started >= soon - chrono::Duration::milliseconds(1000),
        "started {started}, due {soon}"
    );
    let messages: Vec<&str> = c["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("scheduled: starts at")),
        "{messages:?}"
    );
    assert!(
        messages.contains(&"start time reached: starting"),
        "{messages:?}"
    );
    let (status, _) = send(t.post(&format!("/api/campaigns/{id}/cancel"))).await;
    assert_eq!(status, 200);

    // A start_at in the past starts at once.
    let mut b = body(fw, &[S1]);
    b["start_at"] = json!(rfc((now - chrono::Duration::minutes(5)).with_timezone(&cet)));
    let id = create(&t, &b).await;
    let (status, c) = start(&t, id).await;
    assert_eq!(status, 202, "{c}");
    assert_eq!(c["state"], "running");
}

#[tokio::test]
async fn retry_takes_the_failed_devices_and_duplicate_the_same_ones() {
    let (t, fw) = fleet().await;
    let id = create(&t, &body(fw, &[S1, S3])).await;

    // A draft was never tried: nothing to retry yet, but it can be duplicated.
    let (status, e) = send(t.post(&format!("/api/campaigns/{id}/retry"))).await;
    assert_eq!(status, 409, "{e}");
    let (status, copy) = send(t.post(&format!("/api/campaigns/{id}/duplicate"))).await;
    assert_eq!(status, 201, "{copy}");
    assert_eq!(copy["state"], "draft");
    assert_eq!(copy["name"], "Copy of sensors to 1.3.0");

    assert_eq!(start(&t, id).await.0, 202);
    let (status, e) = send(t.post(&format!("/api/campaigns/{id}/retry"))).await;
    assert_eq!(status, 409, "still running: {e}");

    // S3 fails (as a driver would report), then the campaign ends.
    crate::on_db!(&t.app.db, p => sqlx::query("UPDATE campaign_devices SET stage = 'failed' WHERE campaign_id = $1 AND dev_eui = $2")
        .bind(id)
        .bind(S3)
        .execute(p).await.map(|_| ()))
        .unwrap();
    let (status, _) = send(t.post(&format!("/api/campaigns/{id}/cancel"))).await;
    assert_eq!(status, 200);
    let original = t.get_json(&format!("/api/campaigns/{id}")).await;

    // The v3 FUOTA server's keys are gone once sent: the copy says so, and takes them again.
    let (status, e) = send(t.post(&format!("/api/campaigns/{id}/retry"))).await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["field"], "keys", "{e}");
    let keys = json!({"keys": {"gen_app_key": GEN_APP_KEY}});
    let (status, retry) = send(t.post(&format!("/api/campaigns/{id}/retry")).json(&keys)).await;
    assert_eq!(status, 201, "{retry}");
    assert_eq!(retry["state"], "draft");
    assert_eq!(retry["name"], "Retry of sensors to 1.3.0");
    let devices: Vec<&str> = retry["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dev_eui"].as_str().unwrap())
        .collect();
    assert_eq!(devices, [S3]);
    assert_eq!(retry["settings"], original["settings"], "the same settings");
    assert_eq!(retry["driver"], original["driver"]);
    assert_eq!(retry["firmware_id"], fw);

    let (status, dup) = send(
        t.post(&format!("/api/campaigns/{id}/duplicate"))
            .json(&keys),
    )
    .await;
    assert_eq!(status, 201, "{dup}");
    let devices: Vec<&str> = dup["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dev_eui"].as_str().unwrap())
        .collect();
    assert_eq!(devices, [S1, S3]);
    assert_eq!(dup["settings"], original["settings"]);

    // A campaign without failed devices has nothing to retry.
    let clean = create(&t, &body(fw, &[S1])).await;
    assert_eq!(start(&t, clean).await.0, 202);
    send(t.post(&format!("/api/campaigns/{clean}/cancel"))).await;
    let (status, e) = send(t.post(&format!("/api/campaigns/{clean}/retry")).json(&keys)).await;
    assert_eq!(status, 422, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("no failed devices"),
        "{e}"
    );

    // Operators only: a viewer is refused, naming the role.
    let (status, u) =
        send(t.post("/api/users").json(
            &json!({"username": "watcher", "password": "watcher-password-1", "role": "viewer"}),
        ))
        .await;
    assert_eq!(status, 201, "{u}");
    let r = t
        .http
        .post(t.url(&format!("/api/campaigns/{id}/retry")))
        .basic_auth("watcher", Some("watcher-password-1"))
        .json(&keys)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("operator"), "{e}");
}

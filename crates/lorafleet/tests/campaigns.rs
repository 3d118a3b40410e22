//! Campaign drafts over HTTP: defaults, the validation table (the seed's values among the
//! cases), the plan, editing and deleting drafts.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::{spawn_app, test_config, TestApp, FIXTURE};
use serde_json::{json, Value};

const A: &str = "0102030405060708";
const B: &str = "1112131415161718";
const GEN_APP_KEY: &str = "0302030405060708090a0b0c0d0e0f10";

async fn setup() -> (TestApp, i64) {
    let config = test_config();
    let t = spawn_app(config).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
    t.add_device(A, Some("profile-1"), Some(100_000)).await;
    t.add_device(B, Some("profile-1"), Some(1000)).await;
    (t, img["id"].as_i64().unwrap())
}

/// The seed's configuration (minus its invalid timeout), for the fuota-server v3 driver.
fn seed(firmware_id: i64) -> Value {
    json!({
        "name": "seed",
        "firmware_id": firmware_id,
        "devices": [A, B],
        "driver": "fuota-server-v3",
        "keys": {"gen_app_key": GEN_APP_KEY},
        "multicast": {"class": "C", "dr": 5, "frequency": 868100000},
        "unicast": {"timeout_s": 150, "attempts": 5},
        "fragmentation": {"redundancy": 10},
    })
}

fn merge(base: &Value, patch: &Value) -> Value {
    let mut out = base.clone();
    if let (Some(o), Some(p)) = (out.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            match (o.get_mut(k), v) {
                (Some(existing), Value::Object(_)) if existing.is_object() => {
                    *existing = merge(existing, v)
                }
                _ => {
                    o.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out
}

async fn post(t: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let r = t.post(path).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn seed_values_draft_and_plan() {
    let (t, fw) = setup().await;
    let (status, c) = post(&t, "/api/campaigns", &seed(fw)).await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["state"], "draft");
    assert_eq!(c["driver"], "fuota-server-v3");
    assert_eq!(c["firmware_id"], fw);
    let s = &c["settings"];
    assert_eq!(s["multicast"]["dr"], 5);
    assert_eq!(s["multicast"]["frequency"], 868_100_000);
    assert_eq!(s["multicast"]["group_id"], 0);
    assert_eq!(s["multicast"]["timeout_exp_auto"], true);
    assert_eq!(s["unicast"]["timeout_s"], 150);
    assert_eq!(s["unicast"]["attempts"], 5);
    assert_eq!(
        s["fragmentation"]["fragment_size"], 239,
        "auto: DR5's 242 - 3"
    );
    assert_eq!(s["fragmentation"]["redundancy"], 10);
    assert_eq!(s["fragmentation"]["descriptor_hex"], "00000000");
    assert_eq!(s["request_frag_status"], "after_session");
    // Keys are never shown.
    assert_eq!(c["keys"]["gen_app_key"], true);
    assert!(!c.to_string().contains(GEN_APP_KEY));

    let p = &c["plan"];
    assert_eq!(p["data_fragments"], 96);
    assert_eq!(p["redundancy_fragments"], 10);
    assert_eq!(p["total_fragments"], 106);
    assert_eq!(p["padding"], 112);
    assert_eq!(p["frame_bytes"], 13 + 3 + 239);
    assert_eq!(p["bytes_on_air"], 255 * 106);
    assert_eq!(p["modulation"], "LoRa SF7 BW125");
    let per = p["airtime_per_fragment_ms"].as_f64().unwrap();
    assert!(
        (390.0..=400.0).contains(&per),
        "SF7 255-byte frame: {per} ms"
    );
    // 868.1 MHz is a 1 % sub-band: one fragment per ~39 s, 107 intervals > 2^12 s.
    assert_eq!(p["duty_cycle"], 0.01);
    assert_eq!(p["timeout_exp"], 13);
    assert_eq!(s["multicast"]["timeout_exp"], 13);
    let needed = p["session_needed_s"].as_f64().unwrap();
    assert!((4096.0..=8192.0).contains(&needed), "{needed}");
    assert_eq!(p["unicast_steps"], 4);
    assert_eq!(p["uplink_interval_s"], 150.0);
    assert_eq!(p["expected_duration_s"], 4.0 * 150.0 + 8192.0);
    let warnings = p["warnings"].to_string();
    assert!(
        warnings.contains(B) && warnings.contains("slot"),
        "{warnings}"
    );
    assert!(!warnings.contains(A), "{warnings}");
    let advice = &p["redundancy_advice"];
    assert_eq!(advice["loss"], 0.1);
    assert!(
        advice["suggested_redundancy"].as_u64().unwrap() > 10,
        "{advice}"
    );
    assert!(!advice["curve"].as_array().unwrap().is_empty());

    // Listed with its outcome.
    let list = t.get_json("/api/campaigns").await;
    assert_eq!(list["campaigns"][0]["id"], c["id"]);
    assert_eq!(list["campaigns"][0]["counts"]["pending"], 2);
    assert_eq!(list["campaigns"][0]["devices"], 2);

    // Edit the draft: the plan follows, the keys stay.
    let id = c["id"].as_i64().unwrap();
    let r = t
        .patch(&format!("/api/campaigns/{id}"))
        .json(&json!({"fragmentation": {"redundancy": 20}, "multicast": {"frequency": 869525000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["plan"]["redundancy_fragments"], 20);
    assert_eq!(c["plan"]["duty_cycle"], 0.1);
    assert_eq!(c["keys"]["gen_app_key"], true);
    assert_eq!(c["request"]["unicast"]["timeout_s"], 150);

    let r = t
        .delete(&format!("/api/campaigns/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn validation_table() {
    let (t, fw) = setup().await;
    let base = seed(fw);
    // (change to the seed's request, field refused, part of the explanation)
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"multicast": {"timeout_exp": 40}}),
            "multicast.timeout_exp",
            "0..15",
        ),
        (
            json!({"fragmentation": {"fragment_size": 240}}),
            "fragmentation.fragment_size",
            "at most 239",
        ),
        (
            json!({"fragmentation": {"fragment_size": 0}}),
            "fragmentation.fragment_size",
            "at least 1",
        ),
        (
            json!({"fragmentation": {"fragment_size": 1}}),
            "fragmentation.fragment_size",
            "14-bit",
        ),
        (
            json!({"multicast": {"dr": 8}}),
            "multicast.dr",
            "uplink-only",
        ),
        (json!({"multicast": {"dr": 16}}), "multicast.dr", "0..15"),
        (
            json!({"multicast": {"frequency": 915000000}}),
            "multicast.frequency",
            "band",
        ),
        (
            json!({"multicast": {"class": "A"}}),
            "multicast.class",
            "\"C\" or \"B\"",
        ),
        (
            json!({"multicast": {"group_id": 4}}),
            "multicast.group_id",
            "0..3",
        ),
        (
            json!({"multicast": {"ping_slot_periodicity": 8}}),
            "multicast.ping_slot_periodicity",
            "0..7",
        ),
        (
            json!({"fragmentation": {"session_index": 4}}),
            "fragmentation.session_index",
            "0..3",
        ),
        (
            json!({"fragmentation": {"descriptor_hex": "0102"}}),
            "fragmentation.descriptor_hex",
            "exactly 4 bytes",
        ),
        (
            json!({"fragmentation": {"redundancy": 16300}}),
            "fragmentation.redundancy",
            "14-bit",
        ),
        (
            json!({"fragmentation": {"redundancy": -1}}),
            "fragmentation.redundancy",
            "0 or more",
        ),
        (
            json!({"fragmentation": {"redundancy_percent": 10}}),
            "fragmentation.redundancy_percent",
            "not both",
        ),
        (
            json!({"unicast": {"timeout_s": 0}}),
            "unicast.timeout_s",
            "1..86400",
        ),
        (
            json!({"unicast": {"attempts": 0}}),
            "unicast.attempts",
            "1..100",
        ),
        (
            json!({"devices": [A, "ffffffffffffffff"]}),
            "devices",
            "ffffffffffffffff",
        ),
        (json!({"devices": [A, A]}), "devices", "twice"),
        (json!({"devices": ["xyz"]}), "devices", "16 hex digits"),
        (json!({"devices": []}), "devices", "at least one"),
        (
            json!({"keys": {"gen_app_key": "00000000000000000000000000000000"}}),
            "keys.gen_app_key",
            "all zeros",
        ),
        (
            json!({"keys": {"gen_app_key": "0302"}}),
            "keys.gen_app_key",
            "32 hex digits",
        ),
        (
            json!({"keys": {"gen_app_key": null}}),
            "keys",
            "no key material",
        ),
        (
            json!({"keys": {"per_device": {A: {}}}}),
            "keys.per_device.0102030405060708",
            "exactly one",
        ),
        (json!({"driver": "nope"}), "driver", "chirpstack-v4"),
        (
            json!({"firmware_id": 999}),
            "firmware_id",
            "no firmware image 999",
        ),
        (
            json!({"request_frag_status": "sometimes"}),
            "request_frag_status",
            "after_session",
        ),
        (json!({"colour": "red"}), "colour", "unknown field"),
        (
            json!({"multicast": {"dr": "five"}}),
            "multicast.dr",
            "invalid type",
        ),
        // SF12 at 1 % duty cycle cannot carry this image in one session.
        (
            json!({"multicast": {"dr": 0}}),
            "multicast.timeout_exp",
            "longest session",
        ),
    ];
    for (change, field, words) in &cases {
        let body = merge(&base, change);
        let (status, e) = post(&t, "/api/campaigns", &body).await;
        assert_eq!(status, 422, "{change}: {e}");
        let fields = e["fields"].as_array().unwrap();
        let hit = fields.iter().find(|f| f["field"] == *field);
        assert!(hit.is_some(), "{change}: expected field {field}, got {e}");
        let text = hit.unwrap()["error"].as_str().unwrap();
        assert!(text.contains(words), "{change}: {text:?} lacks {words:?}");
        assert_eq!(e["field"], fields[0]["field"], "field repeats the first");
        assert!(e["error"].as_str().unwrap().len() > 5);
    }
    // The seed's 40 is explained, not just refused.
    let (_, e) = post(
        &t,
        "/api/campaigns",
        &merge(&base, &json!({"multicast": {"timeout_exp": 40}})),
    )
    .await;
    assert!(e["error"].as_str().unwrap().contains("4 bits"), "{e}");
    // Nothing was stored by any refused request.
    assert!(t.get_json("/api/campaigns").await["campaigns"]
        .as_array()
        .unwrap()
        .is_empty());

    // Valid variants.
    let ok: Vec<Value> = vec![
        json!({"fragmentation": {"fragment_size": 239}}),
        json!({"fragmentation": {"fragment_size": null}}),
        json!({"fragmentation": {"fragment_size": "auto", "redundancy": null, "redundancy_percent": 25}}),
        json!({"multicast": {"timeout_exp": 15, "class": "B", "ping_slot_periodicity": 0}}),
        json!({"multicast": {"frequency": 869.525}}),
        json!({"keys": {"gen_app_key": null, "per_device": {A: {"gen_app_key": GEN_APP_KEY}, B: {"app_key": GEN_APP_KEY}}}}),
        json!({"driver": "engine"}),
        json!({"fragmentation": {"descriptor_hex": "0x01020304"}, "request_frag_status": "none"}),
    ];
    for change in ok {
        let body = merge(&base, &change);
        let r = t
            .post("/api/campaigns/preview")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{change}: {v}");
    }
    let (_, v) = post(
        &t,
        "/api/campaigns/preview",
        &merge(
            &base,
            &json!({"fragmentation": {"redundancy": null, "redundancy_percent": 25}}),
        ),
    )
    .await;
    assert_eq!(v["plan"]["redundancy_fragments"], 24, "25 % of 96");
    let (_, v) = post(
        &t,
        "/api/campaigns/preview",
        &merge(&base, &json!({"multicast": {"frequency": 869.525}})),
    )
    .await;
    assert_eq!(v["settings"]["multicast"]["frequency"], 869_525_000);
    // A v4 campaign needs no keys here (ChirpStack holds them) and sends a percentage.
    let (status, v) = post(
        &t,
        "/api/campaigns/preview",
        &merge(
            &base,
            &json!({"driver": "chirpstack-v4", "keys": {"gen_app_key": null}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["plan"]["redundancy_percent_sent"], 11);
    assert_eq!(v["plan"]["redundancy_fragments"], 11);
}

#[tokio::test]
async fn engine_driver_is_reserved_until_registered() {
    let (t, fw) = setup().await;
    let (status, c) = post(
        &t,
        "/api/campaigns",
        &merge(&seed(fw), &json!({"driver": "engine"})),
    )
    .await;
    assert_eq!(status, 201, "{c}");
    let id = c["id"].as_i64().unwrap();
    let (status, e) = post(&t, &format!("/api/campaigns/{id}/start"), &json!({})).await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["field"], "driver");
    // Still a draft; it can be cancelled.
    let (status, c) = post(&t, &format!("/api/campaigns/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(c["state"], "cancelled");
    let (status, _) = post(&t, &format!("/api/campaigns/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 409);
}

/// The list counts each campaign's own devices (counted by the database per campaign and
/// stage, not read device by device).
#[tokio::test]
async fn the_list_counts_each_campaigns_own_devices() {
    let (t, fw) = setup().await;
    let (status, both) = post(&t, "/api/campaigns", &seed(fw)).await;
    assert_eq!(status, 201, "{both}");
    let one = merge(&seed(fw), &json!({"name": "one", "devices": [A]}));
    let (status, one) = post(&t, "/api/campaigns", &one).await;
    assert_eq!(status, 201, "{one}");
    let list = t.get_json("/api/campaigns").await;
    let listed = list["campaigns"].as_array().unwrap();
    let find = |c: &Value| listed.iter().find(|l| l["id"] == c["id"]).unwrap().clone();
    assert_eq!(find(&both)["devices"], 2);
    assert_eq!(find(&both)["counts"], json!({"pending": 2}));
    assert_eq!(find(&one)["devices"], 1);
    assert_eq!(find(&one)["counts"], json!({"pending": 1}));
}

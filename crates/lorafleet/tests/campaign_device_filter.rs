//! A campaign that targets a `device_filter` instead of a list of DevEUIs (issue 10 item 5):
//! resolved when the draft is saved (its `device_count`), again when the campaign starts, and
//! refused with the filter's field when it does not parse or selects nothing.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::{spawn_app, test_config, TestApp, FIXTURE};
use serde_json::{json, Value};

const GEN_APP_KEY: &str = "0302030405060708090a0b0c0d0e0f10";

async fn device(t: &TestApp, eui: &str, profile: &str) {
    t.add_device(eui, Some(profile), Some(100_000)).await;
    crate::on_db!(&t.app.db, p => sqlx::query("UPDATE devices SET device_profile_name = $1 WHERE dev_eui = $2")
        .bind(profile)
        .bind(eui)
        .execute(p)
        .await
        .map(|_| ()))
        .unwrap();
}

async fn post(t: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let r = t.post(path).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn body(firmware_id: i64, filter: Value) -> Value {
    json!({
        "name": "trackers",
        "firmware_id": firmware_id,
        "device_filter": filter,
        "driver": "fuota-server-v3",
        "keys": {"gen_app_key": GEN_APP_KEY},
        "multicast": {"class": "C", "dr": 5, "frequency": 868100000},
    })
}

#[tokio::test]
async fn a_filter_selects_the_devices_at_draft_and_again_at_start() {
    let t = spawn_app(test_config()).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
    let fw = img["id"].as_i64().unwrap();
    device(&t, "0000000000000001", "sim-tracker").await;
    device(&t, "0000000000000002", "SIM-TRACKER").await;
    device(&t, "0000000000000003", "sim-sensor").await;

    let (status, c) = post(
        &t,
        "/api/campaigns",
        &body(fw, json!({"model": "sim-tracker"})),
    )
    .await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["device_count"], 2);
    let euis: Vec<&str> = c["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dev_eui"].as_str().unwrap())
        .collect();
    assert_eq!(euis, ["0000000000000001", "0000000000000002"]);
    assert_eq!(
        c["request"]["device_filter"]["model"], "sim-tracker",
        "the filter is kept"
    );
    let id = c["id"].as_i64().unwrap();

    // The preview counts the same way.
    let (status, p) = post(
        &t,
        "/api/campaigns/preview",
        &body(fw, json!({"model": "sim-sensor"})),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["devices"], json!(["0000000000000003"]));

    // A tracker added after the draft is in the campaign once it starts (whatever the FUOTA
    // service then answers: none is configured here).
    device(&t, "0000000000000004", "sim-tracker").await;
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    let start_status = r.status();
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["device_count"], 3, "start {start_status}: {c}");
}

#[tokio::test]
async fn a_filter_that_is_wrong_or_empty_is_refused_naming_it() {
    let t = spawn_app(test_config()).await;
    let (_, img) = t.upload("fw.bin_signed", FIXTURE).await;
    let fw = img["id"].as_i64().unwrap();
    device(&t, "0000000000000001", "sim-tracker").await;
    for (filter, field) in [
        (json!({"model": "nothing-like-it"}), "device_filter"),
        (json!({"status": "asleep"}), "device_filter.status"),
        (
            json!({"seen_after": "yesterday"}),
            "device_filter.seen_after",
        ),
        (json!({"colour": "red"}), "device_filter.colour"),
    ] {
        let (status, e) = post(&t, "/api/campaigns", &body(fw, filter.clone())).await;
        assert_eq!(status, 422, "{filter}: {e}");
        let fields: Vec<&str> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["field"].as_str().unwrap())
            .collect();
        assert!(fields.iter().any(|f| f.starts_with(field)), "{filter}: {e}");
    }
    let mut both = body(fw, json!({"model": "sim-tracker"}));
    both["devices"] = json!(["0000000000000001"]);
    let (status, e) = post(&t, "/api/campaigns", &both).await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["fields"][0]["field"], "devices");
}

//! The firmware library writes an image's version the way its devices write theirs (issue 10
//! item 3): the versioning type of the device whose running version is nearest the image's,
//! from its PackageVersionAns; raw until a device reported one. The raw value stays.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::*;
use serde_json::Value;

/// The fixture's trailer version (GPS seconds of 2031-06-13, read as a Unix time 2021-06-08).
const FIXTURE_VERSION: u32 = 1_623_165_310;

/// VersionRunningAns (slot 1) then PackageVersionAns (package 10 v1, `vt`, 3 slots).
fn answers(version: u32, vt: u8) -> Vec<u8> {
    let mut p = vec![0x01, 0x01];
    p.extend_from_slice(&version.to_le_bytes());
    p.extend_from_slice(&[0x00, 0x0a, 0x01, (vt << 4) | 3]);
    p
}

async fn fixture_image(t: &TestApp) -> Value {
    let list = t.get_json("/api/firmware").await;
    list["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["file_name"] == "fixture.bin")
        .unwrap()
        .clone()
}

#[tokio::test]
async fn an_image_is_spelled_in_the_versioning_type_of_the_devices_nearest_its_version() {
    let t = spawn(|_| {}, None).await;
    assert_eq!(t.upload("fixture.bin", FIXTURE).await.0, 201);
    let img = fixture_image(&t).await;
    assert_eq!(
        img["spelled"]["versioning"], "raw",
        "no device reported a type: {img}"
    );
    assert_eq!(img["spelled"]["version"]["raw"], FIXTURE_VERSION);

    // A sensor on 1.2.0 (major.minor.patch) and a tracker on a GPS-time version near the image's.
    let sensor = answers(0x0001_0200, 1);
    let tracker = answers(FIXTURE_VERSION - 86_400, 2);
    for (eui, payload) in [("1111111111111111", sensor), ("2222222222222222", tracker)] {
        let r = t
            .ingest(
                "up",
                "application/json",
                v4_uplink_json(eui, 111, 1, &payload),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        t.device("1111111111111111").await["status"]["running"]["version"]["display"],
        "1.2.0"
    );
    let tracker_shows = t.device("2222222222222222").await["status"]["running"]["version"]
        ["display"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(tracker_shows.ends_with('Z'), "GPS time: {tracker_shows}");

    let img = fixture_image(&t).await;
    assert_eq!(img["spelled"]["versioning"], "gps_time", "{img}");
    assert_eq!(img["spelled"]["version"]["display"], "2031-06-13T15:14:52Z");
    assert_eq!(
        img["spelled"]["version"]["raw"], FIXTURE_VERSION,
        "the raw value stays"
    );
    assert_eq!(img["trailer"]["version"], FIXTURE_VERSION);
    let id = img["id"].as_i64().unwrap();
    let one = t.get_json(&format!("/api/firmware/{id}")).await;
    assert_eq!(one["spelled"], img["spelled"]);
}

#[tokio::test]
async fn a_campaign_reads_from_and_to_in_its_devices_spelling() {
    let t = spawn(|_| {}, None).await;
    let (status, img) = t.upload("fixture.bin", FIXTURE).await;
    assert_eq!(status, 201, "{img}");
    for (eui, f_cnt) in [("1111111111111111", 1), ("1111111111111112", 1)] {
        let r = t
            .ingest(
                "up",
                "application/json",
                v4_uplink_json(eui, 111, f_cnt, &answers(0x0001_0200, 1)),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = t
        .post("/api/campaigns")
        .json(&serde_json::json!({
            "name": "sensors", "firmware_id": img["id"], "driver": "engine",
            "devices": ["1111111111111111", "1111111111111112"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let v = t.get_json(&format!("/api/campaigns/{id}/versions")).await;
    assert_eq!(v["from"][0]["version"]["display"], "1.2.0", "{v}");
    assert_eq!(v["from"][0]["devices"], 2);
    assert_eq!(
        v["to"]["versioning"], "semver",
        "the campaign's devices' type: {v}"
    );
    let [patch, minor, major, _] = FIXTURE_VERSION.to_le_bytes();
    assert_eq!(
        v["to"]["version"]["display"],
        format!("{major}.{minor}.{patch}")
    );
    assert_eq!(v["to"]["version"]["raw"], FIXTURE_VERSION);
    let r = t.get("/api/campaigns/999/versions").send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_sidecar_or_the_api_states_the_versioning() {
    let config = test_config();
    std::fs::write(config.firmware.dir.join("fixture.bin"), FIXTURE).unwrap();
    std::fs::write(
        config.firmware.dir.join("fixture.bin.toml"),
        "versioning = \"unix_time\"\n",
    )
    .unwrap();
    std::fs::write(config.firmware.dir.join("bad.bin"), b"x").unwrap();
    std::fs::write(
        config.firmware.dir.join("bad.bin.toml"),
        "versioning = \"octal\"\n",
    )
    .unwrap();
    let t = spawn_app(config).await;
    let report = t
        .post("/api/firmware/rescan")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(report["errors"][0]["file"], "bad.bin.toml", "{report}");
    assert!(
        report["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("semver"),
        "{report}"
    );
    let img = fixture_image(&t).await;
    assert_eq!(img["versioning"], "unix_time");
    assert_eq!(img["spelled"]["versioning"], "unix_time");
    assert_eq!(img["spelled"]["version"]["display"], "2021-06-08T15:15:10Z");

    let id = img["id"].as_i64().unwrap();
    let r = t
        .patch(&format!("/api/firmware/{id}"))
        .json(&serde_json::json!({"versioning": "hex"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "versioning");
    let r = t
        .patch(&format!("/api/firmware/{id}"))
        .json(&serde_json::json!({"versioning": "gps_time"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let img = fixture_image(&t).await;
    assert_eq!(img["spelled"]["versioning"], "gps_time");
    assert_eq!(img["spelled"]["version"]["display"], "2031-06-13T15:14:52Z");
}

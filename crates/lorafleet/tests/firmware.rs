//! The firmware library over HTTP: indexing firmware.dir with sidecars, uploads and their
//! limits, metadata edits, download and delete.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::{spawn_app, test_config, FIXTURE};

#[tokio::test]
async fn fixture_in_firmware_dir_is_indexed_with_trailer_and_sidecar() {
    let config = test_config();
    std::fs::write(
        config.firmware.dir.join("patch_demo_jdiff_v1v2.bin_signed"),
        FIXTURE,
    )
    .unwrap();
    std::fs::write(
        config
            .firmware
            .dir
            .join("patch_demo_jdiff_v1v2.bin_signed.toml"),
        "target = \"mbed-demo\"\nfrom_version = \"1\"\nto_version = \"2\"\ncompression = \"none\"\nnotes = \"demo patch\"\n",
    )
    .unwrap();
    std::fs::write(config.firmware.dir.join("plain.bin"), vec![0xaa; 1000]).unwrap();
    std::fs::write(config.firmware.dir.join("broken.bin.toml"), "colour = 1").unwrap();
    std::fs::write(config.firmware.dir.join("broken.bin"), b"x").unwrap();
    let t = spawn_app(config).await;

    let r = t.post("/api/firmware/rescan").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["added"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(report["errors"][0]["file"], "broken.bin.toml", "{report}");

    let list = t.get_json("/api/firmware").await;
    let images = list["images"].as_array().unwrap();
    let img = images
        .iter()
        .find(|i| i["file_name"] == "patch_demo_jdiff_v1v2.bin_signed")
        .unwrap();
    assert_eq!(img["size"], 22_832);
    assert_eq!(img["source"], "dir");
    assert_eq!(img["sha256"].as_str().unwrap().len(), 64);
    let tr = &img["trailer"];
    assert_eq!(tr["version"], 1_623_165_310u32);
    assert_eq!(tr["version_time"], "2021-06-08T15:15:10Z");
    assert_eq!(tr["kind"], "jdiff");
    assert_eq!(tr["old_firmware_size"], 254_140);
    assert_eq!(
        tr["manufacturer_uuid"],
        "ee33927e-e985-577b-ae88-fe98f5a4b587"
    );
    assert_eq!(
        tr["device_class_uuid"],
        "22c3fa46-b797-595f-bd1d-2c18133d421f"
    );
    assert_eq!(tr["signature_length"], 71);
    assert_eq!(img["target"], "mbed-demo");
    assert_eq!(img["from_version"], "1");
    assert_eq!(img["to_version"], "2");
    assert_eq!(img["compression"], "none");
    assert_eq!(img["notes"], "demo patch");
    let plain = images
        .iter()
        .find(|i| i["file_name"] == "plain.bin")
        .unwrap();
    assert!(plain["trailer"].is_null());

    // An edit survives a rescan; the sidecar still supplies the other fields.
    let id = img["id"].as_i64().unwrap();
    let r = t
        .patch(&format!("/api/firmware/{id}"))
        .json(&serde_json::json!({"notes": "edited", "target": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let edited: serde_json::Value = r.json().await.unwrap();
    assert_eq!(edited["notes"], "edited");
    assert!(edited["target"].is_null());
    let r = t.post("/api/firmware/rescan").send().await.unwrap();
    let report: serde_json::Value = r.json().await.unwrap();
    assert!(report["added"].as_array().unwrap().is_empty(), "{report}");
    let again = t.get_json(&format!("/api/firmware/{id}")).await;
    assert_eq!(again["notes"], "edited");
    assert!(again["target"].is_null());
    assert_eq!(again["to_version"], "2");

    // Unknown fields are refused by name.
    let r = t
        .patch(&format!("/api/firmware/{id}"))
        .json(&serde_json::json!({"sha256": "00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["field"], "sha256");

    // A file that disappears is marked missing.
    std::fs::remove_file(t.firmware_dir.join("plain.bin")).unwrap();
    let report: serde_json::Value = t
        .post("/api/firmware/rescan")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["missing"], serde_json::json!([plain["id"]]));
}

#[tokio::test]
async fn upload_download_duplicate_and_delete() {
    let config = test_config();
    let t = spawn_app(config).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201, "{img}");
    assert_eq!(img["source"], "upload");
    assert_eq!(img["size"], 22_832);
    assert_eq!(img["trailer"]["kind"], "jdiff");
    let id = img["id"].as_i64().unwrap();
    assert!(t.data_dir.join("firmware").join("fw.bin_signed").exists());

    let bytes = t
        .get(&format!("/api/firmware/{id}/download"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], FIXTURE);

    // Same bytes under another name: refused, naming the image it duplicates.
    let (status, e) = t.upload("copy.bin", FIXTURE).await;
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["field"], "file");
    assert_eq!(e["existing"]["id"], id);
    assert!(
        e["error"].as_str().unwrap().contains("fw.bin_signed"),
        "{e}"
    );
    assert!(!t.data_dir.join("firmware").join("copy.bin").exists());

    let r = t
        .delete(&format!("/api/firmware/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(!t.data_dir.join("firmware").join("fw.bin_signed").exists());
    let list = t.get_json("/api/firmware").await;
    assert!(list["images"].as_array().unwrap().is_empty());
    // Deleted: the same image can come back.
    let (status, _) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn upload_limits_and_names() {
    let mut config = test_config();
    config.firmware.max_size = 1000;
    let t = spawn_app(config).await;

    let (status, e) = t.upload("big.bin", &[1u8; 1001]).await;
    assert_eq!(status, 413, "{e}");
    assert_eq!(e["field"], "file");
    assert!(e["error"].as_str().unwrap().contains("1000"), "{e}");
    let leftovers: Vec<_> = std::fs::read_dir(t.data_dir.join("firmware"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "nothing is kept of a refused upload");

    // Far beyond the limit: refused from the declared length, before reading the body.
    let (status, _) = t.upload("huge.bin", &vec![1u8; 3 * 1024 * 1024]).await;
    assert_eq!(status, 413);

    for bad in [
        "../evil.bin",
        "a/b.bin",
        "..",
        "x\u{1}y",
        ".hidden",
        "fw.toml",
    ] {
        let (status, e) = t.upload(bad, &[1, 2, 3]).await;
        assert_eq!(status, 400, "{bad:?}: {e}");
        assert_eq!(e["field"], "file", "{bad:?}");
    }
    let (status, _) = t.upload("ok.bin", &[1u8; 1000]).await;
    assert_eq!(status, 201);

    let doc = t.get_json("/api/openapi.json").await;
    for path in [
        "/api/firmware",
        "/api/firmware/{id}/download",
        "/api/campaigns",
        "/api/campaigns/{id}/start",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }

    let r = t
        .post("/api/firmware")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["field"], "file");
}

//! The device list's search and order as both backends must give them: case-insensitive
//! (SQLite's LIKE is, PostgreSQL's needs ILIKE), wildcards in the search taken literally, and
//! devices never seen listed after the ones heard from (PostgreSQL sorts NULL first by default).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::spawn;
use serde_json::Value;

fn euis(list: &Value) -> Vec<String> {
    list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dev_eui"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn search_is_case_insensitive_and_literal_and_never_seen_devices_come_last() {
    let t = spawn(|_| {}, None).await;
    t.add_device("00000000000000a1", Some("p"), None).await;
    t.add_device("00000000000000b2", Some("p"), None).await;
    // Known from the network server only: never seen.
    crate::on_db!(&t.app.db, p => sqlx::query(
        "INSERT INTO devices (dev_eui, name, source, created_at)
         VALUES ('00000000000000c3', 'Shelf_Sensor 100%', 'network', '2026-01-01T00:00:00.000Z')",
    )
    .execute(p)
    .await
    .map(|_| ()))
    .unwrap();

    let upper = t
        .get_json("/api/devices?search=DEVICE%2000000000000000A1")
        .await;
    assert_eq!(euis(&upper), ["00000000000000a1"], "{upper}");
    let lower = t.get_json("/api/devices?search=shelf").await;
    assert_eq!(euis(&lower), ["00000000000000c3"], "{lower}");
    // `%` and `_` are what the operator typed, not wildcards.
    let percent = t.get_json("/api/devices?search=%25").await;
    assert_eq!(euis(&percent), ["00000000000000c3"], "{percent}");
    let underscore = t.get_json("/api/devices?search=f_s").await;
    assert_eq!(euis(&underscore), ["00000000000000c3"], "{underscore}");

    let all = t.get_json("/api/devices").await;
    assert_eq!(all["total"], 3);
    assert_eq!(euis(&all).last().unwrap(), "00000000000000c3", "{all}");
}

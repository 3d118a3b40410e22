//! The ingest writer stores a group of uplinks, Version & Status answers among them, with
//! multi-row statements per group. What it stores must be what storing the same events one by
//! one (`apply_event`, the path a refused group falls back to) stores: the device record, its
//! log, its firmware history, which requests are answered, and the pruned histories.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::*;
use lorafleet::devices::record::{apply_event, record_downlink_request, Retention};
use lorafleet::devices::DevEui;
use lorafleet::ingest::{decode, Encoding, IntegrationEvent};
use serde_json::Value;

const D1: &str = "7a00000000000001";
const D2: &str = "7a00000000000002";
const D3: &str = "7a00000000000003";

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn event(eui: &str, f_port: u32, f_cnt: u32, data: &[u8]) -> IntegrationEvent {
    decode(
        "up",
        Encoding::Json,
        &v4_uplink_json(eui, f_port, f_cnt, data),
        lorafleet::config::ChirpstackVersion::V4,
        lorafleet::config::NetworkKind::None,
    )
    .unwrap()
    .unwrap()
}

/// The events of the group, in order: several answers of one device (two of the same command
/// in one payload, a versioning type that changes how a later version reads, stored versions
/// settling an erase, a payload that does not decode), plain uplinks between them, enough frames
/// for the uplink history to be pruned.
fn group() -> Vec<IntegrationEvent> {
    let mut events = vec![
        event(D1, 111, 1, &h("04 3c000000 04 3d000000")),
        event(D2, 111, 1, &h("01 00 03 02 01 00")),
        event(D1, 2, 2, &[1, 2, 3]),
        event(D2, 111, 2, &h("00 0a 01 13 01 00 04 02 01 00")),
        event(D1, 111, 3, &h("02 05 03 02 01 00 04 02 01 00")),
        event(D3, 111, 1, &h("03 00 20 00 00 00 10 00 00")),
        event(D2, 111, 3, &h("01 00 04 02 01 00")),
        event(D1, 111, 4, &h("04 3c 00 00 00 07")),
    ];
    let mut description = vec![0x06, 0x03, 0x04];
    description.extend_from_slice(b"LTEK");
    description.push(0x06);
    description.extend_from_slice(b"FF1705");
    events.push(event(D3, 111, 2, &description));
    for f_cnt in 5..30 {
        events.push(event(D1, 2, f_cnt, &[f_cnt as u8]));
    }
    events.push(event(D3, 111, 3, &h("06 03 00")));
    events
}

/// Every device once, with the requests the answers settle waiting.
async fn prepare(t: &TestApp) {
    for eui in [D1, D2, D3] {
        let r = t
            .ingest("up", "application/json", v4_uplink_json(eui, 2, 0, &[0]))
            .await;
        assert_eq!(r.status(), 200);
    }
    let at = "2026-11-27T10:00:00.000Z";
    for (eui, command) in [
        (D1, "uptime"),
        (D1, "uptime"),
        (D1, "uptime"),
        (D1, "erase_slot"),
        (D1, "version_stored"),
        (D2, "version_running"),
        (D3, "space_status"),
    ] {
        let eui: DevEui = eui.parse().unwrap();
        record_downlink_request(&t.app.db, eui, 111, &[0], false, Some(command), at)
            .await
            .unwrap();
    }
}

/// Drops what differs between two databases for the same history (row ids, the order of
/// devices' row sequence numbers).
fn comparable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|k, _| k != "id" && k != "changed_seq");
                map.values_mut().for_each(strip);
            }
            Value::Array(list) => list.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[tokio::test]
async fn a_group_with_status_answers_is_stored_as_one_by_one() {
    let configure = |c: &mut lorafleet::config::Config| {
        c.devices.uplink_history = 5;
        c.devices.event_history = 3;
    };
    let one_by_one = spawn(configure, None).await;
    let grouped = spawn(configure, None).await;
    prepare(&one_by_one).await;
    prepare(&grouped).await;
    let retention = Retention {
        uplink_history: 5,
        event_history: 3,
        status_f_port: 111,
    };

    for ev in group() {
        let mut tx = lorafleet::storage::begin_immediate(&one_by_one.app.db)
            .await
            .unwrap();
        apply_event(&mut tx, &ev, retention).await.unwrap();
        lorafleet::storage::commit(tx).await.unwrap();
    }
    // Queued before the writer task runs (this test's runtime has one thread and nothing here
    // waits), so the writer takes them as one group.
    let mut pending = Vec::new();
    for ev in group() {
        pending.push(grouped.app.writer.submit(ev).await.unwrap());
    }
    for done in pending {
        done.await.unwrap().unwrap();
    }

    for eui in [D1, D2, D3] {
        let a = comparable(one_by_one.device(eui).await);
        let b = comparable(grouped.device(eui).await);
        assert_eq!(a, b, "device {eui}");
        let path = format!("/api/devices/{eui}/uplinks?limit=100");
        let a = comparable(one_by_one.get_json(&path).await);
        let b = comparable(grouped.get_json(&path).await);
        assert_eq!(a, b, "uplinks of {eui}");
    }
    // The comparison has something to compare: the answers took effect.
    let d1 = grouped.device(D1).await;
    assert_eq!(d1["status"]["uptime_s"], 60);
    assert_eq!(
        d1["events"].as_array().unwrap().len(),
        3,
        "log pruned from 5 lines"
    );
    let d2 = grouped.device(D2).await;
    assert_eq!(d2["status"]["running"]["version"]["display"], "1.2.4");
    let d3 = grouped.device(D3).await;
    assert_eq!(d3["status"]["manufacturer_id"], "LTEK");
    assert_eq!(d3["status"]["heap_available"], 8192);
    let text = serde_json::to_string(&d1).unwrap();
    assert!(text.contains("\"answered\""), "{text}");
}

/// The writer commits the next group while the previous one finishes (on PostgreSQL two groups
/// are in flight): events handed over one at a time, so that they form many small groups that
/// overlap, still store what one-by-one storing does, in order (a device's Version & Status
/// answers read what its previous answer stored; its log and uplinks keep their order).
#[tokio::test]
async fn overlapping_small_groups_are_stored_as_one_by_one() {
    let configure = |c: &mut lorafleet::config::Config| {
        c.devices.uplink_history = 5;
        c.devices.event_history = 3;
    };
    let one_by_one = spawn(configure, None).await;
    let grouped = spawn(configure, None).await;
    prepare(&one_by_one).await;
    prepare(&grouped).await;
    let retention = Retention {
        uplink_history: 5,
        event_history: 3,
        status_f_port: 111,
    };
    for ev in group() {
        let mut tx = lorafleet::storage::begin_immediate(&one_by_one.app.db)
            .await
            .unwrap();
        apply_event(&mut tx, &ev, retention).await.unwrap();
        lorafleet::storage::commit(tx).await.unwrap();
    }
    let before = commits(&grouped).await;
    // At most two events outstanding: each is handed over while the one before commits, so
    // they form small groups that follow each other closely.
    let mut pending = std::collections::VecDeque::new();
    for ev in group() {
        pending.push_back(grouped.app.writer.submit(ev).await.unwrap());
        if pending.len() == 2 {
            pending.pop_front().unwrap().await.unwrap().unwrap();
        }
    }
    for done in pending {
        done.await.unwrap().unwrap();
    }
    let groups = commits(&grouped).await - before;
    assert!(groups > 3.0, "the events formed several groups: {groups}");
    for eui in [D1, D2, D3] {
        let a = comparable(one_by_one.device(eui).await);
        let b = comparable(grouped.device(eui).await);
        assert_eq!(a, b, "device {eui}");
        let path = format!("/api/devices/{eui}/uplinks?limit=100");
        let a = comparable(one_by_one.get_json(&path).await);
        let b = comparable(grouped.get_json(&path).await);
        assert_eq!(a, b, "uplinks of {eui}");
    }
}

/// The writer's commits so far (`lorafleet_ingest_commits_total`).
async fn commits(t: &TestApp) -> f64 {
    let text = t
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("lorafleet_ingest_commits_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// An uplink of `eui` at `time` heard at `rssi`, with ChirpStack's JSON changed by `edit`.
fn uplink_at(
    eui: &str,
    f_cnt: u32,
    time: &str,
    rssi: i64,
    edit: impl Fn(&mut Value),
) -> IntegrationEvent {
    let mut json: Value = serde_json::from_slice(&v4_uplink_json(eui, 2, f_cnt, &[1])).unwrap();
    json["time"] = time.into();
    json["rxInfo"][0]["rssi"] = rssi.into();
    edit(&mut json);
    decode(
        "up",
        Encoding::Json,
        &serde_json::to_vec(&json).unwrap(),
        lorafleet::config::ChirpstackVersion::V4,
        lorafleet::config::NetworkKind::None,
    )
    .unwrap()
    .unwrap()
}

/// A group whose uplinks leave most devices' identity as stored (on SQLite they take the
/// statement that moves only last_seen and the link) among others that rename a device, change
/// its tags, bring a removed one back or add a new one, and frames older than the newest one
/// stored: stored as one by one stores them.
#[tokio::test]
async fn a_group_that_changes_some_identities_is_stored_as_one_by_one() {
    const A: &str = "7a000000000000a1";
    const B: &str = "7a000000000000b1";
    const C: &str = "7a000000000000c1";
    const D: &str = "7a000000000000d1";
    const E: &str = "7a000000000000e1";
    const F: &str = "7a000000000000f1";
    let t0 = "2026-11-27T10:00:00.000Z";
    let (t1, t2, t_old) = (
        "2026-11-27T10:00:05.000Z",
        "2026-11-27T10:00:09.000Z",
        "2026-11-27T09:59:00.000Z",
    );
    let same = |_: &mut Value| {};
    let events = || {
        vec![
            uplink_at(A, 1, t1, -60, same),
            uplink_at(B, 1, t1, -61, |j| {
                j["deviceInfo"]["deviceName"] = "renamed".into()
            }),
            uplink_at(A, 2, t_old, -99, same),
            uplink_at(C, 1, t1, -62, same),
            uplink_at(D, 1, t1, -63, same),
            uplink_at(E, 1, t1, -64, |j| {
                j["deviceInfo"]["tags"] = serde_json::json!({"site": "south"})
            }),
            uplink_at(F, 1, t1, -65, |j| {
                let info = j["deviceInfo"].as_object_mut().unwrap();
                info.remove("deviceName");
                info.remove("tags");
                j.as_object_mut().unwrap().remove("devAddr");
            }),
            uplink_at(B, 2, t2, -66, |j| {
                j["deviceInfo"]["deviceName"] = "renamed".into()
            }),
            uplink_at(A, 3, t2, -67, same),
            uplink_at(A, 4, t2, -68, same),
        ]
    };
    let retention = Retention {
        uplink_history: 50,
        event_history: 20,
        status_f_port: 111,
    };
    let one_by_one = spawn(|_| {}, None).await;
    let grouped = spawn(|_| {}, None).await;
    for t in [&one_by_one, &grouped] {
        for (i, eui) in [A, B, C, E, F].into_iter().enumerate() {
            let ev = uplink_at(eui, 0, t0, -50 - i as i64, same);
            t.app.writer.commit(ev).await.unwrap();
        }
        let c: DevEui = C.parse().unwrap();
        assert!(
            lorafleet::storage::devices::remove(&t.app.db, c, "test", t0)
                .await
                .unwrap()
        );
    }
    for ev in events() {
        let mut tx = lorafleet::storage::begin_immediate(&one_by_one.app.db)
            .await
            .unwrap();
        apply_event(&mut tx, &ev, retention).await.unwrap();
        lorafleet::storage::commit(tx).await.unwrap();
    }
    // Queued before the writer task runs: one group.
    let mut pending = Vec::new();
    for ev in events() {
        pending.push(grouped.app.writer.submit(ev).await.unwrap());
    }
    for done in pending {
        done.await.unwrap().unwrap();
    }
    for eui in [A, B, C, D, E, F] {
        let a = comparable(one_by_one.device(eui).await);
        let b = comparable(grouped.device(eui).await);
        assert_eq!(a, b, "device {eui}");
    }
    // The comparison has something to compare: the newest frame's link, the old frame ignored.
    let a = grouped.device(A).await.to_string();
    assert!(a.contains("-68") && !a.contains("-99"), "{a}");
    let b = grouped.device(B).await.to_string();
    assert!(b.contains("renamed") && b.contains("-66"), "{b}");
    let e = grouped.device(E).await.to_string();
    assert!(e.contains("south"), "{e}");
    let f = grouped.device(F).await.to_string();
    assert!(
        f.contains(&format!("meter-{F}")) && f.contains("-65"),
        "{f}"
    );
    let c = grouped.device(C).await.to_string();
    assert!(c.contains("reappeared"), "{c}");
}

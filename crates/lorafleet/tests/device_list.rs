//! `GET /api/devices` at fleet scale (issue 10 item 4): every filter, every sort order in both
//! directions, the keyset cursor walked while devices keep sending, and the 400s naming the
//! parameter.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use common::*;
use serde_json::{json, Value};

/// One device's uplink, the way ChirpStack v4 posts it.
struct Up<'a> {
    eui: String,
    name: String,
    app: &'a str,
    profile: &'a str,
    tags: Value,
    at: DateTime<Utc>,
    rssi: i64,
    snr: f64,
    f_cnt: u32,
    f_port: Option<u32>,
}

impl<'a> Up<'a> {
    fn new(i: usize, at: DateTime<Utc>) -> Up<'a> {
        Up {
            eui: format!("70b3d5000000{i:04x}"),
            name: format!("meter-{i:04}"),
            app: "meters",
            profile: "class-a",
            tags: json!({"site": "north"}),
            at,
            rssi: -60 - (i as i64 % 50),
            snr: 10.0 - (i % 20) as f64 / 2.0,
            f_cnt: 1,
            f_port: Some(2),
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut up = json!({
            "deduplicationId": format!("{}-{}-{}", self.eui, self.f_cnt, self.at.timestamp_millis()),
            "time": self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "deviceInfo": {
                "applicationId": format!("id-{}", self.app),
                "applicationName": self.app,
                "deviceProfileId": format!("id-{}", self.profile),
                "deviceProfileName": self.profile,
                "deviceName": self.name,
                "devEui": self.eui,
                "tags": self.tags,
            },
            "devAddr": "01fa2b3c",
            "dr": 5,
            "fCnt": self.f_cnt,
            "data": "AQI=",
            "rxInfo": [{"gatewayId": "0016c001ff10d3f6", "rssi": self.rssi, "snr": self.snr}],
            "txInfo": {"frequency": 868100000}
        });
        if let Some(p) = self.f_port {
            up["fPort"] = json!(p);
        }
        up.to_string().into_bytes()
    }

    async fn send(&self, t: &TestApp) {
        let r = t.ingest("up", "application/json", self.body()).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

async fn list(t: &TestApp, query: &str) -> Value {
    let r = t
        .get(&format!("/api/devices?{query}"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn euis(v: &Value) -> Vec<String> {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dev_eui"].as_str().unwrap().to_string())
        .collect()
}

fn base_time() -> DateTime<Utc> {
    "2026-11-27T10:00:00Z".parse().unwrap()
}

/// A small varied fleet: two applications, two models (one by tag), three sites, versions.
async fn fleet(t: &TestApp) {
    for i in 0..12 {
        let mut up = Up::new(i, base_time() + Duration::minutes(i as i64));
        if i % 2 == 1 {
            up.app = "trackers";
            up.profile = "Tracker Profile";
        }
        if i % 3 == 0 {
            up.tags = json!({"site": "south", "model": "sim-tracker"});
        }
        up.send(t).await;
    }
    // Versions: 1.3.0 (semver) on 0..4, raw 0x02 without a known type on 4..6.
    for i in 0..6 {
        let (raw, vt) = if i < 4 {
            (0x0001_0300, Some(1))
        } else {
            (2, None)
        };
        crate::on_db!(&t.app.db, p => sqlx::query("UPDATE devices SET running_version = $1, versioning_type = $2, battery = $3 WHERE dev_eui = $4")
            .bind(raw)
            .bind(vt)
            .bind(10.0 * i as f64)
            .bind(format!("70b3d5000000{i:04x}"))
            .execute(p)
            .await
            .map(|_| ())
            .unwrap());
    }
}

#[tokio::test]
async fn each_filter_selects_what_it_names() {
    let t = spawn(|_| {}, None).await;
    fleet(&t).await;
    let count = |v: &Value| v["total"].as_i64().unwrap();
    assert_eq!(count(&list(&t, "").await), 12);
    // application: by name or id, any case.
    assert_eq!(count(&list(&t, "application=trackers").await), 6);
    assert_eq!(count(&list(&t, "application=TRACKERS").await), 6);
    assert_eq!(count(&list(&t, "application=id-meters").await), 6);
    // model: the tag wins over the profile name; case-insensitive.
    let m = list(&t, "model=SIM-TRACKER").await;
    assert_eq!(euis(&m).len(), 4, "{m}");
    assert!(m["devices"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["model"] == "sim-tracker"));
    // 1, 5, 7, 11 are trackers by profile (3 and 9 have the model tag).
    assert_eq!(count(&list(&t, "model=tracker%20profile").await), 4);
    // tag=key:value
    assert_eq!(count(&list(&t, "tag=site:south").await), 4);
    assert_eq!(count(&list(&t, "tag=site:north").await), 8);
    assert_eq!(count(&list(&t, "tag=site:west").await), 0);
    // version: as shown, or raw (decimal, 0x hex).
    assert_eq!(count(&list(&t, "version=1.3.0").await), 4);
    assert_eq!(count(&list(&t, "version=66304").await), 4);
    assert_eq!(count(&list(&t, "version=0x00000002").await), 2);
    assert_eq!(count(&list(&t, "version=0x00000002%20raw").await), 2);
    assert_eq!(count(&list(&t, "version=9.9.9").await), 0);
    // seen_before / seen_after (devices i were seen at base + i minutes).
    assert_eq!(count(&list(&t, "seen_after=2026-11-27T10:05:30Z").await), 6);
    assert_eq!(
        count(&list(&t, "seen_before=2026-11-27T10:02:30Z").await),
        3
    );
    assert_eq!(
        count(
            &list(
                &t,
                "seen_after=2026-11-27T10:02:30Z&seen_before=2026-11-27T10:05:30Z"
            )
            .await
        ),
        3
    );
    // Filters combine.
    assert_eq!(
        count(&list(&t, "application=trackers&tag=site:south").await),
        2
    );
    // search: 3+ characters through the trigram index, shorter ones by substring; any case.
    assert_eq!(
        euis(&list(&t, "search=METER-0007").await),
        ["70b3d50000000007"]
    );
    assert_eq!(
        count(&list(&t, "search=track").await),
        6,
        "application name"
    );
    assert_eq!(
        euis(&list(&t, "search=11").await),
        ["70b3d5000000000b"],
        "meter-0011"
    );
    assert_eq!(count(&list(&t, "search=70b3d5").await), 12);
    // The index follows a rename.
    let mut up = Up::new(4, base_time() + Duration::minutes(30));
    up.name = "boiler-room".into();
    up.send(&t).await;
    assert_eq!(euis(&list(&t, "search=boiler").await), ["70b3d50000000004"]);
    assert_eq!(count(&list(&t, "search=meter-0004").await), 0);
}

#[tokio::test]
async fn status_tells_online_offline_and_never_seen() {
    let t = spawn(|c| c.devices.offline_after_s = Some(600), None).await;
    let now = Utc::now();
    Up::new(1, now - Duration::seconds(30)).send(&t).await;
    Up::new(2, now - Duration::seconds(3600)).send(&t).await;
    crate::on_db!(&t.app.db, p => sqlx::query("INSERT INTO devices (dev_eui, name, created_at) VALUES ('70b3d50000000003', 'listed', '2026-01-01T00:00:00Z')")
        .execute(p)
        .await
        .map(|_| ())
        .unwrap());
    let all = list(&t, "").await;
    assert_eq!(all["offline_after_s"], 600);
    let by: HashMap<String, String> = all["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["dev_eui"].as_str().unwrap().into(),
                d["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(by["70b3d50000000001"], "online");
    assert_eq!(by["70b3d50000000002"], "offline");
    assert_eq!(by["70b3d50000000003"], "never_seen");
    assert_eq!(euis(&list(&t, "status=online").await), ["70b3d50000000001"]);
    assert_eq!(
        euis(&list(&t, "status=offline").await),
        ["70b3d50000000002"]
    );
    assert_eq!(
        euis(&list(&t, "status=never_seen").await),
        ["70b3d50000000003"]
    );
}

/// The list's `total` unfiltered and with `status=online`.
async fn totals(t: &TestApp) -> (i64, i64) {
    let all = list(t, "").await["total"].as_i64().unwrap();
    let online = list(t, "status=online").await["total"].as_i64().unwrap();
    (all, online)
}

/// `total` without a filter comes from a count the devices' triggers keep, and `status=online`
/// from it less the devices not heard since: both must follow every way a device joins or
/// leaves the list, as COUNT(*) would.
#[tokio::test]
async fn totals_follow_devices_added_removed_and_back() {
    let t = spawn(|c| c.devices.offline_after_s = Some(600), None).await;
    let now = Utc::now();
    assert_eq!(totals(&t).await, (0, 0));
    for i in 1..=3 {
        Up::new(i, now - Duration::seconds(30)).send(&t).await;
    }
    Up::new(4, now - Duration::seconds(3600)).send(&t).await;
    assert_eq!(totals(&t).await, (4, 3));
    let r = t
        .delete("/api/devices/70b3d50000000002")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(totals(&t).await, (3, 2));
    // Heard again: back on the list.
    let mut up = Up::new(2, now - Duration::seconds(10));
    up.f_cnt = 2;
    up.send(&t).await;
    assert_eq!(totals(&t).await, (4, 3));
    // Never seen (listed by the network server), then more than PostgreSQL keeps as deltas
    // before folding them: the total stays exact across the fold.
    let rows: Vec<String> = (0..300)
        .map(|i| format!("('70b3d5ff0000{i:04x}', 'never-{i}', '2026-01-01T00:00:00Z')"))
        .collect();
    let sql = format!(
        "INSERT INTO devices (dev_eui, name, created_at) VALUES {}",
        rows.join(", ")
    );
    execute(&t, &sql).await;
    assert_eq!(totals(&t).await, (304, 3));
    assert_eq!(totals(&t).await, (304, 3));
    let counted: i64 = crate::on_db!(&t.app.db, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM devices WHERE removed_at IS NULL")
        .fetch_one(p)
        .await
        .unwrap());
    assert_eq!(counted, 304);
}

/// `model=` alone takes its `total` from the per-model counts the devices' triggers keep
/// (migration 20261210120000): it must follow every way a device's model changes (a `model`
/// tag, the device-profile name) and every way a device leaves or joins the list, and agree
/// with the devices the same filter lists, in any case of the model's name.
#[tokio::test]
async fn model_totals_follow_tags_profiles_removal_and_return() {
    let t = spawn(|_| {}, None).await;
    fleet(&t).await;
    let model_total = |model: &'static str| {
        let t = &t;
        async move {
            let v = list(t, &format!("model={model}&limit=1000")).await;
            let listed = euis(&v).len() as i64;
            assert_eq!(v["total"].as_i64().unwrap(), listed, "model={model}: {v}");
            listed
        }
    };
    let (tracker, sim, class_a) = ("tracker%20profile", "sim-tracker", "CLASS-A");
    assert_eq!(model_total(sim).await, 4);
    assert_eq!(model_total(tracker).await, 4);
    assert_eq!(model_total(class_a).await, 4);
    // Device 3 (a tracker by profile, sim-tracker by tag) loses its tag; device 2 gets one.
    let mut up = Up::new(3, base_time() + Duration::minutes(30));
    (up.app, up.profile, up.f_cnt) = ("trackers", "Tracker Profile", 2);
    up.send(&t).await;
    let mut up = Up::new(2, base_time() + Duration::minutes(31));
    (up.tags, up.f_cnt) = (json!({"model": "Valve"}), 2);
    up.send(&t).await;
    assert_eq!((model_total(sim).await, model_total(tracker).await), (3, 5));
    assert_eq!(
        (model_total("valve").await, model_total(class_a).await),
        (1, 3)
    );
    // Device 4 moves to another profile.
    let mut up = Up::new(4, base_time() + Duration::minutes(32));
    (up.profile, up.f_cnt) = ("Tracker Profile", 2);
    up.send(&t).await;
    assert_eq!(
        (model_total(tracker).await, model_total(class_a).await),
        (6, 2)
    );
    // Removed, then heard again.
    let r = t
        .delete("/api/devices/70b3d50000000001")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(model_total(tracker).await, 5);
    let mut up = Up::new(1, base_time() + Duration::minutes(33));
    (up.app, up.profile, up.f_cnt) = ("trackers", "Tracker Profile", 2);
    up.send(&t).await;
    assert_eq!(model_total(tracker).await, 6);
    // A model no device has, and more devices of one model than PostgreSQL keeps as deltas
    // before folding them: the total stays exact across the fold.
    assert_eq!(model_total("pump").await, 0);
    let rows: Vec<String> = (0..300)
        .map(|i| format!("('70b3d5ff0000{i:04x}', 'pump-{i}', 'pump', '2026-01-01T00:00:00Z')"))
        .collect();
    let sql = format!(
        "INSERT INTO devices (dev_eui, name, device_profile_name, created_at) VALUES {}",
        rows.join(", ")
    );
    execute(&t, &sql).await;
    assert_eq!(model_total("PUMP").await, 300);
    assert_eq!(model_total("pump").await, 300);
    crate::on_db!(&t.app.db, p => sqlx::query(
        "DELETE FROM devices WHERE dev_eui LIKE '70b3d5ff%' AND name < 'pump-2'")
        .execute(p)
        .await
        .map(|_| ())
        .unwrap());
    assert_eq!(model_total("pump").await, 300 - 112);
}

#[tokio::test]
async fn offline_by_default_is_three_uplink_intervals() {
    let t = spawn(|_| {}, None).await;
    let now = Utc::now();
    // One device sending every 100 s: offline after 300 s without an uplink.
    for k in 0..5u32 {
        let mut up = Up::new(1, now - Duration::seconds(1000 - 100 * k as i64));
        up.f_cnt = k;
        up.send(&t).await;
    }
    let v = list(&t, "").await;
    assert_eq!(v["offline_after_s"], 300, "{v}");
    assert_eq!(v["devices"][0]["status"], "offline");
}

#[tokio::test]
async fn every_sort_orders_both_ways() {
    let t = spawn(|_| {}, None).await;
    fleet(&t).await;
    for (sort, field) in [
        ("last_seen", "last_seen"),
        ("name", "name"),
        ("dev_eui", "dev_eui"),
        ("running_version", "running_version"),
        ("rssi", "rssi"),
        ("snr", "snr"),
        ("battery", "battery"),
    ] {
        for order in ["asc", "desc"] {
            let v = list(&t, &format!("sort={sort}&order={order}&limit=100")).await;
            let rows = v["devices"].as_array().unwrap();
            assert_eq!(rows.len(), 12);
            let key = |d: &Value| -> (f64, String) {
                let x = if field == "running_version" {
                    &d[field]["raw"]
                } else {
                    &d[field]
                };
                let n = x.as_f64().unwrap_or(if x.is_string() { 0.0 } else { -1e9 });
                let s = x.as_str().unwrap_or("").to_string();
                (n, s)
            };
            for w in rows.windows(2) {
                let (a, b) = (key(&w[0]), key(&w[1]));
                let ordered = match a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)) {
                    std::cmp::Ordering::Equal => {
                        let (ea, eb) = (w[0]["dev_eui"].as_str(), w[1]["dev_eui"].as_str());
                        if order == "asc" {
                            ea < eb
                        } else {
                            ea > eb
                        }
                    }
                    o => {
                        o == if order == "asc" {
                            std::cmp::Ordering::Less
                        } else {
                            std::cmp::Ordering::Greater
                        }
                    }
                };
                assert!(ordered, "sort={sort} order={order}: {} then {}", w[0], w[1]);
            }
        }
    }
    // Defaults: newest first; names A to Z.
    assert_eq!(euis(&list(&t, "limit=1").await), ["70b3d5000000000b"]);
    assert_eq!(
        euis(&list(&t, "sort=name&limit=1").await),
        ["70b3d50000000000"]
    );
    // RSSI and SNR are the last uplink's.
    let d = &list(&t, "search=meter-0003").await["devices"][0];
    assert_eq!(d["rssi"], -63);
    assert_eq!(d["snr"], 8.5);
}

/// Walks every page by cursor while devices keep sending (each send moves a device to the top of
/// the last_seen order): every device comes back exactly once. Paging by offset does not promise
/// that, which is what the cursor is for.
#[tokio::test]
async fn walking_by_cursor_returns_each_device_once_while_devices_send() {
    let t = spawn(|_| {}, None).await;
    let n = 120;
    for i in 0..n {
        Up::new(i, base_time() + Duration::seconds(i as i64))
            .send(&t)
            .await;
    }
    for (sort, order) in [
        ("last_seen", "desc"),
        ("last_seen", "asc"),
        ("rssi", "desc"),
        ("name", "asc"),
    ] {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut cursor: Option<String> = None;
        let mut sent = 0u32;
        let mut pages = 0;
        loop {
            let mut q = format!("sort={sort}&order={order}&limit=7");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let page = list(&t, &q).await;
            for e in euis(&page) {
                *seen.entry(e).or_default() += 1;
            }
            pages += 1;
            // Between pages three devices send: one already listed, one not yet, one anywhere;
            // each with a new RSSI, so the rssi order moves too.
            for i in [pages * 7 % n, (pages * 7 + 40) % n, (pages * 13 + 3) % n] {
                sent += 1;
                let mut up = Up::new(i, Utc::now() + Duration::seconds(i64::from(sent)));
                up.rssi = -30 - i64::from(sent % 90);
                up.f_cnt = 1000 + sent;
                up.send(&t).await;
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
            assert!(pages < 100, "the walk does not end");
        }
        assert_eq!(seen.len(), n, "sort={sort} order={order}: every device");
        let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            twice.is_empty(),
            "sort={sort} order={order}: returned twice {twice:?}"
        );
    }
    // offset keeps working.
    let a = euis(&list(&t, "sort=dev_eui&limit=10&offset=0").await);
    let b = euis(&list(&t, "sort=dev_eui&limit=10&offset=10").await);
    assert_eq!(a.len() + b.len(), 20);
    assert!(a.last().unwrap() < b.first().unwrap());
}

/// A search broader than `devices.search_count_cap` is paged by walking the sort order and
/// testing each device: walked by cursor while devices send, it still returns each match once.
#[tokio::test]
async fn walking_a_broad_search_returns_each_match_once_while_devices_send() {
    walk_a_search_while_devices_send(10).await;
}

/// A search within the cap is paged from the matches its count read through the trigram index:
/// walked by cursor while devices send, it returns each match once too.
#[tokio::test]
async fn walking_a_search_within_the_cap_returns_each_match_once_while_devices_send() {
    walk_a_search_while_devices_send(1000).await;
}

/// A page of a search within the cap is taken from the matches its count read: a device listed
/// on an earlier page that now sorts later, and one not yet listed that now sorts earlier, are
/// each listed once, where the walk placed them when it began.
#[tokio::test]
async fn a_search_within_the_cap_lists_a_device_that_moved_during_the_walk_once() {
    let t = spawn(|_| {}, None).await;
    for i in 0..20 {
        Up::new(i, base_time() + Duration::seconds(i as i64))
            .send(&t)
            .await;
    }
    let q = "search=meter&sort=rssi&order=asc&limit=5";
    let first = list(&t, q).await;
    assert_eq!(first["total"], 20, "{first}");
    // RSSI -60 - i: the first page is devices 19 to 15.
    let mut seen = euis(&first);
    assert_eq!(seen[0], Up::new(19, base_time()).eui);
    for (i, rssi) in [(19, -10), (0, -100)] {
        let mut up = Up::new(i, base_time() + Duration::minutes(5));
        (up.rssi, up.f_cnt) = (rssi, 2);
        up.send(&t).await;
    }
    let mut cursor = first["next_cursor"].as_str().unwrap().to_string();
    loop {
        let page = list(&t, &format!("{q}&cursor={cursor}")).await;
        seen.extend(euis(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let mut want: Vec<String> = (0..20).map(|i| Up::new(i, base_time()).eui).collect();
    want.reverse();
    assert_eq!(
        seen, want,
        "each device once, in the order the walk began with"
    );
}

/// 100 of 120 devices match; `cap` below that walks the sort order, above it pages the matches.
async fn walk_a_search_while_devices_send(cap: u32) {
    let t = spawn(|c| c.devices.search_count_cap = cap, None).await;
    let n = 120;
    for i in 0..n {
        Up::new(i, base_time() + Duration::seconds(i as i64))
            .send(&t)
            .await;
    }
    // meter-0000 .. meter-0099: 100 of the 120.
    let matching: Vec<String> = (0..100).map(|i| Up::new(i, base_time()).eui).collect();
    for (sort, order) in [("last_seen", "desc"), ("rssi", "asc"), ("name", "desc")] {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut cursor: Option<String> = None;
        let mut sent = 0u32;
        let mut pages = 0;
        loop {
            let mut q = format!("search=METER-00&sort={sort}&order={order}&limit=7");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let page = list(&t, &q).await;
            if cursor.is_none() {
                assert_eq!(page["total"], cap.min(100), "{q}: {page}");
                assert_eq!(page["total_is_lower_bound"], cap < 100, "{q}: {page}");
            }
            for e in euis(&page) {
                *seen.entry(e).or_default() += 1;
            }
            pages += 1;
            // Between pages devices send, matching ones and others, listed and not yet.
            for i in [pages * 7 % n, (pages * 7 + 40) % n, (pages * 13 + 3) % n] {
                sent += 1;
                let mut up = Up::new(i, Utc::now() + Duration::seconds(i64::from(sent)));
                up.rssi = -30 - i64::from(sent % 90);
                up.f_cnt = 1000 + sent;
                up.send(&t).await;
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
            assert!(pages < 100, "the walk does not end");
        }
        let mut got: Vec<String> = seen.keys().cloned().collect();
        got.sort();
        assert_eq!(
            got, matching,
            "sort={sort} order={order}: every match, nothing else"
        );
        let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            twice.is_empty(),
            "sort={sort} order={order}: returned twice {twice:?}"
        );
    }
    // A selective search is counted exactly.
    let one = list(&t, "search=meter-0042").await;
    assert_eq!(one["total"], 1, "{one}");
    assert_eq!(one["total_is_lower_bound"], false, "{one}");
}

#[tokio::test]
async fn a_wrong_parameter_is_a_400_naming_it() {
    let t = spawn(|_| {}, None).await;
    fleet(&t).await;
    let other_sort = list(&t, "sort=name&limit=2").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    for (query, field) in [
        ("sort=colour", "sort"),
        ("order=up", "order"),
        ("status=asleep", "status"),
        ("tag=site", "tag"),
        ("tag=:x", "tag"),
        ("seen_before=yesterday", "seen_before"),
        ("seen_after=2026-13-01", "seen_after"),
        ("cursor=not-a-cursor", "cursor"),
        (&format!("sort=last_seen&cursor={other_sort}"), "cursor"),
        ("limit=0", "limit"),
        ("offset=-1", "offset"),
    ] {
        let r = t
            .get(&format!("/api/devices?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn the_openapi_document_names_every_list_parameter() {
    let t = spawn(|_| {}, None).await;
    let doc = t.get_json("/api/openapi.json").await;
    let params: Vec<&str> = doc["paths"]["/api/devices"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in lorafleet::devices::filter::PARAMS
        .iter()
        .chain(&["sort", "order", "cursor", "limit", "offset"])
    {
        assert!(params.contains(name), "{name} in {params:?}");
    }
    let summary = &doc["components"]["schemas"]["DeviceSummary"]["properties"];
    for field in ["model", "status", "rssi", "snr", "battery"] {
        assert!(summary[field].is_object(), "DeviceSummary.{field}");
    }
    assert!(doc["components"]["schemas"]["DeviceList"]["properties"]["next_cursor"].is_object());
    assert!(doc["components"]["schemas"]["DeviceFilterParams"].is_object());
}

/// Runs `sql` on the test's database directly: rows written past the app, as a bulk load or
/// another tool would, which the devices' triggers must still count.
async fn execute(t: &TestApp, sql: &str) {
    crate::on_db!(&t.app.db, p => sqlx::query(sql)
        .execute(p)
        .await
        .map(|_| ())
        .unwrap());
}

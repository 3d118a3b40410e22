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

/// One device of [`search_fleet`], as a brute-force filter and sort see it.
#[derive(Debug, Clone)]
struct Row {
    eui: String,
    name: String,
    app: Option<String>,
    addr: Option<String>,
    last_seen: Option<String>,
    rssi: Option<i64>,
    removed: bool,
}

impl Row {
    fn matches(&self, search: &str) -> bool {
        let s = search.to_lowercase();
        !self.removed
            && [
                Some(&self.eui),
                Some(&self.name),
                self.app.as_ref(),
                self.addr.as_ref(),
            ]
            .into_iter()
            .flatten()
            .any(|c| c.to_lowercase().contains(&s))
    }
}

/// 300 devices written straight into the table: names, applications and DevAddrs that searches
/// select many or few of, times and RSSIs shared by several devices (the cursor's ties), some
/// never seen, some removed.
async fn search_fleet(t: &common::TestApp) -> Vec<Row> {
    let mut rows = Vec::new();
    for i in 0..300u32 {
        let r = Row {
            eui: format!("70b3d5{:010x}", u64::from(i) * 7919),
            name: match i % 5 {
                0 => format!("Meter-{i:03}"),
                1 => format!("meter {i:03} north"),
                2 => format!("Tracker_{i:03}"),
                3 => format!("valve-{i:03}"),
                _ => format!("Gateway shelf {}", i % 17),
            },
            app: (i % 7 != 0)
                .then(|| ["north-field", "South Field", "Depot"][i as usize % 3].into()),
            addr: (i % 4 != 0).then(|| format!("{:08x}", i * 104_729)),
            last_seen: (i % 11 != 0)
                .then(|| format!("2026-11-27T10:{:02}:{:02}.000Z", (i / 6) % 60, (i % 6) * 10)),
            rssi: (i % 13 != 0).then(|| -60 - i64::from(i % 23)),
            removed: i % 37 == 5,
        };
        let text = |v: &Option<String>| v.as_ref().map_or("NULL".into(), |s| format!("'{s}'"));
        let sql = format!(
            "INSERT INTO devices (dev_eui, name, application_name, dev_addr, last_seen, rssi,
                removed_at, created_at)
             VALUES ('{}', '{}', {}, {}, {}, {}, {}, '2026-11-27T09:00:00.000Z')",
            r.eui,
            r.name,
            text(&r.app),
            text(&r.addr),
            text(&r.last_seen),
            r.rssi.map_or("NULL".into(), |v| v.to_string()),
            if r.removed {
                "'2026-11-27T09:30:00.000Z'"
            } else {
                "NULL"
            },
        );
        crate::on_db!(&t.app.db, p => sqlx::query(&sql).execute(p).await.map(|_| ())).unwrap();
        rows.push(r);
    }
    rows
}

/// The list's order by brute force: the sort key (a missing value below every real one), then
/// the DevEUI, both turned round when descending.
fn brute_force(rows: &[Row], search: &str, sort: &str, desc: bool) -> Vec<String> {
    let mut m: Vec<&Row> = rows.iter().filter(|r| r.matches(search)).collect();
    m.sort_by(|a, b| {
        let key = match sort {
            "last_seen" => a
                .last_seen
                .clone()
                .unwrap_or_default()
                .cmp(&b.last_seen.clone().unwrap_or_default()),
            "name" => a.name.cmp(&b.name),
            "rssi" => a
                .rssi
                .unwrap_or(-1_000_000)
                .cmp(&b.rssi.unwrap_or(-1_000_000)),
            _ => std::cmp::Ordering::Equal,
        };
        let o = key.then_with(|| a.eui.cmp(&b.eui));
        if desc {
            o.reverse()
        } else {
            o
        }
    });
    m.into_iter().map(|r| r.eui.clone()).collect()
}

/// Percent-encodes a query value (every byte but letters and digits).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Searches that select many devices (walked along the sort order) and few (through the
/// trigram index) list exactly the devices and order a brute-force filter gives, page after
/// page by cursor and by offset; `total` is exact up to `devices.search_count_cap`, then the cap
/// with `total_is_lower_bound`.
#[tokio::test]
async fn broad_and_selective_searches_list_what_a_brute_force_filter_lists() {
    let cap = 25;
    let t = spawn(|c| c.devices.search_count_cap = cap, None).await;
    let rows = search_fleet(&t).await;
    let searches = [
        "meter",
        "METER",
        "70b3d5",
        "north",
        "field",
        "tracker_1",
        "shelf 1",
        "0a",
        "e",
        "-01",
        "meter-12",
        "Depot",
        "zz-nothing",
        "_",
        "70B3D500000",
    ];
    let mut broad = 0;
    let mut selective = 0;
    for search in searches {
        let want_total = rows.iter().filter(|r| r.matches(search)).count();
        if want_total > cap as usize {
            broad += 1;
        } else {
            selective += 1;
        }
        for (sort, desc) in [("last_seen", true), ("name", false), ("rssi", true)] {
            let want = brute_force(&rows, search, sort, desc);
            let order = if desc { "desc" } else { "asc" };
            let base = format!(
                "/api/devices?search={}&sort={sort}&order={order}",
                encode(search)
            );
            let mut got = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("{base}&limit=9");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let page = t.get_json(&path).await;
                if cursor.is_none() {
                    let lower = want_total > cap as usize;
                    let total = if lower { cap as usize } else { want_total };
                    assert_eq!(page["total"], total, "{path}: {page}");
                    assert_eq!(page["total_is_lower_bound"], lower, "{path}: {page}");
                }
                got.extend(euis(&page));
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
                assert!(got.len() <= rows.len(), "{path}: the walk does not end");
            }
            assert_eq!(got, want, "{base}: by cursor");
            // The same order by offset (a deep page is read as the index has it).
            let by_offset = t.get_json(&format!("{base}&limit=10&offset=10")).await;
            let expect: Vec<String> = want.iter().skip(10).take(10).cloned().collect();
            assert_eq!(euis(&by_offset), expect, "{base}: by offset");
        }
    }
    // Both plans were exercised.
    assert!(
        broad >= 4 && selective >= 4,
        "broad {broad}, selective {selective}"
    );
}

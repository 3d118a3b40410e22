//! Campaign leases: the claim, renewal and takeover SQL on the test's backend (SQLite, or
//! PostgreSQL with `LORAFLEET_TEST_BACKEND=postgres`), a step stored only while its instance
//! holds the lease, the runner's takeover as a new attempt in the campaign's log, and the
//! engine's answer cursor under out-of-order commits.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::{silent_peer, spawn_app, test_config, TestApp, FIXTURE};
use lorafleet::campaigns::{CampaignState, Stage};
use lorafleet::storage::campaigns::leases::{self, Claimed, Next, Previous, StepSave};
use std::sync::Arc;
use std::time::Instant;

use lorafleet::campaigns::lease_guard::{GuardedNetwork, Lease};
use lorafleet::network::{Downlink, Enqueued, Network, NetworkError, RemoteDevice};
use lorafleet::storage::campaigns::waves::{WaveState, WaveWrite};
use lorafleet::storage::campaigns::{HistoryNote, LogLine, PollOutcome, SentDownlink};
use serde_json::{json, Value};

const A: &str = "0102030405060708";

/// A running campaign due now, of the fuota-server v3 driver (pointed at a peer that never
/// answers, so a step of it fails "unavailable" and changes nothing but its log and poll).
async fn running_campaign(t: &TestApp) -> i64 {
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert!(status == 201 || status == 200, "{status} {img}");
    t.add_device(A, Some("profile-1"), Some(100_000)).await;
    let body = json!({
        "name": "leased", "firmware_id": img["id"], "devices": [A], "driver": "fuota-server-v3",
        "keys": {"gen_app_key": "0302030405060708090a0b0c0d0e0f10"},
        "multicast": {"class": "C", "dr": 5, "frequency": 868100000},
    });
    let r = t.post("/api/campaigns").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let started =
        lorafleet::storage::campaigns::set_running(&t.app.db, id, "2026-12-07T10:00:00.000Z")
            .await
            .unwrap();
    assert!(started);
    id
}

async fn app() -> TestApp {
    let url = silent_peer().await;
    spawn_app(test_config().with(|c| {
        c.fuota.server_v3.url = url;
        c.network.request_timeout_s = 1;
    }))
    .await
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

async fn claim(t: &TestApp, owner: &str, now: DateTime<Utc>, lease: i64) -> Option<Claimed> {
    leases::claim(&t.app.db, owner, now, now + secs(lease))
        .await
        .unwrap()
}

#[tokio::test]
async fn of_two_claimers_one_wins_and_the_other_finds_nothing() {
    let t = app().await;
    let id = running_campaign(&t).await;
    let now = Utc::now();
    // At once: PostgreSQL skips the row the other claimer locked, SQLite serialises them.
    let (a, b) = tokio::join!(claim(&t, "a", now, 30), claim(&t, "b", now, 30));
    let winners: Vec<_> = [a.clone(), b.clone()].into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "a: {a:?}, b: {b:?}");
    assert_eq!(
        winners[0],
        Claimed {
            id,
            attempt: 1,
            previous: None
        }
    );
    let winner = if a.is_some() { "a" } else { "b" };
    let loser = if a.is_some() { "b" } else { "a" };
    assert_eq!(claim(&t, loser, now + secs(29), 30).await, None, "held");
    assert!(leases::holds(&t.app.db, id, winner).await.unwrap());
    assert!(!leases::holds(&t.app.db, id, loser).await.unwrap());
    // The owner claims its own again without a new attempt.
    let again = claim(&t, winner, now + secs(1), 30).await.unwrap();
    assert_eq!((again.attempt, again.previous), (1, None));
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["lease_owner"], winner);
    assert_eq!(c["attempt"], 1);
    assert!(c["lease_until"].is_string(), "{c}");
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_over_as_a_new_attempt_and_a_renewed_one_is_not() {
    let t = app().await;
    let id = running_campaign(&t).await;
    let now = Utc::now();
    claim(&t, "a", now, 10).await.unwrap();
    // Renewed by its owner at 8 s, to 18 s: b finds nothing at 12 s.
    assert_eq!(
        leases::renew_all(&t.app.db, "a", now + secs(18))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        leases::renew_all(&t.app.db, "b", now + secs(60))
            .await
            .unwrap(),
        0,
        "b holds nothing to renew"
    );
    assert_eq!(claim(&t, "b", now + secs(12), 10).await, None);
    // a stops renewing: at 19 s its lease has lapsed and b takes the campaign over.
    let taken = claim(&t, "b", now + secs(19), 10).await.unwrap();
    assert_eq!(
        taken,
        Claimed {
            id,
            attempt: 2,
            previous: Some(Previous {
                owner: "a".into(),
                released: false
            })
        }
    );
    // a's renewal no longer touches it, and a cannot claim it back while b holds it.
    assert_eq!(
        leases::renew_all(&t.app.db, "a", now + secs(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(claim(&t, "a", now + secs(20), 10).await, None);
    // A graceful stop releases: the next owner needs no lapse, and knows it was released.
    assert_eq!(leases::release_all(&t.app.db, "b").await.unwrap(), 1);
    let resumed = claim(&t, "c", now + secs(21), 10).await.unwrap();
    assert_eq!(resumed.attempt, 3);
    assert_eq!(
        resumed.previous,
        Some(Previous {
            owner: "b".into(),
            released: true
        })
    );
}

#[tokio::test]
async fn a_campaign_not_due_or_not_running_is_not_claimed() {
    let t = app().await;
    let id = running_campaign(&t).await;
    let now = Utc::now();
    lorafleet::storage::campaigns::set_poll_result(&t.app.db, id, now + secs(5), None)
        .await
        .unwrap();
    assert_eq!(claim(&t, "a", now, 30).await, None, "not due");
    assert_eq!(claim(&t, "a", now + secs(6), 30).await.unwrap().id, id);
    let next = leases::next_claimable(&t.app.db, "b")
        .await
        .unwrap()
        .unwrap();
    assert!(next >= now + secs(29), "b waits for a's lease: {next}");
    lorafleet::storage::campaigns::finish(
        &t.app.db,
        id,
        CampaignState::Cancelled,
        None,
        Stage::Cancelled,
        "2026-12-07T10:00:00.000Z",
    )
    .await
    .unwrap();
    assert_eq!(claim(&t, "b", now + secs(60), 30).await, None, "over");
    assert!(
        !leases::holds(&t.app.db, id, "a").await.unwrap(),
        "an ended campaign's lease is released"
    );
}

fn save(at: &str, log: Vec<LogLine>, next: Next) -> StepSave<'_> {
    StepSave {
        at,
        started: true,
        log_before: log,
        outcome: None,
        log_after: Vec::new(),
        next,
        waves: None,
    }
}

fn step_with(line: &str, at: DateTime<Utc>) -> (String, Vec<LogLine>, Next) {
    let mut l = LogLine::info(line);
    l.at = at;
    (
        lorafleet::storage::fmt_time(at),
        vec![l],
        Next::Poll { at, error: None },
    )
}

async fn log_of(t: &TestApp, id: i64) -> Vec<String> {
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    c["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect()
}

/// At most once per attempt: a step of an owner whose lease was taken over stores nothing
/// (what it sent is the new attempt's to send again), the new owner's step is stored.
#[tokio::test]
async fn a_step_is_stored_only_while_its_instance_holds_the_lease() {
    let t = app().await;
    let id = running_campaign(&t).await;
    let now = Utc::now();
    claim(&t, "a", now, 3).await.unwrap();
    let (at, log, next) = step_with("a's step 1", now);
    let held = leases::save_step(&t.app.db, id, "a", now + secs(3), &save(&at, log, next))
        .await
        .unwrap();
    assert!(held);
    // a stalls past its lease; b takes over and steps; then a's late step comes back.
    claim(&t, "b", now + secs(4), 3).await.unwrap();
    let (at, log, next) = step_with("b's step", now + secs(4));
    assert!(
        leases::save_step(&t.app.db, id, "b", now + secs(7), &save(&at, log, next))
            .await
            .unwrap()
    );
    let (at, log, _) = step_with("a's late step 2", now + secs(5));
    let end = Next::End {
        state: CampaignState::Completed,
        error: None,
        device_stage: Stage::Failed,
    };
    let held = leases::save_step(&t.app.db, id, "a", now + secs(8), &save(&at, log, end))
        .await
        .unwrap();
    assert!(!held, "a no longer holds the campaign");
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "running", "a's end was dropped: {c}");
    assert_eq!(c["lease_owner"], "b");
    assert_eq!(c["attempt"], 2);
    let log = log_of(&t, id).await;
    assert!(log.contains(&"a's step 1".to_string()), "{log:?}");
    assert!(log.contains(&"b's step".to_string()), "{log:?}");
    assert!(!log.contains(&"a's late step 2".to_string()), "{log:?}");
}

/// What a step did to its devices (the commands it sent, their firmware history) and to the
/// campaign's waves is stored with the step: nothing of it when the lease was lost, all of it
/// in the holder's step.
#[tokio::test]
async fn a_lost_step_leaves_no_downlink_history_or_wave_change_behind() {
    let t = app().await;
    let id = running_campaign(&t).await;
    let now = Utc::now();
    claim(&t, "a", now, 3).await.unwrap();
    claim(&t, "b", now + secs(4), 3).await.unwrap();
    let eui: lorafleet::devices::DevEui = A.parse().unwrap();
    let outcome = PollOutcome {
        downlinks: vec![SentDownlink {
            dev_eui: eui,
            f_port: 200,
            data: vec![0x02, 0x00],
            confirmed: false,
            what: "McGroupSetupReq".into(),
            requested_at: now,
            answered_at: now,
            result: Ok((Some("q-1".into()), Some(7))),
        }],
        history: vec![HistoryNote {
            dev_eui: A.into(),
            at: now,
            version: None,
            outcome: Some("refused".into()),
            message: "campaign step's history line".into(),
        }],
        ..PollOutcome::default()
    };
    let pause = WaveWrite::Pause {
        states: vec![WaveState::Failed, WaveState::Pending],
        reason: "wave 1: 1 of 1 devices failed".into(),
    };
    let step = |owner_line: &'static str| {
        let (at, log, next) = step_with(owner_line, now + secs(5));
        (at, log, next)
    };
    let (at, log, next) = step("a's late step");
    let mut late = save(&at, log, next);
    late.outcome = Some(&outcome);
    late.waves = Some(pause.clone());
    assert!(!leases::save_step(&t.app.db, id, "a", now + secs(8), &late)
        .await
        .unwrap());
    let d = t.device(A).await;
    assert_eq!(d["downlinks"], json!([]), "{d}");
    assert_eq!(d["firmware_history"], json!([]), "{d}");
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "running", "the wave's pause was dropped: {c}");

    let (at, log, next) = step("b's step");
    let mut held = save(&at, log, next);
    held.outcome = Some(&outcome);
    held.waves = Some(pause);
    assert!(leases::save_step(&t.app.db, id, "b", now + secs(8), &held)
        .await
        .unwrap());
    let d = t.device(A).await;
    let downlinks = d["downlinks"].as_array().unwrap();
    assert_eq!(downlinks.len(), 1, "{d}");
    assert_eq!(
        (
            downlinks[0]["data_hex"].as_str(),
            downlinks[0]["state"].as_str()
        ),
        (Some("0200"), Some("enqueued")),
        "{d}"
    );
    assert_eq!(
        d["firmware_history"][0]["message"], "campaign step's history line",
        "{d}"
    );
    assert_eq!(d["firmware_history"][0]["campaign_id"], id, "{d}");
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "paused", "{c}");
    // The pause released the lease (the campaign waits for the operator, on no instance).
    assert!(c["lease_until"].is_null(), "{c}");
}

/// A network that counts what it was asked to send.
#[derive(Default)]
struct Counting {
    sent: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Network for Counting {
    fn kind(&self) -> lorafleet::config::NetworkKind {
        lorafleet::config::NetworkKind::ChirpstackV4
    }
    async fn enqueue(&self, _d: &Downlink) -> Result<Enqueued, NetworkError> {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Enqueued {
            network_ref: None,
            f_cnt: None,
        })
    }
    async fn list_devices(&self) -> Result<Vec<RemoteDevice>, NetworkError> {
        Ok(Vec::new())
    }
    async fn enqueue_multicast(&self, _g: &str, _p: u8, _d: &[u8]) -> Result<u32, NetworkError> {
        Ok(self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as u32)
    }
}

/// Each send of a step checks the campaign's lease: a step that runs longer than the lease
/// renews it as it sends (another instance cannot take the campaign over in the middle), and
/// an owner whose lease lapsed and was taken over sends nothing more, not even its next
/// fragment: at most one send per attempt.
#[tokio::test]
async fn every_send_checks_the_lease_so_a_long_step_keeps_it_and_a_lost_one_sends_nothing() {
    const LEASE: i64 = 3;
    let t = app().await;
    let id = running_campaign(&t).await;
    let length = std::time::Duration::from_secs(LEASE as u64);
    let network = Arc::new(Counting::default());
    let sent = || network.sent.load(std::sync::atomic::Ordering::SeqCst);
    let downlink = Downlink {
        dev_eui: A.parse().unwrap(),
        f_port: 200,
        data: vec![0x02],
        confirmed: false,
    };

    // a's step sends for twice its lease: the lease is renewed on the way, b never gets it.
    let claimed_at = Instant::now();
    claim(&t, "a", Utc::now(), LEASE).await.unwrap();
    let lease = Arc::new(Lease::new(
        t.app.db.clone(),
        id,
        "a",
        length,
        claimed_at + length,
    ));
    let a = GuardedNetwork::new(network.clone(), lease.clone());
    let mut n = 0;
    while claimed_at.elapsed() < length * 2 {
        a.enqueue_multicast("mc-1", 201, &[0x08]).await.unwrap();
        n += 1;
        assert!(
            claim(&t, "b", Utc::now(), LEASE).await.is_none(),
            "taken over mid-step"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sent(), n);

    // a stalls (sends nothing, its lease is not renewed): b takes over once it lapses...
    let stalled = Instant::now();
    let b = loop {
        if let Some(b) = claim(&t, "b", Utc::now(), LEASE).await {
            break b;
        }
        assert!(stalled.elapsed() < length * 3, "the lease never lapsed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(b.attempt, 2);
    // ...and a, back, is refused its next unicast and fragment: the network saw neither.
    assert!(a.enqueue(&downlink).await.is_err());
    assert!(a.enqueue_multicast("mc-1", 201, &[0x08]).await.is_err());
    assert!(lease.lost());
    assert_eq!(sent(), n, "nothing sent after the takeover");
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(
        (c["lease_owner"].as_str(), c["attempt"].as_i64()),
        (Some("b"), Some(2))
    );
}

/// The runner of an instance takes over a campaign whose owner's lease lapsed, says so in the
/// campaign's log with the attempt, and no longer steps it once another instance holds it.
#[tokio::test]
async fn the_runner_takes_over_a_lapsed_campaign_and_says_so() {
    let t = app().await;
    let id = running_campaign(&t).await;
    // Held by an instance whose lease ran out 10 s ago.
    let now = Utc::now();
    leases::claim(&t.app.db, "dead-instance", now, now - secs(10))
        .await
        .unwrap()
        .unwrap();
    lorafleet::campaigns::runner::run_due(&t.app).await.unwrap();
    let me = t.app.campaigns.instance.clone();
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["lease_owner"], me.as_str(), "{c}");
    assert_eq!(c["attempt"], 2);
    let log = log_of(&t, id).await;
    let said = format!("taken over from dead-instance by {me} (its lease lapsed), attempt 2");
    assert!(log.contains(&said), "{log:?}");
    // The silent FUOTA server made the step "unavailable": stored, the campaign runs on.
    assert_eq!(c["state"], "running");
    assert!(c["last_poll_error"].is_string(), "{c}");

    // Another instance takes it over: this runner leaves it alone, even when it is due.
    let later = Utc::now();
    lorafleet::storage::campaigns::set_poll_result(&t.app.db, id, later, None)
        .await
        .unwrap();
    leases::release_all(&t.app.db, &me).await.unwrap();
    claim(&t, "other-instance", later, 60).await.unwrap();
    let before = log_of(&t, id).await.len();
    lorafleet::campaigns::runner::run_due(&t.app).await.unwrap();
    assert_eq!(log_of(&t, id).await.len(), before, "not stepped here");
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(
        (c["lease_owner"].as_str(), c["attempt"].as_i64()),
        (Some("other-instance"), Some(3))
    );
}

/// Inserts an uplink with a chosen id (as a writer that took the id earlier and commits late).
async fn uplink_with_id(t: &TestApp, id: i64, f_port: i64) {
    crate::on_db!(&t.app.db, p => sqlx::query(
        "INSERT INTO uplinks (id, dev_eui, received_at, f_port, data) VALUES ($1, $2, '2026-12-07T10:00:00.000Z', $3, $4)",
    )
    .bind(id)
    .bind(A)
    .bind(f_port)
    .bind(vec![0x02u8, 0x01])
    .execute(p)
    .await
    .map(|_| ()))
    .unwrap();
}

fn run() -> lorafleet_engine::machine::Run {
    let at = Utc::now();
    lorafleet_engine::machine::Run {
        phase: lorafleet_engine::machine::Phase::Setup,
        mc_addr: [1, 2, 3, 4],
        mc_key: [7; 16],
        group: None,
        group_deleted: false,
        setup_deadline: at,
        session_start: None,
        next_fragment: 0,
        fragments_sent_at: None,
        verify_at: None,
        uplink_cursor: 100,
        recent_uplinks: Vec::new(),
        failure: None,
        adaptive: Default::default(),
    }
}

/// Under concurrent writers an uplink id may commit after a higher one: the engine still reads
/// it, reads no row twice, and moves its cursor past rows only once they are settled.
#[tokio::test]
async fn answers_committed_out_of_id_order_are_all_read_once() {
    let t = app().await;
    let db = &t.app.db;
    let mut run = run();
    let now = Utc::now();
    let read = |rows: Vec<lorafleet::storage::uplinks::StoredUplink>| {
        rows.iter().map(|r| r.id).collect::<Vec<_>>()
    };
    uplink_with_id(&t, 102, 200).await;
    uplink_with_id(&t, 103, 1).await; // not an answer port
    let got = lorafleet::engine::step::new_answers(db, &mut run, &[200, 201], now)
        .await
        .unwrap();
    assert_eq!(read(got), [102]);
    // 101 was taken before 102 and commits after it was read.
    uplink_with_id(&t, 101, 201).await;
    let got = lorafleet::engine::step::new_answers(db, &mut run, &[200, 201], now + secs(1))
        .await
        .unwrap();
    assert_eq!(read(got), [101], "the late row is read, 102 not again");
    assert_eq!(run.uplink_cursor, 100, "nothing settled yet");
    let got = lorafleet::engine::step::new_answers(db, &mut run, &[200, 201], now + secs(30))
        .await
        .unwrap();
    assert!(got.is_empty());
    assert_eq!(run.uplink_cursor, 102, "settled past both");
    assert!(run.recent_uplinks.is_empty());
    // The state carries the window through a save and a load.
    uplink_with_id(&t, 104, 200).await;
    let got = lorafleet::engine::step::new_answers(db, &mut run, &[200], now + secs(31))
        .await
        .unwrap();
    assert_eq!(read(got), [104]);
    let saved = lorafleet::campaigns::drivers::engine_state::save(&run).unwrap();
    let mut loaded = lorafleet::campaigns::drivers::engine_state::load(saved).unwrap();
    let got = lorafleet::engine::step::new_answers(db, &mut loaded, &[200], now + secs(32))
        .await
        .unwrap();
    assert!(got.is_empty(), "104 was read before the save");
}

// ---- Two lorafleet processes on one PostgreSQL database, the owner killed mid-campaign ----

mod two_instances {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use super::common::browser::CampaignWatcher;
    use super::common::fake_network_server::{self as fake_ns, Fake, TOKEN};
    use super::common::{postgres, spawn_binary, test_config, TestBinary, FIXTURE, PASSWORD};

    const DEVICES: [&str; 2] = ["0102030405060708", "1112131415161718"];
    const FIXTURE_VERSION: u32 = 1_623_165_310;
    const LEASE_S: u64 = 3;
    const REDUNDANCY: usize = 4;

    fn fragments() -> usize {
        FIXTURE.len().div_ceil(200) + REDUNDANCY
    }

    /// What the device answers to a command, as the test plays it (TS005, TS004, Version &
    /// Status, the signed fixture's version once "updated").
    fn answer(f_port: u32, req: &[u8]) -> Option<(u8, Vec<u8>)> {
        match (f_port, req.first()) {
            (111, Some(0x00)) => {
                let mut ans = vec![0x00, 10, 1, 0x23, 0x01, 0x00];
                ans.extend_from_slice(&1_600_000_000u32.to_le_bytes());
                ans.extend_from_slice(&[0x03, 0x00, 0x80, 0x00, 0x00]);
                ans.extend_from_slice(&300_000u32.to_le_bytes());
                Some((111, ans))
            }
            (111, Some(0x01)) => {
                let mut ans = vec![0x01, 0x01];
                ans.extend_from_slice(&FIXTURE_VERSION.to_le_bytes());
                Some((111, ans))
            }
            (200, Some(0x02)) => Some((200, vec![0x02, 0x01])),
            (200, Some(0x04)) => Some((200, vec![0x04, 0x01, 0x03, 0x00, 0x00])),
            (201, Some(0x02)) => Some((201, vec![0x02, 0x80])),
            (201, Some(0x01)) => {
                let mut ans = vec![0x01];
                ans.extend_from_slice(&((fragments() as u16) | (2 << 14)).to_le_bytes());
                ans.extend_from_slice(&[0x00, 0x00]);
                Some((201, ans))
            }
            _ => None,
        }
    }

    /// An uplink of `dev_eui` through ChirpStack's HTTP integration of the instance at `base`.
    async fn uplink(
        http: &reqwest::Client,
        base: &str,
        dev_eui: &str,
        f_port: u8,
        data: &[u8],
        f_cnt: u32,
    ) -> bool {
        let r = http
            .post(format!("{base}/api/integrations/chirpstack?event=up"))
            .bearer_auth(super::common::INTEGRATION_TOKEN)
            .json(&fake_ns::answer_json(dev_eui, f_port, data, f_cnt))
            .send()
            .await;
        r.is_ok_and(|r| r.status() == 200)
    }

    /// The devices, played by the test: each command the fake received is answered once, through
    /// the instances in turn (requests alternate, as behind no balancer), skipping a dead one.
    fn play_devices(fake: Arc<Fake>, bases: Arc<Mutex<Vec<String>>>) {
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut answered = 0;
            let mut f_cnt: HashMap<String, u32> = HashMap::new();
            let mut turn = 0usize;
            loop {
                let next = fake.unicast.lock().unwrap().get(answered).cloned();
                let Some((eui, port, data)) = next else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                answered += 1;
                let Some((port, ans)) = answer(port, &data) else {
                    continue;
                };
                let n = f_cnt.entry(eui.clone()).or_insert(10);
                *n += 1;
                for _ in 0..4 {
                    let alive = bases.lock().unwrap().clone();
                    turn += 1;
                    let base = &alive[turn % alive.len()];
                    if uplink(&http, base, &eui, port, &ans, *n).await {
                        break;
                    }
                }
            }
        });
    }

    async fn get_json(b: &TestBinary, path: &str) -> Value {
        let r = b
            .http
            .get(b.url(path))
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn upload(b: &TestBinary) -> i64 {
        let boundary = "lorafleet-test-boundary-7d1f";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.bin_signed\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(FIXTURE);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let r = b
            .http
            .post(b.url("/api/firmware"))
            .basic_auth("admin", Some(PASSWORD))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    /// Waits up to `limit` for `what` of campaign `id` seen through `b`.
    async fn until(
        b: &TestBinary,
        id: i64,
        limit: Duration,
        what: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let c = get_json(b, &format!("/api/campaigns/{id}")).await;
            if what(&c) {
                return c;
            }
            assert!(started.elapsed() < limit, "not within {limit:?}: {c}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn count(items: &[(String, u32, Vec<u8>)], eui: &str, port: u32, cid: u8) -> usize {
        items
            .iter()
            .filter(|(e, p, d)| e == eui && *p == port && d.first() == Some(&cid))
            .count()
    }

    /// What the browser on the survivor saw, live (the page never reloaded): the campaign
    /// running, the dead owner's steps (a device past its first setup command before the
    /// takeover), the takeover, and the end with every device verified.
    fn saw_every_change(seen: &Value, dead: &str, survivor: &str) {
        assert_eq!(seen["loads"], 0, "the page reloaded: {seen}");
        assert_eq!(seen["errors"], json!([]), "{seen}");
        let snapshots = seen["snapshots"].as_array().unwrap();
        let said = format!("taken over from {dead} by {survivor} (its lease lapsed), attempt 2");
        let logs = |s: &Value| -> Vec<String> {
            s["log"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|m| m.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let taken_over = snapshots
            .iter()
            .position(|s| logs(s).iter().any(|m| m.contains(&said)))
            .unwrap_or_else(|| panic!("the page never showed {said:?}: {seen}"));
        let stages = |s: &Value| -> Vec<String> {
            s["devices"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let past_setup = ["frag_session_setup", "mc_session_setup", "fragments"];
        assert!(
            snapshots[..taken_over].iter().any(|s| stages(s)
                .iter()
                .any(|d| past_setup.iter().any(|p| d.contains(&format!(":{p}:"))))),
            "the page did not show the dead owner's progress before the takeover: {seen}"
        );
        assert!(
            snapshots[..taken_over]
                .iter()
                .any(|s| s["title"].as_str().is_some_and(|t| t.contains("running"))),
            "{seen}"
        );
        let last = snapshots.last().unwrap();
        assert!(
            last["title"]
                .as_str()
                .is_some_and(|t| t.contains("completed")),
            "{last}"
        );
        let mut shown = stages(last);
        shown.sort();
        let mut want: Vec<String> = DEVICES
            .iter()
            .map(|d| format!("{d}:completed:verified"))
            .collect();
        want.sort();
        assert_eq!(shown, want, "{last}");
    }

    /// Two instances on a fresh PostgreSQL database and the fake ChirpStack, the devices played
    /// by the test through both, and a draft engine campaign of them (a multicast session of
    /// 2^`timeout_exp` s); `None` without PostgreSQL.
    struct TwoInstances {
        fake: Arc<Fake>,
        a: TestBinary,
        b: TestBinary,
        bases: Arc<Mutex<Vec<String>>>,
        id: i64,
    }

    async fn two_instances(fake: Arc<Fake>, cs_url: &str, timeout_exp: u8) -> Option<TwoInstances> {
        let url = postgres::fresh_database()?;
        let config = || {
            test_config().with(|c| {
                c.server.database_url = url.clone();
                c.campaigns.lease_s = LEASE_S;
                c.network.kind = lorafleet::config::NetworkKind::ChirpstackV4;
                c.network.chirpstack_v4.api_url = cs_url.to_string();
                c.network.chirpstack_v4.api_token = TOKEN.into();
                c.network.request_timeout_s = 2;
            })
        };
        let a = spawn_binary(config()).await;
        let b = spawn_binary(config()).await;
        let bases = Arc::new(Mutex::new(vec![a.base.clone(), b.base.clone()]));
        let http = reqwest::Client::new();
        for (i, eui) in DEVICES.iter().enumerate() {
            let base = if i % 2 == 0 { &a.base } else { &b.base };
            assert!(
                uplink(&http, base, eui, 1, &[1], 1).await,
                "first uplink of {eui}"
            );
        }
        play_devices(fake.clone(), bases.clone());
        let firmware_id = upload(&a).await;
        let body = json!({
            "name": "two instances", "firmware_id": firmware_id, "devices": DEVICES, "driver": "engine",
            "multicast": {"class": "C", "dr": 5, "frequency": 869525000, "group_id": 1, "timeout_exp": timeout_exp},
            "unicast": {"timeout_s": 5, "attempts": 1},
            "fragmentation": {"fragment_size": 200, "redundancy": REDUNDANCY, "session_index": 2, "block_ack_delay": 2, "descriptor_hex": "0a0b0c0d"},
            "request_frag_status": "after_session",
            "engine": {"check": "refuse", "reboot_delay_s": 0},
        });
        let r = b
            .http
            .post(b.url("/api/campaigns"))
            .basic_auth("admin", Some(PASSWORD))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        Some(TwoInstances {
            fake,
            a,
            b,
            bases,
            id,
        })
    }

    async fn start(on: &TestBinary, id: i64) {
        let r = on
            .http
            .post(on.url(&format!("/api/campaigns/{id}/start")))
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }

    /// Each fragment's number of sends to the campaign's group, for fragments 1..=all.
    fn fragment_sends(fake: &Fake) -> Vec<usize> {
        let multicast = fake.multicast.lock().unwrap().clone();
        (1..=fragments() as u16)
            .map(|n| {
                multicast
                    .iter()
                    .filter(|(g, _, d, _)| {
                        g == "mc-1" && d.len() > 3 && u16::from_le_bytes([d[1], d[2]]) & 0x3fff == n
                    })
                    .count()
            })
            .collect()
    }

    /// A step longer than the lease (ChirpStack takes 60 ms per fragment: the step queueing
    /// them all lasts over twice `lease_s`) renews the lease as it sends: the other instance,
    /// claiming every second, never takes the campaign over, and every fragment is sent once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_longer_than_the_lease_is_not_taken_over_and_sends_each_fragment_once() {
        let (fake, cs_url) = fake_ns::start().await;
        // A 16 s session (timeout exponent 4), longer than the slow stream.
        let Some(t) = two_instances(fake, &cs_url, 4).await else {
            return;
        };
        *t.fake.multicast_delay.lock().unwrap() = Duration::from_millis(60);
        assert!(
            Duration::from_millis(60) * fragments() as u32 > Duration::from_secs(2 * LEASE_S),
            "the stream must outlast the lease"
        );
        start(&t.a, t.id).await;
        let c = until(&t.a, t.id, Duration::from_secs(120), |c| {
            c["state"] != "running"
        })
        .await;
        assert_eq!(c["state"], "completed", "{c}");
        assert_eq!(c["attempt"], 1, "never taken over: {c}");
        assert_eq!(fragment_sends(&t.fake), vec![1; fragments()]);
        for d in c["devices"].as_array().unwrap() {
            assert_eq!(d["outcome"], "verified", "{d}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_owner_killed_during_the_fragments_is_taken_over_and_nothing_is_sent_twice() {
        let (fake, cs_url) = fake_ns::start().await;
        let Some(TwoInstances {
            fake,
            mut a,
            mut b,
            bases,
            id,
        }) = two_instances(fake, &cs_url, 3).await
        else {
            return;
        };
        // A browser on each instance's page of the campaign: the survivor's must see it all.
        let mut watchers = [
            Some(CampaignWatcher::open(&a.base, id, PASSWORD).await),
            Some(CampaignWatcher::open(&b.base, id, PASSWORD).await),
        ];
        start(&a, id).await;

        // The fragments are going out: kill -9 whichever instance owns the campaign.
        let started = Instant::now();
        while fake.multicast.lock().unwrap().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no fragment was ever sent"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let c = get_json(&a, &format!("/api/campaigns/{id}")).await;
        let owner = c["lease_owner"].as_str().unwrap().to_string();
        assert_eq!(c["attempt"], 1, "{c}");
        let a_owns = owner.starts_with(&format!("{}-", a.pid()));
        assert!(
            a_owns || owner.starts_with(&format!("{}-", b.pid())),
            "{owner}"
        );
        let (dead, survivor) = if a_owns { (&mut a, &b) } else { (&mut b, &a) };
        dead.kill().await;
        let (dead_watcher, survivor_watcher) = if a_owns { (0, 1) } else { (1, 0) };
        watchers[dead_watcher].take().unwrap().close().await;
        let killed_at = Instant::now();
        bases.lock().unwrap().retain(|base| *base == survivor.base);

        // Taken over within the lease plus one poll (1 s), and a little for a loaded machine.
        let c = until(survivor, id, Duration::from_secs(LEASE_S + 1 + 3), |c| {
            c["lease_owner"].as_str().is_some_and(|o| o != owner)
        })
        .await;
        let took = killed_at.elapsed();
        let new_owner = c["lease_owner"].as_str().unwrap().to_string();
        assert!(
            new_owner.starts_with(&format!("{}-", survivor.pid())),
            "{new_owner}"
        );
        assert_eq!(c["attempt"], 2, "{c}");
        eprintln!("taken over {took:?} after the kill");

        let c = until(survivor, id, Duration::from_secs(60), |c| {
            c["state"] != "running"
        })
        .await;
        assert_eq!(c["state"], "completed", "{c}");
        let seen = watchers[survivor_watcher].take().unwrap().seen().await;
        saw_every_change(&seen, &owner, &new_owner);
        for d in c["devices"].as_array().unwrap() {
            assert_eq!(
                (d["stage"].as_str(), d["outcome"].as_str()),
                (Some("completed"), Some("verified")),
                "{d}"
            );
        }
        let log: Vec<&str> = c["log"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["message"].as_str())
            .collect();
        let said = format!("taken over from {owner} by {new_owner} (its lease lapsed), attempt 2");
        assert!(log.contains(&said.as_str()), "{log:#?}");

        // ChirpStack saw one group, and each setup command once per device: both were before
        // the kill, in attempt 1, and the new owner did not send them again.
        assert_eq!(fake.groups.lock().unwrap().len(), 1, "one multicast group");
        let deleted: Vec<String> = fake
            .deleted
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.0.clone())
            .collect();
        assert_eq!(deleted, ["mc-1"]);
        let unicast = fake.unicast.lock().unwrap().clone();
        for eui in DEVICES {
            assert_eq!(
                count(&unicast, eui, 200, 0x02),
                1,
                "McGroupSetupReq to {eui}"
            );
            assert_eq!(
                count(&unicast, eui, 201, 0x02),
                1,
                "FragSessionSetupReq to {eui}"
            );
            assert_eq!(
                count(&unicast, eui, 200, 0x04),
                1,
                "McClassCSessionReq to {eui}"
            );
        }
        // Each fragment at most once per attempt (the new attempt re-sends what the dead owner
        // had not recorded as sent), all of them at least once.
        for (n, times) in fragment_sends(&fake).into_iter().enumerate() {
            assert!(
                (1..=2).contains(&times),
                "fragment {} sent {times} times",
                n + 1
            );
        }
    }
}

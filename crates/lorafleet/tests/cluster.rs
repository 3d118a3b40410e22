//! Two lorafleet instances on one PostgreSQL database behaving as one product: what one commits
//! reaches the other's event stream (and a lost listening connection becomes a resync),
//! credentials changed on one are refused by the other, the device-list sync and the firmware
//! rescan run on one instance at a time, and an AppTimeReq posted to both is answered once.
//! Needs `LORAFLEET_TEST_POSTGRES_URL` whatever the backend (without it each test says so and
//! passes; with it set and the cluster unreachable, they fail).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use common::{postgres, spawn_app, test_config, v4_uplink_json, TestApp, FIXTURE, PASSWORD};
use lorafleet::cluster::jobs::{self, Outcome};
use lorafleet::config::NetworkKind;
use lorafleet::network::{Downlink, Enqueued, Network, NetworkError, RemoteDevice};
use lorafleet::storage::advisory::{self, Job};
use serde_json::json;

const DEV: &str = "0102030405060708";
const WAIT: Duration = Duration::from_secs(15);

/// A network server both instances share: it counts device-list reads (each taking a while,
/// so that two at once overlap) and records every downlink.
#[derive(Default)]
struct SharedNetwork {
    lists: AtomicUsize,
    enqueued: Mutex<Vec<Downlink>>,
}

#[async_trait]
impl Network for SharedNetwork {
    fn kind(&self) -> NetworkKind {
        NetworkKind::ChirpstackV4
    }

    async fn enqueue(&self, downlink: &Downlink) -> Result<Enqueued, NetworkError> {
        self.enqueued.lock().unwrap().push(downlink.clone());
        Ok(Enqueued::default())
    }

    async fn list_devices(&self) -> Result<Vec<RemoteDevice>, NetworkError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Vec::new())
    }
}

/// Two routers with data dirs of their own on one fresh database, both hearing each other.
async fn two(
    network: Option<Arc<SharedNetwork>>,
    configure: impl Fn(&mut lorafleet::config::Config),
) -> Option<(TestApp, TestApp)> {
    let url = postgres::fresh_database()?;
    let config = || {
        let mut c = test_config().with(|c| {
            c.server.database_url = url.clone();
            configure(c);
        });
        if let Some(n) = &network {
            let n: Arc<dyn Network> = n.clone();
            c = c.with_network(n);
        }
        c
    };
    let a = spawn_app(config()).await;
    let b = spawn_app(config()).await;
    listening(&a).await;
    listening(&b).await;
    Some((a, b))
}

/// Waits until the instance says on /health that it hears the others.
async fn listening(t: &TestApp) {
    let started = Instant::now();
    loop {
        let health: serde_json::Value = t
            .http
            .get(t.url("/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["cluster"]["listening"] == json!(true) {
            return;
        }
        assert!(started.elapsed() < WAIT, "not listening: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An open `/api/stream` and what it said so far.
struct Stream {
    response: reqwest::Response,
    text: String,
}

async fn open_stream(t: &TestApp) -> Stream {
    let response = t.get("/api/stream").send().await.unwrap();
    assert_eq!(response.status(), 200);
    Stream {
        response,
        text: String::new(),
    }
}

impl Stream {
    /// Reads until the stream has said `wanted`, failing after [`WAIT`].
    async fn until(&mut self, wanted: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.text.contains(wanted) {
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no {wanted:?} within {WAIT:?}; heard {:?}", self.text))
                .unwrap()
                .expect("the stream ended");
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn uplink(t: &TestApp, eui: &str, f_port: u32, f_cnt: u32, data: &[u8]) -> u16 {
    let mut body: serde_json::Value =
        serde_json::from_slice(&v4_uplink_json(eui, f_port, f_cnt, data)).unwrap();
    body["time"] = json!(Utc::now().to_rfc3339());
    let r = t
        .http
        .post(t.url("/api/integrations/chirpstack?event=up"))
        .bearer_auth(common::INTEGRATION_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test]
async fn an_uplink_posted_to_one_instance_appears_on_the_others_stream() {
    let Some((a, b)) = two(None, |_| {}).await else {
        return;
    };
    let mut stream = open_stream(&b).await;
    assert_eq!(uplink(&a, DEV, 10, 1, b"hi").await, 200);
    stream
        .until(&format!("event: device\ndata: {{\"dev_eui\":\"{DEV}\"}}"))
        .await;
    // And the other way round.
    let mut stream = open_stream(&a).await;
    assert_eq!(uplink(&b, DEV, 10, 2, b"hi").await, 200);
    stream.until("event: device").await;
}

#[tokio::test]
async fn a_firmware_upload_on_one_instance_is_seen_on_the_others_stream() {
    let Some((a, b)) = two(None, |_| {}).await else {
        return;
    };
    let mut stream = open_stream(&b).await;
    let (status, body) = a.upload("demo.bin", FIXTURE).await;
    assert_eq!(status, 201, "{body}");
    stream.until("event: firmware").await;
    let id = body["id"].as_i64().unwrap();
    let listed = b.get_json("/api/firmware").await;
    assert!(
        listed["images"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == json!(id)),
        "b lists a's upload: {listed}"
    );
}

#[tokio::test]
async fn a_lost_listening_connection_is_a_resync_and_listening_resumes() {
    let Some((a, b)) = two(None, |_| {}).await else {
        return;
    };
    let mut stream = open_stream(&b).await;
    // Both instances' listening connections go; each reconnects by itself.
    let killed: i64 = crate::on_db!(&b.app.db, p => sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%') t")
        .fetch_one(p)
        .await
        .unwrap());
    assert!(killed >= 1, "no listening connection found");
    stream.until("event: resync").await;
    // Until B listens again a notification may be missed: post until one arrives.
    let started = Instant::now();
    let mut f_cnt = 1;
    let wanted = format!("\"dev_eui\":\"{DEV}\"");
    loop {
        assert_eq!(uplink(&a, DEV, 10, f_cnt, b"hi").await, 200);
        f_cnt += 1;
        let seen = tokio::time::timeout(Duration::from_millis(500), stream.until(&wanted)).await;
        if seen.is_ok() {
            break;
        }
        assert!(started.elapsed() < WAIT, "b never heard a again");
    }
    listening(&b).await;
}

async fn created_token(t: &TestApp) -> (i64, String) {
    let r = t
        .post("/api/tokens")
        .json(&json!({"name": "script", "scope": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let list = t.get_json("/api/tokens").await;
    let id = list.as_array().unwrap()[0]["id"].as_i64().unwrap();
    (id, token)
}

async fn with_token(t: &TestApp, token: &str) -> u16 {
    let r = t.http.get(t.url("/api/devices")).bearer_auth(token);
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_token_revoked_on_one_instance_is_refused_by_the_other_at_once() {
    let Some((a, b)) = two(None, |_| {}).await else {
        return;
    };
    let (id, token) = created_token(&a).await;
    assert_eq!(with_token(&b, &token).await, 200);
    let r = a.delete(&format!("/api/tokens/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(with_token(&b, &token).await, 401, "the next request on b");
}

#[tokio::test]
async fn a_password_changed_on_one_instance_ends_the_session_on_the_other() {
    let Some((a, b)) = two(None, |_| {}).await else {
        return;
    };
    let login = a
        .http
        .post(a.url("/api/session"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let on_b = || async {
        let r = b.http.get(b.url("/api/session")).header("cookie", &cookie);
        r.send().await.unwrap().status().as_u16()
    };
    assert_eq!(on_b().await, 200, "the session is the database's");
    let r = a
        .patch("/api/users/admin")
        .json(&json!({"password": "another-password-789"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(on_b().await, 401, "the next request on b");
}

async fn ingest_status(t: &TestApp, token: &str) -> u16 {
    let r = t
        .http
        .post(t.url("/api/integrations/chirpstack?event=up"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(v4_uplink_json(DEV, 10, 1, b"hi"))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test]
async fn a_rotated_integration_token_is_refused_by_the_other_instance() {
    // A generated token (kept as a hash), which an admin can rotate.
    let Some((a, b)) = two(None, |c| c.integration.token = String::new()).await else {
        return;
    };
    let rotate = || async {
        let r = a
            .post("/api/settings/integration-token/rotate")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    };
    let old = rotate().await;
    // Until b has heard of the first rotation it knows neither token; then it takes the old.
    let started = Instant::now();
    while ingest_status(&b, &old).await != 200 {
        assert!(started.elapsed() < WAIT, "b never took the token a made");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new = rotate().await;
    let started = Instant::now();
    while ingest_status(&b, &old).await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "b still takes the rotated token"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ingest_status(&b, &new).await, 200);
}

#[tokio::test]
async fn the_device_list_sync_and_the_firmware_rescan_run_on_one_instance_at_a_time() {
    let network = Arc::new(SharedNetwork::default());
    let Some((a, b)) = two(Some(network.clone()), |_| {}).await else {
        return;
    };
    let (on_a, on_b) = tokio::join!(jobs::sync_devices(&a.app), jobs::sync_devices(&b.app));
    let mut outcomes = [on_a.unwrap(), on_b.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, Outcome::Skipped));
    assert_eq!(outcomes, [Outcome::Ran(0), Outcome::Skipped]);
    assert_eq!(
        network.lists.load(Ordering::SeqCst),
        1,
        "the list was read once"
    );
    // Right after one instance synced, the other does not sync again either.
    assert_eq!(jobs::sync_devices(&b.app).await.unwrap(), Outcome::Skipped);
    assert_eq!(network.lists.load(Ordering::SeqCst), 1);

    // The rescan waits while another instance holds its lock.
    let held = advisory::try_lock(&a.app.db, Job::FirmwareRescan)
        .await
        .unwrap()
        .unwrap();
    assert!(
        advisory::try_lock(&b.app.db, Job::FirmwareRescan)
            .await
            .unwrap()
            .is_none(),
        "one holder at a time"
    );
    let scan = lorafleet::firmware::library::rescan(&b.app.db, &b.app.config);
    tokio::pin!(scan);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut scan)
            .await
            .is_err(),
        "b's rescan ran while a held the lock"
    );
    held.release().await.unwrap();
    tokio::time::timeout(WAIT, scan).await.unwrap().unwrap();
    let again = advisory::try_lock(&b.app.db, Job::FirmwareRescan)
        .await
        .unwrap();
    assert!(again.is_some(), "released after the scan");
}

#[tokio::test]
async fn an_app_time_req_posted_to_both_instances_is_answered_once() {
    let network = Arc::new(SharedNetwork::default());
    let Some((a, b)) = two(Some(network.clone()), |_| {}).await else {
        return;
    };
    let gps_now = lorafleet_codec::time::unix_to_gps(Utc::now().timestamp());
    // AppTimeReq: DeviceTime 100 s behind, answer required, token as given.
    let req = |token: u8| {
        let mut req = vec![0x01];
        req.extend_from_slice(&(gps_now - 100).to_le_bytes());
        req.push(0x10 | token);
        req
    };
    const REPEATED: usize = 10;
    for f_cnt in 1..=REPEATED as u32 {
        // The same frame (one deduplicationId) to both at once, as two integrations would.
        let frame = req(3);
        let (x, y) = tokio::join!(
            uplink(&a, DEV, 202, f_cnt, &frame),
            uplink(&b, DEV, 202, f_cnt, &frame)
        );
        assert_eq!((x, y), (200, 200));
    }
    // One more frame to each alone, with tokens of their own: each instance answers its
    // uplinks in order, so once both of these are answered, everything before them is decided.
    assert_eq!(uplink(&a, DEV, 202, 1000, &req(5)).await, 200);
    assert_eq!(uplink(&b, DEV, 202, 1001, &req(6)).await, 200);
    let tokens = || -> Vec<u8> {
        let sent = network.enqueued.lock().unwrap();
        assert!(
            sent.iter().all(|d| d.f_port == 202 && d.data[0] == 0x01),
            "{sent:?}"
        );
        sent.iter()
            .map(|d| d.data[d.data.len() - 1] & 0x0f)
            .collect()
    };
    let started = Instant::now();
    while !(tokens().contains(&5) && tokens().contains(&6)) {
        assert!(started.elapsed() < WAIT, "answers so far: {:?}", tokens());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let repeated = tokens().iter().filter(|t| **t == 3).count();
    assert_eq!(
        repeated,
        REPEATED,
        "one AppTimeAns per frame: {:?}",
        tokens()
    );
}

#[tokio::test]
async fn on_sqlite_there_is_no_cluster_and_every_job_lock_is_granted() {
    if postgres::backend_is_postgres() {
        return;
    }
    let t = spawn_app(test_config()).await;
    let health: serde_json::Value = t.get_json("/health").await;
    assert!(health.get("cluster").is_none(), "{health}");
    let first = advisory::try_lock(&t.app.db, Job::DeviceSync)
        .await
        .unwrap();
    let second = advisory::try_lock(&t.app.db, Job::DeviceSync)
        .await
        .unwrap();
    assert!(
        first.is_some() && second.is_some(),
        "one instance: nobody to wait for"
    );
}

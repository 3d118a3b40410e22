//! MQTT ingest against a real broker: Debian's `mosquitto`, started by each test on a loopback
//! port of its own with a temporary directory. Skipped, with the reason printed, where mosquitto
//! is not installed (CI installs it).
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chirpstack_api::integration as v4;
use common::{spawn, v4_uplink_json, TestApp};
use lorafleet::config::MqttEncoding;
use prost::Message;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

const EUI: &str = "0102030405060708";
const WAIT: Duration = Duration::from_secs(30);

fn topic(eui: &str, event: &str) -> String {
    format!("application/ff2b8a3f-0000-4000-8000-000000000001/device/{eui}/event/{event}")
}

/// A mosquitto of the test's own; stopped with SIGTERM (so it saves its sessions) when dropped.
struct Mosquitto {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

fn mosquitto_binary() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// Started as root, mosquitto switches to the `mosquitto` user unless told to stay, and could
/// then not write its sessions into the test's directory.
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Mosquitto {
    /// None (after saying why) when mosquitto is not installed.
    fn start() -> Option<Mosquitto> {
        let Some(binary) = mosquitto_binary() else {
            eprintln!("SKIPPED: mosquitto is not installed (apt-get install mosquitto)");
            return None;
        };
        let mut m = Mosquitto {
            binary,
            dir: tempfile::tempdir().unwrap(),
            port: 0,
            child: None,
        };
        // A port found free may be taken before mosquitto binds it: try again with another.
        for _ in 0..20 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if m.run_on(port) {
                return Some(m);
            }
        }
        panic!("mosquitto did not start on any of 20 ports");
    }

    /// Starts mosquitto on `port`; false when it exited (the port was taken).
    fn run_on(&mut self, port: u16) -> bool {
        let d = self.dir.path();
        let conf = d.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 100\n\
                 log_dest file {}/mosquitto.log\nuser {}\n",
                d.display(),
                d.display(),
                current_user()
            ),
        )
        .unwrap();
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                self.port = port;
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Restarts on the same port (lorafleet's configured server), retrying while the old
    /// socket is released.
    fn restart(&mut self) {
        self.stop();
        for _ in 0..50 {
            if self.run_on(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("mosquitto did not restart on port {}", self.port);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Publishes with QoS 1 and returns once the broker has the message.
async fn publish(broker: &Mosquitto, topic: &str, payload: Vec<u8>, retain: bool) {
    let id = format!("test-pub-{}", rand::random::<u32>());
    let (client, mut events) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", broker.port), 16);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("publishing: {e}"),
            }
        }
    })
    .await
    .expect("the broker acknowledges the publication");
    let _ = client.disconnect().await;
}

async fn spawn_with_mqtt(broker: &Mosquitto, encoding: MqttEncoding) -> TestApp {
    let url = broker.url();
    spawn(
        move |c| {
            c.integration.mqtt.enabled = true;
            c.integration.mqtt.server = url;
            c.integration.mqtt.encoding = encoding;
        },
        None,
    )
    .await
}

/// Polls until `check` holds (each poll is a real request); fails after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn health(t: &TestApp) -> Value {
    t.http
        .get(t.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn mqtt_state(t: &TestApp) -> String {
    health(t).await["mqtt"].as_str().unwrap().to_string()
}

/// One value from `/metrics` (0 when the series is absent).
async fn metric(t: &TestApp, name: &str) -> f64 {
    let text = t
        .http
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn uplink_counts(t: &TestApp, eui: &str) -> Vec<i64> {
    let r = t
        .get(&format!("/api/devices/{eui}/uplinks"))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return Vec::new();
    }
    let ups: Value = r.json().await.unwrap();
    ups["uplinks"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["f_cnt"].as_i64()).collect())
        .unwrap_or_default()
}

/// Every message received has been settled one way or another.
async fn settled(t: &TestApp, received: f64) -> bool {
    let done = metric(t, "lorafleet_mqtt_messages_committed_total").await
        + metric(t, "lorafleet_mqtt_messages_repeated_total").await
        + metric(t, "lorafleet_mqtt_messages_undecodable_total").await
        + metric(t, "lorafleet_mqtt_messages_ignored_total").await;
    let got = metric(t, "lorafleet_mqtt_messages_received_total").await;
    if got > received {
        panic!("{got} messages received, {received} expected");
    }
    got == received && done == received
}

async fn connected(t: &TestApp) {
    eventually("MQTT connected", || async {
        mqtt_state(t).await == "connected"
    })
    .await;
}

#[tokio::test]
async fn without_mqtt_health_says_disabled() {
    let t = spawn(|_| {}, None).await;
    assert_eq!(mqtt_state(&t).await, "disabled");
    assert_eq!(metric(&t, "lorafleet_mqtt_connected").await, 0.0);
}

#[tokio::test]
async fn json_events_are_stored_and_counted() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let t = spawn_with_mqtt(&broker, MqttEncoding::Json).await;
    connected(&t).await;
    assert_eq!(metric(&t, "lorafleet_mqtt_connected").await, 1.0);
    // Every series is there from the start, at zero, so dashboards see it before traffic.
    let text = t
        .http
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "received",
        "committed",
        "refused",
        "undecodable",
        "repeated",
        "ignored",
    ] {
        let line = format!("lorafleet_mqtt_messages_{name}_total 0");
        assert!(text.lines().any(|l| l == line), "{line} in /metrics");
    }
    publish(
        &broker,
        &topic(EUI, "up"),
        v4_uplink_json(EUI, 2, 42, b"hello"),
        false,
    )
    .await;
    let info = serde_json::json!({"applicationId": "a", "applicationName": "meters", "deviceName": "d", "devEui": EUI});
    let status = serde_json::json!({"deduplicationId": "s", "time": "2026-11-27T10:01:00Z", "deviceInfo": info, "margin": 7, "batteryLevel": 88.5});
    publish(
        &broker,
        &topic(EUI, "status"),
        status.to_string().into_bytes(),
        false,
    )
    .await;
    // ChirpStack also publishes event types lorafleet does not record: acknowledged, ignored.
    publish(&broker, &topic(EUI, "location"), b"{}".to_vec(), false).await;
    eventually("three messages settled", || settled(&t, 3.0)).await;
    let d = t.device(EUI).await;
    assert_eq!(d["last_uplink"]["data_hex"], "68656c6c6f");
    assert_eq!(d["last_uplink"]["f_cnt"], 42);
    assert_eq!(d["application"], "meters");
    assert_eq!(d["battery"], 88.5);
    assert_eq!(
        metric(&t, "lorafleet_mqtt_messages_committed_total").await,
        2.0
    );
    assert_eq!(
        metric(&t, "lorafleet_mqtt_messages_ignored_total").await,
        1.0
    );
}

#[tokio::test]
async fn protobuf_events_are_stored() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let t = spawn_with_mqtt(&broker, MqttEncoding::Protobuf).await;
    connected(&t).await;
    let event = v4::UplinkEvent {
        deduplication_id: "pb-1".into(),
        time: Some(chirpstack_api::pbjson_types::Timestamp {
            seconds: 1_780_000_000,
            nanos: 0,
        }),
        device_info: Some(v4::DeviceInfo {
            application_id: "app-uuid".into(),
            application_name: "pb-app".into(),
            device_name: "pb-device".into(),
            dev_eui: "a1b2c3d4e5f60708".into(),
            ..Default::default()
        }),
        dev_addr: "00112233".into(),
        f_cnt: 7,
        f_port: 9,
        data: vec![0xde, 0xad],
        ..Default::default()
    };
    publish(
        &broker,
        &topic("a1b2c3d4e5f60708", "up"),
        event.encode_to_vec(),
        false,
    )
    .await;
    eventually("uplink stored", || async {
        uplink_counts(&t, "a1b2c3d4e5f60708").await == vec![7]
    })
    .await;
    let d = t.device("a1b2c3d4e5f60708").await;
    assert_eq!(d["name"], "pb-device");
    assert_eq!(d["last_uplink"]["data_hex"], "dead");
    // A JSON body on a Protobuf subscription does not decode: acknowledged and counted.
    publish(
        &broker,
        &topic(EUI, "up"),
        v4_uplink_json(EUI, 2, 1, b"x"),
        false,
    )
    .await;
    eventually("undecodable counted", || settled(&t, 2.0)).await;
    assert_eq!(
        metric(&t, "lorafleet_mqtt_messages_undecodable_total").await,
        1.0
    );
}

/// The PUBACK waits for the commit: a message the database refused is not acknowledged, so the
/// broker delivers it again after the reconnect, and once the database takes it, it is stored.
#[tokio::test]
async fn a_message_the_database_refused_comes_again_and_is_stored_once() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let t = spawn_with_mqtt(&broker, MqttEncoding::Json).await;
    connected(&t).await;
    // A fault the test can lift at will: every uplink insert fails while the trigger exists.
    match &t.app.db {
        lorafleet::storage::Db::Sqlite(p) => sqlx::Executor::execute(
            p,
            "CREATE TRIGGER refuse_uplinks BEFORE INSERT ON uplinks \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .await
        .map(|_| ()),
        lorafleet::storage::Db::Postgres(p) => sqlx::Executor::execute(
            p,
            "CREATE FUNCTION refuse_uplinks() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
             CREATE TRIGGER refuse_uplinks BEFORE INSERT ON uplinks \
             FOR EACH ROW EXECUTE FUNCTION refuse_uplinks();",
        )
        .await
        .map(|_| ()),
    }
    .unwrap();
    publish(
        &broker,
        &topic(EUI, "up"),
        v4_uplink_json(EUI, 2, 5, b"late"),
        false,
    )
    .await;
    eventually(
        "refused twice (delivered again after the reconnect)",
        || async { metric(&t, "lorafleet_mqtt_messages_refused_total").await >= 2.0 },
    )
    .await;
    assert!(uplink_counts(&t, EUI).await.is_empty());
    assert_eq!(
        metric(&t, "lorafleet_mqtt_messages_committed_total").await,
        0.0
    );
    crate::on_db!(&t.app.db, p => sqlx::query(if t.app.db.is_postgres() { "DROP TRIGGER refuse_uplinks ON uplinks" } else { "DROP TRIGGER refuse_uplinks" })
        .execute(p).await.map(|_| ()))
        .unwrap();
    eventually("stored once the database takes it", || async {
        uplink_counts(&t, EUI).await == vec![5]
    })
    .await;
    eventually("committed", || async {
        metric(&t, "lorafleet_mqtt_messages_committed_total").await == 1.0
    })
    .await;
    connected(&t).await;
}

/// Repeats of every kind are stored once; the subscriber comes back after the broker restarts;
/// an undecodable message was acknowledged (it does not come again after the reconnect).
#[tokio::test]
async fn repeats_are_stored_once_and_the_broker_restart_is_survived() {
    let Some(mut broker) = Mosquitto::start() else {
        return;
    };
    let t = spawn_with_mqtt(&broker, MqttEncoding::Json).await;
    connected(&t).await;
    let up = v4_uplink_json(EUI, 2, 1, b"one");
    // Retained: the broker sends it again on every (re)subscription.
    publish(&broker, &topic(EUI, "up"), up.clone(), true).await;
    // The same message twice, as a QoS 1 redelivery would bring it.
    publish(&broker, &topic(EUI, "up"), up.clone(), false).await;
    // The same deduplicationId in a different body: ChirpStack re-sending the same frame.
    let mut other: Value = serde_json::from_slice(&up).unwrap();
    other["rxInfo"][0]["rssi"] = Value::from(-80);
    publish(
        &broker,
        &topic(EUI, "up"),
        other.to_string().into_bytes(),
        false,
    )
    .await;
    publish(
        &broker,
        &topic(EUI, "up"),
        b"\x00not json\x1b[31m".to_vec(),
        false,
    )
    .await;
    eventually("four messages settled", || settled(&t, 4.0)).await;
    assert_eq!(uplink_counts(&t, EUI).await, vec![1]);
    assert_eq!(
        metric(&t, "lorafleet_mqtt_messages_undecodable_total").await,
        1.0
    );
    // One more round trip through the broker, so the acknowledgements sent when the four were
    // settled have reached it before it stops.
    publish(&broker, &topic(EUI, "location"), b"{}".to_vec(), false).await;
    eventually("five messages settled", || settled(&t, 5.0)).await;

    broker.stop();
    eventually("MQTT connecting after the broker stopped", || async {
        mqtt_state(&t).await == "connecting"
    })
    .await;
    assert_eq!(metric(&t, "lorafleet_mqtt_connected").await, 0.0);
    broker.restart();
    connected(&t).await;
    publish(
        &broker,
        &topic(EUI, "up"),
        v4_uplink_json(EUI, 2, 2, b"two"),
        false,
    )
    .await;
    // The retained uplink again, and the new one; the undecodable message does not come back.
    eventually("the new uplink stored", || async {
        uplink_counts(&t, EUI).await == vec![2, 1]
    })
    .await;
    eventually("seven messages settled", || settled(&t, 7.0)).await;
    assert_eq!(
        metric(&t, "lorafleet_mqtt_messages_undecodable_total").await,
        1.0
    );
    assert_eq!(metric(&t, "lorafleet_mqtt_connected").await, 1.0);
}

//! ChirpStack's MQTT integration as an ingest transport: lorafleet subscribes to the broker in a
//! persistent session with manual acknowledgements. Each message is decoded by the same code as
//! the HTTP integration and committed by the same [`Writer`]; its PUBACK leaves only after the
//! commit, so a message lorafleet could not store stays with the broker and comes again after
//! the reconnect. Messages are acknowledged in the order they arrived, as MQTT asks.

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, Transport};
use tokio::sync::mpsc;

// A broker URL is part of the configuration: config.rs checks it when the file is read.
pub use crate::config::Broker;
use crate::config::{ChirpstackVersion, Config, MqttConfig, MqttEncoding, NetworkKind};
use crate::ingest::writer::Writer;
use crate::ingest::{self, Encoding};

/// Messages decoded and handed to the writer but not yet acknowledged, at most; beyond it
/// lorafleet stops reading from the broker, so a slow database costs no memory.
const MAX_IN_FLIGHT: usize = 512;
/// A packet larger than this breaks the connection (rumqttc cannot skip it); anything up to it
/// but above `server.max_body_bytes` is refused like an undecodable body and acknowledged.
const MAX_PACKET: usize = 16 * 1024 * 1024;
/// Recently committed messages remembered, so a redelivery within the process is not stored
/// twice (uplinks are also kept once by their deduplicationId in the database).
const SEEN: usize = 65_536;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

const COUNTERS: [&str; 6] = [
    "lorafleet_mqtt_messages_received_total",
    "lorafleet_mqtt_messages_committed_total",
    "lorafleet_mqtt_messages_refused_total",
    "lorafleet_mqtt_messages_undecodable_total",
    "lorafleet_mqtt_messages_repeated_total",
    "lorafleet_mqtt_messages_ignored_total",
];

/// The connection's state for `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct MqttStatus(AtomicU8);

const DISABLED: u8 = 0;
const CONNECTING: u8 = 1;
const CONNECTED: u8 = 2;

impl MqttStatus {
    pub fn state(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            CONNECTED => "connected",
            CONNECTING => "connecting",
            _ => "disabled",
        }
    }

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Relaxed);
        metrics::gauge!("lorafleet_mqtt_connected").set(if state == CONNECTED { 1.0 } else { 0.0 });
    }
}

/// Everything a connection needs, built once at start so that a bad setting (an unreadable
/// certificate) stops the start instead of failing every reconnect.
struct Subscriber {
    options: MqttOptions,
    filter: String,
    qos: QoS,
    decoding: Decoding,
    writer: Writer,
    status: Arc<MqttStatus>,
}

#[derive(Clone, Copy)]
struct Decoding {
    encoding: Encoding,
    version: ChirpstackVersion,
    network: NetworkKind,
    max_body: usize,
}

/// Starts the subscriber when `integration.mqtt.enabled`; the status stays `disabled` otherwise.
pub fn spawn(config: &Config, writer: Writer, status: Arc<MqttStatus>) -> anyhow::Result<()> {
    let m = &config.integration.mqtt;
    if !m.enabled {
        status.set(DISABLED);
        return Ok(());
    }
    let client_id = client_id(m, &config.server.data_dir)?;
    let subscriber = Subscriber {
        options: options(m, &client_id, config.server.max_body_bytes)?,
        filter: filter(m),
        qos: qos(m.qos),
        decoding: Decoding {
            encoding: match m.encoding {
                MqttEncoding::Json => Encoding::Json,
                MqttEncoding::Protobuf => Encoding::Protobuf,
            },
            version: config.integration.chirpstack_version,
            network: config.network.kind,
            max_body: config.server.max_body_bytes,
        },
        writer,
        status,
    };
    subscriber.status.set(CONNECTING);
    // Counted from zero, so a dashboard shows the series before the first message.
    for name in COUNTERS {
        metrics::counter!(name).increment(0);
    }
    tracing::info!(server = %m.server, topic = %subscriber.filter, client_id = %client_id, "MQTT ingest starting");
    tokio::spawn(subscriber.run());
    Ok(())
}

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

fn filter(m: &MqttConfig) -> String {
    if m.shared_group.is_empty() {
        m.topic.clone()
    } else {
        format!("$share/{}/{}", m.shared_group, m.topic)
    }
}

/// The configured client id, or the one generated on the first start and kept in the data dir:
/// the broker keeps a persistent session (and the messages it holds) by client id.
fn client_id(m: &MqttConfig, data_dir: &Path) -> anyhow::Result<String> {
    if !m.client_id.is_empty() {
        return Ok(m.client_id.clone());
    }
    let path = data_dir.join("mqtt-client-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
    }
    let id = format!("lorafleet-{:016x}", rand::random::<u64>());
    std::fs::write(&path, &id).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(id)
}

fn options(m: &MqttConfig, client_id: &str, max_body: usize) -> anyhow::Result<MqttOptions> {
    let broker =
        Broker::parse(&m.server).map_err(|e| anyhow::anyhow!("integration.mqtt.server: {e}"))?;
    let mut o = MqttOptions::new(client_id, broker.host, broker.port);
    o.set_keep_alive(Duration::from_secs(30));
    // A persistent session: the broker keeps unacknowledged messages across reconnects.
    o.set_clean_session(false);
    o.set_manual_acks(true);
    o.set_max_packet_size(MAX_PACKET.max(max_body + 4096), 64 * 1024);
    if !m.username.is_empty() || !m.password.is_empty() {
        o.set_credentials(m.username.clone(), m.password.clone());
    }
    if broker.tls {
        o.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls_config(m)?)),
        ));
    }
    Ok(o)
}

fn tls_config(m: &MqttConfig) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    if m.ca_file.as_os_str().is_empty() {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
    } else {
        for cert in CertificateDer::pem_file_iter(&m.ca_file)
            .map_err(|e| pem_error("ca_file", &m.ca_file, e))?
        {
            let cert = cert.map_err(|e| pem_error("ca_file", &m.ca_file, e))?;
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("integration.mqtt.ca_file: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    if m.cert_file.as_os_str().is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let certs = CertificateDer::pem_file_iter(&m.cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error("cert_file", &m.cert_file, e))?;
    let key = PrivateKeyDer::from_pem_file(&m.key_file)
        .map_err(|e| pem_error("key_file", &m.key_file, e))?;
    builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("integration.mqtt.cert_file/key_file: {e}"))
}

fn pem_error(key: &str, path: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("integration.mqtt.{key} {}: {e}", path.display())
}

/// Doubles from [`BACKOFF_MIN`] up to [`BACKOFF_MAX`], each wait drawn between half and all of
/// the current step, so instances that lost the same broker do not return in lockstep.
struct Backoff {
    step: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { step: BACKOFF_MIN }
    }

    fn next(&mut self) -> Duration {
        let wait = self
            .step
            .mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.5..=1.0));
        self.step = (self.step * 2).min(BACKOFF_MAX);
        wait
    }

    fn reset(&mut self) {
        self.step = BACKOFF_MIN;
    }
}

/// Fingerprints of recently committed messages, oldest forgotten first.
struct Seen {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Seen {
    fn new() -> Self {
        Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    fn contains(&self, key: u64) -> bool {
        self.set.contains(&key)
    }

    fn insert(&mut self, key: u64) {
        if self.set.insert(key) {
            self.order.push_back(key);
            if self.order.len() > SEEN {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// Topic and body identify a message: ChirpStack's events carry their own ids and times, so two
/// equal messages are one event delivered twice.
fn fingerprint(p: &Publish) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.topic.hash(&mut h);
    p.payload.hash(&mut h);
    h.finish()
}

/// What became of one message; all but `Failed` are acknowledged.
#[derive(Debug, PartialEq)]
enum Outcome {
    Committed,
    /// Already committed (a redelivery or a retained message sent again).
    Repeated,
    /// An event type lorafleet does not record.
    Ignored,
    Undecodable,
    /// The database refused the commit: not acknowledged, so the broker sends it again.
    Failed(String),
}

type Pending = BoxFuture<'static, (Publish, u64, Outcome)>;

/// Why a connection ended.
enum End {
    Broker(String),
    Storage(String),
}

impl Subscriber {
    async fn run(self) {
        let mut backoff = Backoff::new();
        let mut seen = Seen::new();
        loop {
            self.status.set(CONNECTING);
            let end = self.connection(&mut seen, &mut backoff).await;
            self.status.set(CONNECTING);
            let wait = backoff.next();
            match end {
                End::Broker(e) => {
                    tracing::warn!(error = %bounded(&e), retry_in_ms = wait.as_millis() as u64, "MQTT connection lost")
                }
                End::Storage(e) => {
                    tracing::warn!(error = %bounded(&e), retry_in_ms = wait.as_millis() as u64, "MQTT message not committed; reconnecting so the broker sends it again")
                }
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One connection: a task reads from the broker into a bounded channel while this one
    /// commits and acknowledges in order.
    async fn connection(&self, seen: &mut Seen, backoff: &mut Backoff) -> End {
        let (client, eventloop) = AsyncClient::new(self.options.clone(), 4 * MAX_IN_FLIGHT);
        if let Err(e) = client.try_subscribe(self.filter.clone(), self.qos) {
            return End::Broker(format!("subscribe: {e}"));
        }
        let (tx, mut rx) = mpsc::channel(MAX_IN_FLIGHT);
        let reader = tokio::spawn(read(eventloop, tx, self.status.clone()));
        let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
        let end = loop {
            tokio::select! {
                biased;
                Some((publish, key, outcome)) = pending.next(), if !pending.is_empty() => {
                    if let Err(end) = self.settle(&client, &publish, key, outcome, seen) {
                        break end;
                    }
                    backoff.reset_if_connected(&self.status);
                }
                msg = rx.recv(), if pending.len() < MAX_IN_FLIGHT => match msg {
                    Some(publish) => pending.push_back(self.take(publish, seen).await),
                    None => break End::Broker("connection closed".into()),
                },
            }
        };
        reader.abort();
        let end = match reader.await {
            Ok(Some(e)) => End::Broker(e),
            _ => end,
        };
        // Commits already handed to the writer finish; remembering them keeps the broker's
        // redelivery of these unacknowledged messages from storing them twice.
        while let Some((_, key, outcome)) = pending.next().await {
            if outcome == Outcome::Committed {
                seen.insert(key);
            }
        }
        end
    }

    /// Decodes a message and hands it to the writer; the future resolves when it is settled.
    async fn take(&self, publish: Publish, seen: &Seen) -> Pending {
        metrics::counter!("lorafleet_mqtt_messages_received_total").increment(1);
        let key = fingerprint(&publish);
        let ready = |publish: Publish, outcome: Outcome| -> Pending {
            Box::pin(async move { (publish, key, outcome) })
        };
        if seen.contains(key) {
            return ready(publish, Outcome::Repeated);
        }
        let event = match decode(&publish, self.decoding) {
            Ok(Some(mut event)) => {
                // The same time rule as the HTTP integration; its note goes to the log here.
                if let Some(note) = ingest::plausible::fix_time(&mut event, chrono::Utc::now()) {
                    tracing::info!(dev_eui = %event.dev_eui, "{}", bounded(&note));
                }
                event
            }
            Ok(None) => return ready(publish, Outcome::Ignored),
            Err(e) => {
                tracing::warn!(topic = %bounded(&publish.topic), error = %bounded(&e), "MQTT message not decodable; acknowledged and dropped");
                return ready(publish, Outcome::Undecodable);
            }
        };
        match self.writer.submit(event).await {
            Ok(done) => Box::pin(async move {
                let outcome = match done.await {
                    Ok(Ok(())) => Outcome::Committed,
                    Ok(Err(e)) => Outcome::Failed(e),
                    Err(_) => Outcome::Failed("the database writer has stopped".into()),
                };
                (publish, key, outcome)
            }),
            Err(e) => ready(publish, Outcome::Failed(e)),
        }
    }

    /// Acknowledges a settled message, or ends the connection when it could not be stored.
    fn settle(
        &self,
        client: &AsyncClient,
        publish: &Publish,
        key: u64,
        outcome: Outcome,
        seen: &mut Seen,
    ) -> Result<(), End> {
        match &outcome {
            Outcome::Failed(e) => {
                metrics::counter!("lorafleet_mqtt_messages_refused_total").increment(1);
                return Err(End::Storage(e.clone()));
            }
            Outcome::Committed => {
                metrics::counter!("lorafleet_mqtt_messages_committed_total").increment(1);
                seen.insert(key);
            }
            Outcome::Repeated => {
                metrics::counter!("lorafleet_mqtt_messages_repeated_total").increment(1)
            }
            Outcome::Ignored => {
                metrics::counter!("lorafleet_mqtt_messages_ignored_total").increment(1)
            }
            Outcome::Undecodable => {
                metrics::counter!("lorafleet_mqtt_messages_undecodable_total").increment(1)
            }
        }
        // The request channel holds four times the in-flight limit, so it is full only when the
        // connection is stuck; the reconnect then sorts it out.
        client
            .try_ack(publish)
            .map_err(|e| End::Broker(format!("acknowledging: {e}")))
    }
}

impl Backoff {
    fn reset_if_connected(&mut self, status: &MqttStatus) {
        if status.state() == "connected" {
            self.reset();
        }
    }
}

/// Reads the broker's packets and passes the publications on; waits while the channel is full
/// (the broker then holds the rest). Returns the connection's error.
async fn read(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Publish>,
    status: Arc<MqttStatus>,
) -> Option<String> {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                status.set(CONNECTED);
                tracing::info!(session_present = ack.session_present, "MQTT connected");
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    return Some("the broker refused the subscription".into());
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(p).await.is_err() {
                    return None;
                }
            }
            Ok(_) => {}
            Err(e) => return Some(e.to_string()),
        }
    }
}

/// The event type is the topic's last segment (`.../event/up`); the body is decoded by the HTTP
/// integration's decoders.
fn decode(p: &Publish, d: Decoding) -> Result<Option<ingest::IntegrationEvent>, String> {
    if p.payload.len() > d.max_body {
        return Err(format!(
            "body of {} bytes is over server.max_body_bytes ({})",
            p.payload.len(),
            d.max_body
        ));
    }
    let event = p.topic.rsplit('/').next().unwrap_or_default();
    ingest::decode(event, d.encoding, &p.payload, d.version, d.network).map_err(|e| e.to_string())
}

/// Text from outside, for the log: at most 200 characters, control characters escaped.
fn bounded(s: &str) -> String {
    let mut out: String = s.chars().take(200).flat_map(char::escape_debug).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = |host: &str, port, tls| Broker {
            host: host.into(),
            port,
            tls,
        };
        assert_eq!(
            Broker::parse("tcp://127.0.0.1:1883"),
            Ok(b("127.0.0.1", 1883, false))
        );
        assert_eq!(Broker::parse("mqtt://broker"), Ok(b("broker", 1883, false)));
        assert_eq!(Broker::parse("ssl://broker"), Ok(b("broker", 8883, true)));
        assert_eq!(
            Broker::parse("TLS://broker:9999/"),
            Ok(b("broker", 9999, true))
        );
        assert_eq!(
            Broker::parse("mqtts://[::1]:8884"),
            Ok(b("::1", 8884, true))
        );
        assert_eq!(Broker::parse("mqtts://[::1]"), Ok(b("::1", 8883, true)));
        for bad in [
            "broker:1883",
            "http://broker",
            "tcp://",
            "tcp://h:port",
            "tcp://h:70000",
        ] {
            assert!(Broker::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_grows_to_its_bound_with_jitter() {
        let mut b = Backoff::new();
        let mut steps = Vec::new();
        for _ in 0..12 {
            let before = b.step;
            let wait = b.next();
            assert!(
                wait >= before / 2 && wait <= before,
                "{wait:?} of {before:?}"
            );
            steps.push(before);
        }
        assert_eq!(steps[0], BACKOFF_MIN);
        assert_eq!(steps[1], BACKOFF_MIN * 2);
        assert_eq!(*steps.last().unwrap(), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.step, BACKOFF_MIN);
    }

    #[test]
    fn seen_forgets_the_oldest_beyond_its_bound() {
        let mut s = Seen::new();
        for k in 0..(SEEN as u64 + 1) {
            s.insert(k);
        }
        s.insert(5);
        assert!(!s.contains(0));
        assert!(s.contains(1) && s.contains(SEEN as u64));
        assert_eq!(s.order.len(), SEEN);
    }

    #[test]
    fn event_type_is_the_topic_last_segment_and_large_bodies_are_refused() {
        let d = Decoding {
            encoding: Encoding::Json,
            version: ChirpstackVersion::V4,
            network: NetworkKind::None,
            max_body: 64,
        };
        let p = |topic: &str, body: &[u8]| Publish::new(topic, QoS::AtLeastOnce, body.to_vec());
        let location = p(
            "application/a/device/0102030405060708/event/location",
            b"{}",
        );
        assert_eq!(decode(&location, d), Ok(None));
        let up = p(
            "application/a/device/0102030405060708/event/up",
            b"{\"deviceInfo\": 5}",
        );
        assert!(decode(&up, d).is_err());
        let big = p("application/a/device/x/event/location", &[b' '; 65]);
        assert!(decode(&big, d).unwrap_err().contains("max_body_bytes"));
    }

    #[test]
    fn log_text_is_bounded_and_escaped() {
        assert_eq!(bounded("a\nb\u{1b}"), "a\\nb\\u{1b}");
        let long = "x".repeat(300);
        assert_eq!(bounded(&long).chars().count(), 201);
    }

    #[test]
    fn shared_group_prefixes_the_topic() {
        let mut m = MqttConfig::default();
        assert_eq!(filter(&m), "application/+/device/+/event/+");
        m.shared_group = "lorafleet".into();
        assert_eq!(
            filter(&m),
            "$share/lorafleet/application/+/device/+/event/+"
        );
    }
}

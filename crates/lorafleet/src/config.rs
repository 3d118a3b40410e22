//! One typed configuration: built-in defaults, then the TOML file, then `LORAFLEET__SECTION__KEY`
//! environment variables, in that order of precedence (lowest first).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The simulated network's own settings, embedded as `network.simulated`.
pub use lorafleet_simulator::{SimulatedConfig, SimulatedDeviceOverride};

/// The whole configuration of a lorafleet server.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub integration: IntegrationConfig,
    pub network: NetworkConfig,
    pub status_protocol: StatusProtocolConfig,
    pub devices: DevicesConfig,
    pub firmware: FirmwareConfig,
    pub fuota: FuotaConfig,
    pub campaigns: CampaignsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port the HTTP server listens on.
    pub bind: String,
    /// Directory for the SQLite database, uploaded firmware and generated secrets.
    pub data_dir: PathBuf,
    /// Database URL: empty means `sqlite://<data_dir>/lorafleet.db`; `sqlite://...` or
    /// `postgres://...`.
    pub database_url: String,
    /// Largest accepted request body for JSON and integration endpoints, in bytes.
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request's headers.
    pub header_timeout_s: u64,
    /// Seconds a connection may move no byte before it is closed (idle keep-alive, a stalled
    /// upload, a client that stopped reading).
    pub idle_timeout_s: u64,
    /// Seconds a request may take, uploads excepted (they have the idle timeout).
    pub request_timeout_s: u64,
    /// Seconds a stop (SIGTERM, SIGINT) waits for requests in flight before closing them.
    pub shutdown_timeout_s: u64,
    /// Open connections at most (lowered to fit the open-files limit); beyond it, the
    /// connection idle the longest is closed.
    pub max_connections: usize,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For` and
    /// `X-Forwarded-Proto` are believed; from anyone else they are ignored.
    pub trusted_proxies: Vec<String>,
    /// `Secure` flag on the session cookie: `auto` (when the request carries
    /// `X-Forwarded-Proto: https`), `always` or `never`.
    pub secure_cookies: SecureCookies,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SecureCookies {
    #[default]
    Auto,
    Always,
    Never,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "0.0.0.0:8091".into(),
            data_dir: PathBuf::from("./lorafleet-data"),
            database_url: String::new(),
            max_body_bytes: 1024 * 1024,
            header_timeout_s: 10,
            idle_timeout_s: 60,
            request_timeout_s: 60,
            shutdown_timeout_s: 10,
            max_connections: 4096,
            trusted_proxies: Vec::new(),
            secure_cookies: SecureCookies::Auto,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Password for the `admin` user created on first start; empty generates a random one.
    pub initial_admin_password: String,
    /// Lifetime of a browser session, in hours.
    pub session_hours: u64,
    /// Failed logins allowed per user and client before further attempts are slowed down; a
    /// client address is slowed down after four times as many failures over all user names.
    pub max_failed_logins: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            initial_admin_password: String::new(),
            session_hours: 12,
            max_failed_logins: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChirpstackVersion {
    #[default]
    Auto,
    V3,
    V4,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrationConfig {
    /// Bearer token ChirpStack's HTTP integration must send; empty generates one on first start.
    pub token: String,
    /// Which ChirpStack generation posts events: `auto`, `v3` or `v4`.
    pub chirpstack_version: ChirpstackVersion,
    /// ChirpStack's MQTT integration as a second ingest transport.
    pub mqtt: MqttConfig,
}

/// How MQTT message bodies are encoded: ChirpStack's MQTT integration `json` setting.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MqttEncoding {
    #[default]
    Json,
    Protobuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Subscribe to ChirpStack's MQTT integration (in addition to the HTTP endpoint).
    pub enabled: bool,
    /// Broker URL: `tcp://host:1883` (or `mqtt://`), `ssl://`, `tls://` or `mqtts://` for TLS.
    pub server: String,
    pub username: String,
    pub password: String,
    /// Topic filter; the event type is the topic's last segment.
    pub topic: String,
    /// Client id of lorafleet's persistent session; empty: generated once and kept in the data
    /// dir, so a restart resumes the session and gets what the broker kept meanwhile.
    pub client_id: String,
    /// Non-empty: subscribe to `$share/<shared_group>/<topic>`, so several lorafleet instances
    /// share one stream and each message reaches one of them.
    pub shared_group: String,
    /// Subscription QoS (0, 1 or 2); from 1 on, a message is acknowledged after its commit.
    pub qos: u8,
    /// `json` or `protobuf`, as ChirpStack's MQTT integration is set (`json = true|false`).
    pub encoding: MqttEncoding,
    /// PEM file of the CA that signed the broker's certificate; empty: the system's roots.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for brokers that authenticate clients by certificate.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            server: "tcp://127.0.0.1:1883".into(),
            username: String::new(),
            password: String::new(),
            topic: "application/+/device/+/event/+".into(),
            client_id: String::new(),
            shared_group: String::new(),
            qos: 1,
            encoding: MqttEncoding::Json,
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
        }
    }
}

/// Where the broker is and whether to speak TLS, from `integration.mqtt.server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Broker {
    pub fn parse(url: &str) -> Result<Broker, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not a URL like tcp://host:1883"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "tcp" | "mqtt" => false,
            "ssl" | "tls" | "mqtts" => true,
            other => {
                return Err(format!(
                    "scheme {other:?} is not tcp://, mqtt://, ssl://, tls:// or mqtts://"
                ))
            }
        };
        let rest = rest.trim_end_matches('/');
        let default_port = if tls { 8883 } else { 1883 };
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("port {p:?} is not a number 1..65535"))
        };
        // An IPv6 address is written in brackets: [::1]:1883.
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?} has an unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, port(p)?),
                None if after.is_empty() => (host, default_port),
                None => return Err(format!("{url:?}: unexpected {after:?} after the address")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, port(p)?),
                None => (rest, default_port),
            }
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("{url:?} names no host"));
        }
        Ok(Broker {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkKind {
    None,
    ChirpstackV4,
    ChirpstackV3,
    /// The default: a fresh install shows a living fleet without any network server.
    #[default]
    Simulated,
}

impl NetworkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkKind::None => "none",
            NetworkKind::ChirpstackV4 => "chirpstack-v4",
            NetworkKind::ChirpstackV3 => "chirpstack-v3",
            NetworkKind::Simulated => "simulated",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// `none`, `chirpstack-v4`, `chirpstack-v3` or `simulated`.
    pub kind: NetworkKind,
    /// LoRaWAN region of the fleet (lrwn's region names, e.g. `EU868`, `US915`).
    pub region: String,
    /// Timeout of one request to the network server, in seconds.
    pub request_timeout_s: u64,
    pub chirpstack_v4: ChirpstackApiConfig,
    pub chirpstack_v3: ChirpstackApiConfig,
    pub simulated: SimulatedConfig,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            kind: NetworkKind::default(),
            region: "EU868".into(),
            request_timeout_s: 10,
            chirpstack_v4: ChirpstackApiConfig {
                api_url: "http://localhost:8080".into(),
                ..Default::default()
            },
            chirpstack_v3: ChirpstackApiConfig {
                api_url: "http://localhost:8080".into(),
                ..Default::default()
            },
            simulated: SimulatedConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChirpstackApiConfig {
    pub api_url: String,
    pub api_token: String,
    /// Applications whose devices are listed through the API (v4: UUIDs, v3: numeric ids).
    pub application_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StatusProtocolConfig {
    /// FPort of the Version & Status package.
    pub f_port: u8,
}

impl Default for StatusProtocolConfig {
    fn default() -> Self {
        Self { f_port: 111 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// Uplinks kept per device; older ones are pruned.
    pub uplink_history: u32,
    /// Device events kept per device.
    pub event_history: u32,
    /// A device not heard for this many seconds is offline in the device list; unset: three
    /// times the uplink interval observed on the fleet, or an hour before there is one.
    pub offline_after_s: Option<u64>,
    /// The device list counts a name search's matches up to this many; beyond, `total` is this
    /// number with `total_is_lower_bound` (the console shows "more than ..."), and pages are
    /// found by walking the sort order instead of sorting every match.
    pub search_count_cap: u32,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        Self {
            uplink_history: 100,
            event_history: 500,
            offline_after_s: None,
            search_count_cap: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FirmwareConfig {
    /// Directory scanned for firmware images at start and on demand.
    pub dir: PathBuf,
    /// Largest accepted firmware upload, in bytes.
    pub max_size: u64,
}

impl Default for FirmwareConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("bin"),
            max_size: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FuotaConfig {
    /// Seconds between two polls of a running campaign's FUOTA service.
    pub poll_interval_s: u64,
    /// Seconds the network server leaves between two Class C multicast downlinks (ChirpStack's
    /// `network.scheduler.multicast_class_c_margin`); the plan uses it for the session length.
    pub class_c_margin_s: u64,
    /// The region limits downlinks to 400 ms dwell time (AS923, AU915 when so configured).
    pub downlink_dwell_time_400ms: bool,
    /// Answer TS003 AppTimeReq uplinks (FPort 202, or the device's own in a running engine
    /// campaign). Devices whose ChirpStack v4 profile enables TS003 are skipped either way, so
    /// they do not get two answers; off turns lorafleet's answers off for every device.
    pub clock_sync: bool,
    pub server_v3: FuotaServerV3Config,
    pub chirpstack_v4: FuotaChirpstackV4Config,
}

impl Default for FuotaConfig {
    fn default() -> Self {
        Self {
            poll_interval_s: 10,
            class_c_margin_s: 5,
            downlink_dwell_time_400ms: false,
            clock_sync: true,
            server_v3: FuotaServerV3Config::default(),
            chirpstack_v4: FuotaChirpstackV4Config::default(),
        }
    }
}

/// How instances sharing one database share the running campaigns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CampaignsConfig {
    /// Seconds an instance holds a running campaign without renewing its lease; a campaign
    /// whose owner died is taken over by another instance after this (plus one poll).
    pub lease_s: u64,
}

impl Default for CampaignsConfig {
    fn default() -> Self {
        Self { lease_s: 30 }
    }
}

/// Fallbacks for ChirpStack v4 deployments when a device's own record lacks them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FuotaChirpstackV4Config {
    /// Application UUID deployments are created in (default: the devices' application).
    pub application_id: String,
    /// Device-profile UUID (default: the devices' profile).
    pub device_profile_id: String,
    /// Seconds past its run time after which a deployment job ChirpStack has not run again
    /// counts as stalled: the devices still in it fail with the job's message.
    pub stall_after_s: u64,
}

impl Default for FuotaChirpstackV4Config {
    fn default() -> Self {
        Self {
            application_id: String::new(),
            device_profile_id: String::new(),
            // ChirpStack's scheduler looks every second; a quarter of an hour is no hiccup.
            stall_after_s: 900,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FuotaServerV3Config {
    /// gRPC URL of chirpstack-fuota-server v3.
    pub url: String,
    /// ChirpStack v3 application id deployments are created in.
    pub application_id: i64,
}

impl Default for FuotaServerV3Config {
    fn default() -> Self {
        Self {
            url: "http://localhost:8070".into(),
            application_id: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter, e.g. `info` or `lorafleet=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// The default configuration as a commented TOML document (`lorafleet configfile`).
pub const DEFAULT_TOML: &str = include_str!("default_config.toml");

const ENV_PREFIX: &str = "LORAFLEET__";

impl Config {
    /// Loads defaults, then `path` if given, then environment overrides.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    pub fn load_with_env(path: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<Config> {
        let mut doc: toml::Value =
            toml::Value::try_from(Config::default()).context("serialising defaults")?;
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let file: toml::Value = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            merge(&mut doc, file);
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
            if keys.iter().any(|k| k.is_empty()) {
                bail!("environment variable {name}: empty key segment");
            }
            set_path(&mut doc, &keys, value)
                .with_context(|| format!("environment variable {name}"))?;
        }
        let config: Config = doc
            .try_into()
            .context("invalid configuration (check key names and value types)")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for p in &self.server.trusted_proxies {
            if crate::auth::IpNet::parse(p).is_none() {
                bail!("server.trusted_proxies: {p:?} is not an IP address or CIDR block");
            }
        }
        if self.status_protocol.f_port == 0 || self.status_protocol.f_port > 223 {
            bail!(
                "status_protocol.f_port must be 1..223, got {}",
                self.status_protocol.f_port
            );
        }
        if self.campaigns.lease_s < 3 || self.campaigns.lease_s > 3600 {
            // Renewed every lease_s / 3 seconds: under 3 s the renewals would be sub-second.
            bail!(
                "campaigns.lease_s must be 3..3600 seconds, got {}",
                self.campaigns.lease_s
            );
        }
        if self.devices.uplink_history == 0 {
            bail!("devices.uplink_history must be at least 1");
        }
        if parse_region(&self.network.region).is_none() {
            bail!(
                "network.region {:?} is not a known LoRaWAN region",
                self.network.region
            );
        }
        if let Err(e) = self.network.simulated.validate() {
            bail!("network.simulated.{e}");
        }
        self.validate_mqtt()
    }

    fn validate_mqtt(&self) -> anyhow::Result<()> {
        let m = &self.integration.mqtt;
        if !m.enabled {
            return Ok(());
        }
        Broker::parse(&m.server).map_err(|e| anyhow::anyhow!("integration.mqtt.server: {e}"))?;
        if m.qos > 2 {
            bail!("integration.mqtt.qos must be 0, 1 or 2, got {}", m.qos);
        }
        if m.topic.is_empty() {
            bail!("integration.mqtt.topic must not be empty");
        }
        if m.shared_group.contains(['/', '+', '#']) {
            bail!("integration.mqtt.shared_group must not contain '/', '+' or '#'");
        }
        if m.cert_file.as_os_str().is_empty() != m.key_file.as_os_str().is_empty() {
            bail!("integration.mqtt.cert_file and key_file go together: set both or neither");
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        if self.server.database_url.is_empty() {
            format!("sqlite://{}/lorafleet.db", self.server.data_dir.display())
        } else {
            self.server.database_url.clone()
        }
    }
}

/// Parses a region name as lrwn spells it (`EU868`, `AS923-2`, ...), case-insensitively.
pub fn parse_region(s: &str) -> Option<lrwn::region::CommonName> {
    s.to_ascii_uppercase().parse().ok()
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn set_path(doc: &mut toml::Value, keys: &[String], raw: &str) -> anyhow::Result<()> {
    let (last, parents) = keys.split_last().context("empty key")?;
    let mut node = doc;
    for key in parents {
        let table = node.as_table_mut().context("not a section")?;
        node = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let table = node.as_table_mut().context("not a section")?;
    // Type the value like the default it replaces, so `8091`-like strings stay strings where a
    // string is expected and lists can be given comma-separated.
    let value = match table.get(last) {
        Some(toml::Value::String(_)) | None => toml::Value::String(raw.to_string()),
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.trim()
                .parse()
                .with_context(|| format!("{raw:?} is not an integer"))?,
        ),
        Some(toml::Value::Float(_)) => toml::Value::Float(
            raw.trim()
                .parse()
                .with_context(|| format!("{raw:?} is not a number"))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            raw.trim()
                .parse()
                .with_context(|| format!("{raw:?} is not true/false"))?,
        ),
        Some(toml::Value::Array(_)) => {
            if raw.trim_start().starts_with('[') {
                let wrapped: toml::Value = toml::from_str(&format!("v = {raw}"))
                    .with_context(|| format!("{raw:?} is not a TOML array"))?;
                wrapped.get("v").cloned().context("array")?
            } else {
                toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                )
            }
        }
        Some(_) => bail!("is a section, not a value"),
    };
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_default_config_is_the_default() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).expect("default config parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn environment_overrides_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[server]\nbind = \"127.0.0.1:1\"\n[network]\nkind = \"chirpstack-v3\"\n",
        )
        .unwrap();
        let env = vec![
            (
                "LORAFLEET__NETWORK__CHIRPSTACK_V4__API_URL".to_string(),
                "http://cs:8080".to_string(),
            ),
            (
                "LORAFLEET__STATUS_PROTOCOL__F_PORT".to_string(),
                "110".to_string(),
            ),
            (
                "LORAFLEET__NETWORK__CHIRPSTACK_V4__APPLICATION_IDS".to_string(),
                "a, b".to_string(),
            ),
            (
                "LORAFLEET__NETWORK__SIMULATED__LOSS".to_string(),
                "0.1".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::load_with_env(Some(&path), &env).unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:1");
        assert_eq!(c.network.kind, NetworkKind::ChirpstackV3);
        assert_eq!(c.network.chirpstack_v4.api_url, "http://cs:8080");
        assert_eq!(c.network.chirpstack_v4.application_ids, vec!["a", "b"]);
        assert_eq!(c.status_protocol.f_port, 110);
        assert_eq!(c.network.simulated.loss, 0.1);
        assert_eq!(c.server.data_dir, PathBuf::from("./lorafleet-data"));
    }

    #[test]
    fn mqtt_section_from_the_environment() {
        let var = |k: &str, v: &str| (format!("LORAFLEET__INTEGRATION__MQTT__{k}"), v.to_string());
        let env = vec![
            var("ENABLED", "true"),
            var("SERVER", "mqtts://broker:8884"),
            var("QOS", "2"),
            var("ENCODING", "protobuf"),
            var("SHARED_GROUP", "lorafleet"),
            var("CA_FILE", "/etc/ca.pem"),
        ];
        let c = Config::load_with_env(None, &env).unwrap();
        let m = &c.integration.mqtt;
        assert!(m.enabled);
        assert_eq!(m.server, "mqtts://broker:8884");
        assert_eq!(m.qos, 2);
        assert_eq!(m.encoding, MqttEncoding::Protobuf);
        assert_eq!(m.shared_group, "lorafleet");
        assert_eq!(m.ca_file, PathBuf::from("/etc/ca.pem"));
        assert_eq!(m.topic, "application/+/device/+/event/+");
        for (k, v, named) in [
            ("SERVER", "http://broker", "integration.mqtt.server"),
            ("QOS", "3", "integration.mqtt.qos"),
            ("SHARED_GROUP", "a/b", "integration.mqtt.shared_group"),
            ("CERT_FILE", "/c.pem", "integration.mqtt.cert_file"),
        ] {
            let env = vec![var("ENABLED", "true"), var(k, v)];
            let err = format!("{:#}", Config::load_with_env(None, &env).unwrap_err());
            assert!(err.contains(named), "{k}={v}: {err}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_name() {
        let env = vec![(
            "LORAFLEET__STATUS_PROTOCOL__F_PORT".to_string(),
            "abc".to_string(),
        )];
        let err = format!("{:#}", Config::load_with_env(None, &env).unwrap_err());
        assert!(err.contains("LORAFLEET__STATUS_PROTOCOL__F_PORT"), "{err}");
        let env = vec![(
            "LORAFLEET__NETWORK__KIND".to_string(),
            "chirpstack-v5".to_string(),
        )];
        assert!(Config::load_with_env(None, &env).is_err());
        let env = vec![(
            "LORAFLEET__NETWORK__REGION".to_string(),
            "MARS433".to_string(),
        )];
        assert!(Config::load_with_env(None, &env).is_err());
        let env = vec![(
            "LORAFLEET__SERVER__NO_SUCH_KEY".to_string(),
            "1".to_string(),
        )];
        assert!(Config::load_with_env(None, &env).is_err());
    }

    #[test]
    fn trusted_proxies_and_secure_cookies_are_checked() {
        let env = |k: &str, v: &str| vec![(format!("LORAFLEET__SERVER__{k}"), v.to_string())];
        let c =
            Config::load_with_env(None, &env("TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")).unwrap();
        assert_eq!(c.server.trusted_proxies, ["10.0.0.0/8", "127.0.0.1"]);
        let err = format!(
            "{:#}",
            Config::load_with_env(None, &env("TRUSTED_PROXIES", "10.0.0.0/40")).unwrap_err()
        );
        assert!(err.contains("server.trusted_proxies"), "{err}");
        let c = Config::load_with_env(None, &env("SECURE_COOKIES", "always")).unwrap();
        assert_eq!(c.server.secure_cookies, SecureCookies::Always);
        assert!(Config::load_with_env(None, &env("SECURE_COOKIES", "sometimes")).is_err());
    }

    #[test]
    fn the_campaign_lease_comes_from_toml_or_the_environment_and_is_checked() {
        assert_eq!(Config::default().campaigns.lease_s, 30);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[campaigns]\nlease_s = 12\n").unwrap();
        assert_eq!(
            Config::load_with_env(Some(&path), &[])
                .unwrap()
                .campaigns
                .lease_s,
            12
        );
        let env = |v: &str| vec![("LORAFLEET__CAMPAIGNS__LEASE_S".to_string(), v.to_string())];
        let c = Config::load_with_env(Some(&path), &env("5")).unwrap();
        assert_eq!(c.campaigns.lease_s, 5);
        for bad in ["0", "2", "3601"] {
            let err = format!("{:#}", Config::load_with_env(None, &env(bad)).unwrap_err());
            assert!(err.contains("campaigns.lease_s"), "{bad}: {err}");
        }
    }
}

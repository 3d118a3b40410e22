//! The one harness of the integration tests: the real router (`spawn_app`) or the real
//! `lorafleet` process (`spawn_binary`) on a loopback port chosen by the system, each with a
//! temporary data dir, database and firmware dir of its own, talked to over HTTP as a client.
#![allow(dead_code)]

mod binary;
pub mod browser;
pub mod fake_chirpstack_v4;
pub mod fake_network_server;
pub mod postgres;

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lorafleet::config::Config;
use lorafleet::network::Network;
use lorafleet::{App, AppState};

// Not every test file starts the binary.
#[allow(unused_imports)]
pub use binary::{cli, run_binary_to_exit, spawn_binary, try_spawn_binary, TestBinary};

/// An impl of a generated gRPC service trait for a fake server: the calls written out, every
/// other call answering "unimplemented" (async_trait must see the whole impl, hence one macro
/// around it). The caller has `api` (the generated module), `Request`, `Response` and `Status`
/// in scope.
macro_rules! grpc_service {
    ($tr:ident for $ty:ty { $($call:item)* } unimplemented { $($name:ident($req:ident) -> $resp:ty;)* }) => {
        #[tonic::async_trait]
        impl $tr for $ty {
            $($call)*
            $(async fn $name(&self, _r: Request<api::$req>) -> Result<Response<$resp>, Status> {
                Err(Status::unimplemented(stringify!($name)))
            })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use grpc_service;

pub const PASSWORD: &str = "test-password-123";
pub const INTEGRATION_TOKEN: &str = "integration-token";

/// A test's configuration and the temporary directory its data and firmware live in; derefs to
/// the `Config`, so a test changes any key before it spawns the app or the binary.
pub struct TestConfig {
    pub config: Config,
    /// A network of the test's own instead of the one `network.kind` would build (for the
    /// router only; named apart from `Config::network`, which the deref reaches).
    pub own_network: Option<Arc<dyn Network>>,
    dir: tempfile::TempDir,
}

/// Defaults with a known admin password and integration token, data in `<tmp>/data` (created
/// by lorafleet, as on a first start), firmware in `<tmp>/bin` and no network: the default
/// kind, simulated, would change the campaign defaults (driver, duty cycle) behind a test's back.
/// With `LORAFLEET_TEST_BACKEND=postgres` the database is a fresh one on the test cluster
/// ([`postgres`]).
/// The messages of a campaign's log (its JSON as `GET /api/campaigns/{id}` gives it), oldest first.
pub fn campaign_log(c: &serde_json::Value) -> Vec<&str> {
    c["log"]
        .as_array()
        .map(|lines| lines.iter().filter_map(|l| l["message"].as_str()).collect())
        .unwrap_or_default()
}

pub fn test_config() -> TestConfig {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.server.data_dir = dir.path().join("data");
    config.firmware.dir = dir.path().join("bin");
    config.auth.initial_admin_password = PASSWORD.into();
    config.integration.token = INTEGRATION_TOKEN.into();
    config.network.kind = lorafleet::config::NetworkKind::None;
    if postgres::backend_is_postgres() {
        config.server.database_url = postgres::fresh_database().unwrap_or_else(|| {
            panic!(
                "{} is postgres but {} is not set",
                postgres::BACKEND_VAR,
                postgres::URL_VAR
            )
        });
    }
    TestConfig {
        config,
        own_network: None,
        dir,
    }
}

impl TestConfig {
    /// The temporary directory holding the data dir, the firmware dir and the binary's logs.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn with(mut self, configure: impl FnOnce(&mut Config)) -> Self {
        configure(&mut self.config);
        self
    }

    pub fn with_network(mut self, network: Arc<dyn Network>) -> Self {
        self.own_network = Some(network);
        self
    }
}

impl Deref for TestConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl DerefMut for TestConfig {
    fn deref_mut(&mut self) -> &mut Config {
        &mut self.config
    }
}

/// The real router of an app built from `config`, served on 127.0.0.1 port 0.
pub struct TestApp {
    pub base: String,
    pub app: AppState,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    pub firmware_dir: PathBuf,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app(config: TestConfig) -> TestApp {
    let TestConfig {
        config,
        own_network,
        dir,
    } = config;
    let data_dir = config.server.data_dir.clone();
    let firmware_dir = config.firmware.dir.clone();
    let (app, _) = match own_network {
        Some(n) => App::build_with_network(config, n).await.unwrap(),
        None => App::build(config).await.unwrap(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = lorafleet::web::router(app.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    TestApp {
        base: format!("http://{addr}"),
        app,
        http: reqwest::Client::new(),
        data_dir,
        firmware_dir,
        _dir: dir,
    }
}

/// `spawn_app` of the test configuration changed by `configure`, with `network` if given.
pub async fn spawn(
    configure: impl FnOnce(&mut Config),
    network: Option<Arc<dyn Network>>,
) -> TestApp {
    let mut config = test_config().with(configure);
    config.own_network = network;
    spawn_app(config).await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .basic_auth("admin", Some(PASSWORD))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .basic_auth("admin", Some(PASSWORD))
    }

    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .patch(self.url(path))
            .basic_auth("admin", Some(PASSWORD))
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(self.url(path))
            .basic_auth("admin", Some(PASSWORD))
    }

    /// Posts an integration event the way ChirpStack's HTTP integration does.
    pub async fn ingest(
        &self,
        event: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/api/integrations/chirpstack?event={event}")))
            .bearer_auth(INTEGRATION_TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn device(&self, eui: &str) -> serde_json::Value {
        let r = self
            .get(&format!("/api/devices/{eui}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "device {eui}");
        r.json().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// POST /api/firmware with a hand-built multipart body (field `file`).
    pub async fn upload(&self, file_name: &str, bytes: &[u8]) -> (u16, serde_json::Value) {
        let boundary = "lorafleet-test-boundary-7d1f";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let r = self
            .post("/api/firmware")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let json = r.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// Inserts a device as if the integration had seen it.
    pub async fn add_device(&self, dev_eui: &str, profile: Option<&str>, slot_size: Option<i64>) {
        crate::on_db!(&self.app.db, p => sqlx::query(
            "INSERT INTO devices (dev_eui, name, application_id, device_profile_id, slot_size, created_at, last_seen)
             VALUES ($1, $2, 'app-1', $3, $4, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
        )
        .bind(dev_eui)
        .bind(format!("device {dev_eui}"))
        .bind(profile)
        .bind(slot_size)
        .execute(p)
        .await
        .map(|_| ()))
        .unwrap();
    }
}

/// The URL of a peer that never answers: a loopback port this test holds (so no other test can
/// take it, as it could a port freed for the purpose) that closes every connection at once.
pub async fn silent_peer() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            drop(connection);
        }
    });
    format!("http://{addr}")
}

/// The signed demo patch of the codec crate's fixtures.
pub const FIXTURE: &[u8] =
    include_bytes!("../../../lorafleet-codec/tests/fixtures/patch_demo_jdiff_v1v2.bin_signed");

/// A ChirpStack v4 uplink event as JSON, the way ChirpStack renders it.
pub fn v4_uplink_json(eui: &str, f_port: u32, f_cnt: u32, data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    serde_json::json!({
        // One id per frame, as ChirpStack gives: a repeated id is a repeated post, stored once.
        "deduplicationId": format!("3b8ac6a0-{eui}-{f_cnt:08x}"),
        "time": "2026-11-27T10:00:00.123Z",
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
            "tenantName": "ChirpStack",
            "applicationId": "ff2b8a3f-0000-4000-8000-000000000001",
            "applicationName": "meters",
            "deviceProfileId": "0b2e3c9a-0000-4000-8000-000000000001",
            "deviceProfileName": "class-a",
            "deviceName": format!("meter-{eui}"),
            "devEui": eui,
            "deviceClassEnabled": "CLASS_A",
            "tags": {"site": "north"}
        },
        "devAddr": "01fa2b3c",
        "adr": true,
        "dr": 5,
        "fCnt": f_cnt,
        "fPort": f_port,
        "confirmed": false,
        "data": base64::engine::general_purpose::STANDARD.encode(data),
        "object": {"temperature": 21.5},
        "rxInfo": [
            {"gatewayId": "0016c001ff10d3f6", "uplinkId": 1, "rssi": -57, "snr": 9.5, "context": "AAAA", "crcStatus": "CRC_OK"},
            {"gatewayId": "0016c001ff10d3f7", "uplinkId": 2, "rssi": -101, "snr": -3.0}
        ],
        "txInfo": {"frequency": 868100000, "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}}}
    })
    .to_string()
    .into_bytes()
}

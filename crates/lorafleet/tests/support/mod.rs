//! Helpers of the firmware and campaign tests: the real router on a random port with a
//! temporary database and firmware directory, uploads, and devices put in the inventory.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use lorafleet::config::Config;
use lorafleet::network::Network;
use lorafleet::{App, AppState};

pub const PASSWORD: &str = "test-password-123";

pub struct TestApp {
    pub app: AppState,
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    pub firmware_dir: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

pub fn test_config() -> (Config, Vec<tempfile::TempDir>) {
    let data = tempfile::tempdir().unwrap();
    let fw = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data_dir = data.path().to_path_buf();
    config.firmware.dir = fw.path().to_path_buf();
    config.auth.initial_admin_password = PASSWORD.into();
    config.integration.token = "integration-token".into();
    // The tests bring their own network (Disabled unless they say otherwise); the default kind,
    // simulated, would change the campaign defaults (driver, duty cycle) behind their back.
    config.network.kind = lorafleet::config::NetworkKind::None;
    (config, vec![data, fw])
}

pub async fn spawn_app(config: Config, dirs: Vec<tempfile::TempDir>) -> TestApp {
    spawn_app_with_network(
        config,
        dirs,
        Arc::new(lorafleet::network::disabled::Disabled),
    )
    .await
}

pub async fn spawn_app_with_network(
    config: Config,
    dirs: Vec<tempfile::TempDir>,
    network: Arc<dyn Network>,
) -> TestApp {
    let data_dir = config.server.data_dir.clone();
    let firmware_dir = config.firmware.dir.clone();
    let (app, _) = App::build_with_network(config, network).await.unwrap();
    let router = lorafleet::web::router(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    TestApp {
        app,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        data_dir,
        firmware_dir,
        _dirs: dirs,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(self.url(path))
            .basic_auth("admin", Some(PASSWORD))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .basic_auth("admin", Some(PASSWORD))
    }

    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .patch(self.url(path))
            .basic_auth("admin", Some(PASSWORD))
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .delete(self.url(path))
            .basic_auth("admin", Some(PASSWORD))
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

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Inserts a device as if the integration had seen it.
    pub async fn add_device(&self, dev_eui: &str, profile: Option<&str>, slot_size: Option<i64>) {
        sqlx::query(
            "INSERT INTO devices (dev_eui, name, application_id, device_profile_id, slot_size, created_at, last_seen)
             VALUES (?, ?, 'app-1', ?, ?, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
        )
        .bind(dev_eui)
        .bind(format!("device {dev_eui}"))
        .bind(profile)
        .bind(slot_size)
        .execute(&self.app.db)
        .await
        .unwrap();
    }
}

pub const FIXTURE: &[u8] =
    include_bytes!("../../../lorafleet-codec/tests/fixtures/patch_demo_jdiff_v1v2.bin_signed");

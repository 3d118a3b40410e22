//! Starts the real router on a random loopback port with a fresh database, as a client sees it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use lorafleet::config::Config;
use lorafleet::network::Network;
use lorafleet::{App, AppState};

pub const PASSWORD: &str = "test-password-123";
pub const INTEGRATION_TOKEN: &str = "integration-secret";

pub struct TestApp {
    pub base: String,
    pub app: AppState,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".into();
    config.server.data_dir = dir.to_path_buf();
    config.auth.initial_admin_password = PASSWORD.into();
    config.integration.token = INTEGRATION_TOKEN.into();
    config.network.kind = lorafleet::config::NetworkKind::None;
    config
}

pub async fn spawn(
    configure: impl FnOnce(&mut Config),
    network: Option<Arc<dyn Network>>,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    configure(&mut config);
    let (app, _) = match network {
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
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
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
}

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

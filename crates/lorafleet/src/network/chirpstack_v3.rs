//! ChirpStack Application Server v3 through its REST API (the gRPC gateway), authenticated with
//! an API token in `Grpc-Metadata-Authorization`.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{Downlink, Enqueued, Network, NetworkError, RemoteDevice};
use crate::config::{ChirpstackApiConfig, NetworkKind};

/// A ChirpStack v3 Application Server.
pub struct ChirpstackV3 {
    base_url: String,
    api_token: String,
    application_ids: Vec<String>,
    http: reqwest::Client,
    timeout: Duration,
}

impl ChirpstackV3 {
    pub fn new(config: &ChirpstackApiConfig, timeout: Duration) -> anyhow::Result<Self> {
        let base_url = config.api_url.trim_end_matches('/').to_string();
        reqwest::Url::parse(&base_url).map_err(|e| {
            anyhow::anyhow!("network.chirpstack_v3.api_url {:?}: {e}", config.api_url)
        })?;
        Ok(Self {
            base_url,
            api_token: config.api_token.clone(),
            application_ids: config.application_ids.clone(),
            http: reqwest::Client::builder().timeout(timeout).build()?,
            timeout,
        })
    }

    fn map_error(&self, e: reqwest::Error) -> NetworkError {
        if e.is_timeout() {
            NetworkError::Timeout(self.timeout.as_secs())
        } else {
            NetworkError::Unreachable {
                url: self.base_url.clone(),
                reason: e.to_string(),
            }
        }
    }

    async fn refusal(response: reqwest::Response) -> NetworkError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        // The gRPC gateway answers {"error": "...", "message": "...", "code": n}.
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .or_else(|| v.get("error"))
                    .and_then(|m| m.as_str().map(str::to_string))
            })
            .unwrap_or(body);
        match status.as_u16() {
            404 => NetworkError::UnknownDevice(message),
            401 | 403 => NetworkError::Refused(format!(
                "{message} (HTTP {status}; check network.chirpstack_v3.api_token)"
            )),
            _ => NetworkError::Refused(format!("HTTP {status}: {message}")),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnqueueResponse {
    #[serde(default)]
    f_cnt: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListResponse {
    #[serde(default, deserialize_with = "number_or_string")]
    total_count: u64,
    #[serde(default)]
    result: Vec<ListItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListItem {
    #[serde(rename = "devEUI")]
    dev_eui: String,
    #[serde(default)]
    name: String,
    #[serde(default, rename = "applicationID")]
    application_id: String,
    #[serde(default, rename = "deviceProfileID")]
    device_profile_id: Option<String>,
    #[serde(default)]
    device_profile_name: Option<String>,
    #[serde(default)]
    last_seen_at: Option<DateTime<Utc>>,
}

/// The gRPC gateway renders 64-bit integers as strings.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match v {
        serde_json::Value::Number(n) => Ok(n.as_u64().unwrap_or(0)),
        serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        _ => Ok(0),
    }
}

#[async_trait]
impl Network for ChirpstackV3 {
    fn kind(&self) -> NetworkKind {
        NetworkKind::ChirpstackV3
    }

    async fn enqueue(&self, downlink: &Downlink) -> Result<Enqueued, NetworkError> {
        let dev_eui = downlink.dev_eui.to_string();
        let body = json!({
            "deviceQueueItem": {
                "confirmed": downlink.confirmed,
                "data": base64::engine::general_purpose::STANDARD.encode(&downlink.data),
                "devEUI": dev_eui,
                "fPort": downlink.f_port,
            }
        });
        let response = self
            .http
            .post(format!("{}/api/devices/{dev_eui}/queue", self.base_url))
            .header(
                "Grpc-Metadata-Authorization",
                format!("Bearer {}", self.api_token),
            )
            .json(&body)
            .send()
            .await
            .map_err(|e| self.map_error(e))?;
        if !response.status().is_success() {
            return Err(Self::refusal(response).await);
        }
        let parsed: EnqueueResponse = response
            .json()
            .await
            .unwrap_or(EnqueueResponse { f_cnt: None });
        Ok(Enqueued {
            network_ref: parsed.f_cnt.map(|f| f.to_string()),
            f_cnt: parsed.f_cnt,
        })
    }

    async fn list_devices(&self) -> Result<Vec<RemoteDevice>, NetworkError> {
        let mut out = Vec::new();
        for application_id in &self.application_ids {
            let mut offset = 0u64;
            loop {
                let response = self
                    .http
                    .get(format!("{}/api/devices", self.base_url))
                    .query(&[
                        ("applicationID", application_id.as_str()),
                        ("limit", "500"),
                        ("offset", &offset.to_string()),
                    ])
                    .header(
                        "Grpc-Metadata-Authorization",
                        format!("Bearer {}", self.api_token),
                    )
                    .send()
                    .await
                    .map_err(|e| self.map_error(e))?;
                if !response.status().is_success() {
                    return Err(Self::refusal(response).await);
                }
                let page: ListResponse = response
                    .json()
                    .await
                    .map_err(|e| NetworkError::Other(format!("unexpected device list: {e}")))?;
                let got = page.result.len() as u64;
                for item in page.result {
                    let app = if item.application_id.is_empty() {
                        application_id.clone()
                    } else {
                        item.application_id
                    };
                    out.extend(RemoteDevice::listed(
                        &item.dev_eui,
                        item.name,
                        app,
                        item.device_profile_id,
                        item.device_profile_name,
                        item.last_seen_at,
                    ));
                }
                offset += got;
                if got == 0 || offset >= page.total_count {
                    break;
                }
            }
        }
        Ok(out)
    }
}

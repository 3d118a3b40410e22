//! ChirpStack v4 through its gRPC API (`api.DeviceService`), authenticated with an API key.

use std::time::Duration;

use async_trait::async_trait;
use chirpstack_api::api;
use chirpstack_api::api::device_service_client::DeviceServiceClient;
use chrono::{DateTime, Utc};
use tonic::transport::{Channel, Endpoint};

use super::{Downlink, Enqueued, Network, NetworkError, RemoteDevice};
use crate::config::{ChirpstackApiConfig, NetworkKind};
use crate::devices::DevEui;

/// A ChirpStack v4 network server.
pub struct ChirpstackV4 {
    url: String,
    channel: Channel,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    application_ids: Vec<String>,
    timeout: Duration,
}

impl ChirpstackV4 {
    pub fn new(config: &ChirpstackApiConfig, timeout: Duration) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(config.api_url.clone())
            .map_err(|e| {
                anyhow::anyhow!("network.chirpstack_v4.api_url {:?}: {e}", config.api_url)
            })?
            .connect_timeout(timeout)
            .timeout(timeout);
        let authorization = format!("Bearer {}", config.api_token)
            .parse()
            .map_err(|_| {
                anyhow::anyhow!(
                    "network.chirpstack_v4.api_token contains characters not allowed in a header"
                )
            })?;
        Ok(Self {
            url: config.api_url.clone(),
            channel: endpoint.connect_lazy(),
            authorization,
            application_ids: config.application_ids.clone(),
            timeout,
        })
    }

    /// Builds a request carrying the API key, as ChirpStack expects in gRPC metadata.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request.set_timeout(self.timeout);
        request
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn map_status(&self, status: tonic::Status) -> NetworkError {
        map_status(&self.url, self.timeout, status)
    }
}

/// Turns a gRPC status into words: ChirpStack's own message is kept.
pub fn map_status(url: &str, timeout: Duration, status: tonic::Status) -> NetworkError {
    use tonic::Code;
    match status.code() {
        Code::DeadlineExceeded => NetworkError::Timeout(timeout.as_secs()),
        Code::Unavailable => NetworkError::Unreachable {
            url: url.to_string(),
            reason: status.message().to_string(),
        },
        Code::NotFound => NetworkError::UnknownDevice(status.message().to_string()),
        Code::Unauthenticated | Code::PermissionDenied => NetworkError::Refused(format!(
            "{} (check network.chirpstack_v4.api_token)",
            status.message()
        )),
        _ => NetworkError::Refused(format!("{:?}: {}", status.code(), status.message())),
    }
}

fn timestamp(ts: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    DateTime::from_timestamp(ts.seconds, ts.nanos.max(0) as u32)
}

#[async_trait]
impl Network for ChirpstackV4 {
    fn kind(&self) -> NetworkKind {
        NetworkKind::ChirpstackV4
    }

    async fn enqueue(&self, downlink: &Downlink) -> Result<Enqueued, NetworkError> {
        let mut client = DeviceServiceClient::new(self.channel.clone());
        let request = self.request(api::EnqueueDeviceQueueItemRequest {
            queue_item: Some(api::DeviceQueueItem {
                dev_eui: downlink.dev_eui.to_string(),
                confirmed: downlink.confirmed,
                f_port: downlink.f_port as u32,
                data: downlink.data.clone(),
                ..Default::default()
            }),
            flush_queue: false,
        });
        let response = client
            .enqueue(request)
            .await
            .map_err(|s| self.map_status(s))?
            .into_inner();
        Ok(Enqueued {
            network_ref: Some(response.id),
            f_cnt: None,
        })
    }

    async fn list_devices(&self) -> Result<Vec<RemoteDevice>, NetworkError> {
        let mut client = DeviceServiceClient::new(self.channel.clone());
        let mut out = Vec::new();
        for application_id in &self.application_ids {
            let mut offset = 0u32;
            loop {
                let request = self.request(api::ListDevicesRequest {
                    limit: 500,
                    offset,
                    application_id: application_id.clone(),
                    ..Default::default()
                });
                let page = client
                    .list(request)
                    .await
                    .map_err(|s| self.map_status(s))?
                    .into_inner();
                let got = page.result.len() as u32;
                for item in page.result {
                    let Ok(dev_eui) = item.dev_eui.parse::<DevEui>() else {
                        continue;
                    };
                    out.push(RemoteDevice {
                        dev_eui,
                        name: item.name,
                        application_id: application_id.clone(),
                        application_name: None,
                        device_profile_id: Some(item.device_profile_id),
                        device_profile_name: Some(item.device_profile_name),
                        last_seen: timestamp(item.last_seen_at),
                    });
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

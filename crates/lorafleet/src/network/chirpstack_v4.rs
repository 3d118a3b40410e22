//! ChirpStack v4 through its gRPC API (`api.DeviceService`), authenticated with an API key.

use std::time::Duration;

use async_trait::async_trait;
use chirpstack_api::api;
use chirpstack_api::api::application_service_client::ApplicationServiceClient;
use chirpstack_api::api::device_service_client::DeviceServiceClient;
use chirpstack_api::api::multicast_group_service_client::MulticastGroupServiceClient;

use tonic::transport::{Channel, Endpoint};

use super::{
    DeviceKeys, Downlink, Enqueued, MulticastClass, MulticastGroup, Network, NetworkError,
    RemoteDevice,
};
use crate::config::{ChirpstackApiConfig, NetworkKind};
use crate::devices::DevEui;
use crate::timestamp::to_utc;

/// One connection to ChirpStack v4's gRPC API with its API key, shared by the network backend
/// and the ChirpStack v4 campaign driver. Cloning shares the channel (and so the connection).
#[derive(Clone)]
pub struct Client {
    url: String,
    channel: Channel,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    timeout: Duration,
}

impl Client {
    /// Connects lazily (the first call connects), so a ChirpStack that is down at start is
    /// only an error when it is used.
    pub fn new(config: &ChirpstackApiConfig, timeout: Duration) -> Result<Client, String> {
        let endpoint = Endpoint::from_shared(config.api_url.clone())
            .map_err(|e| format!("network.chirpstack_v4.api_url {:?}: {e}", config.api_url))?
            .connect_timeout(timeout)
            .timeout(timeout);
        let authorization = format!("Bearer {}", config.api_token)
            .parse()
            .map_err(|_| {
                "network.chirpstack_v4.api_token contains characters not allowed in a header"
                    .to_string()
            })?;
        Ok(Client {
            url: config.api_url.clone(),
            channel: endpoint.connect_lazy(),
            authorization,
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

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A ChirpStack v4 network server.
pub struct ChirpstackV4 {
    client: Client,
    application_ids: Vec<String>,
    region: chirpstack_api::common::Region,
}

impl ChirpstackV4 {
    pub fn new(config: &ChirpstackApiConfig, timeout: Duration) -> anyhow::Result<Self> {
        let client = Client::new(config, timeout).map_err(anyhow::Error::msg)?;
        Ok(Self::with_client(client, config))
    }

    /// The network server behind `client` (shared with the campaign driver).
    pub fn with_client(client: Client, config: &ChirpstackApiConfig) -> Self {
        Self {
            client,
            application_ids: config.application_ids.clone(),
            region: chirpstack_api::common::Region::Eu868,
        }
    }

    /// Sets the region multicast groups are created in (lorafleet's `network.region`).
    pub fn with_region(mut self, region: &str) -> anyhow::Result<Self> {
        let name = region.trim().to_ascii_uppercase().replace('-', "_");
        self.region = chirpstack_api::common::Region::from_str_name(&name).ok_or_else(|| {
            anyhow::anyhow!("network.region {region:?} is not a ChirpStack v4 region")
        })?;
        Ok(self)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.client.request(message)
    }

    pub fn map_status(&self, status: tonic::Status) -> NetworkError {
        map_status(self.client.url(), self.client.timeout(), status)
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

#[async_trait]
impl Network for ChirpstackV4 {
    fn kind(&self) -> NetworkKind {
        NetworkKind::ChirpstackV4
    }

    async fn enqueue(&self, downlink: &Downlink) -> Result<Enqueued, NetworkError> {
        let mut client = DeviceServiceClient::new(self.client.channel());
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
        let mut client = DeviceServiceClient::new(self.client.channel());
        let mut out = Vec::new();
        for application_id in &self.application_ids {
            let application_name = self.application_name(application_id).await;
            let first = out.len();
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
                    out.extend(RemoteDevice::listed(
                        &item.dev_eui,
                        item.name,
                        application_id.clone(),
                        Some(item.device_profile_id),
                        Some(item.device_profile_name),
                        to_utc(item.last_seen_at.as_ref()),
                    ));
                }
                offset += got;
                if got == 0 || offset >= page.total_count {
                    break;
                }
            }
            for d in &mut out[first..] {
                d.application_name.clone_from(&application_name);
            }
        }
        Ok(out)
    }

    async fn device_keys(&self, dev_eui: DevEui) -> Result<Option<DeviceKeys>, NetworkError> {
        let mut client = DeviceServiceClient::new(self.client.channel());
        let request = self.request(api::GetDeviceKeysRequest {
            dev_eui: dev_eui.to_string(),
        });
        let keys = match client.get_keys(request).await {
            Ok(r) => r.into_inner().device_keys,
            // No keys stored (an ABP device, or keys never set) is an answer, not a failure.
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => return Err(self.map_status(s)),
        };
        Ok(keys.map(|k| DeviceKeys {
            gen_app_key: parse_key(&k.gen_app_key),
            app_key: parse_key(&k.app_key),
        }))
    }

    async fn device_profile_packages(
        &self,
        dev_eui: DevEui,
    ) -> Result<Option<super::app_layer::ProfilePackages>, NetworkError> {
        let mut one = std::collections::HashMap::new();
        super::app_layer::read(&self.client, &dev_eui.to_string(), &mut one)
            .await
            .map(Some)
    }

    async fn find_multicast_group(
        &self,
        name: &str,
        application_id: Option<&str>,
    ) -> Result<Option<String>, NetworkError> {
        let Some(application_id) = application_id
            .map(str::to_string)
            .or_else(|| self.application_ids.first().cloned())
        else {
            return Ok(None);
        };
        let mut client = MulticastGroupServiceClient::new(self.client.channel());
        // ChirpStack searches names by substring: the exact name is picked from what it finds.
        let request = self.request(api::ListMulticastGroupsRequest {
            limit: 100,
            search: name.to_string(),
            application_id,
            ..Default::default()
        });
        let response = client.list(request).await.map_err(|s| self.map_status(s))?;
        Ok(response
            .into_inner()
            .result
            .into_iter()
            .find(|g| g.name == name)
            .map(|g| g.id))
    }

    async fn create_multicast_group(&self, group: &MulticastGroup) -> Result<String, NetworkError> {
        let application_id = group
            .application_id
            .clone()
            .or_else(|| self.application_ids.first().cloned())
            .ok_or_else(|| {
                NetworkError::Refused(
                    "ChirpStack needs an application for the multicast group; set network.chirpstack_v4.application_ids".into(),
                )
            })?;
        let (group_type, periodicity) = match group.class {
            MulticastClass::C => (api::MulticastGroupType::ClassC, 0),
            MulticastClass::B {
                ping_slot_periodicity,
            } => (
                api::MulticastGroupType::ClassB,
                u32::from(ping_slot_periodicity),
            ),
        };
        let mut client = MulticastGroupServiceClient::new(self.client.channel());
        let request = self.request(api::CreateMulticastGroupRequest {
            multicast_group: Some(api::MulticastGroup {
                id: String::new(),
                name: group.name.clone(),
                application_id,
                region: self.region as i32,
                mc_addr: hex::encode(group.mc_addr),
                mc_nwk_s_key: hex::encode(group.mc_nwk_s_key),
                mc_app_s_key: hex::encode(group.mc_app_s_key),
                f_cnt: group.f_cnt,
                group_type: group_type as i32,
                dr: u32::from(group.dr),
                frequency: group.frequency,
                class_b_ping_slot_periodicity: periodicity,
                class_c_scheduling_type: api::MulticastGroupSchedulingType::Delay as i32,
            }),
        });
        let response = client
            .create(request)
            .await
            .map_err(|s| self.map_status(s))?;
        Ok(response.into_inner().id)
    }

    async fn add_multicast_device(
        &self,
        group_id: &str,
        dev_eui: DevEui,
    ) -> Result<(), NetworkError> {
        let mut client = MulticastGroupServiceClient::new(self.client.channel());
        let request = self.request(api::AddDeviceToMulticastGroupRequest {
            multicast_group_id: group_id.to_string(),
            dev_eui: dev_eui.to_string(),
        });
        client
            .add_device(request)
            .await
            .map_err(|s| self.map_status(s))?;
        Ok(())
    }

    async fn add_multicast_gateway(
        &self,
        group_id: &str,
        gateway_id: &str,
    ) -> Result<(), NetworkError> {
        let mut client = MulticastGroupServiceClient::new(self.client.channel());
        let request = self.request(api::AddGatewayToMulticastGroupRequest {
            multicast_group_id: group_id.to_string(),
            gateway_id: gateway_id.to_string(),
        });
        client
            .add_gateway(request)
            .await
            .map_err(|s| self.map_status(s))?;
        Ok(())
    }

    async fn enqueue_multicast(
        &self,
        group_id: &str,
        f_port: u8,
        data: &[u8],
    ) -> Result<u32, NetworkError> {
        let mut client = MulticastGroupServiceClient::new(self.client.channel());
        let request = self.request(api::EnqueueMulticastGroupQueueItemRequest {
            queue_item: Some(api::MulticastGroupQueueItem {
                multicast_group_id: group_id.to_string(),
                f_cnt: 0,
                f_port: u32::from(f_port),
                data: data.to_vec(),
                expires_at: None,
            }),
        });
        let response = client
            .enqueue(request)
            .await
            .map_err(|s| self.map_status(s))?;
        Ok(response.into_inner().f_cnt)
    }

    async fn multicast_queue_len(&self, group_id: &str) -> Result<usize, NetworkError> {
        let mut client = MulticastGroupServiceClient::new(self.client.channel());
        let request = self.request(api::ListMulticastGroupQueueRequest {
            multicast_group_id: group_id.to_string(),
        });
        let response = client
            .list_queue(request)
            .await
            .map_err(|s| self.map_status(s))?;
        Ok(response.into_inner().items.len())
    }

    async fn delete_multicast_group(&self, group_id: &str) -> Result<(), NetworkError> {
        let mut client = MulticastGroupServiceClient::new(self.client.channel());
        let request = self.request(api::DeleteMulticastGroupRequest {
            id: group_id.to_string(),
        });
        client
            .delete(request)
            .await
            .map_err(|s| self.map_status(s))?;
        Ok(())
    }
}

/// A 128-bit key as ChirpStack returns it (hex); empty or all-zero means "not set", which
/// ChirpStack stores without complaint when the field was left empty.
fn parse_key(hex_text: &str) -> Option<[u8; 16]> {
    let mut key = [0u8; 16];
    hex::decode_to_slice(hex_text.trim(), &mut key).ok()?;
    (key != [0u8; 16]).then_some(key)
}

impl ChirpstackV4 {
    /// The application's name, so that devices listed before their first uplink show it; None
    /// when the API key may not read applications (the device list still works).
    async fn application_name(&self, application_id: &str) -> Option<String> {
        let mut client = ApplicationServiceClient::new(self.client.channel());
        let request = self.request(api::GetApplicationRequest {
            id: application_id.to_string(),
        });
        let response = client.get(request).await.ok()?.into_inner();
        response
            .application
            .map(|a| a.name)
            .filter(|n| !n.is_empty())
    }
}

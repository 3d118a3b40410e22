//! A fake ChirpStack v4 built from the official definitions: a tonic server implementing
//! chirpstack_api's generated `DeviceService` and `DeviceProfileService` traits (device
//! profiles with their app-layer parameters: TS003/TS004/TS005 versions and FPorts),
//! recording what lorafleet asked for.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chirpstack_api::api;
use chirpstack_api::api::device_profile_service_server::{
    DeviceProfileService, DeviceProfileServiceServer,
};
use chirpstack_api::api::device_service_server::{DeviceService, DeviceServiceServer};
use tonic::{Request, Response, Status};

/// What the fake received and what it answers.
#[derive(Default)]
pub struct FakeState {
    /// (authorization metadata, request) for each Enqueue call.
    pub enqueued: Vec<(String, api::EnqueueDeviceQueueItemRequest)>,
    /// Devices answered by List, per application id.
    pub devices: HashMap<String, Vec<api::DeviceListItem>>,
    /// GenAppKey / NwkKey per DevEUI, answered by GetKeys.
    pub keys: HashMap<String, api::DeviceKeys>,
    /// When set, Enqueue fails with this status.
    pub fail_enqueue: Option<Status>,
    /// Device profile id per DevEUI, answered by Get.
    pub device_profiles: HashMap<String, String>,
    /// Device profiles by id, answered by DeviceProfileService.Get.
    pub profiles: HashMap<String, api::DeviceProfile>,
    /// How often Get and DeviceProfileService.Get were asked.
    pub profile_reads: usize,
}

impl FakeState {
    /// A device of profile `profile_id`.
    pub fn put_device(&mut self, dev_eui: &str, profile_id: &str) {
        self.device_profiles
            .insert(dev_eui.to_string(), profile_id.to_string());
    }

    /// A profile with these app-layer parameters: (version, FPort) of TS003, TS004, TS005;
    /// version 0 is "not implemented".
    pub fn put_profile(
        &mut self,
        id: &str,
        name: &str,
        ts003: (i32, u32),
        ts004: (i32, u32),
        ts005: (i32, u32),
    ) {
        self.profiles.insert(
            id.to_string(),
            api::DeviceProfile {
                id: id.to_string(),
                name: name.to_string(),
                app_layer_params: Some(api::AppLayerParams {
                    ts003_version: ts003.0,
                    ts003_f_port: ts003.1,
                    ts004_version: ts004.0,
                    ts004_f_port: ts004.1,
                    ts005_version: ts005.0,
                    ts005_f_port: ts005.1,
                }),
                ..Default::default()
            },
        );
    }

    /// Sets a profile's `uplink_interval` (seconds), as ChirpStack v4 stores it.
    pub fn set_uplink_interval(&mut self, profile_id: &str, seconds: u32) {
        if let Some(p) = self.profiles.get_mut(profile_id) {
            p.uplink_interval = seconds;
        }
    }
}

#[derive(Clone, Default)]
pub struct FakeDeviceService {
    pub state: Arc<Mutex<FakeState>>,
}

fn auth_of<T>(r: &Request<T>) -> String {
    r.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tonic::async_trait]
impl DeviceService for FakeDeviceService {
    async fn create(
        &self,
        request: Request<api::CreateDeviceRequest>,
    ) -> Result<Response<()>, Status> {
        let _ = request;
        Err(Status::unimplemented("create is not faked"))
    }
    async fn get(
        &self,
        request: Request<api::GetDeviceRequest>,
    ) -> Result<Response<api::GetDeviceResponse>, Status> {
        let eui = request.into_inner().dev_eui;
        let mut state = self.state.lock().unwrap();
        state.profile_reads += 1;
        let profile = state
            .device_profiles
            .get(&eui)
            .cloned()
            .ok_or_else(|| Status::not_found("Object does not exist"))?;
        Ok(Response::new(api::GetDeviceResponse {
            device: Some(api::Device {
                dev_eui: eui,
                device_profile_id: profile,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
    async fn update(
        &self,
        request: Request<api::UpdateDeviceRequest>,
    ) -> Result<Response<()>, Status> {
        let _ = request;
        Err(Status::unimplemented("update is not faked"))
    }
    async fn delete(
        &self,
        request: Request<api::DeleteDeviceRequest>,
    ) -> Result<Response<()>, Status> {
        let _ = request;
        Err(Status::unimplemented("delete is not faked"))
    }
    async fn list(
        &self,
        request: Request<api::ListDevicesRequest>,
    ) -> Result<Response<api::ListDevicesResponse>, Status> {
        if auth_of(&request) != "Bearer fake-api-token" {
            return Err(Status::unauthenticated("bad api token"));
        }
        let r = request.into_inner();
        let all = self
            .state
            .lock()
            .unwrap()
            .devices
            .get(&r.application_id)
            .cloned()
            .unwrap_or_default();
        let page: Vec<_> = all
            .iter()
            .skip(r.offset as usize)
            .take(r.limit as usize)
            .cloned()
            .collect();
        Ok(Response::new(api::ListDevicesResponse {
            total_count: all.len() as u32,
            result: page,
        }))
    }
    async fn create_keys(
        &self,
        request: Request<api::CreateDeviceKeysRequest>,
    ) -> Result<Response<()>, Status> {
        let _ = request;
        Err(Status::unimplemented("create_keys is not faked"))
    }
    async fn get_keys(
        &self,
        request: Request<api::GetDeviceKeysRequest>,
    ) -> Result<Response<api::GetDeviceKeysResponse>, Status> {
        let eui = request.into_inner().dev_eui;
        match self.state.lock().unwrap().keys.get(&eui) {
            Some(k) => Ok(Response::new(api::GetDeviceKeysResponse {
                device_keys: Some(k.clone()),
                ..Default::default()
            })),
            None => Err(Status::not_found("Object does not exist")),
        }
    }
    async fn update_keys(
        &self,
        request: Request<api::UpdateDeviceKeysRequest>,
    ) -> Result<Response<()>, Status> {
        let _ = request;
        Err(Status::unimplemented("update_keys is not faked"))
    }
    async fn delete_keys(
        &self,
        request: Request<api::DeleteDeviceKeysRequest>,
    ) -> Result<Response<()>, Status> {
        let _ = request;
        Err(Status::unimplemented("delete_keys is not faked"))
    }
    async fn flush_dev_nonces(
        &self,
        request: Request<api::FlushDevNoncesRequest>,
    ) -> Result<Response<()>, Status> {
        let _ = request;
        Err(Status::unimplemented("flush_dev_nonces is not faked"))
    }
    async fn activate(
        &self,
        request: Request<api::ActivateDeviceRequest>,
    ) -> Result<Response<()>, Status> {
        let _ = request;
        Err(Status::unimplemented("activate is not faked"))
    }
    async fn deactivate(
        &self,
        request: Request<api::DeactivateDeviceRequest>,
    ) -> Result<Response<()>, Status> {
        let _ = request;
        Err(Status::unimplemented("deactivate is not faked"))
    }
    async fn get_activation(
        &self,
        request: Request<api::GetDeviceActivationRequest>,
    ) -> Result<Response<api::GetDeviceActivationResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("get_activation is not faked"))
    }
    async fn get_random_dev_addr(
        &self,
        request: Request<api::GetRandomDevAddrRequest>,
    ) -> Result<Response<api::GetRandomDevAddrResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("get_random_dev_addr is not faked"))
    }
    async fn get_metrics(
        &self,
        request: Request<api::GetDeviceMetricsRequest>,
    ) -> Result<Response<api::GetDeviceMetricsResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("get_metrics is not faked"))
    }
    async fn get_link_metrics(
        &self,
        request: Request<api::GetDeviceLinkMetricsRequest>,
    ) -> Result<Response<api::GetDeviceLinkMetricsResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("get_link_metrics is not faked"))
    }
    async fn enqueue(
        &self,
        request: Request<api::EnqueueDeviceQueueItemRequest>,
    ) -> Result<Response<api::EnqueueDeviceQueueItemResponse>, Status> {
        let auth = auth_of(&request);
        let mut state = self.state.lock().unwrap();
        if let Some(status) = state.fail_enqueue.clone() {
            return Err(status);
        }
        state.enqueued.push((auth, request.into_inner()));
        Ok(Response::new(api::EnqueueDeviceQueueItemResponse {
            id: format!("queue-item-{}", state.enqueued.len()),
        }))
    }
    async fn flush_queue(
        &self,
        request: Request<api::FlushDeviceQueueRequest>,
    ) -> Result<Response<()>, Status> {
        let _ = request;
        Err(Status::unimplemented("flush_queue is not faked"))
    }
    async fn get_queue(
        &self,
        request: Request<api::GetDeviceQueueItemsRequest>,
    ) -> Result<Response<api::GetDeviceQueueItemsResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("get_queue is not faked"))
    }
    async fn get_next_f_cnt_down(
        &self,
        request: Request<api::GetDeviceNextFCntDownRequest>,
    ) -> Result<Response<api::GetDeviceNextFCntDownResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("get_next_f_cnt_down is not faked"))
    }
}

#[tonic::async_trait]
impl DeviceProfileService for FakeDeviceService {
    async fn get(
        &self,
        request: Request<api::GetDeviceProfileRequest>,
    ) -> Result<Response<api::GetDeviceProfileResponse>, Status> {
        let id = request.into_inner().id;
        let mut state = self.state.lock().unwrap();
        state.profile_reads += 1;
        let profile = state
            .profiles
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found("Object does not exist"))?;
        Ok(Response::new(api::GetDeviceProfileResponse {
            device_profile: Some(profile),
            ..Default::default()
        }))
    }
    async fn create(
        &self,
        _r: Request<api::CreateDeviceProfileRequest>,
    ) -> Result<Response<api::CreateDeviceProfileResponse>, Status> {
        Err(Status::unimplemented("create is not faked"))
    }
    async fn get_by_profile_id(
        &self,
        _r: Request<api::GetDeviceProfileByProfileIdRequest>,
    ) -> Result<Response<api::GetDeviceProfileByProfileIdResponse>, Status> {
        Err(Status::unimplemented("get_by_profile_id is not faked"))
    }
    async fn update(
        &self,
        _r: Request<api::UpdateDeviceProfileRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("update is not faked"))
    }
    async fn delete(
        &self,
        _r: Request<api::DeleteDeviceProfileRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete is not faked"))
    }
    async fn list(
        &self,
        _r: Request<api::ListDeviceProfilesRequest>,
    ) -> Result<Response<api::ListDeviceProfilesResponse>, Status> {
        Err(Status::unimplemented("list is not faked"))
    }
    async fn list_vendors(
        &self,
        _r: Request<api::ListDeviceProfileVendorsRequest>,
    ) -> Result<Response<api::ListDeviceProfileVendorsResponse>, Status> {
        Err(Status::unimplemented("list_vendors is not faked"))
    }
    async fn get_vendor(
        &self,
        _r: Request<api::GetDeviceProfileVendorRequest>,
    ) -> Result<Response<api::GetDeviceProfileVendorResponse>, Status> {
        Err(Status::unimplemented("get_vendor is not faked"))
    }
    async fn delete_vendor(
        &self,
        _r: Request<api::DeleteDeviceProfileVendorRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete_vendor is not faked"))
    }
    async fn list_devices(
        &self,
        _r: Request<api::ListDeviceProfileDevicesRequest>,
    ) -> Result<Response<api::ListDeviceProfileDevicesResponse>, Status> {
        Err(Status::unimplemented("list_devices is not faked"))
    }
    async fn get_device(
        &self,
        _r: Request<api::GetDeviceProfileDeviceRequest>,
    ) -> Result<Response<api::GetDeviceProfileDeviceResponse>, Status> {
        Err(Status::unimplemented("get_device is not faked"))
    }
    async fn delete_device(
        &self,
        _r: Request<api::DeleteDeviceProfileDeviceRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("delete_device is not faked"))
    }
    async fn list_adr_algorithms(
        &self,
        _r: Request<()>,
    ) -> Result<Response<api::ListDeviceProfileAdrAlgorithmsResponse>, Status> {
        Err(Status::unimplemented("list_adr_algorithms is not faked"))
    }
}

/// Serves the fake on a random loopback port; returns its URL.
pub async fn serve(fake: FakeDeviceService) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(DeviceProfileServiceServer::new(fake.clone()))
            .add_service(DeviceServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

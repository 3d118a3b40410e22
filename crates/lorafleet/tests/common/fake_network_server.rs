//! A fake ChirpStack v4 network server for the engine, built from chirpstack_api's own
//! `DeviceService` (keys, unicast enqueue) and `MulticastGroupService` traits: it records every
//! command, group, member, gateway and multicast frame lorafleet asked for, answers with the
//! test's GenAppKey and checks the API token. Shared by the engine's tests on ChirpStack v4 and
//! the two-instance lease test. Also the devices' answers as ChirpStack's HTTP integration
//! posts them ([`answer_json`]).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use base64::Engine;
use chirpstack_api::api;
use chirpstack_api::api::device_service_server::{DeviceService, DeviceServiceServer};
use chirpstack_api::api::multicast_group_service_server::{
    MulticastGroupService, MulticastGroupServiceServer,
};
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

/// Every device's GenAppKey, as the fake's GetKeys answers it.
pub const GEN_APP_KEY: &str = "0302030405060708090a0b0c0d0e0f10";
/// The API token the fake accepts.
pub const TOKEN: &str = "cs-api-key";

/// (group id, f_port, data, when) of a multicast enqueue.
pub type McEnqueue = (String, u32, Vec<u8>, DateTime<Utc>);

/// What the fake received.
#[derive(Default)]
pub struct Fake {
    /// (dev_eui, f_port, data) of every unicast enqueue.
    pub unicast: Mutex<Vec<(String, u32, Vec<u8>)>>,
    pub groups: Mutex<Vec<api::MulticastGroup>>,
    pub members: Mutex<Vec<(String, String)>>,
    /// (group id, gateway id) of every AddGateway.
    pub gateways: Mutex<Vec<(String, String)>>,
    pub multicast: Mutex<Vec<McEnqueue>>,
    pub deleted: Mutex<Vec<(String, DateTime<Utc>)>>,
    /// How long each multicast enqueue takes (a slow network server).
    pub multicast_delay: Mutex<std::time::Duration>,
}

#[derive(Clone)]
struct Svc(Arc<Fake>);

fn authorized<T>(r: &Request<T>) -> Result<(), Status> {
    let ok = r
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    ok.then_some(())
        .ok_or_else(|| Status::unauthenticated("bad token"))
}

super::grpc_service! { DeviceService for Svc {
    async fn get_keys(
        &self,
        r: Request<api::GetDeviceKeysRequest>,
    ) -> Result<Response<api::GetDeviceKeysResponse>, Status> {
        authorized(&r)?;
        Ok(Response::new(api::GetDeviceKeysResponse {
            device_keys: Some(api::DeviceKeys {
                dev_eui: r.into_inner().dev_eui,
                nwk_key: "0".repeat(32),
                app_key: "0".repeat(32),
                gen_app_key: GEN_APP_KEY.into(),
            }),
            created_at: None,
            updated_at: None,
        }))
    }
    async fn enqueue(
        &self,
        r: Request<api::EnqueueDeviceQueueItemRequest>,
    ) -> Result<Response<api::EnqueueDeviceQueueItemResponse>, Status> {
        authorized(&r)?;
        let item = r.into_inner().queue_item.unwrap();
        let mut u = self.0.unicast.lock().unwrap();
        u.push((item.dev_eui, item.f_port, item.data));
        Ok(Response::new(api::EnqueueDeviceQueueItemResponse {
            id: format!("q-{}", u.len()),
        }))
    }
    } unimplemented {
        create(CreateDeviceRequest) -> ();
        get(GetDeviceRequest) -> api::GetDeviceResponse;
        update(UpdateDeviceRequest) -> ();
        delete(DeleteDeviceRequest) -> ();
        list(ListDevicesRequest) -> api::ListDevicesResponse;
        create_keys(CreateDeviceKeysRequest) -> ();
        update_keys(UpdateDeviceKeysRequest) -> ();
        delete_keys(DeleteDeviceKeysRequest) -> ();
        flush_dev_nonces(FlushDevNoncesRequest) -> ();
        activate(ActivateDeviceRequest) -> ();
        deactivate(DeactivateDeviceRequest) -> ();
        get_activation(GetDeviceActivationRequest) -> api::GetDeviceActivationResponse;
        get_random_dev_addr(GetRandomDevAddrRequest) -> api::GetRandomDevAddrResponse;
        get_metrics(GetDeviceMetricsRequest) -> api::GetDeviceMetricsResponse;
        get_link_metrics(GetDeviceLinkMetricsRequest) -> api::GetDeviceLinkMetricsResponse;
        flush_queue(FlushDeviceQueueRequest) -> ();
        get_queue(GetDeviceQueueItemsRequest) -> api::GetDeviceQueueItemsResponse;
        get_next_f_cnt_down(GetDeviceNextFCntDownRequest) -> api::GetDeviceNextFCntDownResponse;
    }
}

super::grpc_service! { MulticastGroupService for Svc {
    async fn create(
        &self,
        r: Request<api::CreateMulticastGroupRequest>,
    ) -> Result<Response<api::CreateMulticastGroupResponse>, Status> {
        authorized(&r)?;
        let mut g = r.into_inner().multicast_group.unwrap();
        let mut groups = self.0.groups.lock().unwrap();
        g.id = format!("mc-{}", groups.len() + 1);
        let id = g.id.clone();
        groups.push(g);
        Ok(Response::new(api::CreateMulticastGroupResponse { id }))
    }
    async fn list(
        &self,
        r: Request<api::ListMulticastGroupsRequest>,
    ) -> Result<Response<api::ListMulticastGroupsResponse>, Status> {
        authorized(&r)?;
        let r = r.into_inner();
        let result: Vec<_> = self.0.groups.lock().unwrap().iter()
            .filter(|g| g.application_id == r.application_id && g.name.contains(&r.search))
            .map(|g| api::MulticastGroupListItem { id: g.id.clone(), name: g.name.clone(), ..Default::default() })
            .collect();
        Ok(Response::new(api::ListMulticastGroupsResponse { total_count: result.len() as u32, result }))
    }
    async fn add_device(
        &self,
        r: Request<api::AddDeviceToMulticastGroupRequest>,
    ) -> Result<Response<()>, Status> {
        authorized(&r)?;
        let r = r.into_inner();
        self.0.members.lock().unwrap().push((r.multicast_group_id, r.dev_eui));
        Ok(Response::new(()))
    }
    async fn add_gateway(
        &self,
        r: Request<api::AddGatewayToMulticastGroupRequest>,
    ) -> Result<Response<()>, Status> {
        authorized(&r)?;
        let r = r.into_inner();
        self.0.gateways.lock().unwrap().push((r.multicast_group_id, r.gateway_id));
        Ok(Response::new(()))
    }
    async fn enqueue(
        &self,
        r: Request<api::EnqueueMulticastGroupQueueItemRequest>,
    ) -> Result<Response<api::EnqueueMulticastGroupQueueItemResponse>, Status> {
        authorized(&r)?;
        let delay = *self.0.multicast_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let item = r.into_inner().queue_item.unwrap();
        let mut m = self.0.multicast.lock().unwrap();
        m.push((item.multicast_group_id, item.f_port, item.data, Utc::now()));
        Ok(Response::new(api::EnqueueMulticastGroupQueueItemResponse {
            f_cnt: m.len() as u32 - 1,
        }))
    }
    async fn list_queue(
        &self,
        r: Request<api::ListMulticastGroupQueueRequest>,
    ) -> Result<Response<api::ListMulticastGroupQueueResponse>, Status> {
        authorized(&r)?;
        // The fake sends instantly: nothing is ever left in the queue.
        Ok(Response::new(api::ListMulticastGroupQueueResponse { items: vec![] }))
    }
    async fn delete(
        &self,
        r: Request<api::DeleteMulticastGroupRequest>,
    ) -> Result<Response<()>, Status> {
        authorized(&r)?;
        self.0.deleted.lock().unwrap().push((r.into_inner().id, Utc::now()));
        Ok(Response::new(()))
    }
    } unimplemented {
        get(GetMulticastGroupRequest) -> api::GetMulticastGroupResponse;
        update(UpdateMulticastGroupRequest) -> ();
        remove_device(RemoveDeviceFromMulticastGroupRequest) -> ();
        remove_gateway(RemoveGatewayFromMulticastGroupRequest) -> ();
        flush_queue(FlushMulticastGroupQueueRequest) -> ();
    }
}

/// Serves a fresh fake on a loopback port; returns it with its URL.
pub async fn start() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let svc = Svc(fake.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(MulticastGroupServiceServer::new(svc.clone()))
            .add_service(DeviceServiceServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (fake, url)
}

/// A device's uplink as ChirpStack v4's HTTP integration posts it (now, application `app-1`,
/// profile `profile-1`, heard by one gateway).
pub fn answer_json(dev_eui: &str, f_port: u8, data: &[u8], f_cnt: u32) -> serde_json::Value {
    serde_json::json!({
        "deduplicationId": format!("dedup-{dev_eui}-{f_cnt}"),
        "time": Utc::now().to_rfc3339(),
        "deviceInfo": {"applicationId": "app-1", "deviceProfileId": "profile-1", "devEui": dev_eui, "deviceName": dev_eui},
        "fCnt": f_cnt,
        "fPort": f_port,
        "data": base64::engine::general_purpose::STANDARD.encode(data),
        "rxInfo": [{"gatewayId": "0016c001ff10d3f6", "rssi": -80, "snr": 7.5}],
    })
}

//! The chirpstack-v4 driver against a fake ChirpStack built from chirpstack_api's own
//! `FuotaService` and `DeviceService` traits: key checks before start, one deployment per
//! device profile with the exact fields, status mapping including failures, cancel.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chirpstack_api::api;
use chirpstack_api::api::device_service_server::{DeviceService, DeviceServiceServer};
use chirpstack_api::api::fuota_service_server::{FuotaService, FuotaServiceServer};
use common::{spawn_app, test_config, TestApp, FIXTURE};
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

const A: &str = "0102030405060708";
const B: &str = "1112131415161718";
const TOKEN: &str = "cs-api-key";

#[derive(Default)]
struct Fake {
    keys: Mutex<HashMap<String, String>>,
    created: Mutex<Vec<api::FuotaDeployment>>,
    added: Mutex<Vec<(String, Vec<String>)>>,
    started: Mutex<Vec<String>>,
    deleted: Mutex<Vec<String>>,
    completed: Mutex<Vec<String>>,
    devices: Mutex<HashMap<String, Vec<api::FuotaDeploymentDeviceListItem>>>,
    jobs: Mutex<HashMap<String, Vec<api::FuotaDeploymentJob>>>,
    /// (deployment, gateway ids) of every AddGateways.
    gateways: Mutex<Vec<(String, Vec<String>)>>,
    /// (application, device profile) per DevEUI, answered by DeviceService.Get.
    registered: Mutex<HashMap<String, (String, String)>>,
    bad_auth: Mutex<u32>,
}

#[derive(Clone)]
struct Svc(Arc<Fake>);

impl Svc {
    fn check<T>(&self, r: &Request<T>) -> Result<(), Status> {
        let ok = r
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        if !ok {
            *self.0.bad_auth.lock().unwrap() += 1;
            return Err(Status::unauthenticated("bad token"));
        }
        Ok(())
    }
}

common::grpc_service! { DeviceService for Svc {
    async fn get_keys(
        &self,
        r: Request<api::GetDeviceKeysRequest>,
    ) -> Result<Response<api::GetDeviceKeysResponse>, Status> {
        self.check(&r)?;
        let eui = r.get_ref().dev_eui.clone();
        let key = self
            .0
            .keys
            .lock()
            .unwrap()
            .get(&eui)
            .cloned()
            .ok_or_else(|| Status::not_found("Object does not exist"))?;
        Ok(Response::new(api::GetDeviceKeysResponse {
            device_keys: Some(api::DeviceKeys {
                dev_eui: eui,
                nwk_key: "0".repeat(32),
                app_key: "0".repeat(32),
                gen_app_key: key,
            }),
            created_at: None,
            updated_at: None,
        }))
    }
    async fn get(
        &self,
        r: Request<api::GetDeviceRequest>,
    ) -> Result<Response<api::GetDeviceResponse>, Status> {
        self.check(&r)?;
        let eui = r.get_ref().dev_eui.clone();
        let (application_id, device_profile_id) = self
            .0
            .registered
            .lock()
            .unwrap()
            .get(&eui)
            .cloned()
            .ok_or_else(|| Status::not_found("Object does not exist"))?;
        Ok(Response::new(api::GetDeviceResponse {
            device: Some(api::Device {
                dev_eui: eui,
                application_id,
                device_profile_id,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
    } unimplemented {
        create(CreateDeviceRequest) -> ();
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
        enqueue(EnqueueDeviceQueueItemRequest) -> api::EnqueueDeviceQueueItemResponse;
        flush_queue(FlushDeviceQueueRequest) -> ();
        get_queue(GetDeviceQueueItemsRequest) -> api::GetDeviceQueueItemsResponse;
        get_next_f_cnt_down(GetDeviceNextFCntDownRequest) -> api::GetDeviceNextFCntDownResponse;
    }
}

common::grpc_service! { FuotaService for Svc {
    async fn create_deployment(
        &self,
        r: Request<api::CreateFuotaDeploymentRequest>,
    ) -> Result<Response<api::CreateFuotaDeploymentResponse>, Status> {
        self.check(&r)?;
        let d = r.into_inner().deployment.unwrap();
        let mut created = self.0.created.lock().unwrap();
        created.push(d);
        Ok(Response::new(api::CreateFuotaDeploymentResponse {
            id: format!("dep-{}", created.len()),
        }))
    }
    async fn add_devices(
        &self,
        r: Request<api::AddDevicesToFuotaDeploymentRequest>,
    ) -> Result<Response<()>, Status> {
        self.check(&r)?;
        let r = r.into_inner();
        self.0
            .added
            .lock()
            .unwrap()
            .push((r.fuota_deployment_id, r.dev_euis));
        Ok(Response::new(()))
    }
    async fn add_gateways(
        &self,
        r: Request<api::AddGatewaysToFuotaDeploymentRequest>,
    ) -> Result<Response<()>, Status> {
        self.check(&r)?;
        let r = r.into_inner();
        self.0
            .gateways
            .lock()
            .unwrap()
            .push((r.fuota_deployment_id, r.gateway_ids));
        Ok(Response::new(()))
    }
    async fn start_deployment(
        &self,
        r: Request<api::StartFuotaDeploymentRequest>,
    ) -> Result<Response<()>, Status> {
        self.check(&r)?;
        self.0.started.lock().unwrap().push(r.into_inner().id);
        Ok(Response::new(()))
    }
    async fn delete_deployment(
        &self,
        r: Request<api::DeleteFuotaDeploymentRequest>,
    ) -> Result<Response<()>, Status> {
        self.check(&r)?;
        self.0.deleted.lock().unwrap().push(r.into_inner().id);
        Ok(Response::new(()))
    }
    async fn get_deployment(
        &self,
        r: Request<api::GetFuotaDeploymentRequest>,
    ) -> Result<Response<api::GetFuotaDeploymentResponse>, Status> {
        self.check(&r)?;
        let id = r.into_inner().id;
        let done = self.0.completed.lock().unwrap().contains(&id);
        Ok(Response::new(api::GetFuotaDeploymentResponse {
            deployment: None,
            created_at: None,
            updated_at: None,
            started_at: ts(0),
            completed_at: if done { ts(5000) } else { None },
        }))
    }
    async fn list_devices(
        &self,
        r: Request<api::ListFuotaDeploymentDevicesRequest>,
    ) -> Result<Response<api::ListFuotaDeploymentDevicesResponse>, Status> {
        self.check(&r)?;
        let r = r.into_inner();
        let all = self
            .0
            .devices
            .lock()
            .unwrap()
            .get(&r.fuota_deployment_id)
            .cloned()
            .unwrap_or_default();
        let page: Vec<_> = all
            .iter()
            .skip(r.offset as usize)
            .take(r.limit as usize)
            .cloned()
            .collect();
        Ok(Response::new(api::ListFuotaDeploymentDevicesResponse {
            total_count: all.len() as u32,
            result: page,
        }))
    }
    async fn list_jobs(
        &self,
        r: Request<api::ListFuotaDeploymentJobsRequest>,
    ) -> Result<Response<api::ListFuotaDeploymentJobsResponse>, Status> {
        self.check(&r)?;
        let jobs = self
            .0
            .jobs
            .lock()
            .unwrap()
            .get(&r.into_inner().fuota_deployment_id)
            .cloned()
            .unwrap_or_default();
        Ok(Response::new(api::ListFuotaDeploymentJobsResponse { jobs }))
    }
    } unimplemented {
        update_deployment(UpdateFuotaDeploymentRequest) -> ();
        list_deployments(ListFuotaDeploymentsRequest) -> api::ListFuotaDeploymentsResponse;
        remove_devices(RemoveDevicesFromFuotaDeploymentRequest) -> ();
        list_gateways(ListFuotaDeploymentGatewaysRequest) -> api::ListFuotaDeploymentGatewaysResponse;
        remove_gateways(RemoveGatewaysFromFuotaDeploymentRequest) -> ();
    }
}

fn ts(secs: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: 1_780_000_000 + secs,
        nanos: 0,
    })
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let svc = Svc(fake.clone());
    let profiles = common::fake_chirpstack_v4::FakeDeviceService::default();
    for id in ["profile-a", "profile-b"] {
        profiles
            .state
            .lock()
            .unwrap()
            .put_profile(id, id, (1, 202), (1, 201), (1, 200));
    }
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(FuotaServiceServer::new(svc.clone()).max_decoding_message_size(64 << 20))
            .add_service(DeviceServiceServer::new(svc))
            .add_service(
                chirpstack_api::api::device_profile_service_server::DeviceProfileServiceServer::new(
                    profiles,
                ),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (fake, url)
}

async fn app_with(url: &str) -> (TestApp, i64) {
    let mut config = test_config();
    config.network.chirpstack_v4.api_url = url.to_string();
    config.network.chirpstack_v4.api_token = TOKEN.into();
    config.network.request_timeout_s = 2;
    let t = spawn_app(config).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
    // Two device profiles: two deployments, one campaign.
    t.add_device(A, Some("profile-a"), None).await;
    t.add_device(B, Some("profile-b"), None).await;
    (t, img["id"].as_i64().unwrap())
}

/// Registers a device in the fake ChirpStack under application `app-1`.
fn register(fake: &Fake, eui: &str, profile: &str) {
    fake.registered
        .lock()
        .unwrap()
        .insert(eui.into(), ("app-1".into(), profile.into()));
}

fn job(name: &str, created: i64, attempts: u32, completed: Option<i64>) -> api::FuotaDeploymentJob {
    api::FuotaDeploymentJob {
        job: name.into(),
        created_at: ts(created),
        completed_at: completed.and_then(ts),
        max_retry_count: 4,
        attempt_count: attempts,
        ..Default::default()
    }
}

async fn step(t: &TestApp) {
    crate::on_db!(&t.app.db, p => sqlx::query("UPDATE campaigns SET next_poll_at = NULL WHERE state = 'running'")
        .execute(p).await.map(|_| ()))
        .unwrap();
    lorafleet::campaigns::runner::run_due(&t.app).await.unwrap();
}

fn device_of<'a>(c: &'a Value, eui: &str) -> &'a Value {
    c["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dev_eui"] == eui)
        .unwrap()
}

fn body(fw: i64) -> Value {
    json!({
        "name": "v4", "firmware_id": fw, "devices": [A, B], "driver": "chirpstack-v4",
        "multicast": {"class": "C", "dr": 5, "frequency": 869525000, "group_id": 1, "timeout_exp": 9},
        "unicast": {"timeout_s": 150, "attempts": 5},
        "fragmentation": {"redundancy": 10, "session_index": 2, "block_ack_delay": 2, "descriptor_hex": "0a0b0c0d"},
        "request_frag_status": "after_session"
    })
}

#[tokio::test]
async fn keys_checked_deployments_per_profile_and_status_mapping() {
    let (fake, url) = start_fake().await;
    let (t, fw) = app_with(&url).await;
    register(&fake, A, "profile-a");
    register(&fake, B, "profile-b");
    fake.keys
        .lock()
        .unwrap()
        .insert(A.into(), "0302030405060708090a0b0c0d0e0f10".into());
    // ChirpStack stores an empty GenAppKey as zeros without complaint.
    fake.keys.lock().unwrap().insert(B.into(), "0".repeat(32));

    let r = t
        .post("/api/campaigns")
        .json(&body(fw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    let id = c["id"].as_i64().unwrap();
    assert_eq!(c["plan"]["redundancy_percent_sent"], 11);

    // Start is refused with the device's key named; nothing was created.
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["field"], format!("keys.per_device.{B}"));
    assert!(e["error"].as_str().unwrap().contains("all zeros"), "{e}");
    assert!(fake.created.lock().unwrap().is_empty());
    assert_eq!(
        t.get_json(&format!("/api/campaigns/{id}")).await["state"],
        "draft"
    );

    fake.keys
        .lock()
        .unwrap()
        .insert(B.into(), "0102030405060708090a0b0c0d0e0f11".into());
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    step(&t).await;

    let created = fake.created.lock().unwrap().clone();
    assert_eq!(created.len(), 2, "one deployment per device profile");
    let profiles: Vec<&str> = created
        .iter()
        .map(|d| d.device_profile_id.as_str())
        .collect();
    assert_eq!(profiles, vec!["profile-a", "profile-b"]);
    for d in &created {
        assert_eq!(d.application_id, "app-1");
        assert_eq!(
            d.multicast_group_type,
            api::MulticastGroupType::ClassC as i32
        );
        assert_eq!(d.multicast_group_type, 0, "v4: CLASS_C = 0");
        assert_eq!(d.multicast_dr, 5);
        assert_eq!(d.multicast_frequency, 869_525_000);
        assert_eq!(d.multicast_timeout, 9);
        assert!(!d.calculate_multicast_timeout);
        assert_eq!(d.unicast_max_retry_count, 4);
        assert_eq!(d.fragmentation_fragment_size, 239);
        assert!(!d.calculate_fragmentation_fragment_size);
        // 10 parity frames of 96 data fragments: ChirpStack sends ceil(96 x 11 / 100) = 11.
        assert_eq!(d.fragmentation_redundancy_percentage, 11);
        assert_eq!(d.fragmentation_session_index, 2);
        assert_eq!(d.fragmentation_matrix, 0);
        assert_eq!(d.fragmentation_block_ack_delay, 2);
        assert_eq!(d.fragmentation_descriptor, vec![0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(
            d.request_fragmentation_session_status, 2,
            "v4: AFTER_SESSION_TIMEOUT = 2"
        );
        assert_eq!(d.payload, FIXTURE, "payload == image bytes");
        assert!(d.name.contains(&format!("lorafleet #{id}")));
    }
    assert_eq!(
        *fake.added.lock().unwrap(),
        vec![
            ("dep-1".to_string(), vec![A.to_string()]),
            ("dep-2".to_string(), vec![B.to_string()])
        ]
    );
    assert_eq!(*fake.started.lock().unwrap(), vec!["dep-1", "dep-2"]);
    assert_eq!(*fake.bad_auth.lock().unwrap(), 0);

    // Progress: A through McSession, B failed by ChirpStack.
    {
        let mut devices = fake.devices.lock().unwrap();
        devices.insert(
            "dep-1".into(),
            vec![api::FuotaDeploymentDeviceListItem {
                fuota_deployment_id: "dep-1".into(),
                dev_eui: A.into(),
                mc_group_setup_completed_at: ts(10),
                frag_session_setup_completed_at: ts(20),
                mc_session_completed_at: ts(30),
                ..Default::default()
            }],
        );
        devices.insert(
            "dep-2".into(),
            vec![api::FuotaDeploymentDeviceListItem {
                fuota_deployment_id: "dep-2".into(),
                dev_eui: B.into(),
                error_msg: "McGroupSetup timeout".into(),
                ..Default::default()
            }],
        );
        // ChirpStack creates ENQUEUE when the session is set up; it runs at the session start.
        fake.jobs.lock().unwrap().insert(
            "dep-1".into(),
            vec![
                job("MC_SESSION", 25, 1, Some(30)),
                job("ENQUEUE", 30, 0, None),
            ],
        );
        fake.jobs.lock().unwrap().insert(
            "dep-2".into(),
            vec![api::FuotaDeploymentJob {
                job: "MC_GROUP_SETUP".into(),
                created_at: ts(1),
                max_retry_count: 4,
                attempt_count: 5,
                error_msg: "Device did not respond".into(),
                ..Default::default()
            }],
        );
    }
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "running");
    // Set up, but before the session start: no fragment is on air yet.
    assert_eq!(device_of(&c, A)["stage"], "mc_session_setup");
    fake.jobs.lock().unwrap().get_mut("dep-1").unwrap()[1].attempt_count = 1;
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "running");
    assert_eq!(device_of(&c, A)["stage"], "fragments");
    assert!(device_of(&c, A)["mc_session_setup_at"].is_string());
    assert_eq!(device_of(&c, B)["stage"], "failed");
    assert_eq!(device_of(&c, B)["error"], "McGroupSetup timeout");
    let log = c["log"].to_string();
    assert!(
        log.contains("job MC_GROUP_SETUP: attempt 5/5, error: Device did not respond"),
        "{log}"
    );

    // The fragments are enqueued; FRAG_STATUS exists from then on but runs at the session end.
    {
        let mut jobs = fake.jobs.lock().unwrap();
        let dep1 = jobs.get_mut("dep-1").unwrap();
        dep1[1].completed_at = ts(31);
        dep1.push(job("FRAG_STATUS", 31, 0, None));
    }
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(
        device_of(&c, A)["stage"],
        "fragments",
        "fragments still on air"
    );
    fake.jobs.lock().unwrap().get_mut("dep-1").unwrap()[2].attempt_count = 1;
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(device_of(&c, A)["stage"], "frag_status");

    // ChirpStack completes A and ends both deployments.
    {
        let mut devices = fake.devices.lock().unwrap();
        let a = &mut devices.get_mut("dep-1").unwrap()[0];
        a.frag_status_completed_at = ts(900);
        a.completed_at = ts(901);
        fake.completed
            .lock()
            .unwrap()
            .extend(["dep-1".to_string(), "dep-2".to_string()]);
    }
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "completed", "{c}");
    assert_eq!(device_of(&c, A)["stage"], "completed");
    assert!(device_of(&c, A)["completed_at"]
        .as_str()
        .unwrap()
        .starts_with("2026-05-28"));
    assert_eq!(device_of(&c, B)["stage"], "failed");
}

#[tokio::test]
async fn cancel_deletes_the_deployments() {
    let (fake, url) = start_fake().await;
    let (t, fw) = app_with(&url).await;
    register(&fake, A, "profile-a");
    register(&fake, B, "profile-b");
    for eui in [A, B] {
        fake.keys
            .lock()
            .unwrap()
            .insert(eui.into(), "0302030405060708090a0b0c0d0e0f10".into());
    }
    let r = t
        .post("/api/campaigns")
        .json(&body(fw))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    // A key given with the campaign must match ChirpStack's (ChirpStack uses its own).
    let r = t
        .patch(&format!("/api/campaigns/{id}"))
        .json(&json!({"keys": {"gen_app_key": "0102030405060708090a0b0c0d0e0f10"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("differs"), "{e}");
    let r = t
        .patch(&format!("/api/campaigns/{id}"))
        .json(&json!({"keys": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    step(&t).await;
    let r = t
        .post(&format!("/api/campaigns/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["state"], "cancelled");
    assert_eq!(*fake.deleted.lock().unwrap(), vec!["dep-1", "dep-2"]);
    assert_eq!(c["counts"], json!({"cancelled": 2}));
}

#[tokio::test]
async fn unauthenticated_is_a_refusal_with_a_hint() {
    let (fake, url) = start_fake().await;
    let mut config = test_config();
    config.network.chirpstack_v4.api_url = url;
    config.network.chirpstack_v4.api_token = "wrong".into();
    let t = spawn_app(config).await;
    let (_, img) = t.upload("fw.bin", FIXTURE).await;
    t.add_device(A, Some("p"), None).await;
    t.add_device(B, Some("p"), None).await;
    register(&fake, A, "p");
    register(&fake, B, "p");
    let r = t
        .post("/api/campaigns")
        .json(&body(img["id"].as_i64().unwrap()))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains("bad token") && msg.contains("api_token"),
        "{msg}"
    );
}

/// Starts a campaign over A and B whose keys ChirpStack holds; returns its id.
async fn started(fake: &Fake, t: &TestApp, fw: i64) -> i64 {
    for eui in [A, B] {
        fake.keys
            .lock()
            .unwrap()
            .insert(eui.into(), "0302030405060708090a0b0c0d0e0f10".into());
    }
    let r = t
        .post("/api/campaigns")
        .json(&body(fw))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    step(t).await;
    id
}

#[tokio::test]
async fn the_profile_is_chirpstacks_not_the_last_uplinks() {
    let (fake, url) = start_fake().await;
    // lorafleet's inventory says profile-a and profile-b (B's last uplink is from before it
    // moved); ChirpStack holds both on profile-a.
    let (t, fw) = app_with(&url).await;
    register(&fake, A, "profile-a");
    register(&fake, B, "profile-a");
    let id = started(&fake, &t, fw).await;
    let created = fake.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1, "one deployment: ChirpStack's profile");
    assert_eq!(created[0].device_profile_id, "profile-a");
    assert_eq!(
        *fake.added.lock().unwrap(),
        vec![("dep-1".to_string(), vec![A.to_string(), B.to_string()])]
    );
    assert_eq!(
        t.get_json(&format!("/api/campaigns/{id}")).await["state"],
        "running"
    );
}

#[tokio::test]
async fn a_device_chirpstack_does_not_know_is_refused_before_start() {
    let (fake, url) = start_fake().await;
    let (t, fw) = app_with(&url).await;
    register(&fake, A, "profile-a");
    fake.keys
        .lock()
        .unwrap()
        .insert(A.into(), "0302030405060708090a0b0c0d0e0f10".into());
    let r = t
        .post("/api/campaigns")
        .json(&body(fw))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let e = r.text().await.unwrap();
    assert!(e.contains(&format!("ChirpStack has no device {B}")), "{e}");
    assert!(fake.created.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_job_chirpstack_gave_up_on_fails_the_campaign_with_its_message() {
    let (fake, url) = start_fake().await;
    let (t, fw) = app_with(&url).await;
    register(&fake, A, "profile-a");
    register(&fake, B, "profile-a");
    let id = started(&fake, &t, fw).await;
    // What ChirpStack 4.19 does on a profile without TS005: the first job errors, is tried
    // again, then completed with no next job; the deployment is never marked completed.
    let mut create = job("CREATE_MC_GROUP", 1, 1, Some(2));
    create.max_retry_count = 0;
    create.error_msg = "Error: Device-profile does not support TS005".into();
    fake.jobs
        .lock()
        .unwrap()
        .insert("dep-1".into(), vec![create]);
    fake.devices.lock().unwrap().insert(
        "dep-1".into(),
        [A, B]
            .iter()
            .map(|e| api::FuotaDeploymentDeviceListItem {
                fuota_deployment_id: "dep-1".into(),
                dev_eui: (*e).into(),
                ..Default::default()
            })
            .collect(),
    );
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "failed", "{c}");
    let why = "ChirpStack stopped the deployment at job CREATE_MC_GROUP: Device-profile does not support TS005";
    assert_eq!(c["error"], why, "{c}");
    for eui in [A, B] {
        assert_eq!(device_of(&c, eui)["stage"], "failed");
        assert_eq!(device_of(&c, eui)["error"], why);
    }
}

#[tokio::test]
async fn a_stalled_job_fails_the_devices_still_waiting_for_it() {
    let (fake, url) = start_fake().await;
    let (t, fw) = app_with(&url).await;
    register(&fake, A, "profile-a");
    register(&fake, B, "profile-a");
    let id = started(&fake, &t, fw).await;
    let now = chrono::Utc::now().timestamp() - 1_780_000_000;
    let mut setup = job("MC_GROUP_SETUP", now - 7200, 2, None);
    // Due an hour ago and never run again (900 s is the default allowance).
    setup.scheduler_run_after = ts(now - 3600);
    setup.error_msg = "Error: connection to Redis lost".into();
    fake.jobs.lock().unwrap().insert(
        "dep-1".into(),
        vec![
            job("ADD_GWS_TO_MC_GROUP", now - 7300, 1, Some(now - 7200)),
            setup.clone(),
        ],
    );
    let device = |eui: &str| api::FuotaDeploymentDeviceListItem {
        fuota_deployment_id: "dep-1".into(),
        dev_eui: eui.into(),
        ..Default::default()
    };
    fake.devices.lock().unwrap().insert(
        "dep-1".into(),
        vec![
            api::FuotaDeploymentDeviceListItem {
                mc_group_setup_completed_at: ts(now - 7000),
                ..device(A)
            },
            device(B),
        ],
    );
    // Due a minute ago: ChirpStack may just be busy.
    {
        let mut jobs = fake.jobs.lock().unwrap();
        jobs.get_mut("dep-1").unwrap()[1].scheduler_run_after = ts(now - 60);
    }
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "running", "{c}");
    assert_eq!(device_of(&c, A)["stage"], "mc_group_setup");
    assert_eq!(device_of(&c, B)["stage"], "mc_group_setup");

    fake.jobs.lock().unwrap().get_mut("dep-1").unwrap()[1] = setup;
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "failed", "{c}");
    let error = c["error"].as_str().unwrap();
    assert!(
        error.starts_with("ChirpStack has not run job MC_GROUP_SETUP since it was due at")
            && error.ends_with("(attempt 2/5): connection to Redis lost"),
        "{error}"
    );
    assert_eq!(device_of(&c, B)["error"], error);
}

#[tokio::test]
async fn given_gateways_are_added_to_the_deployment_before_it_starts() {
    let (fake, url) = start_fake().await;
    let (t, fw) = app_with(&url).await;
    register(&fake, A, "profile-a");
    register(&fake, B, "profile-a");
    for eui in [A, B] {
        fake.keys
            .lock()
            .unwrap()
            .insert(eui.into(), "0302030405060708090a0b0c0d0e0f10".into());
    }
    let mut b = body(fw);
    b["multicast"]["gateways"] = json!(["0016C001FF10D3F6"]);
    let r = t.post("/api/campaigns").json(&b).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    assert_eq!(
        c["plan"]["gateways"],
        json!({"gateways": ["0016c001ff10d3f6"], "explicit": true, "unheard": [A, B]})
    );
    let id = c["id"].as_i64().unwrap();
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    step(&t).await;
    assert_eq!(
        *fake.gateways.lock().unwrap(),
        vec![("dep-1".to_string(), vec!["0016c001ff10d3f6".to_string()])]
    );
    assert_eq!(*fake.started.lock().unwrap(), vec!["dep-1"]);
}

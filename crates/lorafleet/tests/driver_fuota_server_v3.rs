//! The fuota-server-v3 driver against a fake chirpstack-fuota-server built from lorafleet's
//! declaration of the v3 `fuota.proto`: the exact deployment sent, and the mapping of status
//! answers to device stages, failures included.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{silent_peer, spawn_app, test_config, TestApp, FIXTURE};
use lorafleet::campaigns::drivers::fuota_server_v3::proto;
use lorafleet::campaigns::drivers::fuota_server_v3::proto::fuota_server_service_server::{
    FuotaServerService, FuotaServerServiceServer,
};
use serde_json::{json, Value};
use tonic::{Request, Response, Status};

const A: &str = "0102030405060708";
const B: &str = "1112131415161718";
const DEPLOYMENT_ID: [u8; 16] = [0xd1; 16];

#[derive(Default)]
struct Fake {
    created: Mutex<Vec<proto::CreateDeploymentRequest>>,
    status: Mutex<proto::GetDeploymentStatusResponse>,
    logs: Mutex<HashMap<Vec<u8>, Vec<proto::DeploymentDeviceLog>>>,
    refuse_create: Mutex<Option<Status>>,
}

#[derive(Clone)]
struct Service(Arc<Fake>);

#[tonic::async_trait]
impl FuotaServerService for Service {
    async fn create_deployment(
        &self,
        request: Request<proto::CreateDeploymentRequest>,
    ) -> Result<Response<proto::CreateDeploymentResponse>, Status> {
        if let Some(s) = self.0.refuse_create.lock().unwrap().clone() {
            return Err(s);
        }
        self.0.created.lock().unwrap().push(request.into_inner());
        Ok(Response::new(proto::CreateDeploymentResponse {
            id: DEPLOYMENT_ID.to_vec(),
        }))
    }

    async fn get_deployment_status(
        &self,
        request: Request<proto::GetDeploymentStatusRequest>,
    ) -> Result<Response<proto::GetDeploymentStatusResponse>, Status> {
        if request.get_ref().id != DEPLOYMENT_ID {
            return Err(Status::not_found("no such deployment"));
        }
        Ok(Response::new(self.0.status.lock().unwrap().clone()))
    }

    async fn get_deployment_device_logs(
        &self,
        request: Request<proto::GetDeploymentDeviceLogsRequest>,
    ) -> Result<Response<proto::GetDeploymentDeviceLogsResponse>, Status> {
        let logs = self
            .0
            .logs
            .lock()
            .unwrap()
            .get(&request.get_ref().dev_eui)
            .cloned()
            .unwrap_or_default();
        Ok(Response::new(proto::GetDeploymentDeviceLogsResponse {
            logs,
        }))
    }
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let svc =
        FuotaServerServiceServer::new(Service(fake.clone())).max_decoding_message_size(64 << 20);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (fake, url)
}

async fn app_with(url: &str) -> (TestApp, i64) {
    let mut config = test_config();
    config.fuota.server_v3.url = url.to_string();
    config.fuota.server_v3.application_id = 7;
    config.network.request_timeout_s = 2;
    let t = spawn_app(config).await;
    let (status, img) = t.upload("fw.bin_signed", FIXTURE).await;
    assert_eq!(status, 201);
    t.add_device(A, Some("p"), None).await;
    t.add_device(B, Some("p"), None).await;
    (t, img["id"].as_i64().unwrap())
}

async fn create_and_start(t: &TestApp, body: Value) -> i64 {
    let r = t.post("/api/campaigns").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    let id = c["id"].as_i64().unwrap();
    let r = t
        .post(&format!("/api/campaigns/{id}/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    id
}

/// One runner pass, as if the poll were due now.
async fn step(t: &TestApp) {
    crate::on_db!(&t.app.db, p => sqlx::query("UPDATE campaigns SET next_poll_at = NULL WHERE state = 'running'")
        .execute(p).await.map(|_| ()))
        .unwrap();
    lorafleet::campaigns::runner::run_due(&t.app).await.unwrap();
}

fn ts(secs: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: 1_780_000_000 + secs,
        nanos: 0,
    })
}

fn device(eui: &str) -> proto::DeploymentDeviceStatus {
    proto::DeploymentDeviceStatus {
        dev_eui: hex::decode(eui).unwrap(),
        created_at: ts(0),
        ..Default::default()
    }
}

fn log(secs: i64, command: &str, fields: &[(&str, &str)]) -> proto::DeploymentDeviceLog {
    proto::DeploymentDeviceLog {
        created_at: ts(secs),
        f_port: 200,
        command: command.into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn device_of<'a>(c: &'a Value, eui: &str) -> &'a Value {
    c["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dev_eui"] == eui)
        .unwrap()
}

#[tokio::test]
async fn deployment_fields_and_status_mapping() {
    let (fake, url) = start_fake().await;
    let (t, fw) = app_with(&url).await;
    let id = create_and_start(
        &t,
        json!({
            "name": "v3", "firmware_id": fw, "devices": [A, B], "driver": "fuota-server-v3",
            "keys": {"gen_app_key": "0302030405060708090a0b0c0d0e0f10"},
            "multicast": {"class": "C", "dr": 5, "frequency": 869525000, "group_id": 2, "timeout_exp": 10},
            "unicast": {"timeout_s": 150, "attempts": 5},
            "fragmentation": {"fragment_size": 200, "redundancy": 12, "session_index": 1,
                              "matrix": 0, "block_ack_delay": 3, "descriptor_hex": "01020304"},
            "request_frag_status": "after_session"
        }),
    )
    .await;

    step(&t).await;
    let created = fake.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    let d = created[0].deployment.clone().unwrap();
    assert_eq!(d.application_id, 7);
    assert_eq!(d.devices.len(), 2);
    for dev in &d.devices {
        assert_eq!(dev.dev_eui.len(), 8);
        // fuota-facts conformance vector: GenAppKey 0302..10 -> McRootKey 55344e82...
        assert_eq!(
            hex::encode(&dev.mc_root_key),
            "55344e82570eaec8bf03b99962d1f445"
        );
    }
    let euis: Vec<String> = d.devices.iter().map(|x| hex::encode(&x.dev_eui)).collect();
    assert_eq!(euis, vec![A, B]);
    assert_eq!(d.multicast_group_type, 1, "v3: CLASS_C = 1");
    assert_eq!(d.multicast_dr, 5);
    assert_eq!(d.multicast_frequency, 869_525_000);
    assert_eq!(d.multicast_group_id, 2);
    assert_eq!(d.multicast_timeout, 10);
    assert_eq!(d.multicast_ping_slot_period, 4);
    assert_eq!(d.unicast_timeout.unwrap().seconds, 150);
    assert_eq!(d.unicast_attempt_count, 5);
    assert_eq!(d.fragmentation_fragment_size, 200);
    assert_eq!(d.payload, FIXTURE, "payload == image bytes");
    assert_eq!(d.fragmentation_redundancy, 12, "a frame count");
    assert_eq!(d.fragmentation_session_index, 1);
    assert_eq!(d.fragmentation_matrix, 0);
    assert_eq!(d.fragmentation_block_ack_delay, 3);
    assert_eq!(d.fragmentation_descriptor, vec![1, 2, 3, 4]);
    assert_eq!(
        d.request_fragmentation_session_status, 1,
        "v3: AFTER_SESSION_TIMEOUT = 1"
    );

    // Key material is wiped once the server has it.
    let keys: String = crate::on_db!(&t.app.db, p => sqlx::query_scalar("SELECT keys_json FROM campaigns WHERE id = $1")
        .bind(id)
        .fetch_one(p).await)
        .unwrap();
    assert_eq!(keys, "{}");

    // McGroupSetup step over: A answered, B did not (the server dropped it).
    {
        let mut s = fake.status.lock().unwrap();
        s.mc_group_setup_completed_at = ts(100);
        let mut a = device(A);
        a.mc_group_setup_completed_at = ts(60);
        s.device_status = vec![a, device(B)];
        let mut logs = fake.logs.lock().unwrap();
        logs.insert(
            hex::decode(A).unwrap(),
            vec![
                log(1, "McGroupSetupReq", &[("mc_group_id", "2")]),
                log(
                    60,
                    "McGroupSetupAns",
                    &[("mc_group_id", "2"), ("id_error", "false")],
                ),
            ],
        );
        logs.insert(
            hex::decode(B).unwrap(),
            vec![log(1, "McGroupSetupReq", &[("mc_group_id", "2")])],
        );
    }
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "running");
    assert_eq!(device_of(&c, A)["stage"], "frag_session_setup");
    assert!(device_of(&c, A)["mc_group_setup_at"]
        .as_str()
        .unwrap()
        .starts_with("2026-05-28"));
    assert_eq!(device_of(&c, B)["stage"], "failed");
    assert!(
        device_of(&c, B)["error"]
            .as_str()
            .unwrap()
            .contains("no McGroupSetupAns after 5 attempts"),
        "{c}"
    );
    let log_text = c["log"].to_string();
    assert!(
        log_text.contains("McGroupSetupAns (FPort 200) id_error=false mc_group_id=2"),
        "{log_text}"
    );
    let lines_before = c["log"].as_array().unwrap().len();

    // Everything done for A, a status answer with missing fragments would have failed it.
    {
        let mut s = fake.status.lock().unwrap();
        s.frag_session_setup_completed_at = ts(200);
        s.mc_session_completed_at = ts(300);
        s.enqueue_completed_at = ts(1300);
        s.frag_status_completed_at = ts(1500);
        let a = &mut s.device_status[0];
        a.frag_session_setup_completed_at = ts(150);
        a.mc_session_completed_at = ts(250);
        a.frag_status_completed_at = ts(1400);
    }
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "completed", "{c}");
    assert!(c["completed_at"].is_string());
    let a = device_of(&c, A);
    assert_eq!(a["stage"], "completed");
    assert!(a["frag_status_at"].is_string() && a["completed_at"].is_string());
    assert_eq!(device_of(&c, B)["stage"], "failed");
    assert_eq!(c["counts"], json!({"completed": 1, "failed": 1}));
    // The service's log lines are stored once, however often they are polled.
    let again = c["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .starts_with("McGroupSetupAns")
        })
        .count();
    assert_eq!(again, 1);
    assert!(c["log"].as_array().unwrap().len() > lines_before);
    assert!(
        c["progress"].as_array().unwrap().len() >= 3,
        "{}",
        c["progress"]
    );
}

#[tokio::test]
async fn frag_status_with_missing_fragments_fails_the_device() {
    let (fake, url) = start_fake().await;
    let (t, fw) = app_with(&url).await;
    let id = create_and_start(
        &t,
        json!({"firmware_id": fw, "devices": [A], "driver": "fuota-server-v3",
               "keys": {"per_device": {A: {"app_key": "0302030405060708090a0b0c0d0e0f10"}}, "lorawan_version": "1.1"},
               "multicast": {"frequency": 869525000, "class": "B", "ping_slot_periodicity": 2},
               "request_frag_status": "after_enqueue"}),
    )
    .await;
    step(&t).await;
    let d = fake.created.lock().unwrap()[0].deployment.clone().unwrap();
    assert_eq!(d.multicast_group_type, 0, "v3: CLASS_B = 0");
    assert_eq!(d.multicast_ping_slot_period, 2);
    assert_eq!(
        d.request_fragmentation_session_status, 0,
        "v3: AFTER_FRAGMENT_ENQUEUE = 0"
    );
    assert_eq!(
        d.devices[0].mc_root_key,
        lorafleet_engine::keys::mc_root_key(lorafleet_engine::keys::RootKey::AppKey(
            lorafleet_engine::keys::parse_key("0302030405060708090a0b0c0d0e0f10").unwrap()
        ))
    );
    {
        let mut s = fake.status.lock().unwrap();
        s.mc_group_setup_completed_at = ts(1);
        s.frag_session_setup_completed_at = ts(2);
        s.mc_session_completed_at = ts(3);
        s.enqueue_completed_at = ts(4);
        s.frag_status_completed_at = ts(5);
        let mut a = device(A);
        a.mc_group_setup_completed_at = ts(1);
        a.frag_session_setup_completed_at = ts(2);
        a.mc_session_completed_at = ts(3);
        s.device_status = vec![a];
        fake.logs.lock().unwrap().insert(
            hex::decode(A).unwrap(),
            vec![log(
                5,
                "FragSessionStatusAns",
                &[
                    ("frag_index", "0"),
                    ("nb_frag_received", "90"),
                    ("missing_frag", "6"),
                    ("not_enough_matrix_memory", "false"),
                ],
            )],
        );
    }
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "failed");
    assert_eq!(c["error"], "no device completed the update");
    let a = device_of(&c, A);
    assert_eq!(a["stage"], "failed");
    assert_eq!(a["error"], "FragSessionStatusAns: 6 fragments missing");
    let warn = c["log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .starts_with("FragSessionStatusAns")
        })
        .unwrap();
    assert_eq!(warn["level"], "warning");
    assert_eq!(warn["source"], "service");
}

#[tokio::test]
async fn refusal_fails_the_campaign_with_the_services_message() {
    let (fake, url) = start_fake().await;
    *fake.refuse_create.lock().unwrap() =
        Some(Status::invalid_argument("multicast timeout out of range"));
    let (t, fw) = app_with(&url).await;
    let id = create_and_start(
        &t,
        json!({"firmware_id": fw, "devices": [A], "driver": "fuota-server-v3",
               "keys": {"gen_app_key": "0302030405060708090a0b0c0d0e0f10"},
               "multicast": {"frequency": 869525000}}),
    )
    .await;
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "failed");
    let err = c["error"].as_str().unwrap();
    assert!(err.contains("multicast timeout out of range"), "{err}");
    assert!(err.contains("InvalidArgument"), "{err}");
    assert_eq!(device_of(&c, A)["stage"], "failed");
}

#[tokio::test]
async fn unreachable_service_is_retried_and_shown() {
    let url = silent_peer().await;
    let (t, fw) = app_with(&url).await;
    let id = create_and_start(
        &t,
        json!({"firmware_id": fw, "devices": [A], "driver": "fuota-server-v3",
               "keys": {"gen_app_key": "0302030405060708090a0b0c0d0e0f10"},
               "multicast": {"frequency": 869525000}}),
    )
    .await;
    step(&t).await;
    step(&t).await;
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(c["state"], "running", "{c}");
    assert!(
        c["last_poll_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach"),
        "{c}"
    );
    let warnings = c["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["level"] == "warning")
        .count();
    assert_eq!(warnings, 1, "the same error is logged once: {}", c["log"]);
    // Keys are still there for the retry.
    let keys: String = crate::on_db!(&t.app.db, p => sqlx::query_scalar("SELECT keys_json FROM campaigns WHERE id = $1")
        .bind(id)
        .fetch_one(p).await)
        .unwrap();
    assert_ne!(keys, "{}");
    // The image of a running campaign cannot be deleted.
    let r = t
        .delete(&format!("/api/firmware/{fw}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"].as_str().unwrap().contains(&format!("#{id}")),
        "{e}"
    );
    // Cancel works although the service cannot be told.
    let r = t
        .post(&format!("/api/campaigns/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["state"], "cancelled");
    assert_eq!(device_of(&c, A)["stage"], "cancelled");
    let r = t
        .delete(&format!("/api/firmware/{fw}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "deletable once no campaign runs");
}

#[tokio::test]
async fn a_restart_resumes_polling_without_creating_again() {
    let (fake, url) = start_fake().await;
    let (t, fw) = app_with(&url).await;
    let id = create_and_start(
        &t,
        json!({"firmware_id": fw, "devices": [A], "driver": "fuota-server-v3",
               "keys": {"gen_app_key": "0302030405060708090a0b0c0d0e0f10"},
               "multicast": {"frequency": 869525000}}),
    )
    .await;
    step(&t).await;
    assert_eq!(fake.created.lock().unwrap().len(), 1);

    // A second lorafleet on the same database, as after a restart: the first one stopped and
    // released its campaign leases.
    lorafleet::campaigns::runner::release(&t.app).await;
    let config = t.app.config.clone();
    let (again, _) = lorafleet::App::build_with_network(
        config,
        std::sync::Arc::new(lorafleet::network::disabled::Disabled),
    )
    .await
    .unwrap();
    {
        let mut s = fake.status.lock().unwrap();
        s.mc_group_setup_completed_at = ts(10);
        let mut a = device(A);
        a.mc_group_setup_completed_at = ts(5);
        s.device_status = vec![a];
    }
    crate::on_db!(&again.db, p => sqlx::query("UPDATE campaigns SET next_poll_at = NULL")
        .execute(p).await.map(|_| ()))
    .unwrap();
    lorafleet::campaigns::runner::run_due(&again).await.unwrap();
    assert_eq!(
        fake.created.lock().unwrap().len(),
        1,
        "the deployment is not created twice"
    );
    let c = t.get_json(&format!("/api/campaigns/{id}")).await;
    assert_eq!(device_of(&c, A)["stage"], "frag_session_setup");
}

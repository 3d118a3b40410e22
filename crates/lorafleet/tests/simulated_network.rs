//! The simulated network as the console sees it: virtual devices appear through the network's
//! device list, their uplinks arrive through the ingest writer, and a Version & Status request
//! sent through the API is answered by the device and recorded.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use lorafleet::config::{Config, NetworkKind};
use lorafleet::App;
use serde_json::Value;
use tower::ServiceExt;

const PASSWORD: &str = "simulated-test-password";

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.data_dir = dir.join("data");
    c.firmware.dir = dir.join("bin");
    c.auth.initial_admin_password = PASSWORD.into();
    c.network.simulated.devices = 5;
    c.network.simulated.time_scale = 200.0;
    c.network.simulated.uplink_interval_s = 20;
    c
}

async fn call(
    app: &lorafleet::AppState,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"));
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Basic {auth}"));
    let body = match body {
        Some(b) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let res = lorafleet::web::router(app.clone())
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn wait_for<F: Fn(&Value) -> bool>(
    app: &lorafleet::AppState,
    uri: &str,
    what: &str,
    ok: F,
) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = call(app, "GET", uri, None).await;
        if status == StatusCode::OK && ok(&body) {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_devices_uplink_through_ingest_and_answer_version_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    assert_eq!(
        config.network.kind,
        NetworkKind::Simulated,
        "simulated is the default"
    );
    let (app, _) = App::build(config).await.unwrap();

    let (_, info) = call(&app, "GET", "/api/info", None).await;
    assert_eq!(info["network"]["simulated"], true);
    let bin: Vec<_> = std::fs::read_dir(dir.path().join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(bin.len(), 2, "demo images written on first start: {bin:?}");

    assert_eq!(app.sync_network_devices().await.unwrap(), 5);
    let list = wait_for(&app, "/api/devices", "five devices", |b| b["total"] == 5).await;
    assert_eq!(list["devices"].as_array().unwrap().len(), 5);

    let eui = "4c4653494d000001";
    let detail = wait_for(&app, &format!("/api/devices/{eui}"), "an uplink", |b| {
        b["last_uplink"].is_object()
    })
    .await;
    assert_eq!(detail["name"], "sim-sensor-01");
    assert_eq!(detail["application"], "Simulated fleet");
    let up = &detail["last_uplink"];
    assert!(up["rssi"].as_i64().unwrap() < -50, "{up}");

    let (status, _) = call(
        &app,
        "POST",
        &format!("/api/devices/{eui}/status-requests"),
        Some(serde_json::json!({"command": "package_version"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = call(
        &app,
        "POST",
        &format!("/api/devices/{eui}/status-requests"),
        Some(serde_json::json!({"command": "version_running"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let detail = wait_for(&app, &format!("/api/devices/{eui}"), "the answers", |b| {
        b["status"]["running"].is_object() && b["status"]["package"].is_object()
    })
    .await;
    assert_eq!(detail["status"]["running"]["version"]["display"], "1.2.0");
    assert_eq!(detail["status"]["package"]["identifier"], 10);
    let states: Vec<&str> = detail["status_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["answered", "answered"], "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first_now = {
        let (app, _) = App::build(config(dir.path())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        app.network.now()
    };
    let (app, _) = App::build(config(dir.path())).await.unwrap();
    assert!(
        app.network.now() >= first_now - chrono::TimeDelta::seconds(150),
        "the clock resumes where it was"
    );
    let bin = std::fs::read_dir(dir.path().join("bin")).unwrap().count();
    assert_eq!(bin, 2, "no second set of demo images");
}

/// TS003 end to end: devices start with clocks off by up to 90 s, ask for the time on FPort
/// 202, and lorafleet's answer (sent as a class A downlink after their next uplink) sets them
/// right to within the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_synchronise_their_clocks() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let sim = std::sync::Arc::new(lorafleet::network::simulated::Simulated::new(&config).unwrap());
    let (_app, _) = App::build_with_simulation(config, sim.clone())
        .await
        .unwrap();
    let start = Instant::now();
    for eui in sim.dev_euis() {
        loop {
            let (synced, offset) = sim
                .inspect(eui, |d| (d.state.clock_synced, d.state.clock_offset_ms))
                .unwrap();
            if synced {
                assert!(offset.abs() < 1_000, "{eui}: still {offset} ms off");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{eui} never synchronised"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What a device received of a fragmentation session survives a restart of the simulation:
/// its decoder is rebuilt from the reception log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_fragments_survive_a_restart() {
    use lorafleet::network::{Downlink, Network};
    use lorafleet_engine::commands::{data_fragments, frag_session_setup_req, FragSetup};
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.network.simulated.devices = 1;
    let sim = std::sync::Arc::new(lorafleet::network::simulated::Simulated::new(&config).unwrap());
    let (_app, _) = App::build_with_simulation(config.clone(), sim.clone())
        .await
        .unwrap();
    let eui = sim.dev_euis()[0];
    let image: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
    let setup = FragSetup::for_image(image.len(), 50, 0, 0, 0, 0, [0; 4]).unwrap();
    let send = |data: Vec<u8>| {
        let sim = sim.clone();
        async move {
            sim.enqueue(&Downlink {
                dev_eui: eui,
                f_port: 201,
                data,
                confirmed: false,
            })
            .await
            .unwrap();
        }
    };
    // Unicast fragments: each waits for an uplink of the class A device.
    send(frag_session_setup_req(&setup).unwrap()).await;
    let frames = data_fragments(&image, &setup, 0).unwrap();
    for f in frames.iter().take(10) {
        send(f.clone()).await;
    }
    let start = Instant::now();
    loop {
        let p = sim.inspect(eui, |d| d.session_progress(0)).unwrap();
        if p.is_some_and(|(received, _)| received == 10) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "fragments not received: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.shutdown().await;
    let again = lorafleet::network::simulated::Simulated::new(&config).unwrap();
    let p = again.inspect(eui, |d| d.session_progress(0)).unwrap();
    assert_eq!(p, Some((10, 10)), "received and rank after the restart");
}

//! A campaign over a mixed simulated fleet (`network.simulated.stacks`) of all four stacks:
//! lorafleet's demo devices (Version & Status), LoRaMac-node-like devices (Firmware Management
//! only, 50-byte fragments, a bounded fragment count and parity, the highest-N status
//! reading), Firmware-Management-only devices and LoRa-Basics-Modem-like devices (TS003/TS004/
//! TS005 v2, Firmware Management), each checked and verified by the method it speaks, with the
//! default `auto`, in ONE campaign through the API: one multicast session carries one FEC
//! matrix, so the campaign runs a session for the v1 devices and then one for the v2 devices
//! (issue 8 item 6); the limits reach the engine as an operator gives them
//! (`device_overrides.<dev_eui>.device_limits`), and a session beyond a stock LoRaMac-node
//! build is refused with the limit named.
// A test: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use lorafleet::config::{Config, SimulatedDeviceOverride};
use lorafleet::engine::packages::{CampaignLayers, DeviceLayers};
use lorafleet::engine::step::{self as runner, DeviceStart, GroupInfo};
use lorafleet::engine::Io;
use lorafleet::network::simulated::Simulated;
use lorafleet::network::MulticastClass;
use lorafleet::App;
use lorafleet_codec::firmware_trailer::{self, PackageKind, SignedTrailer};
use lorafleet_engine::airtime;
use lorafleet_engine::commands::FragSetup;
use lorafleet_engine::machine::{
    CheckMode, Dev, FragStatusWhen, Method, Outcome, RebootWith, Run, Settings, Target,
};
use lorafleet_engine::packages::DeviceLimits;
use lorafleet_simulator::stacks::{FragLimitsPatch, Stack};
use serde_json::{json, Value};

const PASSWORD: &str = "stacks-test-password";

/// The sensor model's demo version: the devices' guards let it in, and it is newer than theirs.
const NEW_VERSION: u32 = 0x0001_0300;
/// LoRaMac-node's fragment store takes at most 50 bytes a fragment.
const FRAGMENT_SIZE: u8 = 50;
/// The LoRaMac-node-like device that loses 10 % of everything.
const LOSSY: &str = "4c4653494d000002";
/// The LoRaMac-node build of the mixed fleet: FragDecoder.h's FRAG_MAX_NB and
/// FRAG_MAX_REDUNDANCY raised for 4 KiB images (the stock 21 x 50 bytes hold 1 KiB).
const LORAMAC_BUILD: (u16, u16) = (128, 48);

fn image(body_len: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..body_len).map(|i| (i * 131 % 251) as u8).collect();
    firmware_trailer::build(
        &body,
        &SignedTrailer {
            signature: lorafleet_simulator::demo::PLACEHOLDER_SIGNATURE.to_vec(),
            manufacturer_uuid: lorafleet_simulator::device::MANUFACTURER_UUID,
            device_class_uuid: lorafleet_simulator::device::MODELS[0].device_class_uuid,
            version: NEW_VERSION,
            kind: PackageKind::Full,
            old_firmware_size: 0,
        },
    )
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.data_dir = dir.join("data");
    c.firmware.dir = dir.join("bin");
    // `LORAFLEET_TEST_BACKEND=postgres`: a fresh database on the test cluster.
    if common::postgres::backend_is_postgres() {
        c.server.database_url = common::postgres::fresh_database().unwrap();
    }
    let sim = &mut c.network.simulated;
    sim.devices = 12;
    sim.time_scale = 400.0;
    sim.uplink_interval_s = 30;
    for stack in Stack::ALL {
        sim.stacks.insert(stack.name().into(), 0.25);
    }
    sim.stack_limits.insert(
        "loramac-node".into(),
        FragLimitsPatch {
            max_fragments: Some(LORAMAC_BUILD.0),
            max_parity: Some(LORAMAC_BUILD.1),
            ..Default::default()
        },
    );
    sim.overrides.insert(
        LOSSY.into(),
        SimulatedDeviceOverride {
            loss: Some(0.1),
            stack: Some("loramac-node".into()),
            ..Default::default()
        },
    );
    c
}

fn settings(image_len: usize) -> Settings {
    let frag = FragSetup::for_image(image_len, FRAGMENT_SIZE, 0, 0, 0, 0, [0; 4]).unwrap();
    Settings {
        group_id: 0,
        class: MulticastClass::C,
        dr: 5,
        frequency: 869_525_000,
        timeout_exp: 9,
        // The form's default. At time x400 it is under half a second of wall time; 60 s left
        // a lossy device little room when a busy machine delays the simulation (a likely cause
        // of "no answer to FragSessionSetupReq after 4 attempts", seen once).
        unicast_timeout: TimeDelta::seconds(150),
        attempts: 4,
        // 10 % loss with M around 80 needs 25-28 % parity; the session holds 40 %.
        redundancy: usize::from(frag.nb_frag) * 40 / 100,
        frag,
        frag_status: FragStatusWhen::AfterSession,
        check: CheckMode::Refuse,
        verify: true,
        reboot_delay: TimeDelta::seconds(30),
        status_port: 111,
        check_method: Method::Auto,
        verify_method: Method::Auto,
        fm_port: 203,
        reboot_with: RebootWith::RebootTime,
        adaptive: None,
    }
}

/// What the operator tells lorafleet each device holds (`device_overrides.<dev_eui>.
/// device_limits`), from the stack and build it knows the device has.
fn operator_limits(stack: Stack, build: Option<(u16, u16)>) -> DeviceLimits {
    let patch = build.map(|(nb, parity)| FragLimitsPatch {
        max_fragments: Some(nb),
        max_parity: Some(parity),
        ..Default::default()
    });
    stack
        .limits(patch.as_ref())
        .map(|l| DeviceLimits {
            max_fragment_size: Some(u32::from(l.max_fragment_size)),
            max_fragments: Some(u32::from(l.max_fragments)),
            max_parity: Some(u32::from(l.max_parity)),
        })
        .unwrap_or_default()
}

/// Starts an engine campaign over `devices` the way the engine driver does: each device's
/// profile on the (simulated) network gives its package versions, `limits` its
/// `device_limits`, the image and `session_cnt` its TS004 v2 SessionCnt and MIC.
async fn start(
    app: &lorafleet::AppState,
    s: &Settings,
    image: &[u8],
    devices: &[(lorafleet_codec::eui::DevEui, DeviceLimits)],
    session_cnt: u16,
) -> (Run, Vec<Dev>, Vec<String>) {
    let io = Io {
        db: &app.db,
        network: app.network.as_ref(),
        changes: &app.changes,
    };
    let starts: Vec<DeviceStart> = devices
        .iter()
        .map(|&(dev_eui, _)| DeviceStart {
            dev_eui,
            root: None,
        })
        .collect();
    let layers: Vec<DeviceLayers> = devices
        .iter()
        .map(|&(_, limits)| DeviceLayers {
            limits,
            ..Default::default()
        })
        .collect();
    let campaign = CampaignLayers {
        packages: Default::default(),
        status_port: s.status_port,
        image,
        session_cnt,
        frag_index: s.frag.index,
        descriptor: s.frag.descriptor,
        session: None,
    };
    let (run, devs, log) = runner::start_with(io, s, &starts, &layers, &campaign)
        .await
        .unwrap();
    (run, devs, log.into_iter().map(|l| l.message).collect())
}

/// Steps campaigns side by side (one multicast session each) until every one is done, within
/// a bounded wall-clock deadline; returns each run's failure and devices.
async fn run_all(
    app: &lorafleet::AppState,
    s: &Settings,
    image: &[u8],
    mut runs: Vec<(Run, Vec<Dev>)>,
) -> Vec<(Option<String>, Vec<Dev>)> {
    let io = Io {
        db: &app.db,
        network: app.network.as_ref(),
        changes: &app.changes,
    };
    let t = Target {
        image_len: image.len(),
        version: Some(NEW_VERSION),
        ..Default::default()
    };
    // Each session's fragments in its TS004 version (v2 parity follows the v2 matrix).
    let frames: Vec<Vec<Vec<u8>>> = runs
        .iter()
        .map(|(_, devs)| {
            let v = runner::session_fragmentation(devs).version;
            lorafleet_engine::packages::data_fragments(v, image, &s.frag, s.redundancy).unwrap()
        })
        .collect();
    let region = lrwn::region::get(lrwn::region::CommonName::EU868, false, false);
    let ms = airtime::airtime_ms(region.as_ref(), s.dr, usize::from(FRAGMENT_SIZE) + 3, false);
    let mut done = vec![false; runs.len()];
    let begun = Instant::now();
    while done.iter().any(|d| !d) {
        let mut next = Duration::from_millis(200);
        for (i, (run, devs)) in runs.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            let stepped = runner::step(
                io,
                run,
                devs,
                s,
                &t,
                &frames[i],
                &GroupInfo::default(),
                TimeDelta::microseconds((ms * 1000.0) as i64),
            )
            .await
            .unwrap();
            done[i] = stepped.done;
            next = next.min(stepped.next);
        }
        assert!(
            begun.elapsed() < Duration::from_secs(180),
            "campaigns did not finish: {:#?}",
            runs.iter()
                .map(|(r, devs)| (
                    r.phase,
                    devs.iter()
                        .map(|d| (d.dev_eui, d.step, d.trying, d.attempts))
                        .collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(next).await;
    }
    runs.into_iter().map(|(r, d)| (r.failure, d)).collect()
}

/// Serves the app's router on 127.0.0.1 port 0 with the campaign runner and the firmware
/// library's index running, as the binary does; returns the base URL.
async fn serve(app: &lorafleet::AppState) -> String {
    app.spawn_background();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = lorafleet::web::router(app.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("http://{addr}")
}

async fn call(method: reqwest::Method, url: String, body: Option<&Value>) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method, url)
        .basic_auth("admin", Some(PASSWORD));
    if let Some(b) = body {
        r = r.json(b);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Issue 8 item 6: ONE campaign over the fleet of all four stacks, through the API and the
/// campaign runner. Its devices need two multicast sessions (TS004 v1 and v2), which run one
/// after the other as the campaign's two waves; every device is verified by its own method,
/// and the LoRaMac-node-like device at 10 % loss, whose status answer reads "fragments
/// missing" even after rebuilding, is verified, not reported missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_campaign_over_a_mixed_fleet_verifies_each_device_by_its_own_method() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.auth.initial_admin_password = PASSWORD.into();
    config.log.level = "warn".into();
    std::fs::create_dir_all(&config.firmware.dir).unwrap();
    let image = image(4 * 1024);
    std::fs::write(config.firmware.dir.join("mixed-1.3.0.bin"), &image).unwrap();
    let sim = Arc::new(Simulated::new(&config).unwrap());
    let (app, _) = App::build_with_simulation(config.clone(), sim.clone())
        .await
        .unwrap();
    app.sync_network_devices().await.unwrap();
    let base = serve(&app).await;
    let stack_of = |eui: lorafleet_codec::eui::DevEui| sim.stack_of(eui).unwrap();
    // The sensors: the image is theirs (the trackers' model would be refused).
    let fleet: Vec<_> = sim
        .dev_euis()
        .into_iter()
        .filter(|e| sim.inspect(*e, |x| x.id.model.name) == Some("sensor"))
        .collect();
    let stacks: std::collections::BTreeSet<Stack> = fleet.iter().map(|e| stack_of(*e)).collect();
    assert_eq!(
        stacks.len(),
        4,
        "the fleet mixes all four stacks: {stacks:?}"
    );
    // What the operator tells lorafleet each device holds, from the stack and build it knows.
    let overrides: serde_json::Map<String, Value> = fleet
        .iter()
        .map(|eui| {
            let stack = stack_of(*eui);
            let build = (stack == Stack::LoramacNode).then_some(LORAMAC_BUILD);
            let limits = operator_limits(stack, build);
            (eui.to_string(), json!({"device_limits": limits}))
        })
        .collect();
    let firmware = loop {
        let (_, f) = call(reqwest::Method::GET, format!("{base}/api/firmware"), None).await;
        let found = f["images"].as_array().and_then(|i| {
            i.iter()
                .find(|i| i["file_name"] == "mixed-1.3.0.bin")
                .cloned()
        });
        if let Some(found) = found {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let euis: Vec<String> = fleet.iter().map(ToString::to_string).collect();
    let (status, c) = call(
        reqwest::Method::POST,
        format!("{base}/api/campaigns"),
        Some(&json!({
            "name": "mixed fleet",
            "firmware_id": firmware["id"],
            "devices": euis,
            "driver": "engine",
            "unicast": {"timeout_s": 150, "attempts": 4},
            // 10 % loss with M around 85 needs 25-28 % parity; the session holds 40 %.
            "fragmentation": {"fragment_size": FRAGMENT_SIZE, "redundancy_percent": 40},
            "engine": {"reboot_delay_s": 30},
            "device_overrides": overrides,
        })),
    )
    .await;
    assert_eq!(status, 201, "{c}");
    // The plan counts the sessions, each with its devices and its fragments' air time.
    let sessions = c["plan"]["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{}", c["plan"]);
    let v2_devices = fleet
        .iter()
        .filter(|e| stack_of(**e) == Stack::LoraBasicsModem)
        .count();
    assert_eq!(sessions[1]["devices"], v2_devices, "{}", c["plan"]);
    assert_eq!(
        sessions[0]["devices"].as_u64().unwrap() as usize + v2_devices,
        fleet.len()
    );
    for session in sessions {
        assert_eq!(session["airtime_total_s"], c["plan"]["airtime_total_s"]);
    }
    assert!(
        c["plan"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["message"]
                .as_str()
                .unwrap()
                .starts_with("the devices need 2 multicast sessions")),
        "{}",
        c["plan"]
    );
    let id = c["id"].as_i64().unwrap();
    let (status, c) = call(
        reqwest::Method::POST,
        format!("{base}/api/campaigns/{id}/start"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 202, "{c}");
    let begun = Instant::now();
    let c = loop {
        let (_, c) = call(
            reqwest::Method::GET,
            format!("{base}/api/campaigns/{id}"),
            None,
        )
        .await;
        if c["state"] != "running" {
            break c;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(240),
            "the campaign ends: {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(c["state"], "completed", "{c}");
    assert_eq!(c["state_label"], "completed", "{c}");
    // No rollout: the two sessions are the waves of one implicit wave, the larger (v1) first.
    assert!(c.get("rollout").is_none(), "{c}");
    let waves = c["waves"].as_array().unwrap();
    assert_eq!(waves.len(), 2, "{c}");
    for (w, version) in waves.iter().zip([1, 2]) {
        assert_eq!(
            w["session"],
            json!({"fragmentation": {"version": version, "f_port": 201}}),
            "{w}"
        );
        assert_eq!(w["state"], "succeeded", "{w}");
        assert_eq!(w["rollout_wave"], 1, "{w}");
        for eui in strings(&w["devices"]) {
            let stack = stack_of(eui.parse().unwrap());
            assert_eq!(stack.package_version(), version, "{eui} {stack:?}");
        }
    }
    let in_waves = strings(&waves[0]["devices"]).len() + strings(&waves[1]["devices"]).len();
    assert_eq!(in_waves, fleet.len());
    let device = |eui: &str| {
        c["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["dev_eui"] == eui)
            .unwrap()
            .clone()
    };
    for eui in &fleet {
        let stack = stack_of(*eui);
        let d = device(&eui.to_string());
        let method = if stack == Stack::LorafleetDemo {
            "version_status"
        } else {
            "firmware_management"
        };
        assert_eq!(d["outcome"], "verified", "{stack:?}: {d}");
        assert_eq!(d["check_method_used"], method, "{stack:?}: {d}");
        assert_eq!(d["verify_method_used"], method, "{stack:?}: {d}");
        if method == "firmware_management" {
            assert_eq!(d["firmware_management"]["image"], "valid", "{d}");
            assert!(!d["firmware_management"]["reboot_at"].is_null(), "{d}");
        }
        let v = sim.inspect(*eui, |x| x.running_version()).unwrap();
        assert_eq!(v, NEW_VERSION, "{eui} {stack:?}");
    }
    // In sequence: the v2 session's devices are set up only once every v1 device is done.
    let time = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let first_done = strings(&waves[0]["devices"])
        .iter()
        .map(|e| time(&device(e)["completed_at"]))
        .max()
        .unwrap();
    for eui in strings(&waves[1]["devices"]) {
        let setup = time(&device(&eui)["mc_group_setup_at"]);
        assert!(
            setup >= first_done,
            "{eui} set up at {setup}, before {first_done}"
        );
    }
    let log = common::campaign_log(&c);
    assert!(
        log.iter().any(|l| l.starts_with(
            "the devices need 2 multicast sessions, each run as a wave of its own: TS004 v1 on FPort 201"
        )),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("wave 1 (TS004 v1 on FPort 201) over: ")
                && l.contains("wave 2 (TS004 v2 on FPort 201) starts")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("campaign of its own")),
        "{log:#?}"
    );
    // The lossy device lost data fragments: its answer says so in LoRaMac-node's reading,
    // and the version check decided.
    let lossy = device(LOSSY);
    assert_eq!(lossy["frag_status"]["reading"], "highest_n", "{lossy}");
    assert!(
        lossy["frag_status"]["fields"]["missing_frag"]
            .as_u64()
            .unwrap()
            > 0,
        "{lossy}"
    );
    // The Firmware Management devices of a session reboot together: one time for the group,
    // give or take the seconds each answer took to come back.
    for w in waves {
        let reboots: Vec<i64> = strings(&w["devices"])
            .iter()
            .map(|e| device(e))
            .filter(|d| d["check_method_used"] == "firmware_management")
            .map(|d| time(&d["firmware_management"]["reboot_at"]).timestamp())
            .collect();
        let spread = reboots.iter().max().unwrap() - reboots.iter().min().unwrap();
        assert!(spread <= 10, "{}: {reboots:?}", w["session"]);
    }
    // Their answers went into each device's record, so the next campaign's `auto` check asks
    // them through Firmware Management first, and the demo devices through Version & Status.
    let io = Io {
        db: &app.db,
        network: app.network.as_ref(),
        changes: &app.changes,
    };
    let v1: Vec<lorafleet_codec::eui::DevEui> = strings(&waves[0]["devices"])
        .iter()
        .map(|e| e.parse().unwrap())
        .collect();
    let starts: Vec<DeviceStart> = v1
        .iter()
        .map(|&dev_eui| DeviceStart {
            dev_eui,
            root: None,
        })
        .collect();
    let (_, next, _) = runner::start(io, &settings(image.len()), &starts)
        .await
        .unwrap();
    for n in &next {
        let used = &device(&n.dev_eui.to_string())["check_method_used"];
        let expected = match used.as_str() {
            Some("firmware_management") => Some(Method::FirmwareManagement),
            _ => Some(Method::VersionStatus),
        };
        assert_eq!(n.trying, expected, "{}", n.dev_eui);
        if expected == Some(Method::FirmwareManagement) {
            let r = lorafleet::storage::devices::detail(&app.db, n.dev_eui)
                .await
                .unwrap()
                .unwrap()
                .firmware_management
                .unwrap();
            assert_eq!(r["firmware_version"]["value"], NEW_VERSION, "{r}");
            assert_eq!(r["image"]["status"], "valid", "{r}");
        }
    }
}

/// A stock LoRaMac-node build (21 fragments of at most 50 bytes, 5 lost at most) given a 4 KiB
/// image in 50-byte fragments answers FragSessionSetupAns "not enough memory"; the engine
/// names the limit the session exceeds, from the limits the operator gave for the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_beyond_a_stock_loramac_node_build_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let sim = &mut config.network.simulated;
    sim.devices = 2;
    sim.stacks.clear();
    sim.stacks.insert("loramac-node".into(), 1.0);
    sim.stack_limits.clear();
    sim.overrides.clear();
    let sim = Arc::new(Simulated::new(&config).unwrap());
    let (app, _) = App::build_with_simulation(config.clone(), sim.clone())
        .await
        .unwrap();
    app.sync_network_devices().await.unwrap();
    let image = image(4 * 1024);
    let s = settings(image.len());
    let fleet: Vec<_> = sim
        .dev_euis()
        .into_iter()
        .map(|eui| (eui, operator_limits(Stack::LoramacNode, None)))
        .collect();
    let (run, devs, _) = start(&app, &s, &image, &fleet, 1).await;
    let ended = run_all(&app, &s, &image, vec![(run, devs)]).await;
    let (_, devs) = &ended[0];
    for d in devs {
        assert_eq!(d.outcome, Some(Outcome::NotUpdated), "{}", d.dev_eui);
        let why = d.error.as_deref().unwrap();
        assert!(why.contains("not enough memory"), "{why}");
        assert!(
            why.contains(&format!(
                "{} data fragments exceed its max_fragments of 21",
                s.frag.nb_frag
            )),
            "{why}"
        );
        let v = sim.inspect(d.dev_eui, |x| x.running_version()).unwrap();
        assert_ne!(v, NEW_VERSION);
    }
}

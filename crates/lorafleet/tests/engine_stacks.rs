//! A campaign over a mixed simulated fleet (`network.simulated.stacks`) of all four stacks:
//! lorafleet's demo devices (Version & Status), LoRaMac-node-like devices (Firmware Management
//! only, 50-byte fragments, a bounded fragment count and parity, the highest-N status
//! reading), Firmware-Management-only devices and LoRa-Basics-Modem-like devices (TS003/TS004/
//! TS005 v2, Firmware Management), each checked and verified by the method it speaks, with the
//! default `auto`. One multicast session carries one FEC matrix, so the v2 devices, refused
//! by the v1 session with the reason, get their own session at the same time; the limits reach
//! the engine as an operator gives them (`device_overrides.<dev_eui>.device_limits`), and a
//! session beyond a stock LoRaMac-node build is refused with the limit named.
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
use lorafleet_codec::frag_status::Reading;
use lorafleet_engine::airtime;
use lorafleet_engine::commands::FragSetup;
use lorafleet_engine::machine::{
    CheckMode, Dev, FragStatusWhen, Method, Outcome, RebootWith, Run, Settings, Target,
};
use lorafleet_engine::packages::DeviceLimits;
use lorafleet_simulator::stacks::{FragLimitsPatch, Stack};

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
            manufacturer_uuid: [1; 16],
            device_class_uuid: [2; 16],
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

/// Every device of the four stacks verified by its own method; the LoRaMac-node-like device at
/// 10 % loss, whose status answer reads "fragments missing" even after rebuilding, is
/// verified, not reported missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_is_verified_each_by_its_own_method() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let sim = Arc::new(Simulated::new(&config).unwrap());
    let (app, _) = App::build_with_simulation(config.clone(), sim.clone())
        .await
        .unwrap();
    app.sync_network_devices().await.unwrap();
    let image = image(4 * 1024);
    let s = settings(image.len());
    let stack_of = |eui: lorafleet_codec::eui::DevEui| sim.stack_of(eui).unwrap();
    let fleet: Vec<_> = sim
        .dev_euis()
        .into_iter()
        .map(|eui| {
            let stack = stack_of(eui);
            let build = (stack == Stack::LoramacNode).then_some(LORAMAC_BUILD);
            (eui, operator_limits(stack, build))
        })
        .collect();
    // The whole fleet in one campaign: the v1 session refuses the v2 devices, saying why.
    let (run, first, log) = start(&app, &s, &image, &fleet, 1).await;
    let v2: Vec<_> = fleet
        .iter()
        .copied()
        .filter(|(eui, _)| stack_of(*eui) == Stack::LoraBasicsModem)
        .collect();
    assert!(!v2.is_empty());
    for (eui, _) in &v2 {
        let d = first.iter().find(|d| d.dev_eui == *eui).unwrap();
        assert_eq!(d.outcome, Some(Outcome::Refused), "{eui}");
        let why = d.error.as_deref().unwrap();
        assert!(
            why.contains("speaks TS004 v2") && why.contains("campaign of its own"),
            "{why}"
        );
    }
    assert!(
        log.iter()
            .any(|l| l.contains("speaks TS005 v2") && l.contains("TS004 v2")),
        "{log:#?}"
    );
    // ...and they get their own session (TS004/TS005 v2, SessionCnt 2) at the same time.
    let (run2, second, _) = start(&app, &s, &image, &v2, 2).await;
    let ended = run_all(&app, &s, &image, vec![(run, first), (run2, second)]).await;
    for (failure, _) in &ended {
        assert_eq!(failure, &None);
    }
    let devs: Vec<Dev> = ended
        .into_iter()
        .flat_map(|(_, devs)| devs)
        .filter(|d| d.outcome != Some(Outcome::Refused))
        .collect();
    assert_eq!(devs.len(), fleet.len());
    let mut seen = std::collections::BTreeSet::new();
    for d in &devs {
        let stack = stack_of(d.dev_eui);
        seen.insert(stack);
        let version = d.packages.unwrap().packages.fragmentation.version;
        assert_eq!(version, stack.package_version(), "{} {stack:?}", d.dev_eui);
        let method = if stack == Stack::LorafleetDemo {
            Method::VersionStatus
        } else {
            Method::FirmwareManagement
        };
        let what = (d.dev_eui.to_string(), stack, d.error.clone());
        assert_eq!(d.outcome, Some(Outcome::Verified), "{what:?}");
        assert_eq!(d.check_method_used, Some(method), "{what:?}");
        assert_eq!(d.verify_method_used, Some(method), "{what:?}");
        if method == Method::FirmwareManagement {
            assert_eq!(d.fm.image.as_deref(), Some("valid"), "{what:?}");
            assert!(d.fm.reboot_at.is_some(), "{what:?}");
        }
        let v = sim.inspect(d.dev_eui, |x| x.running_version()).unwrap();
        assert_eq!(v, NEW_VERSION, "{what:?}");
    }
    assert_eq!(seen.len(), 4, "the fleet mixes all four stacks: {seen:?}");
    // The lossy device lost data fragments: its answer says so in LoRaMac-node's reading,
    // and the version check decided.
    let lossy = devs
        .iter()
        .find(|d| d.dev_eui.to_string() == LOSSY)
        .unwrap();
    let report = lossy.frag_status_report.as_ref().expect("a status answer");
    assert_eq!(report.reading, Reading::HighestN);
    assert!(report.fields.missing_frag > 0, "{report:?}");
    assert_eq!(lossy.outcome, Some(Outcome::Verified));
    // The Firmware Management devices of a session reboot together: one time for the group,
    // give or take the seconds each answer took to come back.
    let ts004 = |d: &Dev| d.packages.unwrap().packages.fragmentation.version;
    for version in [1, 2] {
        let reboots: Vec<i64> = devs
            .iter()
            .filter(|d| ts004(d) == version)
            .filter_map(|d| d.fm.reboot_at)
            .map(|t| t.timestamp())
            .collect();
        let spread = reboots.iter().max().unwrap() - reboots.iter().min().unwrap();
        assert!(spread <= 10, "v{version}: {reboots:?}");
    }
    // Their answers went into each device's record, so the next campaign's `auto` check asks
    // them through Firmware Management first, and the demo devices through Version & Status.
    let io = Io {
        db: &app.db,
        network: app.network.as_ref(),
        changes: &app.changes,
    };
    let devs: Vec<Dev> = devs.into_iter().filter(|d| ts004(d) == 1).collect();
    let starts: Vec<DeviceStart> = devs
        .iter()
        .map(|d| DeviceStart {
            dev_eui: d.dev_eui,
            root: None,
        })
        .collect();
    let (_, next, _) = runner::start(io, &s, &starts).await.unwrap();
    for (d, n) in devs.iter().zip(&next) {
        assert_eq!(n.trying, d.check_method_used, "{}", d.dev_eui);
        let record = lorafleet::storage::devices::detail(&app.db, d.dev_eui)
            .await
            .unwrap()
            .unwrap()
            .firmware_management;
        if d.check_method_used == Some(Method::FirmwareManagement) {
            let r = record.unwrap();
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

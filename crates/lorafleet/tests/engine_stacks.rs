//! A campaign over a mixed simulated fleet (`network.simulated.stacks`): lorafleet's demo
//! devices (Version & Status), LoRaMac-node-like devices (Firmware Management only, 50-byte
//! fragments, the highest-N status reading) and Firmware-Management-only devices, each checked
//! and verified by the method it speaks, with the default `auto`.
// A test: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use lorafleet::config::{Config, SimulatedDeviceOverride};
use lorafleet::engine::step::{self as runner, DeviceStart, GroupInfo};
use lorafleet::engine::Io;
use lorafleet::network::simulated::Simulated;
use lorafleet::network::MulticastClass;
use lorafleet::App;
use lorafleet_codec::firmware_trailer::{self, PackageKind, SignedTrailer};
use lorafleet_codec::frag_status::Reading;
use lorafleet_engine::airtime;
use lorafleet_engine::commands::{data_fragments, FragSetup};
use lorafleet_engine::machine::{
    CheckMode, Dev, FragStatusWhen, Method, Outcome, RebootWith, Settings, Target,
};
use lorafleet_simulator::stacks::Stack;

const NEW_VERSION: u32 = 0x0001_0300;
/// LoRaMac-node's fragment store takes at most 50 bytes a fragment.
const FRAGMENT_SIZE: u8 = 50;
/// The LoRaMac-node-like device that loses 10 % of everything.
const LOSSY: &str = "4c4653494d000002";

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
    let sim = &mut c.network.simulated;
    sim.devices = 9;
    sim.time_scale = 400.0;
    sim.uplink_interval_s = 30;
    for (stack, share) in [
        ("lorafleet-demo", 0.34),
        ("loramac-node", 0.33),
        ("firmware-management-only", 0.33),
    ] {
        sim.stacks.insert(stack.into(), share);
    }
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
        unicast_timeout: TimeDelta::seconds(60),
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

async fn campaign(
    app: &lorafleet::AppState,
    sim: &Simulated,
    s: &Settings,
    image: &[u8],
) -> Vec<Dev> {
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
    let frames = data_fragments(image, &s.frag, s.redundancy).unwrap();
    let region = lrwn::region::get(lrwn::region::CommonName::EU868, false, false);
    let ms = airtime::airtime_ms(region.as_ref(), s.dr, usize::from(FRAGMENT_SIZE) + 3, false);
    let starts: Vec<DeviceStart> = sim
        .dev_euis()
        .into_iter()
        .map(|dev_eui| DeviceStart {
            dev_eui,
            root: None,
        })
        .collect();
    let (mut run, mut devs, _) = runner::start(io, s, &starts).await.unwrap();
    let begun = Instant::now();
    loop {
        let stepped = runner::step(
            io,
            &mut run,
            &mut devs,
            s,
            &t,
            &frames,
            &GroupInfo::default(),
            TimeDelta::microseconds((ms * 1000.0) as i64),
        )
        .await
        .unwrap();
        if stepped.done {
            assert_eq!(run.failure, None);
            return devs;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(120),
            "campaign did not finish: {:?}\n{:#?}",
            run.phase,
            devs.iter()
                .map(|d| (d.dev_eui, d.step, d.trying, d.attempts))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(stepped.next).await;
    }
}

/// Every device verified by its own method; the LoRaMac-node-like device at 10 % loss, whose
/// status answer reads "fragments missing" even after rebuilding, is verified, not reported
/// missing.
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
    let devs = campaign(&app, &sim, &s, &image).await;
    let mut seen = std::collections::BTreeSet::new();
    for (n, d) in devs.iter().enumerate() {
        let stack = config
            .network
            .simulated
            .stack_of(n as u32, &d.dev_eui.to_string());
        seen.insert(stack);
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
    assert_eq!(seen.len(), 3, "the fleet mixes all three stacks: {seen:?}");
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
    // The Firmware Management devices reboot together: one time for the group, give or take
    // the seconds each answer took to come back.
    let reboots: Vec<i64> = devs
        .iter()
        .filter_map(|d| d.fm.reboot_at)
        .map(|t| t.timestamp())
        .collect();
    let spread = reboots.iter().max().unwrap() - reboots.iter().min().unwrap();
    assert!(spread <= 10, "{reboots:?}");
    // Their answers went into each device's record, so the next campaign's `auto` check asks
    // them through Firmware Management first, and the demo devices through Version & Status.
    let io = Io {
        db: &app.db,
        network: app.network.as_ref(),
        changes: &app.changes,
    };
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

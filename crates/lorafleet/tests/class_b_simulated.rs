//! Class B end to end on the simulated network: the gateways send beacons, the network sends
//! the group's frames only in its ping slots, and the devices listen only there (and only once
//! they heard a beacon). A class B campaign completes, and its fragments take the time the plan
//! gives from the ping-slot period.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use lorafleet::campaigns::{plan, MulticastClass as PlanClass};
use lorafleet::config::Config;
use lorafleet::engine::step::{self as runner, DeviceStart, GroupInfo};
use lorafleet::engine::Io;
use lorafleet::network::simulated::Simulated;
use lorafleet::network::MulticastClass;
use lorafleet::App;
use lorafleet_codec::firmware_trailer::{self, PackageKind, SignedTrailer};
use lorafleet_engine::airtime;
use lorafleet_engine::commands::{data_fragments, FragSetup};
use lorafleet_engine::machine::{
    CheckMode, FragStatusWhen, Method, Outcome, RebootWith, Settings, Target,
};

const NEW_VERSION: u32 = 0x0001_0300;
const FRAGMENT_SIZE: u8 = 200;
const PERIODICITY: u8 = 2;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_b_campaign_completes_in_the_ping_slots_in_the_time_the_plan_gives() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().join("data");
    config.firmware.dir = dir.path().join("bin");
    config.network.simulated.devices = 10;
    config.network.simulated.loss = 0.05;
    config.network.simulated.time_scale = 400.0;
    config.network.simulated.uplink_interval_s = 30;
    let sim = Arc::new(Simulated::new(&config).unwrap());
    let (app, _) = App::build_with_simulation(config, sim.clone())
        .await
        .unwrap();
    app.sync_network_devices().await.unwrap();

    let image = image(6 * 1024);
    let frag = FragSetup::for_image(image.len(), FRAGMENT_SIZE, 0, 0, 0, 0, [0; 4]).unwrap();
    // 50 % parity at 5 % loss: a 32-fragment image needs a few more than M on this code.
    let redundancy = usize::from(frag.nb_frag) / 2;
    let total = usize::from(frag.nb_frag) + redundancy;
    // The plan's session for these fragments at one ping slot every 2^2 s.
    let interval = plan::fragment_interval_s(PlanClass::B, 0.0, None, 0.0, PERIODICITY);
    let (needed_s, exp) = plan::session_needed(PlanClass::B, total, interval, PERIODICITY);
    let exp = exp.unwrap();
    let s = Settings {
        group_id: 0,
        class: MulticastClass::B {
            ping_slot_periodicity: PERIODICITY,
        },
        dr: 5,
        frequency: 869_525_000,
        timeout_exp: exp,
        unicast_timeout: TimeDelta::seconds(60),
        attempts: 8,
        redundancy,
        frag,
        frag_status: FragStatusWhen::Never,
        check: CheckMode::Refuse,
        verify: true,
        reboot_delay: TimeDelta::seconds(30),
        status_port: 111,
        check_method: Method::Auto,
        verify_method: Method::Auto,
        fm_port: 203,
        reboot_with: RebootWith::RebootTime,
        adaptive: None,
    };
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
    let frames = data_fragments(&image, &s.frag, s.redundancy).unwrap();
    let region = lrwn::region::get(lrwn::region::CommonName::EU868, false, false);
    let airtime = airtime::airtime_ms(
        region.as_ref(),
        s.dr,
        usize::from(s.frag.frag_size) + 3,
        false,
    );
    let starts: Vec<DeviceStart> = sim
        .dev_euis()
        .into_iter()
        .map(|dev_eui| DeviceStart {
            dev_eui,
            root: None,
        })
        .collect();
    let (mut run, mut devs, _) = runner::start(io, &s, &starts).await.unwrap();
    let group = GroupInfo {
        name: "class b".into(),
        application_id: None,
        gateways: Vec::new(),
    };
    let begun = Instant::now();
    loop {
        let stepped = runner::step(
            io,
            &mut run,
            &mut devs,
            &s,
            &t,
            &frames,
            &group,
            TimeDelta::microseconds((airtime * 1000.0) as i64),
        )
        .await
        .unwrap();
        if stepped.done {
            break;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(90),
            "campaign did not finish: {:?}",
            run.phase
        );
        tokio::time::sleep(stepped.next).await;
    }

    let not_verified: Vec<_> = devs
        .iter()
        .filter(|d| d.outcome != Some(Outcome::Verified))
        .map(|d| (d.dev_eui.to_string(), d.outcome, d.error.clone()))
        .collect();
    assert!(not_verified.is_empty(), "{not_verified:#?}");
    assert_eq!(run.failure, None);
    for eui in sim.dev_euis() {
        assert_eq!(sim.inspect(eui, |d| d.running_version()), Some(NEW_VERSION));
        // Every device heard a beacon: its ping slots depend on it.
        assert!(sim
            .inspect(eui, |d| d.state.beacon_at_ms.is_some())
            .unwrap());
    }
    // One frame per ping slot: the slots of a group are 0.96 x 2^p s apart within a beacon
    // period, and the plan allows one beacon period more than the slots need.
    let on_air = (run.fragments_sent_at.unwrap() - run.session_start.unwrap()).num_milliseconds();
    let at_least = (total as i64 - 1) * (960 << PERIODICITY);
    assert!(
        on_air >= at_least && on_air as f64 <= needed_s * 1000.0,
        "{total} fragments took {on_air} ms; ping slots need at least {at_least} ms, the plan gives {needed_s} s"
    );
}

//! An engine whose steps come late (a loaded machine) against the simulated network at
//! time_scale 1000 (issue 8 item 7): every step is 300 ms real (300 s simulated) later than it
//! asked for, five unicast timeouts. Each step holds the simulation's clock where its next step
//! is due, so the devices' time waits for the engine and every device is still set up and
//! verified; without the hold the setup deadline passes before the second retry.
// A test: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
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
use lorafleet_simulator::clock::LORAFLEET_GRACE;

const NEW_VERSION: u32 = 0x0001_0300;
const FRAGMENT_SIZE: u8 = 200;
/// How much later than asked each step comes (real time).
const LATE: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_steps_do_not_let_the_devices_time_run_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().join("data");
    config.firmware.dir = dir.path().join("bin");
    config.network.simulated.devices = 6;
    config.network.simulated.loss = 0.0;
    config.network.simulated.time_scale = 1000.0;
    config.network.simulated.uplink_interval_s = 30;
    let sim = Arc::new(Simulated::new(&config).unwrap());
    let (app, _) = App::build_with_simulation(config.clone(), sim.clone())
        .await
        .unwrap();
    app.sync_network_devices().await.unwrap();
    let image = firmware_trailer::build(
        &(0..2048)
            .map(|i| (i * 131 % 251) as u8)
            .collect::<Vec<u8>>(),
        &SignedTrailer {
            signature: lorafleet_simulator::demo::PLACEHOLDER_SIGNATURE.to_vec(),
            manufacturer_uuid: [1; 16],
            device_class_uuid: [2; 16],
            version: NEW_VERSION,
            kind: PackageKind::Full,
            old_firmware_size: 0,
        },
    );
    let frag = FragSetup::for_image(image.len(), FRAGMENT_SIZE, 0, 0, 0, 0, [0; 4]).unwrap();
    let s = Settings {
        group_id: 0,
        class: MulticastClass::C,
        dr: 5,
        frequency: 869_525_000,
        timeout_exp: 8,
        unicast_timeout: TimeDelta::seconds(60),
        // The setup deadline: 3 attempts x 60 s after the start, against steps 300 s late.
        attempts: 3,
        redundancy: usize::from(frag.nb_frag) / 2,
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
    let ms = airtime::airtime_ms(region.as_ref(), s.dr, usize::from(FRAGMENT_SIZE) + 3, false);
    let starts: Vec<DeviceStart> = sim
        .dev_euis()
        .into_iter()
        .map(|dev_eui| DeviceStart {
            dev_eui,
            root: None,
        })
        .collect();
    let (mut run, mut devs, _) = runner::start(io, &s, &starts).await.unwrap();
    // The start holds the clock until the first step, however late.
    let at_start = sim.now();
    tokio::time::sleep(LATE).await;
    assert!(
        sim.now() - at_start < TimeDelta::seconds(5),
        "the clock ran on before the first step"
    );
    let begun = Instant::now();
    let mut steps = 0;
    loop {
        let stepped = runner::step(
            io,
            &mut run,
            &mut devs,
            &s,
            &t,
            &frames,
            &GroupInfo::default(),
            TimeDelta::microseconds((ms * 1000.0) as i64),
        )
        .await
        .unwrap();
        steps += 1;
        if stepped.done {
            break;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(240),
            "campaign did not finish: {:?}\n{:#?}",
            run.phase,
            devs.iter()
                .map(|d| (d.dev_eui, d.step, d.attempts, d.error.clone()))
                .collect::<Vec<_>>()
        );
        // Between two steps: a simulated second per real millisecond would be 300 s more
        // than the engine asked for.
        let before = sim.now();
        tokio::time::sleep(stepped.next + LATE).await;
        let ran = sim.now() - before;
        // (Where the step held the clock: `next` also counts the real time the clock stands
        // after the step's last request.)
        let asked = stepped.hold.unwrap() - before;
        // The engine's next look also waits out the clock's standing after the step's last
        // request: sooner, it finds the clock short of the hold and is put off.
        let standing = TimeDelta::from_std(LORAFLEET_GRACE.mul_f64(1000.0)).unwrap();
        let looks = TimeDelta::from_std(stepped.next.mul_f64(1000.0)).unwrap();
        assert!(
            looks >= asked + standing,
            "looks again {looks} after holding the clock {asked} ahead"
        );
        assert!(
            ran <= asked + TimeDelta::seconds(5),
            "the clock ran {ran} while the engine asked for {asked}"
        );
    }
    assert_eq!(run.failure, None);
    for d in &devs {
        assert_eq!(
            d.outcome,
            Some(Outcome::Verified),
            "{:?}",
            (d.dev_eui, &d.error)
        );
    }
    assert!(steps > 10, "{steps} steps");
    // Done: the clock runs freely again.
    let before = sim.now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sim.now() - before > TimeDelta::seconds(60));
}

//! Benchmark (not a test): one engine campaign to a large simulated fleet, as fast as the
//! simulation's clock allows. Prints the wall time, the simulated time, the outcome counts and
//! the process's peak RSS (Linux).
//!
//! `bench_campaign [devices=1000] [image_kib=100] [loss=0.1] [time_scale=100] [redundancy_pct=25]`
//!
//! The campaign runs through the engine's own steps (what the campaign runner calls), on the
//! simulated network with its real device decoders, uplinks committed through the ingest writer
//! into a SQLite database in a temporary directory. The simulation's clock slows down when the
//! machine cannot keep up; the engine's own work is not slowed with it, so a time scale far
//! beyond what the machine sustains makes devices miss the session start (BENCH_TRACE=1 shows
//! the progress). 100 is safe for 1,000 devices on 2 cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use lorafleet::config::{Config, NetworkKind};
use lorafleet::fuota::commands::{data_fragments, FragSetup};
use lorafleet::fuota::engine::{CheckMode, FragStatusWhen, Outcome, Settings, Target};
use lorafleet::fuota::runner::{self, DeviceStart, GroupInfo};
use lorafleet::fuota::Io;
use lorafleet::network::simulated::{demo, radio, Simulated};
use lorafleet::network::MulticastClass;
use lorafleet::App;
use lorafleet_codec::firmware_trailer::{self, PackageKind, SignedTrailer};

fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let devices: u32 = arg(1, 1000);
    let image_kib: usize = arg(2, 100);
    let loss: f64 = arg(3, 0.1);
    let time_scale: f64 = arg(4, 100.0);
    let redundancy_pct: usize = arg(5, 25);

    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.server.data_dir = dir.path().join("data");
    config.firmware.dir = dir.path().join("bin");
    config.network.kind = NetworkKind::Simulated;
    config.network.simulated.devices = devices;
    config.network.simulated.loss = loss;
    config.network.simulated.time_scale = time_scale;
    config.network.simulated.uplink_interval_s = 30;
    config.network.simulated.slot_size = 1024 * 1024;
    config.fuota.clock_sync = true;
    let sim = Arc::new(Simulated::new(&config)?);
    let (app, _) = App::build_with_network(config, sim.clone()).await?;
    app.sync_network_devices().await?;

    let body: Vec<u8> = (0..image_kib * 1024)
        .map(|i| (i * 131 % 251) as u8)
        .collect();
    let image = firmware_trailer::build(
        &body,
        &SignedTrailer {
            signature: demo::PLACEHOLDER_SIGNATURE.to_vec(),
            manufacturer_uuid: [1; 16],
            device_class_uuid: [2; 16],
            version: 0x0001_0300,
            kind: PackageKind::Full,
            old_firmware_size: 0,
        },
    );
    let frag =
        FragSetup::for_image(image.len(), 200, 0, 0, 0, 0, [0; 4]).map_err(anyhow::Error::msg)?;
    let redundancy = usize::from(frag.nb_frag) * redundancy_pct / 100;
    let s = Settings {
        group_id: 0,
        class: MulticastClass::C,
        dr: 5,
        frequency: 869_525_000,
        timeout_exp: 10,
        unicast_timeout: TimeDelta::seconds(60),
        attempts: 8,
        frag,
        redundancy,
        frag_status: FragStatusWhen::Never,
        check: CheckMode::Refuse,
        verify: true,
        reboot_delay: TimeDelta::seconds(30),
        status_port: 111,
    };
    let t = Target {
        image_len: image.len(),
        version: Some(0x0001_0300),
        ..Default::default()
    };
    let frames = data_fragments(&image, &s.frag, s.redundancy).map_err(anyhow::Error::msg)?;
    let region = lrwn::region::get(lrwn::region::CommonName::EU868, false, false);
    let airtime = radio::airtime_ms(region.as_ref(), s.dr, 203, false);
    let io = Io {
        db: &app.db,
        network: app.network.as_ref(),
        changes: &app.changes,
    };
    let starts: Vec<DeviceStart> = sim
        .dev_euis()
        .into_iter()
        .map(|dev_eui| DeviceStart {
            dev_eui,
            root: None,
        })
        .collect();

    println!(
        "campaign: {devices} simulated devices, {} byte image ({} data + {redundancy} parity fragments of 200 bytes), {:.0} % loss, time x{time_scale}",
        image.len(),
        frag.nb_frag,
        loss * 100.0
    );
    let trace = std::env::var("BENCH_TRACE").is_ok();
    let wall = Instant::now();
    let sim_start = app.network.now();
    let (mut run, mut devs, _) = runner::start(io, &s, &starts).await?;
    let group = GroupInfo {
        name: "bench".into(),
        application_id: None,
    };
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
        .await?;
        if trace {
            let slow = devs
                .iter()
                .filter(|d| d.step == lorafleet::fuota::engine::Step::McSessionSetup)
                .count();
            println!(
                "{:>6.1} s  sim {}  phase {:?}  waiting for the session answer: {slow}  session start {:?}",
                wall.elapsed().as_secs_f64(),
                app.network.now().format("%H:%M:%S"),
                run.phase,
                run.session_start.map(|t| t.format("%H:%M:%S").to_string())
            );
        }
        if stepped.done {
            break;
        }
        tokio::time::sleep(stepped.next.min(Duration::from_millis(50))).await;
    }
    let elapsed = wall.elapsed();
    let simulated = app.network.now() - sim_start;
    let count = |o: Outcome| devs.iter().filter(|d| d.outcome == Some(o)).count();
    println!(
        "wall time {:.1} s, simulated time {:.0} s ({:.0}x real time)",
        elapsed.as_secs_f64(),
        simulated.as_seconds_f64(),
        simulated.as_seconds_f64() / elapsed.as_secs_f64()
    );
    println!(
        "outcome: {} verified, {} not updated, {} unreachable, {} refused",
        count(Outcome::Verified),
        count(Outcome::NotUpdated),
        count(Outcome::Unreachable),
        count(Outcome::Refused)
    );
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for d in devs.iter().filter(|d| d.outcome != Some(Outcome::Verified)) {
        let why = format!(
            "{} (attempt {})",
            d.error.clone().unwrap_or_default(),
            d.attempts
        );
        *reasons.entry(why).or_default() += 1;
    }
    for (why, n) in reasons {
        println!("  {n} x {why}");
    }
    if let Some(kib) = peak_rss_kib() {
        println!("peak RSS {:.1} MiB", kib as f64 / 1024.0);
    }
    Ok(())
}

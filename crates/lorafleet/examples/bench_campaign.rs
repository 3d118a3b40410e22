//! FUOTA campaign benchmark against the real release binary (see scripts/bench-campaign).
//!
//! Starts `lorafleet serve` on loopback with the simulated network (N devices, a loss rate and a
//! time scale) and empty data and firmware directories, uploads an image of the given size
//! (random bytes followed by the signed-package trailer the simulated devices install), creates
//! an engine campaign to every simulated device through the JSON API, starts it and polls it to
//! the end. Prints the wall time from start to completion, the simulated time it represents,
//! the devices per outcome (with the reasons of those that did not succeed), and the server's
//! peak resident memory (VmHWM) and CPU time (utime + stime).
//!
//! Usage: bench_campaign <path to lorafleet binary>
//! Knobs (environment): BENCH_CAMPAIGN_DEVICES (1000), BENCH_CAMPAIGN_LOSS (0.1),
//! BENCH_CAMPAIGN_TIME_SCALE (1000), BENCH_CAMPAIGN_IMAGE_KIB (100),
//! BENCH_CAMPAIGN_REDUNDANCY_PERCENT (25), BENCH_CAMPAIGN_UPLINK_INTERVAL_S (30),
//! BENCH_CAMPAIGN_TIMEOUT_S (900), BENCH_CAMPAIGN_PARITY (`fixed`, or `adaptive`: issue 8's
//! parity in groups while a device needs it, up to the redundancy), BENCH_CAMPAIGN_KEEP=1 keeps the temporary directory (with
//! the server's log) and prints where it is.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lorafleet_codec::firmware_trailer::{self, PackageKind, SignedTrailer};
use lorafleet_simulator::demo::PLACEHOLDER_SIGNATURE;
use lorafleet_simulator::device::{MANUFACTURER_UUID, MODELS};
use rand::RngCore;
use serde_json::{json, Value};

const PASSWORD: &str = "bench-campaign-password";
/// 1.4.0 in the sensors' Major.Minor.Patch numbering (RFU<<24 | major<<16 | minor<<8 | patch):
/// newer than the 1.2.0 they leave the factory with and the 1.3.0 demo image.
const IMAGE_VERSION: u32 = 0x0001_0400;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The process's user and system CPU time in clock ticks (fields 14 and 15 of /proc/pid/stat).
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    (
        fields.get(11).copied().unwrap_or(0),
        fields.get(12).copied().unwrap_or(0),
    )
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" / ")
}

fn load_1min() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn mem_total_gib() -> f64 {
    proc_meminfo_kib("MemTotal:") as f64 / 1024.0 / 1024.0
}

fn proc_meminfo_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An image of exactly `total` bytes: random firmware bytes, then the signed-package trailer.
fn image(total: usize) -> Vec<u8> {
    let trailer = SignedTrailer {
        signature: PLACEHOLDER_SIGNATURE.to_vec(),
        manufacturer_uuid: MANUFACTURER_UUID,
        device_class_uuid: MODELS[0].device_class_uuid,
        version: IMAGE_VERSION,
        kind: PackageKind::Full,
        old_firmware_size: 0,
    };
    let trailer_len = firmware_trailer::build(&[], &trailer).len();
    let mut body = vec![0u8; total.saturating_sub(trailer_len)];
    rand::thread_rng().fill_bytes(&mut body);
    firmware_trailer::build(&body, &trailer)
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.base))
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .basic_auth("admin", Some(PASSWORD))
            .json(body)
            .send()
            .await?;
        Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
    }

    /// `POST /api/firmware`, multipart with the image in field `file`.
    async fn upload(&self, file_name: &str, bytes: &[u8]) -> anyhow::Result<(u16, Value)> {
        let boundary = "lorafleet-bench-campaign-boundary-7d3f";
        let mut body = Vec::with_capacity(bytes.len() + 256);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let r = self
            .http
            .post(format!("{}/api/firmware", self.base))
            .basic_auth("admin", Some(PASSWORD))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await?;
        Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
    }

    /// Every sensor in the inventory (the image is for the sensors' device class; the
    /// campaign refuses the trackers), a page (the API's largest, 1,000) at a time, walked by
    /// `cursor=`: the paging that returns each device once while the fleet keeps sending.
    async fn all_dev_euis(&self) -> anyhow::Result<Vec<String>> {
        let mut euis = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self
                .get(&format!("/api/devices?limit=1000&sort=dev_eui{cursor}"))
                .await?;
            euis.extend(
                page["devices"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|d| !d["model"].as_str().unwrap_or("").contains("tracker"))
                    .filter_map(|d| d["dev_eui"].as_str().map(str::to_string)),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return Ok(euis),
            }
        }
    }

    /// The network's clock (`/api/info`): the simulated time.
    async fn network_now(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        let info = self.get("/api/info").await.ok()?;
        chrono::DateTime::parse_from_rfc3339(info["network"]["now"].as_str()?).ok()
    }
}

/// Where the simulated time went, from the campaign's general log (simulated seconds after
/// the start): the unicast setup up to the session's start, the fragments and status rounds up
/// to the group's deletion, the verification from there to the report.
struct Split {
    setup: f64,
    fragments: f64,
    verification: f64,
    /// The fragments' own air time: data and parity fragments sent times one's air time.
    airtime: f64,
}

impl Split {
    fn from_log(general: &[(f64, String)], data_fragments: f64, airtime_s: f64) -> Split {
        let at = |prefix: &str| {
            general
                .iter()
                .find(|(_, m)| m.starts_with(prefix))
                .map(|(t, _)| *t)
        };
        let started = at("multicast session started").unwrap_or(f64::NAN);
        let deleted = at("multicast group deleted").unwrap_or(f64::NAN);
        let report = at("report:").unwrap_or(f64::NAN);
        // "adaptive parity stopped after N parity fragments ..." (fixed parity: all sent).
        let parity = general
            .iter()
            .find_map(|(_, m)| {
                m.strip_prefix("adaptive parity stopped after ")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse::<f64>().ok())
            })
            .or_else(|| {
                general.iter().find_map(|(_, m)| {
                    m.strip_prefix("all ")
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|n| n.parse::<f64>().ok())
                        .map(|all| all - data_fragments)
                })
            })
            .unwrap_or(0.0);
        Split {
            setup: started,
            fragments: deleted - started,
            verification: report - deleted,
            airtime: (data_fragments + parity) * airtime_s,
        }
    }

    fn print(&self, total: f64) {
        let goal = self.setup + self.airtime + self.verification;
        println!(
            "time split (simulated): setup {:.0} s, fragments and status rounds {:.0} s (air time {:.0} s), verification {:.0} s",
            self.setup, self.fragments, self.airtime, self.verification
        );
        println!(
            "goal: {total:.0} s against 1.5 x (setup + air time + verification) = 1.5 x {goal:.0} s = {:.0} s: {:.2}x, {}",
            1.5 * goal,
            total / goal,
            if total <= 1.5 * goal { "met" } else { "NOT met" }
        );
    }
}

fn fmt_counts(counts: &Value) -> String {
    counts
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn fmt_duration(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.2} h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{seconds:.1} s")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/lorafleet".into());
    let devices: u32 = knob("BENCH_CAMPAIGN_DEVICES", 1000);
    let loss: f64 = knob("BENCH_CAMPAIGN_LOSS", 0.1);
    let time_scale: f64 = knob("BENCH_CAMPAIGN_TIME_SCALE", 1000.0);
    let image_kib: usize = knob("BENCH_CAMPAIGN_IMAGE_KIB", 100);
    let redundancy_percent: f64 = knob("BENCH_CAMPAIGN_REDUNDANCY_PERCENT", 25.0);
    let uplink_interval_s: u64 = knob("BENCH_CAMPAIGN_UPLINK_INTERVAL_S", 30);
    let timeout = Duration::from_secs(knob("BENCH_CAMPAIGN_TIMEOUT_S", 900));
    let keep = std::env::var("BENCH_CAMPAIGN_KEEP").is_ok_and(|v| v == "1");
    let parity = std::env::var("BENCH_CAMPAIGN_PARITY").unwrap_or_else(|_| "fixed".into());
    // One simulated device in four is a tracker (`MODELS`), which the sensor image is not for:
    // the fleet is a third larger so that `devices` sensors take part.
    let fleet = devices + devices.div_ceil(3);

    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let firmware_dir = dir.path().join("bin");
    std::fs::create_dir_all(&firmware_dir)?;
    let log_path = dir.path().join("server.log");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    println!(
        "machine: {} cores, {:.0} GiB, load average {} (1 / 5 / 15 min) at the start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total_gib(),
        load_average()
    );
    println!(
        "simulated network: {fleet} devices ({devices} sensors in the campaign), loss {loss}, time_scale {time_scale}, uplink every {uplink_interval_s} s (simulated); image {image_kib} KiB, redundancy {redundancy_percent} %, parity {parity}"
    );
    let mut child = tokio::process::Command::new(&bin)
        .arg("serve")
        .env("LORAFLEET__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("LORAFLEET__SERVER__DATA_DIR", &data_dir)
        .env("LORAFLEET__FIRMWARE__DIR", &firmware_dir)
        .env("LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD", PASSWORD)
        .env("LORAFLEET__NETWORK__KIND", "simulated")
        .env("LORAFLEET__NETWORK__SIMULATED__DEVICES", fleet.to_string())
        .env("LORAFLEET__NETWORK__SIMULATED__LOSS", loss.to_string())
        .env(
            "LORAFLEET__NETWORK__SIMULATED__TIME_SCALE",
            time_scale.to_string(),
        )
        .env(
            "LORAFLEET__NETWORK__SIMULATED__UPLINK_INTERVAL_S",
            uplink_interval_s.to_string(),
        )
        .env("LORAFLEET__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let launched = Instant::now();
    while api
        .http
        .get(format!("{}/health", api.base))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(
            launched.elapsed() < Duration::from_secs(60),
            "the server did not answer /health within 60 s (log: {})",
            log_path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "server up in {:.2} s (pid {pid})",
        launched.elapsed().as_secs_f64()
    );

    // The simulated devices enter the inventory once the network's device list was read.
    let euis: Vec<String> = loop {
        let total = api.get("/api/devices?limit=1").await?["total"]
            .as_u64()
            .unwrap_or(0);
        if total >= u64::from(fleet) {
            let mut sensors = api.all_dev_euis().await?;
            anyhow::ensure!(
                sensors.len() >= devices as usize,
                "only {} sensors among {fleet} simulated devices",
                sensors.len()
            );
            sensors.truncate(devices as usize);
            break sensors;
        }
        anyhow::ensure!(
            launched.elapsed() < Duration::from_secs(120),
            "only {total} of {devices} devices in the inventory after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "{} devices in the inventory after {:.2} s",
        euis.len(),
        launched.elapsed().as_secs_f64()
    );

    let bytes = image(image_kib * 1024);
    let (status, fw) = api.upload("bench-sensor-1.4.0.bin", &bytes).await?;
    anyhow::ensure!(status == 201, "firmware upload: {status} {fw}");
    println!(
        "uploaded {} bytes as firmware {} (trailer version {})",
        bytes.len(),
        fw["id"],
        fw["trailer"]["version"]
    );

    let request = json!({
        "name": format!("bench {devices} devices"),
        "firmware_id": fw["id"],
        "devices": euis,
        "driver": "engine",
        "multicast": {"class": "C", "dr": 5, "frequency": 869_525_000},
        "unicast": {"timeout_s": 60, "attempts": 8},
        "fragmentation": {"redundancy_percent": redundancy_percent, "parity": parity},
    });
    let (status, draft) = api.post("/api/campaigns", &request).await?;
    anyhow::ensure!(status == 201, "creating the campaign: {status} {draft}");
    let id = draft["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no campaign id in {draft}"))?;
    let plan = &draft["plan"];
    let advice = &plan["redundancy_advice"];
    println!(
        "plan: {} B fragments, {} data + {} parity = {} fragments, session needs {} s, expected duration {} s (simulated)",
        plan["fragment_size"],
        plan["data_fragments"],
        plan["redundancy_fragments"],
        plan["total_fragments"],
        plan["session_needed_s"],
        plan["expected_duration_s"]
    );
    println!(
        "redundancy advice: {} parity fragments ({} %) for {} of devices at {} loss; completion at the planned redundancy {}",
        advice["suggested_redundancy"],
        advice["suggested_percent"],
        advice["target"],
        advice["loss"],
        advice["completion_at_planned"]
    );
    if let Some(w) = plan["warnings"].as_array().filter(|w| !w.is_empty()) {
        println!("plan warnings: {}", w.len());
        for w in w.iter().take(5) {
            println!("  {}", w["message"]);
        }
    }

    let cpu_before = cpu_ticks(pid);
    let sim_before = api.network_now().await;
    let started = Instant::now();
    let (status, c) = api
        .post(&format!("/api/campaigns/{id}/start"), &json!({}))
        .await?;
    anyhow::ensure!(status == 202, "starting the campaign: {status} {c}");

    let mut max_load = load_1min();
    let mut last_print = Instant::now();
    let mut last_counts = String::new();
    let state = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_load = max_load.max(load_1min());
        let list = api.get("/api/campaigns").await?;
        let summary = list["campaigns"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == id))
            .cloned()
            .unwrap_or(Value::Null);
        let state = summary["state"].as_str().unwrap_or("?").to_string();
        let counts = fmt_counts(&summary["counts"]);
        if state != "running" {
            break state;
        }
        if started.elapsed() >= timeout {
            break "timed out".to_string();
        }
        if last_print.elapsed() >= Duration::from_secs(10) || counts != last_counts {
            let sim = api.network_now().await;
            let sim_s = match (sim_before, sim) {
                (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1e3,
                _ => f64::NAN,
            };
            let cpu = cpu_ticks(pid);
            println!(
                "{:>7.1} s: {counts} | simulated {} | RSS {} MiB | server CPU {:.1} s | load {}",
                started.elapsed().as_secs_f64(),
                fmt_duration(sim_s),
                proc_status_kib(pid, "VmRSS:") / 1024,
                (cpu.0 + cpu.1 - cpu_before.0 - cpu_before.1) as f64 / clock_ticks_per_second(),
                load_average()
            );
            last_print = Instant::now();
            last_counts = counts;
        }
    };
    let wall = started.elapsed();
    let sim_after = api.network_now().await;
    let cpu_after = cpu_ticks(pid);
    let hz = clock_ticks_per_second();
    let peak_kib = proc_status_kib(pid, "VmHWM:");
    let rss_kib = proc_status_kib(pid, "VmRSS:");
    let load_end = load_average();

    let c = api.get(&format!("/api/campaigns/{id}")).await?;
    let sim_s = match (sim_before, sim_after) {
        (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1e3,
        _ => f64::NAN,
    };
    println!();
    println!(
        "campaign {id}: {state} after {:.1} s wall time",
        wall.as_secs_f64()
    );
    println!(
        "simulated time: {} ({sim_s:.0} s), i.e. {:.0}x real time on average (time_scale {time_scale})",
        fmt_duration(sim_s),
        sim_s / wall.as_secs_f64()
    );
    let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
    let mut reasons: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut stages: BTreeMap<String, u32> = BTreeMap::new();
    for d in c["devices"].as_array().cloned().unwrap_or_default() {
        let outcome = d["outcome"].as_str().unwrap_or("(none)").to_string();
        *outcomes.entry(outcome.clone()).or_default() += 1;
        *stages
            .entry(d["stage"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        if outcome != "verified" {
            let reason = d["error"].as_str().unwrap_or("no reason given").to_string();
            *reasons.entry((outcome, reason)).or_default() += 1;
        }
    }
    println!("devices per outcome: {outcomes:?}");
    println!("devices per stage: {stages:?}");
    for ((outcome, reason), n) in &reasons {
        println!("  {n} x {outcome}: {reason}");
    }
    if let Some(e) = c["error"].as_str() {
        println!("campaign error: {e}");
    }
    let report: Vec<&str> = c["log"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|l| l["dev_eui"].is_null())
                .filter_map(|l| l["message"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if let Some(r) = report.iter().rev().find(|m| m.starts_with("report:")) {
        println!("engine: {r}");
    }
    println!(
        "server peak RSS (VmHWM): {} MiB ({} KiB); RSS at the end {} MiB",
        peak_kib / 1024,
        peak_kib,
        rss_kib / 1024
    );
    println!(
        "server CPU during the campaign: {:.1} s user + {:.1} s system = {:.1} s ({:.0} % of one core over the wall time)",
        (cpu_after.0 - cpu_before.0) as f64 / hz,
        (cpu_after.1 - cpu_before.1) as f64 / hz,
        (cpu_after.0 + cpu_after.1 - cpu_before.0 - cpu_before.1) as f64 / hz,
        100.0 * (cpu_after.0 + cpu_after.1 - cpu_before.0 - cpu_before.1) as f64
            / hz
            / wall.as_secs_f64()
    );
    let cpu_s = (cpu_after.0 + cpu_after.1 - cpu_before.0 - cpu_before.1) as f64 / hz;
    println!(
        "server CPU per device: {:.1} ms; peak RSS per device: {:.0} KiB",
        cpu_s * 1000.0 / f64::from(devices.max(1)),
        peak_kib as f64 / f64::from(devices.max(1))
    );
    println!(
        "load average (1 / 5 / 15 min) at the end: {load_end}; highest 1-min value seen during the run {max_load:.2}"
    );
    // The phases on the wall clock (seconds after the start), to set the simulated duration
    // against its parts: setup, fragments, the stop of adaptive parity, verification.
    let begun = c["started_at"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    println!("general log:");
    let mut general: Vec<(f64, String)> = Vec::new();
    for l in c["log"].as_array().cloned().unwrap_or_default() {
        if !l["dev_eui"].is_null() {
            continue;
        }
        let at = l["at"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
        let message = l["message"].as_str().unwrap_or("").to_string();
        let after = match (begun, at) {
            (Some(b), Some(a)) => {
                let secs = (a - b).num_milliseconds() as f64 / 1e3;
                general.push((secs, message.clone()));
                format!("{secs:>8.1} s")
            }
            _ => "       ?".into(),
        };
        println!("  {after}  {message}");
    }
    let split = Split::from_log(
        &general,
        plan["data_fragments"].as_f64().unwrap_or(0.0),
        plan["airtime_per_fragment_ms"].as_f64().unwrap_or(0.0) / 1e3,
    );
    let cpu_ms_per_device = cpu_s * 1000.0 / f64::from(devices.max(1));
    split.print(sim_s);
    let (done, total) = (
        outcomes.get("verified").copied().unwrap_or(0),
        outcomes.values().sum::<u32>(),
    );
    // One line for BENCHMARKS.md's table (scripts/bench-campaign collects them).
    println!(
        "row: | {devices} | {:.1} s | {sim_s:.0} s | {done} of {total} verified | {:.0} s | {:.0} s ({:.0} s air) | {:.0} s | {:.0} s -> {:.2}x | {cpu_s:.1} s | {cpu_ms_per_device:.1} ms | {} MiB | {max_load:.1} |",
        wall.as_secs_f64(),
        split.setup,
        split.fragments,
        split.airtime,
        split.verification,
        split.setup + split.airtime + split.verification,
        sim_s / (split.setup + split.airtime + split.verification).max(1e-9),
        peak_kib / 1024,
    );
    if state != "completed" {
        println!("general log (last 20 lines):");
        for m in report.iter().rev().take(20).rev() {
            println!("  {m}");
        }
    }
    child.kill().await.ok();
    if keep {
        let kept = dir.keep();
        println!("kept {} (server.log, data/)", kept.display());
    }
    if state != "completed" {
        println!("the campaign did not complete: {state}");
        std::process::exit(1);
    }
    Ok(())
}

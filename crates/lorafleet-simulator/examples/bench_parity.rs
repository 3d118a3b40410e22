//! Benchmark (not a test), issue 8 item 5: fixed parity (10, 20, 40 % of M) against adaptive
//! parity, side by side, on the simulated network's own devices.
//!
//! For each loss rate and session size, `BENCH_PARITY_DEVICES` (200) simulated devices
//! (`lorafleet_simulator::device::SimDevice`, with their real FEC decoders and their real
//! FragSessionStatusAns) get FragSessionSetupReq from the engine's encoder, then the fragments
//! as multicast frames, each device with its own loss draw. Fixed parity sends M + R
//! fragments. Adaptive parity is the engine's own state machine (`lorafleet_engine::machine`
//! with `adaptive`): it decides when to ask (its multicast FragSessionStatusReq reaches each
//! device with a loss draw, each answer comes back with another) and how much more to send.
//! The loss draws on the fragments come from one generator per device and are the same for
//! every mode, so every mode sees the same devices and the same "unluckiest device"; the
//! network's timing is left out (answers arrive within the status wait), since air time and
//! completion are what is compared.
//!
//! Run: `cargo run --release -p lorafleet-simulator --example bench_parity`
//! (`BENCH_PARITY_M=64,500`, `BENCH_PARITY_LOSS=0.05,0.1` to run part of the matrix;
//! `BENCH_PARITY_SEED=1`, 2, ... for other draws of it).
//! `BENCH_PARITY_STACK=loramac-node` runs LoRaMac-node-like devices instead of the demo
//! ones: their FragSessionStatusAns in the highest-N reading (NbFragReceived the last N seen,
//! MissingFrag the data fragments lost, never lowered, answering whenever one was lost), 50-byte
//! fragments, in a build whose FRAG_MAX_NB and FRAG_MAX_REDUNDANCY hold every M of the matrix
//! (the stock 21 fragments would hold none of it).
// A tool: a panic is its report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use chrono::{DateTime, TimeDelta, Utc};
use lorafleet_engine::adaptive::AdaptiveParity;
use lorafleet_engine::airtime::airtime_ms;
use lorafleet_engine::commands::{self, data_fragments, FragSetup, MulticastClass};
use lorafleet_engine::machine::{
    Action, CheckMode, Dev, FragStatusWhen, Phase, Run, Settings, Step, Target,
};
use lorafleet_engine::ports;
use lorafleet_simulator::device::{Ctx, Identity, SimDevice};
use lorafleet_simulator::stacks::{FragLimitsPatch, Stack};
use rand::{Rng, SeedableRng};

const FRAGMENT_SIZE: u8 = 50;
const DR: u8 = 5;
/// Adaptive parity's cap: far more than any case needs, so only the answers stop it.
const ADAPTIVE_CAP_PERCENT: usize = 100;

struct Fleet {
    devs: Vec<SimDevice>,
    /// Fragment loss draws, one generator per device (the same for every mode).
    frag_rngs: Vec<rand::rngs::StdRng>,
    /// N at which each device rebuilt its image.
    done_at: Vec<Option<u32>>,
    /// Everything else: status requests and answers, the devices' own draws.
    other: rand::rngs::StdRng,
    loss: f64,
}

fn env_list<T: std::str::FromStr + Clone>(name: &str, default: &[T]) -> Vec<T> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn settings(m: usize, redundancy: usize, adaptive: bool) -> Settings {
    let frag = FragSetup::for_image(
        m * usize::from(FRAGMENT_SIZE),
        FRAGMENT_SIZE,
        0,
        0,
        1,
        0,
        [0; 4],
    )
    .unwrap();
    Settings {
        group_id: 0,
        class: MulticastClass::C,
        dr: DR,
        frequency: 869_525_000,
        timeout_exp: 15,
        unicast_timeout: TimeDelta::seconds(60),
        attempts: 3,
        adaptive: adaptive.then(|| AdaptiveParity {
            group: None,
            status_wait: AdaptiveParity::default_status_wait(frag.block_ack_delay),
        }),
        frag,
        redundancy,
        frag_status: FragStatusWhen::AfterSession,
        check: CheckMode::Off,
        verify: true,
        reboot_delay: TimeDelta::seconds(30),
        status_port: 111,
        check_method: lorafleet_engine::machine::Method::VersionStatus,
        verify_method: lorafleet_engine::machine::Method::VersionStatus,
        fm_port: 203,
        reboot_with: lorafleet_engine::machine::RebootWith::RebootTime,
    }
}

fn ctx(region: &dyn lrwn::region::Region, stack: Stack) -> Ctx<'_> {
    let build = FragLimitsPatch {
        max_fragments: Some(lorafleet_codec::fragmentation::MAX_N as u16),
        max_parity: Some(lorafleet_codec::fragmentation::MAX_N as u16),
        ..Default::default()
    };
    Ctx {
        region,
        status_port: 111,
        reboot_delay_ms: 30_000,
        slot_size: 1 << 20,
        stack,
        limits: stack.limits(Some(&build)),
    }
}

fn fleet(n: usize, s: &Settings, loss: f64, seed: u64, c: &Ctx) -> Fleet {
    let mut other = rand::rngs::StdRng::seed_from_u64(seed);
    let setup = commands::frag_session_setup_req(&s.frag).unwrap();
    let devs = (0..n as u32)
        .map(|i| {
            let mut d = SimDevice::new(Identity::nth(i), 0, &mut other);
            d.on_unicast(c, 0, ports::FRAGMENTATION, &setup, &mut other);
            d.state.outbox.clear();
            d
        })
        .collect();
    Fleet {
        devs,
        frag_rngs: (0..n as u64)
            .map(|i| rand::rngs::StdRng::seed_from_u64(seed ^ (i + 1).wrapping_mul(0x9e37_79b9)))
            .collect(),
        done_at: vec![None; n],
        other,
        loss,
    }
}

impl Fleet {
    /// Fragment `k` (0-based) to every device, each with its own draw.
    fn fragment(&mut self, k: usize, frame: &[u8], c: &Ctx) {
        let m = usize::from(
            self.devs[0].state.frag_sessions[0]
                .as_ref()
                .unwrap()
                .nb_frag,
        );
        for i in 0..self.devs.len() {
            if self.frag_rngs[i].gen::<f64>() < self.loss || self.done_at[i].is_some() {
                continue;
            }
            let d = &mut self.devs[i];
            d.on_multicast(c, 1000, 0, ports::FRAGMENTATION, frame, &mut self.other);
            if d.session_progress(0).is_some_and(|(_, rank)| rank == m) {
                self.done_at[i] = Some(k as u32 + 1);
            }
        }
    }

    /// A multicast status request; returns each device's answer that got through.
    fn status(&mut self, data: &[u8], c: &Ctx) -> Vec<(usize, Vec<u8>)> {
        let mut answers = Vec::new();
        for i in 0..self.devs.len() {
            if self.other.gen::<f64>() < self.loss {
                continue;
            }
            let d = &mut self.devs[i];
            d.on_multicast(c, 2000, 0, ports::FRAGMENTATION, data, &mut self.other);
            while let Some((_, a)) = d.state.outbox.pop_front() {
                if self.other.gen::<f64>() >= self.loss {
                    answers.push((i, a));
                }
            }
        }
        answers
    }
}

struct Outcome {
    parity: usize,
    airtime_ms: f64,
    completed: usize,
    rounds: u32,
    waited_s: i64,
}

fn run_fixed(f: &mut Fleet, frames: &[Vec<u8>], c: &Ctx, frag_air: f64) -> Outcome {
    for (k, frame) in frames.iter().enumerate() {
        f.fragment(k, frame, c);
    }
    let m = usize::from(f.devs[0].state.frag_sessions[0].as_ref().unwrap().nb_frag);
    Outcome {
        parity: frames.len() - m,
        airtime_ms: frames.len() as f64 * frag_air,
        completed: f.done_at.iter().flatten().count(),
        rounds: 0,
        waited_s: 0,
    }
}

/// The engine's machine in its session phase, driven the way `engine/step.rs` drives it.
fn run_adaptive(
    f: &mut Fleet,
    s: &Settings,
    frames: &[Vec<u8>],
    c: &Ctx,
    frag_air: f64,
    status_air: f64,
) -> Outcome {
    let mut run = Run::new(s, [1, 2, 3, 4], [9; 16], t0());
    run.phase = Phase::Session;
    run.session_start = Some(t0());
    let mut devs: Vec<Dev> = f
        .devs
        .iter()
        .map(|d| {
            let mut e = Dev::new(d.id.dev_eui, [0; 16], None, s, t0());
            e.step = Step::InSession;
            e.next_action_at = None;
            e.frag_reading = Some(c.stack.status_reading());
            e
        })
        .collect();
    let t = Target::default();
    let mut now = t0();
    let mut air = 0.0;
    let mut sent = 0;
    let mut out = Vec::new();
    while run.fragments_sent_at.is_none() {
        let allowed = run.sendable(s, frames.len());
        while sent < allowed {
            f.fragment(sent, &frames[sent], c);
            air += frag_air;
            now += TimeDelta::microseconds((frag_air * 1000.0) as i64);
            sent += 1;
        }
        run.sent_all_sendable(s, now);
        out.clear();
        run.tick(&mut devs, s, &t, now, &mut out);
        for a in std::mem::take(&mut out) {
            let Action::Multicast { data, .. } = a else {
                continue;
            };
            air += status_air;
            let at = now + TimeDelta::seconds(1);
            for (i, answer) in f.status(&data, c) {
                for reply in commands::parse_uplink(ports::FRAGMENTATION, &answer, 111) {
                    run.reply(&mut devs[i], reply, s, &t, at, &mut out);
                }
            }
        }
        now += s.adaptive.unwrap().status_wait;
        run.tick(&mut devs, s, &t, now, &mut out);
    }
    Outcome {
        parity: sent - usize::from(s.frag.nb_frag),
        airtime_ms: air,
        completed: f.done_at.iter().flatten().count(),
        rounds: run.adaptive.rounds,
        waited_s: (now - t0()).num_seconds() - (air / 1000.0) as i64,
    }
}

/// CPU time of this process so far (user + system, from /proc/self/stat, in clock ticks of
/// 10 ms), since wall time on a machine shared with builds says little.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime: fields 14 and 15 of the line, 11 and 12 from the state (field 3).
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let devices: usize = std::env::var("BENCH_PARITY_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let losses = env_list("BENCH_PARITY_LOSS", &[0.05, 0.1, 0.2]);
    let sizes = env_list("BENCH_PARITY_M", &[64usize, 500, 2000]);
    let region = lrwn::region::get(lrwn::region::CommonName::EU868, false, false);
    let stack = std::env::var("BENCH_PARITY_STACK")
        .ok()
        .map(|name| Stack::parse(&name).expect("BENCH_PARITY_STACK: a device stack name"))
        .unwrap_or(Stack::LorafleetDemo);
    let c = ctx(region.as_ref(), stack);
    // Another draw of the same matrix (0: the one in BENCHMARKS.md).
    let seed_offset: u64 = std::env::var("BENCH_PARITY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let frag_air = airtime_ms(region.as_ref(), DR, usize::from(FRAGMENT_SIZE) + 3, false);
    let status_air = airtime_ms(region.as_ref(), DR, 2, false);
    println!(
        "{devices} {} devices ({:?} reading), {FRAGMENT_SIZE}-byte fragments at DR{DR} ({frag_air:.1} ms each, status request {status_air:.1} ms); adaptive: groups of what the neediest answer asks for, cap {ADAPTIVE_CAP_PERCENT} %, {} status copies per round; seed offset {seed_offset}",
        stack.name(),
        stack.status_reading(),
        lorafleet_engine::adaptive::STATUS_COPIES
    );
    println!("| loss | M | mode | parity sent | air time | completed | unluckiest device needed (parity) | air time / unluckiest's | goal met | status rounds (waiting) | CPU |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &loss in &losses {
        for &m in &sizes {
            let image: Vec<u8> = (0..m * usize::from(FRAGMENT_SIZE))
                .map(|i| (i * 131 % 251) as u8)
                .collect();
            let cap = m * ADAPTIVE_CAP_PERCENT / 100;
            let all = data_fragments(&image, &settings(m, cap, false).frag, cap).unwrap();
            let seed = ((loss * 1000.0) as u64 * 100_000 + m as u64) ^ (seed_offset << 40);
            let mut needed = 0u32;
            let mut rows = Vec::new();
            for mode in ["fixed 10 %", "fixed 20 %", "fixed 40 %", "adaptive"] {
                let begun = cpu_seconds();
                let adaptive = mode == "adaptive";
                let r = match mode {
                    "fixed 10 %" => m / 10,
                    "fixed 20 %" => m / 5,
                    "fixed 40 %" => m * 2 / 5,
                    _ => cap,
                };
                let s = settings(m, r, adaptive);
                let mut f = fleet(devices, &s, loss, seed, &c);
                let o = if adaptive {
                    run_adaptive(&mut f, &s, &all, &c, frag_air, status_air)
                } else {
                    run_fixed(&mut f, &all[..m + r], &c, frag_air)
                };
                let worst = f.done_at.iter().flatten().max().copied().unwrap_or(0);
                if f.done_at.iter().all(Option::is_some) {
                    needed = needed.max(worst);
                }
                rows.push((mode, o, cpu_seconds() - begun));
            }
            // What the unluckiest device needed: the N at which it completed, in a mode where
            // every device did (the draws are the same in every mode).
            let needed_air = f64::from(needed) * frag_air;
            for (mode, o, cpu) in rows {
                let ratio = if needed > 0 {
                    format!("{:.3}", o.airtime_ms / needed_air)
                } else {
                    "-".into()
                };
                // Issue 8 item 5's goal, for adaptive parity: every device completes with
                // total air time within 10 % of what the unluckiest device needed.
                let goal = match mode {
                    "adaptive" if o.completed == devices && o.airtime_ms <= 1.1 * needed_air => {
                        "yes"
                    }
                    "adaptive" => "**no**",
                    _ => "-",
                };
                let rounds = if o.rounds > 0 {
                    format!("{} ({} s)", o.rounds, o.waited_s)
                } else {
                    "-".into()
                };
                println!(
                    "| {:.0} % | {m} | {mode} | {} ({:.1} %) | {:.1} s | {}/{devices} | {} | {ratio} | {goal} | {rounds} | {:.2} s |",
                    loss * 100.0,
                    o.parity,
                    o.parity as f64 * 100.0 / m as f64,
                    o.airtime_ms / 1000.0,
                    o.completed,
                    if needed > 0 { format!("{}", needed as usize - m.min(needed as usize)) } else { "-".into() },
                    cpu
                );
            }
        }
    }
}

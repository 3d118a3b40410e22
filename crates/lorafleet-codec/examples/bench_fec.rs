//! Codec-level FUOTA benchmarks (issue 4, item 7), run by `scripts/bench-fec`
//! in a release build:
//!
//! 1. FEC decoder throughput (MB/s of image rebuilt, MB = 10^6 bytes) and
//!    memory per session, plus worst cases near the 14-bit limit on N;
//! 2. the share of devices that complete versus redundancy at 5/10/20/30 %
//!    loss, next to an ideal code (a device completes iff it receives >= M);
//! 3. the mean number of fragments a device needs, divided by M.
//!
//! Fragments come from lrwn's encoder; every rebuilt image is compared with
//! the original and the program aborts on any difference. All randomness has
//! fixed seeds, so the completion figures are identical from run to run; only
//! the timings depend on the machine and its load.
//!
//! Environment: `BENCH_FEC_SECONDS` (timed seconds per throughput case,
//! default 2), `BENCH_FEC_TRIALS` (simulated devices per loss rate for M = 200,
//! default 10000), `BENCH_FEC_WORST` (0 skips the worst cases).
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

use std::time::{Duration, Instant};

use lorafleet_codec::fragmentation::{FragmentDecoder, Progress, MAX_N};
use lorafleet_codec::redundancy::{completion_curve, completion_rate, mean_fragments_needed};
use lrwn::applayer::fragmentation::v1::encode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Base seed; each case derives its own from it.
const SEED: u64 = 20_261_128;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Stops the benchmark with a message that cannot be missed.
fn fail(msg: &str) -> ! {
    eprintln!();
    eprintln!("!!!!!!!! bench_fec FAILED: {msg}");
    eprintln!();
    std::process::exit(1);
}

/// An image and its fragments (index i holds N = i + 1) as lrwn encodes them.
struct Encoded {
    image: Vec<u8>,
    fragment_size: usize,
    nb_fragments: usize,
    padding: usize,
    fragments: Vec<Vec<u8>>,
}

fn encode_image(image_len: usize, fragment_size: usize, redundancy: usize, seed: u64) -> Encoded {
    let mut rng = StdRng::seed_from_u64(seed);
    let image: Vec<u8> = (0..image_len).map(|_| rng.gen()).collect();
    let nb_fragments = image_len.div_ceil(fragment_size);
    let padding = nb_fragments * fragment_size - image_len;
    let mut padded = image.clone();
    padded.resize(nb_fragments * fragment_size, 0);
    let fragments = encode(&padded, fragment_size, redundancy)
        .unwrap_or_else(|e| fail(&format!("lrwn encode: {e}")));
    if fragments.len() != nb_fragments + redundancy {
        fail(&format!(
            "lrwn returned {} fragments, expected {}",
            fragments.len(),
            nb_fragments + redundancy
        ));
    }
    Encoded {
        image,
        fragment_size,
        nb_fragments,
        padding,
        fragments,
    }
}

/// The N (1-based) one device receives when each fragment is lost
/// independently with probability `loss`.
fn loss_pattern(total: usize, loss: f64, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (1..=total as u32)
        .filter(|_| rng.gen::<f64>() >= loss)
        .collect()
}

/// What one decoding session did.
struct Session {
    image: Option<Vec<u8>>,
    pushed: usize,
    decoder: FragmentDecoder,
}

/// One device's session: a fresh decoder, the received fragments in order
/// until it is done (a device stops listening then), and the image. This is
/// the timed part.
fn decode(enc: &Encoded, received: &[u32]) -> Session {
    let mut decoder = FragmentDecoder::new(enc.nb_fragments, enc.fragment_size, enc.padding)
        .unwrap_or_else(|e| fail(&format!("decoder: {e}")));
    let mut pushed = 0;
    for &n in received {
        let data = enc
            .fragments
            .get(n as usize - 1)
            .unwrap_or_else(|| fail("fragment index out of range"));
        pushed += 1;
        match decoder.push(n, data) {
            Ok(Progress::Done) => break,
            Ok(_) => {}
            Err(e) => fail(&format!("push N={n}: {e}")),
        }
    }
    Session {
        image: decoder.image(),
        pushed,
        decoder,
    }
}

/// Aborts unless the session rebuilt exactly the original image.
fn verify(enc: &Encoded, s: &Session, what: &str) {
    match &s.image {
        None => fail(&format!(
            "{what}: decoder did not complete (rank {} of {} after {} fragments)",
            s.decoder.rank(),
            enc.nb_fragments,
            s.pushed
        )),
        Some(img) if *img != enc.image => {
            let first = img
                .iter()
                .zip(&enc.image)
                .position(|(a, b)| a != b)
                .unwrap_or(img.len().min(enc.image.len()));
            fail(&format!(
                "{what}: rebuilt image differs from the original ({} vs {} bytes, first difference at byte {first})",
                img.len(),
                enc.image.len()
            ))
        }
        Some(_) => {}
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Redundancy that lets practically every device complete: twice the expected
/// number of lost fragments plus a margin, within the 14-bit limit on N.
fn ample_redundancy(m: usize, loss: f64) -> usize {
    let expected_lost = m as f64 * loss / (1.0 - loss);
    ((2.0 * expected_lost).ceil() as usize + 40).min(MAX_N as usize - m)
}

// ---------------------------------------------------------------- part 1

fn throughput(seconds: f64) {
    println!("### 1. FEC decoder throughput and memory per session");
    println!();
    println!(
        "100 KiB image (102,400 random bytes), encoded once by lrwn; 16 seeded loss patterns per \
         case, each decoded from a fresh FragmentDecoder until Done, then image(); repeated for \
         >= {seconds} s per case. MB/s = image bytes / session time (10^6 B/s). Memory = \
         `memory_bytes()` at completion (the parity stage is reserved at its worst case when the \
         first parity fragment arrives, so this is also the session's peak)."
    );
    println!();
    println!("| fragment size | M | loss | redundancy | fragments received (mean) | parity used (mean) | sessions timed | median ms/session | median MB/s | best MB/s | memory/session (max) | memory / image |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let image_len: usize = 100 * 1024;
    let patterns = 16;
    for (ci, fs) in [50usize, 200].into_iter().enumerate() {
        let m = image_len.div_ceil(fs);
        for (li, loss) in [0.0, 0.10, 0.30].into_iter().enumerate() {
            let r = ample_redundancy(m, loss);
            let enc = encode_image(image_len, fs, r, SEED + ci as u64);
            let what = format!("fs={fs} M={m} loss={loss} R={r}");
            let pats: Vec<Vec<u32>> = (0..patterns)
                .map(|p| loss_pattern(m + r, loss, SEED ^ ((ci * 100 + li * 10 + p) as u64)))
                .collect();
            // Warm-up, correctness and memory.
            let mut max_mem = 0;
            let mut pushed = 0;
            let mut parity = 0;
            for p in &pats {
                let s = decode(&enc, p);
                verify(&enc, &s, &what);
                max_mem = max_mem.max(s.decoder.memory_bytes());
                pushed += s.pushed;
                parity += p.iter().take(s.pushed).filter(|&&n| n as usize > m).count();
            }
            let mut times: Vec<f64> = Vec::new();
            let budget = Duration::from_secs_f64(seconds);
            let start = Instant::now();
            let mut passes = 0;
            while passes < 3 || start.elapsed() < budget {
                for p in &pats {
                    let t = Instant::now();
                    let s = decode(&enc, p);
                    let dt = t.elapsed();
                    verify(&enc, &s, &what);
                    times.push(dt.as_secs_f64());
                }
                passes += 1;
            }
            times.sort_by(f64::total_cmp);
            let med = median(&times);
            let best = times.first().copied().unwrap_or(f64::NAN);
            let mbps = |t: f64| image_len as f64 / t / 1e6;
            println!(
                "| {fs} B | {m} | {:.0} % | {r} ({:.0} %) | {:.1} | {:.1} | {} | {:.3} | {:.1} | {:.1} | {} | {:.2} |",
                loss * 100.0,
                r as f64 * 100.0 / m as f64,
                pushed as f64 / patterns as f64,
                parity as f64 / patterns as f64,
                times.len(),
                med * 1e3,
                mbps(med),
                mbps(best),
                kib(max_mem),
                max_mem as f64 / image_len as f64,
            );
        }
    }
    println!();
}

fn worst_cases() {
    println!(
        "### 1b. Worst cases near the 14-bit limit on N (fragment size 255, one session each)"
    );
    println!();
    println!("| case | M | redundancy | loss | image | fragments received | outcome | decode time | memory/session |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let fs = 255;
    struct Case {
        label: &'static str,
        m: usize,
        r: usize,
        loss: f64,
        /// Push only the last parity fragment (N = M + R): every data fragment lost.
        every_data_lost: bool,
    }
    let cases = [
        Case {
            label: "30 % loss, N range filled",
            m: 10_922,
            r: 5_461,
            loss: 0.30,
            every_data_lost: false,
        },
        Case {
            label: "50 % loss, N range filled",
            m: 8_000,
            r: 8_383,
            loss: 0.50,
            every_data_lost: false,
        },
        Case {
            label: "50 % loss, 383 parity",
            m: 16_000,
            r: 383,
            loss: 0.50,
            every_data_lost: false,
        },
        Case {
            label: "90 % loss, 383 parity",
            m: 16_000,
            r: 383,
            loss: 0.90,
            every_data_lost: false,
        },
        Case {
            label: "upper bound: every data fragment lost, one parity received",
            m: 16_382,
            r: 1,
            loss: 1.0,
            every_data_lost: true,
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let t = Instant::now();
        let enc = encode_image(c.m * fs, fs, c.r, SEED + 1000 + i as u64);
        let enc_time = t.elapsed();
        let pattern = if c.every_data_lost {
            vec![(c.m + c.r) as u32]
        } else {
            loss_pattern(c.m + c.r, c.loss, SEED + 2000 + i as u64)
        };
        let t = Instant::now();
        let s = decode(&enc, &pattern);
        let dt = t.elapsed();
        let what = format!("worst case {}", c.label);
        let outcome = if s.image.is_some() {
            verify(&enc, &s, &what);
            format!(
                "image verified ({:.2} MB/s)",
                enc.image.len() as f64 / dt.as_secs_f64() / 1e6
            )
        } else {
            format!(
                "incomplete: rank {} of {} after {} fragments",
                s.decoder.rank(),
                c.m,
                s.decoder.received()
            )
        };
        eprintln!(
            "  worst case {}: lrwn encode {:.1} s, decode {:.2} s",
            c.label,
            enc_time.as_secs_f64(),
            dt.as_secs_f64()
        );
        println!(
            "| {} | {} | {} | {:.0} % | {} | {} | {} | {:.2} s | {} |",
            c.label,
            c.m,
            c.r,
            c.loss * 100.0,
            mib(enc.image.len()),
            s.pushed,
            outcome,
            dt.as_secs_f64(),
            mib(s.decoder.memory_bytes()),
        );
    }
    println!();
}

// ---------------------------------------------------------------- part 2

/// Probability that a device of an ideal code completes: it receives at least
/// `m` of the `m + r` fragments, each lost independently with `loss`.
fn ideal_completion(m: usize, r: usize, loss: f64) -> f64 {
    let n = m + r;
    if loss <= 0.0 {
        return 1.0;
    }
    if loss >= 1.0 {
        return if m == 0 { 1.0 } else { 0.0 };
    }
    let mut ln_fact = vec![0.0f64; n + 1];
    for i in 1..=n {
        ln_fact[i] = ln_fact[i - 1] + (i as f64).ln();
    }
    let (lp, lq) = ((1.0 - loss).ln(), loss.ln());
    (m..=n)
        .map(|k| {
            (ln_fact[n] - ln_fact[k] - ln_fact[n - k] + k as f64 * lp + (n - k) as f64 * lq).exp()
        })
        .sum::<f64>()
        .min(1.0)
}

fn completion_table(trials: usize) {
    let m = 200;
    let losses = [0.05, 0.10, 0.20, 0.30];
    let percents = [
        0usize, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90, 100,
    ];
    let rs: Vec<usize> = percents.iter().map(|p| m * p / 100).collect();
    println!("### 2. Devices that complete versus redundancy (M = {m} data fragments)");
    println!();
    println!(
        "codec = `redundancy::completion_curve` ({trials} simulated devices per loss rate, the real \
         FragmentDecoder, seeded); ideal = exact binomial probability that a device receives at \
         least M of the M + R fragments."
    );
    println!();
    let mut header = String::from("| redundancy |");
    let mut rule = String::from("|---|");
    for l in losses {
        header += &format!(" {0:.0} % loss: codec | {0:.0} %: ideal |", l * 100.0);
        rule += "---|---|";
    }
    println!("{header}");
    println!("{rule}");
    let curves: Vec<Vec<(usize, f64)>> = losses
        .iter()
        .enumerate()
        .map(|(i, &loss)| completion_curve(m, loss, &rs, trials, SEED + 300 + i as u64))
        .collect();
    for (row, (&pct, &r)) in percents.iter().zip(&rs).enumerate() {
        let mut line = format!("| {pct} % (R = {r}) |");
        for (li, &loss) in losses.iter().enumerate() {
            let codec = curves[li][row].1;
            let ideal = ideal_completion(m, r, loss);
            line += &format!(" {:.1} % | {:.1} % |", codec * 100.0, ideal * 100.0);
        }
        println!("{line}");
    }
    println!();
}

// ---------------------------------------------------------------- part 3

fn mean_needed_table(trials: usize) {
    println!("### 3. Mean fragments received at completion / M");
    println!();
    println!(
        "`redundancy::mean_fragments_needed` with ample redundancy (2x the expected losses + 40); \
         \"completed\" is `completion_rate` at that redundancy (devices that do not complete are \
         left out of the mean). An ideal code needs exactly 1.000 (0 extra fragments)."
    );
    println!();
    println!("| M | loss | redundancy | devices | completed | mean needed / M | extra fragments (mean) |");
    println!("|---|---|---|---|---|---|---|");
    for (m, t) in [(200usize, trials), (2048, (trials / 10).max(10))] {
        for (i, loss) in [0.0, 0.05, 0.10, 0.20, 0.30, 0.50].into_iter().enumerate() {
            let r = ample_redundancy(m, loss);
            let seed = SEED + 500 + i as u64;
            let mean = mean_fragments_needed(m, loss, r, t, seed);
            let done = completion_rate(m, r, loss, t, seed);
            println!(
                "| {m} | {:.0} % | {r} | {t} | {:.2} % | {:.4} | {:.2} |",
                loss * 100.0,
                done * 100.0,
                mean,
                (mean - 1.0) * m as f64
            );
        }
    }
    println!();
}

// ---------------------------------------------------------------- main

fn read_proc(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn load_average() -> String {
    read_proc("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = read_proc("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = read_proc("/proc/sys/kernel/osrelease");
    format!(
        "{cores} cores, {:.0} GiB, Linux {}",
        mem_kib as f64 / (1024.0 * 1024.0),
        kernel.trim()
    )
}

fn main() {
    let seconds: f64 = env_or("BENCH_FEC_SECONDS", 2.0);
    let trials: usize = env_or("BENCH_FEC_TRIALS", 10_000);
    let worst: u32 = env_or("BENCH_FEC_WORST", 1);
    let start = Instant::now();
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average());
    println!();

    eprintln!("[1/4] decoder throughput ...");
    throughput(seconds);
    if worst != 0 {
        eprintln!("[2/4] worst cases ...");
        worst_cases();
    }
    eprintln!("[3/4] completion versus redundancy ...");
    completion_table(trials);
    eprintln!("[4/4] mean fragments needed ...");
    mean_needed_table(trials);

    println!("load average at end: {}", load_average());
    println!("total run time: {:.1} s", start.elapsed().as_secs_f64());
}

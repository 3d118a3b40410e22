//! Redundancy advice for TS004 v1 sessions, measured by running the real
//! fragment decoder against simulated independent loss.
//!
//! Each simulated device receives fragment N = 1, 2, ... unless a coin with
//! probability `loss` says it was lost, and feeds what it gets to a rank-only
//! [`FragmentDecoder`] (bytes do not matter for whether the image is
//! determined). Loss draws come from a per-device generator in N order, so a
//! device that completes with R parity fragments also completes with more: for
//! a fixed seed the completion rate never decreases with redundancy, which is
//! what makes [`suggest_redundancy`] a well-defined search.
//!
//! [`OverheadTable`] is the same decoder's answer to a narrower question for
//! adaptive parity: how many parity fragments beyond its missing count a
//! device must receive, by session size and missing count.
//!
//! Inputs out of range never panic: `nb_fragments` outside
//! `1..=`[`MAX_FRAGMENTS`] gives no completions, `loss` is clamped to `[0, 1]`
//! (NaN counts as total loss), and redundancy is capped so every N fits 14 bits.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::fragmentation::{parity_columns, FragmentDecoder, Progress, MAX_FRAGMENTS, MAX_N};

/// SplitMix64: tiny, fast and good enough to drive loss coin flips; written
/// inline to keep `rand` out of the library.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// The generator for device `trial`, independent of how many draws other
    /// devices made, so results do not depend on evaluation order.
    fn for_trial(seed: u64, trial: usize) -> SplitMix64 {
        let mut g = SplitMix64(seed ^ (trial as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
        SplitMix64(g.next_u64())
    }
}

/// Parity columns cached across simulated devices, since every device of a
/// session uses the same lines. Past a memory budget lines are regenerated
/// on demand instead, trading time for a bounded footprint.
struct LineCache {
    m: usize,
    lines: Vec<Vec<u32>>,
    cached_entries: usize,
}

/// Cached column entries (4 bytes each) before lines stop being kept: 64 MiB.
const LINE_CACHE_BUDGET: usize = 16 << 20;

impl LineCache {
    fn new(m: usize) -> Self {
        LineCache {
            m,
            lines: Vec::new(),
            cached_entries: 0,
        }
    }

    /// Runs `f` with the columns of parity line `n` (1-based).
    fn with_line<T>(&mut self, n: usize, f: impl FnOnce(&[u32]) -> T) -> T {
        while self.lines.len() < n && self.cached_entries < LINE_CACHE_BUDGET {
            let line = parity_columns(self.lines.len() as u32 + 1, self.m);
            self.cached_entries += line.len();
            self.lines.push(line);
        }
        match self.lines.get(n.wrapping_sub(1)) {
            Some(line) => f(line),
            None => f(&parity_columns(n as u32, self.m)),
        }
    }
}

/// What one simulated device experienced.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// Parity fragments the sender had transmitted when the device completed
    /// (0 if the data fragments sufficed), or `None` if it did not complete
    /// within the redundancy simulated.
    needed_redundancy: Option<usize>,
    /// Fragments the device had received at that point.
    received: usize,
}

/// Simulates one device for up to `max_redundancy` parity fragments.
fn run_trial(
    cache: &mut LineCache,
    loss: f64,
    max_redundancy: usize,
    seed: u64,
    trial: usize,
) -> Outcome {
    let m = cache.m;
    let mut rng = SplitMix64::for_trial(seed, trial);
    let not_done = Outcome {
        needed_redundancy: None,
        received: 0,
    };
    let Ok(mut decoder) = FragmentDecoder::rank_only(m) else {
        return not_done;
    };
    for n in 1..=m + max_redundancy {
        // Drawn for every N, received or not, so the sequence is a prefix of
        // the one a longer session would see.
        if rng.next_f64() < loss {
            continue;
        }
        let progress = if n <= m {
            decoder.push(n as u32, &[])
        } else {
            cache.with_line(n - m, |cols| decoder.push_with_columns(n as u32, &[], cols))
        };
        if let Ok(Progress::Done) = progress {
            return Outcome {
                needed_redundancy: Some(n.saturating_sub(m)),
                received: decoder.received(),
            };
        }
    }
    not_done
}

/// Valid session size, clamped loss and the redundancy cap, or `None` if no
/// device can ever complete.
fn normalise(nb_fragments: usize, loss: f64) -> Option<(f64, usize)> {
    if !(1..=MAX_FRAGMENTS).contains(&nb_fragments) {
        return None;
    }
    let loss = if loss.is_nan() {
        1.0
    } else {
        loss.clamp(0.0, 1.0)
    };
    Some((loss, MAX_N as usize - nb_fragments))
}

/// Simulates `trials` devices for up to `max_redundancy` parity fragments.
fn simulate(
    nb_fragments: usize,
    loss: f64,
    max_redundancy: usize,
    trials: usize,
    seed: u64,
) -> Vec<Outcome> {
    let Some((loss, cap)) = normalise(nb_fragments, loss) else {
        return Vec::new();
    };
    let mut cache = LineCache::new(nb_fragments);
    (0..trials)
        .map(|t| run_trial(&mut cache, loss, max_redundancy.min(cap), seed, t))
        .collect()
}

/// Share of `trials` with `needed_redundancy <= r`; 0 when there are no trials.
fn share_within(outcomes: &[Outcome], trials: usize, r: usize) -> f64 {
    if trials == 0 {
        return 0.0;
    }
    let done = outcomes
        .iter()
        .filter(|o| o.needed_redundancy.is_some_and(|need| need <= r))
        .count();
    done as f64 / trials as f64
}

/// Fraction of `trials` simulated devices that complete when `redundancy`
/// parity fragments follow the `nb_fragments` data fragments and each fragment
/// is lost independently with probability `loss`. 0 when `trials` is 0.
pub fn completion_rate(
    nb_fragments: usize,
    redundancy: usize,
    loss: f64,
    trials: usize,
    seed: u64,
) -> f64 {
    let outcomes = simulate(nb_fragments, loss, redundancy, trials, seed);
    share_within(&outcomes, trials, redundancy)
}

/// Completion rate for each of `redundancies` (same devices, same losses),
/// as `(redundancy, rate)` in the order given.
pub fn completion_curve(
    nb_fragments: usize,
    loss: f64,
    redundancies: &[usize],
    trials: usize,
    seed: u64,
) -> Vec<(usize, f64)> {
    let max = redundancies.iter().copied().max().unwrap_or(0);
    let outcomes = simulate(nb_fragments, loss, max, trials, seed);
    redundancies
        .iter()
        .map(|&r| (r, share_within(&outcomes, trials, r)))
        .collect()
}

/// Least redundancy whose completion rate (as [`completion_rate`] with the
/// same `trials` and `seed` computes it) reaches `target_share`, or `None` if
/// even the 14-bit limit on N does not get there (or the inputs are invalid).
///
/// Each device's own minimum redundancy is found by simulating it until it
/// completes, with a cap that doubles (galloping) so hopeless cases stop at
/// the limit; the answer is then the matching order statistic.
pub fn suggest_redundancy(
    nb_fragments: usize,
    loss: f64,
    target_share: f64,
    trials: usize,
    seed: u64,
) -> Option<usize> {
    let (loss, limit) = normalise(nb_fragments, loss)?;
    if target_share.is_nan() || target_share > 1.0 || trials == 0 {
        return None;
    }
    // Fewest devices whose completion makes the share reach the target,
    // computed with the same division completion_rate uses.
    let reaches = |k: usize| k as f64 / trials as f64 >= target_share;
    let required = (0..=trials).find(|&k| reaches(k))?;
    if required == 0 {
        return Some(0);
    }

    let mut cache = LineCache::new(nb_fragments);
    let mut needs: Vec<Option<usize>> = vec![None; trials];
    // Start near the expected need (lost data fragments plus a little) to
    // avoid many doublings.
    let expected = (nb_fragments as f64 * loss / (1.0 - loss).max(1e-9)).min(limit as f64);
    let mut cap = ((expected * 1.5) as usize + 8).min(limit);
    loop {
        for (t, need) in needs.iter_mut().enumerate() {
            if need.is_none() {
                *need = run_trial(&mut cache, loss, cap, seed, t).needed_redundancy;
            }
        }
        let mut done: Vec<usize> = needs.iter().flatten().copied().collect();
        if done.len() >= required {
            done.sort_unstable();
            return done.get(required - 1).copied();
        }
        if cap >= limit {
            return None;
        }
        cap = cap.saturating_mul(2).min(limit);
    }
}

/// Mean number of fragments received at completion divided by `nb_fragments`,
/// over the simulated devices that complete within `redundancy` (1.0 would be
/// an ideal code). NaN if none completes.
pub fn mean_fragments_needed(
    nb_fragments: usize,
    loss: f64,
    redundancy: usize,
    trials: usize,
    seed: u64,
) -> f64 {
    let outcomes = simulate(nb_fragments, loss, redundancy, trials, seed);
    let received: Vec<usize> = outcomes
        .iter()
        .filter(|o| o.needed_redundancy.is_some())
        .map(|o| o.received)
        .collect();
    if received.is_empty() {
        return f64::NAN;
    }
    let total: usize = received.iter().sum();
    total as f64 / received.len() as f64 / nb_fragments as f64
}

/// Missing-fragment counts at which [`OverheadTable`] measures the overhead.
/// Between them it is interpolated; past the last it stays at the last
/// value, since the measurements stop depending on the count there (about
/// 1.6 fragments for large M, what a random binary code needs).
const OVERHEAD_GRID: [usize; 11] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64];

/// Largest M whose overhead is measured rather than looked up. Small sessions
/// are where the matrix of a particular M misbehaves (M = 17 needs 5 to 8
/// extra fragments, M = 16 about 1.5); from M = 128 on, measured values stay
/// within about 0.5 fragments of the table used above it.
pub const OVERHEAD_MEASURED_MAX_M: usize = 128;

/// Simulated devices per grid point: the mean is then within about 0.15
/// fragments, well below the noise of the losses it is combined with.
const OVERHEAD_TRIALS: usize = 128;

/// Parity fragments beyond the missing count after which a simulated device
/// is given up (the code cannot rebuild it, e.g. M = 1 whose parity rows are empty).
const OVERHEAD_GIVE_UP: usize = 256;

/// Overhead for M above [`OVERHEAD_MEASURED_MAX_M`], at each [`OVERHEAD_GRID`]
/// count: the mean of measurements with this crate's decoder at M = 701,
/// 1000, 1500 and 2000 (3,000 devices each), which differ from each other by
/// up to 0.3 fragments. Regenerate with the ignored test
/// `print_large_m_overhead`.
const LARGE_M_OVERHEAD: [f64; 11] = [
    1.568, 2.062, 2.217, 2.180, 1.997, 1.808, 1.664, 1.615, 1.614, 1.583, 1.617,
];

/// Expected extra fragments a device needs, by how many data fragments it is
/// missing, for one session size M.
///
/// "Extra" counts parity fragments *received* beyond the number of missing
/// data fragments: a device missing `k` of M data fragments completes, on
/// average, after receiving `k + extra_for(k)` parity fragments. An ideal code
/// would need 0; TS004 v1's needs about 1.6 for large M and anything from 0 to
/// 8 for small M, depending on the particular matrix. Loss on the parity
/// fragments themselves is not included: divide by the reception rate for
/// fragments to *send*.
///
/// Measured with the real [`FragmentDecoder`] (rank only) on devices missing
/// a uniformly random set of data fragments, because the matrix of a given M
/// has quirks no formula captures. Measuring costs tens of milliseconds
/// optimised (about a second unoptimised) for M near
/// [`OVERHEAD_MEASURED_MAX_M`], so results are kept per M for the life of the
/// process; above it a fixed table is used.
#[derive(Debug, Clone, PartialEq)]
pub struct OverheadTable {
    nb_frag: usize,
    /// (missing count, mean extra), ascending by count; INFINITY when the
    /// devices did not complete.
    points: Vec<(usize, f64)>,
}

impl OverheadTable {
    /// Measures (or, for large M, looks up) the table for `nb_frag` data fragments.
    ///
    /// `nb_frag` outside `1..=`[`MAX_FRAGMENTS`] gives a table whose every
    /// value is infinite: no device can complete such a session.
    pub fn measure(nb_frag: usize) -> OverheadTable {
        let points = if !(1..=MAX_FRAGMENTS).contains(&nb_frag) {
            vec![(1, f64::INFINITY)]
        } else if nb_frag > OVERHEAD_MEASURED_MAX_M {
            OVERHEAD_GRID.into_iter().zip(LARGE_M_OVERHEAD).collect()
        } else {
            measured_points(nb_frag)
        };
        OverheadTable { nb_frag, points }
    }

    /// M, the session's number of data fragments.
    pub fn nb_frag(&self) -> usize {
        self.nb_frag
    }

    /// Expected extra parity fragments (received) for a device missing
    /// `missing` data fragments; 0 for 0, infinite when the code cannot
    /// rebuild such a device. Linear between measured counts, constant past
    /// the last one.
    pub fn extra_for(&self, missing: usize) -> f64 {
        if missing == 0 {
            return 0.0;
        }
        let after = self.points.iter().position(|&(k, _)| k >= missing);
        match after {
            None => self.points.last().map_or(f64::INFINITY, |&(_, v)| v),
            Some(0) => self.points.first().map_or(f64::INFINITY, |&(_, v)| v),
            Some(i) => {
                let (k1, v1) = self.points.get(i - 1).copied().unwrap_or((0, 0.0));
                let (k2, v2) = self.points.get(i).copied().unwrap_or((k1, v1));
                if !(v1.is_finite() && v2.is_finite()) || k2 == k1 {
                    return v1.max(v2);
                }
                let t = (missing - k1) as f64 / (k2 - k1) as f64;
                v1 + t * (v2 - v1)
            }
        }
    }
}

/// Points measured so far, by M. The measurement is deterministic, so this
/// only saves time; a poisoned lock just means measuring again.
static MEASURED: Mutex<BTreeMap<usize, Vec<(usize, f64)>>> = Mutex::new(BTreeMap::new());

/// The measured points for M (from [`MEASURED`] when known).
fn measured_points(m: usize) -> Vec<(usize, f64)> {
    if let Some(points) = MEASURED.lock().ok().and_then(|t| t.get(&m).cloned()) {
        return points;
    }
    let mut cache = LineCache::new(m);
    let points: Vec<(usize, f64)> = overhead_counts(m)
        .map(|k| (k, measure_extra(&mut cache, k, OVERHEAD_TRIALS)))
        .collect();
    if let Ok(mut t) = MEASURED.lock() {
        t.insert(m, points.clone());
    }
    points
}

/// Expected extra parity fragments a device missing `missing` of `nb_frag`
/// data fragments must receive beyond `missing` (see [`OverheadTable`]).
pub fn expected_overhead(nb_frag: usize, missing: usize) -> f64 {
    OverheadTable::measure(nb_frag).extra_for(missing)
}

/// The missing counts measured for M: the grid up to M, plus M itself when
/// it falls short of the grid's end (losing everything is its own case).
fn overhead_counts(m: usize) -> impl Iterator<Item = usize> {
    let last = OVERHEAD_GRID[OVERHEAD_GRID.len() - 1];
    let tail = (m < last && !OVERHEAD_GRID.contains(&m)).then_some(m);
    OVERHEAD_GRID
        .into_iter()
        .filter(move |&k| k <= m)
        .chain(tail)
}

/// Mean extra parity fragments over `trials` devices each missing `k` random
/// data fragments, or INFINITY if any device fails to complete.
fn measure_extra(cache: &mut LineCache, k: usize, trials: usize) -> f64 {
    let seed = 0x6f76_6572_6865_6164 ^ ((cache.m as u64) << 20) ^ k as u64;
    let mut total = 0usize;
    for t in 0..trials {
        let mut rng = SplitMix64::for_trial(seed, t);
        match extra_needed(cache, k, &mut rng) {
            Some(extra) => total += extra,
            None => return f64::INFINITY,
        }
    }
    total as f64 / trials.max(1) as f64
}

/// Parity fragments beyond `k` one device needs when a random `k` of the
/// data fragments are lost and no parity is, or `None` if it gives up.
fn extra_needed(cache: &mut LineCache, k: usize, rng: &mut SplitMix64) -> Option<usize> {
    let m = cache.m;
    let mut columns: Vec<usize> = (0..m).collect();
    let k = k.min(m);
    // Partial Fisher-Yates: the first k columns become the lost ones.
    for i in 0..k {
        let j = i + (rng.next_u64() % (m - i) as u64) as usize;
        columns.swap(i, j);
    }
    let mut lost = vec![false; m];
    for &c in columns.get(..k).unwrap_or_default() {
        if let Some(l) = lost.get_mut(c) {
            *l = true;
        }
    }
    let mut decoder = FragmentDecoder::rank_only_after_data(&lost).ok()?;
    if decoder.is_done() {
        return Some(0);
    }
    let cap = (k + OVERHEAD_GIVE_UP).min(MAX_N as usize - m);
    for p in 1..=cap {
        let n = (m + p) as u32;
        let progress = cache.with_line(p, |cols| decoder.push_with_columns(n, &[], cols));
        if let Ok(Progress::Done) = progress {
            return Some(p.saturating_sub(k));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_loss_needs_no_redundancy() {
        assert_eq!(completion_rate(200, 0, 0.0, 50, 1), 1.0);
        assert_eq!(suggest_redundancy(200, 0.0, 1.0, 50, 1), Some(0));
        assert_eq!(mean_fragments_needed(200, 0.0, 0, 20, 1), 1.0);
    }

    #[test]
    fn ten_percent_loss_matches_measurements() {
        // fuota-facts: at 10 % loss with 200 fragments, 20 % redundancy completes
        // every device, 15 % about 83 %, and devices need about 1.009 M fragments.
        let trials = 400;
        let r20 = completion_rate(200, 40, 0.1, trials, 42);
        assert!(r20 >= 0.98, "20 %: {r20}");
        let r15 = completion_rate(200, 30, 0.1, trials, 42);
        assert!((0.70..=0.93).contains(&r15), "15 %: {r15}");
        let mean = mean_fragments_needed(200, 0.1, 60, trials, 42);
        assert!((1.0..1.03).contains(&mean), "mean {mean}");
        assert_eq!(completion_rate(200, 0, 0.1, trials, 42), 0.0);
    }

    #[test]
    fn suggestion_is_the_least_sufficient() {
        for (loss, target) in [(0.1, 0.95), (0.3, 0.9), (0.05, 1.0)] {
            let r = suggest_redundancy(200, loss, target, 200, 9).unwrap();
            assert!(
                completion_rate(200, r, loss, 200, 9) >= target,
                "{loss} {target} {r}"
            );
            if r > 0 {
                assert!(completion_rate(200, r - 1, loss, 200, 9) < target);
            }
        }
    }

    #[test]
    fn curve_is_monotone_and_consistent() {
        let rs = [0, 10, 20, 30, 40, 60];
        let curve = completion_curve(200, 0.1, &rs, 200, 5);
        assert_eq!(curve.len(), rs.len());
        assert!(curve.windows(2).all(|w| w[0].1 <= w[1].1));
        for (r, rate) in curve {
            assert_eq!(rate, completion_rate(200, r, 0.1, 200, 5));
        }
    }

    #[test]
    fn hopeless_and_invalid_inputs() {
        assert_eq!(suggest_redundancy(200, 1.0, 0.5, 10, 1), None);
        assert_eq!(completion_rate(200, 100, 1.0, 10, 1), 0.0);
        assert_eq!(completion_rate(0, 10, 0.1, 10, 1), 0.0);
        assert_eq!(completion_rate(MAX_FRAGMENTS + 1, 10, 0.1, 10, 1), 0.0);
        assert_eq!(completion_rate(20, 10, 0.1, 0, 1), 0.0);
        assert_eq!(suggest_redundancy(20, 0.1, 0.9, 0, 1), None);
        assert_eq!(suggest_redundancy(20, 0.1, 1.5, 10, 1), None);
        assert_eq!(suggest_redundancy(20, 0.1, f64::NAN, 10, 1), None);
        assert_eq!(suggest_redundancy(20, 0.5, 0.0, 10, 1), Some(0));
        assert_eq!(completion_rate(20, 5, f64::NAN, 10, 1), 0.0);
        assert!(mean_fragments_needed(20, 1.0, 5, 10, 1).is_nan());
        // Redundancy is capped so N stays within 14 bits.
        assert_eq!(completion_rate(16_000, usize::MAX, 0.0, 1, 1), 1.0);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = completion_rate(100, 12, 0.1, 100, 77);
        let b = completion_rate(100, 12, 0.1, 100, 77);
        assert_eq!(a, b);
    }

    #[test]
    fn prng_is_uniform_enough() {
        let mut g = SplitMix64(3);
        let n = 100_000;
        let mean = (0..n).map(|_| g.next_f64()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01);
    }

    #[test]
    fn overhead_is_zero_without_loss_and_infinite_when_impossible() {
        let t = OverheadTable::measure(64);
        assert_eq!(t.nb_frag(), 64);
        assert_eq!(t.extra_for(0), 0.0);
        // M = 1: parity rows select M / 2 = 0 fragments, so parity never helps.
        assert!(OverheadTable::measure(1).extra_for(1).is_infinite());
        assert!(OverheadTable::measure(0).extra_for(1).is_infinite());
        assert!(OverheadTable::measure(MAX_FRAGMENTS + 1)
            .extra_for(3)
            .is_infinite());
    }

    #[test]
    fn overhead_matches_a_direct_count() {
        // M = 2: every parity row is one data fragment, so losing both needs
        // the first rows to cover both columns; the table must agree with
        // simulating that directly.
        let t = OverheadTable::measure(2);
        let mut cache = LineCache::new(2);
        let direct = measure_extra(&mut cache, 2, OVERHEAD_TRIALS);
        assert_eq!(t.extra_for(2), direct);
        // One lost data fragment: a row covers it with probability
        // q = 1 - (1 - 1/M)^(M/2) ~ 1 - e^-0.5, so the extra is 1/q - 1 ~ 1.54.
        let q = 1.0 - (1.0f64 - 1.0 / 100.0).powi(50);
        let one = OverheadTable::measure(100).extra_for(1);
        assert!((one - (1.0 / q - 1.0)).abs() < 0.3, "{one}");
    }

    #[test]
    fn overhead_interpolates_and_stays_flat_past_the_grid() {
        let t = OverheadTable::measure(128);
        let (a, b) = (t.extra_for(8), t.extra_for(12));
        let mid = t.extra_for(10);
        assert!((mid - (a + b) / 2.0).abs() < 1e-9, "{a} {mid} {b}");
        assert_eq!(t.extra_for(64), t.extra_for(100));
        assert!(t.extra_for(100).is_finite());
    }

    #[test]
    fn small_sessions_keep_their_own_quirks() {
        // Measured: M = 17 needs far more than M = 16 (its matrix repeats columns).
        let m16 = OverheadTable::measure(16).extra_for(6);
        let m17 = OverheadTable::measure(17).extra_for(6);
        assert!(m17 > m16 + 2.0, "16: {m16}, 17: {m17}");
        // Losing everything is measured, not extrapolated.
        let t = OverheadTable::measure(10);
        assert!(t.points.iter().any(|&(k, _)| k == 10));
    }

    #[test]
    fn large_m_table_agrees_with_the_decoder() {
        for m in [200, 500, 1000] {
            let table = OverheadTable::measure(m);
            let mut cache = LineCache::new(m);
            for k in [1, 4, 16, 64] {
                let measured = measure_extra(&mut cache, k, 300);
                let tabled = table.extra_for(k);
                assert!(
                    (measured - tabled).abs() < 0.45,
                    "M {m} k {k}: {measured} vs {tabled}"
                );
            }
        }
    }

    #[test]
    fn overhead_predicts_simulated_completion() {
        // A device losing data fragments at random needs, on average, its lost
        // count plus the table's extra in received parity: mean_fragments_needed
        // measures exactly that on independently simulated devices.
        let m = 200;
        let loss = 0.1;
        let table = OverheadTable::measure(m);
        let mean = mean_fragments_needed(m, loss, 120, 400, 3);
        let predicted = 1.0 + table.extra_for(20) / m as f64;
        assert!((mean - predicted).abs() < 0.004, "{mean} vs {predicted}");
    }

    #[test]
    #[ignore = "regenerates LARGE_M_OVERHEAD; run in release, takes minutes"]
    fn print_large_m_overhead() {
        let ms = [701, 1000, 1500, 2000];
        let means: Vec<f64> = OVERHEAD_GRID
            .iter()
            .map(|&k| {
                let sum: f64 = ms
                    .iter()
                    .map(|&m| measure_extra(&mut LineCache::new(m), k, 3000))
                    .sum();
                sum / ms.len() as f64
            })
            .collect();
        println!("{means:.3?}");
    }
}

//! The simulation's clock: real time multiplied by `time_scale`, continuing from where the last
//! run stopped so that times stored in the database (a campaign's next action, a device's last
//! uplink) never lie ahead of the clock after a restart.
//!
//! The clock is held back while something works for the simulation: the simulation's own loop
//! (advancing the world and waiting until its events are committed) and lorafleet, which counts
//! as busy from any call into the simulated network until [`LORAFLEET_GRACE`] after the last
//! one. Work therefore does not look `time_scale` times slower than it is; the clock runs at most
//! `time_scale` times faster than real time, and slower when the machine cannot keep up.
//!
//! A caller that will look at the network again at a known time (the FUOTA engine between two
//! steps) can also hold the clock there ([`SimClock::hold_at`]): the clock does not pass that
//! time before the caller's next word, however long the caller's work takes on a loaded
//! machine. Without it the world runs ahead of an engine whose step is late, and devices miss
//! deadlines that on a real network (where the engine is never `time_scale` times too slow)
//! they would meet.
//!
//! Every method has an `_at` twin taking the real instant, so the tests are exact.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Real time per busy span that still counts as simulated time.
const BUSY_ALLOWANCE: Duration = Duration::from_millis(2);
/// After lorafleet's last call into the simulated network it still counts as busy this long
/// (real time): a campaign step reads the clock, then the database, then queues downlinks, and
/// the gaps between its calls are its own processing time. Short against the engine's shortest
/// poll interval (50 ms), so an idle server does not stop the clock.
pub const LORAFLEET_GRACE: Duration = Duration::from_millis(15);
/// How often the simulation's loop looks at a clock that stands still while lorafleet or the
/// loop itself is busy (the span ends without a word; short against the 15 ms grace).
const BUSY_POLL: Duration = Duration::from_millis(2);
/// A hold whose caller has not spoken for this long (real time) since the clock reached it is
/// dropped: a caller that died (or a campaign stopped by a failing database) must not stop the
/// simulation for good. Far longer than an engine step takes even at 10,000 devices.
pub const HOLD_EXPIRY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct SimClock {
    start_sim: DateTime<Utc>,
    start_real: Instant,
    scale: f64,
    /// Simulated microseconds the clock was held back in total.
    held_us: AtomicI64,
    /// The latest time handed out (microseconds since the Unix epoch): holding back never
    /// makes the clock go backwards, it only stands still for a while.
    last_us: AtomicI64,
    busy: Mutex<Busy>,
    /// While busy, the clock shows at most this (microseconds since the Unix epoch): what it
    /// showed when the span began plus the allowance.
    cap_us: AtomicI64,
    holds: Mutex<Holds>,
    /// The earliest hold (microseconds since the Unix epoch; `i64::MAX`: none), read on every
    /// [`SimClock::now`] without the lock.
    hold_us: AtomicI64,
}

/// Callers' holds: the clock shows at most the earliest.
#[derive(Debug, Default)]
struct Holds {
    /// Caller -> the time it holds the clock at.
    at_us: HashMap<u64, i64>,
    /// When the clock first stood at the earliest hold (real time), for [`HOLD_EXPIRY`].
    reached: Option<Instant>,
}

/// Busy spans in progress; overlapping spans are held back once.
#[derive(Debug, Default)]
struct Busy {
    spans: usize,
    /// When the outermost span began.
    since: Option<Instant>,
    /// While lorafleet counts as busy (one of the spans): when that ends unless it calls again.
    lorafleet_until: Option<Instant>,
}

impl SimClock {
    /// Starts at `resume_from` when it is later than the wall clock (an accelerated run got
    /// ahead), else at the wall clock.
    pub fn new(scale: f64, resume_from: Option<DateTime<Utc>>) -> SimClock {
        let wall = Utc::now();
        SimClock {
            start_sim: resume_from.map_or(wall, |r| r.max(wall)),
            start_real: Instant::now(),
            scale,
            held_us: AtomicI64::new(0),
            last_us: AtomicI64::new(i64::MIN),
            busy: Mutex::new(Busy::default()),
            cap_us: AtomicI64::new(i64::MAX),
            holds: Mutex::new(Holds::default()),
            hold_us: AtomicI64::new(i64::MAX),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.now_at(Instant::now())
    }

    fn now_at(&self, real: Instant) -> DateTime<Utc> {
        self.expire(&mut self.busy(), real);
        let mut raw = self.raw_us(real);
        if raw > self.hold_us.load(Ordering::Acquire) {
            // May drop an expired hold, which holds back what the clock stood there.
            self.note_reached(real);
            raw = self.raw_us(real);
        }
        let t = raw
            .min(self.cap_us.load(Ordering::Acquire))
            .min(self.hold_us.load(Ordering::Acquire));
        let t = self.last_us.fetch_max(t, Ordering::Relaxed).max(t);
        DateTime::from_timestamp_micros(t).unwrap_or(self.start_sim)
    }

    /// Real time times the scale, minus what was held back.
    fn raw_us(&self, real: Instant) -> i64 {
        let elapsed = real
            .saturating_duration_since(self.start_real)
            .as_secs_f64();
        let raw =
            (elapsed * self.scale * 1e6).round() as i64 - self.held_us.load(Ordering::Acquire);
        self.start_sim.timestamp_micros().saturating_add(raw)
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    fn busy(&self) -> MutexGuard<'_, Busy> {
        // The counters stay consistent whatever panicked while the lock was held.
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `real` (real time) out of the clock's future advance.
    pub fn hold_back(&self, real: Duration) {
        let us = (real.as_secs_f64() * self.scale * 1e6).round() as i64;
        self.held_us.fetch_add(us, Ordering::AcqRel);
    }

    /// Starts a busy span: until the matching [`SimClock::busy_end`], real time does not
    /// count as simulated time (beyond a little).
    pub fn busy_begin(&self) {
        self.busy_begin_at(Instant::now());
    }

    fn busy_begin_at(&self, real: Instant) {
        let mut b = self.busy();
        self.expire(&mut b, real);
        self.begin_span(&mut b, real);
    }

    pub fn busy_end(&self) {
        self.busy_end_at(Instant::now());
    }

    fn busy_end_at(&self, real: Instant) {
        let mut b = self.busy();
        self.expire(&mut b, real);
        self.end_span(&mut b, real);
    }

    /// lorafleet called into the simulated network: it counts as busy from now until
    /// [`LORAFLEET_GRACE`] after its last call.
    pub fn lorafleet_called(&self) {
        self.lorafleet_called_at(Instant::now());
    }

    fn lorafleet_called_at(&self, real: Instant) {
        let mut b = self.busy();
        self.expire(&mut b, real);
        if b.lorafleet_until.is_none() {
            self.begin_span(&mut b, real);
        }
        b.lorafleet_until = Some(real + LORAFLEET_GRACE);
    }

    /// Ends lorafleet's span if its grace ran out before `real`, as of the moment it ran out.
    fn expire(&self, b: &mut Busy, real: Instant) {
        if let Some(until) = b.lorafleet_until.filter(|&u| u <= real) {
            b.lorafleet_until = None;
            self.end_span(b, until);
        }
    }

    fn begin_span(&self, b: &mut Busy, real: Instant) {
        if b.spans == 0 {
            b.since = Some(real);
            let allowance = (BUSY_ALLOWANCE.as_secs_f64() * self.scale * 1e6).round() as i64;
            let shown = self.raw_us(real).max(self.last_us.load(Ordering::Relaxed));
            self.cap_us
                .store(shown.saturating_add(allowance), Ordering::Release);
        }
        b.spans += 1;
    }

    fn end_span(&self, b: &mut Busy, real: Instant) {
        b.spans = b.spans.saturating_sub(1);
        if b.spans > 0 {
            return;
        }
        if let Some(since) = b.since.take() {
            let busy = real.saturating_duration_since(since);
            if busy > BUSY_ALLOWANCE {
                self.hold_back(busy - BUSY_ALLOWANCE);
            }
        }
        self.cap_us.store(i64::MAX, Ordering::Release);
    }

    fn holds(&self) -> MutexGuard<'_, Holds> {
        self.holds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `caller` will look again when the clock shows `at`: until it calls this again (with the
    /// next time, or `None` when it will not look again), the clock does not pass `at`. A hold
    /// in the past stops the clock where it is.
    pub fn hold_at(&self, caller: u64, at: Option<DateTime<Utc>>) {
        self.hold_at_real(caller, at.map(|t| t.timestamp_micros()), Instant::now());
    }

    fn hold_at_real(&self, caller: u64, at_us: Option<i64>, real: Instant) {
        let mut h = self.holds();
        let before = self.hold_us.load(Ordering::Acquire);
        match at_us {
            Some(at) => h.at_us.insert(caller, at),
            None => h.at_us.remove(&caller),
        };
        self.rehold(&mut h, before, real);
    }

    /// Publishes the earliest hold after a change; if the clock stood at the old one, the real
    /// time it stood there is held back, so it goes on from there instead of jumping.
    fn rehold(&self, h: &mut Holds, before: i64, real: Instant) {
        let after = h.at_us.values().copied().min().unwrap_or(i64::MAX);
        if after == before {
            return;
        }
        let excess = self.raw_us(real).saturating_sub(before);
        if excess > 0 {
            self.held_us.fetch_add(excess, Ordering::AcqRel);
        }
        h.reached = None;
        self.hold_us.store(after, Ordering::Release);
    }

    /// The clock stands at the earliest hold: drops the hold if it stood there too long.
    fn note_reached(&self, real: Instant) {
        let mut h = self.holds();
        let since = *h.reached.get_or_insert(real);
        if real.saturating_duration_since(since) < HOLD_EXPIRY {
            return;
        }
        let before = self.hold_us.load(Ordering::Acquire);
        let stale: Vec<u64> = h
            .at_us
            .iter()
            .filter(|(_, &at)| at <= before)
            .map(|(&k, _)| k)
            .collect();
        for k in &stale {
            h.at_us.remove(k);
        }
        tracing::warn!(
            callers = ?stale,
            "a hold on the simulated clock was not renewed for {} s; the clock runs on",
            HOLD_EXPIRY.as_secs()
        );
        self.rehold(&mut h, before, real);
    }

    /// The earliest hold, if any.
    pub fn earliest_hold(&self) -> Option<DateTime<Utc>> {
        let at = self.hold_us.load(Ordering::Acquire);
        (at != i64::MAX).then(|| DateTime::from_timestamp_micros(at))?
    }

    /// Real time until the clock shows `at` (zero if it already does). While the clock stands
    /// at a hold short of `at`, `Duration::MAX`: it moves only when the holder speaks (which
    /// wakes the simulation's loop), and a loop waiting the scaled difference would spin.
    pub fn real_until(&self, at: DateTime<Utc>) -> Duration {
        let now = self.now();
        let hold = self.hold_us.load(Ordering::Acquire);
        if at.timestamp_micros() > hold && now.timestamp_micros() >= hold {
            return Duration::MAX;
        }
        let wait = (at - now).to_std().unwrap_or_default().div_f64(self.scale);
        if wait.is_zero() || at.timestamp_micros() <= self.cap_us.load(Ordering::Acquire) {
            return wait;
        }
        // Standing still while someone works: look again in a while instead of spinning.
        if now.timestamp_micros() >= self.cap_us.load(Ordering::Acquire) {
            return wait.max(BUSY_POLL);
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    const MS: Duration = Duration::from_millis(1);

    fn sim_ms(c: &SimClock, real: Instant) -> i64 {
        c.now_at(real).timestamp_millis()
    }

    #[test]
    fn runs_faster_by_the_scale_and_resumes_ahead() {
        let ahead = Utc::now() + TimeDelta::hours(5);
        let c = SimClock::new(1000.0, Some(ahead));
        let t0 = c.start_real;
        let first = sim_ms(&c, t0);
        assert_eq!(sim_ms(&c, t0 + 20 * MS) - first, 20_000);
        assert!(c.now() >= ahead);
        let behind = Utc::now() - TimeDelta::hours(5);
        assert!(SimClock::new(1.0, Some(behind)).now() > behind + TimeDelta::hours(4));
        let wait = c.real_until(c.now() + TimeDelta::seconds(10));
        assert!(wait <= Duration::from_millis(10), "{wait:?}");
    }

    #[test]
    fn overlapping_busy_spans_are_held_back_once() {
        let c = SimClock::new(1000.0, None);
        let t0 = c.start_real;
        c.busy_begin_at(t0);
        let frozen = sim_ms(&c, t0);
        c.busy_begin_at(t0 + 5 * MS);
        assert_eq!(
            sim_ms(&c, t0 + 20 * MS),
            frozen + 2_000,
            "stands still after the allowance"
        );
        c.busy_end_at(t0 + 20 * MS);
        assert_eq!(c.held_us.load(Ordering::Relaxed), 0, "still busy");
        c.busy_end_at(t0 + 30 * MS);
        assert_eq!(
            c.held_us.load(Ordering::Relaxed),
            28_000_000,
            "30 ms less the allowance"
        );
        assert_eq!(sim_ms(&c, t0 + 40 * MS), frozen + 12_000, "runs again");
    }

    #[test]
    fn holding_back_stops_the_clock_without_going_backwards() {
        let c = SimClock::new(1000.0, None);
        let t0 = c.start_real;
        let before = c.now_at(t0 + 5 * MS);
        c.hold_back(Duration::from_secs(10));
        assert_eq!(c.now_at(t0 + 5 * MS), before, "stands still");
        assert_eq!(
            c.now_at(t0 + 10 * MS),
            before,
            "still catching up with the hold-back"
        );
    }

    #[test]
    fn lorafleet_counts_as_busy_until_a_grace_after_its_last_call() {
        let c = SimClock::new(1000.0, None);
        let t0 = c.start_real;
        let start = sim_ms(&c, t0);
        // A step: calls 10 ms apart for 40 ms hold the clock throughout.
        for k in 0..5 {
            c.lorafleet_called_at(t0 + k * 10 * MS);
        }
        assert_eq!(
            sim_ms(&c, t0 + 45 * MS),
            start + 2_000,
            "held during the step"
        );
        // The span ends at the last call plus the grace, not when someone next looks.
        let end = t0 + 40 * MS + LORAFLEET_GRACE;
        let later = end + 30 * MS;
        let held = (end - t0 - BUSY_ALLOWANCE).as_micros() as i64 * 1000;
        assert_eq!(
            sim_ms(&c, later),
            start + 2_000 + 30_000,
            "runs again after the grace"
        );
        assert_eq!(c.held_us.load(Ordering::Relaxed), held);
        assert!(c.busy().lorafleet_until.is_none());
    }

    #[test]
    fn a_call_after_the_grace_starts_a_new_span() {
        let c = SimClock::new(1000.0, None);
        let t0 = c.start_real;
        c.lorafleet_called_at(t0);
        let second = t0 + LORAFLEET_GRACE + 100 * MS;
        c.lorafleet_called_at(second);
        let first_held = (LORAFLEET_GRACE - BUSY_ALLOWANCE).as_micros() as i64 * 1000;
        assert_eq!(
            c.held_us.load(Ordering::Relaxed),
            first_held,
            "the gap ran freely"
        );
        let shown = sim_ms(&c, second);
        assert_eq!(sim_ms(&c, second + 10 * MS), shown + 2_000);
        // The simulation's loop overlapping lorafleet's span: held back once.
        c.busy_begin_at(second + 5 * MS);
        c.busy_end_at(second + 50 * MS);
        assert_eq!(
            c.busy().spans,
            0,
            "lorafleet's grace ran out inside the loop's span"
        );
        let second_held = (50 * MS - BUSY_ALLOWANCE).as_micros() as i64 * 1000;
        assert_eq!(c.held_us.load(Ordering::Relaxed), first_held + second_held);
    }

    #[test]
    fn a_hold_stops_the_clock_until_its_caller_speaks_again() {
        let c = SimClock::new(1000.0, None);
        let t0 = c.start_real;
        let start = c.now_at(t0).timestamp_micros();
        // Caller 7 looks again 10 s (simulated) from now: 10 ms real.
        c.hold_at_real(7, Some(start + 10_000_000), t0);
        assert_eq!(
            sim_ms(&c, t0 + 5 * MS) - start / 1000,
            5_000,
            "runs up to it"
        );
        assert_eq!(
            sim_ms(&c, t0 + 500 * MS) - start / 1000,
            10_000,
            "stands at it"
        );
        // A later hold by another caller changes nothing; the earliest counts.
        c.hold_at_real(8, Some(start + 60_000_000), t0 + 500 * MS);
        assert_eq!(sim_ms(&c, t0 + 600 * MS) - start / 1000, 10_000);
        // Caller 7 speaks again (its step is done) 600 ms real later: the clock goes on from
        // the hold, not from where it would have been.
        c.hold_at_real(7, None, t0 + 600 * MS);
        assert_eq!(sim_ms(&c, t0 + 610 * MS) - start / 1000, 20_000);
        assert_eq!(
            sim_ms(&c, t0 + 700 * MS) - start / 1000,
            60_000,
            "caller 8's hold"
        );
        c.hold_at_real(8, None, t0 + 700 * MS);
        assert_eq!(sim_ms(&c, t0 + 701 * MS) - start / 1000, 61_000);
    }

    #[test]
    fn a_hold_nobody_renews_expires() {
        let c = SimClock::new(1000.0, None);
        let t0 = c.start_real;
        let start = c.now_at(t0).timestamp_micros();
        c.hold_at_real(1, Some(start), t0);
        assert_eq!(c.now_at(t0 + MS).timestamp_micros(), start, "reached");
        let expired = t0 + MS + HOLD_EXPIRY;
        assert_eq!(c.now_at(expired).timestamp_micros(), start, "dropped here");
        assert_eq!(
            sim_ms(&c, expired + 3 * MS) - start / 1000,
            3_000,
            "runs on from the hold"
        );
        assert!(c.holds().at_us.is_empty());
    }

    /// A loop waiting for a timer behind the hold does not spin: it waits to be woken.
    #[test]
    fn nothing_is_due_behind_a_hold_the_clock_stands_at() {
        let c = SimClock::new(1000.0, None);
        let now = c.now();
        c.hold_at(3, Some(now));
        let later = now + chrono::TimeDelta::seconds(1);
        assert_eq!(c.real_until(later), Duration::MAX);
        c.hold_at(3, None);
        assert!(c.real_until(later) <= Duration::from_millis(1));
    }
}

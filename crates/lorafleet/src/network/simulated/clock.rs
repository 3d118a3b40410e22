//! The simulation's clock: real time multiplied by `time_scale`, continuing from where the last
//! run stopped so that times stored in the database (a campaign's next action, a device's last
//! uplink) never lie ahead of the clock after a restart. When the simulation is busy the clock
//! is held back, so it runs at most `time_scale` times faster than real time, and slower when
//! the machine cannot keep up.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

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
    /// Busy spans in progress (the simulation's loop, lorafleet's engine) and when the
    /// outermost began: overlapping spans are held back once.
    busy: Mutex<(usize, Option<Instant>)>,
    /// While busy, the clock shows at most this (microseconds since the Unix epoch): what it
    /// showed when the span began plus the allowance.
    cap_us: AtomicI64,
}

/// Real time per busy span that still counts as simulated time.
const BUSY_ALLOWANCE: Duration = Duration::from_millis(2);

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
            busy: Mutex::new((0, None)),
            cap_us: AtomicI64::new(i64::MAX),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let t = self.raw_us().min(self.cap_us.load(Ordering::Acquire));
        let t = self.last_us.fetch_max(t, Ordering::Relaxed).max(t);
        DateTime::from_timestamp_micros(t).unwrap_or(self.start_sim)
    }

    /// Real time times the scale, minus what was held back.
    fn raw_us(&self) -> i64 {
        let real = self.start_real.elapsed().as_secs_f64();
        let raw = (real * self.scale * 1e6) as i64 - self.held_us.load(Ordering::Acquire);
        self.start_sim.timestamp_micros().saturating_add(raw)
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Takes `real` (real time) out of the clock's future advance.
    pub fn hold_back(&self, real: Duration) {
        let us = (real.as_secs_f64() * self.scale * 1e6) as i64;
        self.held_us.fetch_add(us, Ordering::AcqRel);
    }

    /// Starts a busy span: until the matching [`SimClock::busy_end`], real time does not
    /// count as simulated time (beyond a little), so work done for the simulation, or by the
    /// server it serves, does not look `time_scale` times slower than it is.
    pub fn busy_begin(&self) {
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if b.0 == 0 {
            b.1 = Some(Instant::now());
            let allowance = (BUSY_ALLOWANCE.as_secs_f64() * self.scale * 1e6) as i64;
            let shown = self.raw_us().max(self.last_us.load(Ordering::Relaxed));
            self.cap_us
                .store(shown.saturating_add(allowance), Ordering::Release);
        }
        b.0 += 1;
    }

    pub fn busy_end(&self) {
        let mut b = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        b.0 = b.0.saturating_sub(1);
        if b.0 == 0 {
            if let Some(since) = b.1.take() {
                let busy = since.elapsed();
                if busy > BUSY_ALLOWANCE {
                    self.hold_back(busy - BUSY_ALLOWANCE);
                }
            }
            self.cap_us.store(i64::MAX, Ordering::Release);
        }
    }

    /// Real time until the clock shows `at` (zero if it already does).
    pub fn real_until(&self, at: DateTime<Utc>) -> Duration {
        (at - self.now())
            .to_std()
            .unwrap_or_default()
            .div_f64(self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn runs_faster_by_the_scale_and_resumes_ahead() {
        let ahead = Utc::now() + TimeDelta::hours(5);
        let c = SimClock::new(1000.0, Some(ahead));
        assert!(c.now() >= ahead);
        let t0 = c.now();
        std::thread::sleep(Duration::from_millis(20));
        let sim = (c.now() - t0).num_milliseconds();
        assert!(sim >= 20_000, "{sim}");
        let behind = Utc::now() - TimeDelta::hours(5);
        assert!(SimClock::new(1.0, Some(behind)).now() > behind + TimeDelta::hours(4));
        let wait = c.real_until(c.now() + TimeDelta::seconds(10));
        assert!(wait <= Duration::from_millis(10), "{wait:?}");
    }

    #[test]
    fn overlapping_busy_spans_are_held_back_once() {
        let c = SimClock::new(1000.0, None);
        c.busy_begin();
        let frozen = c.now();
        c.busy_begin();
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            c.now() <= frozen + chrono::TimeDelta::seconds(2),
            "stands (nearly) still while busy"
        );
        c.busy_end();
        assert_eq!(c.held_us.load(Ordering::Relaxed), 0, "still busy");
        c.busy_end();
        let held = c.held_us.load(Ordering::Relaxed);
        assert!((18_000_000..40_000_000).contains(&held), "{held}");
    }

    #[test]
    fn holding_back_stops_the_clock_without_going_backwards() {
        let c = SimClock::new(1000.0, None);
        std::thread::sleep(Duration::from_millis(5));
        let before = c.now();
        c.hold_back(Duration::from_secs(10));
        let after = c.now();
        assert_eq!(after, before, "stands still");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), before, "still catching up with the hold-back");
    }
}

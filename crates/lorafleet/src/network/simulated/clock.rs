//! The simulation's clock: real time multiplied by `time_scale`, continuing from where the last
//! run stopped so that times stored in the database (a campaign's next action, a device's last
//! uplink) never lie ahead of the clock after a restart.

use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Clone)]
pub struct SimClock {
    start_sim: DateTime<Utc>,
    start_real: Instant,
    scale: f64,
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
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let real = self.start_real.elapsed().as_secs_f64();
        let sim_us = (real * self.scale * 1e6) as i64;
        self.start_sim + TimeDelta::microseconds(sim_us)
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Real time until the clock shows `at` (zero if it already does).
    pub fn real_until(&self, at: DateTime<Utc>) -> std::time::Duration {
        (at - self.now())
            .to_std()
            .unwrap_or_default()
            .div_f64(self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_faster_by_the_scale_and_resumes_ahead() {
        let ahead = Utc::now() + TimeDelta::hours(5);
        let c = SimClock::new(1000.0, Some(ahead));
        assert!(c.now() >= ahead);
        let t0 = c.now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let sim = (c.now() - t0).num_milliseconds();
        assert!(sim >= 20_000, "{sim}");
        let behind = Utc::now() - TimeDelta::hours(5);
        assert!(SimClock::new(1.0, Some(behind)).now() > behind + TimeDelta::hours(4));
        let wait = c.real_until(c.now() + TimeDelta::seconds(10));
        assert!(wait <= std::time::Duration::from_millis(10), "{wait:?}");
    }
}

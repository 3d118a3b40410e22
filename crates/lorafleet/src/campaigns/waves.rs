//! Waves (issue 10 item 6): a campaign rolled out to growing shares of its devices, one
//! multicast session per wave, the next wave only after the previous one met the success
//! threshold, and a pause for the operator when it did not.
//!
//! How it maps onto the drivers: the runner hands the driver only the current wave's devices
//! ([`crate::campaigns::runner::load`]) and, when the driver reports the wave's session over,
//! clears the driver's state so that the next wave is a fresh `start` (a new multicast group
//! and session, on the engine). The engine is the only driver that does this today: the
//! ChirpStack FUOTA services would need one deployment per wave, with keys kept across them,
//! so a `rollout` is refused at draft for them, naming the driver.
//!
//! A multicast session carries one TS004 version and FPort (`lorafleet_engine::sessions`), so
//! a mixed fleet (issue 8 item 6) runs each operator wave as one wave per session group, in
//! sequence, each share taken of every group ([`split_by_session`]: a 5 % canary holds devices
//! of every stack, not only of the first in DevEUI order); a campaign without rollout whose
//! devices need several sessions runs them as the waves of one implicit 100 % wave
//! (`Rollout::whole_fleet`, thresholds that never pause). The thresholds are judged per wave,
//! that is per session: its devices share a stack, and a stack that fails its session stops
//! the rollout before the next session starts.
//!
//! This file is the pure part: the request's checks, the split of the devices into waves and
//! the decision after a wave. What is stored lives in `storage::campaigns::waves`.

use lorafleet_engine::sessions::Session;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::validate::FieldErrors;
use super::{DriverKind, Stage};

// The stored shapes live next to their queries; these are the names the server knows them by.
pub use crate::storage::campaigns::waves::{Rollout, WaveDto, WaveRun, WaveSession, WaveState};

/// `rollout` as the operator sends it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// Cumulative shares of the campaign's devices, increasing, the last 100.
    pub waves: Option<Vec<WaveRequest>>,
    /// Share of a wave's devices that must be updated for the next wave to start (0..=1,
    /// default 0.9).
    pub success_threshold: Option<f64>,
    /// Share of a wave's devices that may fail before the campaign pauses (0..=1, default 0.2).
    pub error_threshold: Option<f64>,
    /// Seconds on the network's clock (simulated seconds on a simulated network) to wait
    /// between a successful wave and the next (default 0).
    pub pause_between_s: Option<u64>,
}

/// One wave as the operator sends it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaveRequest {
    /// Cumulative percentage of the campaign's devices reached once this wave is done.
    pub percent: Option<f64>,
}

pub const DEFAULT_SUCCESS_THRESHOLD: f64 = 0.9;
pub const DEFAULT_ERROR_THRESHOLD: f64 = 0.2;

/// Checks `rollout`; problems are added to `errors` under `rollout.*` and give `None`.
pub fn check(
    req: Option<&RolloutRequest>,
    driver: DriverKind,
    errors: &mut FieldErrors,
) -> Option<Rollout> {
    let req = req?;
    let before = errors.0.len();
    if driver != DriverKind::Engine {
        errors.add(
            "rollout",
            format!(
                "driver {driver} cannot run waves (it carries a campaign as one deployment); use the engine driver or leave rollout out"
            ),
        );
    }
    let percents = check_waves(req.waves.as_deref(), errors);
    let threshold = |errors: &mut FieldErrors, name: &str, v: Option<f64>, default: f64| {
        let v = v.unwrap_or(default);
        if !(0.0..=1.0).contains(&v) {
            errors.add(
                format!("rollout.{name}"),
                format!("rollout.{name} must be between 0 and 1, got {v}"),
            );
        }
        v
    };
    let success_threshold = threshold(
        errors,
        "success_threshold",
        req.success_threshold,
        DEFAULT_SUCCESS_THRESHOLD,
    );
    let error_threshold = threshold(
        errors,
        "error_threshold",
        req.error_threshold,
        DEFAULT_ERROR_THRESHOLD,
    );
    (errors.0.len() == before).then(|| Rollout {
        waves: percents,
        success_threshold,
        error_threshold,
        pause_between_s: req.pause_between_s.unwrap_or(0),
    })
}

fn check_waves(waves: Option<&[WaveRequest]>, errors: &mut FieldErrors) -> Vec<f64> {
    let Some(waves) = waves.filter(|w| !w.is_empty()) else {
        errors.add(
            "rollout.waves",
            "rollout.waves must list at least one wave, e.g. [{\"percent\": 10}, {\"percent\": 100}]",
        );
        return Vec::new();
    };
    let mut out = Vec::with_capacity(waves.len());
    let mut previous = 0.0;
    for (i, w) in waves.iter().enumerate() {
        let field = format!("rollout.waves[{i}].percent");
        let Some(p) = w.percent else {
            errors.add(&field, format!("{field} is missing"));
            continue;
        };
        if !(p > 0.0 && p <= 100.0) {
            errors.add(
                &field,
                format!("{field} must be above 0 and at most 100, got {p}"),
            );
        } else if p <= previous {
            errors.add(
                &field,
                format!("{field} must be above the previous wave's {previous} (shares are cumulative), got {p}"),
            );
        }
        previous = previous.max(p);
        out.push(p);
    }
    if let Some(&last) = out.last() {
        // Above 100 was already named as out of range.
        if last > 0.0 && last < 100.0 {
            let field = format!("rollout.waves[{}].percent", out.len() - 1);
            errors.add(
                &field,
                format!("{field} must be 100: the last wave reaches every device, got {last}"),
            );
        }
    }
    out
}

/// How many devices each wave has of its own, for `n` devices: wave i reaches the first
/// ceil(n x percent / 100) devices (so a small first share still holds a device), and a wave
/// that reaches no more devices than the previous one is empty.
pub fn split(n: usize, percents: &[f64]) -> Vec<usize> {
    let mut reached = 0usize;
    percents
        .iter()
        .map(|p| {
            // The small subtraction keeps 10 % of 10 devices at 1, not 2, after rounding.
            let cumulative = ((n as f64) * p / 100.0 - 1e-9).ceil().max(0.0) as usize;
            let cumulative = cumulative.min(n).max(reached);
            let own = cumulative - reached;
            reached = cumulative;
            own
        })
        .collect()
}

/// Each device's wave (0-based), in the given (stored, deterministic) device order.
pub fn assign<'a>(devices: &'a [String], percents: &[f64]) -> Vec<(&'a str, usize)> {
    let mut out = Vec::with_capacity(devices.len());
    let mut it = devices.iter();
    for (wave, own) in split(devices.len(), percents).into_iter().enumerate() {
        for d in it.by_ref().take(own) {
            out.push((d.as_str(), wave));
        }
    }
    out
}

/// The waves as run, for devices in their stored order, `group[i]` the session group
/// (an index into `sessions`, as `lorafleet_engine::sessions::groups` gives them) of device i:
/// each operator wave is one wave per group that has devices in it, the groups in their order,
/// each group's share cut by [`split`] on its own devices. An operator wave without any device
/// stays one (empty, to be skipped) wave. Returns the waves and each device's wave.
pub fn split_by_session<'a>(
    devices: &'a [String],
    group: &[usize],
    sessions: &[Session],
    percents: &[f64],
) -> (Vec<WaveSession>, Vec<(&'a str, usize)>) {
    let members: Vec<Vec<&'a str>> = (0..sessions.len())
        .map(|g| {
            devices
                .iter()
                .zip(group)
                .filter(|(_, of)| **of == g)
                .map(|(d, _)| d.as_str())
                .collect()
        })
        .collect();
    let shares: Vec<Vec<usize>> = members.iter().map(|m| split(m.len(), percents)).collect();
    let mut taken = vec![0usize; sessions.len()];
    let (mut waves, mut assigned) = (Vec::new(), Vec::with_capacity(devices.len()));
    for (of, _) in percents.iter().enumerate() {
        let before = waves.len();
        for (g, session) in sessions.iter().enumerate() {
            let own = shares[g][of];
            if own == 0 {
                continue;
            }
            let wave = waves.len();
            waves.push(WaveSession {
                of,
                session: *session,
            });
            for d in &members[g][taken[g]..taken[g] + own] {
                assigned.push((*d, wave));
            }
            taken[g] += own;
        }
        if waves.len() == before {
            if let Some(first) = sessions.first() {
                waves.push(WaveSession {
                    of,
                    session: *first,
                });
            }
        }
    }
    (waves, assigned)
}

/// What the runner does once a wave's session is over.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The wave met the success threshold: start wave `next` (after the pause).
    Next { next: usize },
    /// The wave met the threshold and was the last: the campaign ends.
    Done,
    /// The last wave did not meet the threshold: the campaign ends (with failures).
    DoneFailed,
    /// The operator decides: resume (the next wave) or cancel.
    Pause { reason: String },
}

/// A wave's outcome from its devices' stages.
pub fn decide(rollout: &Rollout, wave: usize, next: Option<usize>, stages: &[Stage]) -> Decision {
    decide_as(rollout, &format!("wave {}", wave + 1), next, stages)
}

/// [`decide`], the pause reason naming the wave as `label` ("wave 2 (TS004 v2 on FPort 201)").
pub fn decide_as(
    rollout: &Rollout,
    label: &str,
    next: Option<usize>,
    stages: &[Stage],
) -> Decision {
    let total = stages.len();
    let updated = stages.iter().filter(|s| **s == Stage::Completed).count();
    let failed = total - updated;
    let share = |k: usize| {
        if total == 0 {
            1.0
        } else {
            k as f64 / total as f64
        }
    };
    let met = total == 0 || share(updated) >= rollout.success_threshold;
    match (met, next) {
        (true, Some(next)) => Decision::Next { next },
        (true, None) => Decision::Done,
        (false, None) => Decision::DoneFailed,
        (false, Some(_)) => {
            let pct = |x: f64| (x * 100.0).round();
            let reason = if share(failed) > rollout.error_threshold {
                format!(
                    "{label}: {failed} of {total} devices failed ({} % > {} %)",
                    pct(share(failed)),
                    pct(rollout.error_threshold)
                )
            } else {
                format!(
                    "{label}: {updated} of {total} devices updated ({} % < {} %)",
                    pct(share(updated)),
                    pct(rollout.success_threshold)
                )
            };
            Decision::Pause { reason }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(percents: &[f64]) -> RolloutRequest {
        RolloutRequest {
            waves: Some(
                percents
                    .iter()
                    .map(|p| WaveRequest { percent: Some(*p) })
                    .collect(),
            ),
            ..RolloutRequest::default()
        }
    }

    fn fields(r: &RolloutRequest, driver: DriverKind) -> Vec<String> {
        let mut e = FieldErrors::default();
        let out = check(Some(r), driver, &mut e);
        assert_eq!(out.is_some(), e.is_empty());
        e.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_good_rollout_takes_the_defaults() {
        let mut e = FieldErrors::default();
        let r = check(Some(&req(&[5.0, 25.0, 100.0])), DriverKind::Engine, &mut e).unwrap();
        assert_eq!(r.waves, vec![5.0, 25.0, 100.0]);
        assert_eq!(r.success_threshold, 0.9);
        assert_eq!(r.error_threshold, 0.2);
        assert_eq!(r.pause_between_s, 0);
        assert!(check(None, DriverKind::ChirpstackV4, &mut e).is_none());
        assert!(e.is_empty());
    }

    #[test]
    fn bad_rollouts_name_their_field() {
        let e = DriverKind::Engine;
        assert_eq!(fields(&req(&[]), e), ["rollout.waves"]);
        assert_eq!(
            fields(&req(&[50.0, 40.0, 100.0]), e),
            ["rollout.waves[1].percent"]
        );
        assert_eq!(
            fields(&req(&[50.0, 50.0, 100.0]), e),
            ["rollout.waves[1].percent"]
        );
        assert_eq!(fields(&req(&[10.0, 90.0]), e), ["rollout.waves[1].percent"]);
        assert_eq!(fields(&req(&[0.0, 100.0]), e), ["rollout.waves[0].percent"]);
        assert_eq!(
            fields(&req(&[10.0, 120.0]), e),
            ["rollout.waves[1].percent"]
        );
        let mut r = req(&[100.0]);
        r.success_threshold = Some(1.5);
        r.error_threshold = Some(-0.1);
        assert_eq!(
            fields(&r, e),
            ["rollout.success_threshold", "rollout.error_threshold"]
        );
        assert_eq!(
            fields(&req(&[100.0]), DriverKind::ChirpstackV4),
            ["rollout"]
        );
        let mut errors = FieldErrors::default();
        check(Some(&req(&[100.0])), DriverKind::FuotaServerV3, &mut errors);
        assert!(errors.0[0].error.contains("fuota-server-v3"), "{errors:?}");
    }

    #[test]
    fn the_split_is_cumulative_and_a_small_first_share_holds_a_device() {
        assert_eq!(split(10, &[5.0, 25.0, 100.0]), [1, 2, 7]);
        assert_eq!(split(10, &[10.0, 100.0]), [1, 9]);
        assert_eq!(split(100, &[5.0, 25.0, 100.0]), [5, 20, 75]);
        assert_eq!(split(3, &[5.0, 25.0, 100.0]), [1, 0, 2]);
        assert_eq!(split(1, &[50.0, 100.0]), [1, 0]);
        assert_eq!(split(0, &[50.0, 100.0]), [0, 0]);
        assert_eq!(split(7, &[100.0]), [7]);
        let devices: Vec<String> = (1..=4).map(|i| format!("d{i}")).collect();
        assert_eq!(
            assign(&devices, &[25.0, 50.0, 100.0]),
            [("d1", 0), ("d2", 1), ("d3", 2), ("d4", 2)]
        );
    }

    fn session(version: u8) -> Session {
        Session {
            fragmentation: lorafleet_engine::packages::Versioned {
                version,
                f_port: 201,
            },
        }
    }

    #[test]
    fn one_session_group_splits_as_the_rollout_says() {
        let devices: Vec<String> = (1..=4).map(|i| format!("d{i}")).collect();
        let (waves, assigned) =
            split_by_session(&devices, &[0; 4], &[session(1)], &[25.0, 50.0, 100.0]);
        assert_eq!(assigned, assign(&devices, &[25.0, 50.0, 100.0]));
        let of: Vec<usize> = waves.iter().map(|w| w.of).collect();
        assert_eq!(of, [0, 1, 2]);
        // An empty operator wave stays, to be skipped.
        let (waves, _) =
            split_by_session(&devices[..3], &[0; 3], &[session(1)], &[5.0, 25.0, 100.0]);
        assert_eq!(waves.len(), 3);
    }

    #[test]
    fn a_mixed_fleet_runs_each_operator_wave_as_one_wave_per_session() {
        // Twenty devices, every fourth a v2 one: 15 in the v1 group (first), 5 in the v2 one.
        let devices: Vec<String> = (0..20).map(|i| format!("d{i:02}")).collect();
        let group: Vec<usize> = (0..20).map(|i| usize::from(i % 4 == 3)).collect();
        let sessions = [session(1), session(2)];
        let (waves, assigned) = split_by_session(&devices, &group, &sessions, &[5.0, 100.0]);
        assert_eq!(
            waves,
            [
                WaveSession {
                    of: 0,
                    session: session(1)
                },
                WaveSession {
                    of: 0,
                    session: session(2)
                },
                WaveSession {
                    of: 1,
                    session: session(1)
                },
                WaveSession {
                    of: 1,
                    session: session(2)
                },
            ]
        );
        let of_wave = |w: usize| -> Vec<&str> {
            assigned
                .iter()
                .filter(|(_, x)| *x == w)
                .map(|(d, _)| *d)
                .collect()
        };
        // The canary: 5 % of each group (at least one device of each stack).
        assert_eq!(of_wave(0), ["d00"]);
        assert_eq!(of_wave(1), ["d03"]);
        assert_eq!(of_wave(2).len(), 14);
        assert_eq!(of_wave(3), ["d07", "d11", "d15", "d19"]);
        // Every device in exactly one wave, whose session is its group's.
        assert_eq!(assigned.len(), 20);
        for (d, w) in &assigned {
            let i = devices.iter().position(|x| x == d).unwrap();
            assert_eq!(waves[*w].session, sessions[group[i]], "{d}");
        }
        // Without a rollout: one implicit wave, one session each.
        let (waves, assigned) = split_by_session(&devices, &group, &sessions, &[100.0]);
        assert_eq!(waves.len(), 2);
        assert_eq!(assigned.iter().filter(|(_, w)| *w == 1).count(), 5);
    }

    #[test]
    fn the_whole_fleet_rollout_never_pauses() {
        let r = Rollout::whole_fleet();
        let failed = vec![Stage::Failed; 3];
        assert_eq!(decide(&r, 0, Some(1), &failed), Decision::Next { next: 1 });
        assert_eq!(decide(&r, 1, None, &failed), Decision::Done);
    }

    #[test]
    fn the_thresholds_decide_next_pause_or_done() {
        let r = Rollout {
            waves: vec![10.0, 50.0, 100.0],
            success_threshold: 0.9,
            error_threshold: 0.2,
            pause_between_s: 0,
        };
        let stages = |ok: usize, failed: usize| {
            let mut v = vec![Stage::Completed; ok];
            v.extend(vec![Stage::Failed; failed]);
            v
        };
        assert_eq!(
            decide(&r, 0, Some(1), &stages(9, 1)),
            Decision::Next { next: 1 }
        );
        assert_eq!(
            decide(&r, 1, Some(2), &stages(7, 3)),
            Decision::Pause {
                reason: "wave 2: 3 of 10 devices failed (30 % > 20 %)".into()
            }
        );
        // Under the success threshold but within the error threshold: still the operator's call.
        assert_eq!(
            decide(&r, 0, Some(1), &stages(17, 3)),
            Decision::Pause {
                reason: "wave 1: 17 of 20 devices updated (85 % < 90 %)".into()
            }
        );
        assert_eq!(decide(&r, 2, None, &stages(10, 0)), Decision::Done);
        assert_eq!(decide(&r, 2, None, &stages(1, 9)), Decision::DoneFailed);
        assert_eq!(decide(&r, 0, Some(1), &[]), Decision::Next { next: 1 });
    }
}

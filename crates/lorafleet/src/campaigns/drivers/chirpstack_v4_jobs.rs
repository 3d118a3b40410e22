//! What ChirpStack's job list says about a FUOTA deployment, read the way ChirpStack runs it.
//!
//! ChirpStack (>= 4.12) carries a deployment as a chain of jobs (`CREATE_MC_GROUP`,
//! `ADD_DEVS_TO_MC_GROUP`, `ADD_GWS_TO_MC_GROUP`, `MC_GROUP_SETUP`, `FRAG_SESSION_SETUP`,
//! `MC_SESSION`, `ENQUEUE`, `FRAG_STATUS`, `DELETE_MC_GROUP`, `COMPLETE`): creating the next
//! job completes the current one, and only `COMPLETE` ends the chain with the deployment marked
//! completed. Three things follow, each seen against a real ChirpStack 4.19:
//! - A job that errors (`Device-profile does not support TS005`) is retried once its attempts
//!   allow, then completed *without a successor*: the deployment has stopped for good, though
//!   ChirpStack never marks it completed. That is a failure, with ChirpStack's message.
//! - A job is created long before it runs (`ENQUEUE` waits for the session start,
//!   `FRAG_STATUS` for the session end): a device has reached a step only once ChirpStack has
//!   *attempted* that step's job, never because the job exists.
//! - A job whose run time has long passed without an attempt is stalled: ChirpStack is no
//!   longer carrying the deployment.

use chirpstack_api::api;
use chrono::{DateTime, Duration, Utc};

use crate::campaigns::Stage;
use crate::timestamp::to_utc;

/// The job that ends a deployment properly: it marks the deployment completed.
const COMPLETE: &str = "COMPLETE";

/// The deployment's steps that move devices, in ChirpStack's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Nothing has been sent to the devices yet (the multicast group is being made).
    Preparing,
    McGroupSetup,
    FragSessionSetup,
    McSession,
    /// ChirpStack has enqueued the fragments on the multicast group: they are on air.
    Enqueue,
    FragStatus,
    /// `DELETE_MC_GROUP` or `COMPLETE`: the session is over.
    Finishing,
}

impl Step {
    fn of(job: &str) -> Option<Step> {
        Some(match job.to_ascii_uppercase().as_str() {
            "CREATE_MC_GROUP" | "ADD_DEVS_TO_MC_GROUP" | "ADD_GWS_TO_MC_GROUP" => Step::Preparing,
            "MC_GROUP_SETUP" => Step::McGroupSetup,
            "FRAG_SESSION_SETUP" => Step::FragSessionSetup,
            "MC_SESSION" => Step::McSession,
            "ENQUEUE" => Step::Enqueue,
            "FRAG_STATUS" => Step::FragStatus,
            "DELETE_MC_GROUP" | COMPLETE => Step::Finishing,
            _ => return None,
        })
    }
}

/// Whether ChirpStack has run a job at least once (completion implies an attempt).
fn attempted(j: &api::FuotaDeploymentJob) -> bool {
    j.attempt_count > 0 || j.completed_at.is_some()
}

/// The furthest step ChirpStack has actually attempted.
pub fn step_reached(jobs: &[api::FuotaDeploymentJob]) -> Step {
    jobs.iter()
        .filter(|j| attempted(j))
        .filter_map(|j| Step::of(&j.job))
        .max()
        .unwrap_or(Step::Preparing)
}

/// How a deployment that ChirpStack has not marked completed is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Running,
    /// ChirpStack ended the job chain without completing the deployment.
    Stopped(String),
    /// The current job should have run long ago and has not.
    Stalled(String),
}

/// The job ChirpStack is on: the newest one (jobs are created one after the other).
fn current(jobs: &[api::FuotaDeploymentJob]) -> Option<&api::FuotaDeploymentJob> {
    jobs.iter()
        .enumerate()
        .max_by_key(|(i, j)| (to_utc(j.created_at.as_ref()), *i))
        .map(|(_, j)| j)
}

/// ChirpStack's message for a job, without its "Error: " prefix.
fn message_of(j: &api::FuotaDeploymentJob) -> Option<String> {
    let m = j.error_msg.trim();
    (!m.is_empty()).then(|| m.strip_prefix("Error: ").unwrap_or(m).to_string())
}

/// Reads a deployment's job list; `stall_after` is how long past its run time a job that has
/// not been attempted again counts as stalled.
pub fn verdict(
    jobs: &[api::FuotaDeploymentJob],
    now: DateTime<Utc>,
    stall_after: Duration,
) -> Verdict {
    let Some(job) = current(jobs) else {
        return Verdict::Running;
    };
    if job.completed_at.is_some() {
        if job.job.eq_ignore_ascii_case(COMPLETE) {
            return Verdict::Running;
        }
        // The last error of the chain is why it stopped (an earlier job may have said it).
        let why = message_of(job)
            .or_else(|| jobs.iter().rev().find_map(message_of))
            .unwrap_or_else(|| "no reason given".into());
        return Verdict::Stopped(format!(
            "ChirpStack stopped the deployment at job {}: {why}",
            job.job
        ));
    }
    match to_utc(job.scheduler_run_after.as_ref()) {
        Some(due) if now - due > stall_after => {
            let mut why = format!(
                "ChirpStack has not run job {} since it was due at {} (attempt {}/{})",
                job.job,
                due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                job.attempt_count,
                job.max_retry_count + 1
            );
            if let Some(m) = message_of(job) {
                why.push_str(&format!(": {m}"));
            }
            Verdict::Stalled(why)
        }
        _ => Verdict::Running,
    }
}

/// What a device has done, as ChirpStack reports it per device.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceSteps {
    pub mc_group_setup: bool,
    pub frag_session_setup: bool,
    pub mc_session: bool,
}

/// The stage of a device still in a deployment that goes on: the step it is waiting in, where
/// a step begins only once ChirpStack has attempted its job. Completion is ChirpStack's to
/// declare, so the furthest this goes is `FragStatus` (or `Fragments` without a status request).
pub fn stage_of(d: DeviceSteps, reached: Step, status_requested: bool) -> Stage {
    if reached < Step::McGroupSetup {
        Stage::Pending
    } else if !d.mc_group_setup || reached < Step::FragSessionSetup {
        Stage::McGroupSetup
    } else if !d.frag_session_setup || reached < Step::McSession {
        Stage::FragSessionSetup
    } else if !d.mc_session || reached < Step::Enqueue {
        Stage::McSessionSetup
    } else if !status_requested || reached < Step::FragStatus {
        Stage::Fragments
    } else {
        // Also after the answer: the device waits for ChirpStack's completion.
        Stage::FragStatus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn job(
        name: &str,
        created: i64,
        attempts: u32,
        completed: Option<i64>,
    ) -> api::FuotaDeploymentJob {
        api::FuotaDeploymentJob {
            job: name.into(),
            created_at: at(created),
            completed_at: completed.and_then(at),
            attempt_count: attempts,
            ..Default::default()
        }
    }

    fn now(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap_or_default()
    }

    #[test]
    fn a_chain_that_ends_before_complete_is_stopped_with_chirpstacks_message() {
        // ChirpStack 4.19 on a profile without TS005: the first job errors, is retried once,
        // then completed with no successor.
        let mut create = job("CREATE_MC_GROUP", 100, 1, Some(102));
        create.error_msg = "Error: Device-profile does not support TS005".into();
        assert_eq!(
            verdict(&[create], now(5000), Duration::minutes(15)),
            Verdict::Stopped(
                "ChirpStack stopped the deployment at job CREATE_MC_GROUP: Device-profile does not support TS005".into()
            )
        );
        let done = [
            job("DELETE_MC_GROUP", 1, 1, Some(2)),
            job("COMPLETE", 2, 1, Some(3)),
        ];
        assert_eq!(
            verdict(&done, now(5000), Duration::minutes(15)),
            Verdict::Running
        );
        assert_eq!(
            verdict(&[], now(0), Duration::minutes(15)),
            Verdict::Running
        );
    }

    #[test]
    fn a_job_long_past_its_run_time_is_stalled_and_one_waiting_for_its_time_is_not() {
        let mut j = job("MC_GROUP_SETUP", 100, 2, None);
        j.max_retry_count = 4;
        j.scheduler_run_after = at(1000);
        j.error_msg = "Error: connection refused".into();
        assert_eq!(
            verdict(std::slice::from_ref(&j), now(1899), Duration::seconds(900)),
            Verdict::Running
        );
        assert_eq!(
            verdict(&[j], now(1901), Duration::seconds(900)),
            Verdict::Stalled(
                "ChirpStack has not run job MC_GROUP_SETUP since it was due at 1970-01-01T00:16:40Z (attempt 2/5): connection refused".into()
            )
        );
    }

    #[test]
    fn a_step_is_reached_when_its_job_was_attempted_not_when_it_was_created() {
        let waiting = [
            job("MC_SESSION", 10, 1, Some(20)),
            // Created for the session start, a minute ahead.
            job("ENQUEUE", 20, 0, None),
        ];
        assert_eq!(step_reached(&waiting), Step::McSession);
        let sent = [
            job("MC_SESSION", 10, 1, Some(20)),
            job("ENQUEUE", 20, 1, Some(80)),
        ];
        assert_eq!(step_reached(&sent), Step::Enqueue);
        assert_eq!(step_reached(&[]), Step::Preparing);
    }

    #[test]
    fn a_device_stage_never_runs_ahead_of_chirpstacks_job() {
        let all = DeviceSteps {
            mc_group_setup: true,
            frag_session_setup: true,
            mc_session: true,
        };
        let none = DeviceSteps::default();
        let cases = [
            (none, Step::Preparing, true, Stage::Pending),
            (none, Step::McGroupSetup, true, Stage::McGroupSetup),
            // Its answer is in, ChirpStack still retries the others' McGroupSetup.
            (
                DeviceSteps {
                    mc_group_setup: true,
                    ..none
                },
                Step::McGroupSetup,
                true,
                Stage::McGroupSetup,
            ),
            (
                DeviceSteps {
                    mc_group_setup: true,
                    ..none
                },
                Step::FragSessionSetup,
                true,
                Stage::FragSessionSetup,
            ),
            // Session set up, fragments not yet enqueued: before the session start.
            (all, Step::McSession, true, Stage::McSessionSetup),
            (all, Step::Enqueue, true, Stage::Fragments),
            // FRAG_STATUS exists from the enqueue on, but runs at the session end.
            (all, Step::Enqueue, false, Stage::Fragments),
            (all, Step::FragStatus, true, Stage::FragStatus),
            (all, Step::Finishing, false, Stage::Fragments),
        ];
        for (d, reached, requested, want) in cases {
            assert_eq!(
                stage_of(d, reached, requested),
                want,
                "{d:?} {reached:?} {requested}"
            );
        }
    }
}

//! What a campaign is waiting for (issue 10 item 7): fragments sent of those planned, the
//! multicast session's start and end, the current phase, the next step and when it is due,
//! and elapsed against expected duration on both clocks (a simulated network runs faster
//! than real time, so "10 min" of the fleet's time may be 20 s of the operator's), plus the
//! facts per device the campaign page lists.
//!
//! Pure: the web layer reads the campaign, its engine state and its devices' facts, and this
//! module turns them into the summary, so every rule here has a unit test.

use chrono::{DateTime, Utc};
use lorafleet_engine::machine::{Phase, Run};
use serde::Serialize;
use utoipa::ToSchema;

use crate::firmware::spelling::{self, SpelledVersion};
use crate::storage::campaigns::device_facts::DeviceFactRow;
use crate::storage::campaigns::{CampaignDevice, CampaignState, Stage};
use crate::storage::version_status::{version_dto, VersionDto};
use crate::storage::{fmt_time, parse_time};

/// A duration on the fleet's clock and what it takes in real time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct BothClocks {
    /// Seconds on the network's clock (simulated time on a simulated network).
    pub simulated_s: f64,
    /// The same in real seconds: `simulated_s / time_scale`.
    pub real_s: f64,
}

impl BothClocks {
    fn of(simulated_s: f64, time_scale: f64) -> BothClocks {
        let scale = if time_scale > 0.0 { time_scale } else { 1.0 };
        BothClocks {
            simulated_s: round1(simulated_s),
            real_s: round1(simulated_s / scale),
        }
    }
}

/// The step the campaign takes next and when it is due.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NextStep {
    /// `session_setup`, `session_start`, `session_end`, `verify` or the stage of the device
    /// acted on next (drivers that report per-device times only).
    pub step: String,
    pub label: String,
    /// When it is due, on the network's clock (RFC 3339); none when nothing says.
    pub at: Option<String>,
    /// How long until then (negative: overdue).
    pub due_in: Option<BothClocks>,
}

/// A campaign device's name, model, versions and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeviceFact {
    pub dev_eui: String,
    pub name: Option<String>,
    pub model: Option<String>,
    /// What the device ran before the campaign started, written as the device writes it.
    pub from_version: Option<VersionDto>,
    /// The image's version in the device's own versioning type.
    pub to_version: Option<SpelledVersion>,
    pub stage: Stage,
    pub outcome: Option<String>,
}

/// `progress_summary` of `GET /api/campaigns/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ProgressSummary {
    /// `draft`, `setup`, `session_setup`, `session`, `after` (waiting for the reboot and the
    /// new version) or `done`; other campaign states (e.g. `scheduled`) as they are named.
    pub phase: String,
    pub phase_label: String,
    /// Fragments the driver has sent so far; none when the FUOTA service does not say.
    pub fragments_sent: Option<u32>,
    /// Fragments planned: data plus parity.
    pub fragments_total: u32,
    pub data_fragments: u32,
    pub parity_fragments: u32,
    /// The multicast session, on the network's clock.
    pub session_start: Option<String>,
    pub session_end: Option<String>,
    pub next_step: Option<NextStep>,
    /// Since the start (until the end for a finished campaign).
    pub elapsed: Option<BothClocks>,
    /// The plan's expected duration.
    pub expected: Option<BothClocks>,
    /// How many times faster than real time the network's clock runs.
    pub time_scale: f64,
    pub device_facts: Vec<DeviceFact>,
}

/// What the image updates to: its trailer version and the versioning its metadata states.
#[derive(Debug, Clone, Default)]
pub struct ImageVersion {
    pub raw: Option<u32>,
    pub stated: Option<String>,
    /// The versioning type used for devices that reported none (that of the fleet nearest
    /// the image's version).
    pub fallback_type: Option<i64>,
}

/// Everything [`summarise`] reads, already loaded.
pub struct ProgressInput<'a> {
    pub state: CampaignState,
    pub plan: &'a serde_json::Value,
    /// The engine's campaign state; none for the other drivers.
    pub run: Option<&'a Run>,
    pub devices: &'a [CampaignDevice],
    pub facts: &'a [DeviceFactRow],
    pub image: &'a ImageVersion,
    pub started_at: Option<&'a str>,
    pub completed_at: Option<&'a str>,
    pub now: DateTime<Utc>,
    pub time_scale: f64,
}

pub fn summarise(input: &ProgressInput) -> ProgressSummary {
    let num = |k: &str| input.plan.get(k).and_then(serde_json::Value::as_f64);
    let data = num("data_fragments").unwrap_or(0.0) as u32;
    let parity = num("redundancy_fragments").unwrap_or(0.0) as u32;
    let total = num("total_fragments").map_or(data + parity, |t| t as u32);
    let session_len = num("session_length_s");
    let phase = phase_of(input);
    let session_start = input.run.and_then(|r| r.session_start);
    let session_end = session_start
        .zip(session_len)
        .map(|(s, len)| s + chrono::Duration::milliseconds((len * 1000.0) as i64));
    let started = input.started_at.and_then(parse_time);
    let end = input.completed_at.and_then(parse_time).unwrap_or(input.now);
    ProgressSummary {
        phase_label: phase_label(&phase),
        fragments_sent: input
            .run
            .map(|r| (r.next_fragment as u32).min(total.max(1))),
        fragments_total: total,
        data_fragments: data,
        parity_fragments: parity,
        session_start: session_start.map(fmt_time),
        session_end: session_end.map(fmt_time),
        next_step: next_step(input, &phase, session_start, session_end, total),
        elapsed: started.map(|s| seconds_between(s, end.max(s), input.time_scale)),
        expected: num("expected_duration_s").map(|e| BothClocks::of(e, input.time_scale)),
        time_scale: input.time_scale,
        device_facts: device_facts(input),
        phase,
    }
}

fn seconds_between(a: DateTime<Utc>, b: DateTime<Utc>, scale: f64) -> BothClocks {
    BothClocks::of((b - a).num_milliseconds() as f64 / 1000.0, scale)
}

/// The engine's phase while it runs; for drivers that report stages only, the phase of the
/// least advanced device still at work.
fn phase_of(input: &ProgressInput) -> String {
    let state = input.state.as_str();
    if state != CampaignState::Running.as_str() {
        return match state {
            "completed" | "failed" | "cancelled" => "done".into(),
            other => other.into(),
        };
    }
    if let Some(run) = input.run {
        return match run.phase {
            Phase::Setup => "setup",
            Phase::SessionSetup => "session_setup",
            Phase::Session => "session",
            Phase::After => "after",
            Phase::Done => "done",
        }
        .into();
    }
    let least = input
        .devices
        .iter()
        .map(|d| d.stage)
        .filter(|s| !s.is_final())
        .min();
    match least {
        None => "done",
        Some(Stage::Pending | Stage::Check | Stage::McGroupSetup | Stage::FragSessionSetup) => {
            "setup"
        }
        Some(Stage::McSessionSetup) => "session_setup",
        Some(Stage::Fragments) => "session",
        Some(_) => "after",
    }
    .into()
}

fn phase_label(phase: &str) -> String {
    match phase {
        "draft" => "Draft: not started",
        "setup" => "Setting up the devices (version check, multicast group, fragmentation session)",
        "session_setup" => "Announcing the multicast session to the devices",
        "session" => "Multicast session: sending fragments",
        "after" => "Waiting for the devices to reboot and report the new version",
        "done" => "Finished",
        other => other,
    }
    .to_string()
}

fn next_step(
    input: &ProgressInput,
    phase: &str,
    session_start: Option<DateTime<Utc>>,
    session_end: Option<DateTime<Utc>>,
    total: u32,
) -> Option<NextStep> {
    let step = |step: &str, label: String, at: Option<DateTime<Utc>>| NextStep {
        step: step.into(),
        label,
        at: at.map(fmt_time),
        due_in: at.map(|t| seconds_between(input.now, t, input.time_scale)),
    };
    match (phase, input.run) {
        ("setup", Some(run)) => Some(step(
            "session_setup",
            "Multicast session setup (once every device answered, at the latest)".into(),
            Some(run.setup_deadline),
        )),
        ("session_setup", Some(_)) => Some(step(
            "session_start",
            "The multicast session starts".into(),
            session_start,
        )),
        ("session", Some(_)) if session_start.is_some_and(|s| input.now < s) => Some(step(
            "session_start",
            "The multicast session starts".into(),
            session_start,
        )),
        ("session", Some(run)) => {
            let sent = (run.next_fragment as u32).min(total);
            let label = if run.fragments_sent_at.is_some() {
                format!("The session ends (all {total} fragments sent)")
            } else {
                format!("The session ends ({sent} of {total} fragments sent)")
            };
            Some(step("session_end", label, session_end))
        }
        ("after", Some(run)) => Some(step(
            "verify",
            "Verifying the new version".into(),
            run.verify_at,
        )),
        ("done" | "draft", _) | (_, Some(_)) => None,
        // Drivers that report per-device times: the device acted on next.
        (_, None) => input
            .devices
            .iter()
            .filter(|d| !d.stage.is_final())
            .filter_map(|d| Some((parse_time(d.next_action_at.as_deref()?)?, d)))
            .min_by_key(|(t, _)| *t)
            .map(|(t, d)| {
                step(
                    d.stage.as_str(),
                    format!("Next request to {} ({})", d.dev_eui, d.stage.as_str()),
                    Some(t),
                )
            }),
    }
}

/// Each device's facts in the order of the campaign's device list.
fn device_facts(input: &ProgressInput) -> Vec<DeviceFact> {
    let started = input.started_at.is_some();
    input
        .devices
        .iter()
        .map(|d| {
            let row = input.facts.iter().find(|f| f.dev_eui == d.dev_eui);
            let vt = row.and_then(|r| r.versioning_type);
            // Before the start the device still runs what it updates from; after it, only
            // the history tells (its running version may already be the new one): the last
            // version reported before the start, else its answer to the campaign's check.
            let from = row.and_then(|r| {
                if started {
                    r.version_before.or(r.version_first_after)
                } else {
                    r.running_version.or(r.version_before)
                }
            });
            DeviceFact {
                dev_eui: d.dev_eui.clone(),
                name: row.and_then(|r| r.name.clone()).filter(|n| !n.is_empty()),
                model: row.and_then(|r| r.model.clone()),
                from_version: from.map(|v| version_dto(v, vt)),
                to_version: input.image.raw.map(|raw| {
                    spelling::spell_as(
                        raw,
                        input.image.stated.as_deref(),
                        vt.or(input.image.fallback_type),
                    )
                }),
                stage: d.stage,
                outcome: d.outcome.clone(),
            }
        })
        .collect()
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap() + chrono::Duration::seconds(s.into())
    }

    fn run(phase: Phase) -> Run {
        Run {
            phase,
            mc_addr: [1, 2, 3, 4],
            mc_key: [7; 16],
            group: None,
            group_deleted: false,
            setup_deadline: at(600),
            session_start: Some(at(900)),
            next_fragment: 40,
            fragments_sent_at: None,
            verify_at: Some(at(2000)),
            uplink_cursor: 0,
            recent_uplinks: Vec::new(),
            failure: None,
            adaptive: Default::default(),
        }
    }

    fn device(eui: &str, stage: Stage) -> CampaignDevice {
        CampaignDevice {
            dev_eui: eui.into(),
            stage,
            mc_group_setup_at: None,
            frag_session_setup_at: None,
            mc_session_setup_at: None,
            frag_status_at: None,
            completed_at: None,
            error: None,
            attempts: 0,
            next_action_at: None,
            outcome: None,
            engine: Default::default(),
            driver_json: None,
        }
    }

    fn plan() -> serde_json::Value {
        json!({"data_fragments": 96, "redundancy_fragments": 24, "total_fragments": 120,
               "session_length_s": 1024.0, "expected_duration_s": 1800.0})
    }

    fn summary(
        state: CampaignState,
        run: Option<&Run>,
        devices: &[CampaignDevice],
        now: u32,
    ) -> ProgressSummary {
        let plan = plan();
        summarise(&ProgressInput {
            state,
            plan: &plan,
            run,
            devices,
            facts: &[],
            image: &ImageVersion::default(),
            started_at: Some("2026-12-07T12:00:00.000Z"),
            completed_at: None,
            now: at(now),
            time_scale: 30.0,
        })
    }

    #[test]
    fn a_streaming_session_counts_fragments_and_waits_for_its_end() {
        let r = run(Phase::Session);
        let s = summary(CampaignState::Running, Some(&r), &[], 1200);
        assert_eq!(s.phase, "session");
        assert_eq!((s.fragments_sent, s.fragments_total), (Some(40), 120));
        assert_eq!((s.data_fragments, s.parity_fragments), (96, 24));
        assert_eq!(s.session_start.as_deref(), Some("2026-12-07T12:15:00.000Z"));
        assert_eq!(s.session_end.as_deref(), Some("2026-12-07T12:32:04.000Z"));
        let next = s.next_step.unwrap();
        assert_eq!(next.step, "session_end");
        assert_eq!(next.label, "The session ends (40 of 120 fragments sent)");
        // 900 + 1024 - 1200 = 724 s on the fleet's clock, 24.1 s real at x30.
        assert_eq!(
            next.due_in,
            Some(BothClocks {
                simulated_s: 724.0,
                real_s: 24.1
            })
        );
        assert_eq!(
            s.elapsed,
            Some(BothClocks {
                simulated_s: 1200.0,
                real_s: 40.0
            })
        );
        assert_eq!(
            s.expected,
            Some(BothClocks {
                simulated_s: 1800.0,
                real_s: 60.0
            })
        );
    }

    #[test]
    fn each_engine_phase_names_what_comes_next() {
        let cases = [
            (
                Phase::Setup,
                100,
                Some("session_setup"),
                Some("2026-12-07T12:10:00.000Z"),
            ),
            (
                Phase::SessionSetup,
                700,
                Some("session_start"),
                Some("2026-12-07T12:15:00.000Z"),
            ),
            (
                Phase::Session,
                800,
                Some("session_start"),
                Some("2026-12-07T12:15:00.000Z"),
            ),
            (
                Phase::After,
                1950,
                Some("verify"),
                Some("2026-12-07T12:33:20.000Z"),
            ),
            (Phase::Done, 2100, None, None),
        ];
        for (phase, now, step, due) in cases {
            let r = run(phase);
            let s = summary(CampaignState::Running, Some(&r), &[], now);
            assert_eq!(
                s.next_step.as_ref().map(|n| n.step.as_str()),
                step,
                "{phase:?}"
            );
            assert_eq!(
                s.next_step.as_ref().and_then(|n| n.at.as_deref()),
                due,
                "{phase:?}"
            );
        }
    }

    #[test]
    fn without_engine_state_the_least_advanced_device_sets_the_phase() {
        let mut waiting = device("02", Stage::McSessionSetup);
        waiting.next_action_at = Some("2026-12-07T12:01:00.000Z".into());
        let devices = [
            device("01", Stage::Completed),
            waiting,
            device("03", Stage::Verify),
        ];
        let s = summary(CampaignState::Running, None, &devices, 30);
        assert_eq!(s.phase, "session_setup");
        assert_eq!(s.fragments_sent, None, "the service does not say");
        let next = s.next_step.unwrap();
        assert_eq!(next.step, "mc_session_setup");
        assert_eq!(
            next.due_in,
            Some(BothClocks {
                simulated_s: 30.0,
                real_s: 1.0
            })
        );
        let s = summary(CampaignState::Completed, None, &devices, 30);
        assert_eq!((s.phase.as_str(), s.next_step), ("done", None));
    }

    #[test]
    fn devices_read_from_and_to_in_their_own_spelling() {
        let plan = plan();
        let devices = [
            device("01", Stage::Completed),
            device("02", Stage::Fragments),
        ];
        let facts = [
            DeviceFactRow {
                dev_eui: "01".into(),
                name: Some("meter 1".into()),
                model: Some("sim-sensor".into()),
                version_before: None,
                version_first_after: Some(0x0001_0200),
                running_version: Some(0x0001_0300),
                versioning_type: Some(1),
            },
            DeviceFactRow {
                dev_eui: "02".into(),
                name: Some(String::new()),
                model: None,
                version_before: None,
                version_first_after: None,
                running_version: Some(7),
                versioning_type: None,
            },
        ];
        let image = ImageVersion {
            raw: Some(0x0001_0300),
            stated: None,
            fallback_type: None,
        };
        let s = summarise(&ProgressInput {
            state: CampaignState::Running,
            plan: &plan,
            run: None,
            devices: &devices,
            facts: &facts,
            image: &image,
            started_at: Some("2026-12-07T12:00:00.000Z"),
            completed_at: None,
            now: at(10),
            time_scale: 1.0,
        });
        let one = &s.device_facts[0];
        assert_eq!(one.name.as_deref(), Some("meter 1"));
        assert_eq!(one.model.as_deref(), Some("sim-sensor"));
        assert_eq!(one.from_version.as_ref().unwrap().display, "1.2.0");
        assert_eq!(one.to_version.as_ref().unwrap().version.display, "1.3.0");
        let two = &s.device_facts[1];
        assert_eq!(two.name, None, "an empty name is no name");
        assert_eq!(
            two.from_version, None,
            "started: only the history says what it ran before"
        );
        assert_eq!(two.stage, Stage::Fragments);
    }
}

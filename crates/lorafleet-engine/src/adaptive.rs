//! Adaptive parity (`fragmentation.parity: "adaptive"`): parity is sent in groups, and
//! between groups the engine asks the multicast group for its fragmentation status and sends
//! more only while some device still needs it.
//!
//! After the uncoded fragments and after each parity group the engine sends one multicast
//! FragSessionStatusReq with the Participants bit clear, so only devices still missing
//! fragments answer (LoRaMac-node-like stacks answer whenever they lost a data fragment, which
//! their reading takes into account). It waits [`AdaptiveParity::status_wait`], then estimates
//! from each answer, in the device's stack's reading ([`lorafleet_codec::frag_status`]), how
//! many more parity fragments that device needs, and sends the next group while any estimate
//! is positive, the campaign's `redundancy` is not used up and the session has time left.
//! Otherwise it stops, and the campaign moves on at once instead of waiting for the session's
//! end.
//!
//! The next group is what the neediest device needs (capped by `fragmentation.parity_group`
//! when the operator sets one): after the data fragments every answer already says how much
//! that device lost, so the first group covers the neediest and the later ones shrink to what
//! is still missing. Each round costs its status requests' air time and a wait, which on a
//! small image (M = 64: 7.6 s of fragments) weigh as much as a few fragments; fixed groups of
//! 5 % of M took 7 to 13 rounds where 3 to 5 do.
//!
//! The answers to the first request (after the data fragments) also give the fleet's loss
//! ([`lorafleet_codec::frag_status::fleet_loss`]), kept for the session: each device's rate is
//! weighed against it (a device's own rate over 64 fragments says little), and a highest-N
//! device's one-byte lost count is unwrapped with it.
//!
//! Silence is weak evidence on a lossy network: the request or the answer may be lost. So the
//! request goes out [`STATUS_COPIES`] times per round, a device that answered an earlier round
//! but not this one is taken at its earlier estimate less the parity sent since, and a device
//! that last asked for more is taken as done only after [`CONFIRM_ROUNDS`] silent rounds (a
//! round that sends no parity, only asks, if nobody else needs any). A device that never
//! answers is taken as complete; the version check after the session is the proof either way.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use lorafleet_codec::frag_status::{
    fleet_loss, lost_data_fragments, parity_needed_in, Context, FragStatus, Layout, NeedBasis,
    ParityNeed, Reading, CID_FRAG_SESSION_STATUS,
};
use lorafleet_codec::redundancy::OverheadTable;

use crate::commands;
use crate::machine::{Action, Dev, Level, Run, Settings, Step};
use crate::ports;

/// FragSessionStatusReq copies per round. Each costs a few bytes of air time; one copy at 20 %
/// loss leaves a device silent (request or answer lost) in 36 % of rounds, two in about 8 %.
pub const STATUS_COPIES: usize = 2;

/// Silent rounds after which a device that last asked for more counts as done.
pub const CONFIRM_ROUNDS: u32 = 2;

/// How adaptive parity is configured for a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveParity {
    /// The most parity fragments one group may have (`fragmentation.parity_group`), at least
    /// 1; `None`: what the neediest device needs.
    pub group: Option<usize>,
    /// How long to collect answers after each FragSessionStatusReq
    /// (`fragmentation.status_wait_s`).
    pub status_wait: TimeDelta,
}

impl AdaptiveParity {
    /// The longest answer delay BlockAckDelay gives the devices (every stack draws it from
    /// 0..2^(BlockAckDelay + 4) s), plus 10 % for the answer's own way through the network.
    pub fn default_status_wait(block_ack_delay: u8) -> TimeDelta {
        let spread_ms = 1000i64 << (u32::from(block_ack_delay.min(7)) + 4);
        TimeDelta::milliseconds(spread_ms + spread_ms / 10)
    }
}

/// Why adaptive parity stopped sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// No answer asked for more: every device is done or more parity cannot help it.
    NoneNeedMore,
    /// The campaign's `redundancy` was sent in full.
    RedundancyCap,
    /// The multicast session ended.
    SessionEnd,
}

/// What a device in the session still needs, as a round sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    /// Parity fragments to send.
    pub more: u32,
    /// It last asked for more and has not been silent for [`CONFIRM_ROUNDS`] yet.
    pub unconfirmed: bool,
}

/// What the next round does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send this many more parity fragments, then ask again.
    Send(usize),
    /// Nobody asks for more, but a device that did has not been silent long enough: ask
    /// again without sending parity.
    Confirm,
    Stop(Stop),
}

/// The round's decision from the devices' estimates: the next group (what the neediest device
/// needs, no more than `group` if set, nor than is left of `redundancy`), or why to stop.
pub fn decide(
    needs: impl IntoIterator<Item = Need>,
    parity_sent: usize,
    redundancy: usize,
    group: Option<usize>,
    session_left: bool,
) -> Decision {
    let (wanted, unconfirmed) = needs.into_iter().fold((0, false), |(w, u), n| {
        (w.max(n.more as usize), u || n.unconfirmed)
    });
    if wanted == 0 && unconfirmed && session_left {
        return Decision::Confirm;
    }
    if wanted == 0 {
        return Decision::Stop(Stop::NoneNeedMore);
    }
    let left = redundancy.saturating_sub(parity_sent);
    if left == 0 {
        return Decision::Stop(Stop::RedundancyCap);
    }
    if !session_left {
        return Decision::Stop(Stop::SessionEnd);
    }
    Decision::Send(wanted.min(group.map_or(usize::MAX, |g| g.max(1))).min(left))
}

/// The campaign-wide state of adaptive parity, kept in [`Run`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveState {
    /// Fragments the rounds so far allow on the air (M, then M + each group).
    pub limit: usize,
    /// When the network had sent every fragment up to `limit`.
    pub group_sent_at: Option<DateTime<Utc>>,
    /// When this round's FragSessionStatusReq went out.
    pub asked_at: Option<DateTime<Utc>>,
    /// Parity fragments sent before that request.
    pub parity_at_ask: usize,
    /// Status requests sent so far.
    pub rounds: u32,
    pub stopped: Option<Stop>,
    /// The loss rate the answers to the first status request showed (`None` before it, or
    /// when nobody answered it).
    #[serde(default)]
    pub fleet_loss: Option<f64>,
}

/// A device's last answer to a multicast status request, with the estimate made from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub status: FragStatus,
    /// Parity fragments sent before the request it answered.
    pub parity_sent: usize,
    pub need: ParityNeed,
    pub at: DateTime<Utc>,
    /// Rounds since, in which it did not answer.
    #[serde(default)]
    pub silent_rounds: u32,
    /// Highest-N reading: the data fragments it lost, MissingFrag unwrapped.
    #[serde(default)]
    pub lost: Option<u32>,
    /// Highest-N reading: that count from its answers to earlier rounds (it never goes down).
    #[serde(default)]
    pub lost_before: Option<u32>,
}

impl Report {
    /// The report in an operator's words, for the log and the device's error.
    pub fn describe(&self) -> String {
        let f = &self.status.fields;
        let fields = match self.status.reading {
            Reading::Count => format!(
                "{} fragments received, {} missing",
                f.nb_frag_received, f.missing_frag
            ),
            Reading::HighestN => format!(
                "highest fragment N {}, {} data fragments lost",
                f.nb_frag_received, f.missing_frag
            ),
        };
        format!(
            "its last FragSessionStatusAns ({}) after {} parity fragments reported {fields}",
            self.status.raw_hex, self.parity_sent
        )
    }
}

/// The v1 FragSessionStatusAns bytes of a parsed answer (the engine speaks TS004 v1).
fn v1_bytes(index: u8, received: u16, missing: u8, not_enough_memory: bool) -> [u8; 5] {
    let nb = (received & 0x3fff) | (u16::from(index & 0b11) << 14);
    let [lo, hi] = nb.to_le_bytes();
    [
        CID_FRAG_SESSION_STATUS,
        lo,
        hi,
        missing,
        u8::from(not_enough_memory),
    ]
}

/// A FragSessionStatusAns from a device in the session: kept as its report, with the
/// estimate of what it still needs.
pub fn answered(
    run: &Run,
    d: &mut Dev,
    (index, received, missing, not_enough_memory): (u8, u16, u8, bool),
    s: &Settings,
    at: DateTime<Utc>,
) {
    let reading = d.frag_reading.unwrap_or(Reading::Count);
    let bytes = v1_bytes(index, received, missing, not_enough_memory);
    let Ok(status) = FragStatus::from_slice(&bytes, Layout::V1, reading) else {
        return;
    };
    let lost_before = match (&d.adaptive, run.adaptive.asked_at) {
        // A second copy's answer in the same round: what was known before this round.
        (Some(p), Some(asked_at)) if p.at >= asked_at => p.lost_before,
        (Some(p), _) => p.lost.or(p.lost_before),
        (None, _) => None,
    };
    let mut report = Report {
        status,
        parity_sent: run.adaptive.parity_at_ask,
        need: ParityNeed {
            more: 0,
            basis: NeedBasis::Complete,
        },
        at,
        silent_rounds: 0,
        lost: None,
        lost_before,
    };
    let table = OverheadTable::measure(usize::from(s.frag.nb_frag));
    report.estimate(&table, run.adaptive.fleet_loss);
    d.frag_status = Some((received, missing));
    d.frag_status_at = Some(at);
    d.adaptive = Some(report);
}

impl Report {
    /// The estimate from this answer with what is known now: its earlier lost count and the
    /// fleet's loss.
    fn estimate(&mut self, table: &OverheadTable, fleet_loss: Option<f64>) {
        let ctx = Context {
            fleet_loss,
            lost_before: self.lost_before,
        };
        self.need = parity_needed_in(&self.status, table, self.parity_sent as u32, ctx);
        if self.status.reading == Reading::HighestN {
            let m = table.nb_frag();
            let lost = lost_data_fragments(&self.status.fields, m, m + self.parity_sent, ctx);
            self.lost = u32::try_from(lost).ok();
        }
    }
}

/// After the first round: the fleet's loss from its answers, and this round's estimates
/// redone with it.
fn learn_fleet_loss(
    state: &mut AdaptiveState,
    devs: &mut [Dev],
    s: &Settings,
    asked_at: DateTime<Utc>,
) {
    if state.fleet_loss.is_some() || state.parity_at_ask != 0 {
        return;
    }
    let m = usize::from(s.frag.nb_frag);
    let answers = devs
        .iter()
        .filter_map(|d| d.adaptive.as_ref())
        .filter(|r| r.at >= asked_at)
        .map(|r| &r.status);
    state.fleet_loss = fleet_loss(answers, m);
    if state.fleet_loss.is_none() {
        return;
    }
    let table = OverheadTable::measure(m);
    for r in devs.iter_mut().filter_map(|d| d.adaptive.as_mut()) {
        if r.at >= asked_at {
            r.estimate(&table, state.fleet_loss);
        }
    }
}

/// What a device in the session still needs as this round sees it: its answer to this round,
/// else its earlier estimate less the parity sent since, else nothing.
fn current_need(d: &Dev, asked_at: DateTime<Utc>, parity_now: usize) -> Need {
    match &d.adaptive {
        Some(r) if r.at >= asked_at => Need {
            more: r.need.more,
            unconfirmed: false,
        },
        Some(r) => {
            let since = parity_now.saturating_sub(r.parity_sent) as u32;
            Need {
                more: r.need.more.saturating_sub(since),
                unconfirmed: r.need.more > 0 && r.silent_rounds < CONFIRM_ROUNDS,
            }
        }
        None => Need::default(),
    }
}

impl Run {
    /// Fragments the driver may have sent by now, of the `total` encoded.
    pub fn sendable(&self, s: &Settings, total: usize) -> usize {
        if s.adaptive.is_none() || self.adaptive.stopped.is_some() {
            return total;
        }
        self.adaptive
            .limit
            .max(usize::from(s.frag.nb_frag))
            .min(total)
    }

    /// The network sent every fragment [`Run::sendable`] allowed, at `now`: the end of the
    /// fragments, or (adaptive, still deciding) of this round's, after which the engine asks
    /// for the status.
    pub fn sent_all_sendable(&mut self, s: &Settings, now: DateTime<Utc>) {
        if s.adaptive.is_none() || self.adaptive.stopped.is_some() {
            self.fragments_sent_at.get_or_insert(now);
        } else {
            self.adaptive.group_sent_at.get_or_insert(now);
        }
    }

    /// Adaptive parity's part of the session: ask once a round's fragments are out, decide
    /// once the answers had their time.
    pub(crate) fn tick_adaptive(
        &mut self,
        devs: &mut [Dev],
        s: &Settings,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        let Some(a) = s.adaptive else {
            return;
        };
        let Some(group_sent_at) = self.adaptive.group_sent_at else {
            return;
        };
        if self.fragments_sent_at.is_some() {
            return;
        }
        let m = usize::from(s.frag.nb_frag);
        let parity = self.adaptive.limit.saturating_sub(m);
        let session_left = self.session_end(s).is_none_or(|end| now < end);
        let Some(asked_at) = self.adaptive.asked_at else {
            if session_left {
                self.ask(s, m, now, out);
            } else {
                self.stop_adaptive(devs, Stop::SessionEnd, parity, group_sent_at, now, out);
            }
            return;
        };
        if now < asked_at + a.status_wait {
            return;
        }
        learn_fleet_loss(&mut self.adaptive, devs, s, asked_at);
        let needs: Vec<Need> = devs
            .iter_mut()
            .filter(|d| d.step == Step::InSession)
            .map(|d| {
                if let Some(r) = d.adaptive.as_mut().filter(|r| r.at < asked_at) {
                    r.silent_rounds += 1;
                }
                current_need(d, asked_at, parity)
            })
            .collect();
        match decide(needs, parity, s.redundancy, a.group, session_left) {
            Decision::Send(more) => {
                self.adaptive.limit = m + parity + more;
                self.adaptive.group_sent_at = None;
                self.adaptive.asked_at = None;
            }
            // The round's fragments stay sent: the next tick asks again.
            Decision::Confirm => self.adaptive.asked_at = None,
            Decision::Stop(why) => self.stop_adaptive(devs, why, parity, asked_at, now, out),
        }
    }

    fn ask(&mut self, s: &Settings, m: usize, now: DateTime<Utc>, out: &mut Vec<Action>) {
        // The codec encodes this request for every index the settings' check accepted.
        let Ok(data) = commands::frag_session_status_req(s.frag.index, false) else {
            return;
        };
        self.adaptive.limit = self.adaptive.limit.max(m);
        self.adaptive.parity_at_ask = self.adaptive.limit - m;
        self.adaptive.asked_at = Some(now);
        self.adaptive.rounds += 1;
        for _ in 0..STATUS_COPIES {
            out.push(Action::Multicast {
                f_port: ports::FRAGMENTATION,
                data: data.clone(),
                what:
                    "TS004 FragSessionStatusReq (multicast, only devices missing fragments answer)",
            });
        }
    }

    fn stop_adaptive(
        &mut self,
        devs: &[Dev],
        why: Stop,
        parity: usize,
        asked_at: DateTime<Utc>,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        self.adaptive.stopped = Some(why);
        self.fragments_sent_at = Some(self.adaptive.group_sent_at.unwrap_or(now));
        let reason = match why {
            Stop::NoneNeedMore => "no device asked for more",
            Stop::RedundancyCap => "the campaign's redundancy was used up",
            Stop::SessionEnd => "the multicast session ended",
        };
        let mut behind = 0;
        for d in devs.iter().filter(|d| d.step == Step::InSession) {
            let need = current_need(d, asked_at, parity).more;
            let Some(r) = d.adaptive.as_ref().filter(|_| need > 0) else {
                continue;
            };
            behind += 1;
            out.push(Action::Log {
                level: Level::Warning,
                dev_eui: Some(d.dev_eui),
                message: format!(
                    "did not complete when adaptive parity stopped: {}; about {need} more parity fragments needed",
                    r.describe()
                ),
            });
        }
        let unhelpable = devs
            .iter()
            .filter_map(|d| d.adaptive.as_ref())
            .filter(|r| {
                r.at >= asked_at
                    && matches!(
                        r.need.basis,
                        NeedBasis::DeviceError | NeedBasis::Unrecoverable
                    )
            })
            .count();
        out.push(Action::Log {
            level: if behind > 0 {
                Level::Warning
            } else {
                Level::Info
            },
            dev_eui: None,
            message: format!(
                "adaptive parity stopped after {parity} parity fragments ({} status rounds): {reason}; {behind} devices still need more, {unhelpable} reported errors more parity cannot fix",
                self.adaptive.rounds
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{FragSetup, MulticastClass};
    use crate::machine::{CheckMode, FragStatusWhen, Phase};
    use lorafleet_codec::eui::DevEui;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    /// M = 100 (100 bytes in 1-byte fragments), 40 parity at most, groups of 5.
    fn settings() -> Settings {
        Settings {
            group_id: 0,
            class: MulticastClass::C,
            dr: 5,
            frequency: 869_525_000,
            timeout_exp: 12,
            unicast_timeout: TimeDelta::seconds(60),
            attempts: 3,
            frag: FragSetup::for_image(100, 1, 0, 0, 1, 0, [0; 4]).unwrap(),
            redundancy: 40,
            frag_status: FragStatusWhen::AfterSession,
            check: CheckMode::Off,
            verify: true,
            reboot_delay: TimeDelta::seconds(30),
            status_port: 111,
            check_method: crate::machine::Method::VersionStatus,
            verify_method: crate::machine::Method::VersionStatus,
            fm_port: 203,
            reboot_with: crate::machine::RebootWith::RebootTime,
            adaptive: Some(AdaptiveParity {
                group: Some(5),
                status_wait: AdaptiveParity::default_status_wait(1),
            }),
        }
    }

    fn in_session(n: u8, s: &Settings, reading: Reading) -> Dev {
        let mut d = Dev::new(DevEui([n; 8]), [0; 16], None, s, t0());
        d.step = Step::InSession;
        d.next_action_at = None;
        d.frag_reading = Some(reading);
        d
    }

    fn session_run(s: &Settings) -> Run {
        let mut run = Run::new(s, [1, 2, 3, 4], [9; 16], t0());
        run.phase = Phase::Session;
        run.session_start = Some(t0());
        run
    }

    fn multicasts(out: &[Action]) -> usize {
        out.iter()
            .filter(|a| matches!(a, Action::Multicast { .. }))
            .count()
    }

    /// The network sent what was allowed at `at`; the engine asks, the answers come, the
    /// wait passes. Returns the time after the decision.
    fn round(
        run: &mut Run,
        devs: &mut [Dev],
        s: &Settings,
        at: DateTime<Utc>,
        answers: &[(usize, u16, u8)],
        out: &mut Vec<Action>,
    ) -> DateTime<Utc> {
        run.sent_all_sendable(s, at);
        run.tick(devs, s, &Default::default(), at, out);
        let answer_at = at + TimeDelta::seconds(5);
        for &(i, received, missing) in answers {
            let reply = crate::commands::Reply::FragStatus {
                index: 0,
                received,
                missing,
                not_enough_memory: false,
            };
            run.reply(&mut devs[i], reply, s, &Default::default(), answer_at, out);
        }
        let decided = at + s.adaptive.unwrap().status_wait;
        run.tick(devs, s, &Default::default(), decided, out);
        decided
    }

    #[test]
    fn defaults_follow_the_issue() {
        // BlockAckDelay 1: answers within 32 s, plus 10 %.
        assert_eq!(
            AdaptiveParity::default_status_wait(1),
            TimeDelta::milliseconds(35_200)
        );
        assert_eq!(
            AdaptiveParity::default_status_wait(0),
            TimeDelta::milliseconds(17_600)
        );
    }

    #[test]
    fn decide_sends_what_the_neediest_needs_within_group_and_cap() {
        let n = |more| Need {
            more,
            unconfirmed: false,
        };
        let waiting = Need {
            more: 0,
            unconfirmed: true,
        };
        assert_eq!(
            decide([n(3), n(0), n(2)], 0, 40, Some(5), true),
            Decision::Send(3)
        );
        assert_eq!(decide([n(30)], 0, 40, Some(5), true), Decision::Send(5));
        assert_eq!(decide([n(30)], 38, 40, Some(5), true), Decision::Send(2));
        assert_eq!(
            decide([n(0), waiting], 5, 40, Some(5), true),
            Decision::Confirm
        );
        assert_eq!(
            decide([n(1), waiting], 5, 40, Some(5), true),
            Decision::Send(1)
        );
        assert_eq!(
            decide([waiting], 5, 40, Some(5), false),
            Decision::Stop(Stop::NoneNeedMore)
        );
        assert_eq!(
            decide([n(30)], 40, 40, Some(5), true),
            Decision::Stop(Stop::RedundancyCap)
        );
        assert_eq!(
            decide([n(30)], 10, 40, Some(5), false),
            Decision::Stop(Stop::SessionEnd)
        );
        assert_eq!(
            decide([n(0), n(0)], 10, 40, Some(5), true),
            Decision::Stop(Stop::NoneNeedMore)
        );
        assert_eq!(
            decide([], 0, 40, Some(5), true),
            Decision::Stop(Stop::NoneNeedMore)
        );
    }

    /// Count-reading devices: one missing 3 asks for a group; after it nobody answers, so
    /// the engine stops after one group instead of sending the 40 allowed, and the campaign
    /// moves on at once (the group is deleted, the devices wait for the reboot).
    #[test]
    fn stops_early_once_no_device_answers() {
        let s = settings();
        let mut devs = vec![
            in_session(1, &s, Reading::Count),
            in_session(2, &s, Reading::Count),
        ];
        let mut run = session_run(&s);
        let mut out = Vec::new();
        assert_eq!(run.sendable(&s, 140), 100, "data fragments first");
        let at = t0() + TimeDelta::seconds(100);
        let at = round(&mut run, &mut devs, &s, at, &[(0, 97, 3)], &mut out);
        assert_eq!(multicasts(&out), STATUS_COPIES);
        assert!(run.fragments_sent_at.is_none());
        let allowed = run.sendable(&s, 140);
        assert!(
            (101..=105).contains(&allowed),
            "one group of at most 5: {allowed}"
        );
        // Silent from now on: what its answer asked for is sent (its estimate less the
        // parity sent since runs out), then the engine stops.
        let mut at = at;
        let mut rounds = 0;
        for _ in 0..6 {
            out.clear();
            at = round(&mut run, &mut devs, &s, at, &[], &mut out);
            rounds += 1;
            assert_eq!(multicasts(&out), STATUS_COPIES);
            if run.adaptive.stopped.is_some() {
                break;
            }
        }
        assert_eq!(run.adaptive.stopped, Some(Stop::NoneNeedMore));
        assert!(
            rounds >= CONFIRM_ROUNDS as usize,
            "silence confirmed: {rounds}"
        );
        let need = devs[0].adaptive.as_ref().unwrap().need.more as usize;
        assert_eq!(run.sendable(&s, 140), 140, "stopped: nothing held back");
        assert_eq!(
            run.adaptive.limit,
            100 + need,
            "exactly what it asked for, not 40"
        );
        let wait = s.adaptive.unwrap().status_wait;
        assert_eq!(run.fragments_sent_at, Some(at - wait));
        // Item 7: no wait for the session's end (4,096 s away): the same step moves on.
        assert_eq!(run.phase, Phase::After);
        assert!(out.contains(&Action::DeleteGroup));
        // The reboot delay (30 s) counted from the last fragment is over once the status
        // wait (35.2 s) is: straight to the version check.
        assert!(devs.iter().all(|d| d.step == Step::Verify));
        assert_eq!(run.verify_at, Some(at - wait + s.reboot_delay));
    }

    /// Devices that never answer (dead, or complete with a count reading) do not hold the
    /// campaign: after the data fragments nobody answers, no parity is sent, and the version
    /// check is what decides.
    #[test]
    fn devices_that_never_answer_stop_it_at_once() {
        let s = settings();
        let mut devs = vec![in_session(1, &s, Reading::Count)];
        let mut run = session_run(&s);
        let mut out = Vec::new();
        let at = round(&mut run, &mut devs, &s, t0(), &[], &mut out);
        assert_eq!(run.adaptive.stopped, Some(Stop::NoneNeedMore));
        assert_eq!(run.adaptive.limit, 100);
        run.tick(&mut devs, &s, &Default::default(), at, &mut out);
        assert_eq!(run.phase, Phase::After);
    }

    /// A device that keeps asking is sent parity up to `redundancy` and no further, and is
    /// named with what it reported.
    #[test]
    fn stops_at_the_redundancy_cap_naming_the_device() {
        let s = settings();
        let mut devs = vec![in_session(1, &s, Reading::Count)];
        let mut run = session_run(&s);
        let mut out = Vec::new();
        let mut at = t0();
        for _ in 0..20 {
            at = round(&mut run, &mut devs, &s, at, &[(0, 60, 40)], &mut out);
            if run.adaptive.stopped.is_some() {
                break;
            }
        }
        assert_eq!(run.adaptive.stopped, Some(Stop::RedundancyCap));
        assert_eq!(run.adaptive.limit, 140, "all 40 parity fragments, no more");
        let named = out.iter().any(|a| match a {
            Action::Log {
                dev_eui: Some(e),
                message,
                ..
            } => {
                *e == devs[0].dev_eui
                    && message.contains("013c002800")
                    && message.contains("40 missing")
            }
            _ => false,
        });
        assert!(named, "{out:#?}");
    }

    /// The session's end stops the rounds even with parity left.
    #[test]
    fn stops_at_the_session_end() {
        let mut s = settings();
        s.timeout_exp = 5; // 32 s: over before the first wait is
        let mut devs = vec![in_session(1, &s, Reading::Count)];
        let mut run = session_run(&s);
        let mut out = Vec::new();
        round(&mut run, &mut devs, &s, t0(), &[(0, 90, 10)], &mut out);
        assert_eq!(run.adaptive.stopped, Some(Stop::SessionEnd));
        assert_eq!(run.adaptive.limit, 100);
    }

    /// LoRaMac-node-like devices answer even after rebuilding the image; their highest N
    /// stopping short of the last fragment sent tells the engine they are done, where the
    /// same bytes from a count-reading device ask for more.
    #[test]
    fn highest_n_reading_is_read_as_its_stack_meant_it() {
        let s = settings();
        let mut devs = vec![in_session(1, &s, Reading::HighestN)];
        let mut run = session_run(&s);
        let mut out = Vec::new();
        // After the data fragments: last N seen 100, 2 data fragments lost.
        let at = round(&mut run, &mut devs, &s, t0(), &[(0, 100, 2)], &mut out);
        assert!(run.adaptive.stopped.is_none());
        assert_eq!(run.sendable(&s, 140), 105, "a group of 5");
        // It stopped counting at N 103 of the 105 sent while it could have rebuilt the image
        // (98 data + 3 parity): done, even though MissingFrag still says 2.
        round(&mut run, &mut devs, &s, at, &[(0, 103, 2)], &mut out);
        assert_eq!(run.adaptive.stopped, Some(Stop::NoneNeedMore));
        assert_eq!(
            devs[0].adaptive.as_ref().unwrap().need.basis,
            NeedBasis::LikelyComplete
        );

        let mut count = vec![in_session(2, &s, Reading::Count)];
        let mut run = session_run(&s);
        let mut out = Vec::new();
        let at = round(&mut run, &mut count, &s, t0(), &[(0, 98, 2)], &mut out);
        let first = run.sendable(&s, 140);
        round(&mut run, &mut count, &s, at, &[(0, 101, 2)], &mut out);
        assert!(
            run.adaptive.stopped.is_none(),
            "2 still missing: more parity"
        );
        assert!(run.sendable(&s, 140) > first);
    }

    /// M data fragments of one byte, `redundancy` parity at most, groups as the estimates say.
    fn settings_m(m: usize, redundancy: usize) -> Settings {
        let mut s = settings();
        s.frag = FragSetup::for_image(m, 1, 0, 0, 1, 0, [0; 4]).unwrap();
        s.redundancy = redundancy;
        s.adaptive = Some(AdaptiveParity {
            group: None,
            status_wait: AdaptiveParity::default_status_wait(1),
        });
        s
    }

    /// Without `parity_group` the first group is the neediest device's whole estimate, from
    /// its own loss weighed against the fleet's (the first answers': 30 of 200 lost).
    #[test]
    fn first_group_covers_the_neediest_device() {
        let s = settings_m(100, 40);
        let mut devs = vec![
            in_session(1, &s, Reading::Count),
            in_session(2, &s, Reading::Count),
        ];
        let mut run = session_run(&s);
        let mut out = Vec::new();
        round(
            &mut run,
            &mut devs,
            &s,
            t0(),
            &[(0, 90, 10), (1, 80, 20)],
            &mut out,
        );
        assert_eq!(run.adaptive.fleet_loss, Some(0.15));
        // The neediest: 20 missing plus the code's overhead, at (20 + 100 x 15 %) / 200.
        let extra = OverheadTable::measure(100).extra_for(20);
        let more = ((20.0 + extra) / (1.0 - 35.0 / 200.0)).ceil() as usize;
        assert!((22..40).contains(&more), "{more}");
        assert_eq!(devs[1].adaptive.as_ref().unwrap().need.more as usize, more);
        assert_eq!(run.sendable(&s, 140), 100 + more, "one group, not 5 % of M");
        assert!(run.adaptive.stopped.is_none());
    }

    /// M = 600, LoRaMac-node-like devices that lost about 300 data fragments each: their
    /// one-byte MissingFrag says 44, 42 and 43. The gaps after their last N seen (0, 2, 1: a
    /// loss of 3 in 3 + 3 draws) give the fleet's loss; with it the counts unwrap to 300, 298
    /// and 299, the first group is what 300 lost need, and the rounds end on the answers.
    #[test]
    fn wrapped_lost_counts_are_unwrapped_across_the_rounds() {
        let s = settings_m(600, 1000);
        let mut devs: Vec<Dev> = (1..=3)
            .map(|n| in_session(n, &s, Reading::HighestN))
            .collect();
        let mut run = session_run(&s);
        let mut out = Vec::new();
        let at = round(
            &mut run,
            &mut devs,
            &s,
            t0(),
            &[(0, 600, 44), (1, 598, 42), (2, 599, 43)],
            &mut out,
        );
        assert_eq!(run.adaptive.fleet_loss, Some(0.5));
        let lost: Vec<_> = devs
            .iter()
            .map(|d| d.adaptive.as_ref().unwrap().lost)
            .collect();
        assert_eq!(lost, [Some(300), Some(298), Some(299)]);
        // 300 + 1.617 received at (300 + 100 x 50 %) / 700 = 50 %: 604.
        assert_eq!(devs[0].adaptive.as_ref().unwrap().need.more, 604);
        assert_eq!(run.sendable(&s, 1600), 1204);
        // Still counting at the last N sent, its count is still 300 (never lower), and its
        // estimate has run out: one standard deviation of the 604 parity it saw,
        // sqrt(604 x 0.25) = 12.3 at 50 %: 25 more.
        let at = round(&mut run, &mut devs, &s, at, &[(0, 1204, 44)], &mut out);
        let r = devs[0].adaptive.as_ref().unwrap();
        assert_eq!(
            (r.lost, r.lost_before, r.need.more),
            (Some(300), Some(300), 25)
        );
        assert_eq!(run.sendable(&s, 1600), 1229);
        // It stopped counting at N 1,210, 19 before the last sent (0.5^19): rebuilt. The
        // others have been silent for two rounds since their estimates were sent: done.
        round(&mut run, &mut devs, &s, at, &[(0, 1210, 44)], &mut out);
        assert_eq!(
            devs[0].adaptive.as_ref().unwrap().need.basis,
            NeedBasis::LikelyComplete
        );
        assert_eq!(run.adaptive.stopped, Some(Stop::NoneNeedMore));
        assert_eq!(run.adaptive.limit, 1229);
        assert_eq!(run.adaptive.rounds, 3);
    }
}

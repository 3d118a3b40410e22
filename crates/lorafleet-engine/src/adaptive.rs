//! Adaptive parity (`fragmentation.parity: "adaptive"`): parity is sent in groups, and
//! between groups the engine asks the multicast group for its fragmentation status and sends
//! more only while some device still needs it.
//!
//! After the uncoded fragments and after each parity group the engine sends one multicast
//! FragSessionStatusReq with the Participants bit clear, so only devices still missing
//! fragments answer (LoRaMac-node-like stacks answer whenever they lost a data fragment, which
//! their reading takes into account). It waits [`AdaptiveParity::status_wait`], then estimates
//! from each answer, in the device's stack's reading ([`lorafleet_codec::frag_status`]), how
//! many more parity fragments that device needs, and sends the next group (at most what the
//! neediest device needs) while any estimate is positive, the campaign's `redundancy` is not
//! used up and the session has time left. Otherwise it stops, and the campaign moves on at
//! once instead of waiting for the session's end.
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
    parity_needed, FragStatus, Layout, NeedBasis, ParityNeed, Reading, CID_FRAG_SESSION_STATUS,
};
use lorafleet_codec::redundancy::OverheadTable;

use crate::commands;
use crate::machine::{Action, Dev, Level, Run, Settings, Step};
use crate::ports;

/// The share of M a parity group has by default (5 %), at least one fragment.
const DEFAULT_GROUP_PERCENT: usize = 5;

/// FragSessionStatusReq copies per round. Each costs a few bytes of air time; one copy at 20 %
/// loss leaves a device silent (request or answer lost) in 36 % of rounds, two in about 8 %.
pub const STATUS_COPIES: usize = 2;

/// Silent rounds after which a device that last asked for more counts as done.
pub const CONFIRM_ROUNDS: u32 = 2;

/// How adaptive parity is configured for a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveParity {
    /// Parity fragments per group (`fragmentation.parity_group`), at least 1.
    pub group: usize,
    /// How long to collect answers after each FragSessionStatusReq
    /// (`fragmentation.status_wait_s`).
    pub status_wait: TimeDelta,
}

impl AdaptiveParity {
    /// 5 % of M, rounded up, at least 1.
    pub fn default_group(nb_frag: usize) -> usize {
        (nb_frag * DEFAULT_GROUP_PERCENT).div_ceil(100).max(1)
    }

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

/// The round's decision from the devices' estimates: the next group (no more than the
/// neediest device needs, nor than is left of `redundancy`), or why to stop.
pub fn decide(
    needs: impl IntoIterator<Item = Need>,
    parity_sent: usize,
    redundancy: usize,
    group: usize,
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
    Decision::Send(wanted.min(group.max(1)).min(left))
}

/// The campaign-wide state of adaptive parity, kept in [`Run`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    let parity_sent = run.adaptive.parity_at_ask;
    let table = OverheadTable::measure(usize::from(s.frag.nb_frag));
    let need = parity_needed(&status, &table, parity_sent as u32);
    d.frag_status = Some((received, missing));
    d.frag_status_at = Some(at);
    d.adaptive = Some(Report {
        status,
        parity_sent,
        need,
        at,
        silent_rounds: 0,
    });
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
                group: 5,
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
        assert_eq!(AdaptiveParity::default_group(64), 4);
        assert_eq!(AdaptiveParity::default_group(500), 25);
        assert_eq!(AdaptiveParity::default_group(2000), 100);
        assert_eq!(AdaptiveParity::default_group(1), 1);
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
            decide([n(3), n(0), n(2)], 0, 40, 5, true),
            Decision::Send(3)
        );
        assert_eq!(decide([n(30)], 0, 40, 5, true), Decision::Send(5));
        assert_eq!(decide([n(30)], 38, 40, 5, true), Decision::Send(2));
        assert_eq!(decide([n(0), waiting], 5, 40, 5, true), Decision::Confirm);
        assert_eq!(decide([n(1), waiting], 5, 40, 5, true), Decision::Send(1));
        assert_eq!(
            decide([waiting], 5, 40, 5, false),
            Decision::Stop(Stop::NoneNeedMore)
        );
        assert_eq!(
            decide([n(30)], 40, 40, 5, true),
            Decision::Stop(Stop::RedundancyCap)
        );
        assert_eq!(
            decide([n(30)], 10, 40, 5, false),
            Decision::Stop(Stop::SessionEnd)
        );
        assert_eq!(
            decide([n(0), n(0)], 10, 40, 5, true),
            Decision::Stop(Stop::NoneNeedMore)
        );
        assert_eq!(
            decide([], 0, 40, 5, true),
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
}

//! How a device's firmware is checked before and verified after an update, by the method the
//! device speaks: Version & Status (lorafleet's own package, the demo devices) or Firmware
//! Management (TS006, what stock stacks such as LoRaMac-node, ST's middleware and LoRa Basics
//! Modem implement). `auto` asks Version & Status first, then Firmware Management, and keeps
//! the method that answered for the rest of the campaign.
//!
//! With Firmware Management the verification after the fragments is three requests:
//! DevUpgradeImageReq (did the device rebuild a valid image, and which version), a reboot at
//! one GPS time for the whole group (DevRebootTimeReq) or after a countdown to that same time
//! (DevRebootCountdownReq), then DevVersionReq once the reboot delay passed.
//!
//! A FragSessionStatusAns is a report, not proof: the same bytes mean different things per
//! device stack (`lorafleet_codec::frag_status`), so while a version method can decide, the
//! status answer never decides alone.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use lorafleet_codec::firmware_management::{
    self as fm, Answer, ImageStatus, RawVersion, RebootCountdown, RebootCountdownAnswer,
    RebootTime, RebootTimeAnswer, MAX_COUNTDOWN_S,
};
use lorafleet_codec::frag_status::{FragStatus, Layout, Reading};

use super::{Action, Dev, FragStatusWhen, Level, Outcome, Request, Run, Settings, Step, Target};
use crate::commands::Reply;

/// How the engine asks a device for its firmware version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// lorafleet's Version & Status package (VersionRunningReq, SpaceStatusReq).
    VersionStatus,
    /// TS006 Firmware Management (DevVersionReq, DevUpgradeImageReq, the reboot requests).
    FirmwareManagement,
    /// Version & Status first, then Firmware Management; the one that answers is kept.
    Auto,
    /// Not asked (in a device row: the device answered neither).
    None,
}

impl Method {
    /// The method asked first.
    pub fn first(self) -> Option<Method> {
        match self {
            Method::Auto | Method::VersionStatus => Some(Method::VersionStatus),
            Method::FirmwareManagement => Some(Method::FirmwareManagement),
            Method::None => None,
        }
    }

    /// The method to ask when `tried` got no answer.
    fn fallback(self, tried: Option<Method>) -> Option<Method> {
        (self == Method::Auto && tried == Some(Method::VersionStatus))
            .then_some(Method::FirmwareManagement)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::VersionStatus => "version_status",
            Method::FirmwareManagement => "firmware_management",
            Method::Auto => "auto",
            Method::None => "none",
        }
    }
}

/// Which Firmware Management request schedules the reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebootWith {
    /// DevRebootTimeReq: one GPS time for the whole group, so the fleet reboots together
    /// (a device answering `0` is sent the countdown instead).
    RebootTime,
    /// DevRebootCountdownReq to the same moment: for ST's middleware, whose DevRebootTimeReq
    /// is off by the GPS epoch.
    RebootCountdown,
}

/// What a device said through Firmware Management during the campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FmReport {
    /// DevVersionAns FWversion, the 4 bytes as sent, in hex.
    #[serde(default)]
    pub firmware_version: Option<String>,
    /// DevVersionAns HWversion, in hex.
    #[serde(default)]
    pub hardware_version: Option<String>,
    /// DevUpgradeImageAns: `absent`, `corrupt`, `incompatible` or `valid`.
    #[serde(default)]
    pub image: Option<String>,
    /// nextFirmwareVersion of a valid image, in hex.
    #[serde(default)]
    pub image_version: Option<String>,
    /// When the device said it reboots.
    #[serde(default)]
    pub reboot_at: Option<DateTime<Utc>>,
    /// It answered DevRebootTimeReq with `0` (no clock, or a time it thinks past): the
    /// countdown is used instead.
    #[serde(default)]
    pub countdown: bool,
}

/// The replies of a Firmware Management uplink (FPort 203 by default); a malformed frame is
/// one `Other` with the decoder's message.
pub fn parse_firmware_management(data: &[u8]) -> Vec<Reply> {
    match fm::parse_answers(data) {
        Ok(answers) => answers.into_iter().map(Reply::FirmwareManagement).collect(),
        Err(e) => vec![Reply::Other(format!("Firmware Management: {e}"))],
    }
}

/// How a device's stack most likely fills FragSessionStatusAns: as set for it, else (nothing on
/// the air says so) devices found through Firmware Management are taken for LoRaMac-node's
/// reading (NbFragReceived the highest N, MissingFrag the data fragments lost), the others for
/// the specification's.
fn assumed_reading(d: &Dev) -> Reading {
    let fm = Some(Method::FirmwareManagement);
    if let Some(r) = d.frag_reading {
        r
    } else if d.check_method_used == fm || d.verify_method_used == fm {
        Reading::HighestN
    } else {
        Reading::Count
    }
}

fn image_words(st: ImageStatus) -> &'static str {
    match st {
        ImageStatus::NoImage => "absent",
        ImageStatus::Corrupt => "corrupt",
        ImageStatus::WrongHardware => "incompatible",
        ImageStatus::Valid { .. } => "valid",
    }
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

impl Target {
    /// Whether a Firmware Management version names the target: the specification's
    /// little-endian u32, or ST's most-significant-first bytes.
    fn is_fm(&self, v: RawVersion) -> Option<bool> {
        let le = self.is(v.as_u32_le(), None)?;
        Some(le || self.is(v.as_u32_msb_first(), None).unwrap_or(false))
    }
}

impl Run {
    /// The request of a Firmware Management step, or of a check or verification asked through
    /// Firmware Management; None for everything else.
    pub(super) fn fm_request(&self, d: &Dev, s: &Settings, now: DateTime<Utc>) -> Option<Request> {
        let by_fm = d.trying == Some(Method::FirmwareManagement);
        let (req, what) = match d.step {
            Step::Check | Step::Verify if by_fm => {
                (fm::Request::DevVersion, "Firmware Management DevVersionReq")
            }
            Step::ImageStatus => (
                fm::Request::DevUpgradeImage,
                "Firmware Management DevUpgradeImageReq",
            ),
            Step::Reboot => self.reboot_request(d, s, now),
            _ => return None,
        };
        // The device's own Firmware Management FPort once its packages are resolved.
        let port = d
            .packages
            .map_or(s.fm_port, |p| p.packages.firmware_management.f_port);
        Some((port, req.to_vec().map_err(|e| e.to_string()), what))
    }

    /// The moment every device of the group reboots: after the session, once the status
    /// answers, the image status and the reboot request could each have taken every retry.
    pub fn group_reboot_at(&self, s: &Settings, now: DateTime<Utc>) -> DateTime<Utc> {
        let base = self
            .verify_at
            .map(|v| v - s.reboot_delay)
            .or(self.fragments_sent_at)
            .unwrap_or(now);
        let steps = if s.frag_status == FragStatusWhen::Never {
            2
        } else {
            3
        };
        whole_seconds(base + s.step_budget() * steps + TimeDelta::seconds(1))
    }

    fn reboot_request(
        &self,
        d: &Dev,
        s: &Settings,
        now: DateTime<Utc>,
    ) -> (fm::Request, &'static str) {
        let at = self.group_reboot_at(s, now);
        let gps = lorafleet_codec::time::unix_to_gps(at.timestamp());
        // A time the request may not reach before it passes is sent as a countdown.
        if s.reboot_with == RebootWith::RebootTime
            && !d.fm.countdown
            && at - now > s.unicast_timeout
        {
            let req = fm::Request::DevRebootTime(RebootTime::At { gps_seconds: gps });
            return (req, "Firmware Management DevRebootTimeReq");
        }
        let seconds = (at - now)
            .num_seconds()
            .clamp(1, i64::from(MAX_COUNTDOWN_S)) as u32;
        (
            fm::Request::DevRebootCountdown(RebootCountdown::After { seconds }),
            "Firmware Management DevRebootCountdownReq",
        )
    }

    /// The command a device waits for, in the log's words.
    pub(super) fn command_of(&self, d: &Dev) -> &'static str {
        match (d.step, d.trying) {
            (Step::Check | Step::Verify, Some(Method::FirmwareManagement)) => {
                "Firmware Management DevVersionReq"
            }
            (step, _) => step.command(),
        }
    }

    /// Takes the replies only a method knows (Firmware Management answers, the raw status
    /// answer); hands every other reply back.
    pub(super) fn reply_by_method(
        &mut self,
        d: &mut Dev,
        reply: Reply,
        s: &Settings,
        t: &Target,
        at: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) -> Option<Reply> {
        match reply {
            Reply::FirmwareManagement(a) => {
                self.fm_answered(d, a, s, t, at, out);
                None
            }
            Reply::FragStatusRaw(bytes) => {
                let reading = assumed_reading(d);
                if let Ok(r) = FragStatus::from_slice(&bytes, Layout::V1, reading) {
                    if r.fields.frag_index == s.frag.index {
                        d.frag_status_report = Some(r);
                    }
                }
                None
            }
            other => Some(other),
        }
    }

    fn fm_answered(
        &mut self,
        d: &mut Dev,
        a: Answer,
        s: &Settings,
        t: &Target,
        at: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        match (d.step, a) {
            (step, Answer::DevVersion { firmware, hardware }) => {
                d.fm.firmware_version = Some(firmware.hex());
                d.fm.hardware_version = Some(hardware.hex());
                match step {
                    Step::Check => {
                        d.check_method_used = Some(Method::FirmwareManagement);
                        // Adaptive parity reads this device's status answers the same way.
                        d.frag_reading.get_or_insert(assumed_reading(d));
                        d.running_version = Some(firmware.as_u32_le());
                        self.checked(d, s, t, at, out);
                    }
                    Step::Verify => self.fm_version_answered(d, firmware, t, at, out),
                    _ => {}
                }
            }
            (Step::ImageStatus, Answer::DevUpgradeImage(st)) => {
                self.image_status_answered(d, st, s, t, at, out);
            }
            (Step::Reboot, Answer::DevRebootTime(RebootTimeAnswer::InSeconds(n)))
            | (Step::Reboot, Answer::DevRebootCountdown(RebootCountdownAnswer::InSeconds(n))) => {
                let reboot = at + TimeDelta::seconds(i64::from(n));
                d.fm.reboot_at = Some(reboot);
                d.step = Step::RebootWait;
                d.attempts = 0;
                d.next_action_at = Some(reboot + s.reboot_delay);
            }
            (Step::Reboot, Answer::DevRebootTime(RebootTimeAnswer::CannotReboot))
                if !d.fm.countdown =>
            {
                d.fm.countdown = true;
                out.push(Action::Log {
                    level: Level::Warning,
                    dev_eui: Some(d.dev_eui),
                    message: "DevRebootTimeAns: cannot reboot at that time (no clock?); sending the countdown instead".into(),
                });
                self.go(d, Step::Reboot, s, at, out);
            }
            (
                Step::Reboot,
                Answer::DevRebootTime(RebootTimeAnswer::Cancelled)
                | Answer::DevRebootCountdown(RebootCountdownAnswer::Cancelled),
            ) => {
                let e = "the device answered the reboot request with \"cancelled\"".to_string();
                Self::finish(d, Outcome::NotUpdated, Some(e), at, out);
            }
            _ => {}
        }
    }

    /// DevUpgradeImageAns: the received image's status decides whether to reboot into it.
    fn image_status_answered(
        &self,
        d: &mut Dev,
        st: ImageStatus,
        s: &Settings,
        t: &Target,
        at: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        d.verify_method_used = Some(Method::FirmwareManagement);
        d.fm.image = Some(image_words(st).to_string());
        let problem = match st {
            ImageStatus::NoImage => Some("it has no image".to_string()),
            ImageStatus::Corrupt => Some("its image is corrupt or badly signed".to_string()),
            ImageStatus::WrongHardware => Some("its image is for other hardware".to_string()),
            ImageStatus::Valid {
                next_firmware_version: v,
            } => {
                d.fm.image_version = Some(v.hex());
                // ST's builds send 0 here: no version to compare, not a wrong one.
                (v.0 != [0; 4] && t.is_fm(v) == Some(false))
                    .then(|| format!("its valid image is version {}, not the campaign's", v.hex()))
            }
        };
        match problem {
            Some(p) => {
                let why = self.frag_status_words(d);
                let e = format!("DevUpgradeImageAns: {p}{why}");
                Self::finish(d, Outcome::NotUpdated, Some(e), at, out);
            }
            None => self.go(d, Step::Reboot, s, at, out),
        }
    }

    /// The status answer in words, for a device that was not updated.
    fn frag_status_words(&self, d: &Dev) -> String {
        match &d.frag_status_report {
            Some(r) => format!(
                " (its FragSessionStatusAns {} read as {}: NbFragReceived {}, MissingFrag {})",
                r.raw_hex,
                match r.reading {
                    Reading::Count => "count",
                    Reading::HighestN => "highest_n",
                },
                r.fields.nb_frag_received,
                r.fields.missing_frag
            ),
            None => String::new(),
        }
    }

    fn fm_version_answered(
        &self,
        d: &mut Dev,
        firmware: RawVersion,
        t: &Target,
        at: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        d.verify_method_used = Some(Method::FirmwareManagement);
        d.running_version = Some(firmware.as_u32_le());
        match t.is_fm(firmware) {
            Some(true) => Self::finish(d, Outcome::Verified, None, at, out),
            None => Self::finish(d, Outcome::Completed, None, at, out),
            Some(false) => {
                let e = format!(
                    "still runs {} (DevVersionAns) after the reboot{}",
                    firmware.hex(),
                    self.frag_status_words(d)
                );
                Self::finish(d, Outcome::NotUpdated, Some(e), at, out);
            }
        }
    }

    /// Starts the verification by the device's method. False: Version & Status, which the
    /// caller carries on with (the reboot delay, then VersionRunningReq).
    pub(super) fn verify_by_method(
        &self,
        d: &mut Dev,
        s: &Settings,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) -> bool {
        let method = match s.verify_method {
            Method::None => {
                d.verify_method_used = Some(Method::None);
                let e = "engine.verify_method is \"none\"".to_string();
                Self::finish(d, Outcome::DeliveredUnverified, Some(e), now, out);
                return true;
            }
            Method::Auto => match d.check_method_used {
                Some(Method::FirmwareManagement) => Method::FirmwareManagement,
                _ => Method::VersionStatus,
            },
            m => m,
        };
        d.trying = Some(method);
        if method == Method::FirmwareManagement {
            self.go(d, Step::ImageStatus, s, now, out);
            return true;
        }
        false
    }

    /// A FragSessionStatusAns after the session, while a version method can still decide: it
    /// is logged as the device's report and the verification goes on. False when no version
    /// method will ask (the caller reads the status as before).
    pub(super) fn status_is_only_a_report(
        &self,
        d: &mut Dev,
        memory_error: bool,
        s: &Settings,
        at: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) -> bool {
        let (received, missing) = d.frag_status.unwrap_or_default();
        let highest_n = d
            .frag_status_report
            .as_ref()
            .is_some_and(|r| r.reading == Reading::HighestN);
        let verifiable = s.verify && s.verify_method != Method::None;
        if !verifiable && !highest_n {
            return false;
        }
        if missing > 0 || memory_error {
            let report = self.frag_status_words(d);
            out.push(Action::Log {
                level: Level::Info,
                dev_eui: Some(d.dev_eui),
                message: format!(
                    "FragSessionStatusAns reports {received} / {missing} missing{report}; {}",
                    if verifiable {
                        "the version check decides"
                    } else {
                        "in this reading that does not say whether it rebuilt the image"
                    }
                ),
            });
        }
        if verifiable {
            self.after_session(d, s, at, out);
        } else if memory_error {
            let e = format!(
                "FragSessionStatusAns: status error{}",
                self.frag_status_words(d)
            );
            Self::finish(d, Outcome::NotUpdated, Some(e), at, out);
        } else {
            Self::finish(d, Outcome::DeliveredUnverified, None, at, out);
        }
        true
    }

    /// A device gave up on the current request: another method to try, or the honest outcome
    /// of a device that answers no version method. False: the caller decides as before.
    pub(super) fn gave_up_on_method(
        &self,
        d: &mut Dev,
        s: &Settings,
        unanswered: &str,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) -> bool {
        let answered =
            |m: Method| d.check_method_used == Some(m) || d.verify_method_used == Some(m);
        match d.step {
            Step::Check => {
                if d.running_version.is_some() || d.slot_size.is_some() {
                    return false;
                }
                if let Some(next) = s.check_method.fallback(d.trying) {
                    out.push(Action::Log {
                        level: Level::Info,
                        dev_eui: Some(d.dev_eui),
                        message: format!("{unanswered}; asking through Firmware Management"),
                    });
                    d.trying = Some(next);
                    self.go(d, Step::Check, s, now, out);
                    return true;
                }
                d.check_method_used = Some(Method::None);
                false
            }
            Step::Verify if d.trying == Some(Method::VersionStatus) => {
                if !answered(Method::VersionStatus) && s.verify_method == Method::Auto {
                    d.trying = Some(Method::FirmwareManagement);
                    self.go(d, Step::ImageStatus, s, now, out);
                    return true;
                }
                self.unverifiable(d, unanswered, now, out)
            }
            Step::Verify | Step::ImageStatus | Step::Reboot => {
                self.unverifiable(d, unanswered, now, out)
            }
            _ => false,
        }
    }

    /// A device that took part in the session but never answered any version method is
    /// `delivered_unverified`; one that answered before and went silent is left to the caller
    /// (unreachable).
    fn unverifiable(
        &self,
        d: &mut Dev,
        unanswered: &str,
        now: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) -> bool {
        let known = [Method::VersionStatus, Method::FirmwareManagement]
            .iter()
            .any(|&m| d.check_method_used == Some(m) || d.verify_method_used == Some(m));
        if known {
            return false;
        }
        d.verify_method_used = Some(Method::None);
        Self::finish(
            d,
            Outcome::DeliveredUnverified,
            Some(unanswered.to_string()),
            now,
            out,
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{FragSetup, MulticastClass};
    use crate::machine::{CheckMode, Phase};
    use lorafleet_codec::eui::DevEui;

    const NEW: u32 = 0x0001_0300;
    const OLD: u32 = 0x0001_0200;

    fn settings(check: CheckMode, method: Method) -> Settings {
        Settings {
            group_id: 0,
            class: MulticastClass::C,
            dr: 5,
            frequency: 869_525_000,
            timeout_exp: 6,
            unicast_timeout: TimeDelta::seconds(60),
            attempts: 2,
            frag: FragSetup::for_image(1000, 50, 0, 0, 0, 0, [0; 4]).unwrap(),
            redundancy: 5,
            frag_status: FragStatusWhen::AfterSession,
            check,
            verify: true,
            reboot_delay: TimeDelta::seconds(30),
            status_port: 111,
            check_method: method,
            verify_method: method,
            fm_port: 203,
            reboot_with: RebootWith::RebootTime,
            adaptive: None,
        }
    }

    fn target() -> Target {
        Target {
            image_len: 1000,
            version: Some(NEW),
            ..Default::default()
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn sent(out: &[Action]) -> Vec<(u8, Vec<u8>)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Unicast { f_port, data, .. } => Some((*f_port, data.clone())),
                _ => None,
            })
            .collect()
    }

    fn fm_version(v: u32) -> Reply {
        Reply::FirmwareManagement(Answer::DevVersion {
            firmware: RawVersion::from_u32_le(v),
            hardware: RawVersion::from_u32_le(7),
        })
    }

    /// A run whose session ended at `t0()`, with the device in the session.
    fn after_session(s: &Settings) -> Run {
        let mut run = Run::new(s, [1, 2, 3, 4], [9; 16], t0());
        run.phase = Phase::Session;
        run.session_start = Some(t0() - s.session_length());
        run.fragments_sent_at = Some(t0() - TimeDelta::seconds(5));
        run
    }

    fn in_session(n: u8, s: &Settings, check_used: Option<Method>) -> Dev {
        let mut d = Dev::new(DevEui([n; 8]), [0; 16], None, s, t0());
        d.step = Step::InSession;
        d.next_action_at = None;
        d.check_method_used = check_used;
        d
    }

    /// Gives up the device's current request: every attempt, unanswered.
    fn time_out(run: &mut Run, d: &mut Dev, s: &Settings, out: &mut Vec<Action>) {
        let asking = (d.step, d.trying);
        let mut now = d.next_action_at.unwrap_or(t0());
        while (d.step, d.trying) == asking && !d.is_done() {
            run.tick(std::slice::from_mut(d), s, &target(), now, out);
            now += s.unicast_timeout;
        }
    }

    #[test]
    fn a_firmware_management_device_is_checked_by_dev_version() {
        let s = settings(CheckMode::Refuse, Method::FirmwareManagement);
        let mut d = Dev::new(DevEui([1; 8]), [0; 16], None, &s, t0());
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut out = Vec::new();
        run.tick(std::slice::from_mut(&mut d), &s, &target(), t0(), &mut out);
        assert_eq!(sent(&out), vec![(203, vec![0x01])], "DevVersionReq");
        out.clear();
        run.reply(&mut d, fm_version(OLD), &s, &target(), t0(), &mut out);
        assert_eq!(d.check_method_used, Some(Method::FirmwareManagement));
        assert_eq!(d.step, Step::McGroupSetup);
        assert_eq!(d.fm.firmware_version.as_deref(), Some("00020100"));
        assert_eq!(d.fm.hardware_version.as_deref(), Some("07000000"));
    }

    /// Image status, one reboot time, then DevVersionReq: verified by Firmware Management.
    #[test]
    fn a_firmware_management_device_is_verified_after_image_status_and_reboot() {
        let s = settings(CheckMode::Refuse, Method::Auto);
        let t = target();
        let mut run = after_session(&s);
        let mut devs = vec![in_session(1, &s, Some(Method::FirmwareManagement))];
        let mut out = Vec::new();
        run.tick(&mut devs, &s, &t, t0(), &mut out);
        assert_eq!(devs[0].step, Step::FragStatus);
        // LoRaMac-node's answer for a device that rebuilt its image after losing 8 fragments.
        let status = vec![0x01, 0x2b, 0x00, 0x08, 0x00];
        for r in crate::commands::parse_uplink(201, &status, 111) {
            run.reply(&mut devs[0], r, &s, &t, t0(), &mut out);
        }
        let report = devs[0].frag_status_report.clone().unwrap();
        assert_eq!(
            (report.raw_hex.as_str(), report.reading),
            ("012b000800", Reading::HighestN)
        );
        assert_eq!(devs[0].step, Step::ImageStatus, "not not_updated");
        out.clear();
        let valid = ImageStatus::Valid {
            next_firmware_version: RawVersion::from_u32_le(NEW),
        };
        let a = Reply::FirmwareManagement(Answer::DevUpgradeImage(valid));
        run.reply(&mut devs[0], a, &s, &t, t0(), &mut out);
        let reboot_at = run.group_reboot_at(&s, t0());
        let gps = lorafleet_codec::time::unix_to_gps(reboot_at.timestamp());
        let mut want = vec![0x02];
        want.extend(gps.to_le_bytes());
        assert_eq!(sent(&out), vec![(203, want)], "DevRebootTimeReq");
        let ans = Answer::DevRebootTime(RebootTimeAnswer::InSeconds(300));
        run.reply(
            &mut devs[0],
            Reply::FirmwareManagement(ans),
            &s,
            &t,
            t0(),
            &mut out,
        );
        let verify_at = t0() + TimeDelta::seconds(330);
        assert_eq!(
            (devs[0].step, devs[0].next_action_at),
            (Step::RebootWait, Some(verify_at))
        );
        out.clear();
        run.tick(&mut devs, &s, &t, verify_at, &mut out);
        assert_eq!(sent(&out), vec![(203, vec![0x01])], "DevVersionReq");
        run.reply(&mut devs[0], fm_version(NEW), &s, &t, verify_at, &mut out);
        assert_eq!(devs[0].outcome, Some(Outcome::Verified));
        assert_eq!(devs[0].verify_method_used, Some(Method::FirmwareManagement));
    }

    #[test]
    fn the_whole_group_is_given_one_reboot_time() {
        let s = Settings {
            frag_status: FragStatusWhen::Never,
            ..settings(CheckMode::Off, Method::FirmwareManagement)
        };
        let run = after_session(&s);
        let mut a = in_session(1, &s, None);
        let mut b = in_session(2, &s, None);
        let mut out = Vec::new();
        a.step = Step::Reboot;
        b.step = Step::Reboot;
        run.send(&mut a, &s, t0(), &mut out);
        run.send(&mut b, &s, t0() + TimeDelta::seconds(40), &mut out);
        let frames = sent(&out);
        assert_eq!(frames[0], frames[1]);
        assert_eq!(frames[0].1[0], 0x02);
    }

    #[test]
    fn a_device_that_cannot_reboot_at_a_time_gets_the_countdown() {
        let s = settings(CheckMode::Off, Method::FirmwareManagement);
        let mut run = after_session(&s);
        let mut d = in_session(1, &s, None);
        d.trying = Some(Method::FirmwareManagement);
        d.step = Step::Reboot;
        let mut out = Vec::new();
        let ans = Answer::DevRebootTime(RebootTimeAnswer::CannotReboot);
        run.reply(
            &mut d,
            Reply::FirmwareManagement(ans),
            &s,
            &target(),
            t0(),
            &mut out,
        );
        let frames = sent(&out);
        let left = (run.group_reboot_at(&s, t0()) - t0()).num_seconds() as u32;
        assert_eq!(
            frames,
            vec![(203, [&[0x03][..], &left.to_le_bytes()[..3]].concat())]
        );
        assert!(d.fm.countdown);
    }

    #[test]
    fn auto_falls_back_to_firmware_management_and_remembers_it() {
        let s = settings(CheckMode::Refuse, Method::Auto);
        let mut d = Dev::new(DevEui([1; 8]), [0; 16], None, &s, t0());
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut out = Vec::new();
        run.tick(std::slice::from_mut(&mut d), &s, &target(), t0(), &mut out);
        assert_eq!(sent(&out)[0].0, 111, "Version & Status first");
        out.clear();
        time_out(&mut run, &mut d, &s, &mut out);
        // Not given up: the same step, asked through Firmware Management.
        assert_eq!(
            (d.step, d.trying),
            (Step::Check, Some(Method::FirmwareManagement))
        );
        assert_eq!(sent(&out).last().unwrap(), &(203, vec![0x01]));
        run.reply(&mut d, fm_version(OLD), &s, &target(), t0(), &mut out);
        assert_eq!(d.check_method_used, Some(Method::FirmwareManagement));
        // After the session the verification goes straight to Firmware Management.
        d.step = Step::InSession;
        out.clear();
        run.after_session(&mut d, &s, t0(), &mut out);
        assert_eq!(d.step, Step::ImageStatus);
        assert_eq!(sent(&out), vec![(203, vec![0x04])]);
    }

    #[test]
    fn a_device_answering_neither_method() {
        // Refuse: left out once both methods went unanswered.
        let s = settings(CheckMode::Refuse, Method::Auto);
        let mut d = Dev::new(DevEui([1; 8]), [0; 16], None, &s, t0());
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        let mut out = Vec::new();
        time_out(&mut run, &mut d, &s, &mut out);
        time_out(&mut run, &mut d, &s, &mut out);
        assert_eq!(d.outcome, Some(Outcome::Unreachable));
        assert_eq!(d.check_method_used, Some(Method::None));
        // Warn: updated anyway, and after the session neither method answers: delivered,
        // not verifiable (never success, never failure).
        let s = settings(CheckMode::Warn, Method::Auto);
        let mut d = Dev::new(DevEui([1; 8]), [0; 16], None, &s, t0());
        let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
        time_out(&mut run, &mut d, &s, &mut out);
        time_out(&mut run, &mut d, &s, &mut out);
        assert_eq!(d.step, Step::McGroupSetup);
        let mut run = after_session(&s);
        d.step = Step::InSession;
        d.next_action_at = None;
        let mut devs = vec![d];
        run.tick(&mut devs, &s, &target(), t0(), &mut out);
        time_out(&mut run, &mut devs[0], &s, &mut out); // FragSessionStatusReq
        let at = run.verify_at.unwrap();
        run.tick(&mut devs, &s, &target(), at, &mut out);
        assert_eq!(
            (devs[0].step, devs[0].trying),
            (Step::Verify, Some(Method::VersionStatus))
        );
        time_out(&mut run, &mut devs[0], &s, &mut out);
        assert_eq!(devs[0].step, Step::ImageStatus, "then Firmware Management");
        time_out(&mut run, &mut devs[0], &s, &mut out);
        assert_eq!(devs[0].outcome, Some(Outcome::DeliveredUnverified));
        assert!(!Outcome::DeliveredUnverified.succeeded());
        run.tick(&mut devs, &s, &target(), at, &mut out);
        assert_eq!((run.phase, run.failure.as_deref()), (Phase::Done, None));
    }

    /// A delta for another version: refuse leaves the device out, warn and off update it.
    #[test]
    fn a_firmware_management_mismatch_with_refuse_warn_and_off() {
        let t = Target {
            is_delta: true,
            from_version: Some("0x00010100".into()),
            ..target()
        };
        let outcome = |check: CheckMode| {
            let s = settings(check, Method::FirmwareManagement);
            let mut d = Dev::new(DevEui([1; 8]), [0; 16], None, &s, t0());
            let mut run = Run::new(&s, [1, 2, 3, 4], [9; 16], t0());
            let mut out = Vec::new();
            run.tick(std::slice::from_mut(&mut d), &s, &t, t0(), &mut out);
            run.reply(&mut d, fm_version(OLD), &s, &t, t0(), &mut out);
            (
                d.step,
                d.outcome,
                sent(&out).into_iter().map(|f| f.0).collect::<Vec<_>>(),
            )
        };
        let (_, refused, ports) = outcome(CheckMode::Refuse);
        assert_eq!((refused, ports), (Some(Outcome::Refused), vec![203]));
        let (step, _, ports) = outcome(CheckMode::Warn);
        assert_eq!((step, ports), (Step::McGroupSetup, vec![203, 200]));
        let (step, _, ports) = outcome(CheckMode::Off);
        assert_eq!(
            (step, ports),
            (Step::McGroupSetup, vec![200]),
            "no check at all"
        );
    }

    #[test]
    fn an_image_that_is_not_valid_is_not_rebooted_into() {
        let s = settings(CheckMode::Off, Method::FirmwareManagement);
        for (st, words) in [
            (ImageStatus::NoImage, "it has no image"),
            (ImageStatus::Corrupt, "corrupt"),
            (ImageStatus::WrongHardware, "other hardware"),
        ] {
            let mut run = after_session(&s);
            let mut d = in_session(1, &s, None);
            d.step = Step::ImageStatus;
            let mut out = Vec::new();
            let a = Reply::FirmwareManagement(Answer::DevUpgradeImage(st));
            run.reply(&mut d, a, &s, &target(), t0(), &mut out);
            assert_eq!(d.outcome, Some(Outcome::NotUpdated));
            assert!(d.error.as_deref().unwrap().contains(words), "{:?}", d.error);
            assert!(sent(&out).is_empty());
        }
    }

    #[test]
    fn a_firmware_management_device_still_on_its_old_version_is_not_updated() {
        let s = settings(CheckMode::Off, Method::FirmwareManagement);
        let mut run = after_session(&s);
        let mut d = in_session(1, &s, None);
        d.step = Step::Verify;
        d.trying = Some(Method::FirmwareManagement);
        let mut out = Vec::new();
        run.reply(&mut d, fm_version(OLD), &s, &target(), t0(), &mut out);
        assert_eq!(d.outcome, Some(Outcome::NotUpdated));
        assert!(d.error.unwrap().starts_with("still runs 00020100"));
    }

    /// Without any verification a highest-N answer with fragments "missing" is no failure:
    /// that reading cannot tell.
    #[test]
    fn without_verification_a_highest_n_status_is_delivered_unverified() {
        let s = Settings {
            verify: false,
            ..settings(CheckMode::Off, Method::Auto)
        };
        let mut run = after_session(&s);
        let mut d = in_session(1, &s, Some(Method::FirmwareManagement));
        d.step = Step::FragStatus;
        let mut out = Vec::new();
        for r in crate::commands::parse_uplink(201, &[0x01, 0x2b, 0x00, 0x08, 0x00], 111) {
            run.reply(&mut d, r, &s, &target(), t0(), &mut out);
        }
        assert_eq!(d.outcome, Some(Outcome::DeliveredUnverified));
    }

    /// A Version & Status device whose status answer says fragments are missing is still
    /// asked its version, which decides.
    #[test]
    fn a_status_answer_never_decides_while_the_version_can() {
        let s = settings(CheckMode::Refuse, Method::Auto);
        let t = target();
        let mut run = after_session(&s);
        let mut devs = vec![in_session(1, &s, Some(Method::VersionStatus))];
        let mut out = Vec::new();
        run.tick(&mut devs, &s, &t, t0(), &mut out);
        for r in crate::commands::parse_uplink(201, &[0x01, 0x05, 0x00, 0x07, 0x00], 111) {
            run.reply(&mut devs[0], r, &s, &t, t0(), &mut out);
        }
        assert_eq!(devs[0].outcome, None);
        assert_eq!(devs[0].step, Step::RebootWait);
        let report = devs[0].frag_status_report.clone().unwrap();
        assert_eq!(
            (report.reading, report.fields.missing_frag),
            (Reading::Count, 7)
        );
        let at = run.verify_at.unwrap();
        run.tick(&mut devs, &s, &t, at, &mut out);
        let v = Reply::VersionRunning { version: NEW };
        run.reply(&mut devs[0], v, &s, &t, at, &mut out);
        assert_eq!(devs[0].outcome, Some(Outcome::Verified));
        assert_eq!(devs[0].verify_method_used, Some(Method::VersionStatus));
    }

    #[test]
    fn firmware_management_uplinks_become_replies() {
        assert_eq!(
            parse_firmware_management(&[0x04, 0x00]),
            vec![Reply::FirmwareManagement(Answer::DevUpgradeImage(
                ImageStatus::NoImage
            ))]
        );
        assert!(matches!(
            parse_firmware_management(&[0x01, 0x00])[..],
            [Reply::Other(_)]
        ));
    }
}

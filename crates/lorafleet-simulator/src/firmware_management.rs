//! The device side of Firmware Management (TS006, FPort 203) for the stacks that speak it:
//! DevVersion, the received image's status, a reboot at a GPS time or after a countdown, and
//! deleting the received image. Answers follow LoRa Basics Modem, which follows the
//! specification: a frame with any malformed or unknown command gets no answer at all, and
//! "reboot as soon as possible" gets none either (the next uplink after the reboot confirms).

use lorafleet_codec::firmware_management::{
    self as fm, Answer, DeleteImageResult, ImageStatus, RawVersion, RebootCountdown,
    RebootCountdownAnswer, RebootTime, RebootTimeAnswer, Request,
};

use crate::device::{Effect, PendingReboot, SimDevice};

/// HWversion every simulated Firmware Management device reports.
pub const HARDWARE_VERSION: u32 = 1;

impl SimDevice {
    /// Handles a Firmware Management downlink: the answer payload (if any) and what the world
    /// must do (a reboot).
    pub(crate) fn firmware_management(
        &mut self,
        now_ms: i64,
        data: &[u8],
    ) -> (Option<Vec<u8>>, Vec<Effect>) {
        let Ok(requests) = fm::parse_requests(data) else {
            return (None, Vec::new());
        };
        let mut out = Vec::new();
        let mut effects = Vec::new();
        for r in requests {
            let Some(answer) = self.fm_answer(now_ms, r, &mut effects) else {
                continue;
            };
            if let Ok(bytes) = answer.to_vec() {
                out.extend(bytes);
            }
        }
        ((!out.is_empty()).then_some(out), effects)
    }

    fn fm_answer(&mut self, now_ms: i64, r: Request, effects: &mut Vec<Effect>) -> Option<Answer> {
        Some(match r {
            Request::PackageVersion => Answer::PackageVersion {
                package_identifier: fm::PACKAGE_IDENTIFIER,
                package_version: fm::PACKAGE_VERSION,
            },
            Request::DevVersion => Answer::DevVersion {
                firmware: RawVersion::from_u32_le(self.running_version()),
                hardware: RawVersion::from_u32_le(HARDWARE_VERSION),
            },
            Request::DevUpgradeImage => Answer::DevUpgradeImage(self.image_status()),
            Request::DevDeleteImage { version } => Answer::DevDeleteImage(self.delete(version)),
            Request::DevRebootTime(t) => {
                Answer::DevRebootTime(self.reboot_at_time(now_ms, t, effects)?)
            }
            Request::DevRebootCountdown(c) => {
                Answer::DevRebootCountdown(self.reboot_after(now_ms, c, effects)?)
            }
        })
    }

    fn image_status(&self) -> ImageStatus {
        match self.upgrade_version() {
            Some(v) => ImageStatus::Valid {
                next_firmware_version: RawVersion::from_u32_le(v),
            },
            None if self.state.last_error.is_some() => ImageStatus::Corrupt,
            None => ImageStatus::NoImage,
        }
    }

    fn upgrade_version(&self) -> Option<u32> {
        let slot = self.state.upgrade_image?;
        self.state.slots.get(usize::from(slot)).copied().flatten()
    }

    fn delete(&mut self, version: u32) -> DeleteImageResult {
        match (self.state.upgrade_image, self.upgrade_version()) {
            (Some(slot), Some(v)) if v == version => {
                self.state.slots[usize::from(slot)] = None;
                self.state.upgrade_image = None;
                self.state.reboot = None;
                DeleteImageResult::default()
            }
            (Some(_), Some(_)) => DeleteImageResult {
                invalid_version: true,
                ..Default::default()
            },
            _ => DeleteImageResult {
                no_valid_image: true,
                ..Default::default()
            },
        }
    }

    /// Schedules the reboot into the received image (or the running one when there is none).
    fn schedule_reboot(&mut self, at_ms: i64, effects: &mut Vec<Effect>) {
        let slot = self.state.upgrade_image.unwrap_or(self.state.running_slot);
        self.state.reboot = Some(PendingReboot { at_ms, slot });
        effects.push(Effect::Reboot { at_ms });
    }

    fn reboot_at_time(
        &mut self,
        now_ms: i64,
        t: RebootTime,
        effects: &mut Vec<Effect>,
    ) -> Option<RebootTimeAnswer> {
        match t {
            RebootTime::AsSoonAsPossible => {
                self.schedule_reboot(now_ms, effects);
                None
            }
            RebootTime::Cancel => {
                self.state.reboot = None;
                Some(RebootTimeAnswer::Cancelled)
            }
            RebootTime::At { gps_seconds } => {
                if !self.state.clock_synced {
                    return Some(RebootTimeAnswer::CannotReboot);
                }
                let delta = i64::from(gps_seconds) - i64::from(self.device_gps(now_ms));
                let Ok(delta) = u32::try_from(delta).map(|d| d.max(1)) else {
                    return Some(RebootTimeAnswer::CannotReboot);
                };
                self.schedule_reboot(now_ms + i64::from(delta) * 1000, effects);
                Some(RebootTimeAnswer::InSeconds(delta))
            }
        }
    }

    fn reboot_after(
        &mut self,
        now_ms: i64,
        c: RebootCountdown,
        effects: &mut Vec<Effect>,
    ) -> Option<RebootCountdownAnswer> {
        match c {
            RebootCountdown::AsSoonAsPossible => {
                self.schedule_reboot(now_ms, effects);
                None
            }
            RebootCountdown::Cancel => {
                self.state.reboot = None;
                Some(RebootCountdownAnswer::Cancelled)
            }
            RebootCountdown::After { seconds } => {
                self.schedule_reboot(now_ms + i64::from(seconds) * 1000, effects);
                Some(RebootCountdownAnswer::InSeconds(seconds))
            }
        }
    }
}

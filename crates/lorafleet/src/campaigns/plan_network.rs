//! The plan's figures that come from the real network (issue 10 item 8): the uplink interval
//! the network server uses for the devices (ChirpStack v4's device profile), the loss the
//! network reports (the simulated network's configured loss, or the gaps in ChirpStack
//! devices' frame counters), and the duty cycle of every sub-band the campaign sends in.
//!
//! Pure: `web::plan_network` gathers the facts, this module turns them into plan fields.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::plan::{self, Plan};
use super::region::RegionInfo;
use super::CampaignSettings;

/// Where the plan's uplink interval comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UplinkIntervalSource {
    /// The network server's device profile (ChirpStack v4 `uplink_interval`): what the devices
    /// are configured to send at, not what test traffic happened to show.
    DeviceProfile,
    /// The median gap between the devices' stored uplinks.
    Observed,
    /// Neither: the unicast timeout.
    #[default]
    Default,
}

/// Where the loss the redundancy advice assumes comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LossSource {
    /// The simulated network's configured loss (`network.simulated.loss`).
    Simulated,
    /// Uplink loss measured from frame-counter gaps of the campaign's devices' recent uplinks.
    FcntGaps,
    /// Too little to go by: [`plan::ADVICE_LOSS`].
    Default,
}

/// The loss the plan's redundancy advice is computed at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LossFigure {
    /// Share of frames lost, 0..1.
    pub value: f64,
    pub source: LossSource,
    /// Frames the measurement covers (frames expected from the counters); 0 for a configured
    /// loss.
    pub frames: u64,
}

/// One sub-band the campaign transmits in, with its duty-cycle rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubBandUse {
    /// Its frequency range: "869.4–869.65 MHz".
    pub band: String,
    /// Share of time a gateway may transmit in it; none where the region limits dwell time.
    pub duty_cycle: Option<f64>,
    /// Seconds on air the campaign spends in it (unicast figures are an upper estimate).
    pub airtime_s: f64,
    /// Seconds on air the duty cycle allows per hour.
    pub allowed_per_hour_s: Option<f64>,
    /// The frequencies used in it, Hz.
    pub frequencies: Vec<u32>,
    /// What is sent there: `multicast fragments`, `unicast setup (RX2)`.
    pub carries: Vec<String>,
}

/// Fewer frames than this and a frame-counter loss says nothing: the default stands.
pub const MIN_LOSS_FRAMES: u64 = 20;
/// A jump of the counter larger than this is a reset or a rejoin, not lost frames.
const MAX_FCNT_GAP: i64 = 1000;

/// (frames lost, frames expected) from each device's frame counters, newest first as stored;
/// repeats (a frame heard twice) and resets are not losses.
pub fn fcnt_gaps(per_device: &[Vec<i64>]) -> (u64, u64) {
    let (mut lost, mut expected) = (0u64, 0u64);
    for counters in per_device {
        for pair in counters.windows(2) {
            let step = pair[0] - pair[1];
            if (1..=MAX_FCNT_GAP).contains(&step) {
                expected += step as u64;
                lost += (step - 1) as u64;
            }
        }
    }
    (lost, expected)
}

/// The loss to plan for: the simulated network's own, else what the counters show when they
/// cover enough frames, else the default.
pub fn loss_figure(simulated_loss: Option<f64>, per_device: &[Vec<i64>]) -> LossFigure {
    if let Some(value) = simulated_loss {
        return LossFigure {
            value: value.clamp(0.0, 0.99),
            source: LossSource::Simulated,
            frames: 0,
        };
    }
    let (lost, frames) = fcnt_gaps(per_device);
    if frames >= MIN_LOSS_FRAMES {
        LossFigure {
            value: round(lost as f64 / frames as f64, 4),
            source: LossSource::FcntGaps,
            frames,
        }
    } else {
        LossFigure {
            value: plan::ADVICE_LOSS,
            source: LossSource::Default,
            frames,
        }
    }
}

/// The interval the plan counts per unicast step: the device profile's over the observed one
/// over the default (a profile says what devices are configured to do; observed test traffic
/// can be much faster: a real run took 3 min 13 s where observed uplinks planned 75 s).
pub fn uplink_interval(
    profile_s: Option<f64>,
    observed_s: Option<f64>,
    default_s: f64,
) -> (f64, UplinkIntervalSource) {
    match (profile_s.filter(|s| *s > 0.0), observed_s) {
        (Some(p), _) => (p, UplinkIntervalSource::DeviceProfile),
        (None, Some(o)) => (o, UplinkIntervalSource::Observed),
        (None, None) => (default_s, UplinkIntervalSource::Default),
    }
}

/// Sets the plan's uplink interval and the expected duration that follows from it.
pub fn apply_uplink_interval(plan: &mut Plan, interval_s: f64, source: UplinkIntervalSource) {
    plan.uplink_interval_s = round(interval_s, 1);
    plan.uplink_interval_source = source;
    plan.uplink_interval_observed = source == UplinkIntervalSource::Observed;
    plan.expected_duration_s = round(
        f64::from(plan.unicast_steps) * interval_s + plan.session_length_s,
        1,
    );
}

/// Bytes of the largest unicast setup request (McGroupSetupReq: CID, id, McAddr, key, min and
/// max FCnt), so that unicast air time is an upper estimate.
const UNICAST_REQUEST_BYTES: usize = 30;

/// Every sub-band the campaign transmits in: the multicast frequency (all fragments) and the
/// RX2 frequency (unicast setup requests of every device, at most once per step and attempt).
pub fn sub_bands(
    region: &RegionInfo,
    plan: &Plan,
    settings: &CampaignSettings,
    devices: usize,
) -> Vec<SubBandUse> {
    let mut out: Vec<SubBandUse> = Vec::new();
    let mut add = |frequency: u32, airtime_s: f64, carries: &str| {
        let band = region.sub_band(frequency);
        match out.iter_mut().find(|u| u.band == band.name) {
            Some(u) => {
                u.airtime_s = round(u.airtime_s + airtime_s, 2);
                if !u.frequencies.contains(&frequency) {
                    u.frequencies.push(frequency);
                }
                u.carries.push(carries.to_string());
            }
            None => out.push(SubBandUse {
                band: band.name,
                duty_cycle: band.duty_cycle,
                airtime_s: round(airtime_s, 2),
                allowed_per_hour_s: band.duty_cycle.map(|d| round(d * 3600.0, 1)),
                frequencies: vec![frequency],
                carries: vec![carries.to_string()],
            }),
        }
    };
    add(
        settings.multicast.frequency,
        plan.airtime_total_s,
        "multicast fragments",
    );
    let (rx2_frequency, rx2_dr) = region.rx2();
    if let Ok(m) = region.downlink_modulation(rx2_dr) {
        let frame = plan::FRAME_OVERHEAD + UNICAST_REQUEST_BYTES;
        let frames = devices as f64
            * f64::from(plan.unicast_steps)
            * f64::from(settings.unicast.attempts.max(1));
        add(
            rx2_frequency,
            plan::airtime_s(m, frame) * frames,
            "unicast setup (RX2)",
        );
    }
    out
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_gaps_count_lost_frames_but_not_repeats_or_resets() {
        // Newest first, as stored: the counter restarted at 1 after 50 (a rejoin), 48 was
        // lost, 47 was heard twice.
        let one = vec![3, 2, 1, 50, 49, 47, 47];
        // 3, 4 and 5 lost; a jump of thousands is a reset, not lost frames.
        let two = vec![6000, 6, 2, 1];
        assert_eq!(fcnt_gaps(&[one, two]), (4, 10));
    }

    #[test]
    fn loss_comes_from_the_simulation_then_the_counters_then_the_default() {
        let sim = loss_figure(Some(0.05), &[vec![9, 1]]);
        assert_eq!(
            (sim.value, sim.source, sim.frames),
            (0.05, LossSource::Simulated, 0)
        );
        // 40 frames expected, 4 lost.
        let counters: Vec<i64> = (0..=40).rev().filter(|n| n % 10 != 5).collect();
        let measured = loss_figure(None, &[counters]);
        assert_eq!(measured.source, LossSource::FcntGaps);
        assert_eq!((measured.value, measured.frames), (0.1, 40));
        let few = loss_figure(None, &[vec![3, 1]]);
        assert_eq!(
            (few.source, few.value, few.frames),
            (LossSource::Default, plan::ADVICE_LOSS, 2)
        );
    }

    #[test]
    fn the_device_profile_interval_wins_over_observed_traffic() {
        assert_eq!(
            uplink_interval(Some(600.0), Some(25.0), 60.0),
            (600.0, UplinkIntervalSource::DeviceProfile)
        );
        assert_eq!(
            uplink_interval(Some(0.0), Some(25.0), 60.0),
            (25.0, UplinkIntervalSource::Observed),
            "a profile without an interval says nothing"
        );
        assert_eq!(
            uplink_interval(None, None, 60.0),
            (60.0, UplinkIntervalSource::Default)
        );
    }
}

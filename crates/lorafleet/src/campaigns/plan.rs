//! The plan shown before a campaign starts: how many fragments, how long they occupy the air,
//! how long the multicast session must last, how long the whole campaign should take, and how
//! much redundancy the devices are likely to need.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::plan_network::{self, LossFigure, SubBandUse, UplinkIntervalSource};
use super::region::Modulation;
use super::{CampaignSettings, DriverKind, FragStatusRequest, MulticastClass};

/// LoRaWAN frame bytes around the FRMPayload: MHDR 1, FHDR 7 (no FOpts), FPort 1, MIC 4.
pub const FRAME_OVERHEAD: usize = 13;
/// DataFragment bytes before the fragment: CID 1, IndexAndN 2.
pub const FRAGMENT_HEADER: usize = 3;
/// Symbols of preamble a LoRaWAN transmitter sends.
const PREAMBLE_SYMBOLS: f64 = 8.0;
/// Seconds in a Class B beacon period.
pub const BEACON_PERIOD_S: f64 = 128.0;

/// Time on air of one LoRa frame of `phy_len` bytes, in seconds (Semtech's formula, AN1200.13):
///
/// ```text
/// T_sym     = 2^SF / BW
/// n_payload = 8 + max(ceil((8 PL - 4 SF + 28 + 16 CRC - 20 IH) / (4 (SF - 2 DE))) (CR + 4), 0)
/// T         = (n_preamble + 4.25) T_sym + n_payload T_sym
/// ```
///
/// LoRaWAN downlinks use an explicit header (IH = 0), no payload CRC (CRC = 0) and coding rate
/// 4/5 (CR = 1); low-data-rate optimisation (DE = 1) is on when a symbol lasts more than 16 ms.
pub fn lora_airtime_s(spreading_factor: u8, bandwidth_hz: u32, phy_len: usize, crc: bool) -> f64 {
    let sf = f64::from(spreading_factor);
    let t_sym = 2f64.powf(sf) / f64::from(bandwidth_hz);
    let de = if t_sym > 0.016 { 1.0 } else { 0.0 };
    let crc = if crc { 1.0 } else { 0.0 };
    let cr = 1.0;
    let num = 8.0 * phy_len as f64 - 4.0 * sf + 28.0 + 16.0 * crc;
    let den = 4.0 * (sf - 2.0 * de);
    let n_payload = 8.0 + ((num / den).ceil() * (cr + 4.0)).max(0.0);
    (PREAMBLE_SYMBOLS + 4.25) * t_sym + n_payload * t_sym
}

/// Time on air of one FSK frame: preamble 5, sync word 3, length 1, payload, CRC 2 bytes.
pub fn fsk_airtime_s(bitrate: u32, phy_len: usize) -> f64 {
    ((5 + 3 + 1 + phy_len + 2) * 8) as f64 / f64::from(bitrate)
}

pub fn airtime_s(m: Modulation, phy_len: usize) -> f64 {
    match m {
        Modulation::Lora {
            spreading_factor,
            bandwidth_hz,
        } => lora_airtime_s(spreading_factor, bandwidth_hz, phy_len, false),
        Modulation::Fsk { bitrate } => fsk_airtime_s(bitrate, phy_len),
    }
}

/// Data fragments and padding for an image, as TS004 senders cut it.
pub fn fragments_for(image_size: usize, fragment_size: usize) -> (usize, usize) {
    let fragment_size = fragment_size.max(1);
    let m = image_size.div_ceil(fragment_size);
    (m, m * fragment_size - image_size)
}

/// Redundancy as ChirpStack v4 applies a percentage: `ceil(M x pct / 100)`.
pub fn v4_redundancy(m: usize, percent: u32) -> usize {
    (m * percent as usize).div_ceil(100)
}

/// The smallest percentage that makes ChirpStack v4 send at least `frames` parity fragments.
pub fn v4_percent_for(m: usize, frames: usize) -> u32 {
    if m == 0 {
        return 0;
    }
    (frames * 100).div_ceil(m) as u32
}

/// How long the multicast session must stay open to send `total` fragments, and the smallest
/// TS005 timeout exponent covering it (`None` when even 15 is not enough).
pub fn session_needed(
    class: MulticastClass,
    total: usize,
    interval_s: f64,
    ping_slot_periodicity: u8,
) -> (f64, Option<u8>) {
    match class {
        MulticastClass::C => {
            // One interval of margin, as ChirpStack adds: the first fragment is not sent at the
            // very start of the session.
            let needed = interval_s * (total as f64 + 1.0);
            let exp = (0u8..=15).find(|&e| f64::from(1u32 << e) >= needed);
            (needed, exp)
        }
        MulticastClass::B => {
            let per_beacon = 1usize << (7 - ping_slot_periodicity.min(7));
            // Plus one period: the first ping slot may fall in the next beacon period.
            let periods = total.div_ceil(per_beacon) + 1;
            let exp = (0u8..=15).find(|&e| (1usize << e) >= periods);
            (periods as f64 * BEACON_PERIOD_S, exp)
        }
    }
}

/// Length of a session with timeout exponent `exp`, in seconds.
pub fn session_length_s(class: MulticastClass, exp: u8) -> f64 {
    let n = f64::from(1u32 << exp.min(15));
    match class {
        MulticastClass::C => n,
        MulticastClass::B => n * BEACON_PERIOD_S,
    }
}

/// Seconds between two fragments on the air: the scheduler's margin, or longer where the
/// band's duty cycle forces it.
pub fn fragment_interval_s(
    class: MulticastClass,
    airtime_s: f64,
    duty_cycle: Option<f64>,
    class_c_margin_s: f64,
    ping_slot_periodicity: u8,
) -> f64 {
    let base = match class {
        MulticastClass::C => class_c_margin_s.max(airtime_s),
        MulticastClass::B => f64::from(1u32 << ping_slot_periodicity.min(7)),
    };
    match duty_cycle {
        Some(d) if d > 0.0 => base.max(airtime_s / d),
        _ => base,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanWarning {
    pub dev_eui: Option<String>,
    pub message: String,
}

/// Redundancy advice from simulated random loss (lorafleet_codec::redundancy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RedundancyAdvice {
    /// Loss rate simulated.
    pub loss: f64,
    /// Share of devices the suggestion aims to complete.
    pub target: f64,
    /// Least parity fragments completing `target` of the simulated devices.
    pub suggested_redundancy: Option<u32>,
    /// The same as a percentage of the data fragments.
    pub suggested_percent: Option<f64>,
    /// Share of simulated devices completing with the planned redundancy.
    pub completion_at_planned: f64,
    /// (redundancy, completion share) pairs for a chart.
    pub curve: Vec<(u32, f64)>,
    pub trials: u32,
    /// Simulation is skipped for very large sessions; the suggestion is then an estimate.
    pub simulated: bool,
}

/// The figures of a campaign before it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    pub region: String,
    pub image_size: u64,
    pub dr: u8,
    pub modulation: String,
    pub frequency: u32,
    pub fragment_size: u32,
    /// Largest fragment the DR carries (max payload - 3).
    pub max_fragment_size: u32,
    pub padding: u32,
    pub data_fragments: u32,
    /// Parity fragments that will actually be sent (ChirpStack v4 rounds a percentage up).
    pub redundancy_fragments: u32,
    /// The percentage sent to ChirpStack v4, which takes redundancy that way.
    pub redundancy_percent_sent: Option<u32>,
    pub total_fragments: u32,
    /// LoRaWAN PHYPayload bytes of one fragment frame.
    pub frame_bytes: u32,
    /// PHYPayload bytes of all fragment frames.
    pub bytes_on_air: u64,
    pub airtime_per_fragment_ms: f64,
    pub airtime_total_s: f64,
    pub duty_cycle: Option<f64>,
    /// Seconds between two fragments.
    pub fragment_interval_s: f64,
    /// How long the multicast session must last to send every fragment.
    pub session_needed_s: f64,
    pub timeout_exp: u8,
    /// The session the timeout exponent gives.
    pub session_length_s: f64,
    /// Unicast steps, each waiting about one uplink of every device.
    pub unicast_steps: u32,
    /// Uplink interval assumed per unicast step: the network server's device profile, else
    /// the devices' observed median, else the unicast timeout.
    pub uplink_interval_s: f64,
    /// `uplink_interval_source` is `observed` (kept for older clients).
    pub uplink_interval_observed: bool,
    /// Where `uplink_interval_s` comes from: `device_profile`, `observed` or `default`.
    #[serde(default)]
    pub uplink_interval_source: UplinkIntervalSource,
    /// The loss the redundancy advice is computed at, and where that figure comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossFigure>,
    /// Every sub-band the campaign transmits in, with its duty-cycle figure.
    #[serde(default)]
    pub sub_bands: Vec<SubBandUse>,
    pub expected_duration_s: f64,
    /// When every unicast step needs every attempt.
    pub worst_case_duration_s: f64,
    pub warnings: Vec<PlanWarning>,
    pub redundancy_advice: Option<RedundancyAdvice>,
    /// The gateways the multicast group will be bound to (lorafleet's engine on ChirpStack v4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<super::gateways::GatewayChoice>,
    /// The multicast sessions the engine runs one after the other (issue 8 item 6: a mixed
    /// fleet needs one per TS004 version and FPort), each with its devices and its fragments'
    /// air time; empty for the other drivers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<PlanSession>,
}

/// One multicast session of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlanSession {
    /// What its devices share: `{"fragmentation": {"version": 2, "f_port": 201}}`.
    #[schema(value_type = Object)]
    pub session: lorafleet_engine::sessions::Session,
    /// Its devices, among those whose profile was read.
    pub devices: u32,
    /// Seconds on air of its fragments (every session sends the campaign's fragments).
    pub airtime_total_s: f64,
}

/// The plan's sessions from each device's session group (`group[i]` into `sessions`, as
/// `lorafleet_engine::sessions::groups` gives them), with a warning when there are several:
/// the fragments then go out once per session.
pub fn add_sessions(
    plan: &mut Plan,
    sessions: &[lorafleet_engine::sessions::Session],
    group: &[usize],
    read_all: bool,
) {
    plan.sessions = sessions
        .iter()
        .enumerate()
        .map(|(g, session)| PlanSession {
            session: *session,
            devices: group.iter().filter(|x| **x == g).count() as u32,
            airtime_total_s: plan.airtime_total_s,
        })
        .collect();
    if sessions.len() < 2 {
        return;
    }
    // One session after the other, each with its own unicast setup, fragments and
    // verification: each takes about what one session of the whole fleet would.
    let n = sessions.len() as f64;
    plan.expected_duration_s = round(plan.expected_duration_s * n, 1);
    plan.worst_case_duration_s = round(plan.worst_case_duration_s * n, 1);
    let each: Vec<String> = plan
        .sessions
        .iter()
        .map(|s| format!("{}: {} devices", s.session.describe(), s.devices))
        .collect();
    plan.warnings.push(PlanWarning {
        dev_eui: None,
        message: format!(
            "the devices need {} multicast sessions ({}{}), run one after the other: the fragments go out once per session, {} x {} s on air, and the expected duration is the sessions' together",
            sessions.len(),
            each.join(", "),
            if read_all { "" } else { ", from the devices whose profile was read" },
            sessions.len(),
            plan.airtime_total_s
        ),
    });
}

/// A device as the plan sees it.
#[derive(Debug, Clone)]
pub struct PlanDevice {
    pub dev_eui: String,
    pub slot_size: Option<i64>,
}

/// Everything [`compute`] needs, all of it already validated.
pub struct PlanInput<'a> {
    pub region: String,
    pub settings: &'a CampaignSettings,
    pub driver: DriverKind,
    pub modulation: Modulation,
    pub max_fragment_size: usize,
    pub image_size: usize,
    pub duty_cycle: Option<f64>,
    pub class_c_margin_s: f64,
    pub devices: &'a [PlanDevice],
    /// Median seconds between uplinks of the campaign's devices, when known.
    pub observed_uplink_interval_s: Option<f64>,
}

/// The parity fragments really sent for `settings` by `driver`.
pub fn effective_redundancy(
    settings: &CampaignSettings,
    driver: DriverKind,
    m: usize,
) -> (usize, Option<u32>) {
    let frames = settings.fragmentation.redundancy as usize;
    match driver {
        DriverKind::ChirpstackV4 => {
            let pct = settings
                .fragmentation
                .redundancy_percent
                .unwrap_or_else(|| v4_percent_for(m, frames));
            (v4_redundancy(m, pct), Some(pct))
        }
        _ => (frames, None),
    }
}

pub fn compute(input: &PlanInput) -> Plan {
    let s = input.settings;
    let fs = s.fragmentation.fragment_size as usize;
    let (m, padding) = fragments_for(input.image_size, fs);
    let (r, pct) = effective_redundancy(s, input.driver, m);
    let total = m + r;
    let frame_bytes = FRAME_OVERHEAD + FRAGMENT_HEADER + fs;
    let airtime = airtime_s(input.modulation, frame_bytes);
    let interval = fragment_interval_s(
        s.multicast.class,
        airtime,
        input.duty_cycle,
        input.class_c_margin_s,
        s.multicast.ping_slot_periodicity,
    );
    let (needed, _) = session_needed(
        s.multicast.class,
        total,
        interval,
        s.multicast.ping_slot_periodicity,
    );
    let session = session_length_s(s.multicast.class, s.multicast.timeout_exp);
    let unicast_steps = 3 + u32::from(s.request_frag_status != FragStatusRequest::None);
    let (uplink_interval, source) = plan_network::uplink_interval(
        None,
        input.observed_uplink_interval_s,
        f64::from(s.unicast.timeout_s),
    );
    let expected = f64::from(unicast_steps) * uplink_interval + session;
    let worst =
        f64::from(unicast_steps) * f64::from(s.unicast.attempts) * f64::from(s.unicast.timeout_s)
            + session;

    let mut warnings = slot_warnings(input.devices, input.image_size);
    if session + 1e-9 < needed {
        warnings.push(PlanWarning {
            dev_eui: None,
            message: format!(
                "the session (timeout {} = {:.0} s) is shorter than the {:.0} s needed to send {total} fragments; later fragments will not reach the devices",
                s.multicast.timeout_exp, session, needed
            ),
        });
    }
    warnings.extend(duty_cycle_warning(input, airtime));
    if input.driver == DriverKind::ChirpstackV4 && r != s.fragmentation.redundancy as usize {
        warnings.push(PlanWarning {
            dev_eui: None,
            message: format!(
                "ChirpStack takes redundancy as a percentage: {}% of {m} fragments sends {r} parity fragments",
                pct.unwrap_or(0)
            ),
        });
    }

    Plan {
        region: input.region.clone(),
        image_size: input.image_size as u64,
        dr: s.multicast.dr,
        modulation: input.modulation.describe(),
        frequency: s.multicast.frequency,
        fragment_size: fs as u32,
        max_fragment_size: input.max_fragment_size as u32,
        padding: padding as u32,
        data_fragments: m as u32,
        redundancy_fragments: r as u32,
        redundancy_percent_sent: pct,
        total_fragments: total as u32,
        frame_bytes: frame_bytes as u32,
        bytes_on_air: (frame_bytes * total) as u64,
        airtime_per_fragment_ms: round(airtime * 1000.0, 2),
        airtime_total_s: round(airtime * total as f64, 2),
        duty_cycle: input.duty_cycle,
        fragment_interval_s: round(interval, 2),
        session_needed_s: round(needed, 1),
        timeout_exp: s.multicast.timeout_exp,
        session_length_s: session,
        unicast_steps,
        uplink_interval_s: round(uplink_interval, 1),
        uplink_interval_observed: source == UplinkIntervalSource::Observed,
        uplink_interval_source: source,
        loss: None,
        sub_bands: Vec::new(),
        expected_duration_s: round(expected, 1),
        worst_case_duration_s: round(worst, 1),
        warnings,
        redundancy_advice: None,
        gateways: None,
        sessions: Vec::new(),
    }
}

/// A warning for each device whose reported slot is too small for the image; a slot size of 0
/// means the device did not say.
fn slot_warnings(devices: &[PlanDevice], image_size: usize) -> Vec<PlanWarning> {
    devices
        .iter()
        .filter_map(|d| {
            let slot = d.slot_size.filter(|&slot| slot > 0)?;
            ((image_size as i64) > slot).then(|| PlanWarning {
                dev_eui: Some(d.dev_eui.clone()),
                message: format!(
                    "the image ({image_size} bytes) is larger than the slot the device reported ({slot} bytes)"
                ),
            })
        })
        .collect()
}

/// A warning when class C fragments would go out faster than the band's duty cycle allows
/// (past the configured margin): gateways that enforce the limit drop them.
fn duty_cycle_warning(input: &PlanInput, airtime: f64) -> Option<PlanWarning> {
    let s = input.settings;
    let d = input.duty_cycle?;
    (airtime / d > input.class_c_margin_s && s.multicast.class == MulticastClass::C).then(|| {
        PlanWarning {
            dev_eui: None,
            message: format!(
                "at {:.3} MHz the band allows {:.1} % duty cycle: one {:.0} ms fragment every {:.1} s; gateways that enforce it drop fragments sent faster",
                f64::from(s.multicast.frequency) / 1e6,
                d * 100.0,
                airtime * 1000.0,
                airtime / d
            ),
        }
    })
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Loss rate the advice is computed for when the network reports none, and the completion
/// target.
pub const ADVICE_LOSS: f64 = 0.1;
pub const ADVICE_TARGET: f64 = 0.99;
/// The simulations' seed: the same request gets the same advice.
pub const ADVICE_SEED: u64 = 0x5eed_f00d;
/// Largest session simulated; beyond it the decoder's cost grows too much for a preview.
const SIMULATE_MAX_FRAGMENTS: usize = 1500;

/// Least redundancy for 99 % of devices at independent `loss`, and the completion curve
/// around it. CPU-heavy for large sessions: call it from a blocking task.
pub fn redundancy_advice(m: usize, planned: usize, loss: f64) -> Option<RedundancyAdvice> {
    use lorafleet_codec::redundancy;
    if m == 0 || m > lorafleet_codec::fragmentation::MAX_FRAGMENTS {
        return None;
    }
    let seed = ADVICE_SEED;
    if m <= SIMULATE_MAX_FRAGMENTS {
        let trials = if m <= 300 { 300 } else { 100 };
        let suggested = redundancy::suggest_redundancy(m, loss, ADVICE_TARGET, trials, seed);
        let top = suggested.unwrap_or(m / 2).max(planned).max(4);
        let mut points: Vec<usize> = (0..=8).map(|i| top * i / 6).collect();
        points.push(planned);
        points.sort_unstable();
        points.dedup();
        let curve = redundancy::completion_curve(m, loss, &points, trials, seed);
        let at_planned = curve
            .iter()
            .find(|(r, _)| *r == planned)
            .map(|(_, c)| *c)
            .unwrap_or(0.0);
        Some(RedundancyAdvice {
            loss,
            target: ADVICE_TARGET,
            suggested_redundancy: suggested.map(|r| r as u32),
            suggested_percent: suggested.map(|r| round(r as f64 * 100.0 / m as f64, 1)),
            completion_at_planned: at_planned,
            curve: curve.into_iter().map(|(r, c)| (r as u32, c)).collect(),
            trials: trials as u32,
            simulated: true,
        })
    } else {
        // Normal approximation of the lost data fragments, plus the ~1 % decoding overhead
        // measured for the TS004 code.
        let mean = m as f64 * loss / (1.0 - loss);
        let sd = (m as f64 * loss).sqrt() / (1.0 - loss);
        let r = (mean + 2.33 * sd + 0.01 * m as f64).ceil() as u32;
        Some(RedundancyAdvice {
            loss,
            target: ADVICE_TARGET,
            suggested_redundancy: Some(r),
            suggested_percent: Some(round(f64::from(r) * 100.0 / m as f64, 1)),
            completion_at_planned: if planned as u32 >= r {
                ADVICE_TARGET
            } else {
                0.0
            },
            curve: Vec::new(),
            trials: 0,
            simulated: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reported_slot_smaller_than_the_image_warns() {
        let device = |eui: &str, slot_size| PlanDevice {
            dev_eui: eui.into(),
            slot_size,
        };
        let devices = [
            device("01", Some(999)),
            device("02", Some(1000)),
            device("03", Some(0)),
            device("04", None),
        ];
        let warnings = slot_warnings(&devices, 1000);
        assert_eq!(
            warnings,
            vec![PlanWarning {
                dev_eui: Some("01".into()),
                message:
                    "the image (1000 bytes) is larger than the slot the device reported (999 bytes)"
                        .into(),
            }]
        );
    }

    #[test]
    fn lora_airtime_matches_known_values() {
        // A 10-byte uplink at SF7/125 kHz (PHYPayload 23 bytes, CRC on): 61.7 ms, as
        // LoRaWAN airtime calculators give.
        let t = lora_airtime_s(7, 125_000, 23, true);
        assert!((t - 0.061_696).abs() < 1e-6, "{t}");
        // SF12/125 kHz uses low-data-rate optimisation: 51-byte payload -> 2793.5 ms.
        let t = lora_airtime_s(12, 125_000, 64, true);
        assert!((t - 2.793_472).abs() < 1e-5, "{t}");
        // Downlinks have no CRC and are shorter.
        assert!(lora_airtime_s(7, 125_000, 23, false) < lora_airtime_s(7, 125_000, 23, true));
    }

    #[test]
    fn fragments_and_padding() {
        assert_eq!(fragments_for(22_832, 239), (96, 112));
        assert_eq!(fragments_for(100, 10), (10, 0));
        assert_eq!(fragments_for(101, 10), (11, 9));
    }

    #[test]
    fn v4_percentages() {
        assert_eq!(v4_percent_for(105, 10), 10);
        assert_eq!(v4_redundancy(105, 10), 11);
        assert_eq!(v4_percent_for(100, 10), 10);
        assert_eq!(v4_redundancy(100, 10), 10);
    }

    #[test]
    fn session_exponents() {
        // Class C: 5 s per fragment, 116 fragments -> 585 s -> 2^10.
        assert_eq!(
            session_needed(MulticastClass::C, 116, 5.0, 0),
            (585.0, Some(10))
        );
        // ChirpStack's own table: periodicity 7, 15 fragments -> 16 periods -> 4.
        assert_eq!(session_needed(MulticastClass::B, 15, 128.0, 7).1, Some(4));
        assert_eq!(session_needed(MulticastClass::B, 16, 128.0, 7).1, Some(5));
        assert_eq!(session_needed(MulticastClass::C, 20_000, 5.0, 0).1, None);
    }

    #[test]
    fn advice_for_a_small_session() {
        let a = redundancy_advice(105, 10, ADVICE_LOSS).unwrap();
        assert!(a.simulated);
        let r = a.suggested_redundancy.unwrap();
        assert!((10..=40).contains(&r), "{r}");
        assert!(a.curve.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(a.curve.iter().any(|(x, _)| *x == 10));
        let big = redundancy_advice(10_000, 10, ADVICE_LOSS).unwrap();
        assert!(!big.simulated);
        assert!(big.suggested_redundancy.unwrap() > 1000);
    }
}

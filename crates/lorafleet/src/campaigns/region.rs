//! What a campaign needs to know about the fleet's LoRaWAN region: lrwn's tables for data rates
//! and payload sizes, plus the frequency bands and duty cycles lrwn does not carry.

use lrwn::region::{self, CommonName, DataRateModulation, MacVersion, Revision};

/// A region's downlink facts, read once per validation.
pub struct RegionInfo {
    pub name: CommonName,
    conf: Box<dyn region::Region + Sync + Send>,
}

/// The radio side of one data rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Modulation {
    Lora {
        spreading_factor: u8,
        bandwidth_hz: u32,
    },
    Fsk {
        bitrate: u32,
    },
}

impl Modulation {
    pub fn describe(&self) -> String {
        match self {
            Modulation::Lora {
                spreading_factor,
                bandwidth_hz,
            } => format!("LoRa SF{spreading_factor} BW{}", bandwidth_hz / 1000),
            Modulation::Fsk { bitrate } => format!("FSK {} kbit/s", bitrate / 1000),
        }
    }
}

/// Downlink frequency range of a region, Hz (from the LoRaWAN Regional Parameters).
fn band(name: CommonName) -> (u32, u32) {
    match name {
        CommonName::EU868 => (863_000_000, 870_000_000),
        CommonName::US915 => (923_300_000, 927_500_000),
        CommonName::CN779 => (779_500_000, 786_500_000),
        CommonName::EU433 => (433_175_000, 434_665_000),
        CommonName::AU915 => (923_300_000, 927_500_000),
        CommonName::CN470 => (470_000_000, 510_000_000),
        CommonName::AS923 | CommonName::AS923_2 | CommonName::AS923_3 | CommonName::AS923_4 => {
            (915_000_000, 928_000_000)
        }
        CommonName::KR920 => (920_900_000, 923_300_000),
        CommonName::IN865 => (865_000_000, 867_000_000),
        CommonName::RU864 => (864_000_000, 870_000_000),
        CommonName::ISM2400 => (2_400_000_000, 2_500_000_000),
    }
}

impl RegionInfo {
    pub fn new(name: CommonName, dwell_time_400ms: bool) -> Self {
        Self {
            name,
            conf: region::get(name, false, dwell_time_400ms),
        }
    }

    /// The modulation of `dr` when devices can receive it on a downlink.
    pub fn downlink_modulation(&self, dr: u8) -> Result<Modulation, String> {
        let m = self
            .conf
            .get_data_rate(dr)
            .map_err(|_| format!("DR{dr} does not exist in {}", self.name))?;
        // The region table marks each DR up, down or both; a DR whose modulation maps back to
        // another index for downlinks (US915 DR4 vs DR12) is uplink-only.
        match self.conf.get_data_rate_index(false, &m) {
            Ok(i) if i == dr => {}
            _ => return Err(format!("DR{dr} is uplink-only in {}", self.name)),
        }
        match m {
            DataRateModulation::Lora(l) => Ok(Modulation::Lora {
                spreading_factor: l.spreading_factor,
                bandwidth_hz: l.bandwidth,
            }),
            DataRateModulation::Fsk(f) => Ok(Modulation::Fsk { bitrate: f.bitrate }),
            DataRateModulation::LrFhss(_) => {
                Err(format!("DR{dr} is LR-FHSS, which is uplink-only"))
            }
        }
    }

    /// Largest application payload (N, without FOpts) for `dr`.
    pub fn max_payload(&self, dr: u8) -> Result<usize, String> {
        self.conf
            .get_max_payload_size(MacVersion::Latest, Revision::Latest, dr)
            .or_else(|_| {
                self.conf
                    .get_max_payload_size(MacVersion::Latest, Revision::RP002_1_0_4, dr)
            })
            .map(|m| m.n)
            .map_err(|e| format!("no maximum payload size for DR{dr} in {}: {e}", self.name))
    }

    pub fn band(&self) -> (u32, u32) {
        band(self.name)
    }

    /// The frequency and DR of the region's RX2 window: a multicast default every device
    /// of the region can receive.
    pub fn rx2(&self) -> (u32, u8) {
        let d = self.conf.get_defaults();
        (d.rx2_frequency, d.rx2_dr)
    }

    /// Share of time a transmitter may send at `frequency` (ETSI sub-bands in Europe), or
    /// `None` where the region limits dwell time instead.
    pub fn duty_cycle(&self, frequency: u32) -> Option<f64> {
        self.sub_band(frequency).duty_cycle
    }

    /// The sub-band `frequency` lies in and its duty-cycle limit: the ETSI EN 300 220 sub-bands
    /// for EU868 and RU864 (between them and outside the band 0.1 %), the whole band elsewhere.
    pub fn sub_band(&self, frequency: u32) -> SubBand {
        match self.name {
            CommonName::EU868 | CommonName::RU864 => {
                let (low, high, dc) = ETSI_SUB_BANDS
                    .iter()
                    .copied()
                    .find(|(low, high, _)| (*low..=*high).contains(&frequency))
                    .unwrap_or((frequency, frequency, 0.001));
                SubBand {
                    name: format!("{}–{} MHz", mhz(low), mhz(high)),
                    low_hz: low,
                    high_hz: high,
                    duty_cycle: Some(dc),
                }
            }
            name => {
                let (low, high) = band(name);
                SubBand {
                    name: format!("{name} {}–{} MHz", mhz(low), mhz(high)),
                    low_hz: low,
                    high_hz: high,
                    duty_cycle: matches!(name, CommonName::EU433 | CommonName::CN779)
                        .then_some(0.01),
                }
            }
        }
    }
}

/// A stretch of spectrum with one duty-cycle rule.
#[derive(Debug, Clone, PartialEq)]
pub struct SubBand {
    /// Its frequency range, as an operator reads it: "869.4–869.65 MHz".
    pub name: String,
    pub low_hz: u32,
    pub high_hz: u32,
    /// Share of time one transmitter may send; none where dwell time is the limit instead.
    pub duty_cycle: Option<f64>,
}

/// (low, high, duty cycle) of the 863–870 MHz band as ETSI EN 300 220 cuts it, the gaps
/// between the sub-bands included (0.1 %), in order; bounds in Hz, inclusive.
const ETSI_SUB_BANDS: [(u32, u32, f64); 9] = [
    (863_000_000, 864_999_999, 0.001),
    (865_000_000, 868_000_000, 0.01),
    (868_000_001, 868_600_000, 0.01),
    (868_600_001, 868_699_999, 0.001),
    (868_700_000, 869_200_000, 0.001),
    (869_200_001, 869_399_999, 0.001),
    (869_400_000, 869_650_000, 0.1),
    (869_650_001, 869_699_999, 0.001),
    (869_700_000, 870_000_000, 0.01),
];

/// "869.525" from 869525000: MHz without trailing zeros.
fn mhz(hz: u32) -> String {
    let text = format!("{:.3}", f64::from(hz) / 1e6);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eu868_tables() {
        let r = RegionInfo::new(CommonName::EU868, false);
        assert_eq!(
            r.downlink_modulation(5),
            Ok(Modulation::Lora {
                spreading_factor: 7,
                bandwidth_hz: 125_000
            })
        );
        // Not repeater-compatible: RP002 gives N = 242 at DR4..7.
        assert_eq!(r.max_payload(5), Ok(242));
        assert_eq!(r.max_payload(0), Ok(51));
        assert_eq!(
            r.downlink_modulation(7),
            Ok(Modulation::Fsk { bitrate: 50_000 })
        );
        assert!(r
            .downlink_modulation(8)
            .unwrap_err()
            .contains("uplink-only"));
        assert!(r.downlink_modulation(16).is_err());
        assert_eq!(r.rx2(), (869_525_000, 0));
        assert_eq!(r.duty_cycle(868_100_000), Some(0.01));
        assert_eq!(r.duty_cycle(869_525_000), Some(0.1));
        assert_eq!(r.sub_band(869_525_000).name, "869.4–869.65 MHz");
        assert_eq!(r.sub_band(868_100_000).name, "868–868.6 MHz");
        assert_eq!(
            r.duty_cycle(868_650_000),
            Some(0.001),
            "between two sub-bands"
        );
    }

    #[test]
    fn us915_uplink_only_dr() {
        let r = RegionInfo::new(CommonName::US915, false);
        assert!(r
            .downlink_modulation(4)
            .unwrap_err()
            .contains("uplink-only"));
        assert!(r.downlink_modulation(8).is_ok());
        assert!(r.downlink_modulation(13).is_ok());
        assert_eq!(r.duty_cycle(923_300_000), None);
    }
}

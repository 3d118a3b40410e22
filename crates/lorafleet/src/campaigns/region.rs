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
        match self.name {
            CommonName::EU868 | CommonName::RU864 => Some(match frequency {
                865_000_000..=868_000_000 => 0.01,
                868_000_001..=868_600_000 => 0.01,
                868_700_000..=869_200_000 => 0.001,
                869_400_000..=869_650_000 => 0.1,
                869_700_000..=870_000_000 => 0.01,
                _ => 0.001,
            }),
            CommonName::EU433 | CommonName::CN779 => Some(0.01),
            _ => None,
        }
    }
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

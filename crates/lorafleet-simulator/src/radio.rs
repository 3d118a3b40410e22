//! The radio as the simulation sees it: which uplink channels and data rates the devices use,
//! and plausible signal figures per device (time on air: `lorafleet_engine::airtime`).

use lrwn::region::{DataRateModulation, Region};
use rand::Rng;

/// Frequencies the devices send on: the region's default uplink channels.
pub fn uplink_frequencies(region: &dyn Region) -> Vec<u32> {
    let freqs: Vec<u32> = region
        .get_default_uplink_channel_indices()
        .into_iter()
        .filter_map(|i| region.get_uplink_channel(i).ok())
        .map(|c| c.frequency)
        .take(16)
        .collect();
    if freqs.is_empty() {
        vec![868_100_000]
    } else {
        freqs
    }
}

/// Whether a device would accept a downlink channel: within 2 MHz of a channel the region
/// defines, or the region's RX2 frequency. Devices refuse what their radio cannot tune to.
pub fn frequency_supported(region: &dyn Region, frequency: u32) -> bool {
    if frequency == region.get_defaults().rx2_frequency {
        return true;
    }
    let known = region
        .get_uplink_channel_indices()
        .into_iter()
        .filter_map(|i| region.get_downlink_channel(i).ok())
        .map(|c| c.frequency);
    let (lo, hi) = known.fold((u32::MAX, 0), |(lo, hi), f| (lo.min(f), hi.max(f)));
    lo <= hi && frequency + 2_000_000 >= lo && frequency <= hi + 2_000_000
}

/// Whether `dr` is a LoRa downlink data rate of the region.
pub fn downlink_dr_supported(region: &dyn Region, dr: u8) -> bool {
    matches!(region.get_data_rate(dr), Ok(DataRateModulation::Lora(_)))
}

/// Where a device sits relative to the gateways: its mean RSSI, and what follows from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub mean_rssi: f64,
}

impl Link {
    /// A position spread over a typical urban cell: -118 dBm at the edge, -65 dBm near a gateway.
    pub fn random(rng: &mut impl Rng) -> Link {
        Link {
            mean_rssi: rng.gen_range(-118.0..-65.0),
        }
    }

    /// The data rate ADR would settle on (DR0 = SF12 at the edge .. DR5 = SF7 near).
    pub fn dr(&self) -> u8 {
        match self.mean_rssi {
            r if r > -100.0 => 5,
            r if r > -105.0 => 4,
            r if r > -109.0 => 3,
            r if r > -112.0 => 2,
            r if r > -115.0 => 1,
            _ => 0,
        }
    }

    /// One reception: RSSI with a few dB of fading, the SNR that goes with it (the noise floor
    /// of a 125 kHz channel is about -117 dBm; SNR saturates near +10 dB), and how many
    /// gateways heard it.
    pub fn sample(&self, rng: &mut impl Rng) -> (i32, f64, u32) {
        let fading: f64 = (0..4).map(|_| rng.gen_range(-1.5..1.5)).sum();
        let rssi = self.mean_rssi + fading;
        let snr = ((rssi + 117.0) * 0.8 + rng.gen_range(-1.0..1.0)).clamp(-20.0, 10.5);
        let snr = (snr * 4.0).round() / 4.0;
        let gateways = if rssi > -90.0 {
            rng.gen_range(1..=3)
        } else {
            1
        };
        (rssi.round() as i32, snr, gateways)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eu868() -> Box<dyn Region + Send + Sync> {
        lrwn::region::get(lrwn::region::CommonName::EU868, false, false)
    }

    #[test]
    fn eu868_frequencies_and_rates() {
        let r = eu868();
        assert_eq!(
            uplink_frequencies(r.as_ref()),
            vec![868_100_000, 868_300_000, 868_500_000]
        );
        assert!(frequency_supported(r.as_ref(), 869_525_000));
        assert!(frequency_supported(r.as_ref(), 868_100_000));
        assert!(!frequency_supported(r.as_ref(), 915_000_000));
        assert!(downlink_dr_supported(r.as_ref(), 5));
        assert!(!downlink_dr_supported(r.as_ref(), 15));
    }

    #[test]
    fn links_give_plausible_figures() {
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            let link = Link::random(&mut rng);
            let (rssi, snr, gw) = link.sample(&mut rng);
            assert!((-130..=-55).contains(&rssi), "{rssi}");
            assert!((-20.0..=10.5).contains(&snr), "{snr}");
            assert!((1..=3).contains(&gw));
            assert!(link.dr() <= 5);
        }
    }
}

//! Time on air of a LoRaWAN frame: the engine paces fragments by it on a real network, the
//! simulated radio keeps its channels busy for as long.

use lrwn::region::{DataRateModulation, Region};

/// LoRaWAN bytes around the application payload: MHDR (1), FHDR without options (7), FPort (1)
/// and MIC (4).
const FRAME_OVERHEAD: usize = 13;

/// Time on air of a frame carrying `payload_len` application bytes at `dr`, in milliseconds.
/// Unknown or non-LoRa data rates count as SF12 / 125 kHz, the slowest common case, so a
/// misconfiguration over-estimates the time (fragments paced too slowly, never too fast).
pub fn airtime_ms(region: &dyn Region, dr: u8, payload_len: usize, uplink: bool) -> f64 {
    let (sf, bw) = match region.get_data_rate(dr) {
        Ok(DataRateModulation::Lora(l)) => (f64::from(l.spreading_factor), f64::from(l.bandwidth)),
        Ok(DataRateModulation::Fsk(f)) => {
            // FSK: 5 bytes preamble, 3 sync, 1 length, 2 CRC around the PHY payload.
            let bits = ((payload_len + FRAME_OVERHEAD + 11) * 8) as f64;
            return bits / f64::from(f.bitrate.max(1)) * 1000.0;
        }
        _ => (12.0, 125_000.0),
    };
    let symbol_ms = 2f64.powf(sf) / bw * 1000.0;
    let preamble_ms = (8.0 + 4.25) * symbol_ms;
    // Low data-rate optimisation is mandatory for SF11 and SF12 at 125 kHz.
    let de = if sf >= 11.0 && bw <= 125_000.0 {
        1.0
    } else {
        0.0
    };
    // Downlinks carry no payload CRC; the header is explicit (H = 0); coding rate 4/5.
    let crc = if uplink { 1.0 } else { 0.0 };
    let pl = (payload_len + FRAME_OVERHEAD) as f64;
    let num = 8.0 * pl - 4.0 * sf + 28.0 + 16.0 * crc;
    let payload_symbols = 8.0 + ((num / (4.0 * (sf - 2.0 * de))).ceil() * 5.0).max(0.0);
    preamble_ms + payload_symbols * symbol_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eu868() -> Box<dyn Region + Send + Sync> {
        lrwn::region::get(lrwn::region::CommonName::EU868, false, false)
    }

    #[test]
    fn airtime_matches_the_semtech_calculator() {
        let r = eu868();
        // SF7 / 125 kHz, 10 application bytes (23 PHY bytes), uplink: 61.7 ms.
        let t = airtime_ms(r.as_ref(), 5, 10, true);
        assert!((t - 61.7).abs() < 0.1, "{t}");
        // SF12 / 125 kHz, 51 application bytes (64 PHY bytes), uplink: 2793.5 ms.
        let t = airtime_ms(r.as_ref(), 0, 51, true);
        assert!((t - 2793.5).abs() < 0.5, "{t}");
    }
}

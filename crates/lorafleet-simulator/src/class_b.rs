//! Class B timing (LoRaWAN 1.0.4 §12-§13), shared by the simulated network and its devices
//! the way the real ones share it: both derive the same ping slots from the beacon time and
//! the (multicast) address, so a frame sent outside a slot is a frame nobody hears.
//!
//! Beacons go out every 128 s at GPS times divisible by 128. After the 2.12 s reserved for the
//! beacon, the period holds 4,096 slots of 30 ms; a group with periodicity `p` opens
//! `pingNb = 2^(7-p)` of them, `pingPeriod = 2^(5+p)` slots apart, starting at a pseudo-random
//! `pingOffset` that changes every beacon period:
//!
//! ```text
//! Rand       = aes128_encrypt(key = 0^16, BeaconTime (4, LE) | DevAddr (4, LE) | 0^8)
//! pingOffset = (Rand[0] + Rand[1] * 256) mod pingPeriod
//! slot N     = BeaconTime + 2.12 s + (pingOffset + N * pingPeriod) * 30 ms
//! ```

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use lorafleet_codec::time::unix_to_gps;

/// Milliseconds between two beacons.
pub const BEACON_PERIOD_MS: i64 = 128_000;
/// Milliseconds after the beacon's start before the first ping slot.
const BEACON_RESERVED_MS: i64 = 2_120;
const SLOT_MS: i64 = 30;
/// How long a device keeps its ping slots without hearing a beacon (beacon-less operation).
pub const BEACONLESS_MS: i64 = 2 * 3_600_000;

/// Seconds a multicast session with timeout exponent `exp` lasts: TS005 counts class B
/// timeouts in beacon periods, class C ones in seconds.
pub fn session_s(exp: u8, ping_slot_periodicity: Option<u8>) -> u64 {
    let n = 1u64 << exp.min(15);
    match ping_slot_periodicity {
        Some(_) => n * (BEACON_PERIOD_MS as u64 / 1000),
        None => n,
    }
}

/// GPS milliseconds for a unix time in milliseconds (one rule for both sides).
pub fn gps_ms(unix_ms: i64) -> i64 {
    i64::from(unix_to_gps(unix_ms.div_euclid(1000))) * 1000 + unix_ms.rem_euclid(1000)
}

/// The next beacon at or after `unix_ms`, as unix milliseconds.
pub fn next_beacon(unix_ms: i64) -> i64 {
    let into = gps_ms(unix_ms).rem_euclid(BEACON_PERIOD_MS);
    if into == 0 {
        unix_ms
    } else {
        unix_ms + BEACON_PERIOD_MS - into
    }
}

/// Ping slots between two of the address's slots (`pingPeriod`), in 30 ms slots.
fn ping_period(periodicity: u8) -> i64 {
    1 << (5 + periodicity.min(7))
}

/// `pingOffset` of `addr` (most significant byte first) in the period starting at
/// `beacon_gps_s`.
fn ping_offset(beacon_gps_s: u32, addr: [u8; 4], periodicity: u8) -> i64 {
    let mut block = [0u8; 16];
    block[..4].copy_from_slice(&beacon_gps_s.to_le_bytes());
    let mut le = addr;
    le.reverse();
    block[4..8].copy_from_slice(&le);
    let mut b = GenericArray::from(block);
    aes::Aes128::new(&GenericArray::from([0u8; 16])).encrypt_block(&mut b);
    (i64::from(b[0]) + 256 * i64::from(b[1])) % ping_period(periodicity)
}

/// The first ping slot of `addr` that opens at or after `unix_ms`, as unix milliseconds.
pub fn next_ping_slot(unix_ms: i64, addr: [u8; 4], periodicity: u8) -> i64 {
    let gps = gps_ms(unix_ms);
    let period_start = gps - gps.rem_euclid(BEACON_PERIOD_MS);
    let slots_per_beacon = 1i64 << (7 - periodicity.min(7));
    for beacon in [period_start, period_start + BEACON_PERIOD_MS] {
        let beacon_s = u32::try_from(beacon.div_euclid(1000).rem_euclid(1 << 32)).unwrap_or(0);
        let offset = ping_offset(beacon_s, addr, periodicity);
        let first = beacon + BEACON_RESERVED_MS + offset * SLOT_MS;
        let step = ping_period(periodicity) * SLOT_MS;
        if gps <= first {
            return unix_ms + (first - gps);
        }
        let n = (gps - first + step - 1) / step;
        if n < slots_per_beacon {
            return unix_ms + (first + n * step - gps);
        }
    }
    // Unreachable: the next period's first slot is always ahead.
    unix_ms + BEACON_PERIOD_MS
}

/// Whether a ping slot of `addr` opens exactly at `unix_ms` (the network sends at slot starts).
pub fn is_ping_slot(unix_ms: i64, addr: [u8; 4], periodicity: u8) -> bool {
    next_ping_slot(unix_ms, addr, periodicity) == unix_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600_000;

    fn slots(from: i64, to: i64, addr: [u8; 4], p: u8) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = next_ping_slot(from, addr, p);
        while t < to {
            out.push(t);
            t = next_ping_slot(t + 1, addr, p);
        }
        out
    }

    #[test]
    fn a_beacon_period_holds_ping_nb_slots_a_ping_period_apart_after_the_reserved_time() {
        let beacon = next_beacon(T0);
        assert_eq!(gps_ms(beacon) % BEACON_PERIOD_MS, 0);
        assert!(beacon >= T0 && beacon - T0 < BEACON_PERIOD_MS);
        let addr = [0x01, 0x02, 0x03, 0x04];
        for p in 0..=7u8 {
            let s = slots(beacon, beacon + BEACON_PERIOD_MS, addr, p);
            assert_eq!(s.len(), 1 << (7 - p), "periodicity {p}");
            assert!(s[0] >= beacon + BEACON_RESERVED_MS);
            assert!(
                s.windows(2).all(|w| w[1] - w[0] == 960 << p),
                "periodicity {p}"
            );
            assert!(s
                .iter()
                .all(|&t| is_ping_slot(t, addr, p) && !is_ping_slot(t + 1, addr, p)));
        }
    }

    #[test]
    fn the_offset_changes_with_the_beacon_and_the_address() {
        let beacon = next_beacon(T0);
        let first = |b: i64, addr: [u8; 4]| next_ping_slot(b, addr, 7) - b;
        let a = [0x01, 0x02, 0x03, 0x04];
        let offsets: std::collections::BTreeSet<i64> = (0..8)
            .map(|k| first(beacon + k * BEACON_PERIOD_MS, a))
            .collect();
        assert!(offsets.len() > 1, "{offsets:?}");
        assert_ne!(first(beacon, a), first(beacon, [0x04, 0x03, 0x02, 0x01]));
        // Every offset stays inside the period's ping window.
        for k in 0..64 {
            let b = beacon + k * BEACON_PERIOD_MS;
            let o = first(b, a);
            assert!((BEACON_RESERVED_MS..BEACON_RESERVED_MS + 4096 * SLOT_MS).contains(&o));
        }
    }
}

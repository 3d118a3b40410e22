//! The device implementations a simulated fleet mixes (`network.simulated.stacks`): each
//! claims what real devices of its kind do, and keeps to it.
//!
//! - `lorafleet-demo`: lorafleet's own demo firmware: Version & Status, TS003/TS004/TS005 v1,
//!   FragSessionStatusAns as the specification counts, reboots into a rebuilt image by itself.
//! - `loramac-node`: like Semtech's LoRaMac-node application packages: TS003/TS004/TS005 v1 and
//!   Firmware Management (TS006) only, fragments of at most 50 bytes, FragSessionStatusAns in
//!   the highest-N reading (NbFragReceived the N of the last fragment seen, MissingFrag the data
//!   fragments lost, never lowered, frozen once the image is rebuilt), answering whenever a data
//!   fragment was lost; reboots only when told to (DevRebootTimeReq / DevRebootCountdownReq).
//! - `firmware-management-only`: a stack that reports its firmware only through Firmware
//!   Management (no Version & Status), otherwise like the demo devices' packages, and reboots
//!   only when told to.

use lorafleet_codec::frag_status::Reading;
use serde::{Deserialize, Serialize};

/// One device implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stack {
    #[serde(rename = "lorafleet-demo")]
    LorafleetDemo,
    #[serde(rename = "loramac-node")]
    LoramacNode,
    #[serde(rename = "firmware-management-only")]
    FirmwareManagementOnly,
}

impl Stack {
    pub const ALL: [Stack; 3] = [
        Stack::LorafleetDemo,
        Stack::LoramacNode,
        Stack::FirmwareManagementOnly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stack::LorafleetDemo => "lorafleet-demo",
            Stack::LoramacNode => "loramac-node",
            Stack::FirmwareManagementOnly => "firmware-management-only",
        }
    }

    pub fn parse(name: &str) -> Option<Stack> {
        Stack::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn speaks_version_status(self) -> bool {
        self == Stack::LorafleetDemo
    }

    pub fn speaks_firmware_management(self) -> bool {
        self != Stack::LorafleetDemo
    }

    /// Largest FragSize the device's fragment store takes (LoRaMac-node's `FragDecoder.h`).
    pub fn max_fragment_size(self) -> Option<u8> {
        match self {
            Stack::LoramacNode => Some(50),
            _ => None,
        }
    }

    /// How it fills FragSessionStatusAns.
    pub fn status_reading(self) -> Reading {
        match self {
            Stack::LoramacNode => Reading::HighestN,
            _ => Reading::Count,
        }
    }

    /// Whether it runs a rebuilt image by itself after the reboot delay; the others wait for a
    /// Firmware Management reboot request.
    pub fn reboots_by_itself(self) -> bool {
        self == Stack::LorafleetDemo
    }
}

/// The stack of device `n` of `total` for shares by stack name (already validated): devices
/// are dealt out in proportion, interleaved, so every share is spread over the fleet's
/// numbers. No shares: every device is a demo device.
pub fn stack_of(n: u32, total: u32, shares: &[(Stack, f64)]) -> Stack {
    let sum: f64 = shares.iter().map(|(_, s)| s.max(0.0)).sum();
    if shares.is_empty() || sum <= 0.0 || total == 0 {
        return Stack::LorafleetDemo;
    }
    // Device n takes the stack whose cumulative share covers its place, the places scattered
    // by the golden ratio so that neighbouring numbers get different stacks.
    let place = (f64::from(n) + 0.5) / f64::from(total);
    let spread = (place * 1_000_003.0 * 0.618_033_988_75).fract();
    let mut acc = 0.0;
    for &(stack, share) in shares {
        acc += share.max(0.0) / sum;
        if spread < acc {
            return stack;
        }
    }
    shares.last().map_or(Stack::LorafleetDemo, |(s, _)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Stack::ALL {
            assert_eq!(Stack::parse(s.name()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.name())
            );
        }
        assert_eq!(Stack::parse("lbm"), None);
    }

    #[test]
    fn shares_are_kept_over_a_fleet() {
        let shares = [
            (Stack::LorafleetDemo, 0.5),
            (Stack::LoramacNode, 0.3),
            (Stack::FirmwareManagementOnly, 0.2),
        ];
        let count = |want: Stack| {
            (0..1000)
                .filter(|&n| stack_of(n, 1000, &shares) == want)
                .count()
        };
        for (stack, share) in shares {
            let got = count(stack) as f64 / 1000.0;
            assert!((got - share).abs() < 0.05, "{stack:?}: {got}");
        }
        assert_eq!(stack_of(3, 10, &[]), Stack::LorafleetDemo);
    }
}

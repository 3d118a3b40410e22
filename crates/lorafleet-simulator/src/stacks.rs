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
//! - `lora-basics-modem`: like Semtech's LoRa Basics Modem: TS003/TS004/TS005 **v2** (the
//!   16-byte FragSessionSetupReq with SessionCnt and the data block's MIC, checked once the
//!   image is rebuilt; a SessionCnt not above the last one is refused; the v2 parity matrix;
//!   FragSessionStatusAns with the Status byte first), Firmware Management, no Version &
//!   Status, FragSessionStatusAns in the count reading (MissingFrag what is still unrecovered,
//!   answered to Participants = 0 only while that is above 0); reboots only when told to.
//!
//! Fragment limits are what each stack's build sets (LoRaMac-node's `FragDecoder.h`
//! FRAG_MAX_NB / FRAG_MAX_SIZE / FRAG_MAX_REDUNDANCY; LBM's `fragmentation_helper` -D flags);
//! `network.simulated.stack_limits` sets them per stack as a build would.

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
    #[serde(rename = "lora-basics-modem")]
    LoraBasicsModem,
}

/// What a stack's fragment decoder holds: a session above any of them is refused with
/// FragSessionSetupAns "not enough memory" (`max_parity`: more lost data fragments than its
/// matrix holds end the session with MatrixError / memory error instead, as TS004 setup does
/// not say how many parity fragments will come).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragLimits {
    /// Most data fragments (NbFrag) of a session.
    pub max_fragments: u16,
    /// Largest FragSize, bytes.
    pub max_fragment_size: u8,
    /// Most lost data fragments its decoder can rebuild from parity.
    pub max_parity: u16,
}

/// `network.simulated.stack_limits.<stack>`: the fields a build sets, over the stack's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FragLimitsPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fragments: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fragment_size: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parity: Option<u16>,
}

impl Stack {
    pub const ALL: [Stack; 4] = [
        Stack::LorafleetDemo,
        Stack::LoramacNode,
        Stack::FirmwareManagementOnly,
        Stack::LoraBasicsModem,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stack::LorafleetDemo => "lorafleet-demo",
            Stack::LoramacNode => "loramac-node",
            Stack::FirmwareManagementOnly => "firmware-management-only",
            Stack::LoraBasicsModem => "lora-basics-modem",
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

    /// The TS003/TS004/TS005 version it speaks.
    pub fn package_version(self) -> u8 {
        match self {
            Stack::LoraBasicsModem => 2,
            _ => 1,
        }
    }

    /// The fragment limits of its stock build, `None` for stacks bounded only by the slot.
    /// LoRaMac-node: `FragDecoder.h` (FRAG_MAX_NB 21, FRAG_MAX_SIZE 50, FRAG_MAX_REDUNDANCY 5;
    /// its FragSessionSetupReq refuses NbFrag x FragSize above FRAG_MAX_NB x FRAG_MAX_SIZE).
    /// LoRa Basics Modem: `fragmentation_helper_v2.0.0.h` defaults (100 fragments of up to
    /// 242 bytes, redundancy as many as the fragments).
    pub fn stock_limits(self) -> Option<FragLimits> {
        match self {
            Stack::LoramacNode => Some(FragLimits {
                max_fragments: 21,
                max_fragment_size: 50,
                max_parity: 5,
            }),
            Stack::LoraBasicsModem => Some(FragLimits {
                max_fragments: 100,
                max_fragment_size: 242,
                max_parity: 100,
            }),
            _ => None,
        }
    }

    /// Its limits with a build's settings over the stock ones (a stack without stock limits
    /// takes the patch's fields, the others unbounded).
    pub fn limits(self, build: Option<&FragLimitsPatch>) -> Option<FragLimits> {
        let base = self.stock_limits();
        let Some(b) = build else {
            return base;
        };
        let or = |v: Option<u16>, d: Option<u16>| v.or(d).unwrap_or(u16::MAX);
        Some(FragLimits {
            max_fragments: or(b.max_fragments, base.map(|l| l.max_fragments)),
            max_fragment_size: b
                .max_fragment_size
                .or(base.map(|l| l.max_fragment_size))
                .unwrap_or(u8::MAX),
            max_parity: or(b.max_parity, base.map(|l| l.max_parity)),
        })
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
        // (LoRaMac-node, LBM and the Firmware-Management-only stack wait for DevRebootTimeReq.)
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
    // Device n takes the stack whose cumulative share covers its place, the places the
    // golden-ratio sequence (n + 1) x 0.618... mod 1: neighbouring numbers get different
    // stacks and every prefix of the fleet keeps the shares closely, small fleets too (the
    // earlier scaled-place formula gave a 12-device fleet of four equal shares one stack only).
    let spread = ((f64::from(n) + 1.0) * 0.618_033_988_749_894_9).fract();
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
        assert_eq!(
            Stack::parse("lora-basics-modem"),
            Some(Stack::LoraBasicsModem)
        );
    }

    #[test]
    fn a_build_sets_limits_over_the_stock_ones() {
        let stock = Stack::LoramacNode.limits(None).unwrap();
        assert_eq!(
            (
                stock.max_fragments,
                stock.max_fragment_size,
                stock.max_parity
            ),
            (21, 50, 5)
        );
        let build = FragLimitsPatch {
            max_fragments: Some(200),
            ..Default::default()
        };
        let l = Stack::LoramacNode.limits(Some(&build)).unwrap();
        assert_eq!(
            (l.max_fragments, l.max_fragment_size, l.max_parity),
            (200, 50, 5)
        );
        assert_eq!(Stack::LorafleetDemo.limits(None), None);
        let l = Stack::LorafleetDemo.limits(Some(&build)).unwrap();
        assert_eq!((l.max_fragments, l.max_fragment_size), (200, 255));
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
        // Small fleets keep their shares too.
        let four: Vec<(Stack, f64)> = Stack::ALL.iter().map(|&s| (s, 0.25)).collect();
        for stack in Stack::ALL {
            let n = (0..12).filter(|&n| stack_of(n, 12, &four) == stack).count();
            assert_eq!(n, 3, "{stack:?}");
        }
    }
}

//! The device identifier every part of lorafleet names devices by.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A device's EUI-64: 16 hex digits on input in any case, lower case everywhere inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevEui(pub [u8; 8]);

impl DevEui {
    /// The EUI in `b`, or `None` unless `b` is exactly 8 bytes long.
    pub fn from_bytes(b: &[u8]) -> Option<DevEui> {
        Some(DevEui(b.try_into().ok()?))
    }
}

impl fmt::Display for DevEui {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Text that is not a DevEUI (the first 40 characters of it, for the message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a DevEUI is 16 hex digits, got {0:?}")]
pub struct BadDevEui(pub String);

impl FromStr for DevEui {
    type Err = BadDevEui;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.len() != 16 {
            return Err(BadDevEui(s.chars().take(40).collect()));
        }
        let mut out = [0u8; 8];
        hex::decode_to_slice(t, &mut out).map_err(|_| BadDevEui(s.chars().take(40).collect()))?;
        Ok(DevEui(out))
    }
}

impl Serialize for DevEui {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DevEui {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_eui_parses_any_case_and_prints_lower() {
        let e: DevEui = "01020304A0B0C0D0".parse().unwrap();
        assert_eq!(e.to_string(), "01020304a0b0c0d0");
        assert!("0102".parse::<DevEui>().is_err());
        assert!("0102030405060g08".parse::<DevEui>().is_err());
        assert!("01020304050607080".parse::<DevEui>().is_err());
    }
}

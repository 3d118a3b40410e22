//! The simulated network's settings (`network.simulated.*` in lorafleet's configuration).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stacks::{FragLimits, FragLimitsPatch, Stack};
use lorafleet_codec::eui::DevEui;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedConfig {
    /// Number of virtual devices.
    pub devices: u32,
    /// Share of frames lost on the radio, 0.0..1.0.
    pub loss: f64,
    /// How much faster than real time the simulation runs.
    pub time_scale: f64,
    /// Seconds between two periodic uplinks of a device (simulated time).
    pub uplink_interval_s: u64,
    /// Size of each of a device's three firmware slots, in bytes.
    pub slot_size: u32,
    /// Seconds a device waits between storing a complete image and running it.
    pub reboot_delay_s: u64,
    /// Per-device settings, keyed by DevEUI.
    pub overrides: BTreeMap<String, SimulatedDeviceOverride>,
    /// The fleet's device implementations by share, e.g. `{"lorafleet-demo": 0.5,
    /// "loramac-node": 0.3, "firmware-management-only": 0.2}` (see `stacks`); empty: every
    /// device is a demo device.
    pub stacks: BTreeMap<String, f64>,
    /// Per stack name, the fragment limits its build sets (`max_fragments`,
    /// `max_fragment_size`, `max_parity`), over the stack's stock ones (LoRaMac-node 21 / 50
    /// / 5, LoRa Basics Modem 100 / 242 / 100): as a device build sets FRAG_MAX_NB etc.
    pub stack_limits: BTreeMap<String, FragLimitsPatch>,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        Self {
            devices: 20,
            loss: 0.0,
            // Fast enough that a campaign with the form's defaults runs in about a minute.
            time_scale: 30.0,
            uplink_interval_s: 30,
            slot_size: 256 * 1024,
            reboot_delay_s: 10,
            overrides: BTreeMap::new(),
            stacks: BTreeMap::new(),
            stack_limits: BTreeMap::new(),
        }
    }
}

/// Settings of one virtual device that differ from the fleet's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedDeviceOverride {
    /// Share of all frames lost for this device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Share of multicast frames lost (a device at the edge of the class C gateway's coverage);
    /// defaults to `loss`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multicast_loss: Option<f64>,
    /// Firmware slot size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_size: Option<u32>,
    /// The device's implementation (a name of `stacks`), whatever the shares give it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

impl SimulatedConfig {
    /// Checks every value; the error names the key (relative to this section) and its bounds.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err("loss must be between 0.0 and 1.0".into());
        }
        if !(self.time_scale > 0.0 && self.time_scale.is_finite()) {
            return Err("time_scale must be a positive number".into());
        }
        if self.uplink_interval_s == 0 {
            return Err("uplink_interval_s must be at least 1".into());
        }
        self.stack_shares()?;
        for (name, l) in &self.stack_limits {
            if Stack::parse(name).is_none() {
                return Err(format!(
                    "stack_limits: {name:?} is not a device stack ({})",
                    stack_names()
                ));
            }
            for (key, v) in [
                ("max_fragments", l.max_fragments),
                ("max_fragment_size", l.max_fragment_size.map(u16::from)),
                ("max_parity", l.max_parity),
            ] {
                if v == Some(0) {
                    return Err(format!("stack_limits.{name}.{key} must be at least 1"));
                }
            }
        }
        for (eui, o) in &self.overrides {
            if let Some(s) = o.stack.as_deref().filter(|s| Stack::parse(s).is_none()) {
                return Err(format!(
                    "overrides.{eui}.stack: {s:?} is not a device stack ({})",
                    stack_names()
                ));
            }
            if eui.parse::<DevEui>().is_err() {
                return Err(format!(
                    "overrides: {eui:?} is not a DevEUI (16 hex digits)"
                ));
            }
            for (name, v) in [("loss", o.loss), ("multicast_loss", o.multicast_loss)] {
                if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                    return Err(format!(
                        "overrides.{eui}.{name} must be between 0.0 and 1.0"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn stack_names() -> String {
    Stack::ALL.map(Stack::name).join(", ")
}

impl SimulatedConfig {
    /// `stacks` as (stack, share), in the order of [`Stack::ALL`]; the error names the key.
    pub fn stack_shares(&self) -> Result<Vec<(Stack, f64)>, String> {
        let mut out = Vec::new();
        for (name, &share) in &self.stacks {
            let stack = Stack::parse(name).ok_or_else(|| {
                format!("stacks: {name:?} is not a device stack ({})", stack_names())
            })?;
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("stacks.{name} must be between 0.0 and 1.0"));
            }
            out.push((stack, share));
        }
        if !out.is_empty() && out.iter().all(|(_, s)| *s == 0.0) {
            return Err("stacks: at least one share must be above 0".into());
        }
        out.sort_by_key(|(s, _)| *s);
        Ok(out)
    }

    /// A stack's fragment limits in this fleet: its build's (`stack_limits`) over its stock ones.
    pub fn limits_of(&self, stack: Stack) -> Option<FragLimits> {
        stack.limits(self.stack_limits.get(stack.name()))
    }

    /// Device `n`'s stack: its override, else its share of the fleet.
    pub fn stack_of(&self, n: u32, dev_eui: &str) -> Stack {
        if let Some(s) = self
            .overrides
            .get(dev_eui)
            .and_then(|o| o.stack.as_deref())
            .and_then(Stack::parse)
        {
            return s;
        }
        crate::stacks::stack_of(n, self.devices, &self.stack_shares().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_value_is_named() {
        let bad = |f: fn(&mut SimulatedConfig)| {
            let mut c = SimulatedConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(SimulatedConfig::default().validate(), Ok(()));
        assert_eq!(bad(|c| c.loss = 1.5), "loss must be between 0.0 and 1.0");
        assert_eq!(
            bad(|c| c.time_scale = 0.0),
            "time_scale must be a positive number"
        );
        assert_eq!(
            bad(|c| c.time_scale = f64::INFINITY),
            "time_scale must be a positive number"
        );
        assert_eq!(
            bad(|c| c.uplink_interval_s = 0),
            "uplink_interval_s must be at least 1"
        );
        assert_eq!(
            bad(|c| {
                c.overrides
                    .insert("xyz".into(), SimulatedDeviceOverride::default());
            }),
            "overrides: \"xyz\" is not a DevEUI (16 hex digits)"
        );
        assert_eq!(
            bad(|c| {
                let o = SimulatedDeviceOverride {
                    multicast_loss: Some(-0.1),
                    ..Default::default()
                };
                c.overrides.insert("4c4653494d000001".into(), o);
            }),
            "overrides.4c4653494d000001.multicast_loss must be between 0.0 and 1.0"
        );
        assert_eq!(
            bad(|c| {
                c.stacks.insert("lbm".into(), 1.0);
            }),
            "stacks: \"lbm\" is not a device stack (lorafleet-demo, loramac-node, firmware-management-only, lora-basics-modem)"
        );
        assert_eq!(
            bad(|c| {
                c.stacks.insert("loramac-node".into(), 1.5);
            }),
            "stacks.loramac-node must be between 0.0 and 1.0"
        );
        assert_eq!(
            bad(|c| {
                let o = SimulatedDeviceOverride {
                    stack: Some("st".into()),
                    ..Default::default()
                };
                c.overrides.insert("4c4653494d000001".into(), o);
            }),
            "overrides.4c4653494d000001.stack: \"st\" is not a device stack (lorafleet-demo, loramac-node, firmware-management-only, lora-basics-modem)"
        );
        assert_eq!(
            bad(|c| {
                c.stack_limits.insert("st".into(), FragLimitsPatch::default());
            }),
            "stack_limits: \"st\" is not a device stack (lorafleet-demo, loramac-node, firmware-management-only, lora-basics-modem)"
        );
        assert_eq!(
            bad(|c| {
                let l = FragLimitsPatch {
                    max_parity: Some(0),
                    ..Default::default()
                };
                c.stack_limits.insert("loramac-node".into(), l);
            }),
            "stack_limits.loramac-node.max_parity must be at least 1"
        );
    }

    #[test]
    fn a_device_override_picks_its_stack() {
        let mut c = SimulatedConfig {
            devices: 4,
            ..Default::default()
        };
        c.stacks.insert("loramac-node".into(), 1.0);
        assert_eq!(c.stack_of(0, "4c4653494d000001"), Stack::LoramacNode);
        let o = SimulatedDeviceOverride {
            stack: Some("firmware-management-only".into()),
            ..Default::default()
        };
        c.overrides.insert("4c4653494d000001".into(), o);
        assert_eq!(
            c.stack_of(0, "4c4653494d000001"),
            Stack::FirmwareManagementOnly
        );
        assert_eq!(
            SimulatedConfig::default().stack_of(0, "x"),
            Stack::LorafleetDemo
        );
    }
}

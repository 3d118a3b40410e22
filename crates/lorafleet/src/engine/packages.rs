//! What each device of an engine campaign speaks, fixed when the campaign starts: its
//! device profile read from the network server (not from the last uplink), then the
//! campaign's `packages` and the device's override ([`lorafleet_engine::packages::resolve`]),
//! its limits, and for TS004 v2 the session counter and the image's MIC.
//!
//! [`RunningPackages`] tells the TS003 responder how each device of a running campaign syncs
//! its clock (its FPort, its version, or not by lorafleet at all), and the campaign runner's
//! wake-ups which FPorts carry its answers.

use std::collections::HashMap;
use std::sync::Mutex;

use lorafleet_engine::keys::RootKey;
use lorafleet_engine::machine::Dev;
use lorafleet_engine::packages::{
    self, ClockSync, DeviceLimits, DevicePackages, Packages, PackagesPatch,
};
use lorafleet_engine::sessions::Session;

use crate::devices::DevEui;
use crate::network::Network;

/// What a campaign says about one device's packages besides its profile.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceLayers {
    /// `device_overrides.<dev_eui>.packages`.
    pub packages: PackagesPatch,
    /// Its override over the campaign's over the model's.
    pub limits: DeviceLimits,
}

/// The campaign's part, the same for every device.
pub struct CampaignLayers<'a> {
    pub packages: PackagesPatch,
    pub status_port: u8,
    /// The unpadded image, for the TS004 v2 MIC.
    pub image: &'a [u8],
    /// TS004 v2 SessionCnt: the campaign's id (devices refuse a counter not above the last
    /// one they saw, and campaign ids only grow).
    pub session_cnt: u16,
    pub frag_index: u8,
    pub descriptor: [u8; 4],
    /// The multicast session the campaign's start grouped these devices into (its running
    /// wave's); `None`: the devices' most common one.
    pub session: Option<Session>,
}

/// One device's package versions and FPorts: its profile on the network server under the
/// campaign's `packages` and the device's override. A profile that cannot be read is a warning
/// (the campaign's layers and the defaults still hold), the returned text says so. Also what
/// the campaign's start groups the devices into multicast sessions by.
pub async fn speaks(
    network: &dyn Network,
    dev_eui: DevEui,
    device: &PackagesPatch,
    campaign: &PackagesPatch,
    status_port: u8,
) -> (Packages, Option<String>) {
    let (profile, warning) = match network.device_profile_packages(dev_eui).await {
        Ok(p) => (p, None),
        Err(e) => (
            None,
            Some(format!(
                "could not read the device profile's app-layer parameters ({e}); using the campaign's packages and the defaults"
            )),
        ),
    };
    let profile_patch = profile.as_ref().map(|p| p.patch()).unwrap_or_default();
    let answers = profile.as_ref().is_some_and(|p| p.answers_clock_sync());
    let p = packages::resolve(status_port, &[&profile_patch, campaign, device], answers);
    (p, warning)
}

/// One device's packages ([`speaks`]) with its limits and, for TS004 v2, its SessionCnt and
/// the image's MIC under its root key.
pub async fn resolve(
    network: &dyn Network,
    dev_eui: DevEui,
    root: RootKey,
    device: &DeviceLayers,
    campaign: &CampaignLayers<'_>,
) -> Result<(DevicePackages, Option<String>), String> {
    let (p, warning) = speaks(
        network,
        dev_eui,
        &device.packages,
        &campaign.packages,
        campaign.status_port,
    )
    .await;
    let frag_v2 = match p.fragmentation.version {
        2 => Some(packages::frag_v2(
            root_bytes(root),
            campaign.session_cnt,
            campaign.frag_index,
            campaign.descriptor,
            campaign.image,
        )?),
        _ => None,
    };
    Ok((
        DevicePackages {
            packages: p,
            limits: device.limits,
            frag_v2,
        },
        warning,
    ))
}

fn root_bytes(root: RootKey) -> [u8; 16] {
    match root {
        RootKey::GenAppKey(k) | RootKey::AppKey(k) => k,
    }
}

/// The packages of the devices of running engine campaigns; a device not in it uses the
/// defaults (TS003 v1 on FPort 202, answered by lorafleet).
#[derive(Default)]
pub struct RunningPackages {
    devices: Mutex<HashMap<DevEui, Packages>>,
}

impl RunningPackages {
    /// Notes the campaign's devices (called at start and on every poll, so a restart fills the
    /// table again from the stored engine state).
    pub fn note(&self, devs: &[Dev]) {
        let mut t = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        for d in devs {
            match (d.is_done(), d.packages) {
                (false, Some(p)) => {
                    t.insert(d.dev_eui, p.packages);
                }
                _ => {
                    t.remove(&d.dev_eui);
                }
            }
        }
    }

    /// Forgets the devices of a campaign that ended.
    pub fn forget(&self, devs: &[Dev]) {
        let mut t = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        for d in devs {
            t.remove(&d.dev_eui);
        }
    }

    /// The device's clock sync package.
    pub fn clock_sync(&self, dev_eui: DevEui) -> ClockSync {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dev_eui)
            .map_or(Packages::defaults(0).clock_sync, |p| p.clock_sync)
    }

    /// Whether an uplink on `f_port` from the device may answer one of its campaign's commands.
    pub fn answers_on(&self, dev_eui: DevEui, f_port: u8) -> bool {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dev_eui)
            .is_some_and(|p| p.answer_ports().contains(&f_port))
    }
}

//! The application-layer packages a device profile declares (ChirpStack v4
//! `DeviceProfile.app_layer_params`: TS003/TS004/TS005 version and FPort), read from the network
//! server through `DeviceService.Get` and `DeviceProfileService.Get`, never from an uplink's
//! copy of the profile id, which can be stale.
//!
//! What follows from a profile: its versions and FPorts are the device's defaults for
//! lorafleet's engine, a profile with TS003 means ChirpStack answers AppTimeReq itself (so
//! lorafleet stays silent), and a profile without TS004 or TS005 cannot carry ChirpStack's
//! own FUOTA.

use std::collections::HashMap;

use chirpstack_api::api;
use chirpstack_api::api::device_profile_service_client::DeviceProfileServiceClient;
use chirpstack_api::api::device_service_client::DeviceServiceClient;
use lorafleet_engine::packages::{ClockSyncPatch, PackagesPatch, VersionedPatch};

use super::chirpstack_v4::{map_status, Client};
use super::NetworkError;

/// One package as a profile declares it: (version, FPort); FPort 0 leaves the default.
type Declared = Option<(u8, u8)>;

/// A device profile's app-layer packages; `None` where the profile does not implement one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfilePackages {
    pub profile_id: String,
    pub profile_name: String,
    pub clock_sync: Declared,
    pub fragmentation: Declared,
    pub multicast_setup: Declared,
    /// Seconds between the devices' uplinks the profile expects (`uplink_interval`); none
    /// when the profile leaves it at 0.
    pub uplink_interval_s: Option<u32>,
}

fn declared(version: i32, f_port: u32) -> Declared {
    let version = u8::try_from(version).ok().filter(|v| (1..=2).contains(v))?;
    Some((version, u8::try_from(f_port).unwrap_or(0)))
}

impl ProfilePackages {
    /// The profile's parameters as ChirpStack returns them (absent parameters: nothing
    /// implemented).
    pub fn from_profile(id: &str, name: &str, p: Option<&api::AppLayerParams>) -> ProfilePackages {
        let p = p.cloned().unwrap_or_default();
        ProfilePackages {
            profile_id: id.to_string(),
            profile_name: name.to_string(),
            clock_sync: declared(p.ts003_version, p.ts003_f_port),
            fragmentation: declared(p.ts004_version, p.ts004_f_port),
            multicast_setup: declared(p.ts005_version, p.ts005_f_port),
            uplink_interval_s: None,
        }
    }

    /// ChirpStack answers the device's AppTimeReq itself.
    pub fn answers_clock_sync(&self) -> bool {
        self.clock_sync.is_some()
    }

    /// The profile as a layer of the engine's packages; with TS003 on, lorafleet's clock sync
    /// is off for the device (the server resolving the layers keeps it off).
    pub fn patch(&self) -> PackagesPatch {
        let versioned = |d: Declared| {
            d.map(|(version, f_port)| VersionedPatch {
                version: Some(version),
                f_port: (f_port != 0).then_some(f_port),
            })
        };
        PackagesPatch {
            clock_sync: self.clock_sync.map(|(version, f_port)| ClockSyncPatch {
                version: Some(version),
                f_port: (f_port != 0).then_some(f_port),
                enabled: Some(false),
            }),
            multicast_setup: versioned(self.multicast_setup),
            fragmentation: versioned(self.fragmentation),
            ..Default::default()
        }
    }

    /// What the profile lacks for a FUOTA deployment, in words; None when it has both.
    pub fn lacks_fuota(&self) -> Option<String> {
        let missing: Vec<&str> = [
            (
                self.multicast_setup.is_none(),
                "TS005 (Remote Multicast Setup)",
            ),
            (
                self.fragmentation.is_none(),
                "TS004 (Fragmented Data Block Transport)",
            ),
        ]
        .into_iter()
        .filter_map(|(m, n)| m.then_some(n))
        .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "device profile \"{}\" ({}) does not enable {}; enable it in the profile's application-layer parameters",
                self.profile_name,
                self.profile_id,
                missing.join(" and ")
            )
        })
    }
}

/// Reads the profile of each device through ChirpStack's API; a profile shared by many
/// devices is read once (`profiles` caches them by id across calls of one campaign start).
pub async fn read(
    client: &Client,
    dev_eui: &str,
    profiles: &mut HashMap<String, ProfilePackages>,
) -> Result<ProfilePackages, NetworkError> {
    let status = |s| map_status(client.url(), client.timeout(), s);
    let device = DeviceServiceClient::new(client.channel())
        .get(client.request(api::GetDeviceRequest {
            dev_eui: dev_eui.to_string(),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .device
        .ok_or_else(|| NetworkError::UnknownDevice(dev_eui.to_string()))?;
    if let Some(p) = profiles.get(&device.device_profile_id) {
        return Ok(p.clone());
    }
    let profile = DeviceProfileServiceClient::new(client.channel())
        .get(client.request(api::GetDeviceProfileRequest {
            id: device.device_profile_id.clone(),
        }))
        .await
        .map_err(status)?
        .into_inner()
        .device_profile
        .unwrap_or_default();
    let mut p = ProfilePackages::from_profile(
        &device.device_profile_id,
        &profile.name,
        profile.app_layer_params.as_ref(),
    );
    p.uplink_interval_s = (profile.uplink_interval > 0).then_some(profile.uplink_interval);
    profiles.insert(device.device_profile_id, p.clone());
    Ok(p)
}

/// The devices' profiles that cannot carry ChirpStack's FUOTA: one message per profile,
/// naming it and which of the campaign's devices use it. ChirpStack would accept the
/// deployment and fail its first job ("Device-profile does not support TS005"), so this is
/// asked before start.
pub async fn fuota_profile_problems(
    client: &Client,
    dev_euis: &[String],
) -> Result<Vec<String>, NetworkError> {
    let mut profiles = HashMap::new();
    let mut lacking: Vec<(ProfilePackages, Vec<String>)> = Vec::new();
    for eui in dev_euis {
        let p = match read(client, eui, &mut profiles).await {
            Ok(p) => p,
            // A device ChirpStack does not know is the preflight's own finding, said there.
            Err(NetworkError::UnknownDevice(_)) => continue,
            Err(e) => return Err(e),
        };
        if p.lacks_fuota().is_none() {
            continue;
        }
        match lacking
            .iter_mut()
            .find(|(q, _)| q.profile_id == p.profile_id)
        {
            Some((_, devices)) => devices.push(eui.clone()),
            None => lacking.push((p, vec![eui.clone()])),
        }
    }
    Ok(lacking
        .into_iter()
        .filter_map(|(p, devices)| {
            p.lacks_fuota()
                .map(|why| format!("{why} (used by {})", devices.join(", ")))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(ts003: (i32, u32), ts004: (i32, u32), ts005: (i32, u32)) -> api::AppLayerParams {
        api::AppLayerParams {
            ts003_version: ts003.0,
            ts003_f_port: ts003.1,
            ts004_version: ts004.0,
            ts004_f_port: ts004.1,
            ts005_version: ts005.0,
            ts005_f_port: ts005.1,
        }
    }

    #[test]
    fn a_v2_profile_on_its_own_ports() {
        let p = ProfilePackages::from_profile(
            "dp-1",
            "meters v2",
            Some(&params((2, 202), (2, 51), (2, 50))),
        );
        assert!(p.answers_clock_sync());
        assert_eq!(p.lacks_fuota(), None);
        let patch = p.patch();
        assert_eq!(
            serde_json::to_value(patch).unwrap(),
            serde_json::json!({
                "clock_sync": {"version": 2, "f_port": 202, "enabled": false},
                "multicast_setup": {"version": 2, "f_port": 50},
                "fragmentation": {"version": 2, "f_port": 51}
            })
        );
    }

    #[test]
    fn a_profile_without_fuota_packages_is_named() {
        let p = ProfilePackages::from_profile("dp-2", "plain", None);
        assert!(!p.answers_clock_sync());
        assert!(p.patch().is_empty());
        assert_eq!(
            p.lacks_fuota().unwrap(),
            "device profile \"plain\" (dp-2) does not enable TS005 (Remote Multicast Setup) and TS004 (Fragmented Data Block Transport); enable it in the profile's application-layer parameters"
        );
        let only_ts005 =
            ProfilePackages::from_profile("dp-3", "half", Some(&params((0, 0), (0, 0), (1, 0))));
        assert!(only_ts005.lacks_fuota().unwrap().contains("TS004"));
        assert_eq!(
            only_ts005.patch().multicast_setup,
            Some(VersionedPatch {
                version: Some(1),
                f_port: None
            }),
            "FPort 0: the package's default"
        );
    }
}

//! A campaign's `packages`, `device_limits` and `device_overrides`: the request's shapes,
//! their checks (each problem on its field), and how the layers combine for one device.
//!
//! Packages, later layers winning field by field: the packages' defaults (v1 on FPorts
//! 200/201/202/203, Version & Status on `status_protocol.f_port`), the device's profile on the
//! network server (ChirpStack v4 `app_layer_params`), the campaign's `packages`, the device's
//! `device_overrides.<dev_eui>.packages`. A device profile with TS003 enabled means ChirpStack
//! answers AppTimeReq itself, so lorafleet's clock sync stays silent for that device whatever
//! the layers above say.
//!
//! Device limits, the most specific known winning field by field: the device's override, the
//! campaign's `device_limits`, the firmware sidecar's `[device_limits]` (the model's).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::plan::PlanWarning;
use super::validate::FieldErrors;
use super::DriverKind;
pub use crate::storage::campaigns::DeviceOverride;
pub use lorafleet_engine::packages::{
    ClockSyncPatch, DeviceLimits, Packages, PackagesPatch, PortPatch, VersionedPatch,
};

/// `packages` of a request (the campaign's or one device's).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackagesRequest {
    pub clock_sync: Option<ClockSyncRequest>,
    pub multicast_setup: Option<VersionedRequest>,
    pub fragmentation: Option<VersionedRequest>,
    pub firmware_management: Option<VersionedRequest>,
    pub version_status: Option<PortRequest>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockSyncRequest {
    /// 1 or 2.
    pub version: Option<i64>,
    pub f_port: Option<i64>,
    /// Whether lorafleet answers the devices' AppTimeReq (default true).
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionedRequest {
    /// 1 or 2 (Firmware Management: 1).
    pub version: Option<i64>,
    pub f_port: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortRequest {
    pub f_port: Option<i64>,
}

/// `device_limits`: what a device's fragment decoder holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceLimitsRequest {
    /// Largest FragSize in bytes.
    pub max_fragment_size: Option<i64>,
    /// Largest NbFrag (data fragments).
    pub max_fragments: Option<i64>,
    /// Most parity fragments.
    pub max_parity: Option<i64>,
}

/// `device_overrides.<dev_eui>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceOverrideRequest {
    pub packages: Option<PackagesRequest>,
    pub device_limits: Option<DeviceLimitsRequest>,
}

/// The campaign's part of these settings, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checked {
    pub packages: PackagesPatch,
    pub device_limits: DeviceLimits,
    pub device_overrides: BTreeMap<String, DeviceOverride>,
}

/// What the request said, with what checking needs besides it.
pub struct Given<'a> {
    pub packages: Option<&'a PackagesRequest>,
    pub device_limits: Option<&'a DeviceLimitsRequest>,
    pub device_overrides: Option<&'a BTreeMap<String, DeviceOverrideRequest>>,
    pub driver: DriverKind,
    /// The campaign's devices (lower-case DevEUIs).
    pub devices: &'a [String],
    pub status_port: u8,
}

/// Checks `packages`, `device_limits` and `device_overrides`; every problem goes to `errors`.
pub fn check(g: &Given, errors: &mut FieldErrors) -> Checked {
    let packages = packages_of(g.packages, "packages", errors);
    let campaign_given = g.packages.is_some();
    let mut device_overrides = BTreeMap::new();
    for (eui, o) in g.device_overrides.into_iter().flatten() {
        let field = format!("device_overrides.{eui}");
        let key = eui.trim().to_ascii_lowercase();
        if !g.devices.contains(&key) {
            errors.add(
                &field,
                format!("{field}: {eui} is not one of the campaign's devices"),
            );
            continue;
        }
        let own = format!("{field}.packages");
        let over = DeviceOverride {
            packages: packages_of(o.packages.as_ref(), &own, errors),
            device_limits: device_limits(
                o.device_limits.as_ref(),
                &format!("{field}.device_limits"),
                errors,
            ),
        };
        if o.packages.is_some() {
            distinct_ports(g.status_port, &[&packages, &over.packages], &own, errors);
        }
        device_overrides.insert(key, over);
    }
    if campaign_given {
        distinct_ports(g.status_port, &[&packages], "packages", errors);
    }
    let speaks_packages = campaign_given
        || device_overrides
            .values()
            .any(|o: &DeviceOverride| !o.packages.is_empty());
    if speaks_packages && g.driver != DriverKind::Engine {
        errors.add(
            "packages",
            format!(
                "packages: only lorafleet's engine (driver \"engine\") sends with per-device package versions and FPorts; the {} driver's service chooses them itself (ChirpStack v4: from each device profile's app-layer parameters)",
                g.driver
            ),
        );
    }
    Checked {
        packages,
        device_limits: device_limits(g.device_limits, "device_limits", errors),
        device_overrides,
    }
}

fn packages_of(
    req: Option<&PackagesRequest>,
    field: &str,
    errors: &mut FieldErrors,
) -> PackagesPatch {
    let Some(r) = req else {
        return PackagesPatch::default();
    };
    let versioned = |v: &Option<VersionedRequest>, name: &str, max: i64, errors: &mut _| {
        v.as_ref().map(|v| VersionedPatch {
            version: version(v.version, &format!("{field}.{name}.version"), max, errors),
            f_port: f_port(v.f_port, &format!("{field}.{name}.f_port"), errors),
        })
    };
    PackagesPatch {
        clock_sync: r.clock_sync.as_ref().map(|c| ClockSyncPatch {
            version: version(c.version, &format!("{field}.clock_sync.version"), 2, errors),
            f_port: f_port(c.f_port, &format!("{field}.clock_sync.f_port"), errors),
            enabled: c.enabled,
        }),
        multicast_setup: versioned(&r.multicast_setup, "multicast_setup", 2, errors),
        fragmentation: versioned(&r.fragmentation, "fragmentation", 2, errors),
        firmware_management: versioned(&r.firmware_management, "firmware_management", 1, errors),
        version_status: r.version_status.as_ref().map(|v| PortPatch {
            f_port: f_port(v.f_port, &format!("{field}.version_status.f_port"), errors),
        }),
    }
}

fn version(v: Option<i64>, field: &str, max: i64, errors: &mut FieldErrors) -> Option<u8> {
    let v = v?;
    if (1..=max).contains(&v) {
        return u8::try_from(v).ok();
    }
    let allowed = if max == 1 { "1" } else { "1 or 2" };
    errors.add(field, format!("{field} must be {allowed}, got {v}"));
    None
}

/// Application FPorts: 0 carries MAC commands and 224 the certification protocol.
fn f_port(v: Option<i64>, field: &str, errors: &mut FieldErrors) -> Option<u8> {
    let v = v?;
    if (1..=223).contains(&v) {
        return u8::try_from(v).ok();
    }
    errors.add(
        field,
        format!("{field} must be an application FPort, 1..223, got {v}"),
    );
    None
}

/// Two packages on one FPort could not tell their answers apart.
fn distinct_ports(
    status_port: u8,
    layers: &[&PackagesPatch],
    field: &str,
    errors: &mut FieldErrors,
) {
    let p = layers
        .iter()
        .fold(Packages::defaults(status_port), |p, l| p.with(l));
    let named = [
        ("clock_sync", p.clock_sync.f_port),
        ("multicast_setup", p.multicast_setup.f_port),
        ("fragmentation", p.fragmentation.f_port),
        ("firmware_management", p.firmware_management.f_port),
        ("version_status", p.version_status.f_port),
    ];
    for (i, (a, port)) in named.iter().enumerate() {
        if let Some((b, _)) = named[..i].iter().find(|(_, q)| q == port) {
            errors.add(
                format!("{field}.{a}.f_port"),
                format!(
                    "{field}: {b} and {a} would both use FPort {port}; give each package its own"
                ),
            );
        }
    }
}

fn device_limits(
    req: Option<&DeviceLimitsRequest>,
    field: &str,
    errors: &mut FieldErrors,
) -> DeviceLimits {
    let Some(r) = req else {
        return DeviceLimits::default();
    };
    let max_n = lorafleet_codec::fragmentation::MAX_FRAGMENTS as i64;
    let mut one = |v: Option<i64>, name: &str, min: i64, max: i64| {
        let v = v?;
        if (min..=max).contains(&v) {
            return u32::try_from(v).ok();
        }
        errors.add(
            format!("{field}.{name}"),
            format!("{field}.{name} must be {min}..{max}, got {v}"),
        );
        None
    };
    DeviceLimits {
        max_fragment_size: one(r.max_fragment_size, "max_fragment_size", 1, 255),
        max_fragments: one(r.max_fragments, "max_fragments", 1, max_n),
        max_parity: one(r.max_parity, "max_parity", 0, max_n),
    }
}

/// The limits that hold for one device: its override over the campaign's over the model's.
pub fn limits_for(
    dev_eui: &str,
    campaign: DeviceLimits,
    overrides: &BTreeMap<String, DeviceOverride>,
    model: Option<DeviceLimits>,
) -> DeviceLimits {
    let own = overrides
        .get(dev_eui)
        .map(|o| o.device_limits)
        .unwrap_or_default();
    own.over(campaign).over(model.unwrap_or_default())
}

/// The largest fragment every device takes: the smallest `max_fragment_size` over the
/// campaign's devices (the campaign's and the model's when no device is listed).
pub fn smallest_fragment_limit(
    devices: &[String],
    campaign: DeviceLimits,
    overrides: &BTreeMap<String, DeviceOverride>,
    model: Option<DeviceLimits>,
) -> Option<usize> {
    if devices.is_empty() {
        return campaign
            .over(model.unwrap_or_default())
            .max_fragment_size
            .map(|v| v as usize);
    }
    devices
        .iter()
        .filter_map(|d| limits_for(d, campaign, overrides, model).max_fragment_size)
        .min()
        .map(|v| v as usize)
}

/// What the plan's limit warnings need.
pub struct Session<'a> {
    pub devices: &'a [String],
    pub campaign: DeviceLimits,
    pub overrides: &'a BTreeMap<String, DeviceOverride>,
    pub model: Option<DeviceLimits>,
    pub fragment_size: u32,
    pub data_fragments: u32,
    pub parity: u32,
}

/// A warning for each device that would refuse the session ("not enough memory"), naming the
/// limits it exceeds; without listed devices, one for the campaign's (or model's) limits.
pub fn limit_warnings(s: &Session) -> Vec<PlanWarning> {
    let warn = |dev_eui: Option<String>, limits: DeviceLimits| {
        let exceeded = limits.exceeded(s.fragment_size, s.data_fragments, s.parity);
        (!exceeded.is_empty()).then(|| PlanWarning {
            dev_eui,
            message: format!(
                "the device would refuse the session (FragSessionSetupAns \"not enough memory\"): {}",
                exceeded.join(", ")
            ),
        })
    };
    if s.devices.is_empty() {
        return warn(None, s.campaign.over(s.model.unwrap_or_default()))
            .into_iter()
            .collect();
    }
    s.devices
        .iter()
        .filter_map(|d| {
            warn(
                Some(d.clone()),
                limits_for(d, s.campaign, s.overrides, s.model),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const A: &str = "0102030405060708";
    const B: &str = "0102030405060709";

    fn check_json(body: serde_json::Value, driver: DriverKind) -> (Checked, Vec<(String, String)>) {
        #[derive(Deserialize)]
        struct Body {
            packages: Option<PackagesRequest>,
            device_limits: Option<DeviceLimitsRequest>,
            device_overrides: Option<BTreeMap<String, DeviceOverrideRequest>>,
        }
        let b: Body = serde_json::from_value(body).unwrap();
        let devices = vec![A.to_string(), B.to_string()];
        let mut errors = FieldErrors::default();
        let checked = check(
            &Given {
                packages: b.packages.as_ref(),
                device_limits: b.device_limits.as_ref(),
                device_overrides: b.device_overrides.as_ref(),
                driver,
                devices: &devices,
                status_port: 111,
            },
            &mut errors,
        );
        let list = errors.0.into_iter().map(|e| (e.field, e.error)).collect();
        (checked, list)
    }

    /// Accepted values, stored as given (nothing filled in: the device profile may still).
    #[test]
    fn accepted_packages_and_limits() {
        let cases = [
            (json!({}), json!(null), json!({})),
            (
                json!({"packages": {"fragmentation": {"version": 2, "f_port": 210}}}),
                json!({"fragmentation": {"version": 2, "f_port": 210}}),
                json!({}),
            ),
            (
                json!({"packages": {"clock_sync": {"version": 2, "f_port": 202, "enabled": false},
                    "multicast_setup": {"version": 1, "f_port": 200}, "firmware_management":
                    {"version": 1, "f_port": 203}, "version_status": {"f_port": 111}}}),
                json!({"clock_sync": {"version": 2, "f_port": 202, "enabled": false},
                    "multicast_setup": {"version": 1, "f_port": 200}, "firmware_management":
                    {"version": 1, "f_port": 203}, "version_status": {"f_port": 111}}),
                json!({}),
            ),
            (
                json!({"device_limits": {"max_fragment_size": 50, "max_fragments": 21, "max_parity": 0}}),
                json!(null),
                json!({"max_fragment_size": 50, "max_fragments": 21, "max_parity": 0}),
            ),
        ];
        for (body, packages, limits) in cases {
            let (c, errors) = check_json(body.clone(), DriverKind::Engine);
            assert!(errors.is_empty(), "{body}: {errors:?}");
            let expect: PackagesPatch = serde_json::from_value(packages).unwrap_or_default();
            assert_eq!(c.packages, expect, "{body}");
            assert_eq!(
                serde_json::to_value(c.device_limits).unwrap(),
                limits,
                "{body}"
            );
        }
    }

    /// Each refusal on its field, with the allowed values.
    #[test]
    fn refused_values_name_their_field() {
        let cases = [
            (
                json!({"packages": {"fragmentation": {"version": 3}}}),
                "packages.fragmentation.version",
                "packages.fragmentation.version must be 1 or 2, got 3",
            ),
            (
                json!({"packages": {"firmware_management": {"version": 2}}}),
                "packages.firmware_management.version",
                "packages.firmware_management.version must be 1, got 2",
            ),
            (
                json!({"packages": {"clock_sync": {"f_port": 224}}}),
                "packages.clock_sync.f_port",
                "packages.clock_sync.f_port must be an application FPort, 1..223, got 224",
            ),
            (
                json!({"packages": {"multicast_setup": {"f_port": 201}}}),
                "packages.fragmentation.f_port",
                "packages: multicast_setup and fragmentation would both use FPort 201; give each package its own",
            ),
            (
                json!({"packages": {"version_status": {"f_port": 0}}}),
                "packages.version_status.f_port",
                "packages.version_status.f_port must be an application FPort, 1..223, got 0",
            ),
            (
                json!({"device_limits": {"max_fragment_size": 0}}),
                "device_limits.max_fragment_size",
                "device_limits.max_fragment_size must be 1..255, got 0",
            ),
            (
                json!({"device_limits": {"max_fragments": 20000}}),
                "device_limits.max_fragments",
                "device_limits.max_fragments must be 1..16383, got 20000",
            ),
            (
                json!({"device_limits": {"max_parity": -1}}),
                "device_limits.max_parity",
                "device_limits.max_parity must be 0..16383, got -1",
            ),
            (
                json!({"device_overrides": {"ffffffffffffffff": {"device_limits": {"max_parity": 5}}}}),
                "device_overrides.ffffffffffffffff",
                "device_overrides.ffffffffffffffff: ffffffffffffffff is not one of the campaign's devices",
            ),
            (
                json!({"device_overrides": {A: {"packages": {"fragmentation": {"f_port": 111}}}}}),
                "device_overrides.0102030405060708.packages.version_status.f_port",
                "device_overrides.0102030405060708.packages: fragmentation and version_status would both use FPort 111; give each package its own",
            ),
            (
                json!({"device_overrides": {A: {"device_limits": {"max_fragment_size": 300}}}}),
                "device_overrides.0102030405060708.device_limits.max_fragment_size",
                "device_overrides.0102030405060708.device_limits.max_fragment_size must be 1..255, got 300",
            ),
        ];
        for (body, field, message) in cases {
            let (_, errors) = check_json(body.clone(), DriverKind::Engine);
            assert_eq!(
                errors,
                vec![(field.to_string(), message.to_string())],
                "{body}"
            );
        }
    }

    #[test]
    fn packages_belong_to_the_engine() {
        let (_, errors) = check_json(
            json!({"packages": {"fragmentation": {"version": 2}}}),
            DriverKind::ChirpstackV4,
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "packages");
        assert!(errors[0].1.contains("app-layer parameters"), "{errors:?}");
        let (_, errors) = check_json(
            json!({"device_limits": {"max_fragment_size": 50}}),
            DriverKind::ChirpstackV4,
        );
        assert!(errors.is_empty(), "limits shape every driver's plan");
    }

    #[test]
    fn device_overrides_are_kept_per_device() {
        let (c, errors) = check_json(
            json!({"device_overrides": {A.to_uppercase(): {"packages": {"fragmentation": {"version": 2}},
                "device_limits": {"max_fragment_size": 40}}}}),
            DriverKind::Engine,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let o = &c.device_overrides[A];
        assert_eq!(o.packages.fragmentation.unwrap().version, Some(2));
        assert_eq!(o.device_limits.max_fragment_size, Some(40));
    }

    /// The most specific layer wins per field; the smallest fragment limit over the devices.
    #[test]
    fn limits_layer_and_the_smallest_wins_the_fragment_size() {
        let model = DeviceLimits {
            max_fragment_size: Some(100),
            max_fragments: Some(2000),
            max_parity: None,
        };
        let campaign = DeviceLimits {
            max_parity: Some(50),
            ..Default::default()
        };
        let mut overrides = BTreeMap::new();
        overrides.insert(
            A.to_string(),
            DeviceOverride {
                device_limits: DeviceLimits {
                    max_fragment_size: Some(50),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        let a = limits_for(A, campaign, &overrides, Some(model));
        assert_eq!(
            (a.max_fragment_size, a.max_fragments, a.max_parity),
            (Some(50), Some(2000), Some(50))
        );
        let b = limits_for(B, campaign, &overrides, Some(model));
        assert_eq!(b.max_fragment_size, Some(100));
        let devices = vec![A.to_string(), B.to_string()];
        assert_eq!(
            smallest_fragment_limit(&devices, campaign, &overrides, Some(model)),
            Some(50)
        );
        assert_eq!(
            smallest_fragment_limit(&[], campaign, &overrides, Some(model)),
            Some(100)
        );
        assert_eq!(
            smallest_fragment_limit(&devices, campaign, &BTreeMap::new(), None),
            None
        );
        let warnings = limit_warnings(&Session {
            devices: &devices,
            campaign,
            overrides: &overrides,
            model: Some(model),
            fragment_size: 80,
            data_fragments: 100,
            parity: 60,
        });
        let by_device: Vec<(Option<String>, String)> = warnings
            .into_iter()
            .map(|w| (w.dev_eui, w.message))
            .collect();
        assert_eq!(
            by_device,
            vec![
                (
                    Some(A.to_string()),
                    "the device would refuse the session (FragSessionSetupAns \"not enough memory\"): 80 bytes per fragment exceed its max_fragment_size of 50, 60 parity fragments exceed its max_parity of 50".to_string()
                ),
                (
                    Some(B.to_string()),
                    "the device would refuse the session (FragSessionSetupAns \"not enough memory\"): 60 parity fragments exceed its max_parity of 50".to_string()
                ),
            ]
        );
    }
}

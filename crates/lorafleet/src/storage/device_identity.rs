//! What a device is and runs, as the compatibility guard of a campaign compares it with an
//! image: the names the network and the device give it, the manufacturer it reported, its
//! Firmware Management hardware version and its running version.

use std::collections::HashMap;

use super::{Cols, Db, Result};

/// One device's identity as far as lorafleet knows it; every field may be unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub dev_eui: String,
    /// The device list's model: a `model` tag, else the device-profile name, else the
    /// reported device description.
    pub model: Option<String>,
    pub device_profile_name: Option<String>,
    pub device_profile_id: Option<String>,
    /// Tags from the network server (`model`, `device_class`, `manufacturer`, ...).
    pub tags: HashMap<String, String>,
    /// Version & Status DeviceDescriptionAns.
    pub manufacturer_id: Option<String>,
    pub device_id: Option<String>,
    /// Firmware Management DevVersionAns, as eight hex digits.
    pub hardware_version: Option<String>,
    /// The running version (raw) from Version & Status or Firmware Management.
    pub running_version: Option<u32>,
    /// How the device writes its version (Version & Status PackageVersionAns), if it said.
    pub versioning_type: Option<i64>,
}

/// The identities of the given (lower-case) DevEUIs that the inventory has.
pub async fn identities(db: &Db, euis: &[String]) -> Result<HashMap<String, DeviceIdentity>> {
    let mut out = HashMap::new();
    for eui in euis {
        let found = on!(db, c => sqlx::query(
            "SELECT dev_eui, model, device_profile_name, device_profile_id, tags_json,
                manufacturer_id, device_id, running_version, versioning_type, firmware_management
             FROM devices WHERE dev_eui = $1",
        )
        .bind(eui)
        .fetch_optional(c)
        .await?
        .map(|r| from_row(&r)));
        if let Some(id) = found {
            out.insert(eui.clone(), id);
        }
    }
    Ok(out)
}

fn from_row(r: &impl Cols) -> DeviceIdentity {
    let tags: HashMap<String, String> = r
        .get::<Option<String>>("tags_json")
        .and_then(|t| serde_json::from_str::<HashMap<String, serde_json::Value>>(&t).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
        .collect();
    let fm: Option<serde_json::Value> = r
        .get::<Option<String>>("firmware_management")
        .and_then(|t| serde_json::from_str(&t).ok());
    let fm_field = |name: &str, key: &str| {
        fm.as_ref()
            .and_then(|f| f.get(name))
            .and_then(|v| v.get(key))
            .cloned()
    };
    let running: Option<i64> = r.get("running_version");
    DeviceIdentity {
        dev_eui: r.get("dev_eui"),
        model: r.get("model"),
        device_profile_name: r.get("device_profile_name"),
        device_profile_id: r.get("device_profile_id"),
        tags,
        manufacturer_id: r.get("manufacturer_id"),
        device_id: r.get("device_id"),
        hardware_version: fm_field("hardware_version", "hex")
            .and_then(|v| v.as_str().map(str::to_string)),
        // A device that answers only Firmware Management reports its version there.
        running_version: running.and_then(|v| u32::try_from(v).ok()).or_else(|| {
            fm_field("firmware_version", "value")
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
        }),
        versioning_type: r.get("versioning_type"),
    }
}

//! The device inventory: every device lorafleet has heard of, what it last sent, its Version &
//! Status answers and its event log.

pub mod record;

use lorafleet_codec::version_status::{self, VersioningType};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use lorafleet_codec::eui::{BadDevEui, DevEui};

/// A firmware version as a device reported it: the raw value and its rendering by the device's
/// versioning type (raw hex until the type is known).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct VersionDto {
    pub raw: u32,
    pub display: String,
}

/// Renders a version by the device's versioning type, if known.
pub fn version_dto(raw: i64, versioning_type: Option<i64>) -> VersionDto {
    let raw = raw as u32;
    let vt = versioning_type.map(|t| VersioningType::from_nibble(t as u8));
    VersionDto {
        raw,
        display: version_status::render_version(raw, vt),
    }
}

/// One row of the device list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceSummary {
    pub dev_eui: String,
    pub name: String,
    pub application: Option<String>,
    pub last_seen: Option<String>,
    pub running_version: Option<VersionDto>,
    /// Listed by the network server's API but never heard by lorafleet.
    pub never_seen: bool,
    /// Set when a device that was removed from the list sent again.
    pub reappeared_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceList {
    pub total: i64,
    pub devices: Vec<DeviceSummary>,
}

/// One uplink as the console shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UplinkDto {
    pub received_at: String,
    pub f_port: Option<i64>,
    pub f_cnt: Option<i64>,
    pub dr: Option<i64>,
    pub frequency: Option<i64>,
    pub rssi: Option<i64>,
    pub snr: Option<f64>,
    pub gateway_count: i64,
    pub confirmed: bool,
    pub data_hex: String,
    /// The payload as text, only when it is printable UTF-8.
    pub data_text: Option<String>,
    #[schema(value_type = Object)]
    pub object: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UplinkList {
    pub uplinks: Vec<UplinkDto>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PackageDto {
    pub identifier: i64,
    pub version: i64,
    pub versioning_type: i64,
    pub slots: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunningDto {
    pub slot: i64,
    pub version: VersionDto,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredDto {
    pub slot: i64,
    pub version: VersionDto,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ReportedAt {
    pub package: Option<String>,
    pub running: Option<String>,
    pub stored: Option<String>,
    pub space: Option<String>,
    pub uptime: Option<String>,
    pub description: Option<String>,
}

/// What the device said through the Version & Status package; null until it said it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusDto {
    pub package: Option<PackageDto>,
    pub running: Option<RunningDto>,
    pub stored: Option<Vec<StoredDto>>,
    pub heap_available: Option<i64>,
    pub slot_size: Option<i64>,
    pub uptime_s: Option<i64>,
    pub manufacturer_id: Option<String>,
    pub device_id: Option<String>,
    pub reported_at: ReportedAt,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusRequestDto {
    pub id: i64,
    pub command: String,
    pub payload_hex: String,
    /// `pending` until the device answers (or, for erase_slot, the network delivered it),
    /// then `answered`; `failed` when the network refused it.
    pub state: String,
    pub requested_at: String,
    pub answered_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceEventDto {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DownlinkDto {
    pub id: i64,
    pub f_port: i64,
    pub data_hex: String,
    pub confirmed: bool,
    pub status_command: Option<String>,
    pub state: String,
    pub requested_at: String,
    pub updated_at: String,
    pub error: Option<String>,
}

/// Everything the device page shows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceDetail {
    pub dev_eui: String,
    pub name: String,
    pub application: Option<String>,
    pub application_id: Option<String>,
    pub device_profile: Option<String>,
    pub device_profile_id: Option<String>,
    #[schema(value_type = Object)]
    pub tags: serde_json::Value,
    pub dev_addr: Option<String>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub joined_at: Option<String>,
    pub never_seen: bool,
    pub reappeared_at: Option<String>,
    pub battery: Option<f64>,
    pub margin: Option<i64>,
    pub last_uplink: Option<UplinkDto>,
    pub status: StatusDto,
    pub status_requests: Vec<StatusRequestDto>,
    pub downlinks: Vec<DownlinkDto>,
    pub events: Vec<DeviceEventDto>,
    /// Running versions over time and the campaigns that updated the device.
    pub firmware_history: Vec<crate::storage::firmware_history::HistoryEntry>,
    /// What the device reported through Firmware Management (TS006): `firmware_version`,
    /// `hardware_version`, `image` (`status`: absent, corrupt, incompatible or valid, with its
    /// `version`), `reboot`, each with the time (`at`) it was reported.
    #[schema(value_type = Option<Object>)]
    pub firmware_management: Option<serde_json::Value>,
}

/// The payload as text when it is printable UTF-8 (tabs and line breaks allowed), else None.
pub fn printable_text(data: &[u8]) -> Option<String> {
    if data.is_empty() {
        return None;
    }
    let s = std::str::from_utf8(data).ok()?;
    if s.chars()
        .all(|c| !c.is_control() || c == '\n' || c == '\r' || c == '\t')
    {
        Some(s.to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_printable_utf8_is_text() {
        assert_eq!(printable_text(b"hello\n"), Some("hello\n".into()));
        assert_eq!(printable_text(&[0x01, 0x02]), None);
        assert_eq!(printable_text(&[0xff, 0xfe]), None);
        assert_eq!(printable_text(b""), None);
        assert_eq!(
            printable_text("température".as_bytes()),
            Some("température".into())
        );
    }
}

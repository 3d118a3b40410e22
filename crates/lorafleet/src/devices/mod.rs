//! The device inventory: every device lorafleet has heard of, what it last sent, its Version &
//! Status answers and its event log.
//!
//! The types live in [`crate::storage`] next to the queries that fill them (so storage never
//! reaches up into this folder); they are re-exported here under the names callers know.

pub mod filter;
pub mod record;

pub use crate::storage::device_events::DeviceEventDto;
pub use crate::storage::devices::{DeviceDetail, DeviceList, DeviceSummary};
pub use crate::storage::downlinks::{DownlinkDto, StatusRequestDto};
pub use crate::storage::uplinks::{printable_text, UplinkDto, UplinkList};
pub use crate::storage::version_status::{
    version_dto, PackageDto, ReportedAt, RunningDto, StatusDto, StoredDto, VersionDto,
};
pub use lorafleet_codec::eui::{BadDevEui, DevEui};

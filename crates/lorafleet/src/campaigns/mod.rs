//! FUOTA campaigns: one firmware image to a set of devices through a FUOTA service.
//!
//! How a campaign flows: `POST /api/campaigns` turns the operator's request into checked
//! [`CampaignSettings`] ([`validate`]) and a [`plan::Plan`], stored as a draft ([`crate::storage::campaigns`]).
//! `start` hands it to the runner ([`runner`]), which calls the campaign's
//! [`driver::CampaignDriver`] to start it and then polls it until it is over, writing each
//! device's stage, the service's log and the progress history to the database, so a restart
//! of lorafleet resumes where it stopped.
//!
//! Drivers: [`chirpstack_v4`] (ChirpStack's built-in FUOTA service), [`fuota_server_v3`]
//! (chirpstack-fuota-server for ChirpStack v3) and lorafleet's own engine
//! ([`drivers::engine`]).

pub mod drivers;
pub mod gateways;
pub mod guards;
pub mod lease_guard;
pub mod packages;
pub mod plan;
pub mod plan_network;
pub mod progress;
pub mod region;
pub mod rollout;
pub mod runner;
pub mod validate;
pub mod waves;

// The campaign's types live next to their queries in storage (which names nothing of this
// folder); these are the names the rest of the server knows them by.
pub use crate::storage::campaigns::{
    count_stages, state_label, CampaignDevice, CampaignDto, CampaignKeys, CampaignSettings,
    CampaignState, CampaignSummary, DeviceKey, DriverKind, EngineDeviceReport, EngineSettings,
    FirmwareRef, FragStatusRequest, FragmentationSettings, LogEntry, MulticastClass,
    MulticastSettings, ParityMode, ProgressPoint, Refusal, Stage, UnicastSettings,
};

/// Median seconds between consecutive uplinks of the given devices (the first 200), from the
/// stored history; None with fewer than three gaps to go by.
pub async fn observed_uplink_interval(
    db: &crate::storage::Db,
    euis: &[String],
) -> crate::storage::Result<Option<f64>> {
    let mut gaps = Vec::new();
    for eui in euis.iter().take(200) {
        let times = crate::storage::uplinks::received_times(db, eui, 20).await?;
        let parsed: Vec<chrono::DateTime<chrono::Utc>> = times
            .iter()
            .filter_map(|t| crate::storage::parse_time(t))
            .collect();
        for w in parsed.windows(2) {
            let gap = (w[0] - w[1]).num_milliseconds() as f64 / 1000.0;
            if gap > 0.0 {
                gaps.push(gap);
            }
        }
    }
    if gaps.len() < 3 {
        return Ok(None);
    }
    gaps.sort_by(f64::total_cmp);
    Ok(Some(gaps[gaps.len() / 2]))
}

#[cfg(test)]
mod state_label_tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_completed_campaign_with_failed_devices_says_so() {
        let counts = |failed: u32| {
            BTreeMap::from([("completed".to_string(), 3), ("failed".to_string(), failed)])
        };
        assert_eq!(
            state_label(CampaignState::Completed, &counts(1)),
            "completed with failures"
        );
        assert_eq!(
            state_label(CampaignState::Completed, &counts(0)),
            "completed"
        );
        assert_eq!(state_label(CampaignState::Running, &counts(1)), "running");
        assert_eq!(state_label(CampaignState::Failed, &counts(1)), "failed");
    }
}

//! Background jobs that run on one instance at a time: the device-list sync from the network
//! server (here) and the firmware rescan (`firmware::library::rescan` takes its lock itself).
//!
//! The device-list sync takes an advisory lock for each run, and also skips a run when another
//! instance finished one less than [`SYNC_GAP`] ago (the time is in `settings`): with two
//! instances, each starting its own loop, the list is read about once per interval in all
//! rather than once per instance, and an instance whose peer died takes over within one
//! interval.

use std::time::Duration;

use chrono::Utc;

use crate::storage::advisory::{self, Job};
use crate::{App, AppState};

/// Time between two device-list syncs.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(600);
/// A sync finished this recently (by any instance) makes another one needless.
pub const SYNC_GAP: Duration = Duration::from_secs(300);
/// The first retry after a failure; doubles up to [`SYNC_INTERVAL`].
const SYNC_RETRY: Duration = Duration::from_secs(30);
/// Where the end of the last sync is kept (RFC 3339).
const LAST_SYNC: &str = "cluster.device_sync_at";

/// What one attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This instance listed the devices; this many were new or changed.
    Ran(usize),
    /// Another instance is syncing now, or just did.
    Skipped,
}

/// Lists the network server's devices unless another instance is doing it or just did.
pub async fn sync_devices(app: &App) -> anyhow::Result<Outcome> {
    let Some(held) = advisory::try_lock(&app.db, Job::DeviceSync).await? else {
        skipped("device_sync");
        return Ok(Outcome::Skipped);
    };
    if synced_recently(app).await {
        held.release().await?;
        skipped("device_sync");
        return Ok(Outcome::Skipped);
    }
    let result = app.sync_network_devices().await;
    if result.is_ok() {
        let now = crate::storage::now();
        if let Err(e) = crate::storage::set_setting(&app.db, LAST_SYNC, &now).await {
            tracing::warn!(error = %format!("{e:#}"), "could not record the device-list sync");
        }
    }
    held.release().await?;
    ::metrics::counter!("lorafleet_cluster_jobs_total", "job" => "device_sync", "outcome" => "ran")
        .increment(1);
    result.map(Outcome::Ran)
}

fn skipped(job: &'static str) {
    ::metrics::counter!("lorafleet_cluster_jobs_total", "job" => job, "outcome" => "skipped")
        .increment(1);
}

async fn synced_recently(app: &App) -> bool {
    let Ok(Some(at)) = crate::storage::get_setting(&app.db, LAST_SYNC).await else {
        return false;
    };
    crate::storage::parse_time(&at)
        .and_then(|t| (Utc::now() - t).to_std().ok())
        .is_some_and(|ago| ago < SYNC_GAP)
}

/// Syncs the device list every [`SYNC_INTERVAL`] for as long as the app runs; after a failure
/// sooner (30 s, doubling), since ChirpStack is often still starting when lorafleet is.
pub fn spawn_device_sync(app: &AppState) {
    let app = std::sync::Arc::downgrade(app);
    tokio::spawn(async move {
        let mut retry = SYNC_RETRY;
        loop {
            let Some(strong) = app.upgrade() else {
                return;
            };
            let outcome = sync_devices(&strong).await;
            drop(strong);
            let wait = match outcome {
                Ok(Outcome::Ran(n)) => {
                    if n > 0 {
                        tracing::info!(devices = n, "listed devices from the network server");
                    }
                    retry = SYNC_RETRY;
                    SYNC_INTERVAL
                }
                Ok(Outcome::Skipped) => {
                    tracing::debug!("device-list sync left to another instance");
                    SYNC_INTERVAL
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), retry_in_s = retry.as_secs(), "could not list devices from the network server");
                    let wait = retry;
                    retry = (retry * 2).min(SYNC_INTERVAL);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
}

//! The I/O of lorafleet's own FUOTA engine (the pure part is the `lorafleet-engine` crate): the
//! step that reads the devices' answers and carries out the engine's actions ([`step`]), the
//! TS003 responder ([`clock_sync`]) and sending unicast commands through the downlink list. The
//! campaign driver that runs the engine is `campaigns::drivers::engine`.

pub mod clock_sync;
pub mod packages;
pub mod step;

use tokio::sync::broadcast;

use crate::devices::record as store;
use crate::ingest::writer::Change;
use crate::network::{Downlink, Enqueued, Network};
use crate::storage::campaigns::SentDownlink;
use crate::storage::{self, Db};

/// What sending needs: the database (the downlink list) and the network.
#[derive(Clone, Copy)]
pub struct Io<'a> {
    pub db: &'a Db,
    pub network: &'a dyn Network,
    pub changes: &'a broadcast::Sender<Change>,
}

/// Sends a unicast command the way the console does: recorded in the device's downlink list
/// (so the device page shows what FUOTA sent), then queued on the network.
pub async fn send_unicast(io: Io<'_>, downlink: &Downlink, what: &str) -> anyhow::Result<Enqueued> {
    let id = store::record_downlink_request(
        io.db,
        downlink.dev_eui,
        downlink.f_port,
        &downlink.data,
        downlink.confirmed,
        None,
        &storage::fmt_time(io.network.now()),
    )
    .await?;
    let result = io.network.enqueue(downlink).await;
    let outcome = match &result {
        Ok(e) => Ok((e.network_ref.clone(), e.f_cnt)),
        Err(e) => Err(e.to_string()),
    };
    let at = storage::fmt_time(io.network.now());
    store::record_downlink_outcome(io.db, id, downlink.dev_eui, outcome, what, &at).await?;
    let _ = io.changes.send(Change::Device(downlink.dev_eui));
    Ok(result?)
}

/// Sends a campaign step's unicast commands, in order, and returns each with the network's
/// answer, for the step to record in the devices' downlink lists in its own transaction (see
/// `storage::campaigns::leases::save_step`): nothing is written here, so a step whose lease was
/// lost leaves no downlink rows behind.
pub async fn send_unicasts(io: Io<'_>, batch: &[(Downlink, &str)]) -> Vec<SentDownlink> {
    if batch.is_empty() {
        return Vec::new();
    }
    let requested_at = io.network.now();
    // One request for the whole batch where the network can take it (the simulated network
    // saves its queues once instead of once per downlink); one after the other elsewhere.
    let downlinks: Vec<Downlink> = batch.iter().map(|(d, _)| d.clone()).collect();
    let results = io.network.enqueue_all(&downlinks).await;
    let answered_at = io.network.now();
    batch
        .iter()
        .zip(results)
        .map(|((d, what), result)| SentDownlink {
            dev_eui: d.dev_eui,
            f_port: d.f_port,
            data: d.data.clone(),
            confirmed: d.confirmed,
            what: (*what).to_string(),
            requested_at,
            answered_at,
            result: result
                .map(|e| (e.network_ref, e.f_cnt))
                .map_err(|e| e.to_string()),
        })
        .collect()
}

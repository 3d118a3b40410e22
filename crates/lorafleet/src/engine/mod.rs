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

/// [`send_unicast`] for many commands at once: the downlink list is written in two
/// transactions for the whole batch instead of two per command. Returns each command's
/// outcome, in order.
pub async fn send_unicasts(
    io: Io<'_>,
    batch: &[(Downlink, &str)],
) -> anyhow::Result<Vec<Result<Enqueued, crate::network::NetworkError>>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(batch.len());
    let requested = storage::fmt_time(io.network.now());
    let mut tx = storage::begin(io.db).await?;
    for (d, _) in batch {
        ids.push(
            storage::downlinks::insert_request(
                &mut tx,
                d.dev_eui,
                d.f_port,
                &d.data,
                d.confirmed,
                None,
                &requested,
            )
            .await?,
        );
    }
    storage::commit(tx).await?;
    let downlinks: Vec<Downlink> = batch.iter().map(|(d, _)| d.clone()).collect();
    let results = io.network.enqueue_all(&downlinks).await;
    let answered = storage::fmt_time(io.network.now());
    let mut tx = storage::begin(io.db).await?;
    for ((id, (d, what)), result) in ids.iter().zip(batch).zip(&results) {
        let outcome = match result {
            Ok(e) => Ok((e.network_ref.clone(), e.f_cnt)),
            Err(e) => Err(e.to_string()),
        };
        store::apply_downlink_outcome(&mut tx, *id, d.dev_eui, outcome, what, &answered).await?;
    }
    storage::commit(tx).await?;
    for (d, _) in batch {
        let _ = io.changes.send(Change::Device(d.dev_eui));
    }
    Ok(results)
}

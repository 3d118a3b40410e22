//! lorafleet's own implementation of the LoRa Alliance FUOTA packages: TS003 clock sync, TS005
//! remote multicast setup and TS004 fragmented data block transport (all v1), shared by the
//! engine that sends them and the simulated devices that answer them.

pub mod clock_sync;
pub mod commands;
pub mod driver;
pub mod engine;
pub mod history;
pub mod keys;
pub mod runner;

use tokio::sync::broadcast;

use crate::devices::store;
use crate::ingest::writer::Change;
use crate::network::{Downlink, Enqueued, Network};
use crate::storage::Db;

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
    )
    .await?;
    let result = io.network.enqueue(downlink).await;
    let outcome = match &result {
        Ok(e) => Ok((e.network_ref.clone(), e.f_cnt)),
        Err(e) => Err(e.to_string()),
    };
    store::record_downlink_outcome(io.db, id, downlink.dev_eui, outcome, what).await?;
    let _ = io.changes.send(Change::Device(downlink.dev_eui));
    Ok(result?)
}

/// The packages' default FPorts; the simulated devices listen on these, the engine sends on them.
pub mod ports {
    /// TS005 Remote Multicast Setup.
    pub const MULTICAST_SETUP: u8 = 200;
    /// TS004 Fragmented Data Block Transport.
    pub const FRAGMENTATION: u8 = 201;
    /// TS003 Application Layer Clock Sync.
    pub const CLOCK_SYNC: u8 = 202;
}

/// PackageIdentifiers answered in PackageVersionAns.
pub mod package {
    pub const CLOCK_SYNC: u8 = 1;
    pub const MULTICAST_SETUP: u8 = 2;
    pub const FRAGMENTATION: u8 = 3;
}

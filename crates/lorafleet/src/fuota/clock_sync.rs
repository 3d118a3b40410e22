//! TS003 v1 Application Layer Clock Sync, server side: every AppTimeReq that comes in through
//! the ingest is answered (`lorafleet_engine::clock_sync::answer`) with the correction from the
//! uplink's reception time, so devices can open their multicast sessions on time.

use lorafleet_engine::clock_sync::answer;
use lorafleet_engine::ports;
use tokio::sync::broadcast::error::RecvError;

use crate::network::Downlink;
use crate::AppState;

/// Answers AppTimeReq uplinks for as long as the application runs.
pub fn spawn(app: &AppState) {
    let mut uplinks = app.uplinks.subscribe();
    let app = std::sync::Arc::downgrade(app);
    tokio::spawn(async move {
        loop {
            let committed = match uplinks.recv().await {
                Ok(c) => c,
                // Missing a few requests under load only delays a device's sync: it asks again.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            };
            let crate::ingest::EventBody::Up(up) = &committed.event.body else {
                continue;
            };
            if up.f_port != Some(ports::CLOCK_SYNC) {
                continue;
            }
            let Some(data) = answer(&up.data, up.received_at) else {
                continue;
            };
            let Some(app) = app.upgrade() else {
                return;
            };
            let downlink = Downlink {
                dev_eui: committed.event.dev_eui,
                f_port: ports::CLOCK_SYNC,
                data,
                confirmed: false,
            };
            let io = super::Io {
                db: &app.db,
                network: app.network.as_ref(),
                changes: &app.changes,
            };
            if let Err(e) = super::send_unicast(io, &downlink, "TS003 AppTimeAns").await {
                tracing::warn!(dev_eui = %downlink.dev_eui, error = %e, "could not answer AppTimeReq");
            }
        }
    });
}

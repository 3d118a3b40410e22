//! TS003 Application Layer Clock Sync, server side: every AppTimeReq that comes in through
//! the ingest is answered (`lorafleet_engine::clock_sync::answer_in`) with the correction from
//! the uplink's reception time, so devices can open their multicast sessions on time; on the
//! device's own FPort and in its version when a running engine campaign says so
//! ([`RunningPackages`]), and not at all where that campaign turned it off or the device's
//! profile on the network server has TS003 on (ChirpStack then answers itself, and a second
//! answer would set the device's clock twice).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lorafleet_engine::clock_sync::answer_in;
use tokio::sync::broadcast::error::RecvError;

use super::packages::RunningPackages;
use crate::devices::DevEui;
use crate::network::{Downlink, Network};
use crate::AppState;

/// How long a device profile's word on clock sync is trusted; a failed read is retried sooner.
const PROFILE_TTL: Duration = Duration::from_secs(600);
const FAILED_READ_TTL: Duration = Duration::from_secs(60);

/// Whether the network server answers each device's AppTimeReq itself, as its profile says.
#[derive(Default)]
struct NetworkAnswers {
    by_device: HashMap<DevEui, (Instant, bool)>,
}

impl NetworkAnswers {
    async fn answers(&mut self, network: &dyn Network, dev_eui: DevEui) -> bool {
        if let Some((until, yes)) = self.by_device.get(&dev_eui) {
            if Instant::now() < *until {
                return *yes;
            }
        }
        let (yes, ttl) = match network.device_profile_packages(dev_eui).await {
            Ok(p) => (p.is_some_and(|p| p.answers_clock_sync()), PROFILE_TTL),
            Err(e) => {
                tracing::debug!(%dev_eui, error = %e, "device profile unread; answering AppTimeReq");
                (false, FAILED_READ_TTL)
            }
        };
        // A fleet's worth of entries at most; expired ones go when it grows large.
        if self.by_device.len() > 100_000 {
            let now = Instant::now();
            self.by_device.retain(|_, (until, _)| *until > now);
        }
        self.by_device.insert(dev_eui, (Instant::now() + ttl, yes));
        yes
    }
}

/// Answers AppTimeReq uplinks for as long as the application runs.
pub fn spawn(app: &AppState) {
    let mut uplinks = app.uplinks.subscribe();
    let table: std::sync::Arc<RunningPackages> = app.running_packages.clone();
    let app = std::sync::Arc::downgrade(app);
    tokio::spawn(async move {
        let mut network_answers = NetworkAnswers::default();
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
            let dev_eui = committed.event.dev_eui;
            let package = table.clock_sync(dev_eui);
            if up.f_port != Some(package.f_port) || !package.enabled {
                continue;
            }
            let Some(data) = answer_in(package.version, &up.data, up.received_at) else {
                continue;
            };
            let Some(app) = app.upgrade() else {
                return;
            };
            if network_answers.answers(app.network.as_ref(), dev_eui).await {
                continue;
            }
            let downlink = Downlink {
                dev_eui,
                f_port: package.f_port,
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

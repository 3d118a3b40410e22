//! A campaign step's network, guarded by the campaign's lease: every call that sends something
//! (a unicast command, a multicast frame, a group created, changed or deleted) first makes
//! sure this instance still holds the lease, and for long enough that the call ends before the
//! lease could lapse. So a step that runs longer than `campaigns.lease_s` (a slow network
//! server, thousands of fragments) renews its lease as it goes instead of being taken over in
//! the middle, and an instance that stalled past its lease and was taken over sends nothing
//! more: each command and fragment is sent at most once per attempt.
//!
//! The lease is renewed in the database only when less than two thirds of it is left (a step
//! queueing 512 fragments renews about once per `lease_s / 3`, not 512 times). A call that
//! starts has at least two thirds of `lease_s` before another instance may claim the
//! campaign, which `network.request_timeout_s` must stay below (see DEPLOYMENT.md).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::NetworkKind;
use crate::devices::DevEui;
use crate::network::{
    app_layer, DeviceKeys, Downlink, Enqueued, MulticastGroup, Network, NetworkError, RemoteDevice,
};
use crate::storage::campaigns::leases;
use crate::storage::Db;

/// One campaign's lease as its owner sees it.
pub struct Lease {
    db: Db,
    id: i64,
    owner: String,
    length: Duration,
    /// Until when (real time) nobody else can claim the campaign; `None` once lost.
    held_until: Mutex<Option<Instant>>,
    /// One renewal at a time (concurrent sends of one step wait for it).
    renewing: tokio::sync::Mutex<()>,
}

impl Lease {
    /// `owner`'s lease of campaign `id`, `length` long, known held until `held_until` (the
    /// claim's time plus `length`).
    pub fn new(db: Db, id: i64, owner: &str, length: Duration, held_until: Instant) -> Self {
        Self {
            db,
            id,
            owner: owner.to_string(),
            length,
            held_until: Mutex::new(Some(held_until)),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    fn held_until(&self) -> Option<Instant> {
        *self.held_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lease was lost (a send was refused for it).
    pub fn lost(&self) -> bool {
        self.held_until().is_none()
    }

    /// Ok when this instance may send for the campaign now: it holds the lease for at least
    /// two thirds of its length more (renewing it if needed). Once lost, always refused.
    pub async fn check(&self) -> Result<(), NetworkError> {
        let _one = self.renewing.lock().await;
        let Some(until) = self.held_until() else {
            return Err(self.lost_error());
        };
        if until.saturating_duration_since(Instant::now()) >= self.length * 2 / 3 {
            return Ok(());
        }
        // Taken before the write: the lease runs at least until then plus its length.
        let asked = Instant::now();
        let new_until = Utc::now() + chrono::Duration::from_std(self.length).unwrap_or_default();
        let renewed = leases::renew(&self.db, self.id, &self.owner, new_until).await;
        let mut held = self.held_until.lock().unwrap_or_else(|e| e.into_inner());
        match renewed {
            Ok(true) => {
                *held = Some(asked + self.length);
                Ok(())
            }
            Ok(false) => {
                *held = None;
                tracing::warn!(
                    campaign = self.id,
                    instance = %self.owner,
                    "the campaign's lease was taken over during a step: nothing more is sent for it here"
                );
                Err(self.lost_error())
            }
            // Not known to be lost, not known to be held: this send waits for a later step.
            Err(e) => Err(NetworkError::Other(format!(
                "could not renew the campaign's lease: {e}"
            ))),
        }
    }

    fn lost_error(&self) -> NetworkError {
        NetworkError::Other(format!(
            "campaign {}: this instance no longer holds its lease (taken over): not sent",
            self.id
        ))
    }
}

/// The network as a campaign step sees it: sends pass [`Lease::check`] first; reads and the
/// clock go straight through.
pub struct GuardedNetwork {
    inner: Arc<dyn Network>,
    lease: Arc<Lease>,
}

impl GuardedNetwork {
    pub fn new(inner: Arc<dyn Network>, lease: Arc<Lease>) -> Self {
        Self { inner, lease }
    }
}

#[async_trait]
impl Network for GuardedNetwork {
    fn kind(&self) -> NetworkKind {
        self.inner.kind()
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.now()
    }

    fn peek_now(&self) -> DateTime<Utc> {
        self.inner.peek_now()
    }

    fn time_scale(&self) -> f64 {
        self.inner.time_scale()
    }

    async fn enqueue(&self, downlink: &Downlink) -> Result<Enqueued, NetworkError> {
        self.lease.check().await?;
        self.inner.enqueue(downlink).await
    }

    /// The simulated network takes a batch in one request, checked once: it lives in this
    /// process, so the batch ends well within the lease. Real networks (and a lease that the
    /// check refused) get one guarded request after the other, each checking the lease.
    async fn enqueue_all(&self, downlinks: &[Downlink]) -> Vec<Result<Enqueued, NetworkError>> {
        if self.inner.kind() == NetworkKind::Simulated && self.lease.check().await.is_ok() {
            return self.inner.enqueue_all(downlinks).await;
        }
        let mut out = Vec::with_capacity(downlinks.len());
        for d in downlinks {
            out.push(self.enqueue(d).await);
        }
        out
    }

    fn hold_clock_at(&self, caller: u64, at: Option<DateTime<Utc>>) {
        self.inner.hold_clock_at(caller, at);
    }

    fn clock_stands_after_request(&self) -> std::time::Duration {
        self.inner.clock_stands_after_request()
    }

    async fn list_devices(&self) -> Result<Vec<RemoteDevice>, NetworkError> {
        self.inner.list_devices().await
    }

    async fn device_keys(&self, dev_eui: DevEui) -> Result<Option<DeviceKeys>, NetworkError> {
        self.inner.device_keys(dev_eui).await
    }

    async fn device_profile_packages(
        &self,
        dev_eui: DevEui,
    ) -> Result<Option<app_layer::ProfilePackages>, NetworkError> {
        self.inner.device_profile_packages(dev_eui).await
    }

    async fn find_multicast_group(
        &self,
        name: &str,
        application_id: Option<&str>,
    ) -> Result<Option<String>, NetworkError> {
        self.inner.find_multicast_group(name, application_id).await
    }

    async fn create_multicast_group(&self, group: &MulticastGroup) -> Result<String, NetworkError> {
        self.lease.check().await?;
        self.inner.create_multicast_group(group).await
    }

    async fn add_multicast_device(
        &self,
        group_id: &str,
        dev_eui: DevEui,
    ) -> Result<(), NetworkError> {
        self.lease.check().await?;
        self.inner.add_multicast_device(group_id, dev_eui).await
    }

    async fn add_multicast_devices(
        &self,
        group_id: &str,
        dev_euis: &[DevEui],
    ) -> Vec<Result<(), NetworkError>> {
        if self.inner.kind() == NetworkKind::Simulated && self.lease.check().await.is_ok() {
            return self.inner.add_multicast_devices(group_id, dev_euis).await;
        }
        let mut out = Vec::with_capacity(dev_euis.len());
        for &d in dev_euis {
            out.push(self.add_multicast_device(group_id, d).await);
        }
        out
    }

    async fn add_multicast_gateway(
        &self,
        group_id: &str,
        gateway_id: &str,
    ) -> Result<(), NetworkError> {
        self.lease.check().await?;
        self.inner.add_multicast_gateway(group_id, gateway_id).await
    }

    async fn enqueue_multicast(
        &self,
        group_id: &str,
        f_port: u8,
        data: &[u8],
    ) -> Result<u32, NetworkError> {
        self.lease.check().await?;
        self.inner.enqueue_multicast(group_id, f_port, data).await
    }

    async fn multicast_queue_len(&self, group_id: &str) -> Result<usize, NetworkError> {
        self.inner.multicast_queue_len(group_id).await
    }

    async fn delete_multicast_group(&self, group_id: &str) -> Result<(), NetworkError> {
        self.lease.check().await?;
        self.inner.delete_multicast_group(group_id).await
    }
}

//! Several instances on one PostgreSQL database behaving as one product.
//!
//! - [`changes`]: what one instance commits reaches the other instances' live views
//!   (PostgreSQL `LISTEN/NOTIFY` feeding the same event stream as local changes), and a change
//!   of credentials reaches their caches.
//! - [`jobs`]: background jobs that must not run twice at once (the device-list sync, the
//!   firmware rescan) take an advisory lock.
//!
//! TS003 clock-sync answers need nothing here: an instance answers only the uplinks it committed
//! itself (`App::uplinks` carries no remote ones), and an uplink posted to two instances is
//! committed by one of them (the unique `deduplicationId`; the other finds it stored and
//! announces nothing). On SQLite (one instance per file) the cluster is inert.

pub mod changes;
pub mod jobs;

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{broadcast, Notify};

use crate::ingest::writer::Change;

/// What another instance told this one.
#[derive(Debug, Clone, PartialEq)]
pub enum Remote {
    /// Something it committed that a page may show.
    Change(Change),
    /// Something may have been missed (a notification lost with the connection, a publisher
    /// that fell behind): pages should reload what they show.
    Resync,
}

/// This instance's place among the others: its id, what the others say, and whether it hears
/// them.
pub struct Cluster {
    /// Random per process: notifications carry it, so an instance ignores its own.
    instance: String,
    /// Whether there are other instances to hear from (PostgreSQL).
    shared: bool,
    remote: broadcast::Sender<Remote>,
    listening: AtomicBool,
    /// Set when credentials changed here; the publisher tells the others.
    auth: Notify,
}

impl Cluster {
    /// `shared` when the database can have other instances on it (PostgreSQL).
    pub fn new(shared: bool) -> Self {
        let (remote, _) = broadcast::channel(1024);
        Cluster {
            instance: crate::auth::random_secret(),
            shared,
            remote,
            listening: AtomicBool::new(false),
            auth: Notify::new(),
        }
    }

    /// What other instances announce, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Remote> {
        self.remote.subscribe()
    }

    /// Whether this instance hears the others now; `None` where there are none (SQLite).
    pub fn listening(&self) -> Option<bool> {
        self.shared.then(|| self.listening.load(Ordering::Relaxed))
    }

    /// Tells the other instances that credentials changed here (a rotated integration token),
    /// so they drop what they cached.
    pub fn auth_changed(&self) {
        if self.shared {
            self.auth.notify_one();
        }
    }

    fn set_listening(&self, yes: bool) {
        self.listening.store(yes, Ordering::Relaxed);
        ::metrics::gauge!("lorafleet_cluster_listening").set(if yes { 1.0 } else { 0.0 });
    }

    fn tell(&self, remote: Remote) {
        let _ = self.remote.send(remote);
    }
}

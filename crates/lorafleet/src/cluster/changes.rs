//! Live updates across instances. Each instance publishes the changes it committed (the same
//! [`Change`]s its own event stream serves, sent only after their commit) as PostgreSQL
//! notifications, and listens for the others' on a connection of its own.
//!
//! Publishing happens after the commit, in batches (everything waiting when a notification
//! goes out rides in it), rather than inside each writing transaction: a transaction that
//! notifies takes PostgreSQL's global notification lock at commit, which would serialize every
//! ingest commit of every instance behind it. The price: a change committed just before its
//! instance dies may not be announced; the notification carries ids only, and the console
//! reloads on the next change or resync.
//!
//! A notification holds kinds and ids, never rows: at most [`MAX_PAYLOAD`] bytes (PostgreSQL
//! refuses 8000 and more). Whatever may have been lost (a publisher that fell behind its
//! channel or could not publish, a listener that reconnected) becomes a `resync`, on which
//! pages reload.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{Cluster, Remote};
use crate::ingest::writer::Change;
use crate::storage::notify::{self, Heard};
use crate::storage::Db;
use crate::AppState;

/// A notification's payload stays below this many bytes (PostgreSQL's limit is 8000).
pub const MAX_PAYLOAD: usize = 7900;

/// Longest wait between attempts to open the listening connection again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One notification: who sent it and what changed there.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub from: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub campaigns: Vec<i64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub firmware: bool,
    /// Credentials changed: drop cached ones, re-read the integration token.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auth: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub resync: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The fields' names, quotes, commas and flags: more than the fixed part can take.
const FIXED: usize = 160;

impl Note {
    fn new(from: &str) -> Self {
        Note {
            from: from.to_string(),
            ..Default::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.campaigns.is_empty()
            && !self.firmware
            && !self.auth
            && !self.resync
    }

    /// An upper bound of the serialized size.
    fn size(&self) -> usize {
        // A DevEUI is 16 hex digits; each id takes its quotes and a comma.
        FIXED + self.from.len() + self.devices.len() * 19 + self.campaigns.len() * 21
    }

    /// Whether one more id might not fit.
    pub fn full(&self) -> bool {
        self.size() + 21 > MAX_PAYLOAD
    }

    /// Adds a change (once: a device that sent ten uplinks is one id).
    pub fn push(&mut self, change: &Change) {
        match change {
            Change::Device(eui) => {
                let eui = eui.to_string();
                if !self.devices.contains(&eui) {
                    self.devices.push(eui);
                }
            }
            Change::Campaign(id) => {
                if !self.campaigns.contains(id) {
                    self.campaigns.push(*id);
                }
            }
            Change::Firmware => self.firmware = true,
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A payload from another instance; `None` for one that is not lorafleet's (a person
    /// trying `NOTIFY lorafleet_changes` by hand) or that is this instance's own.
    pub fn decode(payload: &str, own: &str) -> Option<Note> {
        serde_json::from_str::<Note>(payload)
            .ok()
            .filter(|n| n.from != own)
    }

    /// What the event stream gets from this note.
    pub fn remotes(&self) -> Vec<Remote> {
        if self.resync {
            return vec![Remote::Resync];
        }
        let mut out: Vec<Remote> = self
            .devices
            .iter()
            .filter_map(|e| e.parse().ok())
            .map(|e| Remote::Change(Change::Device(e)))
            .collect();
        out.extend(
            self.campaigns
                .iter()
                .map(|id| Remote::Change(Change::Campaign(*id))),
        );
        if self.firmware {
            out.push(Remote::Change(Change::Firmware));
        }
        out
    }
}

/// Starts the publisher and the listener (PostgreSQL only).
pub fn spawn(app: &AppState) {
    if app.cluster.listening().is_none() {
        return;
    }
    let rx = app.changes.subscribe();
    tokio::spawn(publish(app.db.clone(), app.cluster.clone(), rx));
    tokio::spawn(listen(
        app.db.clone(),
        app.cluster.clone(),
        Arc::downgrade(app),
    ));
}

/// Sends this instance's changes, a batch per notification, for as long as the app runs.
async fn publish(db: Db, cluster: Arc<Cluster>, mut rx: tokio::sync::broadcast::Receiver<Change>) {
    let own = cluster.instance.clone();
    // Set when something could not be sent: the next note asks for a resync.
    let mut owed = false;
    loop {
        let mut note = Note::new(&own);
        note.resync = owed;
        tokio::select! {
            got = rx.recv() => match got {
                Ok(c) => note.push(&c),
                Err(RecvError::Lagged(_)) => note.resync = true,
                Err(RecvError::Closed) => return,
            },
            () = cluster.auth.notified() => note.auth = true,
        }
        while !note.full() {
            match rx.try_recv() {
                Ok(c) => note.push(&c),
                Err(TryRecvError::Lagged(_)) => note.resync = true,
                Err(_) => break,
            }
        }
        if note.is_empty() {
            continue;
        }
        match notify::publish(&db, &note.encode()).await {
            Ok(()) => {
                owed = false;
                ::metrics::counter!("lorafleet_cluster_notifications_sent_total").increment(1);
            }
            Err(e) => {
                owed = true;
                // Credentials must not stay cached elsewhere because one send failed.
                if note.auth {
                    cluster.auth.notify_one();
                }
                tracing::warn!(error = %e, "could not notify the other instances");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Hears the other instances, reconnecting with back-off; every reconnection is a resync.
async fn listen(db: Db, cluster: Arc<Cluster>, app: std::sync::Weak<crate::App>) {
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    loop {
        match notify::listen(&db).await {
            Ok(Some(mut listener)) => {
                cluster.set_listening(true);
                backoff = Duration::from_secs(1);
                if !first {
                    tracing::info!("listening to the other instances again");
                    heard_resync(&cluster, &app);
                }
                first = false;
                loop {
                    match listener.next().await {
                        Ok(Heard::Payload(p)) => heard(&cluster, &app, &p).await,
                        Ok(Heard::Reconnected) => heard_resync(&cluster, &app),
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the connection to the other instances");
                            break;
                        }
                    }
                }
                cluster.set_listening(false);
                heard_resync(&cluster, &app);
            }
            Ok(None) => return,
            Err(e) => {
                cluster.set_listening(false);
                tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "cannot listen to the other instances");
            }
        }
        if app.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn heard(cluster: &Cluster, app: &std::sync::Weak<crate::App>, payload: &str) {
    let Some(note) = Note::decode(payload, &cluster.instance) else {
        return;
    };
    ::metrics::counter!("lorafleet_cluster_notifications_received_total").increment(1);
    if note.auth {
        if let Some(app) = app.upgrade() {
            reload_credentials(&app).await;
        }
    }
    for remote in note.remotes() {
        cluster.tell(remote);
    }
}

/// Whatever was missed may have been a change of credentials too.
fn heard_resync(cluster: &Cluster, app: &std::sync::Weak<crate::App>) {
    cluster.tell(Remote::Resync);
    if let Some(app) = app.upgrade() {
        tokio::spawn(async move { reload_credentials(&app).await });
    }
}

/// Drops cached Basic credentials and re-reads the integration token, which another instance
/// changed.
async fn reload_credentials(app: &crate::App) {
    app.basic_cache.clear();
    if let Err(e) = app.integration_token.reload(&app.db).await {
        tracing::warn!(error = %format!("{e:#}"), "could not re-read the integration token");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_note_stays_below_postgres_limit() {
        let mut note = Note::new(&"f".repeat(16));
        let mut n: u64 = 0;
        while !note.full() {
            note.push(&Change::Device(format!("{n:016x}").parse().unwrap()));
            note.push(&Change::Campaign(i64::MAX - n as i64));
            n += 1;
        }
        note.firmware = true;
        note.auth = true;
        note.resync = true;
        let text = note.encode();
        assert!(text.len() < 8000, "{}", text.len());
        assert!(n > 100, "a note carries many ids: {n}");
    }

    #[test]
    fn own_and_foreign_payloads_are_ignored() {
        let mut note = Note::new("a");
        note.push(&Change::Firmware);
        let text = note.encode();
        assert_eq!(Note::decode(&text, "a"), None);
        assert_eq!(Note::decode(&text, "b"), Some(note));
        assert_eq!(Note::decode("hello", "b"), None);
    }

    #[test]
    fn a_device_is_named_once_and_resync_outweighs_ids() {
        let eui: crate::devices::DevEui = "0102030405060708".parse().unwrap();
        let mut note = Note::new("a");
        note.push(&Change::Device(eui));
        note.push(&Change::Device(eui));
        note.push(&Change::Campaign(7));
        assert_eq!(
            Note::decode(&note.encode(), "b").unwrap().remotes(),
            vec![
                Remote::Change(Change::Device(eui)),
                Remote::Change(Change::Campaign(7))
            ]
        );
        note.resync = true;
        assert_eq!(note.remotes(), vec![Remote::Resync]);
    }
}

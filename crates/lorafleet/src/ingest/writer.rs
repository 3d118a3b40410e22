//! Commits integration events in groups: one task owns the write path and puts every event that
//! arrived while the previous commit ran into the next transaction. Each request still gets its
//! answer only after its event is committed, so "2xx means stored" holds, while a burst of
//! uplinks costs one fsync per group instead of one per event.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::devices::record::{apply_event, apply_plain_uplinks, is_plain_uplink, Retention};
use crate::devices::DevEui;
use crate::ingest::{EventBody, IntegrationEvent};
use crate::storage::{self, Db};

/// The largest group committed in one transaction.
const MAX_GROUP: usize = 512;

/// Something on screen may have changed; the console refreshes what it shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Device(DevEui),
    Campaign(i64),
    Firmware,
}

/// A committed uplink, for application-layer packages that react to device answers (FUOTA).
#[derive(Debug, Clone)]
pub struct CommittedUplink {
    pub event: Arc<IntegrationEvent>,
}

type Reply = oneshot::Sender<Result<(), String>>;

/// The handle request handlers use to commit events.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<(IntegrationEvent, Reply)>,
}

impl Writer {
    pub fn spawn(
        db: Db,
        retention: Retention,
        changes: broadcast::Sender<Change>,
        uplinks: broadcast::Sender<CommittedUplink>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(db, retention, rx, changes, uplinks));
        Writer { tx }
    }

    /// Commits one event; returns once it is durable.
    pub async fn commit(&self, event: IntegrationEvent) -> Result<(), String> {
        self.submit(event)
            .await?
            .await
            .map_err(|_| "the database writer has stopped".to_string())?
    }

    /// Queues one event in order and returns at once with a receiver for its outcome; for
    /// producers with many events in flight (the simulated network), whose events then share
    /// group commits instead of waiting for one commit each.
    pub async fn submit(
        &self,
        event: IntegrationEvent,
    ) -> Result<oneshot::Receiver<Result<(), String>>, String> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| "the database writer has stopped".to_string())?;
        Ok(done)
    }
}

async fn run(
    db: Db,
    retention: Retention,
    mut rx: mpsc::Receiver<(IntegrationEvent, Reply)>,
    changes: broadcast::Sender<Change>,
    uplinks: broadcast::Sender<CommittedUplink>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(item) => group.push(item),
                Err(_) => break,
            }
        }
        let results = commit_group(&db, retention, &group).await;
        for ((event, reply), result) in group.drain(..).zip(results) {
            let ok = result.is_ok();
            let _ = reply.send(result);
            if ok {
                let _ = changes.send(Change::Device(event.dev_eui));
                if matches!(event.body, EventBody::Up(_)) && uplinks.receiver_count() > 0 {
                    let _ = uplinks.send(CommittedUplink {
                        event: Arc::new(event),
                    });
                }
            }
        }
    }
}

/// Commits a group in one transaction. Events almost never fail, so the group is first applied
/// as a whole; only if something fails is it redone with a savepoint per event, so that one bad
/// event does not cost the others.
async fn commit_group(
    db: &Db,
    retention: Retention,
    group: &[(IntegrationEvent, Reply)],
) -> Vec<Result<(), String>> {
    let whole = async {
        let mut tx = storage::begin_immediate(db).await?;
        let (plain, other): (Vec<&IntegrationEvent>, Vec<&IntegrationEvent>) = group
            .iter()
            .map(|(e, _)| e)
            .partition(|e| is_plain_uplink(e, retention));
        if !plain.is_empty() {
            apply_plain_uplinks(&mut tx, &plain, retention).await?;
        }
        for event in other {
            apply_event(&mut tx, event, retention).await?;
        }
        storage::commit(tx).await
    }
    .await;
    match whole {
        Ok(()) => {
            metrics::counter!("lorafleet_ingest_commits_total").increment(1);
            group.iter().map(|_| Ok(())).collect()
        }
        Err(e) if group.len() == 1 => vec![Err(format!("database: {e}"))],
        Err(_) => commit_one_by_one(db, retention, group).await,
    }
}

async fn commit_one_by_one(
    db: &Db,
    retention: Retention,
    group: &[(IntegrationEvent, Reply)],
) -> Vec<Result<(), String>> {
    let mut tx = match storage::begin_immediate(db).await {
        Ok(tx) => tx,
        Err(e) => {
            return group
                .iter()
                .map(|_| Err(format!("database: {e}")))
                .collect()
        }
    };
    let mut results = Vec::with_capacity(group.len());
    for (event, _) in group {
        let outcome = async {
            let mut sp = storage::savepoint(&mut tx).await?;
            apply_event(&mut sp, event, retention).await?;
            storage::commit_savepoint(sp).await
        }
        .await;
        results.push(outcome.map_err(|e| format!("database: {e}")));
    }
    match storage::commit(tx).await {
        Ok(()) => {
            metrics::counter!("lorafleet_ingest_commits_total").increment(1);
            results
        }
        Err(e) => group
            .iter()
            .map(|_| Err(format!("database commit: {e}")))
            .collect(),
    }
}

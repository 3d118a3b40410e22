//! Commits integration events in groups: one task owns the write path and puts every event that
//! arrived while the previous commit ran into the next transaction. Each request still gets its
//! answer only after its event is committed, so "2xx means stored" holds, while a burst of
//! uplinks costs one fsync per group instead of one per event.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::devices::record::{apply_event, apply_uplinks, is_batched_uplink, Retention};
use crate::devices::DevEui;
use crate::ingest::{EventBody, IntegrationEvent};
use crate::storage::uplinks::known_dedup_keys;
use crate::storage::{self, Conn, Db};

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

/// What the writer task is asked to do, in arrival order.
// Nearly every job is a Commit: boxing the event would cost an allocation per uplink for the
// sake of the rare Flush.
#[allow(clippy::large_enum_variant)]
enum Job {
    Commit(IntegrationEvent, Reply),
    /// Answered once every job queued before it is done: shutdown waits on it.
    Flush(oneshot::Sender<()>),
}

/// Whether the last group reached the disk; `/health` reports it, since a pool that answers
/// `SELECT 1` says nothing about a full disk.
#[derive(Debug, Default)]
pub struct WriteHealth {
    last_error: std::sync::Mutex<Option<String>>,
}

impl WriteHealth {
    /// The error of the last failed commit, until a later commit succeeds.
    pub fn failing(&self) -> Option<String> {
        self.lock().clone()
    }

    fn record(&self, fault: Option<String>) {
        *self.lock() = fault;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handle request handlers use to commit events.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    health: Arc<WriteHealth>,
}

impl Writer {
    pub fn spawn(
        db: Db,
        retention: Retention,
        changes: broadcast::Sender<Change>,
        uplinks: broadcast::Sender<CommittedUplink>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel(4096);
        let health = Arc::new(WriteHealth::default());
        let out = Outlets {
            changes,
            uplinks,
            health: health.clone(),
        };
        tokio::spawn(run(db, retention, rx, out));
        Writer { tx, health }
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
            .send(Job::Commit(event, reply))
            .await
            .map_err(|_| "the database writer has stopped".to_string())?;
        Ok(done)
    }

    /// Returns once everything submitted before has been committed (or refused).
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Job::Flush(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    pub fn health(&self) -> &WriteHealth {
        &self.health
    }
}

/// Where the writer reports what it committed.
struct Outlets {
    changes: broadcast::Sender<Change>,
    uplinks: broadcast::Sender<CommittedUplink>,
    health: Arc<WriteHealth>,
}

async fn run(db: Db, retention: Retention, mut rx: mpsc::Receiver<Job>, out: Outlets) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Commit(event, reply) => group.push((event, reply)),
                Job::Flush(reply) => flushes.push(reply),
            }
            if group.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        if !group.is_empty() {
            let outcome = commit_group(&db, retention, &group).await;
            out.health.record(outcome.fault.clone());
            announce(&out, group.drain(..), outcome);
        }
        for reply in flushes.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// Answers each request; stored events (not repeats, which changed nothing) are announced.
fn announce(
    out: &Outlets,
    group: impl Iterator<Item = (IntegrationEvent, Reply)>,
    outcome: GroupOutcome,
) {
    let repeated = outcome.repeated.iter().chain(std::iter::repeat(&false));
    for (((event, reply), result), repeated) in group.zip(outcome.results).zip(repeated) {
        let ok = result.is_ok();
        let _ = reply.send(result);
        if ok && !repeated {
            let _ = out.changes.send(Change::Device(event.dev_eui));
            if matches!(event.body, EventBody::Up(_)) && out.uplinks.receiver_count() > 0 {
                let _ = out.uplinks.send(CommittedUplink {
                    event: Arc::new(event),
                });
            }
        }
    }
}

/// Each event's outcome, which events were repeats of stored ones (acknowledged, not stored
/// again), and the error that kept the group's transaction from committing.
struct GroupOutcome {
    results: Vec<Result<(), String>>,
    repeated: Vec<bool>,
    fault: Option<String>,
}

impl GroupOutcome {
    fn all_failed(n: usize, fault: String) -> Self {
        GroupOutcome {
            results: vec![Err(fault.clone()); n],
            repeated: Vec::new(),
            fault: Some(fault),
        }
    }
}

fn dedup_key(event: &IntegrationEvent) -> Option<&str> {
    match &event.body {
        EventBody::Up(up) => up.dedup_key.as_deref(),
        _ => None,
    }
}

/// Marks the events whose uplink is already stored, or repeated earlier in the same group.
async fn repeats(
    conn: &mut Conn,
    group: &[(IntegrationEvent, Reply)],
) -> storage::Result<Vec<bool>> {
    let keys: Vec<&str> = group.iter().filter_map(|(e, _)| dedup_key(e)).collect();
    if keys.is_empty() {
        return Ok(vec![false; group.len()]);
    }
    let known = known_dedup_keys(conn, &keys).await?;
    let mut seen = std::collections::HashSet::new();
    Ok(group
        .iter()
        .map(|(e, _)| dedup_key(e).is_some_and(|k| known.contains(k) || !seen.insert(k)))
        .collect())
}

/// Commits a group in one transaction. Events almost never fail, so the group is first applied
/// as a whole; only if something fails is it redone with a savepoint per event, so that one bad
/// event does not cost the others.
///
/// A connection whose transaction failed is discarded rather than handed back to the pool
/// ([`storage::discard`] says why), so the writer recovers by itself once the fault is gone.
async fn commit_group(
    db: &Db,
    retention: Retention,
    group: &[(IntegrationEvent, Reply)],
) -> GroupOutcome {
    // Getting a connection or opening a transaction fails the whole group alike.
    match try_commit_group(db, retention, group).await {
        Ok(outcome) => outcome,
        Err(e) => GroupOutcome::all_failed(group.len(), format!("database: {e}")),
    }
}

async fn try_commit_group(
    db: &Db,
    retention: Retention,
    group: &[(IntegrationEvent, Reply)],
) -> storage::Result<GroupOutcome> {
    let mut conn = storage::acquire(db).await?;
    match apply_whole(&mut conn, retention, group).await {
        Ok(repeated) => {
            metrics::counter!("lorafleet_ingest_commits_total").increment(1);
            Ok(GroupOutcome {
                results: vec![Ok(()); group.len()],
                repeated,
                fault: None,
            })
        }
        Err(_) => {
            storage::discard(conn);
            // Even a group of one is redone: only the outer transaction's fate says whether the
            // database is failing or just this event was refused.
            commit_one_by_one(db, retention, group).await
        }
    }
}

async fn apply_whole(
    conn: &mut Conn,
    retention: Retention,
    group: &[(IntegrationEvent, Reply)],
) -> storage::Result<Vec<bool>> {
    let mut tx = storage::begin_immediate_on(conn).await?;
    let repeated = repeats(&mut *tx, group).await?;
    let (batched, other): (Vec<&IntegrationEvent>, Vec<&IntegrationEvent>) = group
        .iter()
        .zip(&repeated)
        .filter(|(_, repeated)| !**repeated)
        .map(|((e, _), _)| e)
        .partition(|e| is_batched_uplink(e));
    if !batched.is_empty() {
        apply_uplinks(&mut *tx, &batched, retention).await?;
    }
    for event in other {
        apply_event(&mut *tx, event, retention).await?;
    }
    storage::commit(tx).await?;
    Ok(repeated)
}

async fn commit_one_by_one(
    db: &Db,
    retention: Retention,
    group: &[(IntegrationEvent, Reply)],
) -> storage::Result<GroupOutcome> {
    let mut conn = storage::acquire(db).await?;
    let outcome = savepoint_each(&mut conn, retention, group).await;
    if outcome.as_ref().map_or(true, |o| o.fault.is_some()) {
        storage::discard(conn);
    }
    outcome
}

async fn savepoint_each(
    conn: &mut Conn,
    retention: Retention,
    group: &[(IntegrationEvent, Reply)],
) -> storage::Result<GroupOutcome> {
    let mut tx = storage::begin_immediate_on(conn).await?;
    let mut results = Vec::with_capacity(group.len());
    let mut repeated = Vec::with_capacity(group.len());
    for (event, _) in group {
        let outcome = async {
            let mut sp = storage::savepoint(&mut tx).await?;
            let known = match dedup_key(event) {
                Some(k) => !known_dedup_keys(&mut *sp, &[k]).await?.is_empty(),
                None => false,
            };
            if !known {
                apply_event(&mut *sp, event, retention).await?;
            }
            storage::commit(sp).await?;
            Ok::<_, storage::Error>(known)
        }
        .await;
        repeated.push(*outcome.as_ref().unwrap_or(&false));
        results.push(outcome.map(|_| ()).map_err(|e| format!("database: {e}")));
    }
    Ok(match storage::commit(tx).await {
        Ok(()) => {
            metrics::counter!("lorafleet_ingest_commits_total").increment(1);
            GroupOutcome {
                results,
                repeated,
                fault: None,
            }
        }
        Err(e) => GroupOutcome::all_failed(group.len(), format!("database commit: {e}")),
    })
}

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

/// Events and the requests waiting for their commit.
type Group = Vec<(IntegrationEvent, Reply)>;
/// A finished group: its outcome, and its connection for a later group (none if discarded).
type Done = (Group, GroupOutcome, Option<storage::Pooled>);
/// A group's commit running in a task of its own.
type InFlight = tokio::task::JoinHandle<Done>;

/// Groups committing at once. PostgreSQL: two, so the next group's statements run on a second
/// connection while the previous group waits for its commit to reach the disk (an fsync that
/// otherwise leaves the writer idle); row locks order two groups that touch one device, and
/// answers still go out only after their own group committed, in order. SQLite: one, since it
/// has one writer at a time and a second transaction would only wait for the lock.
fn groups_in_flight(db: &Db) -> usize {
    if db.is_postgres() {
        2
    } else {
        1
    }
}

async fn run(db: Db, retention: Retention, mut rx: mpsc::Receiver<Job>, out: Outlets) {
    let depth = groups_in_flight(&db);
    let mut in_flight: std::collections::VecDeque<InFlight> = Default::default();
    // The writer keeps its connections from group to group: a connection fresh from the pool
    // found its SQLite page cache stale (another connection had committed since it last read)
    // and read every page it needed again.
    let mut idle: Vec<storage::Pooled> = Vec::new();
    // The newest group's statements are still running: the next one waits for them.
    let mut applying: Option<oneshot::Receiver<()>> = None;
    loop {
        let job = tokio::select! {
            // The oldest group is announced first: answers go out in commit order.
            done = oldest(&mut in_flight), if !in_flight.is_empty() => {
                in_flight.pop_front();
                idle.extend(settle(&out, done));
                continue;
            }
            _ = fired(&mut applying), if applying.is_some() => {
                applying = None;
                continue;
            }
            job = rx.recv(), if in_flight.len() < depth && applying.is_none() => job,
        };
        let Some(first) = job else { break };
        let (group, flushes) = collect(first, &mut rx);
        if flushes.is_empty() {
            let (task, applied) = spawn_commit(&db, retention, group, idle.pop());
            in_flight.push_back(task);
            applying = Some(applied);
            continue;
        }
        // A flush is answered once everything queued before it is committed. The connections
        // go back to the pool: shutdown flushes, then closes the pool, which waits for them.
        while let Some(earlier) = in_flight.pop_front() {
            settle(&out, earlier.await);
        }
        applying = None;
        if !group.is_empty() {
            settle(&out, spawn_commit(&db, retention, group, None).0.await);
        }
        idle.clear();
        for reply in flushes {
            let _ = reply.send(());
        }
    }
    while let Some(earlier) = in_flight.pop_front() {
        settle(&out, earlier.await);
    }
}

/// The oldest group's outcome, once its commit is done.
async fn oldest(
    in_flight: &mut std::collections::VecDeque<InFlight>,
) -> Result<Done, tokio::task::JoinError> {
    match in_flight.front_mut() {
        Some(commit) => commit.await,
        None => std::future::pending().await,
    }
}

/// Once the newest group is [`Applied`] (or has stopped).
async fn fired(applying: &mut Option<oneshot::Receiver<()>>) {
    match applying {
        Some(applied) => {
            let _ = applied.await;
        }
        None => std::future::pending().await,
    }
}

/// The next group: `first` and whatever else is queued, up to [`MAX_GROUP`] events.
fn collect(first: Job, rx: &mut mpsc::Receiver<Job>) -> (Group, Vec<oneshot::Sender<()>>) {
    let mut group = Vec::with_capacity(MAX_GROUP.min(rx.len() + 1));
    let mut flushes = Vec::new();
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
    (group, flushes)
}

/// Says that a group's statements have run and only its COMMIT is left: from then on it holds
/// the row locks of its devices, so the next group can start without overtaking it (a device's
/// events stay in order, and a Version & Status answer reads what the one before stored).
struct Applied(Option<oneshot::Sender<()>>);

impl Applied {
    fn fire(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a group's commit on `conn` (else one from the pool); the receiver hears when it is
/// [`Applied`] (or has failed).
fn spawn_commit(
    db: &Db,
    retention: Retention,
    group: Group,
    conn: Option<storage::Pooled>,
) -> (InFlight, oneshot::Receiver<()>) {
    let db = db.clone();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut applied = Applied(Some(tx));
        let (outcome, conn) = commit_group(&db, retention, &group, conn, &mut applied).await;
        (group, outcome, conn)
    });
    (task, rx)
}

/// Reports a finished group: health, answers, announcements; returns its connection to keep.
/// A commit task that panicked (a bug) drops its replies, which its requests see as the writer
/// having stopped.
fn settle(out: &Outlets, done: Result<Done, tokio::task::JoinError>) -> Option<storage::Pooled> {
    let Ok((mut group, outcome, conn)) = done else {
        out.health
            .record(Some("the database writer failed on a group".into()));
        return None;
    };
    out.health.record(outcome.fault.clone());
    announce(out, group.drain(..), outcome);
    conn
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
    conn: Option<storage::Pooled>,
    applied: &mut Applied,
) -> (GroupOutcome, Option<storage::Pooled>) {
    // Getting a connection or opening a transaction fails the whole group alike.
    match try_commit_group(db, retention, group, conn, applied).await {
        Ok(done) => done,
        Err(e) => (
            GroupOutcome::all_failed(group.len(), format!("database: {e}")),
            None,
        ),
    }
}

async fn try_commit_group(
    db: &Db,
    retention: Retention,
    group: &[(IntegrationEvent, Reply)],
    conn: Option<storage::Pooled>,
    applied: &mut Applied,
) -> storage::Result<(GroupOutcome, Option<storage::Pooled>)> {
    let mut conn = match conn {
        Some(conn) => conn,
        None => storage::acquire(db).await?,
    };
    match apply_whole(&mut conn, retention, group, applied).await {
        Ok(repeated) => {
            metrics::counter!("lorafleet_ingest_commits_total").increment(1);
            let outcome = GroupOutcome {
                results: vec![Ok(()); group.len()],
                repeated,
                fault: None,
            };
            Ok((outcome, Some(conn)))
        }
        Err(_) => {
            storage::discard(conn);
            // Even a group of one is redone: only the outer transaction's fate says whether the
            // database is failing or just this event was refused.
            let outcome = commit_one_by_one(db, retention, group, applied).await?;
            Ok((outcome, None))
        }
    }
}

async fn apply_whole(
    conn: &mut Conn,
    retention: Retention,
    group: &[(IntegrationEvent, Reply)],
    applied: &mut Applied,
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
    applied.fire();
    storage::commit(tx).await?;
    Ok(repeated)
}

async fn commit_one_by_one(
    db: &Db,
    retention: Retention,
    group: &[(IntegrationEvent, Reply)],
    applied: &mut Applied,
) -> storage::Result<GroupOutcome> {
    let mut conn = storage::acquire(db).await?;
    let outcome = savepoint_each(&mut conn, retention, group, applied).await;
    if outcome.as_ref().map_or(true, |o| o.fault.is_some()) {
        storage::discard(conn);
    }
    outcome
}

async fn savepoint_each(
    conn: &mut Conn,
    retention: Retention,
    group: &[(IntegrationEvent, Reply)],
    applied: &mut Applied,
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
    applied.fire();
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

//! The running simulation: the world on its clock, its store, and the loop that moves the world
//! forward and hands what happened to an [`EventSink`]. Every request of the network server's
//! API (queue a downlink, a multicast group, ...) also counts as lorafleet being busy for the
//! clock (see `clock.rs`), so the server that uses the simulation never has to say so.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use tokio::sync::Notify;

use super::clock::SimClock;
use super::config::SimulatedConfig;
use super::demo;
use super::device::SimDevice;
use super::events::{EventSink, FleetDevice, SinkError};
use super::store::{Save, Saver, Store};
use super::world::{GroupSpec, SimError, World};
use lorafleet_codec::eui::DevEui;

/// The clock is saved at most this often (real time); a restart resumes it no earlier than
/// anything queued on the network.
const CLOCK_SAVE_EVERY: Duration = Duration::from_millis(200);
/// Fragments received and the network's queues are saved at least this often (real time); a
/// crash loses at most this much of them, which the devices see as radio loss.
const SAVE_EVERY: Duration = Duration::from_millis(100);
/// The network's snapshot is written at most once per [`SAVE_EVERY`] per this many bytes of
/// it when only the transmitters changed it: its size grows with what is queued (a setup round
/// of 10,000 devices), and writing it whole every 100 ms made the simulation's cost per second
/// grow with the fleet.
const SNAPSHOT_BYTES_PER_SAVE_EVERY: usize = 64 * 1024;
/// The loop looks at the clock at least this often even when nothing is due.
const MAX_IDLE: Duration = Duration::from_millis(100);

/// Where the simulation lives and what it plays in.
pub struct Setup<'a> {
    pub config: &'a SimulatedConfig,
    pub region: lrwn::region::CommonName,
    /// The Version & Status FPort the devices answer on.
    pub status_port: u8,
    /// The simulation keeps its state in `<data_dir>/simulated`.
    pub data_dir: &'a Path,
    /// Where the demo firmware images go on the first start.
    pub firmware_dir: &'a Path,
}

pub struct Simulation {
    inner: Arc<Inner>,
}

struct Inner {
    clock: SimClock,
    /// When the clock and the network server's state were last saved (real time).
    clock_saved: Mutex<Instant>,
    net_saved: Mutex<Instant>,
    /// Set by [`Simulation::shutdown`]: the loop stops.
    stop: AtomicBool,
    world: Mutex<World>,
    saver: Saver,
    wake: Notify,
    started: OnceLock<()>,
    /// The clock's time (microseconds since the Unix epoch) up to which the world has run and
    /// its events are committed by the sink: what [`Simulation::peek_now`] shows.
    settled_us: AtomicI64,
}

impl Inner {
    fn world(&self) -> MutexGuard<'_, World> {
        // A panic while the lock was held leaves the world as it was at that point, which is
        // still a consistent simulation; carry on rather than poison every later call.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Simulation {
    /// Loads (or creates) the fleet from `<data_dir>/simulated`; nothing runs until
    /// [`Simulation::start`].
    pub fn open(setup: &Setup) -> anyhow::Result<Simulation> {
        let first_start = !setup.data_dir.join("simulated").exists();
        let store = Store::open(setup.data_dir)?;
        if first_start {
            for path in demo::write_if_empty(setup.firmware_dir)? {
                tracing::info!(path = %path.display(), "wrote a demo firmware image for the simulated devices");
            }
        }
        let network = store.load_network();
        // Resume no earlier than anything the saved network state mentions: a fragment queued
        // in the session must not go out before the session (the clock is saved only now and
        // then, the queue with every request).
        let latest = network
            .latest_ms()
            .and_then(DateTime::from_timestamp_millis);
        let resume = match (store.load_clock(), latest) {
            (Some(c), Some(l)) => Some(c.max(l)),
            (c, l) => c.or(l),
        };
        let clock = SimClock::new(setup.config.time_scale, resume);
        let now_ms = clock.now().timestamp_millis();
        let mut world = World::new(
            setup.config,
            lrwn::region::get(setup.region, false, false),
            setup.status_port,
            now_ms,
            rand::rngs::StdRng::from_entropy(),
            |id| store.load_device(id.dev_eui),
            network,
        );
        let (receptions, next_frame) = store.load_receptions()?;
        world.set_next_frame(next_frame);
        for (eui, list) in receptions {
            let Some(i) = world.device_index(eui) else {
                continue;
            };
            for (index, n, data) in list {
                world.replay_fragment(i, index, n, &data, now_ms);
            }
        }
        Ok(Simulation {
            inner: Arc::new(Inner {
                clock,
                stop: AtomicBool::new(false),
                clock_saved: Mutex::new(Instant::now()),
                net_saved: Mutex::new(Instant::now()),
                world: Mutex::new(world),
                saver: Saver::spawn(store)?,
                wake: Notify::new(),
                started: OnceLock::new(),
                settled_us: AtomicI64::new(i64::MIN),
            }),
        })
    }

    /// Starts the simulation (once): from now on the devices live and what happens goes to
    /// `sink`.
    pub fn start(&self, sink: impl EventSink) {
        if self.inner.started.set(()).is_ok() {
            tokio::spawn(run(self.inner.clone(), sink));
        }
    }

    /// Runs `f` on a device (tests and benchmarks look inside the devices).
    pub fn inspect<T>(&self, dev_eui: DevEui, f: impl FnOnce(&SimDevice) -> T) -> Option<T> {
        self.inner.world().device(dev_eui).map(f)
    }

    /// Stops the simulation after saving everything (tests that restart it in one process).
    pub async fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        // The loop notices within one round; saving here as well covers a loop never started.
        tokio::time::sleep(MAX_IDLE * 2).await;
        let written = {
            let mut world = self.inner.world();
            let all = world.devices().len();
            world.dirty.extend(0..all);
            world.net_dirty = true;
            world.net_requested = true;
            save(&self.inner, &mut world);
            self.inner.saver.send(Save::Clock(self.inner.clock.now()));
            self.inner.saver.flush()
        };
        let _ = written.await;
    }

    /// Every simulated device's EUI, in order.
    /// The device's implementation (`network.simulated.stacks`), as its device profile would
    /// say.
    pub fn stack_of(&self, dev_eui: DevEui) -> Option<crate::stacks::Stack> {
        self.inner.world().stack_of(dev_eui)
    }

    pub fn dev_euis(&self) -> Vec<DevEui> {
        self.inner
            .world()
            .devices()
            .iter()
            .map(|d| d.id.dev_eui)
            .collect()
    }

    /// The simulation's clock; asking counts as a request to the network server.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.lorafleet_called();
        self.inner.clock.now()
    }

    /// The time up to which everything happened, without counting as a request (the clock is
    /// not held back for this read): the clock, or less while the world has not run that far
    /// and its events are not all committed yet. For a caller waiting for the clock to reach
    /// its hold before it reads what the devices did until then (an engine step that came
    /// before the loop ran the world to the hold missed the answers just before it).
    pub fn peek_now(&self) -> DateTime<Utc> {
        let now = self.inner.clock.now();
        let settled = self.inner.settled_us.load(Ordering::Acquire);
        DateTime::from_timestamp_micros(settled)
            .filter(|&s| s < now)
            .unwrap_or(now)
    }

    /// `caller` (lorafleet's campaign) looks at the network again when the clock shows `at`
    /// (`None`: not again): the clock waits there for it (see `clock.rs`). Counts as a request.
    pub fn hold_clock_at(&self, caller: u64, at: Option<DateTime<Utc>>) {
        self.inner.clock.lorafleet_called();
        self.inner.clock.hold_at(caller, at);
        // The loop may be waiting for the clock to pass the old hold.
        self.inner.wake.notify_one();
    }

    /// How many times faster than real time [`Simulation::now`] runs.
    pub fn time_scale(&self) -> f64 {
        self.inner.clock.scale()
    }

    /// Queues a class A downlink for the device's next uplink; returns the queue item's id.
    pub async fn enqueue(
        &self,
        dev_eui: DevEui,
        f_port: u8,
        data: &[u8],
    ) -> Result<String, SimError> {
        self.request(|w, now_ms| w.enqueue(dev_eui, f_port, data, now_ms))
            .await
    }

    /// [`Simulation::enqueue`] for many downlinks in one request (one save of the queues):
    /// each one's queue item id or why not, in order.
    pub async fn enqueue_all(
        &self,
        items: &[(DevEui, u8, &[u8])],
    ) -> Result<Vec<Result<String, SimError>>, SimError> {
        self.request(|w, now_ms| {
            Ok(items
                .iter()
                .map(|&(dev_eui, f_port, data)| w.enqueue(dev_eui, f_port, data, now_ms))
                .collect())
        })
        .await
    }

    pub fn devices(&self) -> Vec<FleetDevice> {
        self.inner.clock.lorafleet_called();
        self.inner.world().list()
    }

    /// The device's GenAppKey (LoRaWAN 1.0.x), which the network server knows.
    pub fn gen_app_key(&self, dev_eui: DevEui) -> Option<[u8; 16]> {
        self.inner.clock.lorafleet_called();
        self.inner.world().device(dev_eui).map(|d| d.id.gen_app_key)
    }

    /// Creates a multicast group; returns its id.
    pub async fn create_group(&self, spec: &GroupSpec) -> Result<String, SimError> {
        self.request(|w, _| Ok(w.create_group(spec))).await
    }

    pub async fn add_member(&self, group_id: &str, dev_eui: DevEui) -> Result<(), SimError> {
        self.request(|w, _| w.add_member(group_id, dev_eui)).await
    }

    /// [`Simulation::add_member`] for many devices in one request: each one's outcome.
    pub async fn add_members(
        &self,
        group_id: &str,
        dev_euis: &[DevEui],
    ) -> Result<Vec<Result<(), SimError>>, SimError> {
        self.request(|w, _| {
            Ok(dev_euis
                .iter()
                .map(|&d| w.add_member(group_id, d))
                .collect())
        })
        .await
    }

    /// Queues a frame for a multicast group; returns its frame counter.
    pub async fn enqueue_multicast(
        &self,
        group_id: &str,
        f_port: u8,
        data: &[u8],
    ) -> Result<u32, SimError> {
        let f_cnt = self
            .request(|w, now_ms| w.enqueue_multicast(group_id, f_port, data, now_ms))
            .await?;
        self.inner.wake.notify_one();
        Ok(f_cnt)
    }

    pub fn multicast_queue_len(&self, group_id: &str) -> Result<usize, SimError> {
        self.inner.clock.lorafleet_called();
        self.inner.world().multicast_queue_len(group_id)
    }

    pub async fn delete_group(&self, group_id: &str) -> Result<(), SimError> {
        self.request(|w, _| w.delete_group(group_id)).await
    }

    /// One request to the network server: it changes the world, and its answer leaves only
    /// once the change is on disk. lorafleet counts as busy from the call to its answer (and
    /// the grace after).
    async fn request<T>(
        &self,
        change: impl FnOnce(&mut World, i64) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        let inner = &self.inner;
        inner.clock.lorafleet_called();
        let now_ms = inner.clock.now().timestamp_millis();
        let (answer, written) = {
            let mut world = inner.world();
            let answer = change(&mut world, now_ms)?;
            save(inner, &mut world);
            (answer, inner.saver.flush())
        };
        let _ = written.await;
        inner.clock.lorafleet_called();
        Ok(answer)
    }
}

/// Moves the world forward with the clock, saves what changed, and hands the events to the
/// sink in the order they happened.
async fn run(inner: Arc<Inner>, sink: impl EventSink) {
    let mut saved = Instant::now();
    loop {
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        inner.clock.busy_begin();
        let now = inner.clock.now();
        let (events, next, written) = {
            let mut world = inner.world();
            world.advance(now.timestamp_millis());
            let events = world.take_events();
            // Saving before the events leave means no device answers something it would
            // forget after a crash; between answers, fragments and queues are saved in batches.
            let written = (!events.is_empty() || saved.elapsed() >= SAVE_EVERY).then(|| {
                save(&inner, &mut world);
                saved = Instant::now();
                inner.saver.flush()
            });
            (events, world.next_due_ms(), written)
        };
        if !events.is_empty() {
            if let Some(written) = written {
                let _ = written.await;
            }
            match sink.deliver(events).await {
                Ok(()) => {}
                Err(SinkError::Closed) => {
                    tracing::warn!("the event sink stopped; the simulation stops");
                    return;
                }
                Err(SinkError::Failed(e)) => {
                    tracing::warn!(error = %e, "could not store simulated device events");
                }
            }
        }
        inner
            .settled_us
            .store(now.timestamp_micros(), Ordering::Release);
        // The clock does not run while the simulation is busy (beyond a little): under load the
        // simulation slows down instead of its clock running ahead of what the devices did and
        // what the sink stored, which would make every device look late to the engine.
        inner.clock.busy_end();
        // Also when the clock reaches a hold: the holder's step waits for the world to be run
        // to it (see `Simulation::peek_now`).
        let hold = inner.clock.earliest_hold().filter(|&h| h > now);
        let wait = [next.and_then(DateTime::from_timestamp_millis), hold]
            .into_iter()
            .flatten()
            .map(|t| inner.clock.real_until(t))
            .fold(MAX_IDLE, Duration::min);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = inner.wake.notified() => {}
        }
    }
}

/// Hands the store thread what changed since the last save, and now and then the clock. Called
/// under the world's lock so the writes keep the order of the changes; the caller waits for
/// [`Saver::flush`] before anything reports the changes.
fn save(inner: &Inner, world: &mut World) {
    let saver = &inner.saver;
    let dirty = std::mem::take(&mut world.dirty);
    let saved_anything = !dirty.is_empty() || !world.log.is_empty() || world.net_requested;
    for i in dirty {
        let dev = &world.devices()[i];
        saver.send(Save::Device(dev.id.dev_eui, Box::new(dev.state.clone())));
    }
    if !world.log.is_empty() {
        saver.send(Save::Receptions(std::mem::take(&mut world.log)));
    }
    if !world.queued_multicast.is_empty() {
        saver.send(Save::Multicast(std::mem::take(&mut world.queued_multicast)));
    }
    // What lorafleet asked for is saved at once; what the transmitters sent since (a popped
    // queue entry) can wait a little: after a crash the frame is sent again, and devices ignore
    // a fragment they are past. Rewriting the queue at every frame costs more than the frames.
    let every = SAVE_EVERY * (1 + saver.network_bytes() / SNAPSHOT_BYTES_PER_SAVE_EVERY) as u32;
    if world.net_dirty && (world.net_requested || due(&inner.net_saved, every)) {
        world.net_dirty = false;
        world.net_requested = false;
        saver.send(Save::Network(Box::new(world.net.clone())));
    }
    if saved_anything && due(&inner.clock_saved, CLOCK_SAVE_EVERY) {
        saver.send(Save::Clock(inner.clock.now()));
    }
}

/// Whether `every` passed since `last`; if so, `last` becomes now.
fn due(last: &Mutex<Instant>, every: Duration) -> bool {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    let due = last.elapsed() >= every;
    if due {
        *last = Instant::now();
    }
    due
}

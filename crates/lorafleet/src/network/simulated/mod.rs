//! `network.kind = "simulated"`: a network server and a fleet of virtual devices inside
//! lorafleet, so a fresh install shows a living fleet and a campaign can be tried without a
//! ChirpStack.
//!
//! The devices implement the device side of Version & Status, TS003, TS005 and TS004 for real
//! (`device.rs`); the world (`world.rs`) plays radio and network server on the simulation's own
//! clock (`clock.rs`), accelerated by `time_scale`. Their uplinks are committed through the
//! ingest [`Writer`], exactly like ChirpStack's integration events, so everything downstream
//! (device pages, Version & Status answers, the FUOTA engine) cannot tell the difference.

pub mod clock;
pub mod demo;
pub mod device;
pub mod radio;
pub mod store;
pub mod world;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::SeedableRng;
use tokio::sync::Notify;

use self::clock::SimClock;
use self::store::Store;
use self::world::World;
use super::{
    ClockHold, DeviceKeys, Downlink, Enqueued, MulticastGroup, Network, NetworkError, RemoteDevice,
};
use crate::config::{Config, NetworkKind};
use crate::ingest::writer::Writer;
use lorafleet_codec::eui::DevEui;

/// The clock is saved at most this often (real time); a restart resumes it no earlier than
/// anything queued on the network.
const CLOCK_SAVE_EVERY: Duration = Duration::from_millis(200);
/// Fragments received and the network's queues are saved at least this often (real time); a
/// crash loses at most this much of them, which the devices see as radio loss.
const SAVE_EVERY: Duration = Duration::from_millis(100);
/// The loop looks at the clock at least this often even when nothing is due.
const MAX_IDLE: Duration = Duration::from_millis(100);

pub struct Simulated {
    inner: Arc<Inner>,
}

struct Inner {
    clock: SimClock,
    /// When the clock and the network server's state were last saved (real time).
    clock_saved: Mutex<Instant>,
    net_saved: Mutex<Instant>,
    /// Set by [`Simulated::shutdown`]: the loop saves and stops.
    stop: std::sync::atomic::AtomicBool,
    world: Mutex<World>,
    store: Store,
    wake: Notify,
    started: OnceLock<()>,
}

impl Inner {
    fn world(&self) -> MutexGuard<'_, World> {
        // A panic while the lock was held leaves the world as it was at that point, which is
        // still a consistent simulation; carry on rather than poison every later call.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }
}

impl Simulated {
    /// Loads (or creates) the fleet from `<data_dir>/simulated`; nothing runs until
    /// [`Network::attach`].
    pub fn new(config: &Config) -> anyhow::Result<Simulated> {
        let sim = &config.network.simulated;
        let region = crate::config::parse_region(&config.network.region)
            .ok_or_else(|| anyhow::anyhow!("network.region {:?}", config.network.region))?;
        let first_start = !config.server.data_dir.join("simulated").exists();
        let store = Store::open(&config.server.data_dir)?;
        if first_start {
            for path in demo::write_if_empty(&config.firmware.dir)? {
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
        let clock = SimClock::new(sim.time_scale, resume);
        let now_ms = clock.now().timestamp_millis();
        let mut world = World::new(
            sim,
            lrwn::region::get(region, false, false),
            config.status_protocol.f_port,
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
        Ok(Simulated {
            inner: Arc::new(Inner {
                clock,
                stop: std::sync::atomic::AtomicBool::new(false),
                clock_saved: Mutex::new(Instant::now()),
                net_saved: Mutex::new(Instant::now()),
                world: Mutex::new(world),
                store,
                wake: Notify::new(),
                started: OnceLock::new(),
            }),
        })
    }

    /// Runs `f` on a device (tests and benchmarks look inside the devices).
    pub fn inspect<T>(
        &self,
        dev_eui: DevEui,
        f: impl FnOnce(&device::SimDevice) -> T,
    ) -> Option<T> {
        self.inner.world().device(dev_eui).map(f)
    }

    /// Stops the simulation after saving everything (tests that restart it in one process).
    pub async fn shutdown(&self) {
        self.inner
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake.notify_one();
        // The loop notices within one round; saving here as well covers a loop never started.
        tokio::time::sleep(MAX_IDLE * 2).await;
        let mut world = self.inner.world();
        let all = world.devices().len();
        world.dirty.extend(0..all);
        world.net_dirty = true;
        world.net_requested = true;
        save(&self.inner, &mut world);
        if let Err(e) = self.inner.store.save_clock(self.inner.clock.now()) {
            tracing::warn!(error = %e, "could not save the simulation clock");
        }
    }

    /// Every simulated device's EUI, in order.
    pub fn dev_euis(&self) -> Vec<DevEui> {
        self.inner
            .world()
            .devices()
            .iter()
            .map(|d| d.id.dev_eui)
            .collect()
    }
}

/// Moves the world forward with the clock, saves what changed, and hands the events to the
/// writer in the order they happened.
async fn run(inner: Arc<Inner>, writer: Writer) {
    let mut saved = Instant::now();
    loop {
        if inner.stop.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        inner.clock.busy_begin();
        let now = inner.clock.now();
        let (events, next) = {
            let mut world = inner.world();
            world.advance(now.timestamp_millis());
            let events = world.take_events();
            // Saving before the events leave means no device answers something it would
            // forget after a crash; between answers, fragments and queues are saved in batches.
            if !events.is_empty() || saved.elapsed() >= SAVE_EVERY {
                save(&inner, &mut world);
                saved = Instant::now();
            }
            (events, world.next_due_ms())
        };
        // Submitted in order without waiting for each, the events share group commits; the
        // last one's outcome says the whole batch is in the database.
        let mut last = None;
        for event in events {
            match writer.submit(event).await {
                Ok(done) => last = Some(done),
                Err(e) => {
                    tracing::warn!(error = %e, "the ingest writer stopped; the simulation stops");
                    return;
                }
            }
        }
        if let Some(done) = last {
            if let Ok(Err(e)) = done.await {
                tracing::warn!(error = %e, "could not commit a simulated device event");
            }
        }
        // The clock does not run while the simulation is busy (beyond a little): under load the
        // simulation slows down instead of its clock running ahead of what the devices did and
        // what the database holds, which would make every device look late to the engine.
        inner.clock.busy_end();
        let wait = next
            .and_then(DateTime::from_timestamp_millis)
            .map_or(MAX_IDLE, |t| inner.clock.real_until(t))
            .min(MAX_IDLE);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = inner.wake.notified() => {}
        }
    }
}

/// Writes what changed since the last save, and now and then the clock. Called before the
/// events that report the changes leave the world, so a device never answered something it
/// would forget after a crash.
fn save(inner: &Inner, world: &mut World) {
    let store = &inner.store;
    let dirty = std::mem::take(&mut world.dirty);
    let saved_anything = !dirty.is_empty() || !world.log.is_empty() || world.net_requested;
    for i in dirty {
        let dev = &world.devices()[i];
        if let Err(e) = store.save_device(dev.id.dev_eui, &dev.state) {
            tracing::warn!(error = %e, "could not save a simulated device");
        }
    }
    if !world.log.is_empty() {
        if let Err(e) = store.append_log(&std::mem::take(&mut world.log)) {
            tracing::warn!(error = %e, "could not log simulated fragments");
        }
    }
    // What lorafleet asked for is saved at once; what the transmitters sent since (a popped
    // queue entry) can wait a little: after a crash the frame is sent again, and devices ignore
    // a fragment they are past. Rewriting the queue at every frame costs more than the frames.
    let net_due = world.net_dirty && {
        let mut last = inner.net_saved.lock().unwrap_or_else(|e| e.into_inner());
        let due = world.net_requested || last.elapsed() >= SAVE_EVERY;
        if due {
            *last = Instant::now();
        }
        due
    };
    if net_due {
        world.net_dirty = false;
        world.net_requested = false;
        if let Err(e) = store.save_network(&world.net) {
            tracing::warn!(error = %e, "could not save the simulated network server");
        }
    }
    let due = {
        let mut last = inner.clock_saved.lock().unwrap_or_else(|e| e.into_inner());
        let due = saved_anything && last.elapsed() >= CLOCK_SAVE_EVERY;
        if due {
            *last = Instant::now();
        }
        due
    };
    if due {
        if let Err(e) = store.save_clock(inner.clock.now()) {
            tracing::warn!(error = %e, "could not save the simulation clock");
        }
    }
}

#[async_trait]
impl Network for Simulated {
    fn kind(&self) -> NetworkKind {
        NetworkKind::Simulated
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn time_scale(&self) -> f64 {
        self.inner.clock.scale()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        tokio::time::sleep(self.inner.clock.real_until(at)).await;
    }

    fn hold_clock(&self) -> ClockHold {
        self.inner.clock.busy_begin();
        let inner = self.inner.clone();
        ClockHold::new(move || {
            // The work being finished (a campaign step that queued fragments, say) is about to
            // be stored by lorafleet: store what it asked of the network first, so a crash
            // cannot leave the database ahead of the simulation.
            let mut world = inner.world();
            if world.net_requested {
                save(&inner, &mut world);
            }
            drop(world);
            inner.clock.busy_end();
        })
    }

    fn attach(&self, writer: Writer) {
        if self.inner.started.set(()).is_ok() {
            tokio::spawn(run(self.inner.clone(), writer));
        }
    }

    async fn enqueue(&self, downlink: &Downlink) -> Result<Enqueued, NetworkError> {
        let now_ms = self.inner.now_ms();
        let id = {
            let mut world = self.inner.world();
            let id = world.enqueue(downlink.dev_eui, downlink.f_port, &downlink.data, now_ms)?;
            save(&self.inner, &mut world);
            id
        };
        Ok(Enqueued {
            network_ref: Some(id),
            f_cnt: None,
        })
    }

    async fn list_devices(&self) -> Result<Vec<RemoteDevice>, NetworkError> {
        Ok(self.inner.world().list())
    }

    async fn device_keys(&self, dev_eui: DevEui) -> Result<Option<DeviceKeys>, NetworkError> {
        Ok(self.inner.world().device(dev_eui).map(|d| DeviceKeys {
            gen_app_key: Some(d.id.gen_app_key),
            app_key: None,
        }))
    }

    async fn create_multicast_group(&self, group: &MulticastGroup) -> Result<String, NetworkError> {
        let mut world = self.inner.world();
        let id = world.create_group(group);
        save(&self.inner, &mut world);
        Ok(id)
    }

    async fn add_multicast_device(
        &self,
        group_id: &str,
        dev_eui: DevEui,
    ) -> Result<(), NetworkError> {
        let mut world = self.inner.world();
        world.add_member(group_id, dev_eui)?;
        save(&self.inner, &mut world);
        Ok(())
    }

    async fn enqueue_multicast(
        &self,
        group_id: &str,
        f_port: u8,
        data: &[u8],
    ) -> Result<u32, NetworkError> {
        let now_ms = self.inner.now_ms();
        let f_cnt = self
            .inner
            .world()
            .enqueue_multicast(group_id, f_port, data, now_ms)?;
        self.inner.wake.notify_one();
        Ok(f_cnt)
    }

    async fn multicast_queue_len(&self, group_id: &str) -> Result<usize, NetworkError> {
        self.inner.world().multicast_queue_len(group_id)
    }

    async fn delete_multicast_group(&self, group_id: &str) -> Result<(), NetworkError> {
        let mut world = self.inner.world();
        world.delete_group(group_id)?;
        save(&self.inner, &mut world);
        Ok(())
    }
}

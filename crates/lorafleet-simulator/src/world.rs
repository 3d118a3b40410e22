//! The simulated network server and radio: every device, the unicast queues and multicast
//! groups a network server keeps, and a timetable of what happens next. Advancing the world to
//! a time runs everything due until then and leaves the integration events it produced.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lrwn::region::Region;
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::class_b;
use super::config::SimulatedConfig;
use super::device::{telemetry_object, Ctx, DeviceState, Effect, Identity, SimDevice};
use super::events::{FleetDevice, SimEvent, SimEventBody, SimUplink};
use super::radio;
use lorafleet_codec::eui::DevEui;
pub use lorafleet_engine::MulticastClass;

/// A multicast group as lorafleet asks the network server to create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    /// Most significant byte first.
    pub mc_addr: [u8; 4],
    pub mc_nwk_s_key: [u8; 16],
    pub mc_app_s_key: [u8; 16],
    /// The frame counter of the group's first frame.
    pub f_cnt: u32,
    pub class: MulticastClass,
    pub dr: u8,
    /// Hz.
    pub frequency: u32,
}

/// Why the simulated network server refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("{0} is not one of the simulated devices")]
    UnknownDevice(DevEui),
    #[error("no multicast group {0}")]
    NoGroup(String),
}
/// RX1 opens one second after the uplink ends.
const RX1_DELAY_MS: i64 = 1_000;
/// A device with more downlinks queued (FPending) sends again after this long.
const FPENDING_UPLINK_MS: i64 = 2_000;
/// The network server asks every device for its battery level this often.
const DEV_STATUS_MS: i64 = 6 * 3600 * 1000;

/// A unicast downlink waiting for the device's next uplink.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    pub id: String,
    /// When it was queued: a device uplink the world processes late (the world runs behind the
    /// clock under load) must not receive a downlink queued after it.
    pub not_before_ms: i64,
    pub f_port: u8,
    #[serde(with = "hex_bytes")]
    pub data: Vec<u8>,
}

/// A multicast group as the network server keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetGroup {
    pub name: String,
    pub mc_addr: [u8; 4],
    pub mc_nwk_s_key: [u8; 16],
    pub mc_app_s_key: [u8; 16],
    pub class_b_periodicity: Option<u8>,
    pub dr: u8,
    pub frequency: u32,
    pub next_f_cnt: u32,
    pub members: BTreeSet<DevEui>,
    /// Frames not yet sent.
    pub queue: VecDeque<McFrame>,
    /// When the transmitter is free again.
    pub free_at_ms: i64,
}

impl NetGroup {
    fn spec(&self) -> GroupSpec {
        GroupSpec {
            name: self.name.clone(),
            mc_addr: self.mc_addr,
            mc_nwk_s_key: self.mc_nwk_s_key,
            mc_app_s_key: self.mc_app_s_key,
            f_cnt: self.next_f_cnt,
            class: match self.class_b_periodicity {
                Some(p) => MulticastClass::B {
                    ping_slot_periodicity: p,
                },
                None => MulticastClass::C,
            },
            dr: self.dr,
            frequency: self.frequency,
        }
    }
}

/// A multicast frame waiting for the transmitter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct McFrame {
    /// When it was queued: it never goes out earlier, even if a restart set the clock back.
    #[serde(default)]
    pub not_before_ms: i64,
    pub f_cnt: u32,
    pub f_port: u8,
    #[serde(with = "hex_bytes")]
    pub data: Vec<u8>,
}

/// Payloads as hex in the saved state: a third of the size of a JSON number list.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The network server's side, saved across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkState {
    pub groups: BTreeMap<String, NetGroup>,
    pub queues: BTreeMap<DevEui, VecDeque<Queued>>,
}

impl NetworkState {
    /// Replays a multicast frame read back from the store's multicast log: kept when its group
    /// still exists and the saved state does not have it yet.
    pub fn replay_multicast(&mut self, group: &str, frame: McFrame) {
        if let Some(g) = self.groups.get_mut(group) {
            if frame.f_cnt >= g.next_f_cnt {
                g.next_f_cnt = frame.f_cnt.wrapping_add(1);
                g.queue.push_back(frame);
            }
        }
    }

    /// The latest time the state mentions (queue times, the transmitters' free times).
    pub fn latest_ms(&self) -> Option<i64> {
        let groups = self.groups.values().flat_map(|g| {
            std::iter::once(g.free_at_ms).chain(g.queue.iter().map(|f| f.not_before_ms))
        });
        let queues = self.queues.values().flatten().map(|q| q.not_before_ms);
        groups.chain(queues).filter(|&t| t > 0).max()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum What {
    Periodic(usize),
    /// Send what the device has to say (an answer, or an uplink to fetch pending downlinks).
    Wake(usize),
    /// Send an uplink in any case (after a boot).
    Boot(usize),
    Reboot(usize),
    DevStatus(usize),
    Multicast(String),
    /// The gateways' class B beacon (every 128 s of GPS time).
    Beacon,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Timer {
    at_ms: i64,
    seq: u64,
    what: What,
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What a device's settings resolve to.
struct DeviceSetup {
    loss: f64,
    multicast_loss: f64,
    slot_size: u32,
    stack: crate::stacks::Stack,
    /// The stack's fragment limits in this fleet (its build's over its stock ones).
    limits: Option<crate::stacks::FragLimits>,
}

/// What the store appends to the reception log: enough to rebuild every device's decoders
/// after a restart. A multicast frame is written once however many devices received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOp {
    /// A fragment frame's payload (DataFragment without CID and IndexAndN).
    Frame { id: u32, data: Arc<[u8]> },
    /// A device accepted frame `frame` as fragment `n` of session `index`.
    Received {
        dev_eui: DevEui,
        index: u8,
        n: u16,
        frame: u32,
    },
    /// A device's session `index` was set up, deleted, or ended with a reboot.
    Reset { dev_eui: DevEui, index: u8 },
}

pub struct World {
    region: Box<dyn Region + Send + Sync>,
    uplink_freqs: Vec<u32>,
    interval_ms: i64,
    status_port: u8,
    reboot_delay_ms: i64,
    devices: Vec<SimDevice>,
    setups: Vec<DeviceSetup>,
    index: HashMap<DevEui, usize>,
    pub net: NetworkState,
    timers: BinaryHeap<Reverse<Timer>>,
    seq: u64,
    rng: StdRng,
    events: Vec<SimEvent>,
    /// Devices whose saved state is stale.
    pub dirty: BTreeSet<usize>,
    pub net_dirty: bool,
    /// The network was asked for something (a downlink, a group) since the last save.
    pub net_requested: bool,
    /// Reception-log records for the store, in order.
    pub log: Vec<LogOp>,
    /// Multicast frames lorafleet queued since the last save, with their group: appended to
    /// the store's multicast log at once instead of rewriting the whole network state per frame.
    pub queued_multicast: Vec<(String, McFrame)>,
    /// Id of the next frame written to the reception log.
    next_frame: u32,
    /// The multicast frame being delivered, once logged.
    current_frame: Option<u32>,
    in_multicast: bool,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl World {
    /// Builds the fleet the configuration describes. `saved` gives a device's remembered state
    /// (None: a new device, which joins); `network` the network server's saved side.
    pub fn new(
        config: &SimulatedConfig,
        region: Box<dyn Region + Send + Sync>,
        status_port: u8,
        now_ms: i64,
        rng: StdRng,
        mut saved: impl FnMut(&Identity) -> Option<DeviceState>,
        network: NetworkState,
    ) -> World {
        let mut w = World {
            uplink_freqs: radio::uplink_frequencies(region.as_ref()),
            region,
            interval_ms: i64::try_from(config.uplink_interval_s.max(1))
                .unwrap_or(i64::MAX / 4_000)
                .saturating_mul(1000),
            status_port,
            reboot_delay_ms: i64::try_from(config.reboot_delay_s)
                .unwrap_or(0)
                .saturating_mul(1000),
            devices: Vec::new(),
            setups: Vec::new(),
            index: HashMap::new(),
            net: network,
            timers: BinaryHeap::new(),
            seq: 0,
            rng,
            events: Vec::new(),
            dirty: BTreeSet::new(),
            net_dirty: false,
            net_requested: false,
            log: Vec::new(),
            queued_multicast: Vec::new(),
            next_frame: 0,
            current_frame: None,
            in_multicast: false,
        };
        for n in 0..config.devices {
            let id = Identity::nth(n);
            let o = config
                .overrides
                .get(&id.dev_eui.to_string())
                .cloned()
                .unwrap_or_default();
            let loss = o.loss.unwrap_or(config.loss);
            let stack = config.stack_of(n, &id.dev_eui.to_string());
            w.setups.push(DeviceSetup {
                loss,
                multicast_loss: o.multicast_loss.unwrap_or(loss),
                slot_size: o.slot_size.unwrap_or(config.slot_size),
                stack,
                limits: config.limits_of(stack),
            });
            let i = w.devices.len();
            w.index.insert(id.dev_eui, i);
            let dev = match saved(&id) {
                Some(state) => SimDevice::restore(id, state, &mut w.rng),
                None => {
                    let dev = SimDevice::new(id, now_ms, &mut w.rng);
                    w.dirty.insert(i);
                    w.events.push(SimEvent {
                        dev_eui: dev.id.dev_eui,
                        at: time(now_ms),
                        device: Some(fleet_device(&dev)),
                        body: SimEventBody::Join,
                    });
                    dev
                }
            };
            w.devices.push(dev);
            // Spread the first uplinks over one interval so the fleet does not speak at once.
            let first = now_ms + w.rng.gen_range(0..w.interval_ms);
            w.schedule(first, What::Periodic(i));
            let status = now_ms + w.rng.gen_range(0..DEV_STATUS_MS.min(w.interval_ms * 4));
            w.schedule(status, What::DevStatus(i));
            if let Some(r) = w.devices[i].state.reboot {
                w.schedule(r.at_ms, What::Reboot(i));
            }
            if !w.devices[i].state.outbox.is_empty() {
                let at = now_ms + w.rng.gen_range(1_000..5_000);
                w.schedule(at, What::Wake(i));
            }
        }
        let busy: Vec<(String, i64)> = w
            .net
            .groups
            .iter()
            .filter(|(_, g)| !g.queue.is_empty())
            .map(|(id, g)| (id.clone(), g.free_at_ms))
            .collect();
        for (id, free_at) in busy {
            w.schedule(now_ms.max(free_at), What::Multicast(id));
        }
        w.schedule(class_b::next_beacon(now_ms), What::Beacon);
        w
    }

    fn schedule(&mut self, at_ms: i64, what: What) {
        self.seq += 1;
        self.timers.push(Reverse(Timer {
            at_ms,
            seq: self.seq,
            what,
        }));
    }

    /// When the next thing happens.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.timers.peek().map(|t| t.0.at_ms)
    }

    /// Runs everything due up to `now_ms`, each at its own time.
    pub fn advance(&mut self, now_ms: i64) {
        while let Some(Reverse(t)) = self.timers.peek() {
            if t.at_ms > now_ms {
                break;
            }
            let Some(Reverse(t)) = self.timers.pop() else {
                break;
            };
            self.run(t.at_ms, t.what);
        }
    }

    /// The events produced since the last call, in the order they happened.
    pub fn take_events(&mut self) -> Vec<SimEvent> {
        std::mem::take(&mut self.events)
    }

    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    pub fn device(&self, dev_eui: DevEui) -> Option<&SimDevice> {
        self.index.get(&dev_eui).map(|&i| &self.devices[i])
    }

    /// The device's implementation.
    pub fn stack_of(&self, dev_eui: DevEui) -> Option<crate::stacks::Stack> {
        self.index.get(&dev_eui).map(|&i| self.setups[i].stack)
    }

    pub fn device_index(&self, dev_eui: DevEui) -> Option<usize> {
        self.index.get(&dev_eui).copied()
    }

    /// Frame ids already used in the reception log (restart).
    pub fn set_next_frame(&mut self, next: u32) {
        self.next_frame = next;
    }

    /// Replays a fragment read back from the log (restart).
    pub fn replay_fragment(&mut self, i: usize, index: u8, n: u16, data: &[u8], now_ms: i64) {
        let slot_size = self.setups[i].slot_size;
        let ctx = Ctx {
            region: self.region.as_ref(),
            status_port: self.status_port,
            reboot_delay_ms: self.reboot_delay_ms,
            slot_size,
            stack: self.setups[i].stack,
            limits: self.setups[i].limits,
        };
        self.devices[i].replay_fragment(index, n, data, &ctx, now_ms);
    }

    fn run(&mut self, at: i64, what: What) {
        match what {
            What::Periodic(i) => {
                let jitter = self.interval_ms / 10;
                let next = at + self.interval_ms + self.rng.gen_range(-jitter..=jitter);
                self.schedule(next.max(at + 1), What::Periodic(i));
                self.uplink(i, at);
            }
            What::Wake(i) => {
                let pending = self
                    .net
                    .queues
                    .get(&self.devices[i].id.dev_eui)
                    .is_some_and(|q| !q.is_empty());
                if !self.devices[i].state.outbox.is_empty() || pending {
                    self.uplink(i, at);
                }
            }
            What::Boot(i) => self.uplink(i, at),
            What::Reboot(i) => {
                if self.devices[i].state.reboot.is_some_and(|r| r.at_ms <= at) {
                    self.devices[i].reboot(at);
                    self.dirty.insert(i);
                    let dev_eui = self.devices[i].id.dev_eui;
                    for index in 0..4 {
                        self.log.push(LogOp::Reset { dev_eui, index });
                    }
                    let boot = at + self.rng.gen_range(3_000..8_000);
                    self.schedule(boot, What::Boot(i));
                }
            }
            What::DevStatus(i) => {
                self.schedule(at + DEV_STATUS_MS, What::DevStatus(i));
                if self.rng.gen::<f64>() >= self.setups[i].loss {
                    let dev = &self.devices[i];
                    let mv = f64::from(dev.state.battery_mv);
                    let (_, snr, _) = dev.link.sample(&mut self.rng);
                    self.events.push(SimEvent {
                        dev_eui: dev.id.dev_eui,
                        at: time(at),
                        device: Some(fleet_device(dev)),
                        body: SimEventBody::Status {
                            battery_percent: ((mv - 3000.0) / 7.0).clamp(0.0, 100.0).round(),
                            margin: snr.round() as i32 + 10,
                        },
                    });
                }
            }
            What::Multicast(id) => self.multicast_tx(at, &id),
            What::Beacon => {
                self.schedule(at + class_b::BEACON_PERIOD_MS, What::Beacon);
                self.beacon(at);
            }
        }
    }

    /// Devices waiting in a class B session hear the beacon, each with its own loss draw.
    fn beacon(&mut self, at: i64) {
        if !self
            .net
            .groups
            .values()
            .any(|g| g.class_b_periodicity.is_some())
        {
            return;
        }
        for i in 0..self.devices.len() {
            if !self.devices[i].wants_beacon(at)
                || self.rng.gen::<f64>() < self.setups[i].multicast_loss
            {
                continue;
            }
            self.devices[i].beacon(at);
            self.dirty.insert(i);
        }
    }

    /// Device `i` transmits; if a gateway hears it, the network answers in RX1 with the first
    /// queued downlink.
    fn uplink(&mut self, i: usize, at: i64) {
        let st = &self.devices[i].state;
        let before = (st.outbox.len(), st.next_clock_sync_ms);
        let (f_port, data) = self.devices[i].next_uplink(at, &mut self.rng);
        let st = &self.devices[i].state;
        // Telemetry changes nothing worth a write (the frame counter may start over after a
        // restart); an answer leaving the outbox or a time request does.
        if (st.outbox.len(), st.next_clock_sync_ms) != before {
            self.dirty.insert(i);
        }
        if self.rng.gen::<f64>() < self.setups[i].loss {
            return;
        }
        let dev = &self.devices[i];
        let (rssi, snr, gateways) = dev.link.sample(&mut self.rng);
        let frequency = self.uplink_freqs[self.rng.gen_range(0..self.uplink_freqs.len())];
        let object = if f_port == 1 {
            telemetry_object(&data)
        } else {
            None
        };
        self.events.push(SimEvent {
            dev_eui: dev.id.dev_eui,
            at: time(at),
            device: Some(fleet_device(dev)),
            body: SimEventBody::Up(SimUplink {
                f_cnt: dev.state.f_cnt_up,
                f_port,
                dr: dev.link.dr(),
                frequency,
                rssi,
                snr,
                gateway_count: gateways,
                data,
                object,
            }),
        });
        let eui = dev.id.dev_eui;
        let Some(item) = self
            .net
            .queues
            .get_mut(&eui)
            .and_then(|q| q.pop_front_if(|item| item.not_before_ms <= at))
        else {
            return;
        };
        self.net_dirty = true;
        let more = self.net.queues.get(&eui).is_some_and(|q| !q.is_empty());
        let tx = at + RX1_DELAY_MS;
        self.events.push(SimEvent {
            dev_eui: eui,
            at: time(tx),
            device: None,
            body: SimEventBody::TxAck {
                queue_item_id: item.id.clone(),
            },
        });
        if self.rng.gen::<f64>() >= self.setups[i].loss {
            let ctx = Ctx {
                region: self.region.as_ref(),
                status_port: self.status_port,
                reboot_delay_ms: self.reboot_delay_ms,
                slot_size: self.setups[i].slot_size,
                stack: self.setups[i].stack,
                limits: self.setups[i].limits,
            };
            let effects =
                self.devices[i].on_unicast(&ctx, tx, item.f_port, &item.data, &mut self.rng);
            self.apply(i, tx, effects);
        }
        if more {
            self.schedule(tx + FPENDING_UPLINK_MS, What::Wake(i));
        }
    }

    fn apply(&mut self, i: usize, now: i64, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Wake { delay_ms } => {
                    self.dirty.insert(i);
                    self.schedule(now + delay_ms, What::Wake(i));
                }
                Effect::Reboot { at_ms } => {
                    self.dirty.insert(i);
                    self.schedule(at_ms, What::Reboot(i));
                }
                Effect::Fragment { index, n, data } => {
                    let frame = match self.current_frame {
                        Some(id) => id,
                        None => {
                            let id = self.next_frame;
                            self.next_frame = self.next_frame.wrapping_add(1);
                            self.log.push(LogOp::Frame {
                                id,
                                data: data.into(),
                            });
                            // A multicast frame is logged once for all its receivers.
                            if self.in_multicast {
                                self.current_frame = Some(id);
                            }
                            id
                        }
                    };
                    self.log.push(LogOp::Received {
                        dev_eui: self.devices[i].id.dev_eui,
                        index,
                        n,
                        frame,
                    });
                }
                Effect::FragSessionReset { index } => {
                    self.dirty.insert(i);
                    self.log.push(LogOp::Reset {
                        dev_eui: self.devices[i].id.dev_eui,
                        index,
                    });
                }
            }
        }
    }

    /// Sends the group's next frame to every member that listens, each with its own loss draw.
    fn multicast_tx(&mut self, at: i64, id: &str) {
        let Some(g) = self.net.groups.get_mut(id) else {
            return;
        };
        if let Some(not_before) = g.queue.front().map(|f| f.not_before_ms).filter(|&t| t > at) {
            self.schedule(not_before, What::Multicast(id.to_string()));
            return;
        }
        // A class B group is heard only in its ping slots, so the network sends in them.
        if let Some(p) = g.class_b_periodicity {
            let slot = class_b::next_ping_slot(at, g.mc_addr, p);
            if slot != at {
                self.schedule(slot, What::Multicast(id.to_string()));
                return;
            }
        }
        let Some(McFrame {
            f_cnt,
            f_port,
            data,
            ..
        }) = g.queue.pop_front()
        else {
            return;
        };
        self.net_dirty = true;
        let airtime =
            lorafleet_engine::airtime::airtime_ms(self.region.as_ref(), g.dr, data.len(), false);
        // Class B: the next frame waits for the next ping slot after this one (above).
        let spacing = (airtime.ceil() as i64).max(1);
        g.free_at_ms = at + spacing;
        let more = !g.queue.is_empty();
        let spec = g.spec();
        let members: Vec<usize> = g
            .members
            .iter()
            .filter_map(|e| self.index.get(e).copied())
            .collect();
        self.in_multicast = true;
        self.current_frame = None;
        for i in members {
            let Some(local) = self.devices[i].listening_group(at, &spec, f_cnt) else {
                continue;
            };
            if self.rng.gen::<f64>() < self.setups[i].multicast_loss {
                continue;
            }
            let ctx = Ctx {
                region: self.region.as_ref(),
                status_port: self.status_port,
                reboot_delay_ms: self.reboot_delay_ms,
                slot_size: self.setups[i].slot_size,
                stack: self.setups[i].stack,
                limits: self.setups[i].limits,
            };
            let effects =
                self.devices[i].on_multicast(&ctx, at, local, f_port, &data, &mut self.rng);
            self.apply(i, at, effects);
        }
        self.in_multicast = false;
        self.current_frame = None;
        if more {
            self.schedule(at + spacing, What::Multicast(id.to_string()));
        }
    }

    pub fn enqueue(
        &mut self,
        dev_eui: DevEui,
        f_port: u8,
        data: &[u8],
        now_ms: i64,
    ) -> Result<String, SimError> {
        if !self.index.contains_key(&dev_eui) {
            return Err(SimError::UnknownDevice(dev_eui));
        }
        let id = format!("sim-{:016x}", self.rng.gen::<u64>());
        self.net
            .queues
            .entry(dev_eui)
            .or_default()
            .push_back(Queued {
                id: id.clone(),
                not_before_ms: now_ms,
                f_port,
                data: data.to_vec(),
            });
        self.net_dirty = true;
        self.net_requested = true;
        Ok(id)
    }

    pub fn list(&self) -> Vec<FleetDevice> {
        self.devices.iter().map(fleet_device).collect()
    }

    pub fn create_group(&mut self, g: &GroupSpec) -> String {
        let id = format!("sim-mc-{:08x}", self.rng.gen::<u32>());
        self.net.groups.insert(
            id.clone(),
            NetGroup {
                name: g.name.clone(),
                mc_addr: g.mc_addr,
                mc_nwk_s_key: g.mc_nwk_s_key,
                mc_app_s_key: g.mc_app_s_key,
                class_b_periodicity: match g.class {
                    MulticastClass::B {
                        ping_slot_periodicity,
                    } => Some(ping_slot_periodicity),
                    MulticastClass::C => None,
                },
                dr: g.dr,
                frequency: g.frequency,
                next_f_cnt: g.f_cnt,
                members: BTreeSet::new(),
                queue: VecDeque::new(),
                free_at_ms: 0,
            },
        );
        self.net_dirty = true;
        self.net_requested = true;
        id
    }

    fn group_mut(&mut self, id: &str) -> Result<&mut NetGroup, SimError> {
        self.net
            .groups
            .get_mut(id)
            .ok_or_else(|| SimError::NoGroup(id.to_string()))
    }

    pub fn add_member(&mut self, id: &str, dev_eui: DevEui) -> Result<(), SimError> {
        if !self.index.contains_key(&dev_eui) {
            return Err(SimError::UnknownDevice(dev_eui));
        }
        self.group_mut(id)?.members.insert(dev_eui);
        self.net_dirty = true;
        self.net_requested = true;
        Ok(())
    }

    pub fn enqueue_multicast(
        &mut self,
        id: &str,
        f_port: u8,
        data: &[u8],
        now_ms: i64,
    ) -> Result<u32, SimError> {
        let g = self.group_mut(id)?;
        let f_cnt = g.next_f_cnt;
        g.next_f_cnt = g.next_f_cnt.wrapping_add(1);
        let idle = g.queue.is_empty();
        let frame = McFrame {
            not_before_ms: now_ms,
            f_cnt,
            f_port,
            data: data.to_vec(),
        };
        g.queue.push_back(frame.clone());
        let start = g.free_at_ms.max(now_ms);
        self.queued_multicast.push((id.to_string(), frame));
        self.net_dirty = true;
        if idle {
            self.schedule(start, What::Multicast(id.to_string()));
        }
        Ok(f_cnt)
    }

    pub fn multicast_queue_len(&self, id: &str) -> Result<usize, SimError> {
        self.net
            .groups
            .get(id)
            .map(|g| g.queue.len())
            .ok_or_else(|| SimError::NoGroup(id.to_string()))
    }

    pub fn delete_group(&mut self, id: &str) -> Result<(), SimError> {
        self.net
            .groups
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| SimError::NoGroup(id.to_string()))?;
        self.net_dirty = true;
        self.net_requested = true;
        Ok(())
    }
}

fn fleet_device(dev: &SimDevice) -> FleetDevice {
    FleetDevice {
        dev_eui: dev.id.dev_eui,
        name: dev.id.name.clone(),
        model: dev.id.model.name,
        dev_addr: dev.id.dev_addr,
    }
}

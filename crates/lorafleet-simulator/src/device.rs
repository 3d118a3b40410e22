//! One virtual device: the device side of Version & Status, TS003, TS005 and TS004, as a state
//! machine without I/O. The world (`world.rs`) decides when frames reach it and carries its
//! answers back to the network.

use std::collections::VecDeque;

use lorafleet_codec::fragmentation::{FragmentDecoder, Progress};
use lorafleet_codec::time::unix_to_gps;
use lorafleet_codec::version_status::{
    self, Answer, HeapAvailable, Request, StoredLayout, StoredSlot, VersioningType,
};
use lrwn::applayer::{clocksync, fragmentation, multicastsetup};
use lrwn::region::Region;
use lrwn::DevAddr;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod v2;

use super::class_b;
use super::radio::{self, Link};
use super::stacks::{FragLimits, Stack};
use super::world::GroupSpec;
use lorafleet_codec::eui::DevEui;
use lorafleet_engine::MulticastClass;
use lorafleet_engine::{keys, package, ports};

/// Slots every virtual device has; slot 0 holds the factory image.
pub const NB_SLOTS: usize = 3;
/// Multicast groups and fragmentation sessions a device can hold at once (the packages' maximum).
const MAX_GROUPS: usize = 4;
/// How often a synchronised device asks for the time again.
const RESYNC_MS: i64 = 24 * 3600 * 1000;
/// How long an unsynchronised device waits before asking again (it cannot join a multicast
/// session on time until it knows the time).
const UNSYNCED_RETRY_MS: i64 = 2 * 60 * 1000;

/// A kind of device in the fleet: how it numbers its firmware and what it reports.
#[derive(Debug)]
pub struct Model {
    pub name: &'static str,
    pub versioning: VersioningType,
    /// The version of the factory image.
    pub factory_version: u32,
    /// The version of the demo image generated on first start (newer than the factory one).
    pub demo_version: u32,
    pub heap: u32,
    /// The Mbed update client always sends every slot; the specification only flagged ones.
    pub stored_layout_device: bool,
    pub device_class_uuid: [u8; 16],
}

/// Every virtual device reports this manufacturer.
pub const MANUFACTURER: &str = "lorafleet-sim";
/// Manufacturer UUID written into demo images.
pub const MANUFACTURER_UUID: [u8; 16] = *b"lorafleet-sim\0\0\0";

/// The fleet: three sensors (Major.Minor.Patch versions) for every tracker (GPS-time versions).
pub static MODELS: [Model; 2] = [
    Model {
        name: "sensor",
        versioning: VersioningType::MajorMinorPatch,
        // 1.2.0 and 1.3.0, as RFU<<24 | major<<16 | minor<<8 | patch.
        factory_version: 0x0001_0200,
        demo_version: 0x0001_0300,
        heap: 48 * 1024,
        stored_layout_device: false,
        device_class_uuid: *b"sim-sensor-class",
    },
    Model {
        name: "tracker",
        versioning: VersioningType::GpsSeconds,
        // 2025-01-15T00:00:00Z and 2026-01-15T00:00:00Z in GPS seconds.
        factory_version: 1_420_934_418,
        demo_version: 1_452_470_418,
        heap: 24 * 1024,
        stored_layout_device: true,
        device_class_uuid: *b"sim-tracker-clas",
    },
];

/// What never changes about a device: derived from its number alone, so every run (and every
/// test) sees the same fleet.
#[derive(Debug, Clone)]
pub struct Identity {
    pub dev_eui: DevEui,
    pub name: String,
    pub model: &'static Model,
    pub gen_app_key: [u8; 16],
    pub dev_addr: [u8; 4],
}

impl Identity {
    /// Device number `n` (0-based): EUI 4c4653494d (ASCII "LFSIM") followed by n + 1.
    pub fn nth(n: u32) -> Identity {
        let k = n + 1;
        let [_, a, b, c] = k.to_be_bytes();
        let dev_eui = DevEui([0x4c, 0x46, 0x53, 0x49, 0x4d, a, b, c]);
        let model = if k.is_multiple_of(4) {
            &MODELS[1]
        } else {
            &MODELS[0]
        };
        let digest = Sha256::new()
            .chain_update(b"lorafleet simulated GenAppKey ")
            .chain_update(dev_eui.0)
            .finalize();
        let mut gen_app_key = [0u8; 16];
        gen_app_key.copy_from_slice(&digest[..16]);
        Identity {
            dev_eui,
            name: format!("sim-{}-{k:02}", model.name),
            model,
            gen_app_key,
            dev_addr: [0x26, a, b, c],
        }
    }
}

/// A multicast group as the device stores it after McGroupSetupReq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McGroup {
    /// Most significant byte first.
    pub mc_addr: [u8; 4],
    pub mc_key: [u8; 16],
    /// Session keys derived from `mc_key`; a frame whose keys differ fails the MIC check.
    pub mc_app_s_key: [u8; 16],
    pub mc_nwk_s_key: [u8; 16],
    pub min_f_cnt: u32,
    pub max_f_cnt: u32,
    pub session: Option<McSession>,
}

/// A class C (or B) window opened by McClassCSessionReq (McClassBSessionReq).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct McSession {
    /// None for class C.
    pub ping_slot_periodicity: Option<u8>,
    /// GPS seconds, by the device's own clock.
    pub start_gps: u32,
    pub timeout_exp: u8,
    pub frequency: u32,
    pub dr: u8,
}

/// A fragmentation session after FragSessionSetupReq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragSession {
    pub mc_group_mask: u8,
    pub nb_frag: u16,
    pub frag_size: u8,
    pub padding: u8,
    pub descriptor: [u8; 4],
    pub block_ack_delay: u8,
    /// Fragments accepted.
    pub received: u32,
    /// The image was rebuilt; the record stays (in flash) so status requests still get an answer.
    pub done: bool,
    /// N of the last fragment the decoder was fed, dropped ones too (LoRaMac-node's
    /// NbFragReceived); it stops growing once the image is rebuilt.
    #[serde(default)]
    pub last_n: u16,
    /// Data fragments (N <= NbFrag) accepted, for LoRaMac-node's lost count.
    #[serde(default)]
    pub data_received: u32,
    /// More data fragments were lost than the decoder's matrix holds (`max_parity`): the
    /// session ended without the image (LoRaMac-node's MatrixError, v2's memory error).
    #[serde(default)]
    pub matrix_error: bool,
    /// TS004 v2: the session's SessionCnt and the data block's MIC from FragSessionSetupReq
    /// (None: a v1 session).
    #[serde(default)]
    pub v2: Option<(u16, [u8; 4])>,
    /// TS004 v2: the rebuilt block's MIC did not match.
    #[serde(default)]
    pub mic_error: bool,
}

/// Everything a device remembers across a restart of lorafleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceState {
    pub running_slot: u8,
    /// The version stored in each slot.
    pub slots: [Option<u32>; NB_SLOTS],
    pub booted_at_ms: i64,
    /// The device's clock minus the network's.
    pub clock_offset_ms: i64,
    pub clock_synced: bool,
    pub next_clock_sync_ms: i64,
    pub time_token: u8,
    pub f_cnt_up: u32,
    pub mc_groups: [Option<McGroup>; MAX_GROUPS],
    pub frag_sessions: [Option<FragSession>; MAX_GROUPS],
    /// A complete image waits for the reboot that runs it.
    pub reboot: Option<PendingReboot>,
    /// Answers waiting for the next uplink: (FPort, payload).
    pub outbox: VecDeque<(u8, Vec<u8>)>,
    pub battery_mv: u16,
    /// Why the last complete image was not installed.
    pub last_error: Option<String>,
    /// When the device last heard a class B beacon (it keeps its ping slots a while after).
    #[serde(default)]
    pub beacon_at_ms: Option<i64>,
    /// Stacks that reboot only when told to: the slot holding a rebuilt, valid image.
    #[serde(default)]
    pub upgrade_image: Option<u8>,
    /// TS004 v2: the last SessionCnt accepted per FragIndex (LBM keeps it in RAM only).
    #[serde(default)]
    pub last_session_cnt: [Option<u16>; MAX_GROUPS],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReboot {
    pub at_ms: i64,
    pub slot: u8,
}

/// What handling a frame asks of the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send the outbox after this many milliseconds.
    Wake { delay_ms: i64 },
    /// Reboot at this time and run the pending image.
    Reboot { at_ms: i64 },
    /// A fragment was accepted (the world keeps a log so a restart can rebuild the decoder).
    Fragment { index: u8, n: u16, data: Vec<u8> },
    /// A fragmentation session was set up or ended; its fragment log starts over.
    FragSessionReset { index: u8 },
}

/// What the device's surroundings decide about it.
pub struct Ctx<'a> {
    pub region: &'a dyn Region,
    pub status_port: u8,
    pub reboot_delay_ms: i64,
    pub slot_size: u32,
    /// The device's implementation: which packages it answers and how.
    pub stack: Stack,
    /// What its fragment decoder holds (`None`: only the slot bounds it).
    pub limits: Option<FragLimits>,
}

/// A virtual device: identity, remembered state, and the fragment decoders in RAM.
pub struct SimDevice {
    pub id: Identity,
    pub state: DeviceState,
    pub link: Link,
    decoders: [Option<FragmentDecoder>; MAX_GROUPS],
}

fn answer_delay(rng: &mut impl Rng) -> i64 {
    rng.gen_range(1_000..4_000)
}

impl SimDevice {
    /// A device fresh from the factory: slot 0 holds the factory image, the clock is off by up
    /// to a minute and a half, and nothing is set up.
    pub fn new(id: Identity, now_ms: i64, rng: &mut impl Rng) -> SimDevice {
        let state = DeviceState {
            running_slot: 0,
            slots: [Some(id.model.factory_version), None, None],
            booted_at_ms: now_ms - rng.gen_range(0..30 * 24 * 3600 * 1000),
            clock_offset_ms: rng.gen_range(-90_000..90_000),
            clock_synced: false,
            next_clock_sync_ms: now_ms,
            time_token: 0,
            f_cnt_up: 0,
            mc_groups: Default::default(),
            frag_sessions: Default::default(),
            reboot: None,
            outbox: VecDeque::new(),
            battery_mv: rng.gen_range(3300..3650),
            last_error: None,
            beacon_at_ms: None,
            upgrade_image: None,
            last_session_cnt: Default::default(),
        };
        SimDevice::restore(id, state, rng)
    }

    /// A device whose state was saved; decoders are rebuilt by replaying logged fragments.
    pub fn restore(id: Identity, state: DeviceState, rng: &mut impl Rng) -> SimDevice {
        // The position follows from the EUI so a device keeps its signal figures across runs.
        let mut seeded: rand::rngs::StdRng =
            rand::SeedableRng::seed_from_u64(u64::from_be_bytes(id.dev_eui.0));
        let link = Link::random(&mut seeded);
        let _ = rng;
        let mut dev = SimDevice {
            id,
            state,
            link,
            decoders: Default::default(),
        };
        for i in 0..MAX_GROUPS {
            if let Some(s) = dev.state.frag_sessions[i].as_ref().filter(|s| !s.done) {
                dev.decoders[i] = FragmentDecoder::new(
                    usize::from(s.nb_frag),
                    usize::from(s.frag_size),
                    usize::from(s.padding),
                )
                .ok()
                .map(|d| d.with_matrix(session_matrix(s)));
            }
        }
        dev.state.frag_sessions.iter_mut().flatten().for_each(|s| {
            if !s.done {
                s.received = 0;
                s.last_n = 0;
                s.data_received = 0;
            }
        });
        dev
    }

    /// Feeds a logged fragment back after a restart.
    pub fn replay_fragment(&mut self, index: u8, n: u16, data: &[u8], ctx: &Ctx, now_ms: i64) {
        let _ = self.push_fragment(ctx, now_ms, index, n, data);
    }

    /// A fragmentation session's progress: (fragments accepted, rank of the decoder).
    pub fn session_progress(&self, index: u8) -> Option<(u32, usize)> {
        let s = self.state.frag_sessions.get(usize::from(index))?.as_ref()?;
        let rank = self.decoders[usize::from(index)]
            .as_ref()
            .map_or(if s.done { usize::from(s.nb_frag) } else { 0 }, |d| {
                d.rank()
            });
        Some((s.received, rank))
    }

    pub fn running_version(&self) -> u32 {
        self.state.slots[usize::from(self.state.running_slot)].unwrap_or(0)
    }

    pub fn uptime_s(&self, now_ms: i64) -> u32 {
        u32::try_from((now_ms - self.state.booted_at_ms).max(0) / 1000).unwrap_or(u32::MAX)
    }

    pub(crate) fn device_gps(&self, now_ms: i64) -> u32 {
        unix_to_gps((now_ms + self.state.clock_offset_ms).div_euclid(1000))
    }

    /// The payload of the next uplink: a waiting answer, a time request when one is due, or
    /// telemetry.
    pub fn next_uplink(&mut self, now_ms: i64, rng: &mut impl Rng) -> (u8, Vec<u8>) {
        self.state.f_cnt_up = self.state.f_cnt_up.wrapping_add(1);
        if let Some(next) = self.state.outbox.pop_front() {
            return next;
        }
        if now_ms >= self.state.next_clock_sync_ms {
            return (ports::CLOCK_SYNC, self.app_time_req(now_ms));
        }
        (1, self.telemetry(now_ms, rng))
    }

    fn app_time_req(&mut self, now_ms: i64) -> Vec<u8> {
        self.state.next_clock_sync_ms = now_ms
            + if self.state.clock_synced {
                RESYNC_MS
            } else {
                UNSYNCED_RETRY_MS
            };
        let req = clocksync::v1::Payload::AppTimeReq(clocksync::v1::AppTimeReqPayload {
            device_time: self.device_gps(now_ms),
            param: clocksync::v1::AppTimeReqPayloadParam {
                token_req: self.state.time_token,
                ans_required: !self.state.clock_synced,
            },
        });
        req.to_vec().unwrap_or_default()
    }

    /// Temperature (centi-degrees, i16), relative humidity (%, u8), battery (mV, u16), all
    /// little-endian; [`telemetry_object`] is what a ChirpStack codec would make of it.
    fn telemetry(&mut self, now_ms: i64, rng: &mut impl Rng) -> Vec<u8> {
        let day = (now_ms.rem_euclid(86_400_000) as f64) / 86_400_000.0;
        let base = f64::from(self.id.dev_eui.0[7] % 7);
        let t = 14.0
            + base
            + 6.0 * (std::f64::consts::TAU * (day - 0.375)).sin()
            + rng.gen_range(-0.4..0.4);
        let rh = (55.0 - 1.5 * (t - 18.0) + rng.gen_range(-3.0..3.0)).clamp(5.0, 99.0);
        if rng.gen_ratio(1, 200) {
            self.state.battery_mv = self.state.battery_mv.saturating_sub(1);
        }
        let mut out = ((t * 100.0).round() as i16).to_le_bytes().to_vec();
        out.push(rh.round() as u8);
        out.extend_from_slice(&self.state.battery_mv.to_le_bytes());
        out
    }

    /// Handles a unicast downlink (received in a class A window).
    pub fn on_unicast(
        &mut self,
        ctx: &Ctx,
        now_ms: i64,
        f_port: u8,
        data: &[u8],
        rng: &mut impl Rng,
    ) -> Vec<Effect> {
        self.on_frame(ctx, now_ms, f_port, data, None, rng)
    }

    /// The local group a multicast frame is for, when the device listens to it right now on
    /// that channel and can check its MIC.
    pub fn listening_group(&self, now_ms: i64, group: &GroupSpec, f_cnt: u32) -> Option<u8> {
        let gps = self.device_gps(now_ms);
        self.state.mc_groups.iter().enumerate().find_map(|(i, g)| {
            let g = g.as_ref()?;
            let s = g.session.as_ref()?;
            let class_ok = match (group.class, s.ping_slot_periodicity) {
                (MulticastClass::C, None) => true,
                // Class B: only in the group's ping slots, and only while beacon-locked.
                (MulticastClass::B { .. }, Some(p)) => {
                    self.beacon_locked(now_ms) && class_b::is_ping_slot(now_ms, g.mc_addr, p)
                }
                _ => false,
            };
            let end =
                u64::from(s.start_gps) + class_b::session_s(s.timeout_exp, s.ping_slot_periodicity);
            let open = u64::from(gps) >= u64::from(s.start_gps) && u64::from(gps) < end;
            (g.mc_addr == group.mc_addr
                && g.mc_app_s_key == group.mc_app_s_key
                && g.mc_nwk_s_key == group.mc_nwk_s_key
                && (g.min_f_cnt..=g.max_f_cnt).contains(&f_cnt)
                && s.frequency == group.frequency
                && s.dr == group.dr
                && class_ok
                && open)
                .then_some(i as u8)
        })
    }

    fn beacon_locked(&self, now_ms: i64) -> bool {
        self.state
            .beacon_at_ms
            .is_some_and(|b| b <= now_ms && now_ms - b < class_b::BEACONLESS_MS)
    }

    /// Whether the device searches beacons now: it has a class B session not yet over.
    pub fn wants_beacon(&self, now_ms: i64) -> bool {
        let gps = u64::from(self.device_gps(now_ms));
        self.state.mc_groups.iter().flatten().any(|g| {
            g.session.as_ref().is_some_and(|s| {
                s.ping_slot_periodicity.is_some()
                    && gps
                        < u64::from(s.start_gps)
                            + class_b::session_s(s.timeout_exp, s.ping_slot_periodicity)
            })
        })
    }

    /// A beacon heard: its time keeps the ping slots.
    pub fn beacon(&mut self, now_ms: i64) {
        self.state.beacon_at_ms = Some(now_ms);
    }

    /// Handles a multicast frame the device listens to (see [`SimDevice::listening_group`]).
    pub fn on_multicast(
        &mut self,
        ctx: &Ctx,
        now_ms: i64,
        group: u8,
        f_port: u8,
        data: &[u8],
        rng: &mut impl Rng,
    ) -> Vec<Effect> {
        self.on_frame(ctx, now_ms, f_port, data, Some(group), rng)
    }

    fn on_frame(
        &mut self,
        ctx: &Ctx,
        now_ms: i64,
        f_port: u8,
        data: &[u8],
        group: Option<u8>,
        rng: &mut impl Rng,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let answer = if f_port == ctx.status_port {
            if !ctx.stack.speaks_version_status() {
                return effects;
            }
            self.version_status(ctx, now_ms, data)
        } else if f_port == lorafleet_codec::firmware_management::DEFAULT_F_PORT {
            // LoRa Basics Modem ignores Firmware Management in multicast windows.
            if !ctx.stack.speaks_firmware_management() || group.is_some() {
                return effects;
            }
            let (answer, fx) = self.firmware_management(now_ms, data);
            effects.extend(fx);
            answer
        } else {
            match (f_port, ctx.stack.package_version()) {
                (ports::CLOCK_SYNC, 2) => self.clock_sync_v2(now_ms, data),
                (ports::CLOCK_SYNC, _) => self.clock_sync(now_ms, data),
                (ports::MULTICAST_SETUP, 2) => self.multicast_setup_v2(ctx, now_ms, data),
                (ports::MULTICAST_SETUP, _) => self.multicast_setup(ctx, now_ms, data),
                (ports::FRAGMENTATION, 2) => {
                    return self.fragmentation_v2(ctx, now_ms, data, group, rng);
                }
                (ports::FRAGMENTATION, _) => {
                    return self.fragmentation(ctx, now_ms, data, group, rng);
                }
                _ => None,
            }
        };
        if let Some(a) = answer.filter(|a| !a.is_empty()) {
            self.state.outbox.push_back((f_port, a));
            effects.push(Effect::Wake {
                delay_ms: answer_delay(rng),
            });
        }
        effects
    }

    fn version_status(&mut self, ctx: &Ctx, now_ms: i64, data: &[u8]) -> Option<Vec<u8>> {
        let (requests, _error) = version_status::decode_requests(data);
        let mut out = Vec::new();
        for request in requests {
            let answer = match request {
                Request::PackageVersion => Answer::PackageVersion {
                    package_identifier: version_status::PACKAGE_IDENTIFIER,
                    package_version: version_status::PACKAGE_VERSION,
                    versioning_type: self.id.model.versioning,
                    nb_slots: NB_SLOTS as u8,
                },
                Request::VersionRunning => Answer::VersionRunning {
                    running_slot: self.state.running_slot,
                    version: self.running_version(),
                },
                Request::VersionStored { nb_slots } => {
                    let asked = if nb_slots == 0 {
                        NB_SLOTS
                    } else {
                        usize::from(nb_slots)
                    };
                    let mut flags = 0u8;
                    let mut slots = Vec::new();
                    for (i, v) in self.state.slots.iter().enumerate().take(asked) {
                        if let Some(version) = v {
                            flags |= 1 << i;
                            slots.push(StoredSlot {
                                slot: i as u8,
                                version: *version,
                            });
                        }
                    }
                    let a = Answer::VersionStored { flags, slots };
                    let layout = if self.id.model.stored_layout_device {
                        StoredLayout::Device {
                            nb_slots: asked.min(NB_SLOTS) as u8,
                        }
                    } else {
                        StoredLayout::Spec
                    };
                    if let Ok(bytes) = a.encode(layout) {
                        out.extend(bytes);
                    }
                    continue;
                }
                Request::SpaceStatus => Answer::SpaceStatus {
                    heap_available: HeapAvailable::Bytes(self.heap_available()),
                    slot_size: ctx.slot_size,
                },
                Request::Uptime => Answer::Uptime {
                    seconds: self.uptime_s(now_ms),
                },
                Request::EraseSlot { slot } => {
                    let slot = usize::from(slot);
                    if slot != usize::from(self.state.running_slot) && slot < NB_SLOTS {
                        self.state.slots[slot] = None;
                    }
                    continue;
                }
                Request::DeviceDescription {
                    manufacturer_id,
                    device_id,
                } => Answer::DeviceDescription {
                    manufacturer_id: manufacturer_id.then(|| MANUFACTURER.to_string()),
                    device_id: device_id.then(|| self.id.name.clone()),
                },
            };
            if let Ok(bytes) = answer.to_vec() {
                out.extend(bytes);
            }
        }
        Some(out)
    }

    /// Free heap: the model's, minus what running fragment decoders hold.
    fn heap_available(&self) -> u32 {
        let used: usize = self
            .decoders
            .iter()
            .flatten()
            .map(FragmentDecoder::memory_bytes)
            .sum();
        let left = (self.id.model.heap as usize).saturating_sub(used / 16);
        u32::try_from(left).unwrap_or(u32::MAX).max(1)
    }

    fn clock_sync(&mut self, now_ms: i64, data: &[u8]) -> Option<Vec<u8>> {
        use clocksync::v1::*;
        match Payload::from_slice(false, data).ok()? {
            Payload::AppTimeAns(a) => {
                if a.param.token_ans == self.state.time_token {
                    self.state.clock_offset_ms += i64::from(a.time_correction) * 1000;
                    self.state.clock_synced = true;
                    self.state.time_token = (self.state.time_token + 1) & 0x0f;
                    self.state.next_clock_sync_ms = now_ms + RESYNC_MS;
                }
                None
            }
            Payload::PackageVersionReq => Payload::PackageVersionAns(PackageVersionAnsPayload {
                package_identifier: package::CLOCK_SYNC,
                package_version: 1,
            })
            .to_vec()
            .ok(),
            Payload::ForceDeviceResyncReq(_) => Some(self.app_time_req(now_ms)),
            Payload::DeviceAppTimePeropdicityReq(_) => {
                Payload::DeviceAppTimePeropdicityAns(DeviceAppTimePeriodicityAnsPayload {
                    status: DeviceAppTimePeriodicityAnsPayloadStatus {
                        not_supported: true,
                    },
                    time: self.device_gps(now_ms),
                })
                .to_vec()
                .ok()
            }
            _ => None,
        }
    }

    fn multicast_setup(&mut self, ctx: &Ctx, now_ms: i64, data: &[u8]) -> Option<Vec<u8>> {
        use multicastsetup::v1::*;
        let answer = match Payload::from_slice(false, data).ok()? {
            Payload::PackageVersionReq => Payload::PackageVersionAns(PackageVersionAnsPayload {
                package_identifier: package::MULTICAST_SETUP,
                package_version: 1,
            }),
            Payload::McGroupStatusReq(r) => {
                Payload::McGroupStatusAns(mc_group_status(&self.state.mc_groups, &r))
            }
            Payload::McGroupSetupReq(r) => Payload::McGroupSetupAns(self.mc_group_setup(&r)),
            Payload::McGroupDeleteReq(r) => Payload::McGroupDeleteAns(self.mc_group_delete(&r)),
            Payload::McClassCSessionReq(r) => {
                Payload::McClassCSessionAns(self.mc_class_c_session(ctx, now_ms, &r))
            }
            Payload::McClassBSessionReq(r) => {
                Payload::McClassBSessionAns(self.mc_class_b_session(ctx, now_ms, &r))
            }
            _ => return None,
        };
        answer.to_vec().ok()
    }

    /// McGroupSetupReq: the device derives the keys on its own side, from its own GenAppKey.
    fn mc_group_setup(
        &mut self,
        r: &multicastsetup::v1::McGroupSetupReqPayload,
    ) -> multicastsetup::v1::McGroupSetupAnsPayload {
        use multicastsetup::v1::*;
        let id = usize::from(r.mc_group_id_header.mc_group_id);
        let root = keys::mc_root_key(keys::RootKey::GenAppKey(self.id.gen_app_key));
        let mc_key = keys::received_mc_key(keys::mc_ke_key(root), r.mc_key_encrypted);
        let mc_addr = r.mc_addr.to_be_bytes();
        let (mc_app_s_key, mc_nwk_s_key) = keys::session_keys(mc_key, mc_addr);
        self.state.mc_groups[id] = Some(McGroup {
            mc_addr,
            mc_key,
            mc_app_s_key,
            mc_nwk_s_key,
            min_f_cnt: r.min_mc_f_count,
            max_f_cnt: r.max_mc_f_count,
            session: None,
        });
        McGroupSetupAnsPayload {
            mc_group_id_header: McGroupSetupAnsPayloadMcGroupIdHeader {
                mc_group_id: id as u8,
                id_error: false,
            },
        }
    }

    fn mc_group_delete(
        &mut self,
        r: &multicastsetup::v1::McGroupDeleteReqPayload,
    ) -> multicastsetup::v1::McGroupDeleteAnsPayload {
        use multicastsetup::v1::*;
        let id = usize::from(r.mc_group_id_header.mc_group_id);
        let existed = self.state.mc_groups[id].take().is_some();
        McGroupDeleteAnsPayload {
            mc_group_id_header: McGroupDeleteAnsPayloadMcGroupIdHeader {
                mc_group_id: id as u8,
                mc_group_undefined: !existed,
            },
        }
    }

    fn mc_class_c_session(
        &mut self,
        ctx: &Ctx,
        now_ms: i64,
        r: &multicastsetup::v1::McClassCSessionReqPayload,
    ) -> multicastsetup::v1::McClassCSessionAnsPayload {
        use multicastsetup::v1::*;
        let id = r.mc_group_id_header.mc_group_id;
        let session = McSession {
            ping_slot_periodicity: None,
            start_gps: r.session_time,
            timeout_exp: r.session_time_out.time_out,
            frequency: r.dl_frequ,
            dr: r.dr,
        };
        let (status, tts) = self.open_session(ctx, now_ms, id, session);
        McClassCSessionAnsPayload {
            status_and_mc_group_id: McClassCSessionAnsPayloadStatusAnsMcGroupId {
                mc_group_id: id,
                dr_error: status.dr_error,
                freq_error: status.freq_error,
                mc_group_undefined: status.undefined,
            },
            time_to_start: tts,
        }
    }

    fn mc_class_b_session(
        &mut self,
        ctx: &Ctx,
        now_ms: i64,
        r: &multicastsetup::v1::McClassBSessionReqPayload,
    ) -> multicastsetup::v1::McClassBSessionAnsPayload {
        use multicastsetup::v1::*;
        let id = r.mc_group_id_header.mc_group_id;
        let session = McSession {
            ping_slot_periodicity: Some(r.time_out_periodicity.periodicity),
            start_gps: r.session_time,
            timeout_exp: r.time_out_periodicity.time_out,
            frequency: r.dl_frequ,
            dr: r.dr,
        };
        let (status, tts) = self.open_session(ctx, now_ms, id, session);
        McClassBSessionAnsPayload {
            status_and_mc_group_id: McClassBSessionAnsPayloadStatusAndMcGroupId {
                mc_group_id: id,
                dr_error: status.dr_error,
                freq_error: status.freq_error,
                mc_group_undefined: status.undefined,
            },
            time_to_start: tts,
        }
    }

    fn open_session(
        &mut self,
        ctx: &Ctx,
        now_ms: i64,
        id: u8,
        session: McSession,
    ) -> (SessionStatus, Option<u32>) {
        let status = SessionStatus {
            dr_error: !radio::downlink_dr_supported(ctx.region, session.dr),
            freq_error: !radio::frequency_supported(ctx.region, session.frequency),
            undefined: self.state.mc_groups[usize::from(id)].is_none(),
        };
        if status.dr_error || status.freq_error || status.undefined {
            return (status, None);
        }
        let now = i64::from(self.device_gps(now_ms));
        let time_to_start = (i64::from(session.start_gps) - now).clamp(0, (1 << 24) - 1);
        if let Some(g) = self.state.mc_groups[usize::from(id)].as_mut() {
            g.session = Some(session);
        }
        (status, u32::try_from(time_to_start).ok())
    }

    fn fragmentation(
        &mut self,
        ctx: &Ctx,
        now_ms: i64,
        data: &[u8],
        group: Option<u8>,
        rng: &mut impl Rng,
    ) -> Vec<Effect> {
        use fragmentation::v1::*;
        let Ok(payload) = Payload::from_slice(false, data) else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        let (answer, delay_ms) = match payload {
            Payload::DataFragment(f) => return self.data_fragment(ctx, now_ms, group, &f),
            Payload::PackageVersionReq => (
                Payload::PackageVersionAns(PackageVersionAnsPayload {
                    package_identifier: package::FRAGMENTATION,
                    package_version: 1,
                }),
                answer_delay(rng),
            ),
            Payload::FragSessionSetupReq(r) => (
                Payload::FragSessionSetupAns(self.frag_session_setup(ctx, &r, &mut effects)),
                answer_delay(rng),
            ),
            Payload::FragSessionDeleteReq(r) => (
                Payload::FragSessionDeleteAns(self.frag_session_delete(&r, &mut effects)),
                answer_delay(rng),
            ),
            Payload::FragSessionStatusReq(r) => match self.frag_session_status(ctx, &r, group, rng)
            {
                Some((ans, delay_ms)) => (Payload::FragSessionStatusAns(ans), delay_ms),
                None => return effects,
            },
            _ => return effects,
        };
        if let Ok(bytes) = answer.to_vec() {
            self.state.outbox.push_back((ports::FRAGMENTATION, bytes));
            effects.push(Effect::Wake { delay_ms });
        }
        effects
    }

    fn data_fragment(
        &mut self,
        ctx: &Ctx,
        now_ms: i64,
        group: Option<u8>,
        f: &fragmentation::v1::DataFragmentPayload,
    ) -> Vec<Effect> {
        let index = f.index_and_n.frag_index;
        let session = self.state.frag_sessions[usize::from(index)].as_ref();
        if !accepts_fragment_from(group, session) {
            return Vec::new();
        }
        self.push_fragment(ctx, now_ms, index, f.index_and_n.n, &f.data)
    }

    /// FragSessionSetupReq: accepted only if the image fits the slot and the decoder can be
    /// built; an accepted session starts with an empty fragment log.
    fn frag_session_setup(
        &mut self,
        ctx: &Ctx,
        r: &fragmentation::v1::FragSessionSetupReqPayload,
        effects: &mut Vec<Effect>,
    ) -> fragmentation::v1::FragSessionSetupAnsPayload {
        let index = r.frag_session.frag_index;
        let mut ans = fragmentation::v1::FragSessionSetupAnsPayload {
            encoding_unsupported: r.control.fragmentation_matrix != 0,
            not_enough_memory: false,
            frag_session_index_not_supported: false,
            wrong_descriptor: false,
            frag_index: index,
        };
        let image = u64::from(r.nb_frag) * u64::from(r.frag_size);
        if image.saturating_sub(u64::from(r.padding)) > u64::from(ctx.slot_size) {
            ans.not_enough_memory = true;
        }
        if ctx
            .limits
            .is_some_and(|l| exceeds(&l, r.nb_frag, r.frag_size))
        {
            ans.not_enough_memory = true;
        }
        let decoder = FragmentDecoder::new(
            usize::from(r.nb_frag),
            usize::from(r.frag_size),
            usize::from(r.padding),
        );
        if decoder.is_err() {
            ans.encoding_unsupported = true;
        }
        let ok = !(ans.encoding_unsupported || ans.not_enough_memory);
        if let (true, Ok(decoder)) = (ok, decoder) {
            self.state.frag_sessions[usize::from(index)] = Some(FragSession {
                mc_group_mask: group_mask_bits(&r.frag_session.mc_group_bit_mask),
                nb_frag: r.nb_frag,
                frag_size: r.frag_size,
                padding: r.padding,
                descriptor: r.descriptor,
                block_ack_delay: r.control.block_ack_delay,
                received: 0,
                done: false,
                last_n: 0,
                data_received: 0,
                matrix_error: false,
                v2: None,
                mic_error: false,
            });
            self.decoders[usize::from(index)] = Some(decoder);
            effects.push(Effect::FragSessionReset { index });
        }
        ans
    }

    fn frag_session_delete(
        &mut self,
        r: &fragmentation::v1::FragSessionDeleteReqPayload,
        effects: &mut Vec<Effect>,
    ) -> fragmentation::v1::FragSessionDeleteAnsPayload {
        let index = r.frag_index;
        let existed = self.state.frag_sessions[usize::from(index)]
            .take()
            .is_some();
        self.decoders[usize::from(index)] = None;
        effects.push(Effect::FragSessionReset { index });
        fragmentation::v1::FragSessionDeleteAnsPayload {
            frag_index: index,
            session_does_not_exist: !existed,
        }
    }

    /// FragSessionStatusReq: the answer and how long to wait before sending it, or None when
    /// the device stays silent (no such session, or only devices missing fragments were asked
    /// and this one misses none).
    fn frag_session_status(
        &self,
        ctx: &Ctx,
        r: &fragmentation::v1::FragSessionStatusReqPayload,
        group: Option<u8>,
        rng: &mut impl Rng,
    ) -> Option<(fragmentation::v1::FragSessionStatusAnsPayload, i64)> {
        use fragmentation::v1::*;
        let index = r.frag_index;
        let s = self.state.frag_sessions[usize::from(index)].as_ref()?;
        if ctx.stack.status_reading() == lorafleet_codec::frag_status::Reading::HighestN {
            let ans = highest_n_status(s, index, r.participants)?;
            return Some((ans, status_answer_delay(group, s.block_ack_delay, rng)));
        }
        let missing = match &self.decoders[usize::from(index)] {
            Some(d) => d.nb_fragments().saturating_sub(d.rank()),
            None if s.done => 0,
            None => usize::from(s.nb_frag),
        };
        if !r.participants && missing == 0 {
            return None;
        }
        let ans = FragSessionStatusAnsPayload {
            received_and_index: FragSessionStatusAnsPayloadReceivedAndIndex {
                nb_frag_received: s.received.min(0x3fff) as u16,
                frag_index: index,
            },
            missing_frag: missing.min(255) as u8,
            status: FragSessionStatusAnsPayloadStatus {
                not_enough_matrix_memory: s.matrix_error,
            },
        };
        Some((ans, status_answer_delay(group, s.block_ack_delay, rng)))
    }

    fn push_fragment(
        &mut self,
        ctx: &Ctx,
        now_ms: i64,
        index: u8,
        n: u16,
        data: &[u8],
    ) -> Vec<Effect> {
        let i = usize::from(index);
        if self.matrix_overflow(ctx, i, n) {
            return Vec::new();
        }
        let Some(decoder) = self.decoders[i].as_mut() else {
            return Vec::new();
        };
        if let Some(s) = self.state.frag_sessions[i].as_mut() {
            // Set even when the decoder then drops the fragment, as LoRaMac-node does.
            s.last_n = n;
        }
        let progress = match decoder.push(u32::from(n), data) {
            Ok(p) => p,
            Err(_) => return Vec::new(),
        };
        let mut effects = Vec::new();
        if !matches!(progress, Progress::Ignored { .. }) {
            if let Some(s) = self.state.frag_sessions[i].as_mut() {
                s.received += 1;
                if n <= s.nb_frag {
                    s.data_received += 1;
                }
            }
            effects.push(Effect::Fragment {
                index,
                n,
                data: data.to_vec(),
            });
        }
        if progress == Progress::Done {
            effects.extend(self.complete(ctx, now_ms, i));
        }
        effects
    }

    /// The first parity fragment finds more data fragments lost than the decoder's matrix
    /// holds (`max_parity`): the session ends there without the image, as LoRaMac-node's
    /// FragDecoderProcess does (MatrixError when FragNbLost > FRAG_MAX_REDUNDANCY).
    fn matrix_overflow(&mut self, ctx: &Ctx, i: usize, n: u16) -> bool {
        let (Some(limits), Some(s)) = (ctx.limits, self.state.frag_sessions[i].as_mut()) else {
            return false;
        };
        if s.done || s.matrix_error || n <= s.nb_frag || self.decoders[i].is_none() {
            return s.matrix_error;
        }
        let lost = u32::from(s.nb_frag).saturating_sub(s.data_received);
        if lost <= u32::from(limits.max_parity) {
            return false;
        }
        s.last_n = n;
        s.matrix_error = true;
        self.decoders[i] = None;
        self.state.last_error = Some(format!(
            "fragmentation session {i} failed: {lost} data fragments lost, more than the {} its decoder can rebuild (max_parity)",
            limits.max_parity
        ));
        true
    }

    /// A session's image is rebuilt: install it if its trailer parses, like the update client
    /// that checks the package before it swaps slots.
    fn complete(&mut self, ctx: &Ctx, now_ms: i64, i: usize) -> Vec<Effect> {
        let image = self.decoders[i].take().and_then(|d| d.image());
        if let Some(s) = self.state.frag_sessions[i].as_mut() {
            s.done = true;
        }
        let Some(image) = image else {
            return Vec::new();
        };
        if !self.v2_mic_ok(i, &image) {
            return Vec::new();
        }
        // The update client checks the package before it swaps slots; the simulation checks
        // what the firmware library does: a signed trailer of the right shape.
        match lorafleet_codec::firmware_trailer::detect(&image) {
            Ok(Some(trailer)) => {
                let slot = self.free_slot();
                self.state.slots[slot] = Some(trailer.version);
                if !ctx.stack.reboots_by_itself() {
                    // Runs it only when told to (Firmware Management).
                    self.state.upgrade_image = Some(slot as u8);
                    self.state.last_error = None;
                    return Vec::new();
                }
                let at_ms = now_ms + ctx.reboot_delay_ms;
                self.state.reboot = Some(PendingReboot {
                    at_ms,
                    slot: slot as u8,
                });
                self.state.last_error = None;
                vec![Effect::Reboot { at_ms }]
            }
            Ok(None) => {
                self.state.last_error =
                    Some("received image rejected: it has no signed trailer".into());
                Vec::new()
            }
            Err(e) => {
                self.state.last_error = Some(format!("received image rejected: {e}"));
                Vec::new()
            }
        }
    }

    /// The slot a new image goes to: an empty one, else the oldest that is not running.
    fn free_slot(&self) -> usize {
        let running = usize::from(self.state.running_slot);
        (0..NB_SLOTS)
            .filter(|&s| s != running)
            .min_by_key(|&s| self.state.slots[s].map_or((0, 0), |v| (1, v)))
            .unwrap_or((running + 1) % NB_SLOTS)
    }

    /// Reboots into the pending image (if any): multicast setup and unfinished sessions live in
    /// RAM and are gone; the clock is synchronised again.
    pub fn reboot(&mut self, now_ms: i64) {
        if let Some(r) = self.state.reboot.take() {
            self.state.running_slot = r.slot;
        }
        self.state.upgrade_image = None;
        // LBM keeps the last SessionCnt in RAM only.
        self.state.last_session_cnt = Default::default();
        self.state.booted_at_ms = now_ms;
        self.state.mc_groups = Default::default();
        for (s, d) in self
            .state
            .frag_sessions
            .iter_mut()
            .zip(self.decoders.iter_mut())
        {
            if s.as_ref().is_some_and(|s| !s.done) {
                *s = None;
            }
            *d = None;
        }
        self.state.clock_synced = false;
        self.state.next_clock_sync_ms = now_ms;
    }
}

struct SessionStatus {
    dr_error: bool,
    freq_error: bool,
    undefined: bool,
}

/// McGroupStatusReq: the asked-for groups that are set up, and how many are set up in all.
fn mc_group_status(
    groups: &[Option<McGroup>; MAX_GROUPS],
    r: &multicastsetup::v1::McGroupStatusReqPayload,
) -> multicastsetup::v1::McGroupStatusAnsPayload {
    use multicastsetup::v1::*;
    let mut mask = [false; 4];
    let mut items = Vec::new();
    for (i, asked) in r.cmd_mask.req_group_mask.iter().enumerate() {
        if let (true, Some(g)) = (*asked, &groups[i]) {
            mask[i] = true;
            items.push(McGroupStatusAnsPayloadItem {
                mc_group_id: i as u8,
                mc_addr: DevAddr::from_be_bytes(g.mc_addr),
            });
        }
    }
    let total = groups.iter().flatten().count() as u8;
    McGroupStatusAnsPayload {
        status: McGroupStatusAnsPayloadStatus {
            ans_group_mask: mask,
            nb_total_groups: total,
        },
        items,
    }
}

/// A fragment sent to a multicast group counts only for a session bound to that group;
/// unicast fragments, and fragments for no session, go on to the decoder (which has the
/// final word).
fn accepts_fragment_from(group: Option<u8>, session: Option<&FragSession>) -> bool {
    match (group, session) {
        (Some(g), Some(s)) => s.mc_group_mask & (1 << g) != 0,
        _ => true,
    }
}

/// McGroupBitMask as bits: group i is bit i.
fn group_mask_bits(mask: &[bool; 4]) -> u8 {
    mask.iter()
        .enumerate()
        .filter(|(_, on)| **on)
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

/// TS004: answers to a multicast status request are spread over a random delay so they do
/// not collide; every stack draws it from 0..2^(BlockAckDelay+4) s (LoRaMac-node:
/// `randr(0, 1000)` x 2^(BlockAckDelay+4) ms), which is what the engine's status wait assumes.
fn status_answer_delay(group: Option<u8>, block_ack_delay: u8, rng: &mut impl Rng) -> i64 {
    match group {
        Some(_) => rng.gen_range(0..=1000i64 << (block_ack_delay.min(7) + 4)),
        None => answer_delay(rng),
    }
}

/// LoRaMac-node's FragSessionStatusAns: NbFragReceived the last N seen, MissingFrag the data
/// fragments lost (a byte, modulo 256, as its 16-bit counter is truncated), and an answer
/// whenever any data fragment was lost, even once the image is rebuilt.
fn highest_n_status(
    s: &FragSession,
    index: u8,
    participants: bool,
) -> Option<fragmentation::v1::FragSessionStatusAnsPayload> {
    use fragmentation::v1::*;
    let seen_data = u32::from(s.last_n.min(s.nb_frag));
    let lost = seen_data.saturating_sub(s.data_received);
    if !participants && lost == 0 {
        return None;
    }
    Some(FragSessionStatusAnsPayload {
        received_and_index: FragSessionStatusAnsPayloadReceivedAndIndex {
            nb_frag_received: s.last_n.min(0x3fff),
            frag_index: index,
        },
        missing_frag: (lost % 256) as u8,
        status: FragSessionStatusAnsPayloadStatus {
            not_enough_matrix_memory: s.matrix_error,
        },
    })
}

/// Whether a session of `nb_frag` fragments of `frag_size` bytes is more than the decoder
/// holds: LoRaMac-node refuses NbFrag x FragSize above FRAG_MAX_NB x FRAG_MAX_SIZE, and its
/// buffers (FragNbMissingIndex[FRAG_MAX_NB], matrixDataTemp[FRAG_MAX_SIZE]) take no more of
/// either, so the simulated device refuses each as well.
fn exceeds(l: &FragLimits, nb_frag: u16, frag_size: u8) -> bool {
    nb_frag > l.max_fragments
        || frag_size > l.max_fragment_size
        || u32::from(nb_frag) * u32::from(frag_size)
            > u32::from(l.max_fragments) * u32::from(l.max_fragment_size)
}

/// The parity matrix of a session: v2's for a TS004 v2 session.
fn session_matrix(s: &FragSession) -> lorafleet_codec::fragmentation::Matrix {
    match s.v2 {
        Some(_) => lorafleet_codec::fragmentation::Matrix::V2,
        None => lorafleet_codec::fragmentation::Matrix::V1,
    }
}

/// What a ChirpStack payload codec would decode from a telemetry uplink.
pub fn telemetry_object(data: &[u8]) -> Option<serde_json::Value> {
    let [t0, t1, rh, b0, b1] = <[u8; 5]>::try_from(data).ok()?;
    Some(serde_json::json!({
        "temperature_c": f64::from(i16::from_le_bytes([t0, t1])) / 100.0,
        "humidity_pct": rh,
        "battery_mv": u16::from_le_bytes([b0, b1]),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lorafleet_codec::firmware_trailer::{self, PackageKind, SignedTrailer};
    use rand::SeedableRng;

    fn region() -> Box<dyn Region + Send + Sync> {
        lrwn::region::get(lrwn::region::CommonName::EU868, false, false)
    }

    fn ctx(region: &dyn Region, slot_size: u32) -> Ctx<'_> {
        Ctx {
            region,
            status_port: 111,
            reboot_delay_ms: 10_000,
            slot_size,
            stack: Stack::LorafleetDemo,
            limits: None,
        }
    }

    fn take_answer(d: &mut SimDevice) -> (u8, Vec<u8>) {
        d.state.outbox.pop_front().expect("an answer")
    }

    #[test]
    fn a_class_b_device_hears_its_group_only_in_its_ping_slots_once_beacon_locked() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // 2026-01-01T00:00:00Z.
        let t0 = 1_767_225_600_000;
        let mut d = SimDevice::new(Identity::nth(0), t0, &mut rng);
        d.state.clock_offset_ms = 0;
        let start_ms = class_b::next_beacon(t0);
        let addr = [1, 2, 3, 4];
        d.state.mc_groups[0] = Some(McGroup {
            mc_addr: addr,
            mc_key: [1; 16],
            mc_app_s_key: [2; 16],
            mc_nwk_s_key: [3; 16],
            min_f_cnt: 0,
            max_f_cnt: u32::MAX,
            session: Some(McSession {
                ping_slot_periodicity: Some(2),
                start_gps: unix_to_gps(start_ms / 1000),
                // Two beacon periods, 256 s.
                timeout_exp: 1,
                frequency: 869_525_000,
                dr: 3,
            }),
        });
        let spec = GroupSpec {
            name: "g".into(),
            mc_addr: addr,
            mc_nwk_s_key: [3; 16],
            mc_app_s_key: [2; 16],
            f_cnt: 0,
            class: MulticastClass::B {
                ping_slot_periodicity: 2,
            },
            dr: 3,
            frequency: 869_525_000,
        };
        let slot = class_b::next_ping_slot(start_ms, addr, 2);
        assert!(d.wants_beacon(start_ms));
        assert_eq!(
            d.listening_group(slot, &spec, 0),
            None,
            "no beacon heard yet"
        );
        d.beacon(start_ms);
        assert_eq!(d.listening_group(slot, &spec, 0), Some(0));
        assert_eq!(d.listening_group(slot + 1, &spec, 0), None, "between slots");
        // Still open 200 s in (a class B timeout counts beacon periods), closed after 256 s.
        let late = class_b::next_ping_slot(start_ms + 200_000, addr, 2);
        assert_eq!(d.listening_group(late, &spec, 0), Some(0));
        let after = class_b::next_ping_slot(start_ms + 256_000, addr, 2);
        assert_eq!(d.listening_group(after, &spec, 0), None);
        assert!(!d.wants_beacon(start_ms + 256_000));
    }

    #[test]
    fn identities_are_deterministic() {
        let a = Identity::nth(0);
        assert_eq!(a.dev_eui.to_string(), "4c4653494d000001");
        assert_eq!(a.name, "sim-sensor-01");
        assert_eq!(Identity::nth(3).name, "sim-tracker-04");
        assert_eq!(Identity::nth(0).gen_app_key, a.gen_app_key);
        assert_ne!(Identity::nth(1).gen_app_key, a.gen_app_key);
    }

    #[test]
    fn answers_version_and_status() {
        let r = region();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut d = SimDevice::new(Identity::nth(0), 0, &mut rng);
        let req = [
            Request::VersionRunning.to_vec().unwrap(),
            Request::SpaceStatus.to_vec().unwrap(),
        ]
        .concat();
        let fx = d.on_unicast(&ctx(r.as_ref(), 4096), 5000, 111, &req, &mut rng);
        assert!(matches!(fx[..], [Effect::Wake { .. }]));
        let (port, data) = take_answer(&mut d);
        assert_eq!(port, 111);
        let (answers, err) = version_status::decode_answers(&data);
        assert_eq!(err, None);
        assert_eq!(
            answers[0],
            Answer::VersionRunning {
                running_slot: 0,
                version: 0x0001_0200
            }
        );
        assert!(matches!(
            answers[1],
            Answer::SpaceStatus {
                slot_size: 4096,
                ..
            }
        ));
    }

    /// The TS005 conformance vector, from the device's side: it recovers McKey 0102..10.
    #[test]
    fn mc_group_setup_conformance_vector() {
        let r = region();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut id = Identity::nth(0);
        id.gen_app_key = hex::decode("0302030405060708090a0b0c0d0e0f10")
            .unwrap()
            .try_into()
            .unwrap();
        let mut d = SimDevice::new(id, 0, &mut rng);
        let req =
            hex::decode("02000403020115b6c1f8c91e71210588ef85ed1e638300000000ffff0000").unwrap();
        d.on_unicast(
            &ctx(r.as_ref(), 4096),
            0,
            ports::MULTICAST_SETUP,
            &req,
            &mut rng,
        );
        assert_eq!(
            take_answer(&mut d),
            (ports::MULTICAST_SETUP, vec![0x02, 0x00])
        );
        let g = d.state.mc_groups[0].as_ref().unwrap();
        assert_eq!(hex::encode(g.mc_key), "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(g.mc_addr, [1, 2, 3, 4]);
        assert_eq!((g.min_f_cnt, g.max_f_cnt), (0, 65535));
    }

    #[test]
    fn refuses_a_session_larger_than_its_slot() {
        let r = region();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut d = SimDevice::new(Identity::nth(0), 0, &mut rng);
        // 100 fragments of 50 bytes into a 4 KiB slot.
        let req = fragmentation::v1::Payload::FragSessionSetupReq(
            fragmentation::v1::FragSessionSetupReqPayload {
                frag_session: fragmentation::v1::FragSessionSetuReqPayloadFragSession {
                    mc_group_bit_mask: [true, false, false, false],
                    frag_index: 0,
                },
                nb_frag: 100,
                frag_size: 50,
                control: fragmentation::v1::FragSessionSetuReqPayloadControl {
                    block_ack_delay: 0,
                    fragmentation_matrix: 0,
                },
                padding: 0,
                descriptor: [0; 4],
            },
        )
        .to_vec()
        .unwrap();
        d.on_unicast(
            &ctx(r.as_ref(), 4096),
            0,
            ports::FRAGMENTATION,
            &req,
            &mut rng,
        );
        let (_, ans) = take_answer(&mut d);
        match fragmentation::v1::Payload::from_slice(true, &ans).unwrap() {
            fragmentation::v1::Payload::FragSessionSetupAns(a) => assert!(a.not_enough_memory),
            other => panic!("{other:?}"),
        }
        assert!(d.state.frag_sessions[0].is_none());
    }

    /// A whole update over unicast fragments with the first data fragments lost: parity
    /// fragments fill the gap, the device stores the image, reboots and runs the new version.
    #[test]
    fn rebuilds_an_image_and_runs_it_after_the_reboot() {
        let r = region();
        let c = ctx(r.as_ref(), 64 * 1024);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut d = SimDevice::new(Identity::nth(0), 0, &mut rng);
        let body: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let package = firmware_trailer::build(
            &body,
            &SignedTrailer {
                signature: super::super::demo::PLACEHOLDER_SIGNATURE.to_vec(),
                manufacturer_uuid: MANUFACTURER_UUID,
                device_class_uuid: MODELS[0].device_class_uuid,
                version: 0x0001_0300,
                kind: PackageKind::Full,
                old_firmware_size: 0,
            },
        );
        let frag_size = 40usize;
        let nb = package.len().div_ceil(frag_size);
        let padding = nb * frag_size - package.len();
        let mut padded = package.clone();
        padded.resize(nb * frag_size, 0);
        let setup = fragmentation::v1::Payload::FragSessionSetupReq(
            fragmentation::v1::FragSessionSetupReqPayload {
                frag_session: fragmentation::v1::FragSessionSetuReqPayloadFragSession {
                    mc_group_bit_mask: [true, false, false, false],
                    frag_index: 0,
                },
                nb_frag: nb as u16,
                frag_size: frag_size as u8,
                control: fragmentation::v1::FragSessionSetuReqPayloadControl {
                    block_ack_delay: 0,
                    fragmentation_matrix: 0,
                },
                padding: padding as u8,
                descriptor: [0; 4],
            },
        )
        .to_vec()
        .unwrap();
        d.on_unicast(&c, 0, ports::FRAGMENTATION, &setup, &mut rng);
        assert_eq!(
            take_answer(&mut d),
            (ports::FRAGMENTATION, vec![0x02, 0x00])
        );
        let frags = fragmentation::v1::encode(&padded, frag_size, 10).unwrap();
        let mut reboot_at = None;
        for (k, f) in frags.iter().enumerate() {
            if k < 3 {
                continue;
            }
            let frame =
                fragmentation::v1::Payload::DataFragment(fragmentation::v1::DataFragmentPayload {
                    index_and_n: fragmentation::v1::DataFragmentPayloadIndexAndN {
                        n: k as u16 + 1,
                        frag_index: 0,
                    },
                    data: f.clone(),
                })
                .to_vec()
                .unwrap();
            for fx in d.on_unicast(&c, 1000, ports::FRAGMENTATION, &frame, &mut rng) {
                if let Effect::Reboot { at_ms } = fx {
                    reboot_at = Some(at_ms);
                }
            }
        }
        assert_eq!(reboot_at, Some(11_000));
        assert_eq!(d.running_version(), 0x0001_0200);
        d.reboot(11_000);
        assert_eq!(d.running_version(), 0x0001_0300);
        assert_eq!(d.uptime_s(15_000), 4);
        assert_eq!(d.state.slots, [Some(0x0001_0200), Some(0x0001_0300), None]);
    }

    fn frag_session(mc_group_mask: u8, block_ack_delay: u8) -> FragSession {
        FragSession {
            mc_group_mask,
            nb_frag: 10,
            frag_size: 40,
            padding: 0,
            descriptor: [0; 4],
            block_ack_delay,
            received: 0,
            done: false,
            last_n: 0,
            data_received: 0,
            matrix_error: false,
            v2: None,
            mic_error: false,
        }
    }

    /// A signed 1.3.0 package cut into `frag_size` fragments: the setup request and every
    /// DataFragment frame with `redundancy` parity fragments, in sending order.
    fn session_frames(frag_size: usize, redundancy: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let body: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let package = firmware_trailer::build(
            &body,
            &SignedTrailer {
                signature: super::super::demo::PLACEHOLDER_SIGNATURE.to_vec(),
                manufacturer_uuid: MANUFACTURER_UUID,
                device_class_uuid: MODELS[0].device_class_uuid,
                version: 0x0001_0300,
                kind: PackageKind::Full,
                old_firmware_size: 0,
            },
        );
        let nb = package.len().div_ceil(frag_size);
        let mut padded = package.clone();
        padded.resize(nb * frag_size, 0);
        let setup = lorafleet_engine::commands::FragSetup::for_image(
            package.len(),
            frag_size as u8,
            0,
            0,
            0,
            0,
            [0; 4],
        )
        .unwrap();
        let frames =
            lorafleet_engine::commands::data_fragments(&package, &setup, redundancy).unwrap();
        (
            lorafleet_engine::commands::frag_session_setup_req(&setup).unwrap(),
            frames,
        )
    }

    /// A LoRaMac-node-like device: silent on Version & Status, 50-byte fragments at most,
    /// the highest-N status reading, and a reboot only when Firmware Management asks.
    #[test]
    fn a_loramac_node_device_keeps_to_what_it_claims() {
        let r = region();
        let c = Ctx {
            stack: Stack::LoramacNode,
            // A build that takes 4 KiB images.
            limits: Stack::LoramacNode.limits(Some(&crate::stacks::FragLimitsPatch {
                max_fragments: Some(100),
                max_parity: Some(20),
                ..Default::default()
            })),
            ..ctx(r.as_ref(), 64 * 1024)
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut d = SimDevice::new(Identity::nth(0), 0, &mut rng);
        d.state.clock_synced = true;
        let vs = Request::VersionRunning.to_vec().unwrap();
        assert!(d.on_unicast(&c, 0, 111, &vs, &mut rng).is_empty());
        assert!(d.state.outbox.is_empty(), "no Version & Status");
        let (too_big, _) = session_frames(51, 0);
        d.on_unicast(&c, 0, ports::FRAGMENTATION, &too_big, &mut rng);
        assert_eq!(
            take_answer(&mut d),
            (201, vec![0x02, 0x02]),
            "not enough memory"
        );
        let (setup, frames) = session_frames(50, 12);
        d.on_unicast(&c, 0, ports::FRAGMENTATION, &setup, &mut rng);
        assert_eq!(take_answer(&mut d), (201, vec![0x02, 0x00]));
        // 23 data fragments; 3 are lost, then parity rebuilds the image.
        for (k, f) in frames.iter().enumerate() {
            if [2, 5, 9].contains(&k) {
                continue;
            }
            let fx = d.on_unicast(&c, 1000, ports::FRAGMENTATION, f, &mut rng);
            assert!(!fx.iter().any(|e| matches!(e, Effect::Reboot { .. })));
        }
        assert!(
            d.state.frag_sessions[0].as_ref().unwrap().done,
            "{:?} {:?} {}",
            d.session_progress(0),
            d.state.last_error,
            frames.len()
        );
        let last_n = d.state.frag_sessions[0].as_ref().unwrap().last_n;
        assert!(last_n > 23 && last_n < 35, "frozen at completion: {last_n}");
        let status = lorafleet_engine::commands::frag_session_status_req(0, false).unwrap();
        d.on_unicast(&c, 2000, ports::FRAGMENTATION, &status, &mut rng);
        let [lo, hi] = last_n.to_le_bytes();
        assert_eq!(take_answer(&mut d), (201, vec![0x01, lo, hi, 3, 0x00]));
        let fm_req = |r: lorafleet_codec::firmware_management::Request| r.to_vec().unwrap();
        use lorafleet_codec::firmware_management::{RebootCountdown, Request as Fm};
        d.on_unicast(&c, 3000, 203, &fm_req(Fm::DevUpgradeImage), &mut rng);
        assert_eq!(
            take_answer(&mut d),
            (203, vec![0x04, 0x03, 0x00, 0x03, 0x01, 0x00])
        );
        let countdown = fm_req(Fm::DevRebootCountdown(RebootCountdown::After {
            seconds: 60,
        }));
        let fx = d.on_unicast(&c, 4000, 203, &countdown, &mut rng);
        assert!(fx.contains(&Effect::Reboot { at_ms: 64_000 }));
        assert_eq!(take_answer(&mut d), (203, vec![0x03, 60, 0, 0]));
        d.reboot(64_000);
        d.on_unicast(&c, 70_000, 203, &fm_req(Fm::DevVersion), &mut rng);
        assert_eq!(
            take_answer(&mut d),
            (
                203,
                vec![0x01, 0x00, 0x03, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00]
            )
        );
    }

    /// A stock LoRaMac-node build (FragDecoder.h: 21 fragments of 50 bytes, 5 lost at most):
    /// 22 fragments or 51 bytes are "not enough memory"; a session losing 6 data fragments
    /// ends at the first parity fragment with MatrixError, reported in its status answer.
    #[test]
    fn a_stock_loramac_node_build_keeps_its_limits() {
        use fragmentation::v1::*;
        let r = region();
        let c = Ctx {
            stack: Stack::LoramacNode,
            limits: Stack::LoramacNode.limits(None),
            ..ctx(r.as_ref(), 64 * 1024)
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut d = SimDevice::new(Identity::nth(0), 0, &mut rng);
        let setup = |nb: u16, size: u8| {
            Payload::FragSessionSetupReq(FragSessionSetupReqPayload {
                frag_session: FragSessionSetuReqPayloadFragSession {
                    mc_group_bit_mask: [true, false, false, false],
                    frag_index: 0,
                },
                nb_frag: nb,
                frag_size: size,
                control: FragSessionSetuReqPayloadControl {
                    block_ack_delay: 0,
                    fragmentation_matrix: 0,
                },
                padding: 0,
                descriptor: [0; 4],
            })
            .to_vec()
            .unwrap()
        };
        for (nb, size, want) in [
            (22, 40, 0x02),
            (21, 51, 0x02),
            (42, 25, 0x02),
            (21, 50, 0x00),
        ] {
            d.on_unicast(&c, 0, ports::FRAGMENTATION, &setup(nb, size), &mut rng);
            assert_eq!(
                take_answer(&mut d),
                (201, vec![0x02, want]),
                "{nb} x {size}"
            );
        }
        let image: Vec<u8> = (0..21 * 50).map(|i| (i % 249) as u8).collect();
        let frames: Vec<Vec<u8>> = encode(&image, 50, 10)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(k, data)| {
                let index_and_n = DataFragmentPayloadIndexAndN {
                    n: k as u16 + 1,
                    frag_index: 0,
                };
                Payload::DataFragment(DataFragmentPayload { index_and_n, data })
                    .to_vec()
                    .unwrap()
            })
            .collect();
        for (k, f) in frames.iter().enumerate() {
            if k < 6 {
                continue;
            }
            d.on_unicast(&c, 1000, ports::FRAGMENTATION, f, &mut rng);
        }
        let s = d.state.frag_sessions[0].as_ref().unwrap();
        assert!(s.matrix_error && !s.done, "{s:?}");
        assert!(d
            .state
            .last_error
            .as_deref()
            .unwrap()
            .contains("max_parity"));
        let status = lorafleet_engine::commands::frag_session_status_req(0, false).unwrap();
        d.on_unicast(&c, 2000, ports::FRAGMENTATION, &status, &mut rng);
        let (_, ans) = take_answer(&mut d);
        assert_eq!(
            (ans[3], ans[4]),
            (6, 0x01),
            "6 lost, MatrixError: {ans:02x?}"
        );
    }

    /// A LoRa-Basics-Modem-like device speaks v2: PackageVersionAns 2, the 16-byte setup with
    /// SessionCnt (a repeat is a replay) and MIC, v2 parity, the Status byte first; it keeps
    /// the image only when the MIC matches, and waits for Firmware Management to reboot.
    #[test]
    fn a_lora_basics_modem_device_speaks_v2() {
        use lorafleet_engine::packages as pk;
        let r = region();
        let c = Ctx {
            stack: Stack::LoraBasicsModem,
            limits: Stack::LoraBasicsModem.limits(None),
            ..ctx(r.as_ref(), 64 * 1024)
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut d = SimDevice::new(Identity::nth(0), 0, &mut rng);
        for (port, want) in [
            (200, [0x00, 0x02, 0x02]),
            (201, [0x00, 0x03, 0x02]),
            (202, [0x00, 0x01, 0x02]),
        ] {
            d.on_unicast(&c, 0, port, &[0x00], &mut rng);
            assert_eq!(take_answer(&mut d), (port, want.to_vec()));
        }
        let body: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let package = firmware_trailer::build(
            &body,
            &SignedTrailer {
                signature: super::super::demo::PLACEHOLDER_SIGNATURE.to_vec(),
                manufacturer_uuid: MANUFACTURER_UUID,
                device_class_uuid: MODELS[0].device_class_uuid,
                version: 0x0001_0300,
                kind: PackageKind::Full,
                old_firmware_size: 0,
            },
        );
        let f = lorafleet_engine::commands::FragSetup::for_image(
            package.len(),
            50,
            0,
            0,
            0,
            0,
            [1, 2, 3, 4],
        )
        .unwrap();
        let good = pk::frag_v2(d.id.gen_app_key, 5, 0, [1, 2, 3, 4], &package).unwrap();
        let bad = pk::FragV2 {
            mic: [0; 4],
            ..good
        };
        let frames = pk::data_fragments(2, &package, &f, 10).unwrap();
        let deliver = |d: &mut SimDevice, rng: &mut rand::rngs::StdRng| {
            for (k, frame) in frames.iter().enumerate() {
                if k != 1 && k != 4 {
                    d.on_unicast(&c, 1000, ports::FRAGMENTATION, frame, rng);
                }
            }
        };
        // A wrong MIC: rebuilt, rejected, reported in the v2 status byte.
        let setup = pk::frag_session_setup_req(2, &f, Some(bad)).unwrap();
        assert_eq!(setup.len(), 1 + 16, "CID and the 16-byte v2 setup");
        d.on_unicast(&c, 0, ports::FRAGMENTATION, &setup, &mut rng);
        assert_eq!(take_answer(&mut d), (201, vec![0x02, 0x00]));
        deliver(&mut d, &mut rng);
        assert_eq!(d.state.upgrade_image, None);
        let status = pk::frag_session_status_req(2, 0, true).unwrap();
        d.on_unicast(&c, 2000, ports::FRAGMENTATION, &status, &mut rng);
        let (_, ans) = take_answer(&mut d);
        assert_eq!(
            (ans[1], ans[4]),
            (0x02, 0),
            "MIC error, nothing missing: {ans:02x?}"
        );
        // The same SessionCnt again is a replay; the next one with the right MIC works.
        d.on_unicast(&c, 3000, ports::FRAGMENTATION, &setup, &mut rng);
        assert_eq!(take_answer(&mut d), (201, vec![0x02, 0x10]));
        let next = pk::frag_v2(d.id.gen_app_key, 6, 0, [1, 2, 3, 4], &package).unwrap();
        let setup = pk::frag_session_setup_req(2, &f, Some(next)).unwrap();
        d.on_unicast(&c, 4000, ports::FRAGMENTATION, &setup, &mut rng);
        assert_eq!(take_answer(&mut d), (201, vec![0x02, 0x00]));
        deliver(&mut d, &mut rng);
        assert!(d.state.upgrade_image.is_some(), "{:?}", d.state.last_error);
        assert_eq!(
            d.running_version(),
            0x0001_0200,
            "waits to be told to reboot"
        );
        // v1 parity would not have rebuilt it the same way: the session read v2's matrix.
        assert!(d.state.frag_sessions[0].as_ref().unwrap().v2.is_some());
        // No session 3: the v2 Status byte says so (bit 2).
        let none = pk::frag_session_status_req(2, 3, false).unwrap();
        d.on_unicast(&c, 4500, ports::FRAGMENTATION, &none, &mut rng);
        let (_, ans) = take_answer(&mut d);
        assert_eq!((ans[1], ans[3] >> 6), (0x04, 3), "{ans:02x?}");
        // Too many fragments for its build: not enough memory.
        let big =
            lorafleet_engine::commands::FragSetup::for_image(101 * 50, 50, 1, 0, 0, 0, [0; 4])
                .unwrap();
        let v = pk::frag_v2(d.id.gen_app_key, 7, 1, [0; 4], &vec![0; 101 * 50]).unwrap();
        d.on_unicast(
            &c,
            5000,
            ports::FRAGMENTATION,
            &pk::frag_session_setup_req(2, &big, Some(v)).unwrap(),
            &mut rng,
        );
        assert_eq!(take_answer(&mut d), (201, vec![0x02, 0x42]));
    }

    /// A v2 session survives a restart of lorafleet: the saved state keeps its SessionCnt and
    /// MIC, the rebuilt decoder reads parity by the v2 matrix (with v1's, the rebuilt block
    /// fails its MIC), and the image completes.
    #[test]
    fn a_v2_session_is_restored_with_its_matrix() {
        use lorafleet_engine::packages as pk;
        let r = region();
        let c = Ctx {
            stack: Stack::LoraBasicsModem,
            limits: Stack::LoraBasicsModem.limits(None),
            ..ctx(r.as_ref(), 64 * 1024)
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let mut d = SimDevice::new(Identity::nth(0), 0, &mut rng);
        let package = firmware_trailer::build(
            &[7u8; 1500],
            &SignedTrailer {
                signature: super::super::demo::PLACEHOLDER_SIGNATURE.to_vec(),
                manufacturer_uuid: MANUFACTURER_UUID,
                device_class_uuid: MODELS[0].device_class_uuid,
                version: 0x0001_0300,
                kind: PackageKind::Full,
                old_firmware_size: 0,
            },
        );
        let f =
            lorafleet_engine::commands::FragSetup::for_image(package.len(), 40, 0, 0, 0, 0, [0; 4])
                .unwrap();
        let v2 = pk::frag_v2(d.id.gen_app_key, 1, 0, [0; 4], &package).unwrap();
        d.on_unicast(
            &c,
            0,
            ports::FRAGMENTATION,
            &pk::frag_session_setup_req(2, &f, Some(v2)).unwrap(),
            &mut rng,
        );
        take_answer(&mut d);
        let frames = pk::data_fragments(2, &package, &f, 20).unwrap();
        let m = usize::from(f.nb_frag);
        // Every other data fragment of the first ten lost; the world logs what was accepted.
        let mut log = Vec::new();
        for (k, frame) in frames.iter().enumerate().take(m) {
            if k < 10 && k % 2 == 0 {
                continue;
            }
            for fx in d.on_unicast(&c, 1000, ports::FRAGMENTATION, frame, &mut rng) {
                if let Effect::Fragment { index, n, data } = fx {
                    log.push((index, n, data));
                }
            }
        }
        let saved = serde_json::to_string(&d.state).unwrap();
        let mut back = SimDevice::restore(
            Identity::nth(0),
            serde_json::from_str(&saved).unwrap(),
            &mut rng,
        );
        for (index, n, data) in &log {
            back.replay_fragment(*index, *n, data, &c, 2000);
        }
        for frame in &frames[m..] {
            back.on_unicast(&c, 3000, ports::FRAGMENTATION, frame, &mut rng);
            if back.state.upgrade_image.is_some() {
                break;
            }
        }
        assert!(
            back.state.upgrade_image.is_some(),
            "{:?}",
            back.state.last_error
        );
    }

    /// Adaptive parity's multicast FragSessionStatusReq with Participants clear: a device still
    /// missing fragments answers with how many (after the spread BlockAckDelay gives), one that
    /// rebuilt its image stays silent; with Participants set both answer.
    #[test]
    fn multicast_status_request_is_answered_only_while_fragments_are_missing() {
        use fragmentation::v1::*;
        let r = region();
        let c = ctx(r.as_ref(), 64 * 1024);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut d = SimDevice::new(Identity::nth(0), 0, &mut rng);
        let (nb, size) = (10usize, 8usize);
        let image = vec![0x5a; nb * size];
        let setup = Payload::FragSessionSetupReq(FragSessionSetupReqPayload {
            frag_session: FragSessionSetuReqPayloadFragSession {
                mc_group_bit_mask: [true, false, false, false],
                frag_index: 0,
            },
            nb_frag: nb as u16,
            frag_size: size as u8,
            control: FragSessionSetuReqPayloadControl {
                block_ack_delay: 1,
                fragmentation_matrix: 0,
            },
            padding: 0,
            descriptor: [0; 4],
        });
        d.on_unicast(
            &c,
            0,
            ports::FRAGMENTATION,
            &setup.to_vec().unwrap(),
            &mut rng,
        );
        take_answer(&mut d);
        let frames: Vec<Vec<u8>> = encode(&image, size, 10)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(k, data)| {
                let index_and_n = DataFragmentPayloadIndexAndN {
                    n: k as u16 + 1,
                    frag_index: 0,
                };
                Payload::DataFragment(DataFragmentPayload { index_and_n, data })
                    .to_vec()
                    .unwrap()
            })
            .collect();
        let status = |participants| {
            Payload::FragSessionStatusReq(FragSessionStatusReqPayload {
                participants,
                frag_index: 0,
            })
            .to_vec()
            .unwrap()
        };
        // Fragments 1 and 2 lost: 8 received, 2 missing.
        for f in &frames[2..nb] {
            d.on_multicast(&c, 1000, 0, ports::FRAGMENTATION, f, &mut rng);
        }
        let fx = d.on_multicast(&c, 2000, 0, ports::FRAGMENTATION, &status(false), &mut rng);
        let [Effect::Wake { delay_ms }] = fx[..] else {
            panic!("{fx:?}");
        };
        assert!(
            (0..=32_000).contains(&delay_ms),
            "BlockAckDelay 1: {delay_ms}"
        );
        assert_eq!(
            take_answer(&mut d),
            (ports::FRAGMENTATION, vec![0x01, 8, 0, 2, 0])
        );
        // Parity until the image is rebuilt; then the same request gets no answer...
        for f in &frames[nb..] {
            d.on_multicast(&c, 3000, 0, ports::FRAGMENTATION, f, &mut rng);
        }
        assert_eq!(d.session_progress(0).map(|p| p.1), Some(nb));
        assert!(d
            .on_multicast(&c, 4000, 0, ports::FRAGMENTATION, &status(false), &mut rng)
            .is_empty());
        assert!(d.state.outbox.is_empty());
        // ...but asking every participant does.
        d.on_multicast(&c, 5000, 0, ports::FRAGMENTATION, &status(true), &mut rng);
        let (_, ans) = take_answer(&mut d);
        assert_eq!(ans[3], 0, "nothing missing: {ans:02x?}");
    }

    #[test]
    fn multicast_fragments_count_only_for_their_groups_session() {
        let s = frag_session(group_mask_bits(&[false, true, false, true]), 0);
        assert_eq!(s.mc_group_mask, 0b1010);
        assert!(accepts_fragment_from(Some(1), Some(&s)));
        assert!(accepts_fragment_from(Some(3), Some(&s)));
        assert!(!accepts_fragment_from(Some(0), Some(&s)));
        assert!(!accepts_fragment_from(Some(2), Some(&s)));
        assert!(accepts_fragment_from(None, Some(&s)));
        assert!(accepts_fragment_from(Some(0), None));
    }

    /// Multicast status answers wait 2^(BlockAckDelay+4)..2^(BlockAckDelay+5) s; unicast
    /// ones the usual 1..4 s.
    #[test]
    fn status_answers_to_a_group_are_spread_by_block_ack_delay() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..200 {
            let d = status_answer_delay(Some(0), 0, &mut rng);
            assert!((0..=16_000).contains(&d), "{d}");
            let d = status_answer_delay(Some(2), 3, &mut rng);
            assert!((0..=128_000).contains(&d), "{d}");
            let d = status_answer_delay(None, 3, &mut rng);
            assert!((1_000..4_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn group_status_lists_only_asked_groups_that_exist() {
        use multicastsetup::v1::*;
        let group = |a: u8| McGroup {
            mc_addr: [a, 0, 0, 1],
            mc_key: [0; 16],
            mc_app_s_key: [0; 16],
            mc_nwk_s_key: [0; 16],
            min_f_cnt: 0,
            max_f_cnt: 10,
            session: None,
        };
        let groups = [Some(group(0)), None, Some(group(2)), Some(group(3))];
        let req = McGroupStatusReqPayload {
            cmd_mask: McGroupStatusReqPayloadCmdMask {
                req_group_mask: [true, true, false, true],
            },
        };
        let ans = mc_group_status(&groups, &req);
        assert_eq!(ans.status.ans_group_mask, [true, false, false, true]);
        assert_eq!(ans.status.nb_total_groups, 3);
        let ids: Vec<(u8, [u8; 4])> = ans
            .items
            .iter()
            .map(|i| (i.mc_group_id, i.mc_addr.to_be_bytes()))
            .collect();
        assert_eq!(ids, vec![(0, [0, 0, 0, 1]), (3, [3, 0, 0, 1])]);
    }

    #[test]
    fn telemetry_decodes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut d = SimDevice::new(Identity::nth(0), 0, &mut rng);
        d.state.next_clock_sync_ms = i64::MAX;
        let (port, data) = d.next_uplink(1000, &mut rng);
        assert_eq!(port, 1);
        let o = telemetry_object(&data).unwrap();
        assert!(o["temperature_c"].as_f64().unwrap() > -10.0);
    }
}

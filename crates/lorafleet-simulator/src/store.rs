//! What the simulation keeps on disk, in `<data_dir>/simulated`, so that killing lorafleet does
//! not reset the virtual devices (real devices would not forget a multicast group because the
//! server crashed): the clock, each device's state, the network server's queues and groups (a
//! snapshot, plus a log of the multicast frames queued since), and per device the fragments
//! received in open sessions.
//!
//! Files are replaced by rename and never fsynced: they must survive the process, not the
//! machine, and the page cache already gives that. Writes happen on one thread of their own
//! ([`Saver`]), fed with what to write, so no runtime thread waits for a disk under a lock;
//! whoever must not answer before something is on disk waits for [`Saver::flush`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::device::DeviceState;
use super::world::{LogOp, McFrame, NetworkState};
use lorafleet_codec::eui::DevEui;

pub struct Store {
    dir: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

impl Store {
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        let dir = data_dir.join("simulated");
        std::fs::create_dir_all(dir.join("devices")).map_err(|e| {
            anyhow::anyhow!("creating {} for the simulated network: {e}", dir.display())
        })?;
        Ok(Store { dir })
    }

    pub fn load_clock(&self) -> Option<DateTime<Utc>> {
        let text = std::fs::read_to_string(self.dir.join("clock")).ok()?;
        DateTime::parse_from_rfc3339(text.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    pub fn save_clock(&self, t: DateTime<Utc>) -> std::io::Result<()> {
        write_atomic(&self.dir.join("clock"), t.to_rfc3339().as_bytes())
    }

    fn device_path(&self, eui: DevEui, ext: &str) -> PathBuf {
        self.dir.join("devices").join(format!("{eui}.{ext}"))
    }

    /// A device's saved state; None when it has none or it cannot be read (the device then
    /// starts over, like one fresh from the factory).
    pub fn load_device(&self, eui: DevEui) -> Option<DeviceState> {
        let bytes = std::fs::read(self.device_path(eui, "json")).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(%eui, error = %e, "simulated device state unreadable; starting it over");
                None
            }
        }
    }

    pub fn save_device(&self, eui: DevEui, state: &DeviceState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        write_atomic(&self.device_path(eui, "json"), &bytes)
    }

    /// The network server's saved state with the multicast frames queued after it.
    pub fn load_network(&self) -> NetworkState {
        let mut state: NetworkState = std::fs::read(self.dir.join("network.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let log = std::fs::read(self.multicast_path()).unwrap_or_default();
        for (group, frame) in decode_multicast(&log) {
            state.replay_multicast(&group, frame);
        }
        state
    }

    /// Writes the snapshot, then empties the multicast log it now contains (a crash between the
    /// two replays frames the snapshot has, which the replay skips). Returns its size.
    pub fn save_network(&self, state: &NetworkState) -> std::io::Result<usize> {
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join("network.json"), &bytes)?;
        write_atomic(&self.multicast_path(), &[])?;
        Ok(bytes.len())
    }

    fn multicast_path(&self) -> PathBuf {
        self.dir.join("multicast.log")
    }

    /// Appends multicast frames lorafleet queued (one write for the batch).
    pub fn append_multicast(&self, frames: &[(String, McFrame)]) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for (group, frame) in frames {
            encode_multicast(group, frame, &mut bytes);
        }
        append(&self.multicast_path(), &bytes)
    }

    fn receptions_path(&self) -> PathBuf {
        self.dir.join("receptions.log")
    }

    /// Appends reception-log records (one write for the whole batch).
    pub fn append_log(&self, ops: &[LogOp]) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for op in ops {
            encode(op, &mut bytes);
        }
        append(&self.receptions_path(), &bytes)
    }

    /// Every device's fragments still in open sessions, in the order received, and the next
    /// free frame id; then rewrites the log with only those (a log only grows while running).
    pub fn load_receptions(&self) -> std::io::Result<(Receptions, u32)> {
        let bytes = std::fs::read(self.receptions_path()).unwrap_or_default();
        let mut frames: HashMap<u32, Arc<[u8]>> = HashMap::new();
        let mut per_device: Receptions = BTreeMap::new();
        for op in decode_all(&bytes) {
            match op {
                LogOp::Frame { id, data } => {
                    frames.insert(id, data);
                }
                LogOp::Received {
                    dev_eui,
                    index,
                    n,
                    frame,
                } => {
                    if let Some(data) = frames.get(&frame) {
                        per_device
                            .entry(dev_eui)
                            .or_default()
                            .push((index, n, data.clone()));
                    }
                }
                LogOp::Reset { dev_eui, index } => {
                    if let Some(list) = per_device.get_mut(&dev_eui) {
                        list.retain(|(i, _, _)| *i != index);
                    }
                }
            }
        }
        // Compact: each distinct payload once, then the receptions.
        let mut ids: HashMap<*const u8, u32> = HashMap::new();
        let mut out = Vec::new();
        for (dev_eui, list) in &per_device {
            for (index, n, data) in list {
                let next = ids.len() as u32;
                let frame = *ids.entry(data.as_ptr()).or_insert_with(|| {
                    encode(
                        &LogOp::Frame {
                            id: next,
                            data: data.clone(),
                        },
                        &mut out,
                    );
                    next
                });
                encode(
                    &LogOp::Received {
                        dev_eui: *dev_eui,
                        index: *index,
                        n: *n,
                        frame,
                    },
                    &mut out,
                );
            }
        }
        write_atomic(&self.receptions_path(), &out)?;
        Ok((per_device, ids.len() as u32))
    }
}

/// Something to write, in the order it happened.
#[derive(Debug)]
pub enum Save {
    Device(DevEui, Box<DeviceState>),
    Receptions(Vec<LogOp>),
    Multicast(Vec<(String, McFrame)>),
    Network(Box<NetworkState>),
    Clock(DateTime<Utc>),
}

enum Job {
    Save(Save),
    Flush(oneshot::Sender<()>),
}

/// The store's writing thread. Cloned handles feed the same thread; it stops once every handle
/// is gone and what they sent is written.
#[derive(Clone)]
pub struct Saver {
    tx: mpsc::Sender<Job>,
    /// The size of the last network snapshot written (bytes).
    network_bytes: Arc<AtomicUsize>,
}

impl Saver {
    pub fn spawn(store: Store) -> std::io::Result<Saver> {
        let (tx, rx) = mpsc::channel();
        let network_bytes = Arc::new(AtomicUsize::new(0));
        let written = network_bytes.clone();
        std::thread::Builder::new()
            .name("simulated-store".into())
            .spawn(move || write_loop(&store, &rx, &written))?;
        Ok(Saver { tx, network_bytes })
    }

    /// How big the last network snapshot was (bytes; 0 before the first).
    pub fn network_bytes(&self) -> usize {
        self.network_bytes.load(Ordering::Relaxed)
    }

    /// Queues a write; never blocks.
    pub fn send(&self, save: Save) {
        if self.tx.send(Job::Save(save)).is_err() {
            tracing::warn!("the simulated network's store thread has stopped; not saved");
        }
    }

    /// Resolves once everything sent before is written (or the thread is gone).
    pub fn flush(&self) -> oneshot::Receiver<()> {
        let (done, written) = oneshot::channel();
        let _ = self.tx.send(Job::Flush(done));
        written
    }
}

/// Takes whatever is waiting as one batch: a device's or the network's state written twice in
/// a batch is written once (the later), and the flushes are answered after the batch.
fn write_loop(store: &Store, rx: &mpsc::Receiver<Job>, network_bytes: &AtomicUsize) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let mut saves = Vec::new();
        let mut flushed = Vec::new();
        for job in batch {
            match job {
                Job::Save(s) => saves.push(s),
                Job::Flush(done) => flushed.push(done),
            }
        }
        for save in superseded_dropped(saves) {
            match write(store, &save) {
                Ok(Some(bytes)) => network_bytes.store(bytes, Ordering::Relaxed),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, what = save.what(), "could not save the simulated network")
                }
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Drops every device state, network snapshot and clock a later one in the batch replaces;
/// appends stay, in order (a snapshot replaces the multicast frames logged before it because
/// it contains them, and those are written before it anyway).
fn superseded_dropped(saves: Vec<Save>) -> Vec<Save> {
    let mut seen_devices = HashSet::new();
    let (mut seen_network, mut seen_clock) = (false, false);
    let mut kept: Vec<Save> = saves
        .into_iter()
        .rev()
        .filter(|s| match s {
            Save::Device(eui, _) => seen_devices.insert(*eui),
            Save::Network(_) => !std::mem::replace(&mut seen_network, true),
            Save::Clock(_) => !std::mem::replace(&mut seen_clock, true),
            Save::Receptions(_) | Save::Multicast(_) => true,
        })
        .collect();
    kept.reverse();
    kept
}

/// Writes one save; a network snapshot's size comes back.
fn write(store: &Store, save: &Save) -> std::io::Result<Option<usize>> {
    match save {
        Save::Device(eui, state) => store.save_device(*eui, state),
        Save::Receptions(ops) => store.append_log(ops),
        Save::Multicast(frames) => store.append_multicast(frames),
        Save::Network(state) => return store.save_network(state).map(Some),
        Save::Clock(t) => store.save_clock(*t),
    }
    .map(|()| None)
}

impl Save {
    fn what(&self) -> &'static str {
        match self {
            Save::Device(..) => "device state",
            Save::Receptions(_) => "received fragments",
            Save::Multicast(_) => "queued multicast frames",
            Save::Network(_) => "network server state",
            Save::Clock(_) => "clock",
        }
    }
}

/// Per device: (session index, N, fragment payload) in the order received.
pub type Receptions = BTreeMap<DevEui, Vec<(u8, u16, Arc<[u8]>)>>;

const FRAME: u8 = 1;
const RECEIVED: u8 = 2;
const RESET: u8 = 3;

fn encode(op: &LogOp, out: &mut Vec<u8>) {
    match op {
        LogOp::Frame { id, data } => {
            out.push(FRAME);
            out.extend_from_slice(&id.to_le_bytes());
            // Fragments are at most 255 bytes (FragSize is one byte).
            out.extend_from_slice(&(data.len() as u16).to_le_bytes());
            out.extend_from_slice(data);
        }
        LogOp::Received {
            dev_eui,
            index,
            n,
            frame,
        } => {
            out.push(RECEIVED);
            out.extend_from_slice(&dev_eui.0);
            out.push(*index);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&frame.to_le_bytes());
        }
        LogOp::Reset { dev_eui, index } => {
            out.push(RESET);
            out.extend_from_slice(&dev_eui.0);
            out.push(*index);
        }
    }
}

/// Reads records until the end or the first one cut short (a crash in the middle of a write).
fn decode_all(mut rest: &[u8]) -> Vec<LogOp> {
    let mut out = Vec::new();
    while let Some([kind]) = take::<1>(&mut rest) {
        let op = match kind {
            FRAME => (|| {
                let id = u32::from_le_bytes(take::<4>(&mut rest)?);
                let len = usize::from(u16::from_le_bytes(take::<2>(&mut rest)?));
                let data = take_slice(&mut rest, len)?;
                Some(LogOp::Frame {
                    id,
                    data: data.into(),
                })
            })(),
            RECEIVED => (|| {
                let dev_eui = DevEui(take::<8>(&mut rest)?);
                let [index] = take::<1>(&mut rest)?;
                let n = u16::from_le_bytes(take::<2>(&mut rest)?);
                let frame = u32::from_le_bytes(take::<4>(&mut rest)?);
                Some(LogOp::Received {
                    dev_eui,
                    index,
                    n,
                    frame,
                })
            })(),
            RESET => (|| {
                let dev_eui = DevEui(take::<8>(&mut rest)?);
                let [index] = take::<1>(&mut rest)?;
                Some(LogOp::Reset { dev_eui, index })
            })(),
            _ => None,
        };
        match op {
            Some(op) => out.push(op),
            None => break,
        }
    }
    out
}

fn encode_multicast(group: &str, frame: &McFrame, out: &mut Vec<u8>) {
    // Group ids are the simulation's own ("sim-mc-" and 8 hex digits), fragments at most 255
    // bytes: both lengths fit.
    out.push(group.len() as u8);
    out.extend_from_slice(group.as_bytes());
    out.extend_from_slice(&frame.f_cnt.to_le_bytes());
    out.push(frame.f_port);
    out.extend_from_slice(&frame.not_before_ms.to_le_bytes());
    out.extend_from_slice(&(frame.data.len() as u16).to_le_bytes());
    out.extend_from_slice(&frame.data);
}

/// Reads records until the end or the first one cut short.
fn decode_multicast(mut rest: &[u8]) -> Vec<(String, McFrame)> {
    let mut out = Vec::new();
    let mut next = || -> Option<(String, McFrame)> {
        let [len] = take::<1>(&mut rest)?;
        let group = String::from_utf8(take_slice(&mut rest, usize::from(len))?.to_vec()).ok()?;
        let f_cnt = u32::from_le_bytes(take::<4>(&mut rest)?);
        let [f_port] = take::<1>(&mut rest)?;
        let not_before_ms = i64::from_le_bytes(take::<8>(&mut rest)?);
        let len = usize::from(u16::from_le_bytes(take::<2>(&mut rest)?));
        let data = take_slice(&mut rest, len)?.to_vec();
        Some((
            group,
            McFrame {
                not_before_ms,
                f_cnt,
                f_port,
                data,
            },
        ))
    };
    while let Some(record) = next() {
        out.push(record);
    }
    out
}

fn take<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = rest.split_first_chunk::<N>()?;
    *rest = tail;
    Some(*head)
}

fn take_slice<'a>(rest: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    let head = rest.get(..len)?;
    *rest = &rest[len..];
    Some(head)
}

fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reception_log_replays_resets_compacts_and_survives_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = DevEui([1; 8]);
        let b = DevEui([2; 8]);
        let frame = |id: u32| LogOp::Frame {
            id,
            data: vec![id as u8; 3].into(),
        };
        let got = |dev_eui, index, n, frame| LogOp::Received {
            dev_eui,
            index,
            n,
            frame,
        };
        store
            .append_log(&[
                frame(0),
                got(a, 0, 1, 0),
                got(b, 0, 1, 0),
                frame(1),
                got(a, 1, 5, 1),
            ])
            .unwrap();
        store
            .append_log(&[
                LogOp::Reset {
                    dev_eui: a,
                    index: 1,
                },
                frame(2),
                got(a, 0, 2, 2),
            ])
            .unwrap();
        append(&store.receptions_path(), &[RECEIVED, 1, 1]).unwrap();
        let (r, next) = store.load_receptions().unwrap();
        let ns = |e: DevEui| {
            r[&e]
                .iter()
                .map(|(i, n, d)| (*i, *n, d[0]))
                .collect::<Vec<_>>()
        };
        assert_eq!(ns(a), vec![(0, 1, 0), (0, 2, 2)]);
        assert_eq!(ns(b), vec![(0, 1, 0)]);
        assert_eq!(next, 2, "frame 0 shared by both devices is written once");
        let (again, _) = store.load_receptions().unwrap();
        assert_eq!(again, r, "the compacted log says the same");
        store.save_clock(DateTime::UNIX_EPOCH).unwrap();
        assert_eq!(store.load_clock(), Some(DateTime::UNIX_EPOCH));
    }

    fn group(next_f_cnt: u32) -> super::super::world::NetGroup {
        super::super::world::NetGroup {
            name: "g".into(),
            mc_addr: [1, 2, 3, 4],
            mc_nwk_s_key: [5; 16],
            mc_app_s_key: [6; 16],
            class_b_periodicity: None,
            dr: 5,
            frequency: 869_525_000,
            next_f_cnt,
            members: Default::default(),
            queue: Default::default(),
            free_at_ms: 0,
        }
    }

    fn frame(f_cnt: u32) -> McFrame {
        McFrame {
            not_before_ms: 1_700_000_000_000 + i64::from(f_cnt),
            f_cnt,
            f_port: 201,
            data: vec![0x08, f_cnt as u8, 0xab],
        }
    }

    fn queued(state: &NetworkState, id: &str) -> Vec<(u32, i64, Vec<u8>)> {
        state.groups[id]
            .queue
            .iter()
            .map(|f| (f.f_cnt, f.not_before_ms, f.data.clone()))
            .collect()
    }

    #[test]
    fn multicast_frames_logged_after_the_snapshot_are_replayed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut state = NetworkState::default();
        state.groups.insert("sim-mc-1".into(), group(10));
        store.save_network(&state).unwrap();
        let in_gone_group = ("sim-mc-2".to_string(), frame(1));
        store
            .append_multicast(&[("sim-mc-1".into(), frame(10)), in_gone_group])
            .unwrap();
        store
            .append_multicast(&[("sim-mc-1".into(), frame(11))])
            .unwrap();
        append(&store.multicast_path(), &[15, b's']).unwrap();
        let loaded = store.load_network();
        let want = |n: u32| (n, frame(n).not_before_ms, frame(n).data);
        assert_eq!(queued(&loaded, "sim-mc-1"), vec![want(10), want(11)]);
        assert_eq!(loaded.groups["sim-mc-1"].next_f_cnt, 12);
        assert!(!loaded.groups.contains_key("sim-mc-2"));
        // The snapshot now holds them: the log is emptied, and frames it still had (a crash
        // between the two writes) are not queued twice.
        store.save_network(&loaded).unwrap();
        assert_eq!(std::fs::read(store.multicast_path()).unwrap(), b"");
        store
            .append_multicast(&[("sim-mc-1".into(), frame(11))])
            .unwrap();
        assert_eq!(
            queued(&store.load_network(), "sim-mc-1"),
            vec![want(10), want(11)]
        );
    }

    #[test]
    fn the_saver_writes_in_order_keeps_the_latest_state_and_answers_flushes_after() {
        let dir = tempfile::tempdir().unwrap();
        let saver = Saver::spawn(Store::open(dir.path()).unwrap()).unwrap();
        let mut state = NetworkState::default();
        state.groups.insert("sim-mc-1".into(), group(0));
        saver.send(Save::Network(Box::new(state.clone())));
        saver.send(Save::Multicast(vec![("sim-mc-1".into(), frame(0))]));
        state.groups.get_mut("sim-mc-1").unwrap().next_f_cnt = 1;
        state
            .groups
            .get_mut("sim-mc-1")
            .unwrap()
            .queue
            .push_back(frame(0));
        saver.send(Save::Network(Box::new(state)));
        saver.send(Save::Multicast(vec![("sim-mc-1".into(), frame(1))]));
        saver.send(Save::Clock(DateTime::UNIX_EPOCH));
        let eui = DevEui([9; 8]);
        let device = |battery_mv| {
            use super::super::device::{Identity, SimDevice};
            let mut s = SimDevice::new(Identity::nth(0), 0, &mut rand::thread_rng()).state;
            s.battery_mv = battery_mv;
            Box::new(s)
        };
        saver.send(Save::Device(eui, device(3100)));
        saver.send(Save::Device(eui, device(3200)));
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(saver.flush())
            .unwrap();
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load_network();
        assert_eq!(
            loaded.groups["sim-mc-1"]
                .queue
                .iter()
                .map(|f| f.f_cnt)
                .collect::<Vec<_>>(),
            vec![0, 1],
            "frame 0 from the snapshot, frame 1 from the log written after it"
        );
        assert_eq!(store.load_clock(), Some(DateTime::UNIX_EPOCH));
        assert_eq!(store.load_device(eui).unwrap().battery_mv, 3200);
    }
}

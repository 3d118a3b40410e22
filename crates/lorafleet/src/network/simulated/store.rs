//! What the simulation keeps on disk, in `<data_dir>/simulated`, so that killing lorafleet does
//! not reset the virtual devices (real devices would not forget a multicast group because the
//! server crashed): the clock, each device's state, the network server's queues and groups, and
//! per device the fragments received in open sessions.
//!
//! Files are replaced by rename and never fsynced: they must survive the process, not the
//! machine, and the page cache already gives that.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::device::DeviceState;
use super::world::{LogOp, NetworkState};
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

    pub fn load_network(&self) -> NetworkState {
        std::fs::read(self.dir.join("network.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_network(&self, state: &NetworkState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join("network.json"), &bytes)
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
    fn take<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
        let (head, tail) = rest.split_first_chunk::<N>()?;
        *rest = tail;
        Some(*head)
    }
    let mut out = Vec::new();
    while let Some([kind]) = take::<1>(&mut rest) {
        let op = match kind {
            FRAME => (|| {
                let id = u32::from_le_bytes(take::<4>(&mut rest)?);
                let len = usize::from(u16::from_le_bytes(take::<2>(&mut rest)?));
                let data = rest.get(..len)?;
                rest = &rest[len..];
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
}

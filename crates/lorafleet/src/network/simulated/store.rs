//! What the simulation keeps on disk, in `<data_dir>/simulated`, so that killing lorafleet does
//! not reset the virtual devices (real devices would not forget a multicast group because the
//! server crashed): the clock, each device's state, the network server's queues and groups, and
//! per device the fragments received in open sessions.
//!
//! Files are replaced by rename and never fsynced: they must survive the process, not the
//! machine, and the page cache already gives that.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::device::DeviceState;
use super::world::{LogOp, NetworkState};
use crate::devices::DevEui;

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

    /// Applies fragment-log changes, grouped per device (one file each).
    pub fn apply_log(&self, ops: Vec<(DevEui, LogOp)>) -> std::io::Result<()> {
        let mut per_device: BTreeMap<DevEui, Vec<LogOp>> = BTreeMap::new();
        for (eui, op) in ops {
            per_device.entry(eui).or_default().push(op);
        }
        for (eui, ops) in per_device {
            let path = self.device_path(eui, "frags");
            let mut records = Vec::new();
            for op in ops {
                match op {
                    LogOp::Fragment { index, n, data } => {
                        records.push(index);
                        records.extend_from_slice(&n.to_le_bytes());
                        records.extend_from_slice(&(data.len() as u16).to_le_bytes());
                        records.extend_from_slice(&data);
                    }
                    LogOp::Reset { index } => {
                        // Rare (session setup, delete, reboot): write out the pending records,
                        // then rewrite the file without the session's.
                        append(&path, &std::mem::take(&mut records))?;
                        let kept: Vec<u8> = read_records(&path)
                            .into_iter()
                            .filter(|(i, _, _)| *i != index)
                            .flat_map(|(i, n, d)| {
                                let mut r = vec![i];
                                r.extend_from_slice(&n.to_le_bytes());
                                r.extend_from_slice(&(d.len() as u16).to_le_bytes());
                                r.extend_from_slice(&d);
                                r
                            })
                            .collect();
                        if kept.is_empty() {
                            let _ = std::fs::remove_file(&path);
                        } else {
                            write_atomic(&path, &kept)?;
                        }
                    }
                }
            }
            append(&path, &records)?;
        }
        Ok(())
    }

    /// The logged fragments of a device, in the order received: (session index, N, data).
    pub fn load_fragments(&self, eui: DevEui) -> Vec<(u8, u16, Vec<u8>)> {
        read_records(&self.device_path(eui, "frags"))
    }
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

/// Reads records until the end or the first one cut short (a crash in the middle of a write).
fn read_records(path: &Path) -> Vec<(u8, u16, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while let [index, n0, n1, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*l0, *l1]));
        let Some(data) = tail.get(..len) else {
            break;
        };
        out.push((*index, u16::from_le_bytes([*n0, *n1]), data.to_vec()));
        rest = &tail[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_log_appends_resets_and_survives_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let eui = DevEui([1; 8]);
        let frag = |index, n: u16| LogOp::Fragment {
            index,
            n,
            data: vec![n as u8; 3],
        };
        store
            .apply_log(vec![
                (eui, frag(0, 1)),
                (eui, frag(1, 1)),
                (eui, frag(0, 2)),
            ])
            .unwrap();
        store
            .apply_log(vec![(eui, LogOp::Reset { index: 1 }), (eui, frag(0, 3))])
            .unwrap();
        let got: Vec<(u8, u16)> = store
            .load_fragments(eui)
            .into_iter()
            .map(|(i, n, _)| (i, n))
            .collect();
        assert_eq!(got, vec![(0, 1), (0, 2), (0, 3)]);
        append(&store.device_path(eui, "frags"), &[0, 4, 0, 9]).unwrap();
        assert_eq!(store.load_fragments(eui).len(), 3);
        store.save_clock(DateTime::UNIX_EPOCH).unwrap();
        assert_eq!(store.load_clock(), Some(DateTime::UNIX_EPOCH));
    }
}

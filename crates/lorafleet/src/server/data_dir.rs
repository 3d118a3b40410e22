//! The data directory at start: created owner-only, checked writable, and locked so that one
//! lorafleet at a time uses it (two would store every simulated uplink twice and race on the
//! database's migrations).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::bail;

/// The lock file inside the data dir; it holds the PID of the lorafleet using the directory.
pub const LOCK_FILE: &str = "lorafleet.lock";

/// Held while the server runs; the OS releases the lock when the process ends, however it ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    pub path: PathBuf,
}

/// Creates the data dir if it is missing (owner-only: it holds password and token hashes).
pub fn create(dir: &Path) -> anyhow::Result<()> {
    let fresh = !dir.exists();
    if let Err(e) = std::fs::create_dir_all(dir) {
        bail!("{}", explain(dir, "cannot create the data directory", &e));
    }
    #[cfg(unix)]
    if fresh {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// Creates the data dir, takes its lock and writes this process's PID into the lock file, which
/// also proves the directory can be written before anything else is opened there.
pub fn lock(dir: &Path) -> anyhow::Result<DataDirLock> {
    create(dir)?;
    let path = dir.join(LOCK_FILE);
    let mut file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => bail!("{}", explain(&path, "cannot create the lock file", &e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "the data directory {} is in use by another lorafleet (PID {}, lock file {}); \
                 stop that one, or give this one another server.data_dir",
                dir.display(),
                holder_pid(&holder),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            bail!("{}", explain(&path, "cannot lock the lock file", &e))
        }
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        bail!("{}", explain(&path, "cannot write the lock file", &e));
    }
    Ok(DataDirLock { _file: file, path })
}

fn holder_pid(text: &str) -> String {
    match text.trim().parse::<u32>() {
        Ok(pid) => pid.to_string(),
        Err(_) => "unknown".into(),
    }
}

/// An I/O error at start as an operator can act on it: the path, what failed, what to do.
pub fn explain(path: &Path, what: &str, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        ErrorKind::ReadOnlyFilesystem => {
            "the file system is read-only: mount it writable or set server.data_dir to a writable directory"
        }
        ErrorKind::PermissionDenied => {
            "permission denied: give the user running lorafleet write access or set server.data_dir elsewhere"
        }
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            "no space left on the device: free some space (or grow the volume) and start again"
        }
        _ => "check that the directory exists, is writable and has free space",
    };
    format!("{what} {}: {e}; {hint}", path.display())
}

/// A database error at start (opening or migrating), with the same kind of advice.
pub fn explain_database(path: &Path, e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let hint = if text.contains("disk is full") || text.contains("No space left") {
        "no space left on the device: free some space (or grow the volume) and start again"
    } else if text.contains("readonly") || text.contains("read-only") {
        "the database cannot be written: mount the data dir writable or set server.data_dir to a writable directory"
    } else if text.contains("unable to open") {
        "the database file cannot be opened: check that server.data_dir exists and is writable"
    } else {
        "see the error above"
    };
    format!("database {}: {text}; {hint}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_directory_and_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let second = lock(dir.path()).unwrap_err().to_string();
        assert!(
            second.contains(&dir.path().display().to_string()),
            "{second}"
        );
        assert!(
            second.contains(&format!("PID {}", std::process::id())),
            "{second}"
        );
        drop(first);
        lock(dir.path()).unwrap();
    }

    #[test]
    fn io_errors_say_what_to_do() {
        let e = std::io::Error::from(ErrorKind::StorageFull);
        let text = explain(Path::new("/data/x"), "cannot write", &e);
        assert!(text.starts_with("cannot write /data/x: "), "{text}");
        assert!(text.contains("free some space"), "{text}");
        let e = std::io::Error::from(ErrorKind::ReadOnlyFilesystem);
        assert!(explain(Path::new("/d"), "w", &e).contains("mount it writable"));
    }
}

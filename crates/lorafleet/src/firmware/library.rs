//! Files of the library: indexing `firmware.dir`, storing uploads, reading images back.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::{Stream, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use super::{check_file_name, detect_trailer, parse_sidecar, FirmwareImage, Metadata};
use crate::config::Config;
use crate::storage::firmware::{self as store, NewImage};
use crate::storage::Db;

/// Rescans and uploads must not interleave: both decide "new or duplicate" from the index.
static INDEX_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Directory of uploaded images.
pub fn upload_dir(config: &Config) -> PathBuf {
    config.server.data_dir.join("firmware")
}

/// What one file contains, as far as the index cares.
struct Scanned {
    size: u64,
    sha256: String,
    trailer: Result<Option<super::TrailerInfo>, String>,
}

/// Hashes a file and reads its tail; blocking, run it off the async threads.
fn scan_file(path: &Path) -> std::io::Result<Scanned> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    // The last bytes seen, enough for the trailer.
    let mut tail: Vec<u8> = Vec::with_capacity(2 * lorafleet_codec::firmware_trailer::TRAILER_LEN);
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        tail.extend_from_slice(&buf[..n]);
        let keep = lorafleet_codec::firmware_trailer::TRAILER_LEN;
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
    Ok(Scanned {
        size,
        sha256: hex::encode(hasher.finalize()),
        trailer: detect_trailer(&tail),
    })
}

/// What a rescan did.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ScanReport {
    /// The directory scanned.
    pub dir: String,
    /// Why the directory could not be read, if it could not.
    pub dir_error: Option<String>,
    pub added: Vec<i64>,
    pub updated: Vec<i64>,
    /// Images whose file is gone.
    pub missing: Vec<i64>,
    /// Files skipped because the library already has the same bytes.
    pub duplicates: Vec<DuplicateFile>,
    /// Files (or sidecars) that could not be read.
    pub errors: Vec<FileError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DuplicateFile {
    pub file: String,
    pub existing_id: i64,
    pub existing_file_name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileError {
    pub file: String,
    pub error: String,
}

/// Indexes `firmware.dir`: new files are added, changed ones re-read, vanished ones marked
/// missing. Sidecars `<file>.toml` supply metadata.
///
/// One instance at a time on a shared database: two scans of one directory at once would both
/// find a new file "new" and index it twice.
pub async fn rescan(db: &Db, config: &Config) -> anyhow::Result<ScanReport> {
    let _guard = INDEX_LOCK.lock().await;
    let held = crate::storage::advisory::lock(db, crate::storage::advisory::Job::FirmwareRescan)
        .await
        .context("waiting for another instance's firmware rescan")?;
    let report = scan_dir(db, config).await;
    held.release().await?;
    report
}

async fn scan_dir(db: &Db, config: &Config) -> anyhow::Result<ScanReport> {
    let dir = config.firmware.dir.clone();
    let mut report = ScanReport {
        dir: dir.display().to_string(),
        ..Default::default()
    };
    let mut seen_paths = Vec::new();
    match std::fs::read_dir(&dir) {
        Err(e) => {
            report.dir_error = Some(format!("cannot read {}: {e}", dir.display()));
        }
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.') && !n.ends_with(".toml"))
                .collect();
            names.sort();
            for name in names {
                let path = dir.join(&name);
                let path_text = path.display().to_string();
                seen_paths.push(path_text.clone());
                if let Err(e) = index_dir_file(db, &name, &path, &mut report).await {
                    report.errors.push(FileError {
                        file: name.clone(),
                        error: format!("{e:#}"),
                    });
                }
            }
        }
    }
    if report.dir_error.is_none() {
        for image in store::dir_images(db).await? {
            if image.missing_at.is_none() && !seen_paths.contains(&image.path) {
                store::mark_missing(db, image.id).await?;
                report.missing.push(image.id);
            }
        }
    }
    Ok(report)
}

async fn index_dir_file(
    db: &Db,
    name: &str,
    path: &Path,
    report: &mut ScanReport,
) -> anyhow::Result<()> {
    let p = path.to_path_buf();
    let scanned = tokio::task::spawn_blocking(move || scan_file(&p))
        .await
        .context("hashing task")?
        .with_context(|| format!("reading {}", path.display()))?;
    let sidecar_path = PathBuf::from(format!("{}.toml", path.display()));
    let metadata = match std::fs::read_to_string(&sidecar_path) {
        Ok(text) => parse_sidecar(&text).unwrap_or_else(|e| {
            report.errors.push(FileError {
                file: format!("{name}.toml"),
                error: e,
            });
            Metadata::default()
        }),
        Err(_) => Metadata::default(),
    };
    let (trailer, trailer_error) = match scanned.trailer {
        Ok(t) => (t, None),
        Err(e) => (None, Some(e)),
    };
    let new = NewImage {
        file_name: name.to_string(),
        path: path.display().to_string(),
        source: "dir",
        size: scanned.size as i64,
        sha256: scanned.sha256.clone(),
        trailer,
        trailer_error,
        metadata,
    };
    let duplicate = store::find_by_sha(db, &scanned.sha256)
        .await?
        .filter(|other| other.path != new.path);
    if let Some(other) = duplicate {
        report.duplicates.push(DuplicateFile {
            file: name.to_string(),
            existing_id: other.id,
            existing_file_name: other.file_name,
        });
        return Ok(());
    }
    match store::find_by_path(db, &new.path).await? {
        Some(existing) => {
            if store::update_from_scan(db, existing.id, &new).await? {
                report.updated.push(existing.id);
            }
        }
        None => {
            let id = store::insert(db, &new).await?;
            report.added.push(id);
        }
    }
    Ok(())
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    BadName(String),
    #[error("the image is larger than firmware.max_size ({max} bytes)")]
    TooLarge { max: u64 },
    #[error("the library already has this image (same SHA-256) as #{} {:?}", .existing.id, .existing.file_name)]
    Duplicate { existing: Box<FirmwareImage> },
    #[error(
        "an uploaded image named {0:?} already exists; rename the file or delete that image first"
    )]
    NameTaken(String),
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error("the image is empty")]
    Empty,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

const PART_PREFIX: &str = ".upload-";
const PART_SUFFIX: &str = ".part";

/// An upload being received. Removed when dropped, which also happens when the client goes
/// away mid-upload (the request's future is dropped with the connection), so no half image
/// stays behind.
struct PartFile {
    path: PathBuf,
    kept: bool,
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes uploads left half-received by a previous run that was killed; called at start,
/// before any new upload can be in progress.
pub async fn remove_stale_uploads(config: &Config) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(upload_dir(config)).await else {
        return 0;
    };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PART_PREFIX)
            && name.ends_with(PART_SUFFIX)
            && tokio::fs::remove_file(entry.path()).await.is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Streams an upload to `<data_dir>/firmware/<name>`, enforcing `firmware.max_size` while the
/// bytes arrive (nothing larger is ever held or kept), then indexes it.
pub async fn store_upload<S, B, E>(
    db: &Db,
    config: &Config,
    file_name: &str,
    mut body: S,
) -> Result<FirmwareImage, UploadError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    check_file_name(file_name).map_err(UploadError::BadName)?;
    let dir = upload_dir(config);
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let final_path = dir.join(file_name);
    let mut part = PartFile {
        path: dir.join(format!(
            "{PART_PREFIX}{}{PART_SUFFIX}",
            crate::auth::random_secret()
        )),
        kept: false,
    };
    let part_path = part.path.clone();
    let result = async {
        let mut file = tokio::fs::File::create(&part_path)
            .await
            .with_context(|| format!("creating {}", part_path.display()))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut tail: Vec<u8> = Vec::new();
        let keep = lorafleet_codec::firmware_trailer::TRAILER_LEN;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
            let bytes = chunk.as_ref();
            size += bytes.len() as u64;
            if size > config.firmware.max_size {
                return Err(UploadError::TooLarge {
                    max: config.firmware.max_size,
                });
            }
            hasher.update(bytes);
            tail.extend_from_slice(bytes);
            if tail.len() > keep {
                tail.drain(..tail.len() - keep);
            }
            file.write_all(bytes).await.context("writing the upload")?;
        }
        file.flush().await.context("writing the upload")?;
        file.sync_all().await.context("writing the upload")?;
        if size == 0 {
            return Err(UploadError::Empty);
        }
        Ok((size, hex::encode(hasher.finalize()), tail))
    }
    .await;
    let (size, sha256, tail) = result?;
    let _guard = INDEX_LOCK.lock().await;
    match store::find_by_sha(db, &sha256).await {
        Ok(Some(existing)) => {
            return Err(UploadError::Duplicate {
                existing: Box::new(existing),
            })
        }
        Ok(None) => {}
        Err(e) => return Err(UploadError::Internal(e.into())),
    }
    let path_text = final_path.display().to_string();
    let taken = tokio::fs::try_exists(&final_path).await.unwrap_or(true)
        || matches!(store::find_by_path(db, &path_text).await, Ok(Some(_)));
    if taken {
        return Err(UploadError::NameTaken(file_name.to_string()));
    }
    if let Err(e) = tokio::fs::rename(&part_path, &final_path).await {
        return Err(UploadError::Internal(
            anyhow::Error::new(e).context("moving the upload into place"),
        ));
    }
    part.kept = true;
    let (trailer, trailer_error) = match detect_trailer(&tail) {
        Ok(t) => (t, None),
        Err(e) => (None, Some(e)),
    };
    let new = NewImage {
        file_name: file_name.to_string(),
        path: path_text,
        source: "upload",
        size: size as i64,
        sha256,
        trailer,
        trailer_error,
        metadata: Metadata::default(),
    };
    // The bytes go to the database too, so any instance on it can serve a campaign of this
    // upload (the file is this instance's).
    let bytes = tokio::fs::read(&final_path)
        .await
        .context("reading the upload back")?;
    crate::storage::firmware_blobs::put(db, &new.sha256, &bytes)
        .await
        .map_err(anyhow::Error::from)?;
    let id = store::insert(db, &new).await.map_err(anyhow::Error::from)?;
    let image = store::get(db, id)
        .await
        .map_err(anyhow::Error::from)?
        .context("the image just stored")?;
    Ok(image)
}

/// Removes an image's file from disk; the row stays (campaigns name it) but is marked deleted.
pub async fn delete(db: &Db, image: &FirmwareImage) -> anyhow::Result<()> {
    let _guard = INDEX_LOCK.lock().await;
    match tokio::fs::remove_file(&image.path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("deleting {}", image.path))),
    }
    store::mark_deleted(db, image.id).await?;
    Ok(())
}

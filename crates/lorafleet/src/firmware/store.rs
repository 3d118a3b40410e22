//! Where a campaign's image bytes come from: the [`ImageStore`] trait, with the database as
//! the default ([`DatabaseStore`]). Images are content-addressed (SHA-256), so a copy, once
//! checked, stays right: the bytes are read and hashed from disk once, stored in the database
//! for every instance, and kept in memory for the campaign's later steps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::FirmwareImage;
use crate::storage::{firmware_blobs, Db};

/// Gives the bytes of an indexed image.
#[async_trait::async_trait]
pub trait ImageStore: Send + Sync {
    async fn load(&self, image: &FirmwareImage) -> anyhow::Result<Arc<Vec<u8>>>;
}

/// The database as the store, with a small in-memory cache by SHA-256.
pub struct DatabaseStore {
    db: Db,
    cache: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

/// Images kept in memory; beyond that the cache starts again (a campaign step reloads from the
/// database, not from disk).
const CACHED_IMAGES: usize = 8;

impl DatabaseStore {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, sha256: &str) -> Option<Arc<Vec<u8>>> {
        self.cache.lock().ok()?.get(sha256).cloned()
    }

    fn remember(&self, sha256: &str, bytes: Arc<Vec<u8>>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHED_IMAGES {
                cache.clear();
            }
            cache.insert(sha256.to_string(), bytes);
        }
    }
}

#[async_trait::async_trait]
impl ImageStore for DatabaseStore {
    async fn load(&self, image: &FirmwareImage) -> anyhow::Result<Arc<Vec<u8>>> {
        if let Some(bytes) = self.cached(&image.sha256) {
            return Ok(bytes);
        }
        let bytes = match firmware_blobs::get(&self.db, &image.sha256).await? {
            Some(bytes) => check(image, bytes, "in the database")?,
            None => {
                let bytes = tokio::fs::read(&image.path)
                    .await
                    .with_context(|| format!("reading firmware image {}", image.path))?;
                let bytes = check(image, bytes, "on disk")?;
                firmware_blobs::put(&self.db, &image.sha256, &bytes).await?;
                bytes
            }
        };
        let bytes = Arc::new(bytes);
        self.remember(&image.sha256, bytes.clone());
        Ok(bytes)
    }
}

/// The bytes, if they are the image that was indexed: a file changed behind lorafleet's back
/// is never sent to devices.
fn check(image: &FirmwareImage, bytes: Vec<u8>, where_: &str) -> anyhow::Result<Vec<u8>> {
    let sha = hex::encode(Sha256::digest(&bytes));
    anyhow::ensure!(
        sha == image.sha256,
        "firmware image {} changed {where_} since it was indexed (SHA-256 {sha}, expected {}); rescan the library",
        image.path,
        image.sha256
    );
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::firmware::{self as rows, NewImage};

    async fn indexed(db: &Db, path: &std::path::Path, bytes: &[u8]) -> FirmwareImage {
        std::fs::write(path, bytes).unwrap();
        let new = NewImage {
            file_name: "fw.bin".into(),
            path: path.display().to_string(),
            source: "dir",
            size: bytes.len() as i64,
            sha256: hex::encode(Sha256::digest(bytes)),
            trailer: None,
            trailer_error: None,
            metadata: super::super::Metadata::default(),
        };
        let id = rows::insert(db, &new).await.unwrap();
        rows::get(db, id).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn an_image_read_once_is_served_from_the_database_to_any_instance() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = crate::storage::connect(&url).await.unwrap();
        let file = dir.path().join("fw.bin");
        let image = indexed(&db, &file, b"firmware bytes").await;
        let first = DatabaseStore::new(db.clone());
        assert_eq!(
            first.load(&image).await.unwrap().as_slice(),
            b"firmware bytes"
        );
        // Another instance, without the file: the database has the bytes.
        std::fs::remove_file(&file).unwrap();
        let other = DatabaseStore::new(db.clone());
        assert_eq!(
            other.load(&image).await.unwrap().as_slice(),
            b"firmware bytes"
        );
    }

    #[tokio::test]
    async fn a_file_changed_before_it_was_first_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = crate::storage::connect(&url).await.unwrap();
        let file = dir.path().join("fw.bin");
        let image = indexed(&db, &file, b"the indexed image").await;
        std::fs::write(&file, b"something else").unwrap();
        let why = DatabaseStore::new(db.clone())
            .load(&image)
            .await
            .unwrap_err()
            .to_string();
        assert!(why.contains("changed on disk"), "{why}");
        assert!(firmware_blobs::get(&db, &image.sha256)
            .await
            .unwrap()
            .is_none());
    }
}

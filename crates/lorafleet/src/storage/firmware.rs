//! Firmware images (`firmware_images`): the library's rows, next to the queries that read them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{time_now, Binds, Cols, Db, Result};

/// What the signed-package trailer says about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrailerInfo {
    /// The version field as stored (typically a Unix build time).
    pub version: u32,
    /// The version read as a Unix time, RFC 3339.
    pub version_time: String,
    /// `full`, `jdiff` or `ddelta`.
    pub kind: String,
    /// Size of the firmware a delta applies to (0 for a full image).
    pub old_firmware_size: u32,
    pub manufacturer_uuid: String,
    pub device_class_uuid: String,
    pub signature_length: usize,
}

/// Operator metadata of an image: what the trailer cannot say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// What the image is for (device type, board, ...).
    pub target: Option<String>,
    /// The version a delta applies to.
    pub from_version: Option<String>,
    /// The version the devices run after the update.
    pub to_version: Option<String>,
    /// How the body is compressed, if at all.
    pub compression: Option<String>,
    pub notes: Option<String>,
    /// How the trailer's version is written: `semver`, `gps_time`, `unix_time` or `raw`
    /// (unset: the way the devices that run it write theirs).
    #[serde(default)]
    pub versioning: Option<String>,
}

/// The metadata field names, in the order the API lists them.
pub const METADATA_FIELDS: [&str; 6] = [
    "target",
    "from_version",
    "to_version",
    "compression",
    "notes",
    "versioning",
];

impl Metadata {
    pub fn get(&self, field: &str) -> Option<&String> {
        match field {
            "target" => self.target.as_ref(),
            "from_version" => self.from_version.as_ref(),
            "to_version" => self.to_version.as_ref(),
            "compression" => self.compression.as_ref(),
            "notes" => self.notes.as_ref(),
            "versioning" => self.versioning.as_ref(),
            _ => None,
        }
    }

    pub fn set(&mut self, field: &str, value: Option<String>) {
        // Empty text means "not set", so clearing a field in a form removes it.
        let value = value.filter(|v| !v.trim().is_empty());
        match field {
            "target" => self.target = value,
            "from_version" => self.from_version = value,
            "to_version" => self.to_version = value,
            "compression" => self.compression = value,
            "notes" => self.notes = value,
            "versioning" => self.versioning = value,
            _ => {}
        }
    }
}

/// One image of the library as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FirmwareImage {
    pub id: i64,
    pub file_name: String,
    /// `dir` (found in firmware.dir) or `upload`.
    pub source: String,
    pub size: i64,
    pub sha256: String,
    pub added_at: String,
    /// Set when the file has gone from disk since it was indexed.
    pub missing_at: Option<String>,
    pub deleted_at: Option<String>,
    pub trailer: Option<TrailerInfo>,
    /// Why a trailer-looking tail could not be read.
    pub trailer_error: Option<String>,
    #[serde(flatten)]
    pub metadata: Metadata,
    /// Metadata fields edited through the API (a rescan keeps them).
    pub edited: Vec<String>,
    /// Campaigns that use the image and are running now.
    pub running_campaigns: Vec<i64>,
    #[serde(skip)]
    pub path: String,
}

/// What indexing a file found out, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub file_name: String,
    pub path: String,
    pub source: &'static str,
    pub size: i64,
    pub sha256: String,
    pub trailer: Option<TrailerInfo>,
    pub trailer_error: Option<String>,
    pub metadata: Metadata,
}

const COLUMNS: &str = "id, file_name, path, source, size, sha256, added_at, missing_at, deleted_at,
    trailer_version, trailer_kind, trailer_old_size, trailer_manufacturer_uuid,
    trailer_device_class_uuid, trailer_signature_len, trailer_error,
    target, from_version, to_version, compression, notes, versioning, edited_json";

fn from_row(r: &impl Cols) -> FirmwareImage {
    let trailer = r
        .get::<Option<i64>>("trailer_version")
        .map(|v| TrailerInfo {
            version: v as u32,
            version_time: lorafleet_codec::time::rfc3339_from_unix(v),
            kind: r.get::<Option<String>>("trailer_kind").unwrap_or_default(),
            old_firmware_size: r.get::<Option<i64>>("trailer_old_size").unwrap_or(0) as u32,
            manufacturer_uuid: r
                .get::<Option<String>>("trailer_manufacturer_uuid")
                .unwrap_or_default(),
            device_class_uuid: r
                .get::<Option<String>>("trailer_device_class_uuid")
                .unwrap_or_default(),
            signature_length: r.get::<Option<i64>>("trailer_signature_len").unwrap_or(0) as usize,
        });
    FirmwareImage {
        id: r.get("id"),
        file_name: r.get("file_name"),
        source: r.get("source"),
        size: r.get("size"),
        sha256: r.get("sha256"),
        added_at: r.get("added_at"),
        missing_at: r.get("missing_at"),
        deleted_at: r.get("deleted_at"),
        trailer,
        trailer_error: r.get("trailer_error"),
        metadata: Metadata {
            target: r.get("target"),
            from_version: r.get("from_version"),
            to_version: r.get("to_version"),
            compression: r.get("compression"),
            notes: r.get("notes"),
            versioning: r.get("versioning"),
        },
        edited: serde_json::from_str(&r.get::<String>("edited_json")).unwrap_or_default(),
        running_campaigns: Vec::new(),
        path: r.get("path"),
    }
}

async fn with_campaigns(db: &Db, mut images: Vec<FirmwareImage>) -> Result<Vec<FirmwareImage>> {
    let rows: Vec<(i64, i64)> = on!(db, c => sqlx::query_as("SELECT firmware_id, id FROM campaigns WHERE state IN ('running', 'paused') ORDER BY id")
            .fetch_all(c).await)?;
    for image in &mut images {
        image.running_campaigns = rows
            .iter()
            .filter(|(f, _)| *f == image.id)
            .map(|(_, c)| *c)
            .collect();
    }
    Ok(images)
}

/// Live images (not deleted), newest first.
pub async fn list(db: &Db) -> Result<Vec<FirmwareImage>> {
    let rows = on!(db, c => sqlx::query(&format!(
        "SELECT {COLUMNS} FROM firmware_images WHERE deleted_at IS NULL ORDER BY added_at DESC, id DESC"
    ))
    .fetch_all(c).await?
    .iter()
    .map(from_row)
    .collect());
    with_campaigns(db, rows).await
}

/// One image, deleted ones included (campaigns still name them).
pub async fn get(db: &Db, id: i64) -> Result<Option<FirmwareImage>> {
    let row = on!(db, c => sqlx::query(&format!(
        "SELECT {COLUMNS} FROM firmware_images WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(c).await?
    .as_ref()
    .map(from_row));
    match row {
        Some(image) => Ok(with_campaigns(db, vec![image]).await?.pop()),
        None => Ok(None),
    }
}

pub async fn find_by_sha(db: &Db, sha256: &str) -> Result<Option<FirmwareImage>> {
    let row = on!(db, c => sqlx::query(&format!(
        "SELECT {COLUMNS} FROM firmware_images WHERE sha256 = $1 AND deleted_at IS NULL"
    ))
    .bind(sha256)
    .fetch_optional(c).await?
    .as_ref()
    .map(from_row));
    Ok(row)
}

pub async fn find_by_path(db: &Db, path: &str) -> Result<Option<FirmwareImage>> {
    let row = on!(db, c => sqlx::query(&format!(
        "SELECT {COLUMNS} FROM firmware_images WHERE path = $1 AND deleted_at IS NULL"
    ))
    .bind(path)
    .fetch_optional(c).await?
    .as_ref()
    .map(from_row));
    Ok(row)
}

/// Binds the trailer columns (trailer_version .. trailer_error) then the metadata columns
/// (target .. versioning) in the order `insert` and `update_from_scan` both name them.
fn bind_trailer_and_metadata<'q, Q: Binds<'q>>(
    query: Q,
    image: &'q NewImage,
    meta: &'q Metadata,
) -> Q {
    let t = image.trailer.as_ref();
    query
        .bind(t.map(|t| t.version as i64))
        .bind(t.map(|t| t.kind.clone()))
        .bind(t.map(|t| t.old_firmware_size as i64))
        .bind(t.map(|t| t.manufacturer_uuid.clone()))
        .bind(t.map(|t| t.device_class_uuid.clone()))
        .bind(t.map(|t| t.signature_length as i64))
        .bind(&image.trailer_error)
        .bind(&meta.target)
        .bind(&meta.from_version)
        .bind(&meta.to_version)
        .bind(&meta.compression)
        .bind(&meta.notes)
        .bind(&meta.versioning)
}

pub async fn insert(db: &Db, image: &NewImage) -> Result<i64> {
    on!(db, c => {
    let query = sqlx::query(
        "INSERT INTO firmware_images (file_name, path, source, size, sha256, added_at,
            trailer_version, trailer_kind, trailer_old_size, trailer_manufacturer_uuid,
            trailer_device_class_uuid, trailer_signature_len, trailer_error,
            target, from_version, to_version, compression, notes, versioning)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING id",
    )
    .bind(&image.file_name)
    .bind(&image.path)
    .bind(image.source)
    .bind(image.size)
    .bind(&image.sha256)
    .bind(time_now());
    let row = bind_trailer_and_metadata(query, image, &image.metadata)
        .fetch_one(c)
        .await?;
    Ok(row.get("id"))
    })
}

/// Refreshes what a rescan read for an indexed file: contents (when the file changed in place)
/// and the sidecar's metadata for the fields not edited through the API.
pub async fn update_from_scan(db: &Db, id: i64, image: &NewImage) -> Result<bool> {
    let current = match get(db, id).await? {
        Some(c) => c,
        None => return Ok(false),
    };
    let mut meta = current.metadata.clone();
    for field in METADATA_FIELDS {
        if !current.edited.iter().any(|e| e == field) {
            meta.set(field, image.metadata.get(field).cloned());
        }
    }
    let changed = current.sha256 != image.sha256
        || current.size != image.size
        || current.missing_at.is_some()
        || meta != current.metadata
        || current.trailer != image.trailer
        || current.trailer_error != image.trailer_error;
    if !changed {
        return Ok(false);
    }
    on!(db, c => {
    let query = sqlx::query(
        "UPDATE firmware_images SET size = $1, sha256 = $2, missing_at = NULL,
            trailer_version = $3, trailer_kind = $4, trailer_old_size = $5,
            trailer_manufacturer_uuid = $6, trailer_device_class_uuid = $7,
            trailer_signature_len = $8, trailer_error = $9,
            target = $10, from_version = $11, to_version = $12, compression = $13, notes = $14,
            versioning = $15
         WHERE id = $16",
    )
    .bind(image.size)
    .bind(&image.sha256);
    bind_trailer_and_metadata(query, image, &meta)
        .bind(id)
        .execute(c)
        .await?;
    Ok(true)
    })
}

pub async fn mark_missing(db: &Db, id: i64) -> Result<()> {
    on!(db, c => sqlx::query("UPDATE firmware_images SET missing_at = $1 WHERE id = $2 AND missing_at IS NULL")
        .bind(time_now())
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Live images that came from firmware.dir (what a rescan compares against).
pub async fn dir_images(db: &Db) -> Result<Vec<FirmwareImage>> {
    let rows = on!(db, c => sqlx::query(&format!(
        "SELECT {COLUMNS} FROM firmware_images WHERE source = 'dir' AND deleted_at IS NULL"
    ))
    .fetch_all(c).await?
    .iter()
    .map(from_row)
    .collect());
    Ok(rows)
}

/// Stores edited metadata and remembers which fields were edited.
pub async fn update_metadata(db: &Db, id: i64, meta: &Metadata, edited: &[String]) -> Result<()> {
    on!(db, c => sqlx::query(
        "UPDATE firmware_images SET target = $1, from_version = $2, to_version = $3,
            compression = $4, notes = $5, versioning = $6, edited_json = $7 WHERE id = $8",
    )
    .bind(&meta.target)
    .bind(&meta.from_version)
    .bind(&meta.to_version)
    .bind(&meta.compression)
    .bind(&meta.notes)
    .bind(&meta.versioning)
    .bind(serde_json::to_string(edited).unwrap_or_else(|_| "[]".into()))
    .bind(id)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn mark_deleted(db: &Db, id: i64) -> Result<()> {
    on!(db, c => sqlx::query("UPDATE firmware_images SET deleted_at = $1 WHERE id = $2")
        .bind(time_now())
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

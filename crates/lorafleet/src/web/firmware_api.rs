//! `/api/firmware`: the firmware library.

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use utoipa::ToSchema;

use super::auth_api::AuthUser;
use super::{ApiError, ApiJson};
use crate::firmware::library::{self, ScanReport, UploadError};
use crate::firmware::spelling::{self, SpelledVersion};
use crate::firmware::{FirmwareImage, Metadata, METADATA_FIELDS};
use crate::ingest::writer::Change;
use crate::storage::firmware as store;
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct FirmwareList {
    pub images: Vec<ImageView>,
}

/// An image with its version written the way its devices write theirs.
#[derive(Serialize, ToSchema)]
pub struct ImageView {
    #[serde(flatten)]
    pub image: FirmwareImage,
    /// The trailer's version in the devices' versioning type (none without a trailer).
    pub spelled: Option<SpelledVersion>,
}

async fn view(app: &AppState, image: FirmwareImage) -> Result<ImageView, ApiError> {
    let spelled = match &image.trailer {
        Some(t) => {
            let stated = image.metadata.versioning.as_deref();
            let nearest = match stated {
                Some(_) => None,
                None => crate::storage::version_status::versioning_near(&app.db, t.version).await?,
            };
            Some(spelling::spell_as(
                t.version,
                stated,
                spelling::near(t.version, nearest),
            ))
        }
        None => None,
    };
    Ok(ImageView { image, spelled })
}

/// Room for the multipart framing and the metadata fields around the file.
pub const MULTIPART_OVERHEAD: usize = 1024 * 1024;

/// The library, newest first.
#[utoipa::path(get, path = "/api/firmware", responses((status = 200, body = FirmwareList)))]
pub async fn list(
    _user: AuthUser,
    State(app): State<AppState>,
) -> Result<Json<FirmwareList>, ApiError> {
    let mut images = Vec::new();
    for image in store::list(&app.db).await? {
        images.push(view(&app, image).await?);
    }
    Ok(Json(FirmwareList { images }))
}

/// Indexes `firmware.dir` again.
#[utoipa::path(post, path = "/api/firmware/rescan", responses((status = 200, body = ScanReport)))]
pub async fn rescan(
    _user: AuthUser,
    State(app): State<AppState>,
) -> Result<Json<ScanReport>, ApiError> {
    let report = library::rescan(&app.db, &app.config).await?;
    let _ = app.changes.send(Change::Firmware);
    Ok(Json(report))
}

async fn image_or_404(app: &AppState, id: i64) -> Result<FirmwareImage, ApiError> {
    store::get(&app.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no firmware image {id}")))
}

/// One image.
#[utoipa::path(get, path = "/api/firmware/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = ImageView), (status = 404, body = super::error::ErrorBody)))]
pub async fn detail(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<ImageView>, ApiError> {
    let image = image_or_404(&app, id).await?;
    Ok(Json(view(&app, image).await?))
}

fn upload_error(e: UploadError) -> Response {
    let (status, existing) = match &e {
        UploadError::BadName(_) | UploadError::Empty => (StatusCode::BAD_REQUEST, None),
        UploadError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, None),
        UploadError::Duplicate { existing } => (
            StatusCode::CONFLICT,
            Some(serde_json::json!({ "id": existing.id, "file_name": existing.file_name })),
        ),
        UploadError::NameTaken(_) => (StatusCode::CONFLICT, None),
        UploadError::Body(_) => (StatusCode::BAD_REQUEST, None),
        UploadError::Internal(inner) => {
            return ApiError::internal(format!("{inner:#}")).into_response()
        }
    };
    let mut body = serde_json::json!({ "error": e.to_string(), "field": "file" });
    if let Some(existing) = existing {
        body["existing"] = existing;
    }
    (status, Json(body)).into_response()
}

/// Uploads an image: multipart with the bytes in field `file` and, optionally, text fields
/// `target`, `from_version`, `to_version`, `compression`, `notes`.
#[utoipa::path(post, path = "/api/firmware", request_body(content_type = "multipart/form-data", content = String),
    responses((status = 201, body = FirmwareImage), (status = 400, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody)))]
pub async fn upload(
    _user: AuthUser,
    State(app): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let max = app.config.firmware.max_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max.saturating_add(MULTIPART_OVERHEAD as u64)) {
        return upload_error(UploadError::TooLarge { max });
    }
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => {
            return ApiError::field(
                "file",
                format!(
                    "expected a multipart/form-data body with the image in field \"file\": {e}"
                ),
            )
            .into_response()
        }
    };
    let mut image: Option<FirmwareImage> = None;
    let mut meta = Metadata::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return upload_error(UploadError::TooLarge { max })
            }
            Err(e) => return upload_error(UploadError::Body(e.body_text())),
        };
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            if image.is_some() {
                return ApiError::field("file", "send one image per request").into_response();
            }
            let file_name = field.file_name().unwrap_or("").to_string();
            let stream = field.map(|r| r.map_err(|e| e.body_text()));
            match library::store_upload(&app.db, &app.config, &file_name, Box::pin(stream)).await {
                Ok(i) => image = Some(i),
                Err(e) => return upload_error(e),
            }
        } else if METADATA_FIELDS.contains(&name.as_str()) {
            match field.text().await {
                Ok(text) => meta.set(&name, Some(text)),
                Err(e) => return upload_error(UploadError::Body(e.body_text())),
            }
        }
    }
    let Some(mut image) = image else {
        return ApiError::field("file", "the form has no field \"file\" with the image")
            .into_response();
    };
    if meta != Metadata::default() {
        let edited: Vec<String> = METADATA_FIELDS
            .iter()
            .filter(|f| meta.get(f).is_some())
            .map(|f| f.to_string())
            .collect();
        if let Err(e) = store::update_metadata(&app.db, image.id, &meta, &edited).await {
            return ApiError::from(e).into_response();
        }
        image.metadata = meta;
        image.edited = edited;
    }
    let _ = app.changes.send(Change::Firmware);
    (StatusCode::CREATED, Json(image)).into_response()
}

/// Edits metadata: any of `target`, `from_version`, `to_version`, `compression`, `notes`,
/// `versioning` (`semver` | `gps_time` | `unix_time` | `raw`);
/// `null` or `""` clears a field. Edited fields keep their value across rescans.
#[utoipa::path(patch, path = "/api/firmware/{id}", params(("id" = i64, Path)), request_body = Metadata,
    responses((status = 200, body = FirmwareImage), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn update(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<FirmwareImage>, ApiError> {
    let image = image_or_404(&app, id).await?;
    if image.deleted_at.is_some() {
        return Err(ApiError::not_found(format!(
            "firmware image {id} was deleted"
        )));
    }
    let mut meta = image.metadata.clone();
    let mut edited = image.edited.clone();
    for (key, value) in body {
        if !METADATA_FIELDS.contains(&key.as_str()) {
            return Err(ApiError::field(
                key.clone(),
                format!(
                    "{key} cannot be edited (editable: {})",
                    METADATA_FIELDS.join(", ")
                ),
            ));
        }
        let text = match value {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => {
                return Err(ApiError::field(
                    key.clone(),
                    format!("{key} must be text or null"),
                ))
            }
        };
        if text.as_ref().is_some_and(|t| t.len() > 10_000) {
            return Err(ApiError::field(
                key.clone(),
                format!("{key} is longer than 10000 bytes"),
            ));
        }
        if let Some(t) = text.as_deref().filter(|t| !t.trim().is_empty()) {
            crate::firmware::check_metadata(&key, t)
                .map_err(|m| ApiError::field(key.clone(), m))?;
        }
        meta.set(&key, text);
        if !edited.contains(&key) {
            edited.push(key);
        }
    }
    store::update_metadata(&app.db, id, &meta, &edited).await?;
    let _ = app.changes.send(Change::Firmware);
    Ok(Json(image_or_404(&app, id).await?))
}

/// Deletes an image (its file too); refused while a running campaign uses it.
#[utoipa::path(delete, path = "/api/firmware/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn remove(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let image = image_or_404(&app, id).await?;
    if image.deleted_at.is_some() {
        return Err(ApiError::not_found(format!(
            "firmware image {id} was already deleted"
        )));
    }
    if !image.running_campaigns.is_empty() {
        let list: Vec<String> = image
            .running_campaigns
            .iter()
            .map(|c| format!("#{c}"))
            .collect();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "image {:?} is used by running campaign{} {}; cancel or wait for {} first",
                image.file_name,
                if list.len() == 1 { "" } else { "s" },
                list.join(", "),
                if list.len() == 1 { "it" } else { "them" },
            ),
        ));
    }
    library::delete(&app.db, &image).await?;
    let _ = app.changes.send(Change::Firmware);
    Ok(StatusCode::NO_CONTENT)
}

/// A file name safe inside a quoted Content-Disposition parameter.
fn attachment_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The image's bytes.
#[utoipa::path(get, path = "/api/firmware/{id}/download", params(("id" = i64, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = super::error::ErrorBody)))]
pub async fn download(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let image = image_or_404(&app, id).await?;
    if image.deleted_at.is_some() {
        return Err(ApiError::not_found(format!(
            "firmware image {id} was deleted"
        )));
    }
    let file = tokio::fs::File::open(&image.path).await.map_err(|e| {
        ApiError::not_found(format!(
            "the file of image {id} cannot be read ({}): {e}",
            image.path
        ))
    })?;
    let stream = futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}\"",
                    attachment_name(&image.file_name)
                ),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

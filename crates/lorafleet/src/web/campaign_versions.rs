//! `GET /api/campaigns/{id}/versions`: what a campaign updates from and to, written the way its
//! devices write versions (issue 10 item 3), so the campaign page reads "1.2.0 -> 1.3.0" and
//! not a raw number beside a version string.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth_api::AuthUser;
use super::ApiError;
use crate::devices::{version_dto, VersionDto};
use crate::firmware::spelling::{self, SpelledVersion};
use crate::storage;
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct FromVersion {
    /// A running version of the campaign's devices; none for devices that have not reported one.
    pub version: Option<VersionDto>,
    pub devices: i64,
}

#[derive(Serialize, ToSchema)]
pub struct CampaignVersions {
    /// The devices' running versions now, most devices first.
    pub from: Vec<FromVersion>,
    /// The image's trailer version in the versioning type most of the campaign's devices
    /// reported (else that of the devices nearest its version); none without a trailer.
    pub to: Option<SpelledVersion>,
    /// The image's `to_version` metadata (sidecar or API), as written there.
    pub to_version: Option<String>,
}

/// What the campaign's devices run and what the image will make them run, in their spelling.
#[utoipa::path(get, path = "/api/campaigns/{id}/versions", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignVersions), (status = 404, body = super::error::ErrorBody)))]
pub async fn versions(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<CampaignVersions>, ApiError> {
    let campaign = storage::campaigns::get(&app.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no campaign {id}")))?;
    let image = storage::firmware::get(&app.db, campaign.firmware_id).await?;
    let running = storage::version_status::running_of_campaign(&app.db, id).await?;
    let from = running
        .iter()
        .map(|r| FromVersion {
            version: r.version.map(|v| version_dto(v, r.versioning_type)),
            devices: r.devices,
        })
        .collect();
    // The type most of the campaign's devices reported; ties and none fall back to the fleet.
    let mut by_type: Vec<(i64, i64)> = Vec::new();
    for r in &running {
        if let Some(t) = r.versioning_type {
            match by_type.iter_mut().find(|(k, _)| *k == t) {
                Some(e) => e.1 += r.devices,
                None => by_type.push((t, r.devices)),
            }
        }
    }
    by_type.sort_by_key(|(_, n)| -n);
    let to = match image.as_ref().and_then(|i| i.trailer.as_ref()) {
        Some(t) => {
            let vt = match by_type.first() {
                Some((vt, _)) => Some(*vt),
                None => spelling::near(
                    t.version,
                    storage::version_status::versioning_near(&app.db, t.version).await?,
                ),
            };
            let stated = image
                .as_ref()
                .and_then(|i| i.metadata.versioning.as_deref());
            Some(spelling::spell_as(t.version, stated, vt))
        }
        None => None,
    };
    Ok(Json(CampaignVersions {
        from,
        to,
        to_version: image.and_then(|i| i.metadata.to_version),
    }))
}

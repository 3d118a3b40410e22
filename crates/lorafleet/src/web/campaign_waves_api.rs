//! `POST /api/campaigns/{id}/resume`: the operator's answer to a campaign paused between waves
//! (issue 10 item 6); the other answer is the existing cancel.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::auth_api::AuthUser;
use super::ApiError;
use crate::campaigns::rollout::{self, ResumeError};
use crate::campaigns::CampaignDto;
use crate::storage::campaigns as store;
use crate::AppState;

/// Resumes a `paused` campaign: its next wave starts now (whatever the thresholds said of the
/// last one). 409 when the campaign is not paused.
#[utoipa::path(post, path = "/api/campaigns/{id}/resume", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignDto), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody)))]
pub async fn resume(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<CampaignDto>, ApiError> {
    match rollout::resume(&app, id).await {
        Ok(_) => {}
        Err(ResumeError::NotFound) => return Err(ApiError::not_found(format!("no campaign {id}"))),
        Err(ResumeError::NotPaused(state)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "campaign {id} is {}; only a paused campaign can be resumed",
                    state.as_str()
                ),
            ))
        }
        Err(ResumeError::Other(e)) => return Err(e.into()),
    }
    store::dto(&app.db, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no campaign {id}")))
}

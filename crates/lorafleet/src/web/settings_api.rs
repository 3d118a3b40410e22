//! Server settings an admin changes from the console: the ChirpStack integration token.
//! Everything under `/api/settings` needs the `admin` role or scope (`auth_api::scope_needed`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth_api::AuthUser;
use super::ApiError;
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct IntegrationTokenInfo {
    /// `generated` (kept as a hash; rotate it here) or `configured` (`integration.token` /
    /// `LORAFLEET__INTEGRATION__TOKEN`: only the configuration changes it).
    pub source: String,
    /// Whether `POST /api/settings/integration-token/rotate` can replace it.
    pub rotatable: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RotatedToken {
    /// The new integration token, shown once; lorafleet keeps only its hash. The old one is
    /// refused from now on, so ChirpStack's HTTP integration needs this one.
    pub token: String,
}

/// Where the integration token comes from, and whether it can be rotated.
#[utoipa::path(get, path = "/api/settings/integration-token", responses((status = 200, body = IntegrationTokenInfo), (status = 403, body = super::error::ErrorBody)))]
pub async fn integration_token(
    _user: AuthUser,
    State(app): State<AppState>,
) -> Json<IntegrationTokenInfo> {
    let source = app.integration_token.source();
    Json(IntegrationTokenInfo {
        source: source.into(),
        rotatable: source == "generated",
    })
}

/// Replaces the generated integration token by a new one (shown once in the answer).
#[utoipa::path(post, path = "/api/settings/integration-token/rotate", responses((status = 200, body = RotatedToken), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn rotate_integration_token(
    user: AuthUser,
    State(app): State<AppState>,
) -> Result<Json<RotatedToken>, ApiError> {
    let Some(token) = app.integration_token.rotate(&app.db).await? else {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "the integration token is set in the configuration (integration.token); change it there",
        );
        e.field = Some("integration.token".into());
        return Err(e);
    };
    // The other instances hold the old token's hash in memory until told.
    app.cluster.auth_changed();
    tracing::info!(user = %crate::auth::log_name(&user.username), "integration token rotated");
    Ok(Json(RotatedToken { token }))
}

//! `POST /api/devices/{dev_eui}/firmware-management-requests`: one Firmware Management
//! (TS006) request to a device, as the device page's buttons send it; the answer (FPort 203)
//! lands in the device's `firmware_management` record.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::auth_api::AuthUser;
use super::devices_api::{command_error, parse_eui, send_to_known_device, Accepted};
use super::{ApiError, ApiJson};
use crate::firmware_management::{FmRequestBody, F_PORT};
use crate::AppState;

/// Sends one Firmware Management request to the device.
#[utoipa::path(post, path = "/api/devices/{dev_eui}/firmware-management-requests", params(("dev_eui" = String, Path)),
    request_body = FmRequestBody,
    responses((status = 202, body = Accepted), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 502, body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody)))]
pub async fn request(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(dev_eui): Path<String>,
    ApiJson(body): ApiJson<FmRequestBody>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let eui = parse_eui(&dev_eui)?;
    let request = body
        .to_request()
        .map_err(|e| ApiError::field(e.field, e.message))?;
    let what = format!("Firmware Management request {}", request.command_name());
    let data = request.to_vec().map_err(command_error);
    send_to_known_device(&app, eui, F_PORT, data, None, &what).await
}

//! The OpenAPI document of the JSON API, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    auth_api, campaign_versions, campaign_waves_api, campaigns_api, devices_api, error,
    firmware_api, firmware_management_api, ingest, settings_api,
};
use crate::devices;
use crate::version_status;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "integration_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "lorafleet API", description = "Device inventory, Version & Status requests, downlinks, ChirpStack integration ingest, the firmware library and FUOTA campaigns. Authenticate with HTTP Basic, `Authorization: Bearer <api token>`, or the console's session cookie plus `X-CSRF-Token`."),
    paths(
        super::health, super::info, super::metrics, super::stream::stream, ingest::legacy_integration,
        auth_api::current, auth_api::login, auth_api::logout, auth_api::create_token, auth_api::list_tokens, auth_api::delete_token,
        auth_api::list_users, auth_api::create_user, auth_api::update_user,
        settings_api::integration_token, settings_api::rotate_integration_token,
        devices_api::list, devices_api::detail, devices_api::uplinks, devices_api::remove,
        devices_api::status_request, devices_api::downlink, firmware_management_api::request,
        ingest::integration,
        firmware_api::list, firmware_api::upload, firmware_api::rescan, firmware_api::detail,
        firmware_api::update, firmware_api::remove, firmware_api::download,
        campaigns_api::list, campaigns_api::create, campaigns_api::preview, campaigns_api::detail,
        campaigns_api::update, campaigns_api::remove, campaigns_api::start, campaigns_api::cancel,
        campaigns_api::stages, campaign_versions::versions, campaign_waves_api::resume,
        campaigns_api::retry, campaigns_api::duplicate,
    ),
    components(schemas(
        error::ErrorBody, devices::DeviceList, devices::DeviceSummary, devices::DeviceDetail,
        devices::UplinkDto, devices::StatusDto, devices::VersionDto, version_status::StatusRequestBody,
        devices::filter::DeviceFilterParams,
    )),
    modifiers(&Security),
    security(("basic" = []), ("bearer" = []))
)]
pub struct ApiDoc;

/// `GET /api/openapi.json`; public, like the API's shape itself.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

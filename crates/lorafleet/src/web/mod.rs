//! HTTP: the JSON API, the integration endpoint, the embedded console, health and metrics.

pub mod assets;
pub mod auth_api;
pub mod campaign_progress;
pub mod campaign_versions;
pub mod campaign_waves_api;
pub mod campaigns_api;
pub mod device_packages;
pub mod devices_api;
pub mod error;
pub mod firmware_api;
pub mod firmware_management_api;
pub mod ingest;
mod limit;
pub mod openapi;
pub mod plan_network;
pub mod settings_api;
pub mod stream;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::ToSchema;

pub use error::{ApiError, ApiJson};
use limit::BodyLimits;

use crate::AppState;

/// The whole HTTP surface of lorafleet.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.server.max_body_bytes;
    let api = Router::new()
        .route("/api/info", get(info))
        .merge(account_routes())
        .merge(device_routes())
        .merge(firmware_routes())
        .merge(campaign_routes())
        .route("/api/stream", get(stream::stream))
        .route("/api/integrations/chirpstack", post(ingest::integration))
        .route("/api/openapi.json", get(openapi::document))
        .layer(DefaultBodyLimit::max(body_limit));
    // Images are streamed to disk and limited by firmware.max_size while they arrive.
    let upload_limit = usize::try_from(state.config.firmware.max_size)
        .unwrap_or(usize::MAX)
        .saturating_add(firmware_api::MULTIPART_OVERHEAD);
    let uploads = Router::new().route(
        "/api/firmware",
        get(firmware_api::list)
            .post(firmware_api::upload)
            .layer(DefaultBodyLimit::max(upload_limit)),
    );
    let request_timeout = Duration::from_secs(state.config.server.request_timeout_s.max(1));
    // Uploads are left out: a slow link may need longer than any fixed timeout, and the
    // connection's idle timeout (server.idle_timeout_s) ends one that stops progressing.
    let timed = Router::new()
        .merge(api)
        .merge(assets::routes())
        .route("/", post(ingest::legacy_integration))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ));
    Router::new()
        .merge(timed)
        .merge(uploads)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            BodyLimits { json: body_limit },
            limit::declared_length,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Sessions, API tokens and users.
fn account_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/session",
            get(auth_api::current)
                .post(auth_api::login)
                .delete(auth_api::logout),
        )
        .route(
            "/api/tokens",
            get(auth_api::list_tokens).post(auth_api::create_token),
        )
        .route(
            "/api/tokens/{id}",
            axum::routing::delete(auth_api::delete_token),
        )
        .route(
            "/api/users",
            get(auth_api::list_users).post(auth_api::create_user),
        )
        .route(
            "/api/users/{username}",
            axum::routing::patch(auth_api::update_user),
        )
        .route(
            "/api/settings/integration-token",
            get(settings_api::integration_token),
        )
        .route(
            "/api/settings/integration-token/rotate",
            post(settings_api::rotate_integration_token),
        )
}

/// The device list, one device, its uplinks and what can be sent to it.
fn device_routes() -> Router<AppState> {
    Router::new()
        .route("/api/devices", get(devices_api::list))
        .route(
            "/api/devices/{dev_eui}",
            get(devices_api::detail).delete(devices_api::remove),
        )
        .route("/api/devices/{dev_eui}/uplinks", get(devices_api::uplinks))
        .route(
            "/api/devices/{dev_eui}/status-requests",
            post(devices_api::status_request),
        )
        .route(
            "/api/devices/{dev_eui}/firmware-management-requests",
            post(firmware_management_api::request),
        )
        .route(
            "/api/devices/{dev_eui}/downlinks",
            post(devices_api::downlink),
        )
}

/// Firmware images, except the list and upload at `/api/firmware`: uploads get their own body
/// limit and no request timeout (see [`router`]).
fn firmware_routes() -> Router<AppState> {
    Router::new()
        .route("/api/firmware/rescan", post(firmware_api::rescan))
        .route(
            "/api/firmware/{id}",
            get(firmware_api::detail)
                .patch(firmware_api::update)
                .delete(firmware_api::remove),
        )
        .route("/api/firmware/{id}/download", get(firmware_api::download))
}

/// Campaigns: their plans, their life cycle and the stage list the console shows.
fn campaign_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/campaigns",
            get(campaigns_api::list).post(campaigns_api::create),
        )
        .route("/api/campaigns/preview", post(campaigns_api::preview))
        .route("/api/campaigns/stages", get(campaigns_api::stages))
        .route(
            "/api/campaigns/{id}",
            get(campaigns_api::detail)
                .patch(campaigns_api::update)
                .delete(campaigns_api::remove),
        )
        .route("/api/campaigns/{id}/start", post(campaigns_api::start))
        .route("/api/campaigns/{id}/cancel", post(campaigns_api::cancel))
        .route("/api/campaigns/{id}/retry", post(campaigns_api::retry))
        .route(
            "/api/campaigns/{id}/duplicate",
            post(campaigns_api::duplicate),
        )
        .route(
            "/api/campaigns/{id}/resume",
            post(campaign_waves_api::resume),
        )
        .route(
            "/api/campaigns/{id}/versions",
            get(campaign_versions::versions),
        )
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such path {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    /// `ok`, or `error` while the database cannot be read or the last commit failed.
    pub database: &'static str,
    /// Why, while `database` is `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_error: Option<String>,
    pub network: &'static str,
    /// MQTT ingest: `connected`, `connecting` (also while waiting to reconnect) or `disabled`.
    pub mqtt: &'static str,
    /// On PostgreSQL: whether this instance hears the other instances' changes (`LISTEN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
    pub uptime_s: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ClusterHealth {
    pub listening: bool,
}

/// Liveness, database reachability and whether writes reach the disk; no authentication.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(app): State<AppState>) -> impl IntoResponse {
    let read = crate::storage::ping(&app.db).await;
    // A full disk still answers reads: the writer's last outcome is what says writes fail.
    let error = match read {
        Err(e) => Some(format!("database: {e}")),
        Ok(()) => app.writer.health().failing(),
    };
    let body = Health {
        status: if error.is_none() { "ok" } else { "degraded" },
        database: if error.is_none() { "ok" } else { "error" },
        database_error: error,
        network: app.network.kind().as_str(),
        mqtt: app.mqtt.state(),
        cluster: app
            .cluster
            .listening()
            .map(|listening| ClusterHealth { listening }),
        uptime_s: app.started_at.elapsed().as_secs(),
    };
    let code = if body.database_error.is_none() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Prometheus text exposition; no authentication (counters only, no device data).
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    if let Ok(n) = crate::storage::devices::count_listed(&app.db).await {
        ::metrics::gauge!("lorafleet_devices").set(n as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

#[derive(Serialize, ToSchema)]
pub struct NetworkInfo {
    pub kind: &'static str,
    pub region: String,
    pub simulated: bool,
    /// How much faster than real time the network's clock runs (a simulated network).
    pub time_scale: f64,
    /// The network's clock now: the time base of everything the devices report.
    pub now: String,
}

#[derive(Serialize, ToSchema)]
pub struct Info {
    pub version: &'static str,
    pub network: NetworkInfo,
    pub status_f_port: u8,
}

/// What the console needs to know about this server.
#[utoipa::path(get, path = "/api/info", responses((status = 200, body = Info)), security(("basic" = []), ("bearer" = []), ("session" = [])))]
pub async fn info(_user: auth_api::AuthUser, State(app): State<AppState>) -> Json<Info> {
    let kind = app.network.kind();
    Json(Info {
        version: env!("CARGO_PKG_VERSION"),
        network: NetworkInfo {
            kind: kind.as_str(),
            region: app.config.network.region.clone(),
            simulated: kind == crate::config::NetworkKind::Simulated,
            time_scale: app.network.time_scale(),
            // A look, not a request (see `campaign_progress::summary`).
            now: crate::storage::fmt_time(app.network.peek_now()),
        },
        status_f_port: app.config.status_protocol.f_port,
    })
}

//! `/api/devices`: the inventory, one device, its uplinks, Version & Status requests and
//! downlinks.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth_api::AuthUser;
use super::{ApiError, ApiJson};
use crate::devices::filter::{self, DeviceFilterParams, FilterError};
use crate::devices::record;
use crate::devices::{DevEui, DeviceDetail, DeviceList, UplinkList};
use crate::ingest::writer::Change;
use crate::network::Downlink;
use crate::storage::devices::{self as store, Cursor, ListQuery, SortKey};
use crate::version_status::StatusRequestBody;
use crate::AppState;

pub(super) fn parse_eui(s: &str) -> Result<DevEui, ApiError> {
    s.parse()
        .map_err(|e: crate::devices::BadDevEui| ApiError::field("dev_eui", e.to_string()))
}

fn int_param(
    q: &HashMap<String, String>,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ApiError> {
    match q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => {
            let v: i64 = s.parse().map_err(|_| {
                ApiError::field(name, format!("{name} must be a whole number, got {s:?}"))
            })?;
            if v < min || v > max {
                return Err(ApiError::field(
                    name,
                    format!("{name} must be {min}..{max}, got {v}"),
                ));
            }
            Ok(v)
        }
    }
}

/// Lists devices: filtered, sorted, one page at a time (keyset `cursor` or `offset`).
#[utoipa::path(get, path = "/api/devices",
    params(("search" = Option<String>, Query, description = "part of the EUI, name, application or DevAddr"),
           ("version" = Option<String>, Query, description = "running version, raw (decimal or 0x hex) or as shown"),
           ("application" = Option<String>, Query, description = "application name or id"),
           ("model" = Option<String>, Query, description = "model tag, device-profile name or reported device description; case-insensitive"),
           ("tag" = Option<String>, Query, description = "key:value"),
           ("seen_before" = Option<String>, Query, description = "RFC 3339"),
           ("seen_after" = Option<String>, Query, description = "RFC 3339"),
           ("status" = Option<String>, Query, description = "online, offline or never_seen"),
           ("sort" = Option<String>, Query, description = "last_seen (default), name, dev_eui, running_version, rssi, snr or battery"),
           ("order" = Option<String>, Query, description = "asc or desc (default: desc for last_seen, else asc)"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
           ("limit" = Option<i64>, Query, description = "1..1000, default 50"),
           ("offset" = Option<i64>, Query, description = "rows to skip, without a cursor")),
    responses((status = 200, body = DeviceList), (status = 400, body = super::error::ErrorBody)))]
pub async fn list(
    _user: AuthUser,
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<DeviceList>, ApiError> {
    let (sort, desc) = sort_param(&q)?;
    let cursor = cursor_param(&q, sort, desc)?;
    let (offline_after_s, online_since) = online_since(&app).await?;
    let params = filter_params(&q);
    let filter = filter::resolve(&app.db, &params, online_since)
        .await
        .map_err(filter_error)?;
    let query = ListQuery {
        filter,
        sort,
        desc,
        limit: int_param(&q, "limit", 50, 1, 1000)?,
        offset: int_param(&q, "offset", 0, 0, i64::MAX / 2)?,
        cursor,
        online_since: crate::storage::fmt_time(online_since),
        offline_after_s,
        search_count_cap: i64::from(app.config.devices.search_count_cap),
    };
    Ok(Json(store::list(&app.db, &query).await?))
}

/// How long a device may be silent and still be online, and the time that makes it online now
/// (the network's clock, so a simulated fleet's time).
async fn online_since(app: &AppState) -> Result<(u64, chrono::DateTime<chrono::Utc>), ApiError> {
    let offline_after_s =
        filter::offline_after_s(&app.db, app.config.devices.offline_after_s).await?;
    let seconds = i64::try_from(offline_after_s).unwrap_or(i64::MAX / 2_000);
    Ok((
        offline_after_s,
        // A look, not a request (see `campaign_progress::summary`): the device list is read
        // often.
        app.network.peek_now() - chrono::Duration::seconds(seconds),
    ))
}

/// The devices a campaign's `device_filter` selects now, or the parameter at fault.
pub(crate) async fn devices_matching(
    app: &AppState,
    params: &DeviceFilterParams,
) -> Result<Vec<String>, ApiError> {
    let (_, since) = online_since(app).await?;
    let filter = filter::resolve(&app.db, params, since)
        .await
        .map_err(filter_error)?;
    Ok(store::matching(&app.db, &filter).await?)
}

/// The filter parameters of a query string.
fn filter_params(q: &HashMap<String, String>) -> DeviceFilterParams {
    let get = |k: &str| q.get(k).cloned();
    DeviceFilterParams {
        search: get("search"),
        version: get("version"),
        application: get("application"),
        model: get("model"),
        tag: get("tag"),
        seen_before: get("seen_before"),
        seen_after: get("seen_after"),
        status: get("status"),
    }
}

/// A filter that does not parse is the client's error (400 naming the parameter).
pub(crate) fn filter_error(e: FilterError) -> ApiError {
    match e {
        FilterError::Bad { field, message } => ApiError::field(field, message),
        FilterError::Storage(e) => e.into(),
    }
}

fn sort_param(q: &HashMap<String, String>) -> Result<(SortKey, bool), ApiError> {
    let text = q.get("sort").map(|s| s.trim()).filter(|s| !s.is_empty());
    let sort = match text {
        None => SortKey::default(),
        Some(s) => SortKey::parse(s).ok_or_else(|| {
            let names: Vec<&str> = SortKey::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::field(
                "sort",
                format!("sort must be one of {}, got {s:?}", names.join(", ")),
            )
        })?,
    };
    let desc = match q.get("order").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => sort.default_desc(),
        Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::field(
                "order",
                format!("order must be asc or desc, got {other:?}"),
            ))
        }
    };
    Ok((sort, desc))
}

fn cursor_param(
    q: &HashMap<String, String>,
    sort: SortKey,
    desc: bool,
) -> Result<Option<Cursor>, ApiError> {
    let Some(text) = q.get("cursor").map(|s| s.trim()).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let cursor = Cursor::decode(text).ok_or_else(|| {
        ApiError::field(
            "cursor",
            "cursor must be the next_cursor of a previous page, unchanged",
        )
    })?;
    if cursor.sort != sort.as_str() || cursor.desc != desc {
        return Err(ApiError::field(
            "cursor",
            format!(
                "cursor belongs to sort={} order={}; keep them while paging, or start again without cursor",
                cursor.sort,
                if cursor.desc { "desc" } else { "asc" }
            ),
        ));
    }
    Ok(Some(cursor))
}

/// One device with its status, last uplink, requests and event log.
#[utoipa::path(get, path = "/api/devices/{dev_eui}", params(("dev_eui" = String, Path)),
    responses((status = 200, body = DeviceDetail), (status = 404, body = super::error::ErrorBody)))]
pub async fn detail(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(dev_eui): Path<String>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let eui = parse_eui(&dev_eui)?;
    let mut d = store::detail(&app.db, eui)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device {eui}")))?;
    d.packages = Some(super::device_packages::in_effect(&app, eui).await);
    d.device_limits = super::device_packages::known_limits(&app, eui).await?;
    Ok(Json(d))
}

/// The device's stored uplinks, newest first.
#[utoipa::path(get, path = "/api/devices/{dev_eui}/uplinks", params(("dev_eui" = String, Path), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = UplinkList), (status = 404, body = super::error::ErrorBody)))]
pub async fn uplinks(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(dev_eui): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<UplinkList>, ApiError> {
    let eui = parse_eui(&dev_eui)?;
    let limit =
        int_param(&q, "limit", 100, 1, 10_000)?.min(app.config.devices.uplink_history as i64);
    if !store::exists(&app.db, eui).await? {
        return Err(ApiError::not_found(format!("no device {eui}")));
    }
    Ok(Json(UplinkList {
        uplinks: crate::storage::uplinks::recent(&app.db, &eui.to_string(), limit).await?,
    }))
}

/// Removes a device from the list; it comes back (marked) when it sends again.
#[utoipa::path(delete, path = "/api/devices/{dev_eui}", params(("dev_eui" = String, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub async fn remove(
    user: AuthUser,
    State(app): State<AppState>,
    Path(dev_eui): Path<String>,
) -> Result<StatusCode, ApiError> {
    let eui = parse_eui(&dev_eui)?;
    if !store::exists(&app.db, eui).await? {
        return Err(ApiError::not_found(format!("no device {eui}")));
    }
    let at = crate::storage::fmt_time(app.network.now());
    store::remove(&app.db, eui, &user.username, &at).await?;
    let _ = app.changes.send(Change::Device(eui));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// The downlink's id in the device's request list.
    pub id: i64,
    pub f_port: u8,
    pub payload_hex: String,
}

/// Records a downlink, asks the network to queue it, and records the outcome.
pub(super) async fn send(
    app: &AppState,
    downlink: Downlink,
    status_command: Option<&str>,
    what: &str,
) -> Result<Accepted, ApiError> {
    let id = record::record_downlink_request(
        &app.db,
        downlink.dev_eui,
        downlink.f_port,
        &downlink.data,
        downlink.confirmed,
        status_command,
        &crate::storage::fmt_time(app.network.now()),
    )
    .await?;
    let result = app.network.enqueue(&downlink).await;
    let outcome = match &result {
        Ok(e) => Ok((e.network_ref.clone(), e.f_cnt)),
        Err(e) => Err(e.to_string()),
    };
    let at = crate::storage::fmt_time(app.network.now());
    record::record_downlink_outcome(&app.db, id, downlink.dev_eui, outcome, what, &at).await?;
    let _ = app.changes.send(Change::Device(downlink.dev_eui));
    ::metrics::counter!("lorafleet_downlinks_total", "outcome" => if result.is_ok() { "enqueued" } else { "failed" }).increment(1);
    result?;
    Ok(Accepted {
        id,
        f_port: downlink.f_port,
        payload_hex: hex::encode(&downlink.data),
    })
}

/// Sends one Version & Status request to the device.
#[utoipa::path(post, path = "/api/devices/{dev_eui}/status-requests", params(("dev_eui" = String, Path)),
    request_body = StatusRequestBody,
    responses((status = 202, body = Accepted), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 502, body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody)))]
pub async fn status_request(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(dev_eui): Path<String>,
    ApiJson(body): ApiJson<StatusRequestBody>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let eui = parse_eui(&dev_eui)?;
    let request = body
        .to_request()
        .map_err(|e| ApiError::field(e.field, e.message))?;
    let what = format!("Version & Status request {}", request.command_name());
    let f_port = app.config.status_protocol.f_port;
    let data = request.to_vec().map_err(command_error);
    send_to_known_device(&app, eui, f_port, data, Some(request.command_name()), &what).await
}

/// An encoding failure of a request's `command`, as the API reports it.
pub(super) fn command_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::field("command", e.to_string())
}

/// Sends a package request's encoded bytes to a device lorafleet knows (404 otherwise), as 202.
pub(super) async fn send_to_known_device(
    app: &AppState,
    dev_eui: DevEui,
    f_port: u8,
    data: Result<Vec<u8>, ApiError>,
    status_command: Option<&str>,
    what: &str,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let data = data?;
    if !store::exists(&app.db, dev_eui).await? {
        return Err(ApiError::not_found(format!("no device {dev_eui}")));
    }
    let downlink = Downlink {
        dev_eui,
        f_port,
        data,
        confirmed: false,
    };
    let accepted = send(app, downlink, status_command, what).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

#[derive(Deserialize, ToSchema)]
pub struct DownlinkBody {
    pub f_port: u32,
    pub data_hex: String,
    #[serde(default)]
    pub confirmed: bool,
}

/// Sends an arbitrary downlink to the device.
#[utoipa::path(post, path = "/api/devices/{dev_eui}/downlinks", params(("dev_eui" = String, Path)),
    request_body = DownlinkBody,
    responses((status = 202, body = Accepted), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 502, body = super::error::ErrorBody)))]
pub async fn downlink(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(dev_eui): Path<String>,
    ApiJson(body): ApiJson<DownlinkBody>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let eui = parse_eui(&dev_eui)?;
    if !(1..=223).contains(&body.f_port) {
        return Err(ApiError::field(
            "f_port",
            format!("f_port must be 1..223, got {}", body.f_port),
        ));
    }
    let hex_text: String = body
        .data_hex
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let data = hex::decode(&hex_text)
        .map_err(|e| ApiError::field("data_hex", format!("data_hex is not hex: {e}")))?;
    if data.len() > 242 {
        return Err(ApiError::field(
            "data_hex",
            format!(
                "{} bytes is more than any LoRaWAN downlink carries (242)",
                data.len()
            ),
        ));
    }
    if !store::exists(&app.db, eui).await? {
        return Err(ApiError::not_found(format!("no device {eui}")));
    }
    let downlink = Downlink {
        dev_eui: eui,
        f_port: body.f_port as u8,
        data,
        confirmed: body.confirmed,
    };
    let what = format!("downlink on FPort {}", body.f_port);
    let accepted = send(&app, downlink, None, &what).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

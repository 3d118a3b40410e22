//! `/api/campaigns`: FUOTA campaigns, from draft to outcome.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth_api::AuthUser;
use super::{ApiError, ApiJson};
use crate::campaigns::plan::{self, Plan};
use crate::campaigns::region::RegionInfo;
use crate::campaigns::runner::{self, StartError};
use crate::campaigns::validate::{self, CampaignRequest, FieldError, FieldErrors, Validated};
use crate::campaigns::{
    CampaignDto, CampaignKeys, CampaignSettings, CampaignState, CampaignSummary, DeviceKey,
    Refusal, Stage,
};
use crate::devices::DevEui;
use crate::ingest::writer::Change;
use crate::storage::campaigns as store;
use crate::AppState;

/// A 422 answer listing every field at fault; `field` repeats the first for clients that read
/// only the common error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationErrorBody {
    pub error: String,
    pub field: Option<String>,
    pub fields: Vec<FieldError>,
}

fn unprocessable(errors: Vec<FieldError>) -> Response {
    let error = match errors.len() {
        0 => "the campaign is not valid".to_string(),
        1 => errors[0].error.clone(),
        n => format!("{} (and {} more problems)", errors[0].error, n - 1),
    };
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(ValidationErrorBody {
            error,
            field: errors.first().map(|e| e.field.clone()),
            fields: errors,
        }),
    )
        .into_response()
}

fn api_error(e: ApiError) -> Response {
    e.into_response()
}

#[derive(Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignSummary>,
}

/// Every campaign, newest first, with its outcome.
#[utoipa::path(get, path = "/api/campaigns", responses((status = 200, body = CampaignList)))]
pub async fn list(
    _user: AuthUser,
    State(app): State<AppState>,
) -> Result<Json<CampaignList>, ApiError> {
    Ok(Json(CampaignList {
        campaigns: store::list(&app.db).await?,
    }))
}

/// The request as stored for editing: the body without its keys.
fn without_keys(body: &serde_json::Value) -> serde_json::Value {
    let mut v = body.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("keys");
    }
    v
}

/// Stored keys in request form, so a PATCH that does not touch them keeps them.
fn keys_as_request(keys: &CampaignKeys, settings: &CampaignSettings) -> serde_json::Value {
    let per_device: BTreeMap<&String, serde_json::Value> = keys
        .per_device
        .iter()
        .map(|(eui, k)| {
            (
                eui,
                match k {
                    DeviceKey::GenAppKey(k) => serde_json::json!({ "gen_app_key": hex::encode(k) }),
                    DeviceKey::AppKey(k) => serde_json::json!({ "app_key": hex::encode(k) }),
                },
            )
        })
        .collect();
    serde_json::json!({
        "gen_app_key": keys.gen_app_key.map(hex::encode),
        "per_device": per_device,
        "lorawan_version": settings.lorawan_version,
    })
}

/// RFC 7396 JSON merge patch.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Parses and validates a request body, computing the plan with redundancy advice.
async fn prepare(
    app: &AppState,
    body: &serde_json::Value,
) -> Result<(Validated, serde_json::Value), Response> {
    let mut req: CampaignRequest = match serde_path_to_error::deserialize(body.clone()) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            let field = if path == "." || path.is_empty() {
                msg.split('`').nth(1).unwrap_or("body").to_string()
            } else {
                path
            };
            return Err(unprocessable(vec![FieldError {
                field: field.clone(),
                error: format!("{field}: {msg}"),
            }]));
        }
    };
    if let Some(filter) = req.device_filter.clone() {
        req.devices = Some(devices_of_filter(app, &req, &filter).await?);
    }
    let image = match req.firmware_id {
        Some(id) => crate::storage::firmware::get(&app.db, id)
            .await
            .map_err(|e| api_error(e.into()))?,
        None => None,
    };
    let euis: Vec<String> = req
        .devices
        .iter()
        .flatten()
        .filter_map(|d| d.parse::<DevEui>().ok())
        .map(|d| d.to_string())
        .collect();
    let known = crate::storage::devices::known(&app.db, &euis)
        .await
        .map_err(|e| api_error(e.into()))?;
    let observed = crate::campaigns::observed_uplink_interval(&app.db, &euis)
        .await
        .map_err(|e| api_error(e.into()))?;
    let region_name = crate::config::parse_region(&app.config.network.region)
        .ok_or_else(|| api_error(ApiError::internal("network.region is not a region")))?;
    let region = RegionInfo::new(region_name, app.config.fuota.downlink_dwell_time_400ms);
    let ctx = validate::Context {
        config: &app.config,
        region: &region,
        image: image.as_ref(),
        devices: &known,
        observed_uplink_interval_s: observed,
        model_limits: image
            .as_ref()
            .and_then(|i| crate::firmware::sidecar_device_limits(&i.path)),
    };
    let v = validate::validate(&req, &ctx).map_err(|FieldErrors(e)| unprocessable(e))?;
    // The plan from the real network: its uplink interval, its loss, its sub-bands.
    let facts = super::plan_network::gather(app, &v.devices).await;
    let mut v = super::plan_network::plan_with_network(&req, &ctx, &region, v, &facts).await;
    super::plan_network::add_sessions(app, &mut v).await;
    v.refused =
        crate::campaigns::guards::refusals(&app.db, image.as_ref(), &v.devices, v.allow_reinstall)
            .await
            .map_err(|e| api_error(e.into()))?;
    if crate::campaigns::gateways::applies(&app.config, v.driver, &v.settings.multicast.gateways) {
        let choice = crate::campaigns::gateways::for_campaign(
            &app.db,
            &v.devices,
            &v.settings.multicast.gateways,
            app.network.now(),
        )
        .await
        .map_err(|e| api_error(e.into()))?;
        if !choice.unheard.is_empty() && !choice.explicit {
            v.plan.warnings.push(plan::PlanWarning {
                dev_eui: None,
                message: format!(
                    "no gateway heard {} in the last {} h: the multicast group's gateways may not reach {}",
                    choice.unheard.join(", "),
                    crate::campaigns::gateways::RECENT_HOURS,
                    if choice.unheard.len() == 1 { "it" } else { "them" }
                ),
            });
        }
        v.plan.gateways = Some(choice);
    }
    let plan_json = serde_json::to_value(&v.plan).unwrap_or_default();
    Ok((v, plan_json))
}

/// A `device_filter` resolved into the devices it selects now; it names every problem as a
/// field of `device_filter` (or `devices` when both are given).
async fn devices_of_filter(
    app: &AppState,
    req: &CampaignRequest,
    filter: &crate::storage::devices::DeviceFilterParams,
) -> Result<Vec<String>, Response> {
    let refuse = |field: String, error: String| unprocessable(vec![FieldError { field, error }]);
    if req.devices.is_some() {
        return Err(refuse(
            "devices".into(),
            "give either devices or device_filter, not both".into(),
        ));
    }
    let devices = super::devices_api::devices_matching(app, filter)
        .await
        .map_err(|e| match e.field.clone() {
            Some(f) => refuse(format!("device_filter.{f}"), e.error.clone()),
            None => api_error(e),
        })?;
    if devices.is_empty() {
        return Err(refuse(
            "device_filter".into(),
            "the device filter selects no device".into(),
        ));
    }
    Ok(devices)
}

async fn dto_or_404(app: &AppState, id: i64) -> Result<CampaignDto, ApiError> {
    let mut dto = store::dto(&app.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no campaign {id}")))?;
    // A draft's refusals follow the devices' latest reports; a started campaign had none left.
    if dto.state == CampaignState::Draft {
        let image = crate::storage::firmware::get(&app.db, dto.firmware_id).await?;
        let euis: Vec<String> = dto.devices.iter().map(|d| d.dev_eui.clone()).collect();
        dto.refused =
            crate::campaigns::guards::refusals(&app.db, image.as_ref(), &euis, dto.allow_reinstall)
                .await?;
    }
    Ok(dto)
}

/// Creates a draft. Missing values take the documented defaults (see `campaigns::validate`).
#[utoipa::path(post, path = "/api/campaigns", request_body = CampaignRequest,
    responses((status = 201, body = CampaignDto), (status = 422, body = ValidationErrorBody)))]
pub async fn create(
    _user: AuthUser,
    State(app): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Response {
    create_draft(&app, &body).await
}

/// Validates a request and stores it as a new draft: 201 with the draft, or 422.
async fn create_draft(app: &AppState, body: &serde_json::Value) -> Response {
    let (v, plan) = match prepare(app, body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let at = net_now(app);
    let id = match store::insert_draft(&app.db, v.draft(), &without_keys(body), &plan, &at).await {
        Ok(id) => id,
        Err(e) => return api_error(e.into()),
    };
    if let Err(e) = store::waves::set_rollout(&app.db, id, v.rollout.as_ref()).await {
        return api_error(e.into());
    }
    let _ = app.changes.send(Change::Campaign(id));
    match dto_or_404(app, id).await {
        Ok(dto) => (StatusCode::CREATED, Json(dto)).into_response(),
        Err(e) => api_error(e),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Preview {
    pub settings: CampaignSettings,
    pub plan: Plan,
    pub devices: Vec<String>,
    /// Devices the image must not go to, with the reason (see `CampaignDto::refused`).
    pub refused: Vec<Refusal>,
}

/// Validates a request and returns its settings and plan without storing anything.
#[utoipa::path(post, path = "/api/campaigns/preview", request_body = CampaignRequest,
    responses((status = 200, body = Preview), (status = 422, body = ValidationErrorBody)))]
pub async fn preview(
    _user: AuthUser,
    State(app): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Response {
    match prepare(&app, &body).await {
        Ok((v, _)) => Json(Preview {
            settings: v.settings,
            plan: v.plan,
            devices: v.devices,
            refused: v.refused,
        })
        .into_response(),
        Err(r) => r,
    }
}

/// One stage a campaign's device can be in, as the console shows it.
#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct StageInfo {
    /// The value of `stage` in a campaign's devices and the keys of `counts`.
    pub id: &'static str,
    pub label: &'static str,
    /// Position in the FUOTA steps: a device only moves to stages of a higher order.
    pub order: usize,
    /// `completed`, `failed` and `cancelled`: the device is done with the campaign.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// The words an operator reads for a stage; a match, so a new stage cannot go unnamed.
fn stage_label(stage: Stage) -> &'static str {
    match stage {
        Stage::Pending => "Pending",
        Stage::Check => "Checking version and space",
        Stage::McGroupSetup => "Multicast group setup",
        Stage::FragSessionSetup => "Fragmentation setup",
        Stage::McSessionSetup => "Multicast session setup",
        Stage::Fragments => "Receiving fragments",
        Stage::FragStatus => "Fragmentation status",
        Stage::Verify => "Verifying the new version",
        Stage::Completed => "Completed",
        Stage::Failed => "Failed",
        Stage::Cancelled => "Cancelled",
    }
}

pub fn stage_list() -> Vec<StageInfo> {
    Stage::ALL
        .into_iter()
        .enumerate()
        .map(|(order, stage)| StageInfo {
            id: stage.as_str(),
            label: stage_label(stage),
            order,
            is_final: stage.is_final(),
        })
        .collect()
}

/// Every stage in order, so that clients need no copy of the list (the console draws its
/// progress bar, counts and per-device history from it).
#[utoipa::path(get, path = "/api/campaigns/stages",
    responses((status = 200, body = Vec<StageInfo>)))]
pub async fn stages(_user: AuthUser) -> Json<Vec<StageInfo>> {
    Json(stage_list())
}

/// One campaign: settings, plan, devices with their stage and times, log and progress history,
/// and `progress_summary`: what it is waiting for.
#[utoipa::path(get, path = "/api/campaigns/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = super::campaign_progress::CampaignDetail), (status = 404, body = super::error::ErrorBody)))]
pub async fn detail(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<super::campaign_progress::CampaignDetail>, ApiError> {
    let campaign = dto_or_404(&app, id).await?;
    let progress_summary = super::campaign_progress::summary(&app, &campaign).await?;
    Ok(Json(super::campaign_progress::CampaignDetail {
        campaign,
        progress_summary,
    }))
}

/// Edits a draft: the body is merged into the stored request (JSON merge patch; `keys`, when
/// given, replace the stored keys) and validated again.
#[utoipa::path(patch, path = "/api/campaigns/{id}", params(("id" = i64, Path)), request_body = CampaignRequest,
    responses((status = 200, body = CampaignDto), (status = 409, body = super::error::ErrorBody),
              (status = 422, body = ValidationErrorBody)))]
pub async fn update(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Response {
    let row = match store::get(&app.db, id).await {
        Ok(Some(r)) => r,
        Ok(None) => return api_error(ApiError::not_found(format!("no campaign {id}"))),
        Err(e) => return api_error(e.into()),
    };
    if row.state != CampaignState::Draft {
        return api_error(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "campaign {id} is {}; only drafts can be edited",
                row.state.as_str()
            ),
        ));
    }
    let mut body = row.request.clone();
    merge_patch(&mut body, &without_keys(&patch));
    let keys = match patch.get("keys") {
        Some(k) => k.clone(),
        None => keys_as_request(&row.keys, &row.settings),
    };
    if let Some(o) = body.as_object_mut() {
        o.insert("keys".into(), keys);
    }
    let (v, plan) = match prepare(&app, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match store::update_draft(
        &app.db,
        id,
        v.draft(),
        &without_keys(&body),
        &plan,
        &net_now(&app),
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => {
            return api_error(ApiError::new(
                StatusCode::CONFLICT,
                format!("campaign {id} was started meanwhile"),
            ))
        }
        Err(e) => return api_error(e.into()),
    }
    if let Err(e) = store::waves::set_rollout(&app.db, id, v.rollout.as_ref()).await {
        return api_error(e.into());
    }
    let _ = app.changes.send(Change::Campaign(id));
    match dto_or_404(&app, id).await {
        Ok(dto) => Json(dto).into_response(),
        Err(e) => api_error(e),
    }
}

/// Deletes a draft or a finished campaign (with its log); running ones must be cancelled first.
#[utoipa::path(delete, path = "/api/campaigns/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn remove(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let _ = dto_or_404(&app, id).await?;
    if !store::delete_draft(&app.db, id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("campaign {id} is running or scheduled; cancel it first"),
        ));
    }
    let _ = app.changes.send(Change::Campaign(id));
    Ok(StatusCode::NO_CONTENT)
}

/// Validates a stored draft again before it starts (devices or the image may have changed
/// since it was saved): a device filter is resolved again, and the compatibility guard's
/// refusals must be gone.
async fn revalidate_draft(app: &AppState, id: i64) -> Result<(), Response> {
    let row = match store::get(&app.db, id).await {
        Ok(Some(row)) if row.state == CampaignState::Draft => row,
        // Not a draft (any more): the runner says so.
        _ => return Ok(()),
    };
    let mut body = row.request.clone();
    if let Some(o) = body.as_object_mut() {
        o.insert("keys".into(), keys_as_request(&row.keys, &row.settings));
    }
    let (v, plan) = prepare(app, &body).await?;
    if !v.refused.is_empty() {
        return Err(unprocessable(
            v.refused
                .iter()
                .map(|r| FieldError {
                    field: "devices".into(),
                    error: r.reason.clone(),
                })
                .collect(),
        ));
    }
    let saved = if row.request.get("device_filter").is_some() {
        // The campaign targets the devices the filter selects at the start, not those of
        // the draft's moment.
        store::update_draft(&app.db, id, v.draft(), &row.request, &plan, &net_now(app))
            .await
            .map(|_| ())
    } else {
        store::set_plan(&app.db, id, &plan).await
    };
    saved.map_err(|e| api_error(e.into()))
}

/// A 409 naming each device another campaign holds, and that campaign.
#[derive(Debug, Serialize, ToSchema)]
pub struct OverlapBody {
    pub error: String,
    pub field: Option<String>,
    pub overlaps: Vec<OverlapDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OverlapDto {
    pub dev_eui: String,
    pub campaign_id: i64,
    pub campaign_name: String,
}

fn overlap_conflict(id: i64, overlaps: Vec<store::Overlap>) -> Response {
    let first = &overlaps[0];
    let error = format!(
        "device {} is already in campaign {} ({:?}), which is running{}; campaign {id} cannot start until it is done with it",
        first.dev_eui,
        first.campaign_id,
        first.campaign_name,
        match overlaps.len() {
            1 => String::new(),
            n => format!(" (and {} more devices)", n - 1),
        }
    );
    let body = OverlapBody {
        error,
        field: Some("devices".into()),
        overlaps: overlaps
            .into_iter()
            .map(|o| OverlapDto {
                dev_eui: o.dev_eui,
                campaign_id: o.campaign_id,
                campaign_name: o.campaign_name,
            })
            .collect(),
    };
    (StatusCode::CONFLICT, Json(body)).into_response()
}

/// Starts a draft: the compatibility guard and the overlap check, the driver's last checks
/// (ChirpStack v4 reads each device's keys), then the runner hands it to the FUOTA service,
/// at once or, with a `start_at` ahead, when the network's clock reaches it (state
/// `scheduled` until then). Answers once the campaign is running or scheduled.
#[utoipa::path(post, path = "/api/campaigns/{id}/start", params(("id" = i64, Path)),
    responses((status = 202, body = CampaignDto),
              (status = 409, description = "not a draft, or a device is in a running campaign", body = OverlapBody),
              (status = 422, description = "invalid, or devices the image must not go to", body = ValidationErrorBody),
              (status = 503, body = super::error::ErrorBody)))]
pub async fn start(_user: AuthUser, State(app): State<AppState>, Path(id): Path<i64>) -> Response {
    if let Err(e) = dto_or_404(&app, id).await {
        return api_error(e);
    }
    if let Err(r) = revalidate_draft(&app, id).await {
        return r;
    }
    match runner::start(&app, id).await {
        Ok(()) => {}
        Err(StartError::NotDraft(state)) => {
            return api_error(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "campaign {id} is {}; only a draft can be started",
                    state.as_str()
                ),
            ))
        }
        Err(StartError::Overlap(o)) => return overlap_conflict(id, o),
        Err(StartError::Fields(f)) => return unprocessable(f),
        Err(StartError::Unavailable(m)) => {
            return api_error(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m))
        }
        Err(StartError::Refused(m)) => return api_error(ApiError::new(StatusCode::BAD_GATEWAY, m)),
        Err(StartError::Other(e)) => return api_error(e.into()),
    }
    match dto_or_404(&app, id).await {
        Ok(dto) => (StatusCode::ACCEPTED, Json(dto)).into_response(),
        Err(e) => api_error(e),
    }
}

/// Where a new draft made from campaign `id` comes from, and what it is called.
enum CopyOf {
    /// The failed devices only.
    Retry,
    /// The same devices (or device filter).
    Duplicate,
}

/// The request of a new draft from a stored campaign: its settings, the devices `devices`
/// (None: as the campaign names them, its filter included), its keys where they are still
/// stored (they are wiped once the service has them).
fn copied_request(
    row: &store::CampaignRow,
    devices: Option<&[String]>,
    name: String,
) -> serde_json::Value {
    let mut body = row.request.clone();
    let mut keys = keys_as_request(&row.keys, &row.settings);
    if let Some(o) = body.as_object_mut() {
        o.insert("name".into(), serde_json::Value::String(name));
        // A schedule is the operator's decision for each start.
        o.remove("start_at");
        if let Some(list) = devices {
            o.remove("device_filter");
            o.insert("devices".into(), serde_json::json!(list));
            // Settings for a device that is not in the copy would be refused.
            if let Some(overrides) = o
                .get_mut("device_overrides")
                .and_then(|v| v.as_object_mut())
            {
                overrides.retain(|eui, _| list.iter().any(|d| d.eq_ignore_ascii_case(eui)));
            }
            if let Some(per) = keys.get_mut("per_device").and_then(|v| v.as_object_mut()) {
                per.retain(|eui, _| list.iter().any(|d| d.eq_ignore_ascii_case(eui)));
            }
        }
        o.insert("keys".into(), keys);
    }
    body
}

/// An optional JSON body: a merge patch over the copy (for keys of a v3 campaign, wiped once
/// the service had them); empty for none.
fn optional_patch(body: &[u8]) -> Result<Option<serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if v.is_object() => Ok(Some(v)),
        Ok(v) if v.is_null() => Ok(None),
        Ok(_) => Err(ApiError::field(
            "body",
            "the body must be a JSON object (a merge patch over the copy)",
        )),
        Err(e) => Err(ApiError::field(
            "body",
            format!("the body is not JSON: {e}"),
        )),
    }
}

/// A new draft from campaign `id`: see [`retry`] and [`duplicate`].
async fn copy_campaign(app: &AppState, id: i64, how: CopyOf, body: &[u8]) -> Response {
    let patch = match optional_patch(body) {
        Ok(p) => p,
        Err(e) => return api_error(e),
    };
    let row = match store::get(&app.db, id).await {
        Ok(Some(r)) => r,
        Ok(None) => return api_error(ApiError::not_found(format!("no campaign {id}"))),
        Err(e) => return api_error(e.into()),
    };
    let mut body = match how {
        CopyOf::Duplicate => copied_request(&row, None, bounded_name("Copy of", &row.name)),
        CopyOf::Retry => {
            if !row.state.is_over() {
                return api_error(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "campaign {id} is {}; failed devices can be retried once it is over",
                        row.state.as_str()
                    ),
                ));
            }
            let failed: Vec<String> = match store::devices(&app.db, id).await {
                Ok(d) => d
                    .into_iter()
                    .filter(|d| d.stage == Stage::Failed)
                    .map(|d| d.dev_eui)
                    .collect(),
                Err(e) => return api_error(e.into()),
            };
            if failed.is_empty() {
                return unprocessable(vec![FieldError {
                    field: "devices".into(),
                    error: format!("campaign {id} has no failed devices to retry"),
                }]);
            }
            copied_request(&row, Some(&failed), bounded_name("Retry of", &row.name))
        }
    };
    if let Some(p) = patch {
        merge_patch(&mut body, &p);
    }
    create_draft(app, &body).await
}

/// "Retry of <name>", within the 200 characters a name may have.
fn bounded_name(prefix: &str, name: &str) -> String {
    format!("{prefix} {name}").chars().take(200).collect()
}

/// Creates a draft with the failed devices of a finished campaign and the same settings. An
/// optional body is merged into the copy (JSON merge patch), e.g. `{"keys": {...}}` for a
/// fuota-server-v3 campaign, whose keys are wiped once the service has them.
#[utoipa::path(post, path = "/api/campaigns/{id}/retry", params(("id" = i64, Path)), request_body(content = CampaignRequest, description = "optional: a merge patch over the copy"),
    responses((status = 201, body = CampaignDto), (status = 404, body = super::error::ErrorBody),
              (status = 409, description = "the campaign is not over", body = super::error::ErrorBody),
              (status = 422, description = "no failed devices, or the copy is not valid (keys of a v3 campaign are gone once sent)", body = ValidationErrorBody)))]
pub async fn retry(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Response {
    copy_campaign(&app, id, CopyOf::Retry, &body).await
}

/// Creates a draft with the same devices (or device filter) and settings as campaign `id`;
/// an optional body is merged into the copy, as for retry.
#[utoipa::path(post, path = "/api/campaigns/{id}/duplicate", params(("id" = i64, Path)), request_body(content = CampaignRequest, description = "optional: a merge patch over the copy"),
    responses((status = 201, body = CampaignDto), (status = 404, body = super::error::ErrorBody),
              (status = 422, body = ValidationErrorBody)))]
pub async fn duplicate(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Response {
    copy_campaign(&app, id, CopyOf::Duplicate, &body).await
}

/// Cancels a draft or running campaign (ChirpStack v4 deletes its deployments; the v3 FUOTA
/// server cannot cancel, lorafleet then stops following it).
#[utoipa::path(post, path = "/api/campaigns/{id}/cancel", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignDto), (status = 409, body = super::error::ErrorBody)))]
pub async fn cancel(
    _user: AuthUser,
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<CampaignDto>, ApiError> {
    let dto = dto_or_404(&app, id).await?;
    if !runner::cancel(&app, id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("campaign {id} is already {}", dto.state.as_str()),
        ));
    }
    Ok(Json(dto_or_404(&app, id).await?))
}

/// A draft's times are on the network's clock, like everything else the campaign shows.
fn net_now(app: &AppState) -> String {
    crate::storage::fmt_time(app.network.now())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console takes its stage list from here: every stage, in the enum's order, named.
    #[test]
    fn stage_list_follows_the_enum() {
        let list = stage_list();
        let ids: Vec<&str> = list.iter().map(|s| s.id).collect();
        let expected: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(ids, expected);
        for (i, s) in list.iter().enumerate() {
            assert_eq!(s.order, i);
            assert_eq!(s.is_final, Stage::parse(s.id).is_final(), "{}", s.id);
        }
        let json = serde_json::to_value(&list[7]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "verify", "label": "Verifying the new version", "order": 7, "final": false})
        );
    }

    #[test]
    fn stages_are_in_the_openapi_document() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(super::super::openapi::ApiDoc::openapi()).unwrap();
        let get = &doc["paths"]["/api/campaigns/stages"]["get"];
        assert!(get.is_object(), "{}", doc["paths"]);
        assert!(get["responses"]["200"].is_object(), "{get}");
    }

    #[test]
    fn the_guards_are_in_the_openapi_document() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(super::super::openapi::ApiDoc::openapi()).unwrap();
        for path in ["/api/campaigns/{id}/retry", "/api/campaigns/{id}/duplicate"] {
            assert!(
                doc["paths"][path]["post"]["responses"]["201"].is_object(),
                "{path}"
            );
        }
        let start = &doc["paths"]["/api/campaigns/{id}/start"]["post"]["responses"];
        assert!(
            start["409"].is_object() && start["422"].is_object(),
            "{start}"
        );
        let dto = &doc["components"]["schemas"]["CampaignDto"]["properties"];
        for field in ["refused", "start_at", "allow_reinstall"] {
            assert!(dto[field].is_object(), "CampaignDto.{field}: {dto}");
        }
        let request = &doc["components"]["schemas"]["CampaignRequest"]["properties"];
        assert!(request["start_at"].is_object() && request["allow_reinstall"].is_object());
        assert!(doc["components"]["schemas"]["Refusal"].is_object());
    }
}

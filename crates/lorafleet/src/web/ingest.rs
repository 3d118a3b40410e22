//! The endpoint ChirpStack's HTTP integration posts to: `POST /api/integrations/chirpstack?event=`
//! and, for set-ups made for the original app, `POST /?event=`.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use crate::ingest::{self, Encoding};
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct IngestResult {
    pub event: String,
    /// `stored`, or `ignored` for event types lorafleet does not record.
    pub outcome: &'static str,
}

fn count(event: &str, outcome: &'static str) {
    let event = if ingest::is_handled(event) {
        event.to_string()
    } else {
        "other".to_string()
    };
    ::metrics::counter!("lorafleet_integration_events_total", "event" => event, "outcome" => outcome).increment(1);
}

/// Receives one integration event. 2xx means it is committed to the database.
#[utoipa::path(post, path = "/api/integrations/chirpstack",
    params(("event" = String, Query, description = "up, join, status, ack, txack, log, error; others are ignored")),
    request_body(content = String, description = "ChirpStack v4 or v3 event, JSON or Protobuf (application/octet-stream)"),
    responses((status = 200, body = IngestResult), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody)),
    security(("integration_token" = [])))]
pub async fn integration(
    State(app): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<IngestResult>), ApiError> {
    // The token is checked before the body is read: a stranger cannot make the server buffer it.
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if app.integration_token.matches(t) => {}
        Some(_) => {
            count("unauthorized", "rejected");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong integration token",
            ));
        }
        None => {
            count("unauthorized", "rejected");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing header Authorization: Bearer <integration.token>",
            ));
        }
    }
    let events: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "event")
        .map(|(_, v)| v.trim())
        .collect();
    let event = match events.as_slice() {
        [one] if !one.is_empty() => one.to_ascii_lowercase(),
        [] | [_] => {
            return Err(ApiError::field(
                "event",
                "query parameter event is required (e.g. ?event=up)",
            ))
        }
        _ => {
            return Err(ApiError::field(
                "event",
                "query parameter event is given more than once",
            ))
        }
    };
    let limit = app.config.server.max_body_bytes;
    let too_large = || {
        count(&event, "rejected");
        let mut e = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes (server.max_body_bytes)"),
        );
        e.field = Some("body".into());
        e
    };
    // Refused before a byte is read: a declared huge body must not hold the request open.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let encoding = Encoding::from_content_type(content_type).map_err(|e| {
        let mut err = ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string());
        err.field = Some("content-type".into());
        err
    })?;
    let decoded = ingest::decode(
        &event,
        encoding,
        &body,
        app.config.integration.chirpstack_version,
        app.network.kind(),
    );
    let decoded = match decoded {
        Ok(d) => d,
        Err(e) => {
            count(&event, "malformed");
            tracing::warn!(%event, error = %e, "malformed integration event");
            let field = match &e {
                ingest::IngestError::Field { field, .. } => Some(field.to_string()),
                _ => None,
            };
            let mut err = ApiError::new(StatusCode::BAD_REQUEST, e.to_string());
            err.field = field;
            return Err(err);
        }
    };
    let Some(mut decoded) = decoded else {
        count(&event, "ignored");
        return Ok((
            StatusCode::OK,
            Json(IngestResult {
                event,
                outcome: "ignored",
            }),
        ));
    };
    let note = ingest::plausible::fix_time(&mut decoded, chrono::Utc::now());
    let note = note.map(|message| ingest::IntegrationEvent {
        dev_eui: decoded.dev_eui,
        at: decoded.at,
        device: ingest::DeviceIdentity::default(),
        body: ingest::EventBody::Log {
            level: "warning".into(),
            message,
        },
    });
    let refused = |e: String| {
        count(&event, "failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("not stored: {e}"))
    };
    app.writer.commit(decoded).await.map_err(refused)?;
    if let Some(note) = note {
        // The event itself is committed; a note that cannot be is not worth a 503 that would
        // make it look lost.
        if let Err(e) = app.writer.commit(note).await {
            tracing::warn!(error = %e, "could not note an implausible event time");
        }
    }
    count(&event, "stored");
    Ok((
        StatusCode::OK,
        Json(IngestResult {
            event,
            outcome: "stored",
        }),
    ))
}

/// The original app's integration URL, kept so existing ChirpStack set-ups work unchanged; the
/// same as `POST /api/integrations/chirpstack`.
#[utoipa::path(post, path = "/",
    params(("event" = String, Query, description = "as for /api/integrations/chirpstack")),
    request_body(content = String, description = "ChirpStack v4 or v3 event, JSON or Protobuf"),
    responses((status = 200, body = IngestResult), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody)),
    security(("integration_token" = [])))]
pub async fn legacy_integration(
    state: State<AppState>,
    query: Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<IngestResult>), ApiError> {
    integration(state, query, headers, body).await
}

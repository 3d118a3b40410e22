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
    // Static label values: an owned String per request cost an allocation on every event.
    let event: &'static str = match event {
        "up" => "up",
        "join" => "join",
        "status" => "status",
        "ack" => "ack",
        "txack" => "txack",
        "log" => "log",
        "error" => "error",
        _ => "other",
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
    check_token(&app, &headers)?;
    let event = event_name(&q)?;
    let body = read_body(&event, app.config.server.max_body_bytes, &headers, body).await?;
    let encoding = encoding_of(&headers)?;
    let decoded = ingest::decode(
        &event,
        encoding,
        &body,
        app.config.integration.chirpstack_version,
        app.network.kind(),
    )
    .map_err(|e| malformed(&event, &e))?;
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
    let note = ingest::plausible::fix_time(&mut decoded, chrono::Utc::now())
        .map(|message| time_note(&decoded, message));
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

/// Refuses a request without the integration token ChirpStack was configured with.
fn check_token(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if app.integration_token.matches(t) => Ok(()),
        Some(_) => {
            count("unauthorized", "rejected");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong integration token",
            ))
        }
        None => {
            count("unauthorized", "rejected");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing header Authorization: Bearer <integration.token>",
            ))
        }
    }
}

/// The event type from `?event=`, in lower case: exactly one, not empty.
fn event_name(query: &[(String, String)]) -> Result<String, ApiError> {
    let events: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "event")
        .map(|(_, v)| v.trim())
        .collect();
    match events.as_slice() {
        [one] if !one.is_empty() => Ok(one.to_ascii_lowercase()),
        [] | [_] => Err(ApiError::field(
            "event",
            "query parameter event is required (e.g. ?event=up)",
        )),
        _ => Err(ApiError::field(
            "event",
            "query parameter event is given more than once",
        )),
    }
}

/// The body, up to `limit` bytes (`server.max_body_bytes`); larger is a 413.
async fn read_body(
    event: &str,
    limit: usize,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || {
        count(event, "rejected");
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
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

/// JSON or Protobuf, from the Content-Type ChirpStack sends; anything else is a 415.
fn encoding_of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    Encoding::from_content_type(content_type).map_err(|e| {
        let mut err = ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string());
        err.field = Some("content-type".into());
        err
    })
}

/// A 400 for an event that does not decode, naming the field when the decoder knows it.
fn malformed(event: &str, e: &ingest::IngestError) -> ApiError {
    count(event, "malformed");
    tracing::warn!(%event, error = %e, "malformed integration event");
    let field = match e {
        ingest::IngestError::Field { field, .. } => Some(field.to_string()),
        _ => None,
    };
    let mut err = ApiError::new(StatusCode::BAD_REQUEST, e.to_string());
    err.field = field;
    err
}

/// A warning in the device's log that the event's time was corrected, so the change is seen.
fn time_note(event: &ingest::IntegrationEvent, message: String) -> ingest::IntegrationEvent {
    ingest::IntegrationEvent {
        dev_eui: event.dev_eui,
        at: event.at,
        device: ingest::DeviceIdentity::default(),
        body: ingest::EventBody::Log {
            level: "warning".into(),
            message,
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_event_is_one_non_empty_query_parameter_in_lower_case() {
        assert_eq!(
            event_name(&query(&[("x", "1"), ("event", " Up ")])).ok(),
            Some("up".to_string())
        );
        for bad in [
            query(&[]),
            query(&[("event", " ")]),
            query(&[("event", "up"), ("event", "join")]),
        ] {
            let e = event_name(&bad).err().map(|e| e.field);
            assert_eq!(e, Some(Some("event".to_string())), "{bad:?}");
        }
    }
}

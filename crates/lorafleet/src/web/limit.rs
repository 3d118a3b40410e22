//! Bodies announced larger than their route accepts are refused before a byte of them is read,
//! so a client cannot hold a request open by declaring a huge `Content-Length` and sending
//! slowly. Bodies without a length (chunked) are still cut while they arrive by
//! `DefaultBodyLimit` and the upload code.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The largest body of every route but uploads, in bytes.
#[derive(Clone, Copy)]
pub struct BodyLimits {
    pub json: usize,
}

/// Routes that check the declared length themselves, after authenticating: uploads (their
/// limit is firmware.max_size, the answer names the `file` field) and the integration (a
/// stranger learns nothing before the token is checked).
fn checks_its_own(req: &Request) -> bool {
    req.method() == Method::POST
        && matches!(
            req.uri().path(),
            "/api/firmware" | "/api/integrations/chirpstack" | "/"
        )
}

pub async fn declared_length(
    State(limits): State<BodyLimits>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limits.json as u64 && !checks_its_own(&req) => too_large(limits.json),
        _ => next.run(req).await,
    }
}

fn too_large(limit: usize) -> Response {
    let mut e = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than this endpoint accepts ({limit} bytes)"),
    );
    e.field = Some("body".into());
    e.into_response()
}

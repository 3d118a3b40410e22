//! Who is asking: HTTP Basic, `Authorization: Bearer <api token>`, or a browser session cookie
//! (with a CSRF token on every state-changing request). Also the login/logout endpoints.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiJson};
use crate::auth::{self, CSRF_HEADER, SESSION_COOKIE};
use crate::AppState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthVia {
    Basic,
    Token,
    Session { csrf_token: String },
}

/// An authenticated user. Extracting it refuses the request when credentials are missing or
/// wrong, and refuses a cookie-authenticated state-changing request without its CSRF token.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub username: String,
    pub via: AuthVia,
}

fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The client's address, when the server was started with connection info (tests may not be).
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

fn throttled(wait: std::time::Duration) -> ApiError {
    let secs = wait.as_secs().max(1);
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed logins; try again in {secs} s"),
    );
    e.headers.push((header::RETRY_AFTER, secs.to_string()));
    e
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let from_script = parts.headers.contains_key("sec-fetch-mode");
        authenticate(parts, app).await.map_err(|mut e| {
            // A Basic challenge on a fetch() from the console would make the browser open its
            // own login dialog; the console shows its login form instead.
            if from_script {
                e.headers
                    .retain(|(name, _)| name != header::WWW_AUTHENTICATE);
            }
            e
        })
    }
}

async fn authenticate(parts: &mut Parts, app: &AppState) -> Result<AuthUser, ApiError> {
    {
        let ip = client_ip(parts);
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
            if let Some(token) = value.strip_prefix("Bearer ") {
                return match auth::check_api_token(&app.db, token.trim()).await? {
                    Some(username) => Ok(AuthUser {
                        username,
                        via: AuthVia::Token,
                    }),
                    None => Err(ApiError::unauthorized("unknown API token")),
                };
            }
            if let Some(encoded) = value.strip_prefix("Basic ") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
                let (user, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
                let key = auth::sha256_hex(&decoded);
                if let Some(username) = app.basic_cache.get(&key) {
                    return Ok(AuthUser {
                        username,
                        via: AuthVia::Basic,
                    });
                }
                if let Some(wait) = app.throttle.wait(user, ip) {
                    return Err(throttled(wait));
                }
                return match auth::check_password(&app.db, user, password).await? {
                    Some(_) => {
                        app.throttle.succeeded(user, ip);
                        app.basic_cache.put(key, user.to_string());
                        Ok(AuthUser {
                            username: user.to_string(),
                            via: AuthVia::Basic,
                        })
                    }
                    None => {
                        app.throttle.failed(user, ip);
                        ::metrics::counter!("lorafleet_login_failures_total").increment(1);
                        Err(ApiError::unauthorized("wrong user name or password"))
                    }
                };
            }
            return Err(ApiError::unauthorized(
                "unsupported Authorization scheme; use Basic or Bearer",
            ));
        }
        let Some(cookie) = session_cookie(&parts.headers) else {
            return Err(ApiError::unauthorized("authentication required"));
        };
        let Some(session) = auth::find_session(&app.db, &cookie).await? else {
            return Err(ApiError::unauthorized("session expired; log in again"));
        };
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !constant_time_eq(sent.as_bytes(), session.csrf_token.as_bytes()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "missing or wrong X-CSRF-Token header",
                ));
            }
        }
        Ok(AuthUser {
            username: session.username,
            via: AuthVia::Session {
                csrf_token: session.csrf_token,
            },
        })
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    pub username: String,
    /// Send as `X-CSRF-Token` with every POST, PATCH and DELETE made with the session cookie.
    pub csrf_token: Option<String>,
}

/// The current user.
#[utoipa::path(get, path = "/api/session", responses((status = 200, body = SessionInfo), (status = 401, body = super::error::ErrorBody)))]
pub async fn current(user: AuthUser) -> Json<SessionInfo> {
    Json(SessionInfo {
        username: user.username,
        csrf_token: match user.via {
            AuthVia::Session { csrf_token } => Some(csrf_token),
            _ => None,
        },
    })
}

#[derive(Deserialize, ToSchema)]
pub struct Login {
    pub username: String,
    pub password: String,
}

fn cookie(value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    match max_age {
        Some(s) => c.push_str(&format!("; Max-Age={s}")),
        None => c.push_str("; Max-Age=0"),
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// Logs in and sets the session cookie. A JSON body is required, which a cross-site form cannot
/// send, so login itself cannot be forged.
#[utoipa::path(post, path = "/api/session", request_body = Login, responses((status = 200, body = SessionInfo), (status = 401, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody)))]
pub async fn login(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    if body.username.is_empty() {
        return Err(ApiError::field("username", "user name is required"));
    }
    if let Some(wait) = app.throttle.wait(&body.username, ip) {
        return Err(throttled(wait));
    }
    let Some(user_id) = auth::check_password(&app.db, &body.username, &body.password).await? else {
        app.throttle.failed(&body.username, ip);
        ::metrics::counter!("lorafleet_login_failures_total").increment(1);
        tracing::warn!(user = %body.username, ?ip, "failed login");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong user name or password",
        ));
    };
    app.throttle.succeeded(&body.username, ip);
    let (session, csrf) =
        auth::create_session(&app.db, user_id, app.config.auth.session_hours).await?;
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        == Some("https");
    let set_cookie = cookie(&session, Some(app.config.auth.session_hours * 3600), secure);
    tracing::info!(user = %body.username, "login");
    Ok((
        [(header::SET_COOKIE, set_cookie)],
        Json(SessionInfo {
            username: body.username,
            csrf_token: Some(csrf),
        }),
    )
        .into_response())
}

/// Logs out: the session ends on the server and the cookie is cleared.
#[utoipa::path(delete, path = "/api/session", responses((status = 204)))]
pub async fn logout(
    _user: AuthUser,
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(c) = session_cookie(&headers) {
        auth::delete_session(&app.db, &c).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, cookie("", None, false))],
    )
        .into_response())
}

#[derive(Deserialize, ToSchema)]
pub struct NewToken {
    /// What the token is for, e.g. "grafana".
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    pub name: String,
    /// Shown once; lorafleet keeps only its hash.
    pub token: String,
}

/// Creates an API token for the current user.
#[utoipa::path(post, path = "/api/tokens", request_body = NewToken, responses((status = 201, body = CreatedToken)))]
pub async fn create_token(
    user: AuthUser,
    State(app): State<AppState>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::field("name", "name must be 1..100 characters"));
    }
    let token = auth::create_api_token(&app.db, &user.username, name).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            name: name.to_string(),
            token,
        }),
    ))
}

/// Lists API tokens (names and use, never the secrets).
#[utoipa::path(get, path = "/api/tokens", responses((status = 200, body = Vec<auth::ApiTokenInfo>)))]
pub async fn list_tokens(
    _user: AuthUser,
    State(app): State<AppState>,
) -> Result<Json<Vec<auth::ApiTokenInfo>>, ApiError> {
    Ok(Json(auth::list_api_tokens(&app.db).await?))
}

/// Revokes an API token.
#[utoipa::path(delete, path = "/api/tokens/{id}", params(("id" = i64, Path)), responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete_token(
    _user: AuthUser,
    State(app): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::field("id", format!("a token id is a number, got {id:?}")))?;
    if auth::delete_api_token(&app.db, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no API token {id}")))
    }
}

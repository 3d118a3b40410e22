//! Who is asking: HTTP Basic, `Authorization: Bearer <api token>`, or a browser session cookie
//! (with a CSRF token on every state-changing request), and whether the token's scope allows
//! the request. Also the login/logout, token and user endpoints.

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
use crate::auth::{self, PoolBusy, Scope, CSRF_HEADER, SESSION_COOKIE};
use crate::config::SecureCookies;
use crate::storage;
use crate::AppState;

pub use crate::auth::constant_time_eq;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthVia {
    Basic,
    Token,
    Session { csrf_token: String },
}

/// An authenticated user. Extracting it refuses the request when credentials are missing or
/// wrong, when a token's scope does not cover the request, and a cookie-authenticated
/// state-changing request without its CSRF token.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub username: String,
    pub via: AuthVia,
    /// A token's scope; a password or session can do everything its user can (`admin`).
    pub scope: Scope,
}

/// The client's address (see [`auth::client_address`] for `X-Forwarded-For`).
fn client_ip(parts: &Parts, app: &AppState) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    let forwarded: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Some(auth::client_address(peer, &forwarded, &app.trusted_proxies))
}

/// The client's address, when the server was started with connection info (tests may not be).
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, app)))
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
        format!("too many failed logins from this address; try again in {secs} s"),
    );
    e.headers.push((header::RETRY_AFTER, secs.to_string()));
    e
}

fn busy(why: PoolBusy) -> ApiError {
    let mut e = match why {
        PoolBusy::Full => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many logins being checked; try again in a moment",
        ),
        PoolBusy::SameClient => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "a login from this address is already being checked; send one at a time",
        ),
    };
    e.headers.push((header::RETRY_AFTER, "1".into()));
    e
}

fn too_long(field: &str, msg: String) -> ApiError {
    ApiError::field(field, msg)
}

/// Checks a password under the back-off and the bounded hashing pool; returns the user.
async fn verify_login(
    app: &AppState,
    ip: Option<IpAddr>,
    username: &str,
    password: &str,
) -> Result<storage::users::UserAuth, ApiError> {
    auth::check_lengths(username, password).map_err(|(f, m)| too_long(f, m))?;
    if let Some(wait) = app.throttle.wait(&app.db, username, ip).await? {
        return Err(throttled(wait));
    }
    let stored = storage::users::find(&app.db, username).await?;
    let hash = stored.as_ref().map(|u| u.password_hash.clone());
    let ok = app
        .hash_pool
        .verify(ip, password, hash)
        .await
        .map_err(busy)?;
    match stored {
        Some(user) if ok => {
            app.throttle.succeeded(&app.db, username, ip).await?;
            if user.disabled {
                return Err(disabled(username));
            }
            Ok(user)
        }
        _ => {
            app.throttle.failed(&app.db, username, ip).await?;
            ::metrics::counter!("lorafleet_login_failures_total").increment(1);
            tracing::warn!(user = %auth::log_name(username), ?ip, "failed login");
            Err(ApiError::unauthorized("wrong user name or password"))
        }
    }
}

fn disabled(username: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("user {} is disabled", auth::log_name(username)),
    )
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

/// The scope a request needs: users, tokens and settings are `admin`; any other change is
/// `operate`; reading is `read`.
pub fn scope_needed(method: &Method, path: &str) -> Scope {
    let admin = ["/api/tokens", "/api/users", "/api/settings"]
        .iter()
        .any(|p| {
            path.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
    if admin {
        Scope::Admin
    } else if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        Scope::Read
    } else {
        Scope::Operate
    }
}

/// 403 naming what is missing: the token's scope, or the user's role.
fn scope_refused(user: &AuthUser, need: Scope, parts: &Parts) -> ApiError {
    let what = format!("{} {}", parts.method, parts.uri.path());
    let (field, msg) = match user.via {
        AuthVia::Token => (
            "scope",
            format!(
                "this token's scope is {}; {what} needs scope {}",
                user.scope.as_str(),
                need.as_str()
            ),
        ),
        _ => (
            "role",
            format!(
                "user {} has role {}; {what} needs role {}",
                auth::log_name(&user.username),
                user.scope.role_name(),
                need.role_name()
            ),
        ),
    };
    let mut e = ApiError::new(StatusCode::FORBIDDEN, msg);
    e.field = Some(field.into());
    e
}

async fn authenticate(parts: &mut Parts, app: &AppState) -> Result<AuthUser, ApiError> {
    let user = identify(parts, app).await?;
    let need = scope_needed(&parts.method, parts.uri.path());
    if user.scope < need {
        return Err(scope_refused(&user, need, parts));
    }
    Ok(user)
}

async fn identify(parts: &mut Parts, app: &AppState) -> Result<AuthUser, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return by_session(parts, app).await;
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?
        .to_string();
    if let Some(token) = value.strip_prefix("Bearer ") {
        let Some((username, scope)) = auth::check_api_token(&app.db, token.trim()).await? else {
            return Err(ApiError::unauthorized("unknown API token"));
        };
        return Ok(AuthUser {
            username,
            via: AuthVia::Token,
            scope,
        });
    }
    if let Some(encoded) = value.strip_prefix("Basic ") {
        return by_basic(parts, app, encoded).await;
    }
    Err(ApiError::unauthorized(
        "unsupported Authorization scheme; use Basic or Bearer",
    ))
}

async fn by_basic(parts: &Parts, app: &AppState, encoded: &str) -> Result<AuthUser, ApiError> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
    auth::check_lengths(user, password).map_err(|(f, m)| too_long(f, m))?;
    let key = auth::sha256_hex(&decoded);
    if let Some(cached) = app.basic_cache.get(&key) {
        // The stored hash changes with the password, wherever it was changed; role and the
        // disabled flag are read fresh too.
        let current = storage::users::find(&app.db, &cached.username).await?;
        match current {
            Some(u) if u.password_hash == cached.password_hash && !u.disabled => {
                return Ok(basic_user(cached.username, &u.role));
            }
            _ => app.basic_cache.remove(&key),
        }
    }
    let ip = client_ip(parts, app);
    let found = verify_login(app, ip, user, password).await?;
    app.basic_cache
        .put(key, user.to_string(), found.password_hash);
    Ok(basic_user(user.to_string(), &found.role))
}

fn basic_user(username: String, role: &str) -> AuthUser {
    AuthUser {
        username,
        via: AuthVia::Basic,
        scope: Scope::of_role(role),
    }
}

async fn by_session(parts: &Parts, app: &AppState) -> Result<AuthUser, ApiError> {
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
        scope: session.scope,
    })
}

#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    pub username: String,
    /// Send as `X-CSRF-Token` with every POST, PATCH and DELETE made with the session cookie.
    pub csrf_token: Option<String>,
    /// What these credentials may do: `read`, `operate` or `admin`.
    pub scope: String,
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
        scope: user.scope.as_str().into(),
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

/// Whether the session cookie gets `Secure`: as configured, or in `auto` when the request
/// came over https through a proxy (a client claiming https for itself only gets a cookie it
/// can use over https, which harms nobody).
fn secure_cookie(app: &AppState, headers: &HeaderMap) -> bool {
    match app.config.server.secure_cookies {
        SecureCookies::Always => true,
        SecureCookies::Never => false,
        SecureCookies::Auto => {
            headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                == Some("https")
        }
    }
}

/// Logs in and sets the session cookie. A JSON body is required, which a cross-site form cannot
/// send, so login itself cannot be forged.
#[utoipa::path(post, path = "/api/session", request_body = Login, responses((status = 200, body = SessionInfo), (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody), (status = 503, body = super::error::ErrorBody)))]
pub async fn login(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    let user = verify_login(&app, ip, &body.username, &body.password)
        .await
        // A login form must not make the browser open its own Basic dialog.
        .map_err(|mut e| {
            e.headers
                .retain(|(name, _)| name != header::WWW_AUTHENTICATE);
            e
        })?;
    let (session, csrf) =
        auth::create_session(&app.db, user.id, app.config.auth.session_hours).await?;
    let secure = secure_cookie(&app, &headers);
    let set_cookie = cookie(&session, Some(app.config.auth.session_hours * 3600), secure);
    tracing::info!(user = %auth::log_name(&body.username), "login");
    Ok((
        [(header::SET_COOKIE, set_cookie)],
        Json(SessionInfo {
            username: body.username,
            csrf_token: Some(csrf),
            scope: Scope::of_role(&user.role).as_str().into(),
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
    let secure = secure_cookie(&app, &headers);
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, cookie("", None, secure))],
    )
        .into_response())
}

#[derive(Deserialize, ToSchema)]
pub struct NewToken {
    /// What the token is for, e.g. "grafana".
    pub name: String,
    /// `read` (GET only), `operate` (also requests, downlinks, firmware, campaigns) or `admin`
    /// (also users, tokens, settings). Default: the scope of the credentials creating it.
    pub scope: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    pub name: String,
    pub scope: String,
    /// Shown once; lorafleet keeps only its hash.
    pub token: String,
}

/// Creates an API token for the current user, with at most the current credentials' scope.
#[utoipa::path(post, path = "/api/tokens", request_body = NewToken, responses((status = 201, body = CreatedToken), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn create_token(
    user: AuthUser,
    State(app): State<AppState>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::field("name", "name must be 1..100 characters"));
    }
    let scope = match body.scope.as_deref() {
        None => user.scope,
        Some(s) => Scope::parse(s).ok_or_else(|| {
            ApiError::field(
                "scope",
                format!("scope must be read, operate or admin, got {s:?}"),
            )
        })?,
    };
    if scope > user.scope {
        let mut e = ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "a token cannot have more rights than the credentials creating it ({})",
                user.scope.as_str()
            ),
        );
        e.field = Some("scope".into());
        return Err(e);
    }
    let token = auth::create_api_token(&app.db, &user.username, name, scope).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            name: name.to_string(),
            scope: scope.as_str().into(),
            token,
        }),
    ))
}

/// Lists API tokens (names, scopes and use, never the secrets).
#[utoipa::path(get, path = "/api/tokens", responses((status = 200, body = Vec<auth::ApiTokenInfo>)))]
pub async fn list_tokens(
    _user: AuthUser,
    State(app): State<AppState>,
) -> Result<Json<Vec<auth::ApiTokenInfo>>, ApiError> {
    Ok(Json(auth::list_api_tokens(&app.db).await?))
}

/// Revokes an API token; the next request with it is refused.
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
        // Tokens are looked up on every request; this only keeps other instances' caches honest.
        app.cluster.auth_changed();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no API token {id}")))
    }
}

/// Lists users (names only, never hashes).
#[utoipa::path(get, path = "/api/users", responses((status = 200, body = Vec<storage::users::UserInfo>)))]
pub async fn list_users(
    _user: AuthUser,
    State(app): State<AppState>,
) -> Result<Json<Vec<storage::users::UserInfo>>, ApiError> {
    Ok(Json(storage::users::list(&app.db).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    /// `viewer` (read), `operator` (requests, downlinks, campaigns) or `admin` (users, tokens,
    /// settings). Default: `viewer`.
    pub role: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct UserChange {
    /// A new password; the user's sessions and cached credentials end at once.
    pub password: Option<String>,
    /// `viewer`, `operator` or `admin`; takes effect on the next request, tokens included.
    pub role: Option<String>,
    /// A disabled user cannot log in; its sessions end and its tokens stop working.
    pub disabled: Option<bool>,
}

/// The rules a new password and user name must meet, as a 400 naming the field.
fn check_new_credentials(username: &str, password: &str) -> Result<(), ApiError> {
    auth::check_lengths(username, password).map_err(|(f, m)| ApiError::field(f, m))?;
    if username.chars().any(char::is_control) {
        return Err(ApiError::field(
            "username",
            "user name has control characters",
        ));
    }
    if password.chars().count() < 8 {
        return Err(ApiError::field(
            "password",
            "password must have at least 8 characters",
        ));
    }
    Ok(())
}

fn parse_role(role: &str) -> Result<Scope, ApiError> {
    Scope::parse_role(role).ok_or_else(|| {
        ApiError::field(
            "role",
            format!("role must be viewer, operator or admin, got {role:?}"),
        )
    })
}

/// Hashes on the blocking pool, keeping the async workers free; only admins get here.
async fn hash(password: &str) -> Result<String, ApiError> {
    let password = password.to_string();
    let hashed = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(ApiError::internal)??;
    Ok(hashed)
}

/// Creates a user.
#[utoipa::path(post, path = "/api/users", request_body = NewUser, responses((status = 201), (status = 400, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn create_user(
    _user: AuthUser,
    State(app): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<StatusCode, ApiError> {
    check_new_credentials(&body.username, &body.password)?;
    let role = parse_role(body.role.as_deref().unwrap_or("viewer"))?;
    let hashed = hash(&body.password).await?;
    if !storage::users::create(&app.db, &body.username, &hashed, role.role_name()).await? {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            format!("user {} exists", auth::log_name(&body.username)),
        );
        e.field = Some("username".into());
        return Err(e);
    }
    tracing::info!(user = %auth::log_name(&body.username), role = role.role_name(), "user created");
    Ok(StatusCode::CREATED)
}

/// Changes a user's password, role or disabled flag. A new password or disabling ends the
/// user's sessions at once; no change may leave the server without an enabled admin (409).
#[utoipa::path(patch, path = "/api/users/{username}", params(("username" = String, Path)), request_body = UserChange, responses((status = 204), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn update_user(
    _user: AuthUser,
    State(app): State<AppState>,
    axum::extract::Path(username): axum::extract::Path<String>,
    ApiJson(body): ApiJson<UserChange>,
) -> Result<StatusCode, ApiError> {
    if body.password.is_none() && body.role.is_none() && body.disabled.is_none() {
        return Err(ApiError::field(
            "password",
            "nothing to change: send password, role or disabled",
        ));
    }
    if let Some(p) = &body.password {
        check_new_credentials(&username, p)?;
    }
    let role = body.role.as_deref().map(parse_role).transpose()?;
    if storage::users::id_of(&app.db, &username).await?.is_none() {
        return Err(no_user(&username));
    }
    if role.is_some() || body.disabled.is_some() {
        let role = role.map(Scope::role_name);
        match storage::users::set_access(&app.db, &username, role, body.disabled).await? {
            storage::users::AccessChange::Done => {}
            storage::users::AccessChange::NoSuchUser => return Err(no_user(&username)),
            storage::users::AccessChange::LastAdmin => {
                let mut e =
                    ApiError::new(StatusCode::CONFLICT, "this would leave no enabled admin");
                e.field = Some(if role.is_some() { "role" } else { "disabled" }.into());
                return Err(e);
            }
        }
    }
    if let Some(p) = &body.password {
        storage::users::upsert(&app.db, &username, &hash(p).await?).await?;
    }
    app.cluster.auth_changed();
    tracing::info!(user = %auth::log_name(&username), "user changed");
    Ok(StatusCode::NO_CONTENT)
}

fn no_user(username: &str) -> ApiError {
    ApiError::not_found(format!("no user {}", auth::log_name(username)))
}

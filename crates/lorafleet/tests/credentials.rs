//! Login, sessions and tokens that nobody can wear down (issue 11 items 2 and 6), against the
//! real router on loopback: input limits before hashing, bounded back-off per address, a
//! bounded hashing pool, password changes that end sessions, token scopes, the hashed
//! integration token and the session cookie's Secure flag.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Resident memory of this process (the server runs in it), in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// A client whose connections come from another loopback address.
fn client_from(addr: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(addr.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login(
    http: &reqwest::Client,
    t: &TestApp,
    user: &str,
    password: &str,
) -> reqwest::Response {
    http.post(t.url("/api/session"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn field_of(r: reqwest::Response) -> Value {
    r.json::<Value>().await.unwrap()["field"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_user_names_and_passwords_are_refused_before_hashing() {
    let t = spawn(|_| {}, None).await;
    let before = rss_mib();
    let long_name = "n".repeat(1_000_000);
    let run = async {
        for _ in 0..300 {
            let r = login(&t.http, &t, &long_name, "x").await;
            assert_eq!(r.status(), 400);
            assert_eq!(field_of(r).await, "username");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("300 refusals are answered without hashing");
    assert!(
        rss_mib() < before + 200,
        "RSS grew from {before} MiB to {} MiB",
        rss_mib()
    );
    assert_eq!(
        t.app.throttle.records(&t.app.db).await.unwrap(),
        (0, 0),
        "nothing recorded per name"
    );

    let r = login(&t.http, &t, &"n".repeat(65), "x").await;
    assert_eq!(field_of(r).await, "username");
    let r = login(&t.http, &t, "admin", &"p".repeat(1025)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(field_of(r).await, "password");
    let r = t
        .http
        .get(t.url("/api/devices"))
        .basic_auth("n".repeat(100), Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(field_of(r).await, "username");
    // The limits are not a way around the back-off: the right password still works.
    assert_eq!(login(&t.http, &t, "admin", PASSWORD).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_users_does_not_lock_out_the_admin() {
    let t = std::sync::Arc::new(spawn(|_| {}, None).await);
    let before = rss_mib();
    let mut flood = Vec::new();
    for i in 0..64 {
        let t = t.clone();
        flood.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for j in 0..4 {
                let r = t
                    .http
                    .get(t.url("/api/devices"))
                    .basic_auth(format!("made-up-{i}-{j}"), Some("guess"))
                    .send()
                    .await
                    .unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        }));
    }
    let admin = client_from("127.0.0.2");
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        login(&admin, &t, "admin", PASSWORD),
    )
    .await
    .expect("the admin's login is answered while the flood runs");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let mut seen = std::collections::BTreeSet::new();
    for task in flood {
        seen.extend(task.await.unwrap());
    }
    assert!(
        seen.iter().all(|s| [401, 429, 503].contains(s)),
        "flood answers {seen:?}"
    );
    assert!(
        seen.contains(&429),
        "the flooding address was turned away: {seen:?}"
    );
    assert!(
        rss_mib() < before + 300,
        "RSS grew from {before} MiB to {} MiB",
        rss_mib()
    );
    // Guessing on from the flooding address ends in its back-off (bounded: 4 x 5 failures),
    // whatever name it tries; then even the right password waits there, and not elsewhere.
    let mut backed_off = false;
    for i in 0..40 {
        let r = t
            .http
            .get(t.url("/api/devices"))
            .basic_auth(format!("more-{i}"), Some("guess"))
            .send()
            .await
            .unwrap();
        let body = r.text().await.unwrap();
        if body.contains("too many failed logins") {
            backed_off = true;
            break;
        }
    }
    assert!(backed_off, "the flooding address was never backed off");
    let r = t
        .http
        .get(t.url("/api/devices"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = admin
        .get(t.url("/api/devices"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    // Not trusted: a client cannot escape its back-off by inventing X-Forwarded-For.
    let t = spawn(|c| c.auth.max_failed_logins = 1, None).await;
    for i in 0..4 {
        let r = t
            .http
            .post(t.url("/api/session"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({"username": format!("u{i}"), "password": "guess"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let r = t
        .http
        .post(t.url("/api/session"))
        .header("x-forwarded-for", "203.0.113.99")
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);

    // Trusted proxy: each forwarded client has its own back-off.
    let t = spawn(
        |c| {
            c.auth.max_failed_logins = 1;
            c.server.trusted_proxies = vec!["127.0.0.1".into()];
        },
        None,
    )
    .await;
    let attempt = |xff: &'static str, password: &'static str| {
        t.http
            .post(t.url("/api/session"))
            .header("x-forwarded-for", xff)
            .json(&json!({"username": "admin", "password": password}))
            .send()
    };
    assert_eq!(attempt("203.0.113.7", "guess").await.unwrap().status(), 401);
    assert_eq!(
        attempt("203.0.113.7", PASSWORD).await.unwrap().status(),
        429
    );
    // A spoofed entry left of the proxy's own is not the client.
    assert_eq!(
        attempt("198.51.100.1, 203.0.113.7", PASSWORD)
            .await
            .unwrap()
            .status(),
        429
    );
    assert_eq!(
        attempt("198.51.100.1", PASSWORD).await.unwrap().status(),
        200
    );
}

async fn session_of(t: &TestApp, password: &str) -> String {
    let r = login(&t.http, t, "admin", password).await;
    assert_eq!(r.status(), 200);
    let c = r.headers()["set-cookie"].to_str().unwrap();
    c.split(';').next().unwrap().to_string()
}

async fn status_with_cookie(t: &TestApp, cookie: &str) -> u16 {
    t.http
        .get(t.url("/api/session"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn status_with_basic(t: &TestApp, password: &str) -> u16 {
    t.http
        .get(t.url("/api/devices"))
        .basic_auth("admin", Some(password))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn changing_a_password_in_the_api_ends_sessions_and_cached_basic_at_once() {
    let t = spawn(|c| c.auth.max_failed_logins = 10, None).await;
    let cookie = session_of(&t, PASSWORD).await;
    assert_eq!(status_with_basic(&t, PASSWORD).await, 200, "now cached");
    let r = t
        .http
        .patch(t.url("/api/users/admin"))
        .basic_auth("admin", Some(PASSWORD))
        .json(&json!({"password": "a-new-password-456"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(status_with_cookie(&t, &cookie).await, 401);
    assert_eq!(status_with_basic(&t, PASSWORD).await, 401);
    assert_eq!(status_with_basic(&t, "a-new-password-456").await, 200);

    let r = t
        .http
        .patch(t.url("/api/users/admin"))
        .basic_auth("admin", Some("a-new-password-456"))
        .json(&json!({"password": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(field_of(r).await, "password");
    let r = t
        .http
        .patch(t.url("/api/users/nobody"))
        .basic_auth("admin", Some("a-new-password-456"))
        .json(&json!({"password": "long-enough-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn changing_a_password_with_the_command_line_ends_sessions_and_cached_basic() {
    let t = spawn(|c| c.auth.max_failed_logins = 10, None).await;
    let cookie = session_of(&t, PASSWORD).await;
    assert_eq!(status_with_basic(&t, PASSWORD).await, 200, "now cached");
    // Another process, as an operator would run it next to the server.
    let out = cli(
        &t.app.config,
        &["user", "set-password", "admin"],
        "cli-password-789\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(status_with_cookie(&t, &cookie).await, 401);
    assert_eq!(status_with_basic(&t, PASSWORD).await, 401);
    assert_eq!(status_with_basic(&t, "cli-password-789").await, 200);
}

async fn new_token(t: &TestApp, scope: Option<&str>) -> (reqwest::StatusCode, Value) {
    let mut body = json!({"name": "t"});
    if let Some(s) = scope {
        body["scope"] = json!(s);
    }
    let r = t.post("/api/tokens").json(&body).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn with_token(
    t: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    t.http
        .request(method, t.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn token_scopes_limit_what_a_token_can_do() {
    use reqwest::Method;
    let t = spawn(|_| {}, None).await;
    let (s, read) = new_token(&t, Some("read")).await;
    assert_eq!(s, 201);
    assert_eq!(read["scope"], "read");
    let read = read["token"].as_str().unwrap().to_string();
    let (_, operate) = new_token(&t, Some("operate")).await;
    let operate = operate["token"].as_str().unwrap().to_string();
    let (_, default) = new_token(&t, None).await;
    assert_eq!(
        default["scope"], "admin",
        "a password creates admin by default"
    );
    let (s, bad) = new_token(&t, Some("root")).await;
    assert_eq!(s, 400);
    assert_eq!(bad["field"], "scope");

    let downlink = "/api/devices/0102030405060708/downlinks";
    let r = with_token(&t, Method::GET, "/api/devices", &read, json!({})).await;
    assert_eq!(r.status(), 200);
    let r = with_token(&t, Method::POST, downlink, &read, json!({})).await;
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["field"], "scope");
    assert!(e["error"].as_str().unwrap().contains("operate"), "{e}");
    let r = with_token(&t, Method::POST, downlink, &operate, json!({})).await;
    assert!(![401, 403].contains(&r.status().as_u16()), "{}", r.status());
    // Neither can see or mint tokens, so neither can mint one wider than itself.
    for token in [&read, &operate] {
        let r = with_token(&t, Method::GET, "/api/tokens", token, json!({})).await;
        assert_eq!(r.status(), 403);
        let body = json!({"name": "escalate", "scope": "admin"});
        let r = with_token(&t, Method::POST, "/api/tokens", token, body).await;
        assert_eq!(r.status(), 403);
        let r = with_token(&t, Method::GET, "/api/users", token, json!({})).await;
        assert_eq!(r.status(), 403);
    }
    let listed: Value = t
        .get("/api/tokens")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let scopes: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes, ["read", "operate", "admin"]);
    // Revoking is immediate.
    let id = listed[0]["id"].as_i64().unwrap();
    assert_eq!(
        t.delete(&format!("/api/tokens/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let r = with_token(&t, Method::GET, "/api/devices", &read, json!({})).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn tokens_made_before_scopes_existed_are_admin() {
    let t = spawn(|_| {}, None).await;
    let token = "lft_made-by-an-older-release";
    // The columns an older release wrote; the migration's default supplies the scope.
    crate::on_db!(&t.app.db, p => sqlx::query(
        "INSERT INTO api_tokens (name, token_sha256, user_id, created_at)
         SELECT 'old', $1, id, '2026-01-01T00:00:00.000Z' FROM users WHERE username = 'admin'",
    )
    .bind(lorafleet::auth::sha256_hex(token))
    .execute(p).await.map(|_| ()))
    .unwrap();
    let r = t
        .http
        .post(t.url("/api/tokens"))
        .bearer_auth(token)
        .json(&json!({"name": "minted", "scope": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn ingest_with(t: &TestApp, token: &str) -> u16 {
    t.http
        .post(t.url("/api/integrations/chirpstack?event=up"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(v4_uplink_json("0102030405060708", 10, 1, &[1, 2]))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn settings(t: &TestApp) -> Vec<(String, String)> {
    crate::on_db!(&t.app.db, p => sqlx::query_as("SELECT key, value FROM settings ORDER BY key")
        .fetch_all(p).await)
    .unwrap()
}

/// Serves an app built by the test itself, the way `spawn` does.
async fn serve(app: lorafleet::AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = lorafleet::web::router(app);
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_generated_integration_token_is_stored_hashed() {
    let mut config = test_config();
    config.integration.token.clear();
    let (app, first) = lorafleet::App::build(config.config.clone()).await.unwrap();
    let token = first.integration_token.expect("generated and shown once");
    assert!(first.integration_token_generated);
    let stored: Vec<(String, String)> =
        crate::on_db!(&app.db, p => sqlx::query_as("SELECT key, value FROM settings")
        .fetch_all(p).await)
        .unwrap();
    assert_eq!(
        stored,
        [(
            "integration_token_sha256".to_string(),
            lorafleet::auth::sha256_hex(&token)
        )]
    );
    let base = serve(app).await;
    let post = |t: String| {
        reqwest::Client::new()
            .post(format!("{base}/api/integrations/chirpstack?event=up"))
            .bearer_auth(t)
            .header("content-type", "application/json")
            .body(v4_uplink_json("0102030405060708", 10, 1, &[1, 2]))
            .send()
    };
    assert_eq!(post(token.clone()).await.unwrap().status(), 200);
    let hash = lorafleet::auth::sha256_hex(&token);
    assert_eq!(
        post(hash).await.unwrap().status(),
        401,
        "the hash is no token"
    );
    // The next start finds the hash and has nothing to show.
    let (_, again) = lorafleet::App::build(config.config.clone()).await.unwrap();
    assert!(again.integration_token.is_none());
    assert!(!again.integration_token_generated);
}

#[tokio::test]
async fn a_plain_integration_token_from_an_older_release_keeps_working_hashed() {
    let t = spawn(|c| c.integration.token.clear(), None).await;
    crate::on_db!(&t.app.db, p => sqlx::query("DELETE FROM settings")
        .execute(p).await.map(|_| ()))
    .unwrap();
    crate::on_db!(&t.app.db, p => sqlx::query(
        "INSERT INTO settings (key, value) VALUES ('integration_token', 'old-plain-token')",
    )
    .execute(p).await.map(|_| ()))
    .unwrap();
    // The next start converts it.
    let (app, first) = lorafleet::App::build(t.app.config.clone()).await.unwrap();
    assert!(first.integration_token.is_none());
    assert!(app.integration_token.matches("old-plain-token"));
    assert!(!app.integration_token.matches("other"));
    let stored = settings(&t).await;
    assert_eq!(
        stored,
        [(
            "integration_token_sha256".to_string(),
            lorafleet::auth::sha256_hex("old-plain-token")
        )]
    );
    // A configured token keeps working as configured.
    let t = spawn(|_| {}, None).await;
    assert_eq!(ingest_with(&t, INTEGRATION_TOKEN).await, 200);
    assert_eq!(ingest_with(&t, "old-plain-token").await, 401);
}

async fn cookie_flags(t: &TestApp, proto: Option<&str>) -> String {
    let mut r = t.http.post(t.url("/api/session"));
    if let Some(p) = proto {
        r = r.header("x-forwarded-proto", p);
    }
    let r = r
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["set-cookie"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn secure_cookies_setting_forces_or_drops_the_secure_flag() {
    use lorafleet::config::SecureCookies;
    let auto = spawn(|_| {}, None).await;
    assert!(!cookie_flags(&auto, None).await.contains("Secure"));
    assert!(cookie_flags(&auto, Some("https"))
        .await
        .contains("; Secure"));
    let always = spawn(|c| c.server.secure_cookies = SecureCookies::Always, None).await;
    assert!(cookie_flags(&always, None).await.contains("; Secure"));
    let never = spawn(|c| c.server.secure_cookies = SecureCookies::Never, None).await;
    assert!(!cookie_flags(&never, Some("https")).await.contains("Secure"));
}

#[tokio::test]
async fn the_command_line_creates_scoped_tokens() {
    let t = spawn(|_| {}, None).await;
    let create = |scope: &str| {
        cli(
            &t.app.config,
            &["token", "create", "--name", "cli", "--scope", scope],
            "",
        )
    };
    let refused = create("root");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--scope"));
    let out = create("read");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let r = with_token(&t, reqwest::Method::GET, "/api/devices", &token, json!({})).await;
    assert_eq!(r.status(), 200);
    let r = with_token(&t, reqwest::Method::GET, "/api/tokens", &token, json!({})).await;
    assert_eq!(r.status(), 403);
}

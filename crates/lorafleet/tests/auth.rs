//! Who may do what: nothing without credentials, loopback included; Basic, API tokens and
//! browser sessions with CSRF protection; slowed-down guessing.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn api_refuses_missing_and_wrong_credentials() {
    let t = spawn(|_| {}, None).await;
    let none = t.http.get(t.url("/api/devices")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert!(none.headers().get("www-authenticate").is_some());
    // The console's fetch() must not trigger the browser's own Basic dialog.
    let from_console = t
        .http
        .get(t.url("/api/session"))
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    assert_eq!(from_console.status(), 401);
    assert!(from_console.headers().get("www-authenticate").is_none());
    let wrong = t
        .http
        .get(t.url("/api/devices"))
        .basic_auth("admin", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = t.get("/api/devices").send().await.unwrap();
    assert_eq!(right.status(), 200);
    let del = t
        .http
        .delete(t.url("/api/devices/0102030405060708"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 401);
    // Health and the API description are public; metrics too (no device data in them).
    assert_eq!(
        t.http.get(t.url("/health")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        t.http
            .get(t.url("/api/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn api_tokens_work_and_are_stored_hashed() {
    let t = spawn(|_| {}, None).await;
    let r = t
        .post("/api/tokens")
        .json(&json!({"name": "grafana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let ok = t
        .http
        .get(t.url("/api/devices"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = t
        .http
        .get(t.url("/api/devices"))
        .bearer_auth("lft_0000")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let stored: Vec<String> =
        crate::on_db!(&t.app.db, p => sqlx::query_scalar("SELECT token_sha256 FROM api_tokens")
        .fetch_all(p).await)
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token);
    let listed: Value = t
        .get("/api/tokens")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["name"], "grafana");
    assert!(listed[0]["last_used_at"].is_string());
    assert!(listed[0].get("token").is_none());
    let id = listed[0]["id"].as_i64().unwrap();
    assert_eq!(
        t.delete(&format!("/api/tokens/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let revoked = t
        .http
        .get(t.url("/api/devices"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 401);
}

#[tokio::test]
async fn session_cookie_needs_csrf_token_for_changes() {
    let t = spawn(|_| {}, None).await;
    let r = t
        .http
        .post(t.url("/api/session"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();

    let me = t
        .http
        .get(t.url("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.json::<Value>().await.unwrap()["username"], "admin");
    let no_csrf = t
        .http
        .post(t.url("/api/tokens"))
        .header("cookie", &cookie)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    let with_csrf = t
        .http
        .post(t.url("/api/tokens"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(with_csrf.status(), 201);

    let out = t
        .http
        .delete(t.url("/api/session"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let after = t
        .http
        .get(t.url("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}

#[tokio::test]
async fn repeated_failed_logins_are_slowed_down() {
    let t = spawn(|c| c.auth.max_failed_logins = 3, None).await;
    for _ in 0..3 {
        let r = t
            .http
            .post(t.url("/api/session"))
            .json(&json!({"username": "admin", "password": "guess"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = t
        .http
        .post(t.url("/api/session"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "even the right password waits once the limit is reached"
    );
    assert!(r.headers().get("retry-after").is_some());
    // Basic auth shares the same counter.
    let r = t
        .http
        .get(t.url("/api/devices"))
        .basic_auth("admin", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn generated_admin_password_is_written_owner_only() {
    let mut config = test_config();
    config.auth.initial_admin_password.clear();
    config.integration.token.clear();
    let dir = config.server.data_dir.clone();
    let (app, first) = lorafleet::App::build(config.config.clone()).await.unwrap();
    let password = first.admin_password.expect("a password was generated");
    let path = dir.join("initial-admin-password");
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), password);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(lorafleet::auth::check_password(&app.db, "admin", &password)
        .await
        .unwrap()
        .is_some());
    // The SQLite file; a PostgreSQL database is the server's to protect.
    #[cfg(unix)]
    if !app.db.is_postgres() {
        use std::os::unix::fs::PermissionsExt;
        let db = std::fs::metadata(dir.join("lorafleet.db")).unwrap();
        assert_eq!(
            db.permissions().mode() & 0o777,
            0o600,
            "the database holds hashes"
        );
    }
    assert!(first.integration_token_generated);
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json() {
    let t = spawn(|_| {}, None).await;
    let r = t.get("/api/nope").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("/api/nope"));
    let r = t
        .http
        .put(t.url("/api/devices"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = t.delete("/api/tokens/abc").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "id");
}

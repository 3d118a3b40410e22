//! Users and roles in the API (issue 10 item 9): `viewer` reads, `operator` also changes
//! devices and campaigns, `admin` also users and tokens; 403 names the role needed; tokens
//! never do more than their user's role; disabled users are out at once; an enabled admin
//! always remains.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::*;
use serde_json::{json, Value};

async fn add_user(t: &TestApp, name: &str, role: &str) -> reqwest::StatusCode {
    t.post("/api/users")
        .json(&json!({"username": name, "password": format!("{name}-password"), "role": role}))
        .send()
        .await
        .unwrap()
        .status()
}

fn as_user(
    t: &TestApp,
    method: reqwest::Method,
    path: &str,
    name: &str,
) -> reqwest::RequestBuilder {
    t.http
        .request(method, t.url(path))
        .basic_auth(name, Some(format!("{name}-password")))
        .json(&json!({}))
}

async fn patch_user(t: &TestApp, name: &str, body: Value) -> reqwest::Response {
    t.http
        .patch(t.url(&format!("/api/users/{name}")))
        .basic_auth("admin", Some(PASSWORD))
        .json(&body)
        .send()
        .await
        .unwrap()
}

const DOWNLINK: &str = "/api/devices/0102030405060708/downlinks";

#[tokio::test]
async fn roles_limit_what_a_user_can_do_and_403_names_the_role() {
    use reqwest::Method;
    let t = spawn(|_| {}, None).await;
    assert_eq!(add_user(&t, "vera", "viewer").await, 201);
    assert_eq!(add_user(&t, "otto", "operator").await, 201);
    assert_eq!(add_user(&t, "vera", "viewer").await, 409);
    let r = t
        .post("/api/users")
        .json(&json!({"username": "x", "password": "long-enough", "role": "root"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "role");

    let r = as_user(&t, Method::GET, "/api/devices", "vera")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = as_user(&t, Method::POST, DOWNLINK, "vera")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["field"], "role");
    assert!(
        e["error"].as_str().unwrap().contains("needs role operator"),
        "{e}"
    );
    let r = as_user(&t, Method::POST, DOWNLINK, "otto")
        .send()
        .await
        .unwrap();
    assert!(![401, 403].contains(&r.status().as_u16()), "{}", r.status());
    for name in ["vera", "otto"] {
        let r = as_user(&t, Method::GET, "/api/users", name)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"].as_str().unwrap().contains("needs role admin"),
            "{e}"
        );
        let r = as_user(&t, Method::POST, "/api/tokens", name)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let listed: Value = t
        .get("/api/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let roles: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["username"].as_str().unwrap(), u["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [("admin", "admin"), ("otto", "operator"), ("vera", "viewer")]
    );
    assert!(listed[0].get("password_hash").is_none());
}

#[tokio::test]
async fn a_token_never_does_more_than_its_users_role_now() {
    use reqwest::Method;
    let t = spawn(|_| {}, None).await;
    assert_eq!(add_user(&t, "ada", "admin").await, 201);
    let r = as_user(&t, Method::POST, "/api/tokens", "ada")
        .json(&json!({"name": "script", "scope": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        patch_user(&t, "ada", json!({"role": "viewer"}))
            .await
            .status(),
        204
    );
    let with = |m: Method, path: &str| {
        t.http
            .request(m, t.url(path))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
    };
    assert_eq!(
        with(Method::GET, "/api/devices").await.unwrap().status(),
        200
    );
    assert_eq!(
        with(Method::GET, "/api/tokens").await.unwrap().status(),
        403
    );
    assert_eq!(with(Method::POST, DOWNLINK).await.unwrap().status(), 403);
    // Disabling the user stops the token too.
    assert_eq!(
        patch_user(&t, "ada", json!({"disabled": true}))
            .await
            .status(),
        204
    );
    assert_eq!(
        with(Method::GET, "/api/devices").await.unwrap().status(),
        401
    );
}

#[tokio::test]
async fn disabling_a_user_ends_its_session_and_logins() {
    use reqwest::Method;
    let t = spawn(|_| {}, None).await;
    assert_eq!(add_user(&t, "otto", "operator").await, 201);
    let r = t
        .http
        .post(t.url("/api/session"))
        .json(&json!({"username": "otto", "password": "otto-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(r.json::<Value>().await.unwrap()["scope"], "operate");
    let r = as_user(&t, Method::GET, "/api/devices", "otto")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "now cached");

    assert_eq!(
        patch_user(&t, "otto", json!({"disabled": true}))
            .await
            .status(),
        204
    );
    let r = t
        .http
        .get(t.url("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = as_user(&t, Method::GET, "/api/devices", "otto")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = t
        .http
        .post(t.url("/api/session"))
        .json(&json!({"username": "otto", "password": "otto-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        patch_user(&t, "otto", json!({"disabled": false}))
            .await
            .status(),
        204
    );
    let r = as_user(&t, Method::GET, "/api/devices", "otto")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_last_enabled_admin_cannot_be_removed() {
    let t = spawn(|_| {}, None).await;
    let r = patch_user(&t, "admin", json!({"role": "operator"})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "role");
    let r = patch_user(&t, "admin", json!({"disabled": true})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "disabled");
    let r = patch_user(&t, "admin", json!({})).await;
    assert_eq!(r.status(), 400);
    // Still an admin: the refused changes were not made.
    assert_eq!(t.get("/api/users").send().await.unwrap().status(), 200);
    assert_eq!(add_user(&t, "ada", "admin").await, 201);
    assert_eq!(
        patch_user(&t, "admin", json!({"role": "viewer"}))
            .await
            .status(),
        204
    );
    assert_eq!(t.get("/api/users").send().await.unwrap().status(), 403);
}

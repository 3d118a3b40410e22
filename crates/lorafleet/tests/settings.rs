//! The settings an admin changes from the console (issue 10 item 9): rotating the generated
//! integration token takes effect at once (the old one is refused, the new one accepted), a
//! configured token cannot be rotated (409 naming `integration.token`), and only admins may.
// A test or a tool: a panic is its report, and a scenario reads best in one piece.
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::*;
use serde_json::{json, Value};

const ROTATE: &str = "/api/settings/integration-token/rotate";

/// The status of an integration post with `token`; the body is not an event, so an accepted
/// token gets a 400 and a refused one a 401.
async fn ingest_with(t: &TestApp, token: &str) -> u16 {
    t.http
        .post(t.url("/api/integrations/chirpstack?event=up"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_generated_integration_token_rotates_and_the_old_one_stops_working() {
    let t = spawn(|c| c.integration.token = String::new(), None).await;
    let info = t.get_json("/api/settings/integration-token").await;
    assert_eq!(info, json!({"source": "generated", "rotatable": true}));

    let r = t.post(ROTATE).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let first = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first.len() >= 20, "a secret, not {first:?}");
    assert_ne!(ingest_with(&t, &first).await, 401);

    let r = t.post(ROTATE).send().await.unwrap();
    let second = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second);
    assert_eq!(
        ingest_with(&t, &first).await,
        401,
        "the old token is refused"
    );
    assert_ne!(ingest_with(&t, &second).await, 401);
}

#[tokio::test]
async fn a_configured_integration_token_is_not_rotated() {
    let t = spawn(|_| {}, None).await;
    let info = t.get_json("/api/settings/integration-token").await;
    assert_eq!(info, json!({"source": "configured", "rotatable": false}));
    let r = t.post(ROTATE).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["field"],
        "integration.token"
    );
    assert_ne!(ingest_with(&t, INTEGRATION_TOKEN).await, 401);
}

#[tokio::test]
async fn only_an_admin_rotates_the_integration_token() {
    let t = spawn(|c| c.integration.token = String::new(), None).await;
    let r = t
        .post("/api/users")
        .json(&json!({"username": "otto", "password": "otto-password", "role": "operator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = t
        .http
        .post(t.url(ROTATE))
        .basic_auth("otto", Some("otto-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.json::<Value>().await.unwrap();
    assert_eq!(body["field"], "role");
    assert!(body["error"].as_str().unwrap().contains("admin"), "{body}");
}

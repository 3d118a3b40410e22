//! Two lorafleet instances on one PostgreSQL database, with consecutive requests landing on
//! different instances: a session made on one works on the other, a password changed on one
//! ends sessions and cached Basic credentials on both, and failed logins counted by one slow
//! down guesses at the other. Needs `LORAFLEET_TEST_POSTGRES_URL` (scripts/test sets it; without
//! it the test says so and passes only outside CI, where the variable is never missing).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use common::{postgres, spawn_app, test_config, TestApp, PASSWORD};
use serde_json::json;

/// Two routers built from configurations of their own (data dirs apart) on one database.
async fn two_instances(max_failed_logins: u32) -> Option<(TestApp, TestApp)> {
    let url = postgres::fresh_database()?;
    let config = || {
        test_config().with(|c| {
            c.server.database_url = url.clone();
            c.auth.max_failed_logins = max_failed_logins;
        })
    };
    let a = spawn_app(config()).await;
    let b = spawn_app(config()).await;
    Some((a, b))
}

async fn login(t: &TestApp, password: &str) -> reqwest::Response {
    t.http
        .post(t.url("/api/session"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap()
}

async fn cookie_of(t: &TestApp, password: &str) -> String {
    let r = login(t, password).await;
    assert_eq!(r.status(), 200);
    let c = r.headers()["set-cookie"].to_str().unwrap();
    c.split(';').next().unwrap().to_string()
}

async fn with_cookie(t: &TestApp, cookie: &str) -> u16 {
    let r = t.http.get(t.url("/api/session")).header("cookie", cookie);
    r.send().await.unwrap().status().as_u16()
}

async fn with_basic(t: &TestApp, password: &str) -> u16 {
    let r = t.http.get(t.url("/api/devices"));
    let r = r.basic_auth("admin", Some(password)).send().await.unwrap();
    r.status().as_u16()
}

#[tokio::test]
async fn a_session_made_on_one_instance_works_on_the_other_and_a_new_password_ends_it_on_both() {
    let Some((a, b)) = two_instances(10).await else {
        return;
    };
    let cookie = cookie_of(&a, PASSWORD).await;
    assert_eq!(
        with_cookie(&b, &cookie).await,
        200,
        "the session is the database's"
    );
    assert_eq!(with_basic(&a, PASSWORD).await, 200, "cached on a");
    assert_eq!(with_basic(&b, PASSWORD).await, 200, "cached on b");
    let r = a
        .http
        .patch(a.url("/api/users/admin"))
        .basic_auth("admin", Some(PASSWORD))
        .json(&json!({"password": "a-new-password-456"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(with_cookie(&b, &cookie).await, 401, "ended on b too");
    assert_eq!(with_cookie(&a, &cookie).await, 401);
    assert_eq!(
        with_basic(&b, PASSWORD).await,
        401,
        "b's cache knows the old hash"
    );
    assert_eq!(with_basic(&b, "a-new-password-456").await, 200);
}

#[tokio::test]
async fn failed_logins_counted_by_one_instance_slow_down_the_other() {
    let Some((a, b)) = two_instances(3).await else {
        return;
    };
    // Alternating, as behind a balancer: the count is one, whichever instance is asked.
    for (i, t) in [&a, &b, &a].into_iter().enumerate() {
        assert_eq!(login(t, "wrong").await.status(), 401, "attempt {i}");
    }
    let r = login(&b, PASSWORD).await;
    assert_eq!(r.status(), 429, "b waits for a's failures");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(login(&a, PASSWORD).await.status(), 429);
}

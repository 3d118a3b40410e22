//! The web console, embedded in the binary so it works offline and from any directory.
//!
//! The whole `assets/` folder is embedded (ES modules import each other by relative path, so
//! a new module needs no change here); `build.rs` makes cargo rebuild when a file is added.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use include_dir::{include_dir, Dir};

use crate::AppState;

static ASSETS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/assets");

/// The console is script-driven; it loads nothing from elsewhere. `script-src 'self'` covers
/// module scripts and their static imports.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/main.html", get(|| async { Redirect::permanent("/") }))
        .route("/assets/{*path}", get(asset))
}

async fn index() -> Response {
    let Some(file) = ASSETS.get_file("index.html") else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the console is missing").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        file.contents(),
    )
        .into_response()
}

/// Browsers refuse a module script served with any type but a JavaScript one, so an
/// unknown extension is not served at all rather than guessed.
fn content_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1;
    Some(match ext {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        _ => return None,
    })
}

async fn asset(Path(path): Path<String>) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "no such asset").into_response();
    // include_dir looks paths up by name, never on disk; still, refuse what is not a plain
    // relative path so no reading of the URL can mean anything else.
    if path
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return not_found();
    }
    let (Some(file), Some(ct)) = (ASSETS.get_file(&path), content_type(&path)) else {
        return not_found();
    };
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        file.contents(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn get(path: &str) -> (StatusCode, Option<String>, Vec<u8>) {
        let r = asset(Path(path.to_string())).await;
        let status = r.status();
        let ct = r
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, ct, body)
    }

    /// Every file of the folder is served, with the type a browser accepts for it.
    #[tokio::test]
    async fn every_embedded_file_is_served_with_its_type() {
        let mut files = Vec::new();
        let mut dirs = vec![&ASSETS];
        while let Some(d) = dirs.pop() {
            files.extend(d.files().map(|f| f.path().to_string_lossy().into_owned()));
            dirs.extend(d.dirs());
        }
        assert!(files.iter().any(|f| f == "js/main.js"), "{files:?}");
        for f in files {
            let (status, ct, body) = get(&f).await;
            assert_eq!(status, StatusCode::OK, "{f}");
            let expected = content_type(&f).unwrap_or_else(|| panic!("{f} has no type"));
            assert_eq!(ct.as_deref(), Some(expected), "{f}");
            assert_eq!(body, ASSETS.get_file(&f).unwrap().contents(), "{f}");
        }
    }

    #[tokio::test]
    async fn modules_are_javascript_and_unknown_paths_are_404() {
        let (status, ct, _) = get("js/api.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("text/javascript; charset=utf-8"));
        for bad in [
            "nope.js",
            "../Cargo.toml",
            "js/../index.html",
            "js//api.js",
            "",
            "js/",
        ] {
            assert_eq!(get(bad).await.0, StatusCode::NOT_FOUND, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_page_loads_its_entry_module_under_the_csp() {
        let r = index().await;
        assert_eq!(
            r.headers().get(header::CONTENT_SECURITY_POLICY).unwrap(),
            CSP
        );
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            html.contains(r#"<script type="module" src="/assets/js/main.js">"#),
            "{html}"
        );
        assert!(
            !html.contains("<script>"),
            "no inline script: the CSP forbids it"
        );
    }
}

//! Server-sent events: the console learns that something it shows has changed.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::auth_api::AuthUser;
use crate::ingest::writer::Change;
use crate::AppState;

/// `event: device` with `{"dev_eui"}`, `event: campaign` with `{"id"}`, `event: firmware`.
/// A client that falls behind gets `event: resync` and should reload what it shows.
#[utoipa::path(get, path = "/api/stream", responses((status = 200, content_type = "text/event-stream", body = String, description = "server-sent events: device, campaign, firmware, resync")))]
pub async fn stream(
    _user: AuthUser,
    State(app): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = app.changes.subscribe();
    let mut stopping = app.shutdown.subscribe();
    let events = BroadcastStream::new(rx).map(|item| {
        Ok(match item {
            Ok(Change::Device(eui)) => Event::default()
                .event("device")
                .data(serde_json::json!({ "dev_eui": eui.to_string() }).to_string()),
            Ok(Change::Campaign(id)) => Event::default()
                .event("campaign")
                .data(serde_json::json!({ "id": id }).to_string()),
            Ok(Change::Firmware) => Event::default().event("firmware").data("{}"),
            Err(_) => Event::default().event("resync").data("{}"),
        })
    });
    let events = futures::StreamExt::take_until(events, async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

//! Server-sent events: the console learns that something it shows has changed.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::auth_api::AuthUser;
use crate::cluster::Remote;
use crate::ingest::writer::Change;
use crate::AppState;

/// `event: device` with `{"dev_eui"}`, `event: campaign` with `{"id"}`, `event: firmware`:
/// changes committed by this instance and, on PostgreSQL, by the other instances on the same
/// database (`cluster::changes`). A client that falls behind, or that may have missed another
/// instance's changes, gets `event: resync` and should reload what it shows.
#[utoipa::path(get, path = "/api/stream", responses((status = 200, content_type = "text/event-stream", body = String, description = "server-sent events: device, campaign, firmware, resync")))]
pub async fn stream(
    _user: AuthUser,
    State(app): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let local = BroadcastStream::new(app.changes.subscribe()).map(|item| item.ok());
    let remote = BroadcastStream::new(app.cluster.subscribe()).map(|item| match item {
        Ok(Remote::Change(c)) => Some(c),
        Ok(Remote::Resync) | Err(_) => None,
    });
    let mut stopping = app.shutdown.subscribe();
    let events = local.merge(remote).map(|change| Ok(event(change)));
    let events = futures::StreamExt::take_until(events, async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A change as its event; `None` (something missed) as `resync`.
fn event(change: Option<Change>) -> Event {
    match change {
        Some(Change::Device(eui)) => Event::default()
            .event("device")
            .data(serde_json::json!({ "dev_eui": eui.to_string() }).to_string()),
        Some(Change::Campaign(id)) => Event::default()
            .event("campaign")
            .data(serde_json::json!({ "id": id }).to_string()),
        Some(Change::Firmware) => Event::default().event("firmware").data("{}"),
        None => Event::default().event("resync").data("{}"),
    }
}

//! Downlinks (`downlinks`): every frame lorafleet asked the network to send, from `requested`
//! through `enqueued`, `sent`, `acknowledged` or `failed` to `answered`.

use lorafleet_codec::eui::DevEui;
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Conn, Db, Result};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusRequestDto {
    pub id: i64,
    pub command: String,
    pub payload_hex: String,
    /// `pending` until the device answers (or, for erase_slot, the network delivered it),
    /// then `answered`; `failed` when the network refused it.
    pub state: String,
    pub requested_at: String,
    pub answered_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DownlinkDto {
    pub id: i64,
    pub f_port: i64,
    pub data_hex: String,
    pub confirmed: bool,
    pub status_command: Option<String>,
    pub state: String,
    pub requested_at: String,
    pub updated_at: String,
    pub error: Option<String>,
}

/// Records a downlink about to be asked of the network; returns its id.
pub async fn insert_request(
    conn: &mut Conn,
    dev_eui: DevEui,
    f_port: u8,
    data: &[u8],
    confirmed: bool,
    status_command: Option<&str>,
) -> Result<i64> {
    let now = super::now();
    sqlx::query_scalar(
        "INSERT INTO downlinks (dev_eui, f_port, data, confirmed, status_command, state, requested_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 'requested', ?, ?) RETURNING id",
    )
    .bind(dev_eui.to_string())
    .bind(i64::from(f_port))
    .bind(data)
    .bind(confirmed)
    .bind(status_command)
    .bind(&now)
    .bind(&now)
    .fetch_one(&mut *conn)
    .await
}

/// The network took a requested downlink into its queue.
pub async fn mark_enqueued(
    conn: &mut Conn,
    id: i64,
    network_ref: Option<String>,
    f_cnt: Option<u32>,
    at: &str,
) -> Result<()> {
    sqlx::query("UPDATE downlinks SET state = 'enqueued', network_ref = ?, f_cnt = ?, updated_at = ? WHERE id = ? AND state = 'requested'")
        .bind(network_ref)
        .bind(f_cnt.map(i64::from))
        .bind(at)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The network refused a downlink.
pub async fn mark_failed(conn: &mut Conn, id: i64, error: &str, at: &str) -> Result<()> {
    sqlx::query("UPDATE downlinks SET state = 'failed', error = ?, updated_at = ? WHERE id = ?")
        .bind(error)
        .bind(at)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The device's downlink the network knows by this queue item id, if any.
pub async fn find_by_queue_item(
    conn: &mut Conn,
    dev_eui: &str,
    queue_item_id: &str,
) -> Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT id FROM downlinks WHERE dev_eui = ? AND network_ref = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(dev_eui)
    .bind(queue_item_id)
    .fetch_optional(&mut *conn)
    .await
}

/// Finds the downlink a delivery report is about: by ChirpStack's queue item id, else by the
/// frame counter, else the oldest one still in flight.
pub async fn find_for_report(
    conn: &mut Conn,
    dev_eui: &str,
    queue_item_id: Option<&str>,
    f_cnt: Option<u32>,
) -> Result<Option<i64>> {
    if let Some(q) = queue_item_id {
        let id = sqlx::query_scalar("SELECT id FROM downlinks WHERE dev_eui = ? AND network_ref = ? ORDER BY id DESC LIMIT 1")
            .bind(dev_eui)
            .bind(q)
            .fetch_optional(&mut *conn)
            .await?;
        if id.is_some() {
            return Ok(id);
        }
    }
    if let Some(f) = f_cnt {
        let id = sqlx::query_scalar(
            "SELECT id FROM downlinks WHERE dev_eui = ? AND f_cnt = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(dev_eui)
        .bind(i64::from(f))
        .fetch_optional(&mut *conn)
        .await?;
        if id.is_some() {
            return Ok(id);
        }
    }
    sqlx::query_scalar("SELECT id FROM downlinks WHERE dev_eui = ? AND state IN ('enqueued', 'sent') ORDER BY id ASC LIMIT 1")
        .bind(dev_eui)
        .fetch_optional(&mut *conn)
        .await
}

/// A confirmed downlink was acknowledged (`state` "acknowledged") or not ("failed", with the
/// error); an answered downlink stays answered.
pub async fn mark_ack(
    conn: &mut Conn,
    id: i64,
    state: &str,
    error: Option<&str>,
    at: &str,
) -> Result<()> {
    sqlx::query("UPDATE downlinks SET state = CASE WHEN state = 'answered' THEN state ELSE ? END, error = COALESCE(?, error), updated_at = ? WHERE id = ?")
        .bind(state)
        .bind(error)
        .bind(at)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A gateway sent the downlink.
pub async fn mark_sent(conn: &mut Conn, id: i64, at: &str) -> Result<()> {
    sqlx::query("UPDATE downlinks SET state = 'sent', updated_at = ? WHERE id = ? AND state IN ('requested', 'enqueued')")
        .bind(at)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The newest pending Version & Status request of this command is answered.
pub async fn mark_answered(conn: &mut Conn, dev_eui: &str, command: &str, at: &str) -> Result<()> {
    sqlx::query(
        "UPDATE downlinks SET state = 'answered', answered_at = MAX(requested_at, ?), updated_at = ? WHERE id = (
            SELECT id FROM downlinks WHERE dev_eui = ? AND status_command = ?
            AND state IN ('requested', 'enqueued', 'sent', 'acknowledged') ORDER BY id DESC LIMIT 1)",
    )
    .bind(at)
    .bind(at)
    .bind(dev_eui)
    .bind(command)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every pending erase is answered (EraseSlotReq has no answer of its own).
pub async fn mark_erases_answered(conn: &mut Conn, dev_eui: &str, at: &str) -> Result<()> {
    sqlx::query(
        "UPDATE downlinks SET state = 'answered', answered_at = ?, updated_at = ?
         WHERE dev_eui = ? AND status_command = 'erase_slot'
         AND state IN ('requested', 'enqueued', 'sent', 'acknowledged')",
    )
    .bind(at)
    .bind(at)
    .bind(dev_eui)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn status_request(d: &SqliteRow, command: &str, state: &str) -> StatusRequestDto {
    let ui_state = match state {
        "answered" => "answered",
        "failed" => "failed",
        // An erase has no answer: delivery is all there is to wait for.
        "sent" | "acknowledged" if command == "erase_slot" => "answered",
        _ => "pending",
    };
    StatusRequestDto {
        id: d.get("id"),
        command: command.to_string(),
        payload_hex: hex::encode(d.get::<Vec<u8>, _>("data")),
        state: ui_state.to_string(),
        requested_at: d.get("requested_at"),
        answered_at: d.get("answered_at"),
        error: d.get("error"),
    }
}

/// A device's newest downlinks, newest first: its Version & Status requests as the console
/// shows them, and all of them.
pub async fn recent(
    db: &Db,
    dev_eui: &str,
    limit: i64,
) -> Result<(Vec<StatusRequestDto>, Vec<DownlinkDto>)> {
    let rows = sqlx::query("SELECT * FROM downlinks WHERE dev_eui = ? ORDER BY id DESC LIMIT ?")
        .bind(dev_eui)
        .bind(limit)
        .fetch_all(db)
        .await?;
    let mut status_requests = Vec::new();
    let mut downlinks = Vec::new();
    for d in &rows {
        let data: Vec<u8> = d.get("data");
        let state: String = d.get("state");
        let command: Option<String> = d.get("status_command");
        if let Some(command) = &command {
            status_requests.push(status_request(d, command, &state));
        }
        downlinks.push(DownlinkDto {
            id: d.get("id"),
            f_port: d.get("f_port"),
            data_hex: hex::encode(&data),
            confirmed: d.get("confirmed"),
            status_command: command,
            state,
            requested_at: d.get("requested_at"),
            updated_at: d.get("updated_at"),
            error: d.get("error"),
        });
    }
    Ok((status_requests, downlinks))
}

//! Downlinks (`downlinks`): every frame lorafleet asked the network to send, from `requested`
//! through `enqueued`, `sent`, `acknowledged` or `failed` to `answered`.

use lorafleet_codec::eui::DevEui;
use serde::Serialize;
use utoipa::ToSchema;

use super::{time, Cols, Conn, Db, Result};

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

/// Records a downlink about to be asked of the network, at `at` on the network's clock;
/// returns its id.
pub async fn insert_request(
    conn: &mut Conn,
    dev_eui: DevEui,
    f_port: u8,
    data: &[u8],
    confirmed: bool,
    status_command: Option<&str>,
    at: &str,
) -> Result<i64> {
    on!(&mut *conn, c => sqlx::query_scalar(
        "INSERT INTO downlinks (dev_eui, f_port, data, confirmed, status_command, state, requested_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'requested', $6, $7) RETURNING id",
    )
    .bind(dev_eui.to_string())
    .bind(i64::from(f_port))
    .bind(data)
    .bind(confirmed)
    .bind(status_command)
    .bind(time(at))
    .bind(time(at))
    .fetch_one(c).await)
}

/// The network took a requested downlink into its queue.
pub async fn mark_enqueued(
    conn: &mut Conn,
    id: i64,
    network_ref: Option<String>,
    f_cnt: Option<u32>,
    at: &str,
) -> Result<()> {
    on!(&mut *conn, c => sqlx::query("UPDATE downlinks SET state = 'enqueued', network_ref = $1, f_cnt = $2, updated_at = $3 WHERE id = $4 AND state = 'requested'")
        .bind(network_ref)
        .bind(f_cnt.map(i64::from))
        .bind(time(at))
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Stores what the network answered to a requested downlink, with a line in the device's log.
pub async fn apply_outcome(
    conn: &mut Conn,
    id: i64,
    dev_eui: DevEui,
    outcome: std::result::Result<(Option<String>, Option<u32>), String>,
    what: &str,
    now: &str,
) -> Result<()> {
    let eui = dev_eui.to_string();
    match outcome {
        Ok((network_ref, f_cnt)) => {
            mark_enqueued(conn, id, network_ref, f_cnt, now).await?;
            let msg = format!("{what} enqueued");
            super::device_events::add(conn, &eui, now, "downlink_enqueued", &msg).await
        }
        Err(e) => {
            mark_failed(conn, id, &e, now).await?;
            let msg = format!("{what} failed: {e}");
            super::device_events::add(conn, &eui, now, "downlink_failed", &msg).await
        }
    }
}

/// Records a unicast command a campaign step already sent (inside the step's transaction):
/// its request and the network's answer at once.
pub async fn record_sent(conn: &mut Conn, d: &super::campaigns::SentDownlink) -> Result<()> {
    let requested = super::fmt_time(d.requested_at);
    let answered = super::fmt_time(d.answered_at);
    let id = insert_request(
        conn,
        d.dev_eui,
        d.f_port,
        &d.data,
        d.confirmed,
        None,
        &requested,
    )
    .await?;
    apply_outcome(conn, id, d.dev_eui, d.result.clone(), &d.what, &answered).await
}

/// The network refused a downlink.
pub async fn mark_failed(conn: &mut Conn, id: i64, error: &str, at: &str) -> Result<()> {
    on!(&mut *conn, c => sqlx::query("UPDATE downlinks SET state = 'failed', error = $1, updated_at = $2 WHERE id = $3")
        .bind(error)
        .bind(time(at))
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The device's downlink the network knows by this queue item id, if any.
pub async fn find_by_queue_item(
    conn: &mut Conn,
    dev_eui: &str,
    queue_item_id: &str,
) -> Result<Option<i64>> {
    on!(&mut *conn, c => sqlx::query_scalar(
        "SELECT id FROM downlinks WHERE dev_eui = $1 AND network_ref = $2 ORDER BY id DESC LIMIT 1",
    )
    .bind(dev_eui)
    .bind(queue_item_id)
    .fetch_optional(c)
    .await)
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
        let id = on!(&mut *conn, c => sqlx::query_scalar("SELECT id FROM downlinks WHERE dev_eui = $1 AND network_ref = $2 ORDER BY id DESC LIMIT 1")
            .bind(dev_eui)
            .bind(q)
            .fetch_optional(c).await)?;
        if id.is_some() {
            return Ok(id);
        }
    }
    if let Some(f) = f_cnt {
        let id = on!(&mut *conn, c => sqlx::query_scalar(
            "SELECT id FROM downlinks WHERE dev_eui = $1 AND f_cnt = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(dev_eui)
        .bind(i64::from(f))
        .fetch_optional(c).await)?;
        if id.is_some() {
            return Ok(id);
        }
    }
    on!(&mut *conn, c => sqlx::query_scalar("SELECT id FROM downlinks WHERE dev_eui = $1 AND state IN ('enqueued', 'sent') ORDER BY id ASC LIMIT 1")
        .bind(dev_eui)
        .fetch_optional(c).await)
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
    on!(&mut *conn, c => sqlx::query("UPDATE downlinks SET state = CASE WHEN state = 'answered' THEN state ELSE $1 END, error = COALESCE($2, error), updated_at = $3 WHERE id = $4")
        .bind(state)
        .bind(error)
        .bind(time(at))
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// A gateway sent the downlink.
pub async fn mark_sent(conn: &mut Conn, id: i64, at: &str) -> Result<()> {
    on!(&mut *conn, c => sqlx::query("UPDATE downlinks SET state = 'sent', updated_at = $1 WHERE id = $2 AND state IN ('requested', 'enqueued')")
        .bind(time(at))
        .bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The newest pending Version & Status request of this command is answered.
pub async fn mark_answered(conn: &mut Conn, dev_eui: &str, command: &str, at: &str) -> Result<()> {
    on!(&mut *conn, c => sqlx::query(
        "UPDATE downlinks SET state = 'answered', answered_at = CASE WHEN requested_at > $1 THEN requested_at ELSE $1 END, updated_at = $2 WHERE id = (
            SELECT id FROM downlinks WHERE dev_eui = $3 AND status_command = $4
            AND state IN ('requested', 'enqueued', 'sent', 'acknowledged') ORDER BY id DESC LIMIT 1)",
    )
    .bind(time(at))
    .bind(time(at))
    .bind(dev_eui)
    .bind(command)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Every pending erase is answered (EraseSlotReq has no answer of its own).
pub async fn mark_erases_answered(conn: &mut Conn, dev_eui: &str, at: &str) -> Result<()> {
    on!(&mut *conn, c => sqlx::query(
        "UPDATE downlinks SET state = 'answered', answered_at = $1, updated_at = $2
         WHERE dev_eui = $3 AND status_command = 'erase_slot'
         AND state IN ('requested', 'enqueued', 'sent', 'acknowledged')",
    )
    .bind(time(at))
    .bind(time(at))
    .bind(dev_eui)
    .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// [`mark_answered`] for many (device, command, at) answers in one statement per 500. Each
/// (device, command) must appear once: the statement's subquery sees the requests as they were
/// before it, so a second answer of the same command would mark the same request again.
pub async fn mark_answered_many(conn: &mut Conn, answers: &[(&str, &str, &str)]) -> Result<()> {
    for chunk in answers.chunks(500) {
        on!(&mut *conn, c, DB => {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "UPDATE downlinks SET state = 'answered',
                    answered_at = CASE WHEN downlinks.requested_at > v.column3 THEN downlinks.requested_at ELSE v.column3 END,
                    updated_at = v.column3
                 FROM (",
            );
            q.push_values(chunk, |mut row, (eui, command, at)| {
                row.push_bind(*eui).push_bind(*command).push_bind(time(at));
            });
            q.push(
                ") AS v WHERE downlinks.id = (
                    SELECT d.id FROM downlinks d WHERE d.dev_eui = v.column1 AND d.status_command = v.column2
                    AND d.state IN ('requested', 'enqueued', 'sent', 'acknowledged') ORDER BY d.id DESC LIMIT 1)",
            );
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

/// [`mark_erases_answered`] for many (device, at), each device once.
pub async fn mark_erases_answered_many(conn: &mut Conn, devices: &[(&str, &str)]) -> Result<()> {
    for chunk in devices.chunks(500) {
        on!(&mut *conn, c, DB => {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "UPDATE downlinks SET state = 'answered', answered_at = v.column2, updated_at = v.column2 FROM (",
            );
            q.push_values(chunk, |mut row, (eui, at)| {
                row.push_bind(*eui).push_bind(time(at));
            });
            q.push(
                ") AS v WHERE downlinks.dev_eui = v.column1 AND downlinks.status_command = 'erase_slot'
                 AND downlinks.state IN ('requested', 'enqueued', 'sent', 'acknowledged')",
            );
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

fn status_request(d: &impl Cols, command: &str, state: &str) -> StatusRequestDto {
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
        payload_hex: hex::encode(d.get::<Vec<u8>>("data")),
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
    let rows = on!(db, c => sqlx::query("SELECT * FROM downlinks WHERE dev_eui = $1 ORDER BY id DESC LIMIT $2")
        .bind(dev_eui)
        .bind(limit)
        .fetch_all(c).await?
        .iter()
        .map(downlink_from_row)
        .collect::<Vec<_>>());
    let mut status_requests = Vec::new();
    let mut downlinks = Vec::new();
    for (status, downlink) in rows {
        status_requests.extend(status);
        downlinks.push(downlink);
    }
    Ok((status_requests, downlinks))
}

fn downlink_from_row(d: &impl Cols) -> (Option<StatusRequestDto>, DownlinkDto) {
    let data: Vec<u8> = d.get("data");
    let state: String = d.get("state");
    let command: Option<String> = d.get("status_command");
    let status = command
        .as_ref()
        .map(|command| status_request(d, command, &state));
    (
        status,
        DownlinkDto {
            id: d.get("id"),
            f_port: d.get("f_port"),
            data_hex: hex::encode(&data),
            confirmed: d.get("confirmed"),
            status_command: command,
            state,
            requested_at: d.get("requested_at"),
            updated_at: d.get("updated_at"),
            error: d.get("error"),
        },
    )
}

//! What happens to a device's record: the integration events the ingest writer commits and the
//! downlinks lorafleet asks the network for, each with its device-log line. The statements are
//! in [`crate::storage`]; this module decides which ones an event needs and what the log says.

use super::DevEui;
use crate::storage::integration_events::{EventBody, IntegrationEvent, Uplink};
use crate::storage::{self, device_events, devices, downlinks, fmt_time, uplinks, Conn, Db};

/// Limits of what is kept per device.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub uplink_history: u32,
    pub event_history: u32,
    pub status_f_port: u8,
}

const REAPPEARED: &str = "device sent again after it was removed from the list";

/// True for an uplink that only needs storing: no Version & Status or Firmware Management
/// answer to decode.
pub fn is_plain_uplink(ev: &IntegrationEvent, retention: Retention) -> bool {
    matches!(&ev.body, EventBody::Up(up)
        if up.f_port != Some(retention.status_f_port)
            && up.f_port != Some(crate::firmware_management::F_PORT))
}

/// Pruning every 8th frame of a device keeps the cost off most uplinks; readers cap at
/// uplink_history, so the few extra rows are never shown.
fn prune_due(up: &Uplink) -> bool {
    up.f_cnt.is_none_or(|f| f % 8 == 0)
}

/// Stores many plain uplinks with two multi-row statements. Each statement costs a round trip
/// to SQLite's worker thread, so a burst of uplinks is far cheaper this way than one by one.
pub async fn apply_plain_uplinks(
    conn: &mut Conn,
    events: &[&IntegrationEvent],
    retention: Retention,
) -> storage::Result<()> {
    for chunk in events.chunks(uplinks::BATCH_ROWS) {
        let returned = devices::upsert_heard_batch(conn, chunk).await?;
        uplinks::insert_batch(conn, chunk).await?;
        for ev in chunk {
            let at = fmt_time(ev.at);
            let eui = ev.dev_eui.to_string();
            if returned
                .iter()
                .any(|(e, r)| *e == eui && r.as_deref() == Some(at.as_str()))
            {
                device_events::add(conn, &eui, &at, "reappeared", REAPPEARED).await?;
            }
            if let EventBody::Up(up) = &ev.body {
                if prune_due(up) {
                    uplinks::prune(conn, &eui, retention.uplink_history).await?;
                }
            }
        }
    }
    Ok(())
}

/// Records one integration event in an open transaction.
pub async fn apply_event(
    conn: &mut Conn,
    ev: &IntegrationEvent,
    retention: Retention,
) -> storage::Result<()> {
    let eui = ev.dev_eui.to_string();
    let at = fmt_time(ev.at);
    let seen = matches!(ev.body, EventBody::Up(_) | EventBody::Join);
    if devices::upsert(conn, &eui, &ev.device, &at, seen).await? {
        device_events::add(conn, &eui, &at, "reappeared", REAPPEARED).await?;
    }
    match &ev.body {
        EventBody::Up(up) => apply_uplink(conn, ev, up, retention).await?,
        EventBody::Join => {
            devices::set_joined(conn, &eui, &at).await?;
            let msg = match &ev.device.dev_addr {
                Some(a) => format!("joined, DevAddr {a}"),
                None => "joined".to_string(),
            };
            device_events::add(conn, &eui, &at, "join", &msg).await?;
            device_events::prune(conn, &eui, retention.event_history).await?;
        }
        EventBody::DeviceStatus {
            battery,
            external_power,
            margin,
        } => {
            devices::set_device_status(conn, &eui, &at, *battery, *margin).await?;
            let battery = match (battery, external_power) {
                (_, true) => "external power".to_string(),
                (Some(b), _) => format!("battery {b:.0} %"),
                (None, _) => "battery level unavailable".to_string(),
            };
            let margin = margin.map_or(String::new(), |m| format!(", link margin {m} dB"));
            device_events::add(conn, &eui, &at, "status", &format!("{battery}{margin}")).await?;
        }
        EventBody::Ack {
            acknowledged,
            f_cnt,
            queue_item_id,
        } => {
            apply_ack(
                conn,
                &eui,
                &at,
                *acknowledged,
                queue_item_id.as_deref(),
                *f_cnt,
            )
            .await?
        }
        EventBody::TxAck {
            f_cnt,
            queue_item_id,
        } => {
            let id =
                downlinks::find_for_report(conn, &eui, queue_item_id.as_deref(), *f_cnt).await?;
            if let Some(id) = id {
                downlinks::mark_sent(conn, id, &at).await?;
            }
            let fc = f_cnt.map_or(String::new(), |f| format!(" (FCnt {f})"));
            let msg = format!("downlink sent by a gateway{fc}");
            device_events::add(conn, &eui, &at, "downlink_sent", &msg).await?;
        }
        EventBody::DownlinkDropped {
            queue_item_id,
            message,
        } => {
            if let Some(id) = downlinks::find_by_queue_item(conn, &eui, queue_item_id).await? {
                downlinks::mark_failed(conn, id, message, &at).await?;
            }
            let msg = format!("downlink dropped by the network: {message}");
            device_events::add(conn, &eui, &at, "downlink_failed", &msg).await?;
            device_events::prune(conn, &eui, retention.event_history).await?;
        }
        EventBody::Log { level, message } => {
            let kind = if level == "error" { "error" } else { "log" };
            device_events::add(conn, &eui, &at, kind, message).await?;
            device_events::prune(conn, &eui, retention.event_history).await?;
        }
    }
    Ok(())
}

/// Stores an uplink; on the Version & Status FPort also what its answers change.
async fn apply_uplink(
    conn: &mut Conn,
    ev: &IntegrationEvent,
    up: &Uplink,
    retention: Retention,
) -> storage::Result<()> {
    let eui = ev.dev_eui.to_string();
    uplinks::insert(conn, &eui, up).await?;
    devices::set_link(conn, &eui, &fmt_time(ev.at), up.rssi, up.snr).await?;
    if prune_due(up) {
        uplinks::prune(conn, &eui, retention.uplink_history).await?;
    }
    if up.f_port == Some(retention.status_f_port) {
        let at = fmt_time(ev.at);
        let known = storage::version_status::known(conn, &eui).await?;
        let changes = crate::version_status::interpret(&up.data, known);
        storage::version_status::write(conn, &eui, &at, &changes).await?;
        for (kind, message) in &changes.log {
            device_events::add(conn, &eui, &at, kind, message).await?;
        }
        device_events::prune(conn, &eui, retention.event_history).await?;
    }
    if up.f_port == Some(crate::firmware_management::F_PORT) {
        let at = fmt_time(ev.at);
        let before = storage::firmware_management::read(conn, &eui).await?;
        let (record, log) = crate::firmware_management::interpret(&up.data, &at, before);
        storage::firmware_management::write(conn, &eui, &record).await?;
        for (kind, message) in &log {
            device_events::add(conn, &eui, &at, kind, message).await?;
        }
        device_events::prune(conn, &eui, retention.event_history).await?;
    }
    Ok(())
}

async fn apply_ack(
    conn: &mut Conn,
    eui: &str,
    at: &str,
    acknowledged: bool,
    queue_item_id: Option<&str>,
    f_cnt: Option<u32>,
) -> storage::Result<()> {
    let id = downlinks::find_for_report(conn, eui, queue_item_id, f_cnt).await?;
    let (state, error, kind, msg) = if acknowledged {
        (
            "acknowledged",
            None,
            "downlink_acknowledged",
            "downlink acknowledged by the device",
        )
    } else {
        (
            "failed",
            Some("the device did not acknowledge the confirmed downlink"),
            "downlink_failed",
            "downlink NOT acknowledged by the device",
        )
    };
    if let Some(id) = id {
        downlinks::mark_ack(conn, id, state, error, at).await?;
    }
    device_events::add(conn, eui, at, kind, msg).await
}

/// Records a downlink lorafleet is about to ask the network for, at `at` on the network's
/// clock (the clock of the answers it will be shown beside); returns its id.
pub async fn record_downlink_request(
    db: &Db,
    dev_eui: DevEui,
    f_port: u8,
    data: &[u8],
    confirmed: bool,
    status_command: Option<&str>,
    at: &str,
) -> storage::Result<i64> {
    let mut conn = storage::acquire(db).await?;
    downlinks::insert_request(
        &mut conn,
        dev_eui,
        f_port,
        data,
        confirmed,
        status_command,
        at,
    )
    .await
}

/// Stores what the network answered to a downlink request, with an event-log line.
pub async fn record_downlink_outcome(
    db: &Db,
    id: i64,
    dev_eui: DevEui,
    outcome: Result<(Option<String>, Option<u32>), String>,
    what: &str,
    at: &str,
) -> storage::Result<()> {
    let mut tx = storage::begin(db).await?;
    apply_downlink_outcome(&mut tx, id, dev_eui, outcome, what, at).await?;
    storage::commit(tx).await
}

/// [`record_downlink_outcome`] inside the caller's transaction.
pub async fn apply_downlink_outcome(
    conn: &mut Conn,
    id: i64,
    dev_eui: DevEui,
    outcome: Result<(Option<String>, Option<u32>), String>,
    what: &str,
    now: &str,
) -> storage::Result<()> {
    downlinks::apply_outcome(conn, id, dev_eui, outcome, what, now).await
}

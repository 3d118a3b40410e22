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

/// True for an uplink the writer stores with the group's multi-row statements: a plain one or a
/// Version & Status answer (whose interpretation is pure and whose writes are batched too).
/// Firmware Management answers go one by one.
pub fn is_batched_uplink(ev: &IntegrationEvent) -> bool {
    matches!(&ev.body, EventBody::Up(up) if up.f_port != Some(crate::firmware_management::F_PORT))
}

fn is_status(ev: &IntegrationEvent, retention: Retention) -> Option<&Uplink> {
    match &ev.body {
        EventBody::Up(up) if up.f_port == Some(retention.status_f_port) => Some(up),
        _ => None,
    }
}

/// Pruning every 8th frame of a device keeps the cost off most uplinks; readers cap at
/// uplink_history, so the few extra rows are never shown.
fn prune_due(up: &Uplink) -> bool {
    up.f_cnt.is_none_or(|f| f % 8 == 0)
}

/// Splits batched uplinks into runs the multi-row statements can take in one go: PostgreSQL's
/// upsert refuses to touch a row twice in one statement, and a device's Version & Status answers
/// read what its previous answer stored. Runs keep the events' order.
fn runs<'e>(
    events: &[&'e IntegrationEvent],
    retention: Retention,
    postgres: bool,
) -> Vec<Vec<&'e IntegrationEvent>> {
    let mut runs = Vec::new();
    let mut run: Vec<&IntegrationEvent> = Vec::new();
    let mut devices = std::collections::HashSet::new();
    let mut answering = std::collections::HashSet::new();
    for ev in events {
        let status = is_status(ev, retention).is_some();
        let clash = (postgres && devices.contains(&ev.dev_eui))
            || (status && answering.contains(&ev.dev_eui))
            || run.len() >= uplinks::BATCH_ROWS;
        if clash {
            runs.push(std::mem::take(&mut run));
            devices.clear();
            answering.clear();
        }
        devices.insert(ev.dev_eui);
        if status {
            answering.insert(ev.dev_eui);
        }
        run.push(*ev);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// Stores uplinks (plain and Version & Status answers) with a few multi-row statements per run
/// instead of several per event: each statement costs a round trip (to SQLite's worker thread,
/// or over the network to PostgreSQL), so this is what the writer's throughput rides on.
pub async fn apply_uplinks(
    conn: &mut Conn,
    events: &[&IntegrationEvent],
    retention: Retention,
) -> storage::Result<()> {
    let postgres = conn.is_postgres();
    for run in runs(events, retention, postgres) {
        apply_run(conn, &run, retention).await?;
    }
    Ok(())
}

async fn apply_run(
    conn: &mut Conn,
    run: &[&IntegrationEvent],
    retention: Retention,
) -> storage::Result<()> {
    // Device rows are locked in EUI order (a stable sort keeps a device's events in order), so
    // two instances writing groups of the same devices wait for each other instead of
    // deadlocking.
    let mut by_device = run.to_vec();
    by_device.sort_by_key(|ev| ev.dev_eui);
    let refreshed = devices::refresh_heard_batch(conn, &heard(&by_device)).await?;
    by_device.retain(|ev| !refreshed.contains(&ev.dev_eui.to_string()));
    let returned: std::collections::HashMap<String, Option<String>> = if by_device.is_empty() {
        Default::default()
    } else {
        devices::upsert_heard_batch(conn, &by_device)
            .await?
            .into_iter()
            .collect()
    };
    uplinks::insert_batch(conn, run).await?;
    let times: Vec<String> = run.iter().map(|ev| fmt_time(ev.at)).collect();
    let euis: Vec<String> = run.iter().map(|ev| ev.dev_eui.to_string()).collect();
    let mut log = Vec::new();
    let mut due = Vec::new();
    for ((ev, at), eui) in run.iter().zip(&times).zip(&euis) {
        if returned
            .get(eui)
            .is_some_and(|r| r.as_deref() == Some(at.as_str()))
        {
            log.push(device_events::NewLine {
                dev_eui: eui.clone(),
                at: at.clone(),
                kind: "reappeared",
                message: REAPPEARED.to_string(),
            });
        }
        if matches!(&ev.body, EventBody::Up(up) if prune_due(up)) {
            due.push(eui.as_str());
        }
    }
    due.sort_unstable();
    due.dedup();
    uplinks::prune_many(conn, &due, retention.uplink_history).await?;
    let answering = apply_status_answers(conn, run, &times, &euis, retention, &mut log).await?;
    device_events::add_many(conn, &log).await?;
    device_events::prune_many(conn, &answering, retention.event_history).await
}

/// What each device of `by_device` (a run sorted by device) was heard doing, for
/// [`devices::refresh_heard_batch`]; a device whose events in the run disagree on its identity
/// is left out, for the upsert to apply them one after another.
fn heard<'e>(by_device: &[&'e IntegrationEvent]) -> Vec<devices::Heard<'e>> {
    by_device
        .chunk_by(|a, b| a.dev_eui == b.dev_eui)
        .filter(|evs| evs.iter().all(|ev| ev.device == evs[0].device))
        .filter_map(|evs| {
            let mut newest: Option<(&IntegrationEvent, &Uplink)> = None;
            for ev in evs {
                let EventBody::Up(up) = &ev.body else {
                    return None;
                };
                if newest.is_none_or(|(n, _)| ev.at >= n.at) {
                    newest = Some((ev, up));
                }
            }
            let (ev, up) = newest?;
            Some(devices::Heard {
                dev_eui: ev.dev_eui.to_string(),
                identity: &ev.device,
                at: ev.at,
                rssi: up.rssi,
                snr: up.snr,
            })
        })
        .collect()
}

/// The Version & Status answers of a run: what each device's record held is read in one
/// statement, each payload is interpreted (pure) in order, and what they change is written
/// with a statement per kind of change. Their log lines go to `log`; returns the devices that
/// answered (their logs want pruning).
async fn apply_status_answers<'r>(
    conn: &mut Conn,
    run: &[&IntegrationEvent],
    times: &'r [String],
    euis: &'r [String],
    retention: Retention,
    log: &mut Vec<device_events::NewLine>,
) -> storage::Result<Vec<&'r str>> {
    let answers: Vec<(usize, &Uplink)> = run
        .iter()
        .enumerate()
        .filter_map(|(i, ev)| is_status(ev, retention).map(|up| (i, up)))
        .collect();
    if answers.is_empty() {
        return Ok(Vec::new());
    }
    let mut answering: Vec<&str> = answers.iter().map(|(i, _)| euis[*i].as_str()).collect();
    let mut known = storage::version_status::known_many(conn, &answering).await?;
    let mut changes = Vec::with_capacity(answers.len());
    for (i, up) in &answers {
        let (k, pending) = known.entry(euis[*i].clone()).or_default();
        let change = crate::version_status::interpret(&up.data, *k);
        // A later answer of the same device in the group reads what this one stored.
        for a in &change.answers {
            match a.reported {
                storage::version_status::Reported::Package {
                    versioning_type, ..
                } => {
                    k.versioning_type = Some(i64::from(versioning_type));
                }
                storage::version_status::Reported::Running { version, .. } => {
                    k.running_version = Some(i64::from(version));
                }
                _ => {}
            }
        }
        for (kind, message) in &change.log {
            log.push(device_events::NewLine {
                dev_eui: euis[*i].clone(),
                at: times[*i].clone(),
                kind,
                message: message.clone(),
            });
        }
        changes.push((*i, change, *pending));
    }
    let writes: Vec<storage::version_status::StatusWrite> = changes
        .iter()
        .map(
            |(i, change, pending)| storage::version_status::StatusWrite {
                dev_eui: &euis[*i],
                at: &times[*i],
                changes: change,
                pending: *pending,
            },
        )
        .collect();
    storage::version_status::write_many(conn, &writes).await?;
    answering.sort_unstable();
    answering.dedup();
    Ok(answering)
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
    downlinks::apply_outcome(&mut tx, id, dev_eui, outcome, what, at).await?;
    storage::commit(tx).await
}

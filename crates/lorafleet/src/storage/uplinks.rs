//! Uplinks (`uplinks`): what each device sent, the newest kept per device, and the engine's
//! answers read back past a cursor.

use serde::Serialize;
use utoipa::ToSchema;

use super::integration_events::{EventBody, IntegrationEvent, Uplink};
use super::{Cols, Conn, Db, Result, Time};

/// One uplink as the console shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UplinkDto {
    pub received_at: String,
    pub f_port: Option<i64>,
    pub f_cnt: Option<i64>,
    pub dr: Option<i64>,
    pub frequency: Option<i64>,
    pub rssi: Option<i64>,
    pub snr: Option<f64>,
    pub gateway_count: i64,
    pub confirmed: bool,
    pub data_hex: String,
    /// The payload as text, only when it is printable UTF-8.
    pub data_text: Option<String>,
    #[schema(value_type = Object)]
    pub object: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UplinkList {
    pub uplinks: Vec<UplinkDto>,
}

/// The payload as text when it is printable UTF-8 (tabs and line breaks allowed), else None.
pub fn printable_text(data: &[u8]) -> Option<String> {
    if data.is_empty() {
        return None;
    }
    let s = std::str::from_utf8(data).ok()?;
    if s.chars()
        .all(|c| !c.is_control() || c == '\n' || c == '\r' || c == '\t')
    {
        Some(s.to_string())
    } else {
        None
    }
}

/// SQLite allows 32766 bound values per statement; 14 per row here and 11 per device row.
pub const BATCH_ROWS: usize = 1000;

pub async fn insert(conn: &mut Conn, dev_eui: &str, up: &Uplink) -> Result<()> {
    insert_rows(conn, std::iter::once((dev_eui.to_string(), up))).await
}

/// Stores the uplinks of up to [`BATCH_ROWS`] events with one multi-row statement: each
/// statement costs a round trip to SQLite's worker thread. Events that are not uplinks are
/// skipped.
pub async fn insert_batch(conn: &mut Conn, events: &[&IntegrationEvent]) -> Result<()> {
    let ups: Vec<(&IntegrationEvent, &Uplink)> = events
        .iter()
        .filter_map(|ev| match &ev.body {
            EventBody::Up(up) => Some((*ev, up)),
            _ => None,
        })
        .collect();
    if ups.is_empty() {
        return Ok(());
    }
    insert_rows(
        conn,
        ups.into_iter().map(|(ev, up)| (ev.dev_eui.to_string(), up)),
    )
    .await
}

/// The one column list and binding order of both the single and the batched insert.
async fn insert_rows<'a>(
    conn: &mut Conn,
    rows: impl Iterator<Item = (String, &'a Uplink)>,
) -> Result<()> {
    on!(conn, c, DB => {
    let mut uplinks = sqlx::QueryBuilder::<DB>::new(
        "INSERT INTO uplinks (dev_eui, received_at, f_cnt, f_port, dr, frequency, rssi, snr,
            gateway_count, confirmed, data, object_json, dedup_key, gateway_ids) ",
    );
    uplinks.push_values(rows, |mut row, (dev_eui, up)| {
        row.push_bind(dev_eui)
            .push_bind(Time::from(up.received_at))
            .push_bind(up.f_cnt.map(|v| v as i64))
            .push_bind(up.f_port.map(|v| v as i64))
            .push_bind(up.dr.map(|v| v as i64))
            .push_bind(up.frequency.map(|v| v as i64))
            .push_bind(up.rssi.map(|v| v as i64))
            .push_bind(up.snr)
            .push_bind(up.gateway_count as i64)
            .push_bind(up.confirmed)
            .push_bind(up.data.clone())
            .push_bind(up.object.as_ref().map(|o| o.to_string()))
            .push_bind(up.dedup_key.clone())
            .push_bind(
                (!up.gateway_ids.is_empty())
                    .then(|| serde_json::Value::from(up.gateway_ids.clone()).to_string()),
            );
    });
    uplinks.build().execute(c).await.map(|done| done.rows_affected())
    })?;
    Ok(())
}

/// Which of `keys` (ChirpStack's deduplication identities) belong to uplinks already stored:
/// those events are repeats.
pub async fn known_dedup_keys(
    conn: &mut Conn,
    keys: &[&str],
) -> Result<std::collections::HashSet<String>> {
    let mut known = std::collections::HashSet::new();
    for chunk in keys.chunks(500) {
        let rows: Vec<String> = on!(&mut *conn, c, DB => {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "SELECT dedup_key FROM uplinks WHERE dedup_key IN (",
            );
            let mut list = q.separated(", ");
            for k in chunk {
                list.push_bind(*k);
            }
            q.push(")");
            q.build_query_scalar().fetch_all(c).await
        })?;
        known.extend(rows);
    }
    Ok(known)
}

/// The gateways that heard each of `dev_euis` since `since` (from the uplinks' rxInfo, as
/// stored); devices heard by none are absent.
pub async fn gateways_heard(
    db: &Db,
    dev_euis: &[String],
    since: chrono::DateTime<chrono::Utc>,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>> {
    let mut heard: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for chunk in dev_euis.chunks(500) {
        let rows: Vec<(String, String)> = on!(db, c, DB => {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "SELECT dev_eui, gateway_ids FROM uplinks WHERE gateway_ids IS NOT NULL AND received_at >= ",
            );
            q.push_bind(Time::from(since)).push(" AND dev_eui IN (");
            let mut list = q.separated(", ");
            for e in chunk {
                list.push_bind(e.as_str());
            }
            q.push(")");
            q.build_query_as().fetch_all(c).await
        })?;
        for (dev_eui, ids) in rows {
            let ids: Vec<String> = serde_json::from_str(&ids).unwrap_or_default();
            heard.entry(dev_eui).or_default().extend(ids);
        }
    }
    Ok(heard)
}

/// Deletes all but the newest `keep` uplinks of a device.
pub async fn prune(conn: &mut Conn, dev_eui: &str, keep: u32) -> Result<()> {
    super::keep_newest(conn, "uplinks", dev_eui, keep).await
}

/// [`prune`] for many devices at once.
pub async fn prune_many(conn: &mut Conn, dev_euis: &[&str], keep: u32) -> Result<()> {
    super::keep_newest_of(conn, "uplinks", dev_euis, keep).await
}

fn from_row(r: &impl Cols) -> UplinkDto {
    let data: Vec<u8> = r.get("data");
    let object: Option<String> = r.get("object_json");
    UplinkDto {
        received_at: r.get("received_at"),
        f_port: r.get("f_port"),
        f_cnt: r.get("f_cnt"),
        dr: r.get("dr"),
        frequency: r.get("frequency"),
        rssi: r.get("rssi"),
        snr: r.get("snr"),
        gateway_count: r.get("gateway_count"),
        confirmed: r.get("confirmed"),
        data_hex: hex::encode(&data),
        data_text: printable_text(&data),
        object: object.and_then(|o| serde_json::from_str(&o).ok()),
    }
}

/// A device's newest uplinks, newest first.
pub async fn recent(db: &Db, dev_eui: &str, limit: i64) -> Result<Vec<UplinkDto>> {
    let rows = on!(db, c => sqlx::query("SELECT * FROM uplinks WHERE dev_eui = $1 ORDER BY id DESC LIMIT $2")
        .bind(dev_eui)
        .bind(limit)
        .fetch_all(c).await?
        .iter()
        .map(from_row)
        .collect());
    Ok(rows)
}

pub async fn last(db: &Db, dev_eui: &str) -> Result<Option<UplinkDto>> {
    // The last application uplink: a frame with only MAC commands (no FPort, or FPort 0) says
    // nothing about the application, so it does not hide the one before.
    let row = on!(db, c => sqlx::query(
        "SELECT * FROM uplinks WHERE dev_eui = $1 AND f_port > 0 ORDER BY id DESC LIMIT 1",
    )
    .bind(dev_eui)
    .fetch_optional(c).await?
    .as_ref()
    .map(from_row));
    Ok(row)
}

/// Reception times of a device's newest uplinks as stored, newest first.
pub async fn received_times(db: &Db, dev_eui: &str, limit: i64) -> Result<Vec<String>> {
    Ok(
        on!(db, c => sqlx::query("SELECT received_at FROM uplinks WHERE dev_eui = $1 ORDER BY id DESC LIMIT $2")
        .bind(dev_eui)
        .bind(limit)
        .fetch_all(c).await?
        .iter()
        .map(|r| r.get("received_at"))
        .collect()),
    )
}

/// The frame counters of the device's newest `limit` uplinks, newest first: what the plan
/// measures uplink loss from (gaps between consecutive counters).
pub async fn recent_f_cnts(db: &Db, dev_eui: &str, limit: i64) -> Result<Vec<i64>> {
    Ok(on!(db, c => sqlx::query(
        "SELECT f_cnt FROM uplinks WHERE dev_eui = $1 AND f_cnt IS NOT NULL ORDER BY id DESC LIMIT $2",
    )
    .bind(dev_eui)
    .bind(limit)
    .fetch_all(c).await?
    .iter()
    .map(|r| r.get("f_cnt"))
    .collect()))
}

/// The id of the newest uplink stored (0 when there is none): where an answer cursor starts.
pub async fn max_id(db: &Db) -> Result<i64> {
    on!(db, c => sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM uplinks")
        .fetch_one(c).await)
}

/// An uplink read back past a cursor.
#[derive(Debug, Clone)]
pub struct StoredUplink {
    pub id: i64,
    pub dev_eui: String,
    pub received_at: String,
    pub f_port: i64,
    pub data: Vec<u8>,
}

/// Uplinks on the given FPorts committed after `cursor`, in commit order, at most `limit`
/// (any set of FPorts: each engine device may answer on its own).
pub async fn since(db: &Db, cursor: i64, f_ports: &[u8], limit: i64) -> Result<Vec<StoredUplink>> {
    // FPorts are bytes, so the list is at most 256 placeholders; none matches nothing (-1).
    let ports: Vec<i64> = if f_ports.is_empty() {
        vec![-1]
    } else {
        f_ports.iter().map(|p| i64::from(*p)).collect()
    };
    let marks: Vec<String> = (0..ports.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT id, dev_eui, received_at, f_port, data FROM uplinks
         WHERE id > $1 AND f_port IN ({}) ORDER BY id LIMIT ${}",
        marks.join(", "),
        ports.len() + 2
    );
    let rows = on!(db, c => {
        let mut query = sqlx::query(&sql).bind(cursor);
        for p in &ports {
            query = query.bind(*p);
        }
        query
            .bind(limit)
            .fetch_all(c)
            .await?
            .iter()
            .map(|r| StoredUplink {
                id: r.get("id"),
                dev_eui: r.get("dev_eui"),
                received_at: r.get("received_at"),
                f_port: r.get("f_port"),
                data: r.get("data"),
            })
            .collect::<Vec<_>>()
    });
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_printable_utf8_is_text() {
        assert_eq!(printable_text(b"hello\n"), Some("hello\n".into()));
        assert_eq!(printable_text(&[0x01, 0x02]), None);
        assert_eq!(printable_text(&[0xff, 0xfe]), None);
        assert_eq!(printable_text(b""), None);
        assert_eq!(
            printable_text("température".as_bytes()),
            Some("température".into())
        );
    }
}

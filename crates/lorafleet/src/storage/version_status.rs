//! The Version & Status fields of a device (columns of `devices`, each with the time it was
//! reported): the change set an answer makes, written inside the ingest writer's transaction,
//! and the fields as the device page shows them.

use lorafleet_codec::version_status::{self as codec, VersioningType};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{downlinks, firmware_history, time, Cols, Conn, Result};

/// A firmware version as a device reported it: the raw value and its rendering by the device's
/// versioning type (raw hex until the type is known).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct VersionDto {
    pub raw: u32,
    pub display: String,
}

/// Renders a version by the device's versioning type, if known.
pub fn version_dto(raw: i64, versioning_type: Option<i64>) -> VersionDto {
    let raw = raw as u32;
    let vt = versioning_type.map(|t| VersioningType::from_nibble(t as u8));
    VersionDto {
        raw,
        display: codec::render_version(raw, vt),
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PackageDto {
    pub identifier: i64,
    pub version: i64,
    pub versioning_type: i64,
    pub slots: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunningDto {
    pub slot: i64,
    pub version: VersionDto,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredDto {
    pub slot: i64,
    pub version: VersionDto,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ReportedAt {
    pub package: Option<String>,
    pub running: Option<String>,
    pub stored: Option<String>,
    pub space: Option<String>,
    pub uptime: Option<String>,
    pub description: Option<String>,
}

/// What the device said through the Version & Status package; null until it said it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusDto {
    pub package: Option<PackageDto>,
    pub running: Option<RunningDto>,
    pub stored: Option<Vec<StoredDto>>,
    pub heap_available: Option<i64>,
    pub slot_size: Option<i64>,
    pub uptime_s: Option<i64>,
    pub manufacturer_id: Option<String>,
    pub device_id: Option<String>,
    pub reported_at: ReportedAt,
}

/// What earlier answers left in the device's record that reading a new answer depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    pub versioning_type: Option<i64>,
    pub running_version: Option<i64>,
}

/// The fields one answer reports, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    Package {
        identifier: u8,
        version: u8,
        versioning_type: u8,
        nb_slots: u8,
    },
    Running {
        slot: u8,
        version: u32,
    },
    /// (slot, raw version) of each slot holding an image.
    Stored(Vec<(u8, u32)>),
    Space {
        heap_available: Option<u32>,
        slot_size: u32,
    },
    Uptime {
        seconds: u32,
    },
    /// Absent strings keep what was stored.
    Description {
        manufacturer_id: Option<String>,
        device_id: Option<String>,
    },
}

/// A change of the running version, for the firmware history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionChange {
    pub version: u32,
    pub slot: u8,
    pub message: String,
}

/// What one answer changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerChange {
    pub reported: Reported,
    pub version_change: Option<VersionChange>,
    /// The command whose newest pending request this answer settles.
    pub answers: &'static str,
    /// Every pending erase is settled too (the stored versions show an erase's effect).
    pub settles_erases: bool,
}

/// What a payload on the Version & Status FPort changes, in the order of its answers, and the
/// device-log lines (kind, message) it adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub answers: Vec<AnswerChange>,
    pub log: Vec<(&'static str, String)>,
}

/// Reads what [`Known`] holds for a device (defaults for an unknown one).
pub async fn known(conn: &mut Conn, dev_eui: &str) -> Result<Known> {
    let row: Option<(Option<i64>, Option<i64>)> = on!(&mut *conn, c => sqlx::query_as("SELECT versioning_type, running_version FROM devices WHERE dev_eui = $1")
            .bind(dev_eui)
            .fetch_optional(c).await)?;
    Ok(
        row.map_or(Known::default(), |(versioning_type, running_version)| {
            Known {
                versioning_type,
                running_version,
            }
        }),
    )
}

/// Writes a change set reported at `at` (stored time text) in the caller's transaction.
pub async fn write(conn: &mut Conn, dev_eui: &str, at: &str, changes: &ChangeSet) -> Result<()> {
    for change in &changes.answers {
        if let Some(v) = &change.version_change {
            let entry = firmware_history::NewEntry {
                dev_eui,
                at,
                version: Some(v.version),
                slot: Some(v.slot),
                campaign_id: None,
                outcome: None,
                message: &v.message,
            };
            firmware_history::record(conn, &entry).await?;
        }
        write_reported(conn, dev_eui, at, &change.reported).await?;
        downlinks::mark_answered(conn, dev_eui, change.answers, at).await?;
        if change.settles_erases {
            downlinks::mark_erases_answered(conn, dev_eui, at).await?;
        }
    }
    Ok(())
}

/// [`known`] for many devices in one statement, with whether each has a Version & Status
/// request (or erase) still waiting: the writer skips marking answers of devices that have
/// none, which is nearly all of them. Devices not yet stored are absent.
pub async fn known_many(
    conn: &mut Conn,
    dev_euis: &[&str],
) -> Result<std::collections::HashMap<String, (Known, bool)>> {
    let mut out = std::collections::HashMap::with_capacity(dev_euis.len());
    for chunk in dev_euis.chunks(500) {
        let rows: Vec<(String, Option<i64>, Option<i64>, i64)> = on!(&mut *conn, c, DB => {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "SELECT dev_eui, versioning_type, running_version,
                    CASE WHEN EXISTS (SELECT 1 FROM downlinks d WHERE d.dev_eui = devices.dev_eui
                        AND d.status_command IS NOT NULL
                        AND d.state IN ('requested', 'enqueued', 'sent', 'acknowledged'))
                    THEN 1 ELSE 0 END AS pending
                 FROM devices WHERE dev_eui IN (",
            );
            let mut list = q.separated(", ");
            for eui in chunk {
                list.push_bind(*eui);
            }
            q.push(")");
            q.build()
                .fetch_all(c)
                .await?
                .iter()
                .map(|r| (r.get("dev_eui"), r.get("versioning_type"), r.get("running_version"), r.get("pending")))
                .collect()
        });
        for (eui, versioning_type, running_version, pending) in rows {
            let known = Known {
                versioning_type,
                running_version,
            };
            out.insert(eui, (known, pending != 0));
        }
    }
    Ok(out)
}

/// One device's change set for [`write_many`].
#[derive(Debug, Clone, Copy)]
pub struct StatusWrite<'a> {
    pub dev_eui: &'a str,
    /// When it was reported (stored time text).
    pub at: &'a str,
    pub changes: &'a ChangeSet,
    /// The device has requests waiting for an answer ([`known_many`] says).
    pub pending: bool,
}

/// The newest report of each kind per device in a group of change sets: a later answer of a
/// kind overwrites an earlier one as the statements one by one would.
#[derive(Default)]
struct Newest<'a> {
    package: Vec<(&'a str, &'a str, [i64; 4])>,
    running: Vec<(&'a str, &'a str, [i64; 2])>,
    stored: Vec<(&'a str, &'a str, String)>,
    space: Vec<(&'a str, &'a str, Option<i64>, i64)>,
    uptime: Vec<(&'a str, &'a str, i64)>,
    description: Vec<(&'a str, &'a str, Option<String>, Option<String>)>,
    /// (kind, device) to its index in that kind's list.
    at: Index<'a>,
}

type Index<'a> = std::collections::HashMap<(u8, &'a str), usize>;

/// Puts `row` in its place in `list`: the kind's earlier row of the device is replaced (and
/// returned), or the row is added.
fn place<'l, 'a, T>(
    list: &'l mut Vec<T>,
    index: &mut Index<'a>,
    key: (u8, &'a str),
    row: T,
) -> (&'l mut T, Option<T>) {
    match index.get(&key) {
        Some(&i) => {
            let old = std::mem::replace(&mut list[i], row);
            (&mut list[i], Some(old))
        }
        None => {
            index.insert(key, list.len());
            list.push(row);
            let last = list.len() - 1;
            (&mut list[last], None)
        }
    }
}

impl<'a> Newest<'a> {
    fn add(&mut self, eui: &'a str, when: &'a str, r: &'a Reported) {
        let at = &mut self.at;
        match r {
            Reported::Package {
                identifier,
                version,
                versioning_type,
                nb_slots,
            } => {
                let row = [*identifier, *version, *versioning_type, *nb_slots].map(i64::from);
                place(&mut self.package, at, (0, eui), (eui, when, row));
            }
            Reported::Running { slot, version } => {
                let row = [i64::from(*slot), i64::from(*version)];
                place(&mut self.running, at, (1, eui), (eui, when, row));
            }
            Reported::Stored(slots) => {
                let row = (eui, when, stored_json(slots));
                place(&mut self.stored, at, (2, eui), row);
            }
            Reported::Space {
                heap_available,
                slot_size,
            } => {
                let row = (
                    eui,
                    when,
                    heap_available.map(i64::from),
                    i64::from(*slot_size),
                );
                place(&mut self.space, at, (3, eui), row);
            }
            Reported::Uptime { seconds } => {
                place(
                    &mut self.uptime,
                    at,
                    (4, eui),
                    (eui, when, i64::from(*seconds)),
                );
            }
            Reported::Description {
                manufacturer_id,
                device_id,
            } => {
                let row = (eui, when, manufacturer_id.clone(), device_id.clone());
                if let (new, Some(old)) = place(&mut self.description, at, (5, eui), row) {
                    // Absent strings keep what an earlier answer gave, as COALESCE keeps the
                    // stored ones.
                    new.2 = new.2.take().or(old.2);
                    new.3 = new.3.take().or(old.3);
                }
            }
        }
    }
}

fn stored_json(slots: &[(u8, u32)]) -> String {
    let stored: Vec<serde_json::Value> = slots
        .iter()
        .map(|(slot, version)| serde_json::json!({"slot": slot, "version": version}))
        .collect();
    serde_json::Value::Array(stored).to_string()
}

/// `UPDATE devices SET <set> FROM (VALUES ...) AS v WHERE devices.dev_eui = v.column1`, one
/// statement per 500 rows; `v.column2...` are the row's further values as bound.
macro_rules! update_devices_from {
    ($conn:expr, $set:expr, $rows:expr, |$row:ident, $item:pat_param| $bind:block) => {
        for chunk in $rows.chunks(500) {
            on!(&mut *$conn, c, DB => {
                let mut q = sqlx::QueryBuilder::<DB>::new(concat!("UPDATE devices SET ", $set, " FROM ("));
                q.push_values(chunk, |mut $row, $item| $bind);
                q.push(") AS v WHERE devices.dev_eui = v.column1");
                q.build().execute(c).await.map(|r| r.rows_affected())
            })?;
        }
    };
}

/// [`write`] for the change sets of a writer group, in order, with a statement per kind of
/// report instead of one per answer.
pub async fn write_many(conn: &mut Conn, writes: &[StatusWrite<'_>]) -> Result<()> {
    let mut history = Vec::new();
    let mut newest = Newest::default();
    let mut answered: Vec<(&str, &str, &str)> = Vec::new();
    let mut again: Vec<(&str, &str, &str)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut erases: Vec<(&str, &str)> = Vec::new();
    for w in writes {
        for change in &w.changes.answers {
            if let Some(v) = &change.version_change {
                history.push(firmware_history::NewEntry {
                    dev_eui: w.dev_eui,
                    at: w.at,
                    version: Some(v.version),
                    slot: Some(v.slot),
                    campaign_id: None,
                    outcome: None,
                    message: &v.message,
                });
            }
            newest.add(w.dev_eui, w.at, &change.reported);
            if !w.pending {
                continue;
            }
            let answer = (w.dev_eui, change.answers, w.at);
            if seen.insert((w.dev_eui, change.answers)) {
                answered.push(answer);
            } else {
                again.push(answer);
            }
            if change.settles_erases && !erases.iter().any(|(e, _)| *e == w.dev_eui) {
                erases.push((w.dev_eui, w.at));
            }
        }
    }
    firmware_history::record_many(conn, &history).await?;
    write_newest(conn, &newest).await?;
    downlinks::mark_answered_many(conn, &answered).await?;
    // A second answer of the same command settles the next request, as one by one.
    for (eui, command, at) in again {
        downlinks::mark_answered(conn, eui, command, at).await?;
    }
    downlinks::mark_erases_answered_many(conn, &erases).await
}

async fn write_newest(conn: &mut Conn, n: &Newest<'_>) -> Result<()> {
    update_devices_from!(conn, "pkg_identifier = v.column3, pkg_version = v.column4, versioning_type = v.column5, nb_slots = v.column6, pkg_reported_at = v.column2", n.package, |row, (eui, at, r)| {
        row.push_bind(*eui).push_bind(time(at)).push_bind(r[0]).push_bind(r[1]).push_bind(r[2]).push_bind(r[3]);
    });
    update_devices_from!(
        conn,
        "running_slot = v.column3, running_version = v.column4, running_reported_at = v.column2",
        n.running,
        |row, (eui, at, r)| {
            row.push_bind(*eui)
                .push_bind(time(at))
                .push_bind(r[0])
                .push_bind(r[1]);
        }
    );
    update_devices_from!(
        conn,
        "stored_json = v.column3, stored_reported_at = v.column2",
        n.stored,
        |row, (eui, at, json)| {
            row.push_bind(*eui)
                .push_bind(time(at))
                .push_bind(json.as_str());
        }
    );
    update_devices_from!(
        conn,
        "heap_available = v.column3, slot_size = v.column4, space_reported_at = v.column2",
        n.space,
        |row, (eui, at, heap, size)| {
            row.push_bind(*eui)
                .push_bind(time(at))
                .push_bind(*heap)
                .push_bind(*size);
        }
    );
    update_devices_from!(
        conn,
        "uptime_s = v.column3, uptime_reported_at = v.column2",
        n.uptime,
        |row, (eui, at, seconds)| {
            row.push_bind(*eui).push_bind(time(at)).push_bind(*seconds);
        }
    );
    update_devices_from!(conn, "manufacturer_id = COALESCE(v.column3, devices.manufacturer_id), device_id = COALESCE(v.column4, devices.device_id), description_reported_at = v.column2", n.description, |row, (eui, at, m, d)| {
        row.push_bind(*eui).push_bind(time(at)).push_bind(m.clone()).push_bind(d.clone());
    });
    Ok(())
}

async fn write_reported(conn: &mut Conn, dev_eui: &str, at: &str, r: &Reported) -> Result<()> {
    // The statement is built per backend: the match is inside the body `on!` expands twice.
    on!(conn, c => { let q = match r {
        Reported::Package {
            identifier,
            version,
            versioning_type,
            nb_slots,
        } => sqlx::query("UPDATE devices SET pkg_identifier = $1, pkg_version = $2, versioning_type = $3, nb_slots = $4, pkg_reported_at = $5 WHERE dev_eui = $6")
            .bind(i64::from(*identifier))
            .bind(i64::from(*version))
            .bind(i64::from(*versioning_type))
            .bind(i64::from(*nb_slots)),
        Reported::Running { slot, version } => sqlx::query("UPDATE devices SET running_slot = $1, running_version = $2, running_reported_at = $3 WHERE dev_eui = $4")
            .bind(i64::from(*slot))
            .bind(i64::from(*version)),
        Reported::Stored(slots) => {
            let stored: Vec<serde_json::Value> = slots
                .iter()
                .map(|(slot, version)| serde_json::json!({"slot": slot, "version": version}))
                .collect();
            sqlx::query("UPDATE devices SET stored_json = $1, stored_reported_at = $2 WHERE dev_eui = $3")
                .bind(serde_json::Value::Array(stored).to_string())
        }
        Reported::Space {
            heap_available,
            slot_size,
        } => sqlx::query("UPDATE devices SET heap_available = $1, slot_size = $2, space_reported_at = $3 WHERE dev_eui = $4")
            .bind(heap_available.map(i64::from))
            .bind(i64::from(*slot_size)),
        Reported::Uptime { seconds } => {
            sqlx::query("UPDATE devices SET uptime_s = $1, uptime_reported_at = $2 WHERE dev_eui = $3")
                .bind(i64::from(*seconds))
        }
        Reported::Description {
            manufacturer_id,
            device_id,
        } => sqlx::query("UPDATE devices SET manufacturer_id = COALESCE($1, manufacturer_id), device_id = COALESCE($2, device_id), description_reported_at = $3 WHERE dev_eui = $4")
            .bind(manufacturer_id.clone())
            .bind(device_id.clone()),
    };
    q.bind(time(at)).bind(dev_eui).execute(c).await.map(|done| done.rows_affected()) })?;
    Ok(())
}

fn stored_from_json(json: Option<String>, vt: Option<i64>) -> Option<Vec<StoredDto>> {
    json.and_then(|s| serde_json::from_str::<Vec<serde_json::Value>>(&s).ok())
        .map(|list| {
            list.iter()
                .filter_map(|v| {
                    Some(StoredDto {
                        slot: v.get("slot")?.as_i64()?,
                        version: version_dto(v.get("version")?.as_i64()?, vt),
                    })
                })
                .collect()
        })
}

/// The Version & Status fields of a `devices` row as the device page shows them.
pub fn from_device_row(r: &impl Cols) -> StatusDto {
    let vt: Option<i64> = r.get("versioning_type");
    let package = match (
        r.get::<Option<i64>>("pkg_identifier"),
        r.get::<Option<i64>>("pkg_version"),
    ) {
        (Some(identifier), Some(version)) => Some(PackageDto {
            identifier,
            version,
            versioning_type: vt.unwrap_or(0),
            slots: r.get::<Option<i64>>("nb_slots").unwrap_or(3),
        }),
        _ => None,
    };
    let running = match (
        r.get::<Option<i64>>("running_slot"),
        r.get::<Option<i64>>("running_version"),
    ) {
        (Some(slot), Some(v)) => Some(RunningDto {
            slot,
            version: version_dto(v, vt),
        }),
        _ => None,
    };
    StatusDto {
        package,
        running,
        stored: stored_from_json(r.get("stored_json"), vt),
        heap_available: r.get("heap_available"),
        slot_size: r.get("slot_size"),
        uptime_s: r.get("uptime_s"),
        manufacturer_id: r.get("manufacturer_id"),
        device_id: r.get("device_id"),
        reported_at: ReportedAt {
            package: r.get("pkg_reported_at"),
            running: r.get("running_reported_at"),
            stored: r.get("stored_reported_at"),
            space: r.get("space_reported_at"),
            uptime: r.get("uptime_reported_at"),
            description: r.get("description_reported_at"),
        },
    }
}

/// The versioning type and running version of the device whose running version is nearest
/// `raw` (the same value first); `firmware::spelling::near` decides whether it is near enough.
pub async fn versioning_near(db: &super::Db, raw: u32) -> Result<Option<(i64, i64)>> {
    on!(db, c => Ok(sqlx::query(
        "SELECT versioning_type, running_version FROM devices
         WHERE versioning_type IS NOT NULL AND running_version IS NOT NULL AND removed_at IS NULL
         ORDER BY ABS(running_version - $1), last_seen DESC NULLS LAST LIMIT 1",
    )
    .bind(i64::from(raw))
    .fetch_optional(c)
    .await?
    .map(|r| (r.get("versioning_type"), r.get("running_version")))))
}

/// How many of a campaign's devices run which version (with its versioning type), most first;
/// `version` none for devices that have not reported one.
pub struct RunningCount {
    pub version: Option<i64>,
    pub versioning_type: Option<i64>,
    pub devices: i64,
}

pub async fn running_of_campaign(db: &super::Db, campaign_id: i64) -> Result<Vec<RunningCount>> {
    let rows: Vec<(Option<i64>, Option<i64>, i64)> = on!(db, c => sqlx::query(
        "SELECT d.running_version, d.versioning_type, COUNT(*) AS n
         FROM campaign_devices c LEFT JOIN devices d ON d.dev_eui = c.dev_eui
         WHERE c.campaign_id = $1 GROUP BY 1, 2 ORDER BY n DESC, 1 NULLS FIRST",
    )
    .bind(campaign_id)
    .fetch_all(c)
    .await?
    .iter()
    .map(|r| (r.get("running_version"), r.get("versioning_type"), r.get("n")))
    .collect());
    Ok(rows
        .into_iter()
        .map(|(version, versioning_type, devices)| RunningCount {
            version,
            versioning_type,
            devices,
        })
        .collect())
}

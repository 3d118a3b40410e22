//! What the campaign page lists per device besides its stage (issue 10 item 7): its name and
//! model from the inventory, the version it ran before the campaign started and the one it
//! runs now, with the versioning type its Version & Status answer gave.

use crate::storage::{time, Cols, Db, Result};

/// One campaign device as the inventory and its firmware history know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFactRow {
    pub dev_eui: String,
    pub name: Option<String>,
    pub model: Option<String>,
    /// The running version the device reported last before `before` (its firmware history),
    /// when it reported one.
    pub version_before: Option<i64>,
    /// The first version the device reported after `before` outside a campaign's own entries
    /// (its answer to the campaign's version check), for a device that reported none before.
    pub version_first_after: Option<i64>,
    pub running_version: Option<i64>,
    pub versioning_type: Option<i64>,
}

/// The campaign's devices in DevEUI order; `before` is the campaign's start on the network's
/// clock (none for a draft: the history's newest version then).
pub async fn of_campaign(
    db: &Db,
    campaign_id: i64,
    before: Option<&str>,
) -> Result<Vec<DeviceFactRow>> {
    // A far-future bound keeps one statement for drafts and started campaigns alike.
    let bound = before.unwrap_or("9999-12-31T23:59:59.000Z");
    Ok(on!(db, c => sqlx::query(
        "SELECT c.dev_eui, d.name, d.model, d.running_version, d.versioning_type,
                (SELECT h.version FROM firmware_history h
                  WHERE h.dev_eui = c.dev_eui AND h.version IS NOT NULL AND h.at <= $2
                  ORDER BY h.at DESC, h.id DESC LIMIT 1) AS version_before,
                (SELECT h.version FROM firmware_history h
                  WHERE h.dev_eui = c.dev_eui AND h.version IS NOT NULL AND h.at > $2
                    AND h.campaign_id IS NULL
                  ORDER BY h.at, h.id LIMIT 1) AS version_first_after
         FROM campaign_devices c LEFT JOIN devices d ON d.dev_eui = c.dev_eui
         WHERE c.campaign_id = $1 ORDER BY c.dev_eui",
    )
    .bind(campaign_id)
    .bind(time(bound))
    .fetch_all(c)
    .await?
    .iter()
    .map(|r| DeviceFactRow {
        dev_eui: r.get("dev_eui"),
        name: r.get("name"),
        model: r.get("model"),
        version_before: r.get("version_before"),
        version_first_after: r.get("version_first_after"),
        running_version: r.get("running_version"),
        versioning_type: r.get("versioning_type"),
    })
    .collect()))
}

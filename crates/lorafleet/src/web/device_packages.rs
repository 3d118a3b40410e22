//! What the device page shows of a device's app-layer packages and limits (issue 8 items 1
//! and 4), read-only: the packages in effect outside a campaign (defaults, then the device's
//! profile on the network server) and the limits the newest campaign with the device held.

use lorafleet_engine::packages::{self, PackagesPatch};
use serde_json::{json, Value};

use crate::campaigns::packages::limits_for;
use crate::devices::DevEui;
use crate::storage::{campaigns, devices, Result};
use crate::AppState;

/// How long the device page waits for the network server's device profile: the rest of the
/// page is read from lorafleet's own database and must not wait on a slow ChirpStack.
const PROFILE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The packages in effect for the device, as `DeviceDetail.packages` documents them. A network
/// server that does not answer leaves the defaults, with a note saying so (the device page must
/// not fail because ChirpStack is slow).
pub async fn in_effect(app: &AppState, eui: DevEui) -> Value {
    let status_port = app.config.status_protocol.f_port;
    let asked = tokio::time::timeout(PROFILE_WAIT, app.network.device_profile_packages(eui));
    let (profile, note) = match asked.await {
        Ok(Ok(p)) => (p, None),
        Ok(Err(e)) => (
            None,
            Some(format!(
                "could not read the device profile's app-layer parameters ({e}): the defaults are shown"
            )),
        ),
        Err(_) => (
            None,
            Some(format!(
                "the network server did not tell the device profile's app-layer parameters within {} s: the defaults are shown",
                PROFILE_WAIT.as_secs()
            )),
        ),
    };
    let patch = profile
        .as_ref()
        .map(|p| p.patch())
        .unwrap_or_else(PackagesPatch::default);
    let by_network = profile.as_ref().is_some_and(|p| p.answers_clock_sync());
    let resolved = packages::resolve(status_port, &[&patch], by_network);
    let mut v = serde_json::to_value(resolved).unwrap_or_else(|_| json!({}));
    if let Value::Object(o) = &mut v {
        o.insert(
            "source".into(),
            json!(if profile.is_some() {
                "device_profile"
            } else {
                "defaults"
            }),
        );
        o.insert(
            "device_profile".into(),
            profile.as_ref().map_or(
                Value::Null,
                |p| json!({"id": p.profile_id, "name": p.profile_name}),
            ),
        );
        o.insert("clock_sync_answered_by_network".into(), json!(by_network));
        o.insert("note".into(), note.map_or(Value::Null, Value::String));
    }
    v
}

/// The limits the newest campaign with the device held for it, with that campaign's id; None
/// when there is no such campaign or it stated no limit.
pub async fn known_limits(app: &AppState, eui: DevEui) -> Result<Option<Value>> {
    let eui = eui.to_string();
    let Some(id) = devices::latest_campaign(&app.db, &eui).await? else {
        return Ok(None);
    };
    // A campaign row that no longer reads (a settings shape of an old version) states nothing.
    let Ok(Some(c)) = campaigns::get(&app.db, id).await else {
        return Ok(None);
    };
    let s = &c.settings;
    let limits = limits_for(
        &eui,
        s.device_limits,
        &s.device_overrides,
        s.model_device_limits,
    );
    if limits.is_empty() {
        return Ok(None);
    }
    let mut v = serde_json::to_value(limits).unwrap_or_else(|_| json!({}));
    if let Value::Object(o) = &mut v {
        o.insert("campaign_id".into(), json!(id));
    }
    Ok(Some(v))
}

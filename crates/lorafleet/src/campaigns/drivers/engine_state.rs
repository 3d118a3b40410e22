//! The engine's campaign state as stored (`campaigns.driver_state_json`), with a schema
//! version, so that an upgrade never strands a running campaign silently: a state an older
//! release wrote is migrated to this one's shape, a state this release cannot read (from a
//! newer release, or an older one no longer supported) is refused with a message saying why
//! and what to do.
//!
//! Stored shape: `{"state_version": N, "run": <engine::Run>}`. Version 0 is what releases
//! before the version existed stored: the bare `Run`, the same fields as version 1.

use lorafleet_engine::machine::Run;
use serde_json::{json, Value};

/// The version this release writes.
pub const STATE_VERSION: u64 = 1;

/// The stored form of a campaign's engine state.
pub fn save(run: &Run) -> Option<Value> {
    let run = serde_json::to_value(run).ok()?;
    Some(json!({ "state_version": STATE_VERSION, "run": run }))
}

/// Reads a stored state of any version this release knows, migrating older ones.
pub fn load(stored: Value) -> Result<Run, String> {
    let (version, run) = match stored.get("state_version") {
        None => (0, stored),
        Some(v) => {
            let version = v.as_u64().ok_or_else(|| {
                format!("the engine's campaign state has a state_version of {v}, not a number")
            })?;
            let run = stored
                .get("run")
                .cloned()
                .ok_or("the engine's campaign state has no run")?;
            (version, run)
        }
    };
    match version {
        // Version 0 is version 1 without the envelope.
        0 | STATE_VERSION => serde_json::from_value(run)
            .map_err(|e| format!("the engine's campaign state (version {version}): {e}")),
        newer if newer > STATE_VERSION => Err(format!(
            "the engine's campaign state was written by a newer lorafleet (state version \
             {newer}; this release reads up to {STATE_VERSION}): run that release again to \
             finish or cancel the campaign"
        )),
        older => Err(format!(
            "the engine's campaign state is of version {older}, which this release no longer \
             reads: finish the campaign with the release that started it"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn run() -> Run {
        let at = chrono::Utc.with_ymd_and_hms(2026, 12, 4, 20, 0, 0).unwrap();
        Run {
            phase: lorafleet_engine::machine::Phase::Setup,
            mc_addr: [1, 2, 3, 4],
            mc_key: [7; 16],
            group: Some("group-1".into()),
            group_deleted: false,
            setup_deadline: at,
            session_start: Some(at),
            next_fragment: 3,
            fragments_sent_at: None,
            verify_at: None,
            uplink_cursor: 42,
            recent_uplinks: vec![(44, at)],
            failure: None,
            adaptive: Default::default(),
        }
    }

    #[test]
    fn a_saved_state_carries_this_version_and_loads_back() {
        let saved = save(&run()).unwrap();
        assert_eq!(saved["state_version"], STATE_VERSION);
        assert_eq!(load(saved).unwrap(), run());
    }

    #[test]
    fn a_state_from_before_the_version_is_migrated() {
        let bare = serde_json::to_value(run()).unwrap();
        assert!(bare.get("state_version").is_none());
        assert_eq!(load(bare).unwrap(), run());
    }

    #[test]
    fn a_state_from_a_newer_release_is_refused_saying_so() {
        let mut saved = save(&run()).unwrap();
        saved["state_version"] = json!(STATE_VERSION + 1);
        let why = load(saved).unwrap_err();
        assert!(why.contains("newer lorafleet"), "{why}");
        assert!(
            why.contains(&format!("state version {}", STATE_VERSION + 1)),
            "{why}"
        );
    }

    #[test]
    fn a_damaged_state_is_refused_naming_what_is_wrong() {
        let why = load(json!({"state_version": "one", "run": {}})).unwrap_err();
        assert!(why.contains("not a number"), "{why}");
        let why = load(json!({"state_version": 1})).unwrap_err();
        assert!(why.contains("no run"), "{why}");
        let why = load(json!({"state_version": 1, "run": {"phase": 3}})).unwrap_err();
        assert!(why.contains("version 1"), "{why}");
    }
}

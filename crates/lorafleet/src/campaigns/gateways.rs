//! Which gateways a campaign's multicast group is bound to. Without gateways ChirpStack sends a
//! multicast frame from every gateway of the tenant; the fewest gateways that heard every
//! campaign device recently reach the same devices with a fraction of the air time. An
//! explicit list (`multicast.gateways`) wins over the choice.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How far back an uplink counts as "heard recently".
pub const RECENT_HOURS: i64 = 24;
/// Up to this many candidate gateways the smallest set is searched exactly; beyond, greedily.
const EXACT_UP_TO: usize = 16;

/// The gateways chosen for a campaign, as the plan shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayChoice {
    /// Gateway IDs the multicast group is bound to (empty: ChirpStack's own choice).
    pub gateways: Vec<String>,
    /// The list was given (`multicast.gateways`) rather than chosen from the uplinks.
    pub explicit: bool,
    /// Devices no gateway heard in the last [`RECENT_HOURS`] hours: no set can be sure to
    /// reach them.
    pub unheard: Vec<String>,
}

/// The gateways for `devices`: `explicit` when given, else the smallest set that heard every
/// device that was heard at all (`heard`: gateways per device).
pub fn choose(
    devices: &[String],
    heard: &BTreeMap<String, BTreeSet<String>>,
    explicit: &[String],
) -> GatewayChoice {
    let unheard: Vec<String> = devices
        .iter()
        .filter(|d| heard.get(*d).is_none_or(|g| g.is_empty()))
        .cloned()
        .collect();
    if !explicit.is_empty() {
        return GatewayChoice {
            gateways: explicit.to_vec(),
            explicit: true,
            unheard,
        };
    }
    let needs: Vec<&BTreeSet<String>> = devices
        .iter()
        .filter_map(|d| heard.get(d))
        .filter(|g| !g.is_empty())
        .collect();
    let candidates: Vec<&String> = needs
        .iter()
        .flat_map(|g| g.iter())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let gateways = if candidates.len() <= EXACT_UP_TO {
        smallest(&candidates, &needs)
    } else {
        greedy(&candidates, &needs)
    };
    GatewayChoice {
        gateways,
        explicit: false,
        unheard,
    }
}

/// Whether a campaign binds its multicast group to gateways: lorafleet's engine on ChirpStack
/// v4, or ChirpStack's own FUOTA given a list (else ChirpStack picks its gateways itself).
pub fn applies(
    config: &crate::config::Config,
    driver: super::DriverKind,
    explicit: &[String],
) -> bool {
    match driver {
        super::DriverKind::Engine => {
            config.network.kind == crate::config::NetworkKind::ChirpstackV4
        }
        super::DriverKind::ChirpstackV4 => !explicit.is_empty(),
        _ => false,
    }
}

/// [`choose`] over what the stored uplinks say (the last [`RECENT_HOURS`] before `now`).
pub async fn for_campaign(
    db: &crate::storage::Db,
    devices: &[String],
    explicit: &[String],
    now: chrono::DateTime<chrono::Utc>,
) -> crate::storage::Result<GatewayChoice> {
    let since = now - chrono::Duration::hours(RECENT_HOURS);
    let heard = crate::storage::uplinks::gateways_heard(db, devices, since).await?;
    Ok(choose(devices, &heard, explicit))
}

/// The smallest subset (first in order among equals) covering every device.
fn smallest(candidates: &[&String], needs: &[&BTreeSet<String>]) -> Vec<String> {
    let n = candidates.len();
    let mut best: Option<u32> = None;
    for mask in 0u32..(1 << n) {
        if best.is_some_and(|b| mask.count_ones() >= b.count_ones()) {
            continue;
        }
        let covers = needs
            .iter()
            .all(|g| (0..n).any(|i| mask & (1 << i) != 0 && g.contains(candidates[i].as_str())));
        if covers {
            best = Some(mask);
        }
    }
    let mask = best.unwrap_or(0);
    (0..n)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| candidates[i].clone())
        .collect()
}

/// Repeatedly the gateway that reaches most of the devices not yet reached.
fn greedy(candidates: &[&String], needs: &[&BTreeSet<String>]) -> Vec<String> {
    let mut left: Vec<&BTreeSet<String>> = needs.to_vec();
    let mut chosen = Vec::new();
    while !left.is_empty() {
        let Some(best) = candidates.iter().max_by_key(|c| {
            (
                left.iter().filter(|g| g.contains(c.as_str())).count(),
                std::cmp::Reverse(**c),
            )
        }) else {
            break;
        };
        chosen.push((*best).clone());
        left.retain(|g| !g.contains(best.as_str()));
    }
    chosen.sort();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(rows: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        rows.iter()
            .map(|(d, g)| (d.to_string(), g.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn devs(d: &[&str]) -> Vec<String> {
        d.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_fewest_gateways_that_heard_every_device() {
        // gw-b alone hears a, b and c; gw-a and gw-c only one each.
        let h = heard(&[
            ("a", &["gw-a", "gw-b"]),
            ("b", &["gw-b"]),
            ("c", &["gw-b", "gw-c"]),
            ("d", &["gw-d"]),
        ]);
        let c = choose(&devs(&["a", "b", "c", "d", "e"]), &h, &[]);
        assert_eq!(c.gateways, vec!["gw-b", "gw-d"]);
        assert!(!c.explicit);
        assert_eq!(c.unheard, vec!["e"]);
    }

    #[test]
    fn the_exact_search_beats_the_greedy_pick_where_they_differ() {
        // Greedy takes gw-big (4 devices) and then needs two more; gw-l + gw-r cover all six.
        let h = heard(&[
            ("1", &["gw-l", "gw-big"]),
            ("2", &["gw-l", "gw-big"]),
            ("3", &["gw-l"]),
            ("4", &["gw-r", "gw-big"]),
            ("5", &["gw-r", "gw-big"]),
            ("6", &["gw-r"]),
        ]);
        let d = devs(&["1", "2", "3", "4", "5", "6"]);
        assert_eq!(choose(&d, &h, &[]).gateways, vec!["gw-l", "gw-r"]);
        let needs: Vec<&BTreeSet<String>> = h.values().collect();
        let cands: Vec<String> = vec!["gw-big".into(), "gw-l".into(), "gw-r".into()];
        let refs: Vec<&String> = cands.iter().collect();
        assert_eq!(greedy(&refs, &needs).len(), 3);
    }

    #[test]
    fn an_explicit_list_wins() {
        let h = heard(&[("a", &["gw-a"])]);
        let c = choose(&devs(&["a", "b"]), &h, &devs(&["gw-x"]));
        assert_eq!(
            c,
            GatewayChoice {
                gateways: vec!["gw-x".into()],
                explicit: true,
                unheard: vec!["b".into()],
            }
        );
        assert_eq!(
            choose(&devs(&["b"]), &h, &[]).gateways,
            Vec::<String>::new()
        );
    }
}

//! Which devices can share one multicast session (issue 8 item 6): a campaign over a mixed
//! fleet runs one session per group, one after the other.
//!
//! A session's fragments go out once, on one FPort, coded with one FEC matrix (TS004 v1 and
//! v2 parity rows differ: a device of the other version would rebuild a wrong image), so its
//! devices must share their TS004 version and FPort. TS005 commands (McGroupSetupReq, the
//! session request) are unicast, each sent in its own device's version and FPort, so they do
//! not split a session.

use serde::{Deserialize, Serialize};

use crate::packages::{Packages, Versioned};

/// What every device of one multicast session speaks alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub fragmentation: Versioned,
}

impl Session {
    /// The session a device with these packages can join.
    pub fn of(p: &Packages) -> Session {
        Session {
            fragmentation: p.fragmentation,
        }
    }

    /// In words for the campaign log: "TS004 v2 on FPort 201".
    pub fn describe(&self) -> String {
        format!(
            "TS004 v{} on FPort {}",
            self.fragmentation.version, self.fragmentation.f_port
        )
    }

    fn order_key(&self) -> (u8, u8) {
        (self.fragmentation.version, self.fragmentation.f_port)
    }
}

/// The session groups of a fleet (`sessions[i]`: device i's) and each device's group (an
/// index into the first). The group with the most devices comes first, ties by TS004 version
/// then FPort, so the order depends on the fleet, never on which device is listed first.
pub fn groups(sessions: &[Session]) -> (Vec<Session>, Vec<usize>) {
    let mut counts: Vec<(Session, usize)> = Vec::new();
    for s in sessions {
        match counts.iter_mut().find(|(g, _)| g == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((*s, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.order_key().cmp(&b.0.order_key())));
    let order: Vec<Session> = counts.into_iter().map(|(s, _)| s).collect();
    let of = sessions
        .iter()
        .map(|s| order.iter().position(|g| g == s).unwrap_or(0))
        .collect();
    (order, of)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(version: u8, f_port: u8) -> Session {
        Session {
            fragmentation: Versioned { version, f_port },
        }
    }

    #[test]
    fn one_stack_is_one_session() {
        let (order, of) = groups(&[s(1, 201), s(1, 201), s(1, 201)]);
        assert_eq!(order, [s(1, 201)]);
        assert_eq!(of, [0, 0, 0]);
        assert_eq!(groups(&[]), (vec![], vec![]));
    }

    #[test]
    fn a_mixed_fleet_is_one_group_per_version_and_port_the_largest_first() {
        let fleet = [
            s(2, 201),
            s(1, 201),
            s(1, 201),
            s(2, 201),
            s(1, 201),
            s(1, 50),
        ];
        let (order, of) = groups(&fleet);
        assert_eq!(order, [s(1, 201), s(2, 201), s(1, 50)]);
        assert_eq!(of, [1, 0, 0, 1, 0, 2]);
    }

    #[test]
    fn equal_groups_are_ordered_by_version_then_port_whoever_comes_first() {
        let a = groups(&[s(2, 201), s(1, 202), s(1, 201)]).0;
        let b = groups(&[s(1, 201), s(1, 202), s(2, 201)]).0;
        assert_eq!(a, [s(1, 201), s(1, 202), s(2, 201)]);
        assert_eq!(a, b);
    }

    #[test]
    fn the_session_is_the_fragmentation_package_alone() {
        let mut p = Packages::defaults(111);
        let v1 = Session::of(&p);
        // TS005 is unicast: another version of it does not make another session...
        p.multicast_setup.version = 2;
        assert_eq!(Session::of(&p), v1);
        // ...another TS004 version or FPort does.
        p.fragmentation.version = 2;
        assert_eq!(Session::of(&p), s(2, 201));
        assert_eq!(Session::of(&p).describe(), "TS004 v2 on FPort 201");
        assert_eq!(
            serde_json::to_value(Session::of(&p)).unwrap(),
            serde_json::json!({"fragmentation": {"version": 2, "f_port": 201}})
        );
    }
}

//! Protobuf `Timestamp`s (ChirpStack's gRPC API and integration events, chirpstack-fuota-server)
//! as `DateTime<Utc>`, with one rule for values out of range.

use chrono::{DateTime, Utc};

/// The two Timestamp types lorafleet receives: prost's (gRPC clients, v3 events) and pbjson's
/// (ChirpStack v4 events, which also decode from JSON).
pub trait ProtoTimestamp {
    fn seconds_nanos(&self) -> (i64, i32);
}

impl ProtoTimestamp for prost_types::Timestamp {
    fn seconds_nanos(&self) -> (i64, i32) {
        (self.seconds, self.nanos)
    }
}

impl ProtoTimestamp for chirpstack_api::pbjson_types::Timestamp {
    fn seconds_nanos(&self) -> (i64, i32) {
        (self.seconds, self.nanos)
    }
}

/// The time a Timestamp names. Nanoseconds outside 0..=999 999 999 (which protobuf forbids, but
/// a sender can still write) are clamped into the second; seconds beyond chrono's range give
/// `None`, like a missing time.
pub fn to_utc<T: ProtoTimestamp>(ts: Option<&T>) -> Option<DateTime<Utc>> {
    let (seconds, nanos) = ts?.seconds_nanos();
    let nanos = u32::try_from(nanos.clamp(0, 999_999_999)).ok()?;
    DateTime::from_timestamp(seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prost(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    #[test]
    fn converts_and_clamps_both_kinds() {
        let t = to_utc(Some(&prost(1_700_000_000, 250_000_000))).unwrap();
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.250+00:00");
        let pbjson = chirpstack_api::pbjson_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 250_000_000,
        };
        assert_eq!(to_utc(Some(&pbjson)), Some(t));
        assert_eq!(
            to_utc(Some(&prost(10, -5))),
            DateTime::from_timestamp(10, 0),
            "negative nanos clamp to the second's start"
        );
        assert_eq!(
            to_utc(Some(&prost(10, 2_000_000_000))),
            DateTime::from_timestamp(10, 999_999_999),
            "nanos past the second clamp to its end"
        );
        assert_eq!(to_utc(Some(&prost(i64::MAX, 0))), None);
        assert_eq!(to_utc::<prost_types::Timestamp>(None), None);
    }
}

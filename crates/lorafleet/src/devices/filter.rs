//! The device list's filters as an operator writes them (`GET /api/devices?model=…`, a
//! campaign's `device_filter`), checked and turned into the storage layer's [`DeviceFilter`].

pub use crate::storage::devices::DeviceFilterParams;
use crate::storage::devices::{self as store, DeviceFilter, StatusFilter};
use crate::storage::{fmt_time, Db};
use chrono::{DateTime, Utc};

/// The parameters of [`DeviceFilterParams`], in the order the API documents them.
pub const PARAMS: [&str; 8] = [
    "search",
    "version",
    "application",
    "model",
    "tag",
    "seen_before",
    "seen_after",
    "status",
];

/// A filter value that does not parse, with the parameter it came from.
#[derive(Debug)]
pub enum FilterError {
    Bad {
        field: &'static str,
        message: String,
    },
    Storage(crate::storage::Error),
}

impl From<crate::storage::Error> for FilterError {
    fn from(e: crate::storage::Error) -> Self {
        FilterError::Storage(e)
    }
}

fn bad(field: &'static str, message: String) -> FilterError {
    FilterError::Bad { field, message }
}

/// A value given, trimmed; None for an absent or blank one.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn time_param(field: &'static str, v: &Option<String>) -> Result<Option<String>, FilterError> {
    given(v)
        .map(|s| {
            crate::storage::parse_time(s).map(fmt_time).ok_or_else(|| {
                bad(
                    field,
                    format!(
                        "{field} must be an RFC 3339 time such as 2026-01-15T00:00:00Z, got {s:?}"
                    ),
                )
            })
        })
        .transpose()
}

/// A version as the operator may write it raw: decimal or 0x hex, with or without " raw".
fn raw_version(s: &str) -> Option<i64> {
    let s = s.trim_end_matches(" raw").trim();
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => s.parse::<u32>().ok()?,
    };
    Some(i64::from(v))
}

/// The raw running versions a `version=` value names: the raw value itself and every version in
/// the fleet that renders as the text under its device's versioning type.
async fn versions(db: &Db, text: &str) -> Result<Vec<i64>, FilterError> {
    let raw = raw_version(text);
    let mut out: Vec<i64> = raw.into_iter().collect();
    for (v, vt) in store::running_versions(db).await? {
        if Some(v) != raw && super::version_dto(v, vt).display.eq_ignore_ascii_case(text) {
            out.push(v);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn tag(v: &Option<String>) -> Result<Vec<(String, String)>, FilterError> {
    let Some(s) = given(v) else {
        return Ok(Vec::new());
    };
    match s.split_once(':') {
        Some((k, value)) if !k.trim().is_empty() && !k.contains('"') => {
            Ok(vec![(k.trim().to_string(), value.trim().to_string())])
        }
        _ => Err(bad(
            "tag",
            format!("tag must be key:value (a tag name without quotes), got {s:?}"),
        )),
    }
}

/// Checks the parameters and resolves them into the storage filter. `online_since`: a device
/// heard since then is online.
pub async fn resolve(
    db: &Db,
    p: &DeviceFilterParams,
    online_since: DateTime<Utc>,
) -> Result<DeviceFilter, FilterError> {
    let status = match given(&p.status) {
        None => None,
        Some("online") => Some(StatusFilter::Online {
            since: fmt_time(online_since),
        }),
        Some("offline") => Some(StatusFilter::Offline {
            since: fmt_time(online_since),
        }),
        Some("never_seen") => Some(StatusFilter::NeverSeen),
        Some(other) => {
            return Err(bad(
                "status",
                format!("status must be online, offline or never_seen, got {other:?}"),
            ))
        }
    };
    let versions = match given(&p.version) {
        Some(text) => Some(versions(db, text).await?),
        None => None,
    };
    Ok(DeviceFilter {
        search: given(&p.search).map(str::to_string),
        versions,
        application: given(&p.application).map(str::to_string),
        model: given(&p.model).map(str::to_string),
        tags: tag(&p.tag)?,
        seen_before: time_param("seen_before", &p.seen_before)?,
        seen_after: time_param("seen_after", &p.seen_after)?,
        status,
    })
}

/// How long a device may stay silent before it reads offline: `devices.offline_after_s`, else
/// three times the uplink interval observed on the most recently heard devices, else an hour.
pub async fn offline_after_s(db: &Db, configured: Option<u64>) -> crate::storage::Result<u64> {
    if let Some(s) = configured {
        return Ok(s);
    }
    let mut gaps = Vec::new();
    let rows = store::recent_uplink_times(db, 20, 20).await?;
    // Newest first per device: the gaps between neighbours of the same device.
    for pair in rows.windows(2) {
        let ((eui_a, a), (eui_b, b)) = (&pair[0], &pair[1]);
        if eui_a != eui_b {
            continue;
        }
        if let (Some(a), Some(b)) = (crate::storage::parse_time(a), crate::storage::parse_time(b)) {
            let gap = (a - b).num_milliseconds() as f64 / 1000.0;
            if gap > 0.0 {
                gaps.push(gap);
            }
        }
    }
    Ok(median_interval(gaps).map_or(3600, |s| (3.0 * s).ceil().max(1.0) as u64))
}

/// The median gap between uplinks; None with fewer than three to go by.
fn median_interval(mut gaps: Vec<f64>) -> Option<f64> {
    if gaps.len() < 3 {
        return None;
    }
    gaps.sort_by(f64::total_cmp);
    Some(gaps[gaps.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_versions_read_decimal_and_hex() {
        assert_eq!(raw_version("66304"), Some(66304));
        assert_eq!(raw_version("0x00010300"), Some(0x10300));
        assert_eq!(raw_version("0x00010300 raw"), Some(0x10300));
        assert_eq!(raw_version("1.3.0"), None);
        assert_eq!(raw_version("4294967296"), None);
    }

    #[test]
    fn tags_are_key_value() {
        assert_eq!(
            tag(&Some("model: tracker".into())).unwrap(),
            vec![("model".to_string(), "tracker".to_string())]
        );
        for wrong in ["model", ":x", "a\"b:c"] {
            assert!(
                matches!(
                    tag(&Some(wrong.into())),
                    Err(FilterError::Bad { field: "tag", .. })
                ),
                "{wrong}"
            );
        }
    }
}

//! Calendar helpers for rendering device timestamps without a date-time dependency.

/// Seconds between the Unix epoch and the GPS epoch (1980-01-06T00:00:00Z).
pub const GPS_EPOCH_UNIX: i64 = 315_964_800;

/// Days since 1970-01-01 of a proleptic Gregorian date.
///
/// Works in 400-year eras (146 097 days each) with years starting on 1 March, so
/// the leap day falls at the end of the year and month lengths follow a fixed
/// pattern that `(153 * month + 2) / 5` reproduces.
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let march_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * march_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719 468 is the day number of 1970-01-01 counted from 0000-03-01.
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month 1..=12, day 1..=31).
const fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

/// Formats Unix seconds as an RFC 3339 UTC timestamp, e.g. `2021-06-08T15:15:10Z`.
pub fn rfc3339_from_unix(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// UTC days (as `days_from_civil`) at whose start a leap second had just been
/// inserted, since the GPS epoch. None have been announced after 2017; a newer
/// one would make later renderings one second late until added here.
const LEAP_DAYS: [i64; 18] = [
    days_from_civil(1981, 7, 1),
    days_from_civil(1982, 7, 1),
    days_from_civil(1983, 7, 1),
    days_from_civil(1985, 7, 1),
    days_from_civil(1988, 1, 1),
    days_from_civil(1990, 1, 1),
    days_from_civil(1991, 1, 1),
    days_from_civil(1992, 7, 1),
    days_from_civil(1993, 7, 1),
    days_from_civil(1994, 7, 1),
    days_from_civil(1996, 1, 1),
    days_from_civil(1997, 7, 1),
    days_from_civil(1999, 1, 1),
    days_from_civil(2006, 1, 1),
    days_from_civil(2009, 1, 1),
    days_from_civil(2012, 7, 1),
    days_from_civil(2015, 7, 1),
    days_from_civil(2017, 1, 1),
];

/// Converts GPS seconds to Unix (UTC) seconds, removing the leap seconds GPS
/// time does not have. An inserted leap second (23:59:60) renders as the
/// following 00:00:00 because Unix time cannot express it.
pub fn gps_to_unix(gps_secs: u32) -> i64 {
    let naive = i64::from(gps_secs) + GPS_EPOCH_UNIX;
    let mut offset = 0;
    for (k, day) in (1i64..).zip(LEAP_DAYS) {
        // In GPS seconds the k-th leap second takes effect k seconds after the
        // UTC midnight it is attached to.
        if naive >= day * 86_400 + k {
            offset = k;
        }
    }
    naive - offset
}

/// Converts Unix (UTC) seconds to GPS seconds modulo 2^32, adding the leap
/// seconds inserted since the GPS epoch (TS003 and TS005 carry GPS time).
pub fn unix_to_gps(unix_secs: i64) -> u32 {
    let leaps = LEAP_DAYS
        .iter()
        .take_while(|&&day| unix_secs >= day * 86_400)
        .count() as i64;
    // The protocols define GPS time modulo 2^32, so the wrap is intended.
    (unix_secs - GPS_EPOCH_UNIX + leaps).rem_euclid(1 << 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_unix(1_623_165_310), "2021-06-08T15:15:10Z");
        assert_eq!(rfc3339_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_from_unix(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339_from_unix(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(days_from_civil(1980, 1, 6) * 86_400, GPS_EPOCH_UNIX);
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(37) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn unix_to_gps_inverts_gps_to_unix() {
        assert_eq!(unix_to_gps(GPS_EPOCH_UNIX), 0);
        let unix_2021 = 1_623_165_310;
        assert_eq!(
            i64::from(unix_to_gps(unix_2021)),
            unix_2021 - GPS_EPOCH_UNIX + 18
        );
        for unix in (GPS_EPOCH_UNIX..2_000_000_000).step_by(86_399 * 17) {
            assert_eq!(gps_to_unix(unix_to_gps(unix)), unix, "{unix}");
        }
    }

    #[test]
    fn gps_leap_seconds() {
        assert_eq!(gps_to_unix(0), GPS_EPOCH_UNIX);
        // Since 2017 GPS runs 18 s ahead of UTC.
        let unix_2021 = 1_623_165_310;
        let gps = u32::try_from(unix_2021 - GPS_EPOCH_UNIX + 18).unwrap();
        assert_eq!(gps_to_unix(gps), unix_2021);
        // Just before the 2017 leap second the offset is still 17.
        let before = days_from_civil(2017, 1, 1) * 86_400 - 1;
        let gps = u32::try_from(before - GPS_EPOCH_UNIX + 17).unwrap();
        assert_eq!(rfc3339_from_unix(gps_to_unix(gps)), "2016-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_from_unix(gps_to_unix(gps + 2)),
            "2017-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339_from_unix(gps_to_unix(gps + 3)),
            "2017-01-01T00:00:01Z"
        );
    }
}

//! Wall-clock time as the API writes it: RFC 3339 in UTC, computed from
//! Unix nanoseconds without a calendar dependency.

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn parts(ns: i64) -> (i64, u32, u32, i64, i64, i64, i64) {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60, frac)
}

/// `2024-01-01T00:00:00Z` (whole seconds).
pub fn rfc3339_secs(ns: i64) -> String {
    let (y, mo, d, h, mi, s, _) = parts(ns);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `2024-01-01T00:00:00.123456789Z` (nanoseconds).
pub fn rfc3339_nanos(ns: i64) -> String {
    let (y, mo, d, h, mi, s, f) = parts(ns);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{f:09}Z")
}

/// `2024-01-01 00:00:00 UTC`, for people.
pub fn human(ns: i64) -> String {
    let (y, mo, d, h, mi, s, _) = parts(ns);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// Parses what [`rfc3339_nanos`] or [`rfc3339_secs`] writes.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = match s.get(19..s.len() - 1)? {
        "" => 0,
        f if f.len() == 10 && f.starts_with('.') => f[1..].parse::<i64>().ok()?,
        _ => return None,
    };
    // days_from_civil
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000_000 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339_secs(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_secs(1_704_067_200_000_000_000),
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339_nanos(1_709_251_199_123_456_789),
            "2024-02-29T23:59:59.123456789Z"
        );
        assert_eq!(human(1_704_067_260_000_000_000), "2024-01-01 00:01:00 UTC");
        for ns in [
            0,
            1_704_067_200_000_000_001,
            1_709_251_199_123_456_789,
            4_102_444_800_000_000_000,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339_nanos(ns)), Some(ns));
        }
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}

//! Figures as the console shows them: sizes, durations, timestamps, rates.

use std::time::Duration;

pub use crate::units::{human_bytes, human_duration};

/// An RFC 3339 time for a timestamp in nanoseconds, "—" for 0 (empty store).
pub fn time(ns: i64) -> String {
    if ns == 0 {
        "—".into()
    } else {
        crate::clock::rfc3339_secs(ns)
    }
}

/// `part / whole` as a percentage with one decimal.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0.0%".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// Objects per second.
pub fn rate(per_second: f64) -> String {
    if per_second >= 10.0 {
        format!("{per_second:.0}/s")
    } else {
        format!("{per_second:.2}/s")
    }
}

/// An uptime such as "3d 4h" or "12m 5s".
pub fn uptime(d: Duration) -> String {
    human_duration(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures() {
        assert_eq!(percent(1, 4), "25.0%");
        assert_eq!(percent(1, 0), "0.0%");
        assert_eq!(rate(0.5), "0.50/s");
        assert_eq!(rate(120.4), "120/s");
        assert_eq!(time(0), "—");
    }
}

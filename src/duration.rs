//! Durations of `since`: `30s`, `15m`, `2h`, `7d`, `1w`, plus Go's
//! combinations (`1h30m`, `1.5h`, `500ms`) that clients of the original
//! send. Errors use the original's texts.

use std::time::Duration;

/// Parses a `since` value. Negative and zero durations are rejected.
pub fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let ns = if let Some(n) = s.strip_suffix('d') {
        n.parse::<f64>()
            .map(|v| v * 86_400e9)
            .map_err(|_| format!("invalid duration: {s}"))?
    } else if let Some(n) = s.strip_suffix('w') {
        n.parse::<f64>()
            .map(|v| v * 7.0 * 86_400e9)
            .map_err(|_| format!("invalid duration: {s}"))?
    } else {
        go_duration(s)?
    };
    if !ns.is_finite() || ns <= 0.0 {
        return Err(format!("invalid duration: {s} (must be positive)"));
    }
    if ns >= i64::MAX as f64 {
        return Err(format!("invalid duration: {s} (too long)"));
    }
    Ok(Duration::from_nanos(ns as u64))
}

/// A duration as `parse` reads it, in its largest whole unit (`1d`, `90m`,
/// `45s`; below a second, `ms`).
pub fn format(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s % n == 0 {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// Go's `time.ParseDuration`, returning nanoseconds.
fn go_duration(s: &str) -> Result<f64, String> {
    let invalid = || format!("time: invalid duration \"{s}\"");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." {
            return Err(invalid());
        }
        let v: f64 = num.parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "" => return Err(format!("time: missing unit in duration \"{s}\"")),
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            u => return Err(format!("time: unknown unit \"{u}\" in duration \"{s}\"")),
        };
        total += v * mult;
    }
    Ok(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_formats_and_go_forms() {
        let d = |s| parse(s).unwrap().as_secs_f64();
        assert_eq!(d("30s"), 30.0);
        assert_eq!(d("15m"), 900.0);
        assert_eq!(d("2h"), 7200.0);
        assert_eq!(d("7d"), 604_800.0);
        assert_eq!(d("1w"), 604_800.0);
        assert_eq!(d("1.5d"), 129_600.0);
        assert_eq!(d("1h30m"), 5400.0);
        assert_eq!(d(" 500ms "), 0.5);
    }

    #[test]
    fn formatting_reads_back() {
        for (text, secs) in [
            ("1d", 86_400.0),
            ("90m", 5400.0),
            ("45s", 45.0),
            ("3h", 10_800.0),
        ] {
            let d = parse(text).unwrap();
            assert_eq!(format(d), text);
            assert_eq!(d.as_secs_f64(), secs);
        }
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(
            format(parse(&format(Duration::from_secs(61))).unwrap()),
            "61s"
        );
    }

    #[test]
    fn errors_use_the_original_texts() {
        assert_eq!(parse("abc").unwrap_err(), "time: invalid duration \"abc\"");
        assert_eq!(
            parse("5").unwrap_err(),
            "time: missing unit in duration \"5\""
        );
        assert_eq!(
            parse("5x").unwrap_err(),
            "time: unknown unit \"x\" in duration \"5x\""
        );
        assert_eq!(parse("xw").unwrap_err(), "invalid duration: xw");
        assert!(parse("-5m").is_err());
        assert!(parse("0s").is_err());
        assert!(parse("").is_err());
        assert!(parse("99999999999w").is_err());
    }
}

//! Number formatting shared by the benchmarks (each uses what it needs).
#![allow(dead_code)]

/// `1234567.8` as `1,234,568`.
pub fn fmt_int(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Rates of several rounds, each as [`fmt_int`], joined by `sep`.
pub fn fmt_rounds(rates: &[f64], sep: &str) -> String {
    rates
        .iter()
        .map(|&r| fmt_int(r))
        .collect::<Vec<_>>()
        .join(sep)
}

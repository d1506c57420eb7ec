//! Percentiles and the printed table.

use std::time::Duration;

/// The `p`-th percentile (0.0..=1.0) of `samples`, sorted in place.
pub fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let n = samples.len();
    if n == 0 {
        return Duration::ZERO;
    }
    samples[((n as f64 * p) as usize).min(n - 1)]
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Microseconds.
pub fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// `a / b` as a ratio, `-` when `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "-".into()
    }
}

/// A markdown table, printed as rows come.
pub struct Table;

impl Table {
    /// Prints the header.
    pub fn start() -> Table {
        println!("| measure | kcred | floor / peer | ratio |");
        println!("| --- | ---: | ---: | ---: |");
        Table
    }

    /// Prints one row.
    pub fn row(&self, measure: &str, kcred: &str, floor: &str, ratio: &str) {
        println!("| {measure} | {kcred} | {floor} | {ratio} |");
    }
}

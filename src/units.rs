//! Numbers for people. Used by every stage that words a size in a message
//! (a limit, a report, progress), so it sits below all of them.

/// Bytes for people: decimal units, one decimal; signed amounts (a saving
/// that is a loss) keep their sign. The one byte formatter of slim.
pub fn human(n: impl Into<i128>) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let n: i128 = n.into();
    let sign = if n < 0 { "-" } else { "" };
    let abs = n.unsigned_abs();
    let mut v = abs as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{sign}{abs} B")
    } else {
        format!("{sign}{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn decimal_units_one_decimal_and_the_sign_kept() {
        assert_eq!(human(0u64), "0 B");
        assert_eq!(human(999u64), "999 B");
        assert_eq!(human(1_500u64), "1.5 KB");
        assert_eq!(human(476_000_000u64), "476.0 MB");
        assert_eq!(human(-2_000_000i64), "-2.0 MB");
        // TB is the largest unit.
        assert_eq!(human(u64::MAX), "18446744.1 TB");
    }
}

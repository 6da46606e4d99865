//! Go `time.ParseDuration` syntax (`1h30m`, `500ms`, `1.5s`), because pgxpool DSN parameters use it.

use std::time::Duration;

const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a non-negative Go duration. The error text is safe to show (it quotes only `s`).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration (examples: 30s, 5m, 1h30m, 500ms)");
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if let Some(magnitude) = rest.strip_prefix('-') {
        return if !magnitude.is_empty() && magnitude.chars().all(|c| c == '0') {
            Ok(Duration::ZERO)
        } else {
            Err(format!("`{s}` is negative; durations must be zero or more"))
        };
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| match unit {
                "" => format!("`{s}` lacks a unit (use ns, us, ms, s, m or h)"),
                u => format!("`{s}` has an unknown unit `{u}` (use ns, us, ms, s, m or h)"),
            })?;
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        // Digits beyond nanosecond precision cannot change the result; ignoring them avoids overflow.
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        let frac: u128 = if frac_digits.is_empty() {
            0
        } else {
            frac_digits.parse().map_err(|_| bad())?
        };
        let frac_nanos = frac * scale / 10u128.pow(frac_digits.len() as u32);
        total = whole
            .checked_mul(scale)
            .and_then(|v| v.checked_add(frac_nanos))
            .and_then(|v| v.checked_add(total))
            .ok_or_else(|| format!("`{s}` is too large"))?;
        rest = after;
    }
    // Go's Duration is an int64 of nanoseconds; keep the same ceiling.
    if total > i64::MAX as u128 {
        return Err(format!("`{s}` is too large"));
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration as p;
    use std::time::Duration;

    #[test]
    fn accepts_go_forms() {
        assert_eq!(p("0"), Ok(Duration::ZERO));
        assert_eq!(p("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(p("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(p("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(p("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(p("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(p(".5h"), Ok(Duration::from_secs(1800)));
        assert_eq!(p("+2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(p("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(p("10\u{b5}s"), Ok(Duration::from_micros(10)));
        assert_eq!(p("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(p("1h1m1s1ms"), Ok(Duration::from_millis(3_661_001)));
    }

    #[test]
    fn rejects_bad_forms_with_reasons() {
        assert!(p("").unwrap_err().contains("not a duration"));
        assert!(p("5").unwrap_err().contains("lacks a unit"));
        assert!(p("5d").unwrap_err().contains("unknown unit `d`"));
        assert!(p("-5s").unwrap_err().contains("negative"));
        assert!(p("s").unwrap_err().contains("not a duration"));
        assert!(p("1.s.").is_err());
        assert!(
            p("99999999999999999999h")
                .unwrap_err()
                .contains("too large")
        );
        assert!(p("3000000h").unwrap_err().contains("too large"));
    }
}

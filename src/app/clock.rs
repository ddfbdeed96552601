//! Wall-clock time as the relay writes it: milliseconds since the Unix epoch, and RFC 3339 text.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A time that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 time: {problem}")]
pub struct BadTime {
    text: String,
    problem: String,
}

/// RFC 3339 -> ms since the epoch (any offset).
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, BadTime> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| BadTime { text: text.to_string(), problem: e.to_string() })?;
    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// ms since the epoch -> RFC 3339 (UTC) with exactly three fractional digits,
/// so that two of them sort as text the way they sort in time (the well-known
/// format drops trailing zeros: "05.1Z" would sort after "05.12Z"); the number
/// itself when out of range.
pub fn rfc3339(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) {
        Ok(t) if (0..=9999).contains(&t.year()) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        _ => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_three_fractional_digits_and_sort_as_text() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_000_005_100), "2026-11-30T00:53:25.100Z");
        assert!(rfc3339(1_796_000_005_100) < rfc3339(1_796_000_005_120), "100 ms before 120 ms");
        assert_eq!(parse_rfc3339_ms(&rfc3339(1_796_000_005_123)), Ok(1_796_000_005_123), "reads back");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string(), "out of range: the number");
    }
}

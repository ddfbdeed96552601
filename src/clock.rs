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

/// ms since the epoch -> RFC 3339 (UTC); the number itself when out of range.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

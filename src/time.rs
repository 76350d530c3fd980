//! Points in time and the evidence window: parsing of `--since/--until` (absolute RFC 3339 or relative durations)
//! and of the timestamps found inside log records (Unix seconds/ms/µs/ns, RFC 3339, `YYYY-MM-DD HH:MM:SS`).

use jiff::{SignedDuration, Timestamp, civil};
use serde::Serialize;

/// The time window a snapshot is restricted to. `None` on either side means unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Window {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl Window {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    pub fn is_unbounded(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{input}` is neither an RFC 3339 time (2026-11-29T02:00:00Z) nor a duration ago (90m, 2h, 1d)")]
pub struct TimeParseError {
    input: String,
}

/// Parses a user-given point in time: `now`, an RFC 3339 timestamp, a date (`2026-11-29`, midnight UTC), or a
/// duration meaning "that long before `now`" (`2h`, `90m`, `1d 6h`).
pub fn parse_point(input: &str, now: Timestamp) -> Result<Timestamp, TimeParseError> {
    let s = input.trim();
    let err = || TimeParseError { input: input.to_string() };
    if s.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    if let Ok(d) = s.parse::<civil::Date>() {
        return jiff::tz::TimeZone::UTC.to_timestamp(d.to_datetime(civil::Time::midnight())).map_err(|_| err());
    }
    let d = parse_duration(s).ok_or_else(err)?;
    now.checked_sub(d).map_err(|_| err())
}

/// Parses a duration such as `30s`, `2m`, `1h30m`, `1d` or ISO 8601 `PT2H`.
pub fn parse_duration(s: &str) -> Option<SignedDuration> {
    if let Ok(d) = s.parse::<SignedDuration>() {
        return Some(d);
    }
    // Days are calendar units in jiff's Span; for a look-back window they are always 24 h.
    let span: jiff::Span = s.parse().ok()?;
    span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).ok()
}

/// Interprets a number found in a log record's time field. Magnitude tells the unit: Caracal's Go services write
/// Unix milliseconds; other producers write seconds, microseconds or nanoseconds.
pub fn timestamp_from_number(n: f64) -> Option<Timestamp> {
    let a = n.abs();
    let nanos = if a >= 1e17 {
        n
    } else if a >= 1e14 {
        n * 1e3
    } else if a >= 1e11 {
        n * 1e6
    } else {
        n * 1e9
    };
    Timestamp::from_nanosecond(nanos as i128).ok()
}

/// Parses a textual timestamp: RFC 3339 / ISO 8601 with an offset, or a civil `YYYY-MM-DD[T ]HH:MM:SS[.f]` taken as
/// UTC, optionally followed by ` UTC`.
pub fn timestamp_from_text(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    let s = s.strip_suffix(" UTC").or_else(|| s.strip_suffix('Z')).unwrap_or(s);
    let dt: civil::DateTime = s.parse().ok()?;
    jiff::tz::TimeZone::UTC.to_timestamp(dt).ok()
}

/// Formats a timestamp for file names: `yyyymmddThhmmssZ`.
pub fn compact_utc(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_points() {
        let now: Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        assert_eq!(parse_point("2h", now).unwrap(), "2026-11-29T10:00:00Z".parse().unwrap());
        assert_eq!(parse_point("1d", now).unwrap(), "2026-11-28T12:00:00Z".parse().unwrap());
        assert_eq!(parse_point("2026-11-29T01:02:03+01:00", now).unwrap(), "2026-11-29T00:02:03Z".parse().unwrap());
        assert_eq!(parse_point("now", now).unwrap(), now);
        assert!(parse_point("yesterday-ish", now).is_err());
    }

    #[test]
    fn numeric_units_by_magnitude() {
        let t: Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        let s = t.as_second() as f64;
        assert_eq!(timestamp_from_number(s), Some(t));
        assert_eq!(timestamp_from_number(s * 1e3), Some(t));
        assert_eq!(timestamp_from_number(s * 1e6), Some(t));
        assert_eq!(timestamp_from_number(s * 1e9), Some(t));
    }

    #[test]
    fn civil_text_is_utc() {
        let t: Timestamp = "2026-11-29T12:00:00.5Z".parse().unwrap();
        assert_eq!(timestamp_from_text("2026-11-29 12:00:00.5 UTC"), Some(t));
        assert_eq!(timestamp_from_text("2026-11-29T12:00:00.5Z"), Some(t));
        assert_eq!(timestamp_from_text("not a time"), None);
    }
}

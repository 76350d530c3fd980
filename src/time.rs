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
    // Whole numbers exactly: milliseconds times 1e6 in floating point are off by some nanoseconds.
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        return timestamp_from_integer(n as i64);
    }
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

/// [`timestamp_from_number`] of a whole number, exactly.
pub fn timestamp_from_integer(n: i64) -> Option<Timestamp> {
    let (i, a) = (i128::from(n), n.unsigned_abs());
    let nanos = if a >= 100_000_000_000_000_000 {
        i
    } else if a >= 100_000_000_000_000 {
        i * 1_000
    } else if a >= 100_000_000_000 {
        i * 1_000_000
    } else {
        i * 1_000_000_000
    };
    Timestamp::from_nanosecond(nanos).ok()
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

/// The value of the first `"<field>": <value>` in a JSON line, without parsing the whole line. A key inside an
/// embedded (escaped) JSON string cannot match: its quotes are preceded by backslashes.
pub fn json_time(line: &[u8], key: &memchr::memmem::Finder<'_>) -> Option<Timestamp> {
    let mut from = 0;
    while let Some(i) = key.find(&line[from..]) {
        let start = from + i + key.needle().len();
        from = from + i + 1;
        let rest = line[start..].trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b":") else { continue };
        let rest = rest.trim_ascii_start();
        return match rest.first()? {
            b'"' => {
                let end = memchr::memchr(b'"', &rest[1..])?;
                timestamp_from_text(std::str::from_utf8(&rest[1..1 + end]).ok()?)
            }
            b'-' | b'0'..=b'9' => {
                let end = rest
                    .iter()
                    .position(|c| !matches!(c, b'0'..=b'9' | b'.' | b'-' | b'+' | b'e' | b'E'))
                    .unwrap_or(rest.len());
                timestamp_from_number(std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?)
            }
            _ => None,
        };
    }
    None
}

/// A timestamp at the start of a text line: one token (RFC 3339) or two or three (`date time [UTC]`).
pub fn leading_time(line: &[u8]) -> Option<Timestamp> {
    let head = std::str::from_utf8(&line[..line.len().min(48)]).ok().or_else(|| {
        // Cut at a char boundary of the first 48 bytes.
        let mut n = line.len().min(48);
        while n > 0 && std::str::from_utf8(&line[..n]).is_err() {
            n -= 1;
        }
        std::str::from_utf8(&line[..n]).ok()
    })?;
    let tokens: Vec<&str> = head.split_ascii_whitespace().take(3).collect();
    let first = tokens.first()?.trim_start_matches('[').trim_end_matches([']', ',']);
    // `date time [UTC]` before `date` alone: a bare date parses too, as midnight.
    if let Some(second) = tokens.get(1) {
        let two = format!("{first} {}", second.trim_end_matches([']', ',']));
        if tokens.get(2) == Some(&"UTC")
            && let Some(t) = timestamp_from_text(&format!("{two} UTC"))
        {
            return Some(t);
        }
        if let Some(t) = timestamp_from_text(&two) {
            return Some(t);
        }
    }
    timestamp_from_text(first)
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

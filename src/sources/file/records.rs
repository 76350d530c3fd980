//! Finding each record's own time in a log line, and deciding whether the line belongs to the window.
//! JSON lines carry it in a field (`time` by default: Unix ms from Caracal's Go services, ISO strings from its
//! Node services, ISO with nanoseconds in Docker's json-file); text lines may start with one. A line without a
//! time (a stack trace, a wrapped message) belongs with the record before it.

use jiff::Timestamp;
use memchr::memmem::Finder;
use serde::{Deserialize, Serialize};

use crate::time::{Window, json_time, leading_time};

/// How a file's records are timed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON lines by their time field, other lines by a leading timestamp.
    #[default]
    Auto,
    /// JSON lines only.
    Json,
    /// Lines starting with a timestamp (`2026-11-29T02:00:00Z ...`, `2026-11-29 02:00:00.123 UTC ...`).
    Text,
    /// No per-record time: the whole file is kept when its modification time allows.
    Whole,
}

/// Decides line by line whether records fall in the window.
pub struct LineFilter {
    window: Window,
    format: Format,
    key: Finder<'static>,
    /// The decision for the last timed record, inherited by untimed lines.
    keep: bool,
}

impl LineFilter {
    pub fn new(window: Window, format: Format, time_field: &str) -> Self {
        let key = Finder::new(format!("\"{time_field}\"").as_bytes()).into_owned();
        Self { window, format, key, keep: true }
    }

    /// Whether filtering can drop anything at all.
    pub fn is_active(&self) -> bool {
        !self.window.is_unbounded() && self.format != Format::Whole
    }

    pub fn keep(&mut self, line: &[u8]) -> bool {
        if !self.is_active() {
            return true;
        }
        if let Some(t) = self.record_time(line) {
            self.keep = self.window.contains(t);
        }
        self.keep
    }

    fn record_time(&self, line: &[u8]) -> Option<Timestamp> {
        let trimmed = line.trim_ascii_start();
        match (self.format, trimmed.first()) {
            (Format::Auto | Format::Json, Some(b'{')) => json_time(trimmed, &self.key),
            (Format::Auto | Format::Text, Some(c)) if c.is_ascii_digit() || *c == b'[' => leading_time(trimmed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        Window {
            since: Some("2026-11-29T10:00:00Z".parse().unwrap()),
            until: Some("2026-11-29T11:00:00Z".parse().unwrap()),
        }
    }

    #[test]
    fn go_pino_and_docker_times() {
        let mut f = LineFilter::new(window(), Format::Auto, "time");
        let inside_ms = "2026-11-29T10:30:00Z".parse::<Timestamp>().unwrap().as_millisecond();
        assert!(f.keep(format!(r#"{{"level":"info","time":{inside_ms},"msg":"x"}}"#).as_bytes()));
        assert!(!f.keep(br#"{"level":30,"time":"2026-11-29T09:59:59.999Z","msg":"x"}"#));
        assert!(f.keep(br#"{"log":"{\"time\":1}\n","stream":"stderr","time":"2026-11-29T10:00:00.123456789Z"}"#));
        assert!(!f.keep(br#"{"time" : "2026-11-29T11:00:00.001Z"}"#));
    }

    #[test]
    fn text_lines_and_continuations() {
        let mut f = LineFilter::new(window(), Format::Auto, "time");
        assert!(!f.keep(b"2026-11-29 09:00:00.000 UTC [12] LOG:  checkpoint"));
        assert!(!f.keep(b"\tcontinued line"));
        assert!(f.keep(b"2026-11-29T10:15:00Z worker started"));
        assert!(f.keep(b"   at frame 2"));
        assert!(!f.keep(b"[2026-11-29T12:00:00Z] late"));
    }

    #[test]
    fn whole_format_and_unbounded_window_keep_everything() {
        let mut f = LineFilter::new(window(), Format::Whole, "time");
        assert!(f.keep(br#"{"time":"2000-01-01T00:00:00Z"}"#));
        let mut f = LineFilter::new(Window::default(), Format::Auto, "time");
        assert!(f.keep(br#"{"time":"2000-01-01T00:00:00Z"}"#));
    }
}

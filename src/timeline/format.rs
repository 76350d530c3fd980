//! The timeline's output formats: preserve's own JSON Lines, CSV, and Timesketch's JSONL import format.

use std::io::{self, Write};

use serde_json::{Map, Value, json};

use super::event::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line: preserve's own format (docs/timeline.md).
    #[default]
    Jsonl,
    /// CSV with a header; `ids` and `details` are JSON objects.
    Csv,
    /// Timesketch's JSONL import: `message`, `datetime`, `timestamp_desc`, `timestamp`, plus attributes.
    Timesketch,
}

const CSV_HEADER: [&str; 12] = [
    "time",
    "collector",
    "path",
    "line",
    "record",
    "service",
    "instance",
    "kind",
    "level",
    "message",
    "ids",
    "details",
];

/// Writes events in one format.
pub struct Writer<W: Write> {
    format: Format,
    out: Option<W>,
    csv: Option<csv::Writer<W>>,
}

impl<W: Write> Writer<W> {
    pub fn new(format: Format, out: W) -> io::Result<Self> {
        if format == Format::Csv {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record(CSV_HEADER).map_err(io::Error::other)?;
            return Ok(Self { format, out: None, csv: Some(csv) });
        }
        Ok(Self { format, out: Some(out), csv: None })
    }

    pub fn write(&mut self, e: &Event) -> io::Result<()> {
        match (self.format, &mut self.out, &mut self.csv) {
            (Format::Jsonl, Some(out), _) => {
                serde_json::to_writer(&mut *out, e)?;
                out.write_all(b"\n")
            }
            (Format::Timesketch, Some(out), _) => {
                serde_json::to_writer(&mut *out, &timesketch(e))?;
                out.write_all(b"\n")
            }
            (Format::Csv, _, Some(csv)) => {
                let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
                let ids = if e.ids.is_empty() { String::new() } else { serde_json::to_string(&e.ids)? };
                let details = if e.details.is_empty() { String::new() } else { serde_json::to_string(&e.details)? };
                csv.write_record([
                    e.time.to_string(),
                    cell(&e.source.collector),
                    cell(&e.source.path),
                    n(e.source.line),
                    n(e.source.record),
                    cell(&e.service),
                    cell(&e.instance),
                    cell(&e.kind),
                    cell(e.level.as_deref().unwrap_or("")),
                    cell(&e.message),
                    ids,
                    details,
                ])
                .map_err(io::Error::other)
            }
            _ => Err(io::Error::other("timeline writer used after it finished")),
        }
    }

    pub fn finish(mut self) -> io::Result<()> {
        if let Some(mut csv) = self.csv.take() {
            csv.flush()?;
        }
        if let Some(mut out) = self.out.take() {
            out.flush()?;
        }
        Ok(())
    }
}

/// A CSV cell that a spreadsheet will not take for a formula: evidence is written by an attacker, and a cell
/// starting with `=`, `+`, `-`, `@`, a tab or a carriage return is run by Excel and LibreOffice as one. Such a cell
/// is written with a leading `'` (OWASP's advice), which spreadsheets show as text and hide.
fn cell(s: &str) -> String {
    match s.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

/// What an event's time is, in Timesketch's words.
pub fn timestamp_desc(kind: &str) -> String {
    match kind {
        "log" => "Log Time".into(),
        "audit.event" | "audit.admin_event" => "Event Occurred".into(),
        "stream.entry" => "Stream Entry Added".into(),
        "stream.dead_letter" => "Dead Letter Added".into(),
        "stream.pending" => "Last Delivered".into(),
        "alert.firing" => "Alert Started".into(),
        "alert.resolved" => "Alert Ended".into(),
        "collector.run" => "Collection Started".into(),
        "policy_set.activated" => "Policy Set Activated".into(),
        other => {
            let mut words = other.replace(['.', '_'], " ");
            if let Some(first) = words.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            words
        }
    }
}

/// One event as a Timesketch import line: the three fields it needs, the time in microseconds, and every other
/// fact as an attribute of its own name (ids as `request_id`, ... so Timesketch's search finds `request_id:...`).
fn timesketch(e: &Event) -> Value {
    let mut m = Map::new();
    m.insert("message".into(), json!(e.message));
    m.insert("datetime".into(), json!(e.time.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()));
    m.insert("timestamp_desc".into(), json!(timestamp_desc(&e.kind)));
    m.insert("timestamp".into(), json!(e.time.as_microsecond()));
    m.insert("data_type".into(), json!(format!("preserve:{}", e.kind)));
    m.insert("service".into(), json!(e.service));
    m.insert("instance".into(), json!(e.instance));
    m.insert("kind".into(), json!(e.kind));
    if let Some(l) = &e.level {
        m.insert("level".into(), json!(l));
    }
    m.insert("source_collector".into(), json!(e.source.collector));
    m.insert("source_path".into(), json!(e.source.path));
    if let Some(l) = e.source.line {
        m.insert("source_line".into(), json!(l));
    }
    if let Some(r) = e.source.record {
        m.insert("source_record".into(), json!(r));
    }
    for (k, v) in e.ids.iter().chain(e.details.iter()) {
        // A detail named like a field above keeps its value under a prefixed name.
        let key = if m.contains_key(k) { format!("detail_{k}") } else { k.to_string() };
        m.entry(key).or_insert_with(|| json!(v));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::event::{Fields, Source};

    fn ev() -> Event {
        Event {
            time: "2026-12-05T02:41:00.123456789Z".parse().unwrap(),
            source: Source {
                collector: "audit-logs".into(),
                path: "data/audit-logs/x.log".into(),
                line: Some(3),
                record: None,
            },
            service: "audit".into(),
            instance: "caracal-audit-1".into(),
            kind: "log".into(),
            level: Some("error".into()),
            message: "=HYPERLINK(\"http://evil\")".into(),
            ids: Fields::from([("request_id", "req-1")]),
            details: Fields::from([("message", "clash")]),
        }
    }

    fn written(format: Format) -> String {
        let mut out = Vec::new();
        let mut w = Writer::new(format, &mut out).unwrap();
        w.write(&ev()).unwrap();
        w.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn jsonl_round_trips() {
        let text = written(Format::Jsonl);
        let back: Event = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(back, ev());
        assert!(text.contains("\"time\":\"2026-12-05T02:41:00.123456789Z\""), "{text}");
    }

    #[test]
    fn csv_cells_never_start_a_formula() {
        let text = written(Format::Csv);
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), CSV_HEADER.join(","));
        let row = lines.next().unwrap();
        assert!(row.contains("\"'=HYPERLINK(\"\"http://evil\"\")\""), "{row}");
        assert!(row.contains("\"{\"\"request_id\"\":\"\"req-1\"\"}\""), "{row}");
    }

    #[test]
    fn timesketch_lines_have_its_fields() {
        let v: Value = serde_json::from_str(written(Format::Timesketch).trim_end()).unwrap();
        assert_eq!(v["datetime"], "2026-12-05T02:41:00.123456+00:00");
        assert_eq!(v["timestamp"], ev().time.as_microsecond());
        assert_eq!(v["timestamp_desc"], "Log Time");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["message"], "=HYPERLINK(\"http://evil\")", "the message is the record's");
        assert_eq!(v["detail_message"], "clash");
    }
}

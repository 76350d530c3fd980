//! The timeline's output formats: preserve's own JSON Lines, CSV, and Timesketch's JSONL import format.

use std::{
    io::{self, Write},
    sync::Arc,
};

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

/// Encodes events in one format, each on its own: what the merge sorts and spills is an event's encoded bytes.
pub struct Encoder {
    format: Format,
    /// The names an artifact's events share, escaped once: collector, path, service, instance.
    names: [Escaped; 4],
    /// CSV's quoting, into a buffer each record is taken from.
    csv: Option<(csv::Writer<Shared>, Shared)>,
}

/// A buffer the CSV writer writes into and the encoder takes from (the writer gives no access to its own).
#[derive(Clone, Default)]
struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Encoder {
    pub fn new(format: Format) -> Self {
        let csv = (format == Format::Csv).then(|| {
            let buffer = Shared::default();
            (csv::Writer::from_writer(buffer.clone()), buffer)
        });
        Self { format, names: Default::default(), csv }
    }

    /// What the output starts with: CSV's header row, nothing for the others.
    pub fn header(&mut self) -> io::Result<Vec<u8>> {
        match &mut self.csv {
            Some((csv, buffer)) => {
                csv.write_record(CSV_HEADER).map_err(io::Error::other)?;
                csv.flush()?;
                Ok(std::mem::take(&mut *buffer.0.borrow_mut()))
            }
            None => Ok(Vec::new()),
        }
    }

    /// Appends `e`, with its line end, to `out`.
    pub fn encode(&mut self, e: &Event, out: &mut Vec<u8>) -> io::Result<()> {
        match (self.format, &mut self.csv) {
            (Format::Jsonl, _) => self.jsonl(e, out)?,
            (Format::Timesketch, _) => {
                serde_json::to_writer(&mut *out, &timesketch(e))?;
                out.push(b'\n');
            }
            (Format::Csv, Some((csv, buffer))) => {
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
                .map_err(io::Error::other)?;
                csv.flush()?;
                let mut written = buffer.0.borrow_mut();
                out.extend_from_slice(&written);
                written.clear();
            }
            (Format::Csv, None) => return Err(io::Error::other("a CSV encoder without its writer")),
        }
        Ok(())
    }

    /// preserve's own line: what `serde_json` makes of [`Event`] (a test holds the two equal), written field by field
    /// so that the names an artifact's events share are escaped once, not once per event.
    fn jsonl(&mut self, e: &Event, out: &mut Vec<u8>) -> io::Result<()> {
        let [collector, path, service, instance] = &mut self.names;
        out.extend_from_slice(b"{\"time\":\"");
        write!(out, "{}", e.time)?;
        out.extend_from_slice(b"\",\"source\":{\"collector\":");
        out.extend_from_slice(collector.of(&e.source.collector)?);
        out.extend_from_slice(b",\"path\":");
        out.extend_from_slice(path.of(&e.source.path)?);
        if let Some(l) = e.source.line {
            write!(out, ",\"line\":{l}")?;
        }
        if let Some(r) = e.source.record {
            write!(out, ",\"record\":{r}")?;
        }
        out.extend_from_slice(b"},\"service\":");
        out.extend_from_slice(service.of(&e.service)?);
        out.extend_from_slice(b",\"instance\":");
        out.extend_from_slice(instance.of(&e.instance)?);
        out.extend_from_slice(b",\"kind\":");
        serde_json::to_writer(&mut *out, &*e.kind)?;
        if let Some(level) = &e.level {
            out.extend_from_slice(b",\"level\":");
            serde_json::to_writer(&mut *out, &**level)?;
        }
        out.extend_from_slice(b",\"message\":");
        serde_json::to_writer(&mut *out, &e.message)?;
        out.extend_from_slice(b",\"ids\":");
        serde_json::to_writer(&mut *out, &e.ids)?;
        if !e.details.is_empty() {
            out.extend_from_slice(b",\"details\":");
            serde_json::to_writer(&mut *out, &e.details)?;
        }
        out.extend_from_slice(b"}\n");
        Ok(())
    }
}

/// A name as a JSON string, kept while the events it is written for share it.
#[derive(Default)]
struct Escaped {
    name: Option<Arc<str>>,
    json: Vec<u8>,
}

impl Escaped {
    fn of(&mut self, name: &Arc<str>) -> io::Result<&[u8]> {
        let same = self.name.as_ref().is_some_and(|n| Arc::ptr_eq(n, name) || **n == **name);
        if !same {
            self.json.clear();
            serde_json::to_writer(&mut self.json, &**name)?;
            self.name = Some(name.clone());
        }
        Ok(&self.json)
    }
}

/// Writes events in one format to `out`.
pub struct Writer<W: Write> {
    pub encoder: Encoder,
    pub out: W,
    scratch: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// A writer that has written the format's header.
    pub fn new(format: Format, mut out: W) -> io::Result<Self> {
        let mut encoder = Encoder::new(format);
        out.write_all(&encoder.header()?)?;
        Ok(Self { encoder, out, scratch: Vec::new() })
    }

    pub fn write(&mut self, e: &Event) -> io::Result<()> {
        self.scratch.clear();
        self.encoder.encode(e, &mut self.scratch)?;
        self.out.write_all(&self.scratch)
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()
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
    fn jsonl_is_what_serde_makes_of_an_event() {
        let mut enc = Encoder::new(Format::Jsonl);
        let mut bare = ev();
        bare.source.line = None;
        bare.source.record = Some(7);
        bare.level = None;
        bare.ids = Fields::default();
        bare.details = Fields::default();
        bare.service = "a \"quoted\" \u{1} name".into();
        // Twice each: the second is written from the names kept from the first.
        for e in [ev(), ev(), bare.clone(), bare] {
            let mut out = Vec::new();
            enc.encode(&e, &mut out).unwrap();
            let mut expected = serde_json::to_vec(&e).unwrap();
            expected.push(b'\n');
            assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(expected).unwrap());
        }
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

//! Turning an artifact into events. preserve wrote every artifact, so its shape follows from its collector's kind
//! and its path: Docker json-file and kubelet logs, other log files, CSV tables, Redis stream entries and pending
//! lists. Everything else (HTTP bodies, DDL, configuration, analysis) has no time of its own and gives no events.
//!
//! The bytes are the evidence, written by whoever attacked the system: every line and record is bounded
//! ([`LINE_LIMIT`]), anything unreadable is counted and skipped, never fatal.

pub mod json;
mod logs;
mod manifest;
mod streams;
mod tables;

use std::io::{self, BufRead};

use jiff::Timestamp;

pub use manifest::from_manifest;

use super::event::Event;

/// Where an extractor's events go. It is asked first, with what is cheap to know of a record (its time, service
/// and kind), whether it wants the event whole: building one (parsing the record, its ids and message) is most of
/// an extractor's work, and the report's digest needs it only for the records near the alert.
pub trait Sink {
    /// Whether the record at `time` of `service` and `kind` is wanted as a whole [`Event`] (then given to
    /// [`Sink::take`]); `false` ends the record here.
    fn wants(&mut self, time: Timestamp, service: &str, kind: &str) -> bool;
    fn take(&mut self, event: Event);
}

/// Any function of events is a sink that wants every one.
impl<F: FnMut(Event)> Sink for F {
    fn wants(&mut self, _: Timestamp, _: &str, _: &str) -> bool {
        true
    }
    fn take(&mut self, event: Event) {
        self(event)
    }
}

/// The longest line or CSV record read; a longer one is skipped and counted.
pub const LINE_LIMIT: usize = 1 << 20;

/// An artifact as the manifest describes it.
#[derive(Debug, Clone, Copy)]
pub struct Artifact<'a> {
    /// Its collector's name and source kind.
    pub collector: &'a str,
    pub kind: &'a str,
    /// Its path in the bag, `data/<collector>/...`.
    pub path: &'a str,
    /// How it was redacted as written (`text:docker-json`, ...), from the manifest.
    pub redaction: Option<&'a str>,
    /// When its collector started: the moment relative times in it (a pending entry's idle time) count from.
    pub collected_at: Option<Timestamp>,
}

/// What an artifact holds, as far as the timeline is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Docker json-file lines (`{"log": ..., "time": ...}`): the record's own time, else Docker's.
    Docker { service: String, instance: String },
    /// Kubernetes pod logs, each line after the kubelet's timestamp.
    Kubelet { service: String, instance: String },
    /// Any other log file: JSON lines by their time field, text lines by a leading timestamp.
    Lines { service: String, instance: String },
    /// A table or query result exported as CSV.
    Table { table: String },
    /// A Redis stream's entries (`entries.jsonl`).
    Entries { stream: String },
    /// A consumer group's pending entries (`pending/<group>.jsonl`).
    Pending { stream: String, group: String },
}

/// What could not become an event, for the summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Lines or rows with no time to place them by (continuation lines, rows with no time column).
    pub untimed: u64,
    /// Lines or records longer than [`LINE_LIMIT`], skipped.
    pub oversize: u64,
    /// Lines or records that were not the shape their artifact promised (not JSON, not CSV).
    pub malformed: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.untimed += other.untimed;
        self.oversize += other.oversize;
        self.malformed += other.malformed;
    }
}

/// The shape of `a`, or `None` when it gives no events.
pub fn shape(a: &Artifact<'_>) -> Option<Shape> {
    let rest = a.path.strip_prefix("data/")?.strip_prefix(a.collector)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let file = *parts.last()?;
    let owned =
        |i: usize, or: &str| parts.get(i).filter(|_| parts.len() > i + 1).map_or(or.to_string(), |s| s.to_string());
    match a.kind {
        "file" | "kubernetes" if a.redaction == Some("text:docker-json") || is_docker_log(file) => {
            Some(Shape::Docker { service: owned(0, a.collector), instance: owned(1, file) })
        }
        "kubernetes" if file.ends_with(".log") => {
            Some(Shape::Kubelet { service: owned(0, a.collector), instance: owned(1, file) })
        }
        "file" if is_text_log(file) => {
            Some(Shape::Lines { service: a.collector.to_string(), instance: file.to_string() })
        }
        "postgres" if file.ends_with(".csv") && matches!(parts.first(), Some(&"tables") | Some(&"queries")) => {
            let stem = file.trim_end_matches(".csv");
            // `public.audit_events` → `audit_events`: Caracal's tables are all in `public`.
            let table = stem.strip_prefix("public.").unwrap_or(stem);
            Some(Shape::Table { table: table.to_string() })
        }
        "redis" => match parts.as_slice() {
            ["streams", stream, "entries.jsonl"] => Some(Shape::Entries { stream: stream.to_string() }),
            ["streams", stream, "pending", group] if group.ends_with(".jsonl") => {
                Some(Shape::Pending { stream: stream.to_string(), group: group.trim_end_matches(".jsonl").to_string() })
            }
            _ => None,
        },
        _ => None,
    }
}

fn is_docker_log(file: &str) -> bool {
    file.ends_with("-json.log")
        || file.rsplit_once("-json.log.").is_some_and(|(_, n)| n.chars().all(|c| c.is_ascii_digit()))
}

fn is_text_log(file: &str) -> bool {
    let lower = file.to_ascii_lowercase();
    [".log", ".ndjson", ".jsonl", ".json.log", ".txt", ".out", ".err"].iter().any(|s| lower.ends_with(s))
        || lower.rsplit_once(".log.").is_some_and(|(_, n)| n.chars().all(|c| c.is_ascii_digit()))
        || lower == "syslog"
        || lower == "messages"
}

/// Reads the events of one artifact of shape `shape` from `data`, handing each to `emit`.
pub fn extract(
    shape: &Shape,
    artifact: &Artifact<'_>,
    data: &mut dyn BufRead,
    tally: &mut Tally,
    emit: &mut dyn Sink,
) -> io::Result<()> {
    match shape {
        Shape::Docker { service, instance } => logs::docker(artifact, service, instance, data, tally, emit),
        Shape::Kubelet { service, instance } => logs::kubelet(artifact, service, instance, data, tally, emit),
        Shape::Lines { service, instance } => logs::lines(artifact, service, instance, data, tally, emit),
        Shape::Table { table } => tables::table(artifact, table, data, tally, emit),
        Shape::Entries { stream } => streams::entries(artifact, stream, data, tally, emit),
        Shape::Pending { stream, group } => streams::pending(artifact, stream, group, data, tally, emit),
    }
}

/// Calls `each` with every line of `data` (1-based number, bytes without the line end); a line longer than
/// [`LINE_LIMIT`] is skipped and counted in `tally.oversize`, never held.
pub(crate) fn each_line(
    reader: &mut dyn BufRead,
    tally: &mut Tally,
    mut each: impl FnMut(u64, &[u8]),
) -> io::Result<()> {
    let mut held: Vec<u8> = Vec::new();
    let mut skipping = false;
    let mut number = 0u64;
    let strip = |l: &[u8]| -> usize { if l.last() == Some(&b'\r') { l.len() - 1 } else { l.len() } };
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            if !held.is_empty() && !skipping {
                number += 1;
                let n = strip(&held);
                each(number, &held[..n]);
            }
            return Ok(());
        }
        match memchr::memchr(b'\n', buf) {
            Some(i) => {
                number += 1;
                if skipping {
                    skipping = false;
                } else if held.len() + i > LINE_LIMIT {
                    held = Vec::new();
                    tally.oversize += 1;
                } else if held.is_empty() {
                    let n = strip(&buf[..i]);
                    each(number, &buf[..n]);
                } else {
                    held.extend_from_slice(&buf[..i]);
                    let n = strip(&held);
                    each(number, &held[..n]);
                    held.clear();
                }
                reader.consume(i + 1);
            }
            None => {
                let n = buf.len();
                if !skipping {
                    if held.len() + n > LINE_LIMIT {
                        skipping = true;
                        held = Vec::new();
                        tally.oversize += 1;
                    } else {
                        held.extend_from_slice(buf);
                    }
                }
                reader.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact<'a>(collector: &'a str, kind: &'a str, path: &'a str) -> Artifact<'a> {
        Artifact { collector, kind, path, redaction: None, collected_at: None }
    }

    #[test]
    fn shapes_follow_from_kind_and_path() {
        let s = |c, k, p| shape(&artifact(c, k, p));
        assert_eq!(
            s("audit-logs", "file", "data/audit-logs/audit/caracal-audit-1/abc-json.log.2"),
            Some(Shape::Docker { service: "audit".into(), instance: "caracal-audit-1".into() })
        );
        assert_eq!(
            s("gateway-logs", "kubernetes", "data/gateway-logs/gateway/caracal-gateway-7d9f-0/gateway.previous.log"),
            Some(Shape::Kubelet { service: "gateway".into(), instance: "caracal-gateway-7d9f-0".into() })
        );
        assert_eq!(
            s("postgres-audit", "postgres", "data/postgres-audit/tables/public.audit_events.csv"),
            Some(Shape::Table { table: "audit_events".into() })
        );
        assert_eq!(
            s("redis-dlq", "redis", "data/redis-dlq/streams/caracal.audit.events.dlq/entries.jsonl"),
            Some(Shape::Entries { stream: "caracal.audit.events.dlq".into() })
        );
        assert_eq!(
            s("redis-streams", "redis", "data/redis-streams/streams/s/pending/gateway-revocation:pod-0.jsonl"),
            Some(Shape::Pending { stream: "s".into(), group: "gateway-revocation:pod-0".into() })
        );
        assert_eq!(s("postgres-audit", "postgres", "data/postgres-audit/tables/public.audit_events.ddl.sql"), None);
        assert_eq!(s("audit-http", "http", "data/audit-http/h/metrics.body"), None);
        assert_eq!(s("redis-dlq", "redis", "data/redis-dlq/streams/x/xinfo.json"), None);
        // A path that is not under its collector's folder is not trusted to be anything.
        assert_eq!(s("audit-logs", "file", "data/other/audit/caracal-audit-1/abc-json.log"), None);
    }

    #[test]
    fn lines_are_numbered_bounded_and_crlf_stripped() {
        let mut data = Vec::new();
        data.extend_from_slice(b"one\r\n");
        data.extend(std::iter::repeat_n(b'x', LINE_LIMIT + 10));
        data.extend_from_slice(b"\nthree\nfour");
        let mut seen = Vec::new();
        let mut tally = Tally::default();
        // Each line's number, length and first bytes (a failure must not print a megabyte).
        each_line(&mut &data[..], &mut tally, |n, l| {
            seen.push((n, l.len(), String::from_utf8_lossy(&l[..l.len().min(8)]).into_owned()))
        })
        .unwrap();
        assert_eq!(seen, vec![(1, 3, "one".into()), (3, 5, "three".into()), (4, 4, "four".into())]);
        assert_eq!(tally.oversize, 1);
    }
}

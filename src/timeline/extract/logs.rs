//! Log lines: Docker json-file, kubelet-prefixed pod logs, other log files. A line that is a JSON record (Caracal's
//! zerolog and pino lines) gives its own time, message, level, service, host and ids; a text line its leading
//! timestamp and the text.

use std::{borrow::Cow, io::BufRead, sync::Arc};

use jiff::Timestamp;
use serde::Deserialize;

use super::{
    Artifact, Sink, Tally, each_line,
    json::{Leaf, Record},
};
use crate::{
    time::{leading_time, timestamp_from_integer, timestamp_from_number, timestamp_from_text},
    timeline::event::{Event, Fields, MESSAGE_LIMIT, Source, cut},
};

/// Fields a JSON log record keeps its time in, by preference.
const TIME_FIELDS: [&str; 6] = ["time", "ts", "timestamp", "@timestamp", "occurred_at", "received_at"];
const MESSAGE_FIELDS: [&str; 3] = ["msg", "message", "event"];
/// Facts of a log record shown beside its message.
const DETAIL_FIELDS: [&str; 6] = ["reason", "error", "err", "status", "stream", "path"];

#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
}

pub fn docker(
    a: &Artifact<'_>,
    service: &str,
    instance: &str,
    data: &mut dyn BufRead,
    tally: &mut Tally,
    emit: &mut dyn Sink,
) -> std::io::Result<()> {
    let mut local = Tally::default();
    let names = Names::of(a, service, instance);
    let outer_time = memchr::memmem::Finder::new(b"\"time\"");
    let inner = Inner::new();
    each_line(data, tally, |n, line| {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        // First what is cheap: the record's own time and service as they stand, escaped, in Docker's `log` string,
        // and Docker's time; the line is parsed only when its event is wanted whole.
        let docker_time = crate::time::json_time(line, &outer_time);
        // Read in place only from a flat record (two `{` in the line: Docker's and the record's); a record with
        // objects inside may have a `time` in one of them, which is not its own: such a line is parsed first.
        if memchr::memchr_iter(b'{', line).nth(2).is_none() {
            let Some(time) = inner.time(line).or(docker_time) else {
                local.untimed += 1;
                return;
            };
            if !emit.wants(time, inner.service(line).unwrap_or(service), "log") {
                return;
            }
        }
        let Ok(d) = serde_json::from_slice::<DockerLine<'_>>(line) else {
            local.malformed += 1;
            return;
        };
        match record(&names, n, &d.log, docker_time) {
            Some(e) if memchr::memchr_iter(b'{', line).nth(2).is_none() => emit.take(e),
            Some(e) if emit.wants(e.time, &e.service, &e.kind) => emit.take(e),
            Some(_) => {}
            None => local.untimed += 1,
        }
    })?;
    tally.add(local);
    Ok(())
}

/// Finds fields of the JSON record inside a Docker line's `log` string without unescaping it: there its keys are
/// `\"time\":`; a key of a string nested in it would be escaped twice (`\\\"time\\\":`), so is not matched.
struct Inner {
    times: Vec<memchr::memmem::Finder<'static>>,
    service: memchr::memmem::Finder<'static>,
}

impl Inner {
    fn new() -> Self {
        let key = |k: &str| memchr::memmem::Finder::new(format!("\\\"{k}\\\":").as_bytes()).into_owned();
        Self { times: TIME_FIELDS.iter().map(|k| key(k)).collect(), service: key("service") }
    }

    /// The value after the first unescaped-once occurrence of `key`: a number, or an escaped string's content.
    fn value<'l>(key: &memchr::memmem::Finder<'_>, line: &'l [u8]) -> Option<&'l [u8]> {
        let mut from = 0;
        while let Some(i) = key.find(&line[from..]) {
            let at = from + i;
            from = at + 1;
            // `\\\"key` (escaped twice, a string's content) is not a key of the record.
            if at > 0 && line[at - 1] == b'\\' {
                continue;
            }
            let rest = line[at + key.needle().len()..].trim_ascii_start();
            if let Some(s) = rest.strip_prefix(b"\\\"") {
                let end = memchr::memmem::find(s, b"\\\"")?;
                return Some(&s[..end]);
            }
            let end = rest
                .iter()
                .position(|c| !matches!(c, b'0'..=b'9' | b'.' | b'-' | b'+' | b'e' | b'E'))
                .unwrap_or(rest.len());
            return (end > 0).then(|| &rest[..end]);
        }
        None
    }

    fn time(&self, line: &[u8]) -> Option<Timestamp> {
        self.times.iter().find_map(|k| {
            let v = std::str::from_utf8(Self::value(k, line)?).ok()?;
            match v.as_bytes().first()? {
                b'0'..=b'9' | b'-' if !v.contains(['T', ':']) => match v.parse::<i64>() {
                    Ok(i) => timestamp_from_integer(i),
                    Err(_) => timestamp_from_number(v.parse().ok()?),
                },
                _ => timestamp_from_text(v),
            }
        })
    }

    fn service<'l>(&self, line: &'l [u8]) -> Option<&'l str> {
        let v = Self::value(&self.service, line)?;
        std::str::from_utf8(v).ok().filter(|s| !s.is_empty() && s.len() <= 64 && !s.contains('\\'))
    }
}

pub fn kubelet(
    a: &Artifact<'_>,
    service: &str,
    instance: &str,
    data: &mut dyn BufRead,
    tally: &mut Tally,
    emit: &mut dyn Sink,
) -> std::io::Result<()> {
    text_lines(&Names::of(a, service, instance), data, tally, emit, |text| {
        let (stamp, rest) = text.split_once(' ').unwrap_or((text, ""));
        match stamp.parse::<Timestamp>() {
            Ok(t) => (Some(t), rest),
            Err(_) => (None, text),
        }
    })
}

pub fn lines(
    a: &Artifact<'_>,
    service: &str,
    instance: &str,
    data: &mut dyn BufRead,
    tally: &mut Tally,
    emit: &mut dyn Sink,
) -> std::io::Result<()> {
    text_lines(&Names::of(a, service, instance), data, tally, emit, |text| {
        let trimmed = text.trim_start();
        (if trimmed.starts_with('{') { None } else { leading_time(trimmed.as_bytes()) }, trimmed)
    })
}

/// Lines parsed whole, each a record: `split` gives the time its carrier put before it (the kubelet's, a leading
/// timestamp) and the record as the service wrote it.
fn text_lines(
    names: &Names,
    data: &mut dyn BufRead,
    tally: &mut Tally,
    emit: &mut dyn Sink,
    split: impl for<'t> Fn(&'t str) -> (Option<Timestamp>, &'t str),
) -> std::io::Result<()> {
    let mut local = Tally::default();
    each_line(data, tally, |n, line| {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (outer, content) = split(&text);
        match record(names, n, content, outer) {
            Some(e) if emit.wants(e.time, &e.service, &e.kind) => emit.take(e),
            Some(_) => {}
            None => local.untimed += 1,
        }
    })?;
    tally.add(local);
    Ok(())
}

/// The names every event of an artifact shares.
pub(super) struct Names {
    pub collector: Arc<str>,
    pub path: Arc<str>,
    pub service: Arc<str>,
    pub instance: Arc<str>,
}

impl Names {
    pub fn of(a: &Artifact<'_>, service: &str, instance: &str) -> Self {
        Self { collector: a.collector.into(), path: a.path.into(), service: service.into(), instance: instance.into() }
    }
}

fn record(n: &Names, line: u64, content: &str, outer: Option<Timestamp>) -> Option<Event> {
    let content = content.trim_end();
    let json = content.starts_with('{').then(|| Record::parse(content)).flatten();
    let own = json.as_ref().and_then(json_time);
    let time = own.or(outer)?;
    let mut e = Event {
        time,
        source: Source { collector: n.collector.clone(), path: n.path.clone(), line: Some(line), record: None },
        service: n.service.clone(),
        instance: n.instance.clone(),
        kind: Cow::Borrowed("log"),
        level: None,
        message: String::new(),
        ids: Fields::default(),
        details: Fields::default(),
    };
    match json {
        Some(map) => {
            if let Some(s) = map.get("service").and_then(Leaf::as_str).filter(|s| !s.is_empty() && s.len() <= 64)
                && *s != *e.service
            {
                e.service = s.into();
            }
            if let Some(h) = map.get("hostname").and_then(Leaf::as_str).filter(|s| !s.is_empty() && s.len() <= 128)
                && *h != *e.instance
            {
                e.instance = h.into();
            }
            e.level = map.get("level").and_then(level);
            let message = MESSAGE_FIELDS.iter().find_map(|f| map.get(f).and_then(Leaf::as_str)).unwrap_or("");
            e.message = cut(if message.is_empty() { content } else { message }, MESSAGE_LIMIT);
            for f in DETAIL_FIELDS {
                if let Some(v) = map.get(f).and_then(Leaf::scalar) {
                    e.detail(f, &v);
                }
            }
            e.ids_from_json(&map);
            // Caracal's Go services name the event a line is about `id` or `event_id`.
            if let Some(id) = map.get("id").and_then(Leaf::as_str) {
                e.id("id", id);
            }
        }
        None => e.message = cut(content, MESSAGE_LIMIT),
    }
    Some(e)
}

/// A JSON record's own time: Unix seconds to nanoseconds as a number (Caracal's Go services write milliseconds),
/// or text.
fn json_time(record: &Record<'_>) -> Option<Timestamp> {
    TIME_FIELDS.iter().find_map(|f| match record.get(f)? {
        Leaf::UInt(u) => {
            i64::try_from(*u).ok().map_or_else(|| timestamp_from_number(*u as f64), timestamp_from_integer)
        }
        Leaf::Int(i) => timestamp_from_integer(*i),
        Leaf::Float(x) => timestamp_from_number(*x),
        Leaf::Str(s) => timestamp_from_text(s),
        _ => None,
    })
}

/// A level as text: zerolog's names as they are, pino's numbers as their names.
fn level(v: &Leaf<'_>) -> Option<Cow<'static, str>> {
    const KNOWN: [&str; 8] = ["trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"];
    match v {
        Leaf::Str(s) if !s.is_empty() && s.len() <= 16 => {
            if let Some(k) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(s)) {
                return Some(Cow::Borrowed(*k));
            }
            Some(Cow::Owned(s.to_ascii_lowercase()))
        }
        Leaf::UInt(n) => Some(Cow::Borrowed(match n {
            10 => "trace",
            20 => "debug",
            30 => "info",
            40 => "warn",
            50 => "error",
            60 => "fatal",
            _ => return Some(Cow::Owned(n.to_string())),
        })),
        Leaf::Int(_) | Leaf::Float(_) => None,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Reader = fn(&Artifact<'_>, &str, &str, &mut dyn BufRead, &mut Tally, &mut dyn Sink) -> std::io::Result<()>;

    fn art() -> Artifact<'static> {
        Artifact {
            collector: "audit-logs",
            kind: "file",
            path: "data/audit-logs/audit/caracal-audit-1/x-json.log",
            redaction: Some("text:docker-json"),
            collected_at: None,
        }
    }

    fn run(f: Reader, input: &str) -> (Vec<Event>, Tally) {
        let mut out = Vec::new();
        let mut tally = Tally::default();
        f(&art(), "audit", "caracal-audit-1", &mut input.as_bytes(), &mut tally, &mut |e| out.push(e)).unwrap();
        (out, tally)
    }

    #[test]
    fn a_docker_line_gives_the_records_own_time_else_dockers() {
        let input = concat!(
            r#"{"log":"{\"level\":\"error\",\"message\":\"tamper: content hash mismatch\",\"service\":\"audit\",\"time\":1796442909384,\"zone_id\":\"zone-beta\",\"event_id\":\"evt-8\",\"session_id\":\"***\"}\n","stream":"stderr","time":"2026-12-05T03:51:09.384422716Z"}"#,
            "\n",
            r#"{"log":"plain text from a shell\n","stream":"stdout","time":"2026-12-05T03:52:00.5Z"}"#,
            "\nnot json\n",
        );
        let (events, tally) = run(docker, input);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].time, Timestamp::from_millisecond(1796442909384).unwrap());
        assert_eq!(events[0].message, "tamper: content hash mismatch");
        assert_eq!(events[0].level.as_deref(), Some("error"));
        assert_eq!(events[0].ids.get("zone_id"), Some("zone-beta"));
        assert!(!events[0].ids.contains_key("session_id"), "a masked id is no id");
        assert_eq!(events[0].source.line, Some(1));
        assert_eq!(events[1].time, "2026-12-05T03:52:00.5Z".parse::<Timestamp>().unwrap());
        assert_eq!(events[1].message, "plain text from a shell");
        assert_eq!(events[1].source.line, Some(2));
        assert_eq!(tally.untimed, 1, "a line with no time anywhere");
    }

    #[test]
    fn pino_levels_and_request_ids() {
        let input = r#"{"log":"{\"level\":40,\"msg\":\"admin auth failed\",\"reqId\":\"req-1\",\"hostname\":\"caracal-api-1\",\"time\":\"2026-12-05T03:55:09.384Z\"}\n","time":"2026-12-05T03:55:09.4Z"}"#;
        let (events, _) = run(docker, input);
        assert_eq!(events[0].level.as_deref(), Some("warn"));
        assert_eq!(&events[0].ids["request_id"], "req-1");
        assert_eq!(&*events[0].instance, "caracal-api-1");
    }

    #[test]
    fn text_lines_need_a_leading_time() {
        let (events, tally) = run(lines, "2026-12-05 02:35:47 upgrade postgresql\n  continuation\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].time, "2026-12-05T02:35:47Z".parse::<Timestamp>().unwrap());
        assert_eq!(tally.untimed, 1);
    }
}

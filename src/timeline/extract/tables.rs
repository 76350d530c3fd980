//! Rows of CSV tables. Caracal's tables each have their time column and their ids (caracal.md §3): the ledger's
//! `occurred_at`, an outbox row's `created_at`, a policy-set binding's `updated_at` (the activation of a version).
//! Any other table is placed by its first `*_at` column. A row can give more than one event: an authority record's
//! revocation, a session's termination, an outbox row's dispatch are moments of their own.
//!
//! Records are read with `csv-core` into buffers of bounded size: the `csv` crate's reader grows a record's
//! buffer to whatever a field holds, and a field here is whatever the attacker wrote into the row.

use std::{
    borrow::Cow,
    io::{self, BufRead},
    sync::Arc,
};

use csv_core::ReadRecordResult;
use jiff::Timestamp;

use super::{Artifact, LINE_LIMIT, Sink, Tally, json::Record};
use crate::{
    time::timestamp_from_text,
    timeline::event::{Event, Fields, MESSAGE_LIMIT, Source, cut, id_name},
};

/// At most this many fields in a record.
const FIELDS_LIMIT: usize = 4096;

/// How a table's rows become events.
struct Spec {
    service: &'static str,
    /// (time column, kind) for each moment a row records; the first that has a time is the row's main event.
    moments: &'static [(&'static str, &'static str)],
    /// The column holding the row's own id, and the id name it is.
    own_id: Option<&'static str>,
    /// JSON columns whose top-level fields may carry ids.
    json: &'static [&'static str],
}

fn spec(table: &str) -> Option<Spec> {
    let s = |service, moments, own_id, json| Some(Spec { service, moments, own_id, json });
    match table {
        "audit_events" => s("audit", &[("occurred_at", "audit.event")], Some("event_id"), &["metadata_json"]),
        "admin_audit_events" => s("api", &[("occurred_at", "audit.admin_event")], Some("admin_event_id"), &[]),
        "event_outbox" => s(
            "api",
            &[("created_at", "outbox.created"), ("dispatched_at", "outbox.dispatched")],
            Some("outbox_id"),
            &["payload_json"],
        ),
        "caracal_outbox" => s(
            "coordinator",
            &[("available_at", "outbox.created"), ("published_at", "outbox.dispatched")],
            Some("outbox_id"),
            &["payload_json"],
        ),
        "policy_set_bindings" => s("api", &[("updated_at", "policy_set.activated")], None, &[]),
        "policy_set_versions" => {
            s("api", &[("created_at", "policy_set.version_created")], Some("policy_set_version_id"), &[])
        }
        "policy_versions" => s("api", &[("created_at", "policy.version_created")], Some("policy_version_id"), &[]),
        "authority_records" => s(
            "sts",
            &[("created_at", "authority.created"), ("revoked_at", "authority.revoked")],
            Some("session_id"),
            &[],
        ),
        "sessions" => s(
            "coordinator",
            &[("started_at", "session.started"), ("terminated_at", "session.terminated")],
            Some("agent_session_id"),
            &["metadata_json"],
        ),
        "delegation_edges" => s(
            "coordinator",
            &[("created_at", "delegation.created"), ("revoked_at", "delegation.revoked")],
            Some("delegation_edge_id"),
            &[],
        ),
        "admin_tokens" => s(
            "api",
            &[
                ("created_at", "admin_token.created"),
                ("last_used_at", "admin_token.used"),
                ("revoked_at", "admin_token.revoked"),
            ],
            None,
            &[],
        ),
        _ => None,
    }
}

pub fn table(
    a: &Artifact<'_>,
    table: &str,
    data: &mut dyn BufRead,
    tally: &mut Tally,
    emit: &mut dyn Sink,
) -> io::Result<()> {
    let mut records = Records::new(data);
    let header: Vec<String> = match records.next(tally)? {
        Some(row) => {
            (0..row.len()).filter_map(|i| row.get(i)).map(|f| String::from_utf8_lossy(f).into_owned()).collect()
        }
        None => return Ok(()),
    };
    let col = |name: &str| header.iter().position(|h| h == name);
    let known = spec(table);
    // (column, kind) of each moment; a table preserve has no spec for is placed by its first `*_at` column.
    let moments: Vec<(usize, Cow<'static, str>)> = match &known {
        Some(s) => s.moments.iter().filter_map(|(c, k)| Some((col(c)?, Cow::Borrowed(*k)))).collect(),
        None => header
            .iter()
            .position(|h| h.ends_with("_at"))
            .map(|i| (i, Cow::Owned(format!("table.{}", header[i].trim_end_matches("_at")))))
            .into_iter()
            .collect(),
    };
    if moments.is_empty() {
        return Ok(());
    }
    let service = known.as_ref().map_or("postgres", |s| s.service);
    let names: (Arc<str>, Arc<str>, Arc<str>, Arc<str>) =
        (a.collector.into(), a.path.into(), service.into(), table.into());
    let own_id = known.as_ref().and_then(|s| s.own_id).zip(col("id"));
    let json_cols: Vec<usize> = known.as_ref().map_or(&[][..], |s| s.json).iter().filter_map(|c| col(c)).collect();
    let id_cols: Vec<(usize, &'static str)> =
        header.iter().enumerate().filter_map(|(i, h)| Some((i, id_name(h)?))).collect();
    let detail_cols: Vec<(&'static str, usize)> = [
        "decision",
        "event_type",
        "status",
        "status_code",
        "attempts",
        "last_error",
        "reason",
        "revoked_reason",
        "termination_reason",
    ]
    .into_iter()
    .filter_map(|d| Some((d, col(d)?)))
    .collect();
    let mut number = 0u64;
    loop {
        let skipped = tally.oversize;
        let Some(fields) = records.next(tally)? else { break };
        // A record skipped for its size still has its number: the next one is found where the count says.
        number += 1 + (tally.oversize - skipped);
        let text = |i: usize| fields.get(i).map(String::from_utf8_lossy).unwrap_or_default();
        let mut first = true;
        for (c, kind) in &moments {
            let Some(time) = pg_time(&text(*c)) else {
                if first {
                    tally.untimed += 1;
                }
                first = false;
                continue;
            };
            first = false;
            if !emit.wants(time, service, kind) {
                continue;
            }
            let mut e = Event {
                time,
                source: Source { collector: names.0.clone(), path: names.1.clone(), line: None, record: Some(number) },
                service: names.2.clone(),
                instance: names.3.clone(),
                kind: kind.clone(),
                level: None,
                message: String::new(),
                ids: Fields::default(),
                details: Fields::default(),
            };
            if let Some((name, i)) = own_id {
                e.id(name, &text(i));
            }
            for (i, name) in &id_cols {
                e.id(*name, &text(*i));
            }
            for i in &json_cols {
                let t = text(*i);
                if t.starts_with('{')
                    && let Some(record) = Record::parse(&t)
                {
                    e.ids_from_json(&record);
                }
            }
            e.message = cut(&message(table, kind, &|name| col(name).map(text)), MESSAGE_LIMIT);
            for (d, i) in &detail_cols {
                e.detail(*d, &text(*i));
            }
            emit.take(e);
        }
    }
    Ok(())
}

/// A short description of a row, from the columns a responder reads first.
fn message<'f>(table: &str, kind: &str, get: &dyn Fn(&str) -> Option<Cow<'f, str>>) -> String {
    let g = |c: &str| get(c).unwrap_or_default();
    match table {
        "audit_events" => format!(
            "{} {} {} in {} (chain_seq {})",
            g("event_type"),
            g("decision"),
            g("id"),
            g("zone_id"),
            g("chain_seq")
        ),
        "admin_audit_events" => {
            format!("{} {} {} → {} by {}", g("action"), g("method"), g("path"), g("status_code"), g("actor_id"))
        }
        "event_outbox" if kind == "outbox.dispatched" => format!("{} dispatched to {}", g("id"), g("stream_name")),
        "event_outbox" => {
            let dead = g("available_at") == "infinity" && g("dispatched_at").is_empty();
            let error = g("last_error");
            format!(
                "{} for {}{}, {} attempts{}",
                g("id"),
                g("stream_name"),
                if dead { " dead" } else { "" },
                g("attempts"),
                if error.is_empty() { String::new() } else { format!(": {error}") }
            )
        }
        "caracal_outbox" => format!("{} for {} {} after {} attempts", g("id"), g("topic"), g("status"), g("attempts")),
        "policy_set_bindings" => {
            format!("{} now active for {} in {}", g("active_version_id"), g("policy_set_id"), g("zone_id"))
        }
        "policy_set_versions" => {
            format!("{} (version {}) of {} created by {}", g("id"), g("version"), g("policy_set_id"), g("created_by"))
        }
        "policy_versions" => {
            format!("{} (version {}) of {} created by {}", g("id"), g("version"), g("policy_id"), g("created_by"))
        }
        _ => {
            let what = kind.rsplit('.').next().unwrap_or(kind);
            let id = get("id").map(|i| format!(" {i}")).unwrap_or_default();
            let why = get("revoked_reason").or_else(|| get("termination_reason")).filter(|w| !w.is_empty());
            format!("{table}{id} {what}{}", why.map(|w| format!(": {w}")).unwrap_or_default())
        }
    }
}

/// A time as Postgres writes it in CSV (`2026-12-05 03:05:09.344645+00`); `infinity`, empty and NULL are none.
fn pg_time(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if s.is_empty() || s.ends_with("infinity") || !s.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    if let Some(t) = pg_utc(s.as_bytes()) {
        return Some(t);
    }
    if let Some(t) = timestamp_from_text(s) {
        return Some(t);
    }
    // `+00` / `-05` / `+05:30` offsets: jiff wants `+00:00`.
    let (head, sign, off) = match s.rfind(['+', '-']).filter(|i| *i > 10) {
        Some(i) => (&s[..i], &s[i..i + 1], &s[i + 1..]),
        None => return None,
    };
    let off = if off.len() == 2 { format!("{off}:00") } else { off.to_string() };
    format!("{}{sign}{off}", head.replacen(' ', "T", 1)).parse().ok()
}

/// The exact form Postgres writes a `timestamptz` in UTC, `YYYY-MM-DD HH:MM:SS[.f{1,6}]+00`, read by hand: a
/// ledger has a million of them and this is the one the report's digest parses for every row while the snapshot
/// runs (a general parser took a fifth of that work). Anything else goes to the general parser.
fn pg_utc(b: &[u8]) -> Option<Timestamp> {
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        b.get(r)?.iter().try_fold(0i64, |n, c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
    };
    if b.len() < 22 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let rest = &b[19..];
    let (frac, zone) = match rest.first() {
        Some(b'.') => {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            (&rest[1..1 + n], &rest[1 + n..])
        }
        _ => (&rest[..0], rest),
    };
    if zone != b"+00" || frac.len() > 9 {
        return None;
    }
    let nanos = frac.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')) * 10i64.pow(9 - frac.len() as u32);
    let date = jiff::civil::Date::new(digits(0..4)? as i16, digits(5..7)? as i8, digits(8..10)? as i8).ok()?;
    let time =
        jiff::civil::Time::new(digits(11..13)? as i8, digits(14..16)? as i8, digits(17..19)? as i8, nanos as i32)
            .ok()?;
    jiff::tz::TimeZone::UTC.to_timestamp(date.to_datetime(time)).ok()
}

/// One record's fields, in the reader's buffers (no allocation per row).
struct Row<'a> {
    out: &'a [u8],
    ends: &'a [usize],
}

impl<'a> Row<'a> {
    fn len(&self) -> usize {
        self.ends.len()
    }
    fn get(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.out.get(start..end)
    }
}

/// CSV records of at most [`LINE_LIMIT`] bytes and [`FIELDS_LIMIT`] fields; a larger one is skipped and counted.
struct Records<'r> {
    reader: csv_core::Reader,
    input: &'r mut dyn BufRead,
    out: Vec<u8>,
    ends: Vec<usize>,
    done: bool,
}

impl<'r> Records<'r> {
    fn new(data: &'r mut dyn BufRead) -> Self {
        Self { reader: csv_core::Reader::new(), input: data, out: vec![0; 64 << 10], ends: vec![0; 64], done: false }
    }

    /// The next record, or `None` at the end.
    fn next(&mut self, tally: &mut Tally) -> io::Result<Option<Row<'_>>> {
        let (mut outlen, mut endlen, mut oversize) = (0usize, 0usize, false);
        loop {
            if self.done {
                return Ok(None);
            }
            let input = self.input.fill_buf()?;
            let (result, nin, nout, nend) =
                self.reader.read_record(input, &mut self.out[outlen..], &mut self.ends[endlen..]);
            self.input.consume(nin);
            outlen += nout;
            endlen += nend;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    if self.out.len() < LINE_LIMIT {
                        let n = (self.out.len() * 2).min(LINE_LIMIT);
                        self.out.resize(n, 0);
                    } else {
                        // Too big: read on to its end, keeping nothing.
                        oversize = true;
                        outlen = 0;
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() < FIELDS_LIMIT {
                        let n = (self.ends.len() * 2).min(FIELDS_LIMIT);
                        self.ends.resize(n, 0);
                    } else {
                        oversize = true;
                        endlen = 0;
                    }
                }
                ReadRecordResult::Record => {
                    if oversize {
                        tally.oversize += 1;
                        (outlen, endlen, oversize) = (0, 0, false);
                        continue;
                    }
                    return Ok(Some(Row { out: &self.out[..outlen], ends: &self.ends[..endlen] }));
                }
                ReadRecordResult::End => {
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(table_name: &str, csv: &str) -> (Vec<Event>, Tally) {
        let a = Artifact {
            collector: "postgres-audit",
            kind: "postgres",
            path: "data/postgres-audit/tables/public.x.csv",
            redaction: Some("data"),
            collected_at: None,
        };
        let mut out = Vec::new();
        let mut tally = Tally::default();
        table(&a, table_name, &mut csv.as_bytes(), &mut tally, &mut |e| out.push(e)).unwrap();
        (out, tally)
    }

    #[test]
    fn postgres_times_in_csv() {
        assert_eq!(pg_time("2026-10-21 03:56:09.344645+00"), "2026-10-21T03:56:09.344645Z".parse().ok());
        assert_eq!(pg_time("2026-10-21 05:56:09+02"), "2026-10-21T03:56:09Z".parse().ok());
        assert_eq!(pg_time("2026-10-21 09:26:09+05:30"), "2026-10-21T03:56:09Z".parse().ok());
        assert_eq!(pg_time("2026-10-21 03:56:09+00"), "2026-10-21T03:56:09Z".parse().ok());
        assert_eq!(pg_time("2026-10-21 03:56:09.5+00"), "2026-10-21T03:56:09.5Z".parse().ok());
        assert_eq!(pg_time("2026-13-21 03:56:09+00"), None, "no 13th month");
        assert_eq!(pg_time("infinity"), None);
        assert_eq!(pg_time(""), None);
    }

    #[test]
    fn ledger_rows_carry_their_ids_and_metadata_ids() {
        let csv = "id,zone_id,event_type,request_id,decision,metadata_json,occurred_at,chain_seq\n\
                   evt-1,zone-alpha,token.exchange,req-1,allow,\"{\"\"agent_session_id\"\": \"\"as-1\"\", \"\"note\"\": \"\"a,b\"\"}\",2026-10-21 03:56:09.344645+00,1\n\
                   evt-2,zone-alpha,token.exchange,req-2,deny,,,2\n";
        let (events, tally) = run("audit_events", csv);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.kind, "audit.event");
        assert_eq!(e.source.record, Some(1));
        assert_eq!(&e.ids["event_id"], "evt-1");
        assert_eq!(&e.ids["request_id"], "req-1");
        assert_eq!(&e.ids["agent_session_id"], "as-1");
        assert_eq!(e.message, "token.exchange allow evt-1 in zone-alpha (chain_seq 1)");
        assert_eq!(tally.untimed, 1, "the row without occurred_at");
    }

    #[test]
    fn a_revocation_is_a_moment_of_its_own_and_an_activation_is_named() {
        let (events, _) = run(
            "authority_records",
            "id,zone_id,status,created_at,revoked_at,revoked_reason\nar-1,z,revoked,2026-12-01 00:00:00+00,2026-12-05 03:00:00+00,leak\n",
        );
        assert_eq!(
            events.iter().map(|e| e.kind.as_ref()).collect::<Vec<_>>(),
            ["authority.created", "authority.revoked"]
        );
        assert!(events.iter().all(|e| &e.ids["session_id"] == "ar-1" && e.source.record == Some(1)));
        let (events, _) = run(
            "policy_set_bindings",
            "zone_id,policy_set_id,active_version_id,updated_at\nzone-alpha,ps-main,psv-main-2,2026-12-05 03:10:09.344645+00\n",
        );
        assert_eq!(events[0].kind, "policy_set.activated");
        assert_eq!(&events[0].ids["policy_set_version_id"], "psv-main-2");
    }

    #[test]
    fn an_oversize_record_is_skipped_and_the_next_one_read() {
        let big = "x".repeat(LINE_LIMIT + 5);
        let csv = format!("id,created_at\n\"{big}\",2026-12-01 00:00:00+00\nok,2026-12-02 00:00:00+00\n");
        let (events, tally) = run("some_table", &csv);
        assert_eq!(tally.oversize, 1);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].source.record, Some(2), "records are counted even when skipped");
        assert_eq!(events[0].kind, "table.created");
    }
}

//! Redis stream entries and pending lists, as the redis collector writes them: `{"id": "<ms>-<seq>", "fields":
//! [[name, value], ...]}` (binary values as `{"base64": ...}`), and `{"id", "consumer", "deliveries", "idle_ms"}`.
//! An entry is placed at its id's time (when Redis added it); a dead letter also says when the consumer gave up on
//! it (`received_at`), a pending entry when it was last delivered (the collection's time less its idle time).

use std::{borrow::Cow, io::BufRead, sync::Arc};

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use super::{
    Artifact, Sink, Tally, each_line,
    json::{Leaf, Record},
};
use crate::{
    time::timestamp_from_number,
    timeline::event::{Event, Fields, MESSAGE_LIMIT, Source, cut, id_name},
};

/// Fields of an entry that hold a JSON record of their own (the audit event in `data`, the original in a dead
/// letter's `src_data` or `values`), whose ids are the entry's too.
const NESTED: [&str; 4] = ["data", "src_data", "values", "payload"];
/// Fields shown beside an entry's message.
const DETAILS: [&str; 9] =
    ["reason", "error", "received_at", "event", "event_type", "decision", "original_id", "src_id", "dedupe_key"];

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    fields: Vec<(Leaf<'a>, Leaf<'a>)>,
}

#[derive(Deserialize)]
struct PendingEntry {
    id: String,
    #[serde(default)]
    consumer: Option<String>,
    #[serde(default)]
    deliveries: Option<u64>,
    #[serde(default)]
    idle_ms: Option<u64>,
}

/// Whether `stream` is a dead-letter stream: Audit's `.dlq`, or a `.dead` of STS, the Gateway or the SDK.
pub fn is_dead_letter(stream: &str) -> bool {
    stream.ends_with(".dlq") || stream.ends_with(".dead")
}

/// The time in a stream entry id (`<unix ms>-<seq>`).
pub fn entry_time(id: &str) -> Option<Timestamp> {
    let ms: i64 = id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()?;
    Timestamp::from_millisecond(ms).ok()
}

pub fn entries(
    a: &Artifact<'_>,
    stream: &str,
    data: &mut dyn BufRead,
    tally: &mut Tally,
    emit: &mut dyn Sink,
) -> std::io::Result<()> {
    let dead = is_dead_letter(stream);
    let mut local = Tally::default();
    let names: (Arc<str>, Arc<str>, Arc<str>, Arc<str>) =
        (a.collector.into(), a.path.into(), "redis".into(), stream.into());
    let kind = if dead { "stream.dead_letter" } else { "stream.entry" };
    each_line(data, tally, |n, line| {
        // The entry's id leads its line (`{"id":"<ms>-<seq>",...`, as preserve writes it): its time is known before
        // the line is parsed, and the line is parsed only when its event is wanted whole.
        let head = line
            .strip_prefix(b"{\"id\":\"")
            .and_then(|rest| std::str::from_utf8(&rest[..memchr::memchr(b'"', rest)?]).ok())
            .and_then(entry_time);
        if let Some(t) = head
            && !emit.wants(t, "redis", kind)
        {
            return;
        }
        let Some(entry) = std::str::from_utf8(line).ok().and_then(|l| serde_json::from_str::<Entry<'_>>(l).ok()) else {
            local.malformed += 1;
            return;
        };
        let Some(time) = entry_time(&entry.id) else {
            local.untimed += 1;
            return;
        };
        if head.is_none() && !emit.wants(time, "redis", kind) {
            return;
        }
        let mut e = Event {
            time,
            source: Source { collector: names.0.clone(), path: names.1.clone(), line: Some(n), record: None },
            service: names.2.clone(),
            instance: names.3.clone(),
            kind: Cow::Borrowed(kind),
            level: None,
            message: String::new(),
            ids: Fields::default(),
            details: Fields::default(),
        };
        e.id("entry_id", &entry.id);
        let mut names = Vec::new();
        for (k, v) in &entry.fields {
            let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else { continue };
            if let Some(d) = DETAILS.iter().find(|d| **d == k) {
                e.detail(*d, v);
            }
            if let Some(name) = id_name(k) {
                e.id(name, v);
            }
            if k == "id" {
                e.id("event_id", v);
            }
            if NESTED.contains(&k)
                && v.starts_with('{')
                && let Some(record) = Record::parse(v)
            {
                if let Some(id) = record.get("id").and_then(Leaf::as_str) {
                    e.id("event_id", id);
                }
                e.ids_from_json(&record);
            }
            if names.len() < 8 {
                names.push(k);
            }
        }
        e.message = cut(&message(stream, dead, &e.details, &names), MESSAGE_LIMIT);
        if let Some(t) =
            e.details.get("received_at").and_then(|r| r.parse::<f64>().ok()).and_then(timestamp_from_number)
        {
            e.details.insert("received_at", t.to_string());
        }
        emit.take(e);
    })?;
    tally.add(local);
    Ok(())
}

fn message(stream: &str, dead: bool, details: &Fields, names: &[&str]) -> String {
    let d = |k: &str| details.get(k);
    if dead {
        let why = d("reason").or(d("error")).unwrap_or("no reason given");
        let of = d("src_id").or(d("original_id")).map(|i| format!(" ({i})")).unwrap_or_default();
        return format!("dead letter in {stream}: {why}{of}");
    }
    let what = d("event").or(d("event_type")).or(d("reason"));
    match what {
        Some(w) => format!("{stream}: {w}{}", d("decision").map(|x| format!(" {x}")).unwrap_or_default()),
        None => format!("{stream} entry ({})", names.join(", ")),
    }
}

pub fn pending(
    a: &Artifact<'_>,
    stream: &str,
    group: &str,
    data: &mut dyn BufRead,
    tally: &mut Tally,
    emit: &mut dyn Sink,
) -> std::io::Result<()> {
    let mut local = Tally::default();
    let names: (Arc<str>, Arc<str>, Arc<str>, Arc<str>) =
        (a.collector.into(), a.path.into(), "redis".into(), stream.into());
    each_line(data, tally, |n, line| {
        let Ok(p) = serde_json::from_slice::<PendingEntry>(line) else {
            local.malformed += 1;
            return;
        };
        // Last delivered `idle_ms` before the collection; without that moment, the entry's own time.
        let delivered = a
            .collected_at
            .zip(p.idle_ms)
            .and_then(|(at, idle)| at.checked_sub(SignedDuration::from_millis(idle.min(i64::MAX as u64) as i64)).ok());
        let Some(time) = delivered.or_else(|| entry_time(&p.id)) else {
            local.untimed += 1;
            return;
        };
        let consumer = p.consumer.as_deref().unwrap_or("?");
        let mut e = Event {
            time,
            source: Source { collector: names.0.clone(), path: names.1.clone(), line: Some(n), record: None },
            service: names.2.clone(),
            instance: names.3.clone(),
            kind: Cow::Borrowed("stream.pending"),
            level: None,
            message: cut(
                &format!(
                    "{} pending in group {group} with {consumer}: delivered {} times, idle {} ms",
                    p.id,
                    p.deliveries.unwrap_or(0),
                    p.idle_ms.unwrap_or(0)
                ),
                MESSAGE_LIMIT,
            ),
            ids: Fields::default(),
            details: Fields::default(),
        };
        e.id("entry_id", &p.id);
        e.detail("group", group);
        e.detail("consumer", consumer);
        if let Some(d) = p.deliveries {
            e.detail("deliveries", &d.to_string());
        }
        if let Some(i) = p.idle_ms {
            e.detail("idle_ms", &i.to_string());
        }
        if let Some(t) = entry_time(&p.id) {
            e.detail("added_at", &t.to_string());
        }
        if emit.wants(e.time, &e.service, &e.kind) {
            emit.take(e);
        }
    })?;
    tally.add(local);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(collected_at: Option<Timestamp>) -> Artifact<'static> {
        Artifact {
            collector: "redis-dlq",
            kind: "redis",
            path: "data/redis-dlq/streams/caracal.audit.events.dlq/entries.jsonl",
            redaction: Some("data"),
            collected_at,
        }
    }

    #[test]
    fn a_dead_letter_is_placed_by_its_id_and_carries_the_originals_ids() {
        let line = r#"{"id":"1796439408679-0","fields":[["reason","hmac_verify_failed"],["src_id","evt-dlq-00"],["received_at","1796439408679"],["src_data","{\"id\":\"evt-dlq-00\",\"zone_id\":\"zone-alpha\",\"request_id\":\"req-9\"}"],["blob",{"base64":"/gA="}]]}"#;
        let mut out = Vec::new();
        entries(&art(None), "caracal.audit.events.dlq", &mut line.as_bytes(), &mut Tally::default(), &mut |e| {
            out.push(e)
        })
        .unwrap();
        let e = &out[0];
        assert_eq!(e.time, Timestamp::from_millisecond(1796439408679).unwrap());
        assert_eq!(e.kind, "stream.dead_letter");
        assert_eq!(e.message, "dead letter in caracal.audit.events.dlq: hmac_verify_failed (evt-dlq-00)");
        assert_eq!(&e.ids["request_id"], "req-9");
        assert_eq!(&e.ids["event_id"], "evt-dlq-00");
        assert_eq!(&e.ids["entry_id"], "1796439408679-0");
        assert_eq!(&e.details["received_at"], Timestamp::from_millisecond(1796439408679).unwrap().to_string());
    }

    #[test]
    fn a_pending_entry_is_placed_at_its_last_delivery() {
        let at: Timestamp = "2026-12-05T04:00:00Z".parse().unwrap();
        let line = r#"{"consumer":"sts-1","deliveries":3,"id":"1796439508679-0","idle_ms":60000}"#;
        let mut out = Vec::new();
        pending(
            &art(Some(at)),
            "caracal.sessions.revoke",
            "sts-revocation",
            &mut line.as_bytes(),
            &mut Tally::default(),
            &mut |e| out.push(e),
        )
        .unwrap();
        assert_eq!(out[0].time, "2026-12-05T03:59:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(&out[0].details["deliveries"], "3");
        assert_eq!(&out[0].ids["entry_id"], "1796439508679-0");
    }
}

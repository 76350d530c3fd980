//! Export of one stream as a consistent cut: its `last-generated-id` is read first and entries are paged with
//! `XRANGE` up to it, so producers writing meanwhile neither add to nor tear the export. Groups, consumers and
//! every pending entry (paged with the extended `XPENDING`) are exported too; the whole PEL is never held in memory.

use std::io::Write;

use redis::Value;
use serde::Serialize;
use serde_json::{Value as Json, json};

use super::{
    conn::Node,
    resp, safe_name,
    value::{self, bytes_json, entry_json, field, int, map_json, text, to_json},
};
use crate::{
    sources::{CollectError, Collection, Redaction},
    time::Window,
};

/// What the manifest records of one exported stream.
#[derive(Debug, Serialize)]
pub struct StreamReport {
    pub key: Json,
    pub node: String,
    /// The stream's `last-generated-id` when the export started: nothing after it is exported.
    pub cut_id: String,
    pub length: Option<i64>,
    pub entries_added: Option<i64>,
    pub max_deleted_entry_id: Option<String>,
    /// Entries ever added that are no longer in the stream (trimmed by MAXLEN or deleted): history is missing.
    pub missing_below_cut: Option<i64>,
    pub exported: u64,
    pub first_exported_id: Option<String>,
    pub last_exported_id: Option<String>,
    /// The range asked for (window by stream-id time, entry cap).
    pub range: (String, String),
    /// How the entries were read: `direct` or `client`.
    pub reader: &'static str,
    /// Older entries were left out by `max_entries`.
    pub truncated: bool,
    pub groups: Vec<GroupReport>,
}

#[derive(Debug, Serialize)]
pub struct GroupReport {
    pub name: Json,
    /// Pending count `XINFO GROUPS` gave at the start.
    pub pending: Option<i64>,
    /// Pending entries exported (the PEL may move while it is read).
    pub pending_exported: u64,
}

pub struct StreamJob<'a> {
    pub cx: &'a Collection,
    pub node: &'a mut Node,
    pub key: &'a [u8],
    pub window: Window,
    pub max_entries: Option<u64>,
    pub page: usize,
    /// Pages read by the direct reader ([`resp`]) rather than the client.
    pub direct: bool,
}

fn cmd(name: &str) -> redis::Cmd {
    redis::cmd(name)
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> CollectError + '_ {
    move |e| CollectError::Io { context: format!("writing {what}"), source: e }
}

fn redis_err(what: String) -> impl FnOnce(redis::RedisError) -> CollectError {
    move |source| super::Error::Command { what, source }.into()
}

impl StreamJob<'_> {
    pub async fn export(self) -> Result<StreamReport, CollectError> {
        let StreamJob { cx, node, key, window, max_entries, page, direct } = self;
        let dir = format!("streams/{}", safe_name(key));
        let shown = String::from_utf8_lossy(key).into_owned();

        let info = node
            .query(cmd("XINFO").arg("STREAM").arg(key))
            .await
            .map_err(redis_err(format!("XINFO STREAM {shown}")))?;
        let cut_id = field(&info, "last-generated-id").map(text).unwrap_or_else(|| "0-0".into());
        let groups_reply = node
            .query(cmd("XINFO").arg("GROUPS").arg(key))
            .await
            .map_err(redis_err(format!("XINFO GROUPS {shown}")))?;
        let groups: Vec<&Value> = match &groups_reply {
            Value::Array(a) => a.iter().collect(),
            _ => Vec::new(),
        };

        // Summary, groups and consumers.
        let mut group_json = Vec::new();
        for g in &groups {
            let name = group_name(g);
            let consumers = node
                .query(cmd("XINFO").arg("CONSUMERS").arg(key).arg(&name))
                .await
                .map_err(redis_err(format!("XINFO CONSUMERS {shown}")))?;
            let mut gj = map_json(g, |_, v| to_json(v));
            if let (Json::Object(o), Value::Array(cs)) = (&mut gj, &consumers) {
                o.insert("consumers".into(), Json::Array(cs.iter().map(|c| map_json(c, |_, v| to_json(v))).collect()));
            }
            group_json.push(gj);
        }
        let summary = map_json(&info, |k, v| match k {
            "first-entry" | "last-entry" => entry_json(v).map_or(Json::Null, |(_, j)| j),
            _ => to_json(v),
        });
        let xinfo = json!({ "key": bytes_json(key), "node": node.label, "stream": summary, "groups": group_json });
        write_json(cx, &format!("{dir}/xinfo.json"), &xinfo)?;

        // Pending entries of every group.
        let mut group_reports = Vec::new();
        for g in &groups {
            let name = group_name(g);
            let path = format!("{dir}/pending/{}.jsonl", safe_name(&name));
            let exported = export_pending(cx, node, key, &name, &path, page).await?;
            group_reports.push(GroupReport {
                name: bytes_json(&name),
                pending: int(field(g, "pending")),
                pending_exported: exported,
            });
        }

        // Entries up to the cut.
        let mut start = window.since.map_or("-".to_string(), |t| format!("{}-0", t.as_millisecond().max(0)));
        let end = match window.until {
            Some(u) if id_lt(&format!("{}-{}", u.as_millisecond().max(0), u64::MAX), &cut_id) => {
                format!("{}-{}", u.as_millisecond().max(0), u64::MAX)
            }
            _ => cut_id.clone(),
        };
        let mut truncated = false;
        if let Some(max) = max_entries
            && let Some(first_kept) = newest_start(node, key, &start, &end, max, page)
                .await
                .map_err(redis_err(format!("XREVRANGE {shown}")))?
        {
            start = first_kept;
            truncated = true;
        }
        let range = (start.clone(), end.clone());
        let mut out = cx.artifact(&format!("{dir}/entries.jsonl"), "application/x-ndjson", Redaction::Data)?;
        let exported = export_entries(cx, node, key, (&start, &end), page, direct, &mut out).await;
        node.close_direct();
        let (exported, first, last) = exported?;
        if truncated {
            out.set_truncated();
        }
        out.finish().map_err(io("entries.jsonl"))?;

        let length = int(field(&info, "length"));
        let entries_added = int(field(&info, "entries-added"));
        Ok(StreamReport {
            key: bytes_json(key),
            node: node.label.clone(),
            cut_id,
            length,
            entries_added,
            max_deleted_entry_id: field(&info, "max-deleted-entry-id").map(text),
            missing_below_cut: entries_added.zip(length).map(|(a, l)| a - l),
            exported,
            first_exported_id: first,
            last_exported_id: last,
            range,
            reader: if direct { "direct" } else { "client" },
            truncated,
            groups: group_reports,
        })
    }
}

/// Why a page of entries could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Direct(#[from] resp::Error),
    #[error(transparent)]
    Client(#[from] redis::RedisError),
    #[error("an entry without an id")]
    NoId,
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// A page of `XRANGE` entries as read: bytes from the direct reader, or the client's values.
enum Pages {
    Direct(resp::Page),
    Client(Vec<Value>),
}

impl Pages {
    fn client(reply: Value) -> Self {
        Pages::Client(match reply {
            Value::Array(entries) => entries,
            _ => Vec::new(),
        })
    }

    fn len(&self) -> usize {
        match self {
            Pages::Direct(p) => p.len(),
            Pages::Client(entries) => entries.len(),
        }
    }

    fn id(&self, i: usize) -> Result<String, PageError> {
        match self {
            Pages::Direct(p) => Ok(p.id(i)?),
            Pages::Client(entries) => value::entry_id(&entries[i]).ok_or(PageError::NoId),
        }
    }

    /// Appends the page as JSON lines: `{"id", "fields": [[name, value], ...]}`.
    fn write_jsonl(&self, buf: &mut Vec<u8>) -> Result<(), PageError> {
        match self {
            Pages::Direct(p) => Ok(p.write_jsonl(buf)?),
            Pages::Client(entries) => entries.iter().try_for_each(|e| {
                serde_json::to_writer(&mut *buf, &value::EntryRef(e))?;
                buf.push(b'\n');
                Ok(())
            }),
        }
    }
}

/// Pages `XRANGE` over `(start, end)` into `out`: `{"id", "fields": [[name, value], ...]}` per line. The next
/// page is asked for before the current one is written, so the server, the network and the writing overlap.
async fn export_entries(
    cx: &Collection,
    node: &mut Node,
    key: &[u8],
    (start, end): (&str, &str),
    page: usize,
    direct: bool,
    out: &mut crate::sources::Artifact,
) -> Result<(u64, Option<String>, Option<String>), CollectError> {
    let failed = |after: u64, source: PageError| -> CollectError {
        super::Error::Entries { key: String::from_utf8_lossy(key).into_owned(), after, source }.into()
    };
    let xrange = |from: &str| cmd("XRANGE").arg(key).arg(from).arg(end).arg("COUNT").arg(page).to_owned();
    let (mut n, mut first, mut last) = (0u64, None::<String>, None::<String>);
    let mut buf = Vec::with_capacity(page * 700);
    let mut pages = if direct {
        let (packed, mut p) = (xrange(start).get_packed_command(), resp::Page::default());
        node.direct_send(&packed).await.map_err(|e| failed(n, e.into()))?;
        node.direct_receive(&packed, &mut p).await.map_err(|e| failed(n, e.into()))?;
        Pages::Direct(p)
    } else {
        Pages::client(node.query_bulk(&xrange(start)).await.map_err(|e| failed(n, e.into()))?)
    };
    loop {
        if cx.is_cancelled() {
            return Err(CollectError::Cancelled);
        }
        let len = pages.len();
        if len == 0 {
            break;
        }
        let page_last = pages.id(len - 1).map_err(|e| failed(n, e))?;
        if first.is_none() {
            first = Some(pages.id(0).map_err(|e| failed(n, e))?);
        }
        let next = (len == page && page_last != end).then(|| xrange(&format!("({page_last}")));
        let mut write = |pages: &Pages, buf: &mut Vec<u8>| -> Result<(), CollectError> {
            buf.clear();
            pages.write_jsonl(buf).map_err(|e| failed(n, e))?;
            out.write_all(buf).map_err(io("entries.jsonl"))?;
            out.add_records(len as u64);
            Ok(())
        };
        let done = n + len as u64;
        let Some(next) = next else {
            write(&pages, &mut buf)?;
            (n, last) = (done, Some(page_last));
            break;
        };
        if let Pages::Direct(_) = pages {
            // Pipelined: the server reads the next page while this one is written (which it is even when the
            // request could not be sent: it is evidence in hand).
            let packed = next.get_packed_command();
            let sent = node.direct_send(&packed).await;
            crate::sources::off_worker(|| write(&pages, &mut buf))?;
            sent.map_err(|e| failed(done, e.into()))?;
            if let Pages::Direct(p) = &mut pages {
                node.direct_receive(&packed, p).await.map_err(|e| failed(done, e.into()))?;
            }
        } else {
            // The page is written off the runtime's worker, so the client's task can take the next reply off the
            // socket and parse it on the other worker meanwhile.
            let (fetched, written) =
                tokio::join!(node.query_bulk(&next), async { crate::sources::off_worker(|| write(&pages, &mut buf)) });
            written?;
            pages = Pages::client(fetched.map_err(|e| failed(done, e.into()))?);
        }
        (n, last) = (done, Some(page_last));
    }
    Ok((n, first, last))
}

/// Walks back from `end` with `XREVRANGE` to find the id of the `max`-th newest entry; `None` when the range holds
/// no more than `max` entries.
async fn newest_start(
    node: &mut Node,
    key: &[u8],
    start: &str,
    end: &str,
    max: u64,
    page: usize,
) -> redis::RedisResult<Option<String>> {
    let mut seen = 0u64;
    let mut from = end.to_string();
    loop {
        let want = page.min((max - seen) as usize + 1).max(1);
        let reply = node.query(cmd("XREVRANGE").arg(key).arg(&from).arg(start).arg("COUNT").arg(want)).await?;
        let Value::Array(entries) = reply else { return Ok(None) };
        for e in &entries {
            seen += 1;
            if seen == max {
                let id = entry_json(e).map(|(id, _)| id);
                // Only a cut if anything older exists.
                let older = node
                    .query(
                        cmd("XREVRANGE")
                            .arg(key)
                            .arg(format!("({}", id.clone().unwrap_or_default()))
                            .arg(start)
                            .arg("COUNT")
                            .arg(1),
                    )
                    .await?;
                return Ok(match older {
                    Value::Array(a) if !a.is_empty() => id,
                    _ => None,
                });
            }
        }
        match entries.last().and_then(entry_json) {
            Some((id, _)) if entries.len() == want => from = format!("({id}"),
            _ => return Ok(None),
        }
    }
}

/// Pages a group's PEL with the extended `XPENDING` form into `path`; returns how many entries were exported.
async fn export_pending(
    cx: &Collection,
    node: &mut Node,
    key: &[u8],
    group: &[u8],
    path: &str,
    page: usize,
) -> Result<u64, CollectError> {
    let mut out = cx.artifact(path, "application/x-ndjson", Redaction::Data)?;
    let mut from = "-".to_string();
    let mut n = 0u64;
    let mut line = Vec::with_capacity(256);
    loop {
        let reply = node.query(cmd("XPENDING").arg(key).arg(group).arg(&from).arg("+").arg(page)).await.map_err(
            redis_err(format!("XPENDING {} {}", String::from_utf8_lossy(key), String::from_utf8_lossy(group))),
        )?;
        let Value::Array(entries) = reply else { break };
        let mut last = None;
        for e in &entries {
            let Value::Array(p) = e else { continue };
            let id = p.first().map(text).unwrap_or_default();
            let j = json!({
                "id": id,
                "consumer": p.get(1).map_or(Json::Null, to_json),
                "idle_ms": int(p.get(2)),
                "deliveries": int(p.get(3)),
            });
            line.clear();
            serde_json::to_writer(&mut line, &j)?;
            line.push(b'\n');
            out.write_all(&line).map_err(io("pending entries"))?;
            out.add_records(1);
            n += 1;
            last = Some(id);
        }
        match last {
            Some(l) if entries.len() == page => from = format!("({l}"),
            _ => break,
        }
    }
    out.finish().map_err(io("pending entries"))?;
    Ok(n)
}

fn write_json(cx: &Collection, path: &str, value: &Json) -> Result<(), CollectError> {
    let text = serde_json::to_vec_pretty(value)?;
    cx.write_small(path, "application/json", &text)
}

/// A consumer group's name, binary-safe, from an `XINFO GROUPS` entry.
fn group_name(g: &Value) -> Vec<u8> {
    match field(g, "name") {
        Some(Value::BulkString(b)) => b.clone(),
        Some(other) => text(other).into_bytes(),
        None => Vec::new(),
    }
}

/// Orders stream ids `ms-seq` numerically.
fn id_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (ms.parse::<u64>().unwrap_or(0), seq.parse::<u64>().unwrap_or(0))
    };
    parse(a) < parse(b)
}

//! Export of key families by pattern (`audit:jti:*`, `seen:jti:*`, ...): each key's type, remaining TTL and value,
//! collections paged with `HSCAN`/`SSCAN`/`ZSCAN`/`LRANGE`; or, for very large families, only their count.

use std::{collections::HashSet, io::Write};

use redis::Value;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::{
    conn::Node,
    value::{bytes_json, int, text, to_json},
};
use crate::sources::{CollectError, Collection};

/// One family of keys to capture.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFamily {
    /// `SCAN MATCH` pattern, e.g. `audit:jti:*`.
    pub pattern: String,
    /// Record only how many keys match (for families too large to export).
    #[serde(default)]
    pub count_only: bool,
    /// At most this many keys are exported (default 10000); the rest are counted.
    pub max_keys: Option<u64>,
    /// At most this many elements of one hash, set, sorted set or list (default 10000).
    pub max_elements: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct FamilyReport {
    pub pattern: String,
    pub node: String,
    /// Keys seen by SCAN (a key may be counted twice if the server rehashes during the scan; SCAN's contract).
    pub matched: u64,
    pub exported: u64,
    pub truncated: bool,
}

fn redis_err(what: String) -> impl FnOnce(redis::RedisError) -> CollectError {
    move |source| super::Error::Command { what, source }.into()
}

/// Scans `family` on `node`, writing one JSON line per key into `out` (unless `count_only`).
pub async fn export_family(
    cx: &Collection,
    node: &mut Node,
    family: &KeyFamily,
    page: usize,
    out: &mut crate::sources::Artifact,
) -> Result<FamilyReport, CollectError> {
    let max_keys = family.max_keys.unwrap_or(10_000);
    let max_elements = family.max_elements.unwrap_or(10_000);
    let mut report = FamilyReport { pattern: family.pattern.clone(), node: node.label.clone(), ..Default::default() };
    let mut done: HashSet<Vec<u8>> = HashSet::new();
    let mut cursor = "0".to_string();
    let mut line = Vec::with_capacity(1024);
    loop {
        if cx.is_cancelled() {
            return Err(CollectError::Cancelled);
        }
        let reply = node
            .query(redis::cmd("SCAN").arg(&cursor).arg("MATCH").arg(&family.pattern).arg("COUNT").arg(page))
            .await
            .map_err(redis_err(format!("SCAN MATCH {}", family.pattern)))?;
        let (next, keys) = scan_reply(reply);
        for key in keys {
            report.matched += 1;
            if family.count_only {
                continue;
            }
            if report.exported >= max_keys {
                report.truncated = true;
                continue;
            }
            if !done.insert(key.clone()) {
                report.matched -= 1; // SCAN returned it again
                continue;
            }
            let Some(j) = key_json(node, &key, max_elements).await? else { continue };
            line.clear();
            serde_json::to_writer(&mut line, &j)?;
            line.push(b'\n');
            out.write_all(&line).map_err(|e| CollectError::Io { context: "writing keys".into(), source: e })?;
            out.add_records(1);
            report.exported += 1;
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    if report.truncated {
        out.set_truncated();
    }
    Ok(report)
}

/// `[cursor, [key, ...]]`.
pub fn scan_reply(reply: Value) -> (String, Vec<Vec<u8>>) {
    let Value::Array(mut parts) = reply else { return ("0".into(), Vec::new()) };
    let keys = match parts.pop() {
        Some(Value::Array(ks)) => ks
            .into_iter()
            .map(|k| match k {
                Value::BulkString(b) => b,
                other => text(&other).into_bytes(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let cursor = parts.first().map(text).unwrap_or_else(|| "0".into());
    (cursor, keys)
}

/// One key as `{"key", "type", "pttl_ms", "value", "truncated"?}`; `None` if it expired meanwhile.
async fn key_json(node: &mut Node, key: &[u8], max_elements: u64) -> Result<Option<Json>, CollectError> {
    let shown = String::from_utf8_lossy(key).into_owned();
    let kind = text(&node.query(redis::cmd("TYPE").arg(key)).await.map_err(redis_err(format!("TYPE {shown}")))?);
    if kind == "none" {
        return Ok(None);
    }
    let pttl = int(Some(&node.query(redis::cmd("PTTL").arg(key)).await.map_err(redis_err(format!("PTTL {shown}")))?));
    let mut truncated = false;
    let value = match kind.as_str() {
        "string" => match node.query(redis::cmd("GET").arg(key)).await.map_err(redis_err(format!("GET {shown}")))? {
            Value::BulkString(b) => bytes_json(&b),
            Value::Nil => return Ok(None),
            other => to_json(&other),
        },
        "hash" | "set" | "zset" => {
            let (cmd, pairs) = match kind.as_str() {
                "hash" => ("HSCAN", true),
                "zset" => ("ZSCAN", true),
                _ => ("SSCAN", false),
            };
            let mut items = Vec::new();
            let mut cursor = "0".to_string();
            loop {
                let reply = node
                    .query(redis::cmd(cmd).arg(key).arg(&cursor).arg("COUNT").arg(1000))
                    .await
                    .map_err(redis_err(format!("{cmd} {shown}")))?;
                let (next, elems) = scan_reply(reply);
                if pairs {
                    for c in elems.chunks(2) {
                        items.push(json!([bytes_json(&c[0]), c.get(1).map_or(Json::Null, |v| bytes_json(v))]));
                    }
                } else {
                    items.extend(elems.iter().map(|e| bytes_json(e)));
                }
                if items.len() as u64 >= max_elements {
                    truncated = next != "0" || items.len() as u64 > max_elements;
                    items.truncate(max_elements as usize);
                    break;
                }
                if next == "0" {
                    break;
                }
                cursor = next;
            }
            Json::Array(items)
        }
        "list" => {
            let mut items = Vec::new();
            let mut from = 0u64;
            // One element past the cap tells whether the list is longer.
            while items.len() as u64 <= max_elements {
                let to = from + 999;
                let reply = node
                    .query(redis::cmd("LRANGE").arg(key).arg(from).arg(to))
                    .await
                    .map_err(redis_err(format!("LRANGE {shown}")))?;
                let Value::Array(elems) = reply else { break };
                let got = elems.len();
                items.extend(elems.iter().map(|e| match e {
                    Value::BulkString(b) => bytes_json(b),
                    other => to_json(other),
                }));
                if got < 1000 {
                    break;
                }
                from = to + 1;
            }
            if items.len() as u64 > max_elements {
                truncated = true;
                items.truncate(max_elements as usize);
            }
            Json::Array(items)
        }
        // Streams are exported by the `streams` setting; other types are recorded by type only.
        _ => Json::Null,
    };
    let mut j = json!({ "key": bytes_json(key), "type": kind, "pttl_ms": pttl, "value": value });
    if truncated {
        j["truncated"] = json!(true);
    }
    Ok(Some(j))
}

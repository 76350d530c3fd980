//! The `redis` source kind: server state, streams (entries up to a consistent cut, groups, consumers, every
//! pending entry), dead-letter streams and key families, read-only and streamed. Works on a standalone server or
//! every master of a cluster. See docs/collectors.md for the settings and the artifacts.

mod conn;
mod keys;
mod link;
mod resp;
mod streams;
mod value;

use crate::sources::DefinitionError;
use std::io::Write;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use conn::Node;
pub use conn::READ_COMMANDS;
use keys::KeyFamily;
use streams::StreamJob;
use value::text;

use super::{CollectError, Collection, Outcome, Redaction, Source};
use crate::config::{CredentialRef, Environment};

/// Why a redis collector stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis.password: {0}")]
    Password(#[source] crate::config::CredentialError),
    #[error("redis URL {display}: {source}")]
    Url { display: String, source: redis::RedisError },
    #[error("redis.ca_file is set but {display} is not a rediss:// (TLS) URL")]
    CaWithoutTls { display: String },
    #[error("redis.ca_file {}: {source}", path.display())]
    CaFile { path: std::path::PathBuf, source: std::io::Error },
    #[error("redis.ca_file {}: {source}", path.display())]
    CaCertificate { path: std::path::PathBuf, source: redis::RedisError },
    #[error("cannot connect to {display}: {source}")]
    Connect { display: String, source: redis::RedisError },
    /// `addr` answered, but not as Redis does (an HTTP server, a TLS port spoken to in plain text): what the
    /// client says about the bytes, or the connection the other server closed, is no help to anyone.
    #[error("{addr} did not answer as a Redis server (is this Redis's port?)")]
    NotRedis { addr: String },
    /// A read command failed (`what` names it and its key).
    #[error("{what}: {source}")]
    Command { what: String, source: redis::RedisError },
    /// A page of a stream's entries could not be read or written.
    #[error("XRANGE {key} after {after} entries: {source}")]
    Entries { key: String, after: u64, source: streams::PageError },
}

/// Settings of a `redis` collector. The server is the site's (`[redis]`, `PRESERVE_REDIS_URL`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSource {
    /// Streams to export, by name or glob pattern (`caracal.*`, `*.dlq`, `*.dead`); found with `SCAN ... TYPE
    /// stream`.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Streams to leave out even when `streams` matches them (e.g. `*.dlq` when another collector takes DLQs).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// With `streams`: patterns of streams Caracal's Redis always holds (`["caracal.*"]`: Caracal provisions them at
    /// every start). When the server holds no stream matching any of them, a `warning` finding
    /// `redis.no_caracal_streams` asks whether this is Caracal's Redis at all (a wrong URL, port or database).
    #[serde(default)]
    pub expect_streams: Vec<String>,
    /// Key families to export (`{ pattern = "audit:jti:*" }`, `count_only`, `max_keys`, `max_elements`).
    #[serde(default)]
    pub keys: Vec<KeyFamily>,
    /// Record `INFO`, `CONFIG GET maxmemory-policy appendonly maxmemory` and `CLIENT LIST` (default true).
    #[serde(default = "yes")]
    pub server_info: bool,
    /// Whether the run's window selects stream entries by their id's time (default true).
    #[serde(default = "yes")]
    pub window: bool,
    /// At most this many entries per stream, the newest (default: all).
    pub max_entries: Option<u64>,
    /// Entries, pending entries or keys fetched per round trip (default 500).
    #[serde(default = "page")]
    pub page: usize,
    /// How stream pages are read: `direct` (default: `XRANGE` replies turned into JSON lines straight from the
    /// bytes received, on a connection of their own) or `client` (through the Redis library, as every other
    /// command). TLS connections are always read through the library.
    #[serde(default)]
    pub reader: Reader,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reader {
    #[default]
    Direct,
    Client,
}

fn yes() -> bool {
    true
}
fn page() -> usize {
    // Measured on a 120k-entry DLQ: 200 / 500 / 1000 per page took 0.88 / 0.83 / 0.88 s (docs/performance.md).
    500
}

#[async_trait]
impl Source for RedisSource {
    fn check(&self, _env: &Environment) -> Result<(), DefinitionError> {
        if self.streams.is_empty() && self.keys.is_empty() && !self.server_info {
            return Err(DefinitionError::Shape("a redis collector needs `streams`, `keys` or `server_info`"));
        }
        for p in self.streams.iter().chain(&self.exclude).chain(&self.expect_streams) {
            glob::Pattern::new(p).map_err(|source| DefinitionError::Glob {
                setting: "streams/exclude/expect_streams",
                what: "pattern",
                pattern: p.clone(),
                source,
            })?;
        }
        if self.streams.is_empty() && !self.expect_streams.is_empty() {
            return Err(DefinitionError::OnlyWith { setting: "expect_streams", with: "streams" });
        }
        if self.page == 0 {
            return Err(DefinitionError::Zero("page"));
        }
        Ok(())
    }

    fn credentials(&self, env: &Environment) -> Vec<(String, CredentialRef)> {
        env.redis.password.clone().map(|r| ("redis.password".to_string(), r)).into_iter().collect()
    }

    fn describe(&self, env: &Environment) -> String {
        let mut what = Vec::new();
        if !self.streams.is_empty() {
            what.push(format!("streams {}", self.streams.join(",")));
        }
        if !self.keys.is_empty() {
            what.push(format!("keys {}", self.keys.iter().map(|k| k.pattern.as_str()).collect::<Vec<_>>().join(",")));
        }
        format!("{} {}", env.redis.display, what.join(" "))
    }

    async fn preflight(&self, env: &Environment) -> crate::sources::Readiness {
        use crate::sources::Readiness;
        let mut notes = Vec::new();
        let password = match &env.redis.password {
            Some(r) => match r.resolve() {
                Ok(p) => Some(p),
                Err(_) if env.redis.password_is_default => {
                    notes.push(format!("Caracal's default secret {r} is absent: connecting without AUTH"));
                    None
                }
                Err(e) => return Readiness::Cannot(format!("redis.password: {e}")),
            },
            None => None,
        };
        let info = match conn::connection_info(env, password.as_ref()) {
            Ok(i) => i,
            Err(e) => return Readiness::Cannot(e.to_string()),
        };
        let display = &env.redis.display;
        let probe = async {
            let mut node = Node::connect(info).await?;
            node.query(redis::cmd("INFO").arg("server")).await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
            Ok(Ok(redis::Value::BulkString(b))) if b.windows(14).any(|w| w == b"redis_version:") => {
                Readiness::Ready(notes)
            }
            Ok(Ok(_)) => Readiness::Cannot(format!("{display} answered INFO, but not as a Redis server does")),
            Ok(Err(e)) if link::is_connection_error(&e) || e.kind() == redis::ErrorKind::Io => {
                Readiness::Cannot(format!("cannot connect to {display}: {e} (is Redis running there?)"))
            }
            Ok(Err(e)) if e.kind() == redis::ErrorKind::AuthenticationFailed => {
                Readiness::Cannot(format!("{display} refused the password: check redis.password"))
            }
            Ok(Err(e)) => Readiness::Cannot(format!("{display}: {e} (is this Redis's address and port?)")),
            Err(_) => Readiness::Cannot(format!("{display} did not answer within 5 s (is this Redis's port?)")),
        }
    }

    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError> {
        let mut out = Outcome::default();
        let password = match &cx.env.redis.password {
            Some(r) => match r.resolve() {
                Ok(p) => Some(p),
                Err(_) if cx.env.redis.password_is_default => {
                    out.detail("auth", format!("none: Caracal's default secret {r} is absent"));
                    None
                }
                Err(e) => return Err(Error::Password(e).into()),
            },
            None => None,
        };
        let info = conn::connection_info(&cx.env, password.as_ref())?;
        let label = link::label(&info);
        let mut seed = Node::connect(info).await.map_err(|source| match conn::is_not_resp(&source) {
            true => Error::NotRedis { addr: label },
            false => Error::Connect { display: cx.env.redis.display.clone(), source },
        })?;

        let mut nodes = vec![];
        let cluster = discover(&mut seed, &mut nodes, &mut out).await;
        if nodes.is_empty() {
            nodes.push(seed);
        }
        out.detail("nodes", nodes.iter().map(|n| n.label.clone()).collect::<Vec<_>>());
        out.detail("cluster", cluster);

        let result = self.collect_nodes(&cx, &mut nodes, &mut out).await;
        out.detail("reconnects", nodes.iter().map(|n| n.reconnects).sum::<u32>());
        // What went wrong after another kind of server answered (a reply that does not parse, a connection it
        // closed) all comes from that one cause.
        let result = result.map_err(|e| match nodes.iter().find(|n| n.not_redis) {
            Some(n) => Error::NotRedis { addr: n.label.clone() }.into(),
            None => e,
        });
        result.map(|()| out)
    }
}

impl RedisSource {
    async fn collect_nodes(&self, cx: &Collection, nodes: &mut [Node], out: &mut Outcome) -> Result<(), CollectError> {
        if self.server_info {
            for node in nodes.iter_mut() {
                server_info(cx, node, out).await?;
            }
        }

        let window = if self.window { cx.window } else { Default::default() };
        let mut stream_reports = Vec::new();
        if !self.streams.is_empty() {
            let compile = |ps: &[String]| ps.iter().filter_map(|p| glob::Pattern::new(p).ok()).collect::<Vec<_>>();
            let (patterns, excluded) = (compile(&self.streams), compile(&self.exclude));
            let expected = compile(&self.expect_streams);
            let (mut streams_there, mut expected_there) = (0usize, false);
            let mut found = std::collections::BTreeSet::new();
            for node in nodes.iter_mut() {
                for key in find_streams(cx, node, self.page).await? {
                    let name = String::from_utf8_lossy(&key).into_owned();
                    streams_there += 1;
                    expected_there |= expected.iter().any(|p| p.matches(&name));
                    if !patterns.iter().any(|p| p.matches(&name)) || excluded.iter().any(|p| p.matches(&name)) {
                        continue;
                    }
                    found.insert(name);
                    let direct = self.reader == Reader::Direct && node.reads_directly();
                    let job = StreamJob {
                        cx,
                        node,
                        key: &key,
                        window,
                        max_entries: self.max_entries,
                        page: self.page,
                        direct,
                    };
                    stream_reports.push(job.export().await?);
                }
            }
            let absent: Vec<&String> =
                self.streams.iter().filter(|s| !s.contains(['*', '?', '[']) && !found.contains(*s)).collect();
            if !absent.is_empty() {
                out.detail("absent_streams", absent);
            }
            out.detail("streams", &stream_reports);
            if !expected.is_empty() && !expected_there {
                out.findings.push(not_caracals(cx, &self.expect_streams, streams_there));
            }
        }

        let mut family_reports = Vec::new();
        for family in &self.keys {
            let path = format!("keys/{}.jsonl", safe_name(family.pattern.as_bytes()));
            let mut artifact = cx.artifact(&path, "application/x-ndjson", Redaction::Data)?;
            for node in nodes.iter_mut() {
                family_reports.push(keys::export_family(cx, node, family, self.page, &mut artifact).await?);
            }
            artifact.finish().map_err(|e| CollectError::Io { context: format!("writing {path}"), source: e })?;
        }
        if !family_reports.is_empty() {
            let summary = serde_json::to_vec_pretty(&family_reports)?;
            let mut a = cx.artifact("keys/summary.json", "application/json", Redaction::Data)?;
            a.write_all(&summary)
                .map_err(|e| CollectError::Io { context: "writing keys/summary.json".into(), source: e })?;
            a.finish().map_err(|e| CollectError::Io { context: "writing keys/summary.json".into(), source: e })?;
            out.detail("keys", &family_reports);
        }
        Ok(())
    }
}

/// The finding for a server that holds none of the streams Caracal's Redis always holds.
fn not_caracals(cx: &Collection, expected: &[String], streams_there: usize) -> crate::bundle::manifest::Finding {
    let server = &cx.env.redis.display;
    let patterns: Vec<String> = expected.iter().map(|p| format!("`{p}`")).collect();
    let mut f = cx.finding(
        "redis.no_caracal_streams",
        crate::bundle::manifest::Severity::Warning,
        format!(
            "{server} holds no {} stream ({streams_there} stream(s) in all): is this Caracal's Redis? Caracal \
             provisions its streams at every start; a wrong URL, port or database number reaches another server",
            patterns.join(" or ")
        ),
    );
    f.details.insert("server".into(), json!(server));
    f.details.insert("expected".into(), json!(expected));
    f.details.insert("streams".into(), json!(streams_there));
    f
}

/// On a cluster, connects to every master (streams and keys are read from their owner). Returns whether the
/// server is a cluster; a failure to reach a master is a warning, the others are still read.
async fn discover(seed: &mut Node, nodes: &mut Vec<Node>, out: &mut Outcome) -> bool {
    let Ok(info) = seed.query(redis::cmd("INFO").arg("cluster")).await else { return false };
    if !text(&info).contains("cluster_enabled:1") {
        return false;
    }
    let listing = match seed.query(&redis::cmd("CLUSTER").arg("NODES").to_owned()).await {
        Ok(v) => text(&v),
        Err(e) => {
            out.warn(format!("CLUSTER NODES: {e}; reading only {}", seed.label));
            return true;
        }
    };
    let seed_host = seed.label.rsplit_once(':').map_or(seed.label.clone(), |(h, _)| h.to_string());
    for (host, port) in conn::cluster_masters(&listing, &seed_host) {
        match Node::connect(seed.sibling(&host, port)).await {
            Ok(n) => nodes.push(n),
            Err(e) => out.warn(format!("cluster master {host}:{port}: {e}")),
        }
    }
    true
}

/// `INFO`, `CONFIG GET` and `CLIENT LIST` of one node. A command the ACL forbids is recorded, not fatal: a
/// least-privilege user is the recommended setup.
async fn server_info(cx: &Collection, node: &mut Node, out: &mut Outcome) -> Result<(), CollectError> {
    let dir = format!("server/{}", safe_name(node.label.as_bytes()));
    let info = match node
        .query(
            redis::cmd("INFO")
                .arg("server")
                .arg("replication")
                .arg("memory")
                .arg("persistence")
                .arg("clients")
                .arg("keyspace")
                .arg("stats"),
        )
        .await
    {
        Ok(v) => v,
        // Servers before 7.0 take one section at a time; plain INFO has them all.
        Err(e) if !link::is_connection_error(&e) => node.query(&redis::cmd("INFO")).await.map_err(failed("INFO"))?,
        Err(e) => return Err(failed("INFO")(e)),
    };
    write_text(cx, &format!("{dir}/info.txt"), &text(&info))?;

    let mut denied = Vec::new();
    let config = match node
        .query(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").arg("appendonly").arg("maxmemory"))
        .await
    {
        Ok(v) => value::map_json(&v, |_, v| value::to_json(v)),
        Err(e) if !link::is_connection_error(&e) => {
            denied.push(format!("CONFIG GET: {e}"));
            json!({ "error": e.to_string() })
        }
        Err(e) => return Err(failed("CONFIG GET")(e)),
    };
    write_text(cx, &format!("{dir}/config.json"), &serde_json::to_string_pretty(&config).unwrap_or_default())?;
    match node.query(redis::cmd("CLIENT").arg("LIST")).await {
        Ok(v) => write_text(cx, &format!("{dir}/clients.txt"), &text(&v))?,
        Err(e) if !link::is_connection_error(&e) => denied.push(format!("CLIENT LIST: {e}")),
        Err(e) => return Err(failed("CLIENT LIST")(e)),
    }
    if !denied.is_empty() {
        out.details
            .entry("denied")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|m| m.insert(node.label.clone(), json!(denied)));
    }
    Ok(())
}

/// Every stream key on a node: one `SCAN ... TYPE stream` pass (never `KEYS`).
async fn find_streams(cx: &Collection, node: &mut Node, page: usize) -> Result<Vec<Vec<u8>>, CollectError> {
    let mut cursor = "0".to_string();
    let mut found = std::collections::BTreeSet::new();
    loop {
        if cx.is_cancelled() {
            return Err(CollectError::Cancelled);
        }
        let reply = node
            .query(redis::cmd("SCAN").arg(&cursor).arg("COUNT").arg(page).arg("TYPE").arg("stream"))
            .await
            .map_err(failed("SCAN TYPE stream"))?;
        let (next, keys) = keys::scan_reply(reply);
        found.extend(keys);
        if next == "0" {
            return Ok(found.into_iter().collect());
        }
        cursor = next;
    }
}

fn failed(what: &'static str) -> impl FnOnce(redis::RedisError) -> CollectError {
    move |source| Error::Command { what: what.to_string(), source }.into()
}

fn write_text(cx: &Collection, path: &str, text: &str) -> Result<(), CollectError> {
    cx.write_small(path, if path.ends_with(".json") { "application/json" } else { "text/plain" }, text.as_bytes())
}

/// A key or name as a file name: kept when it is plain (`caracal.audit.events.dlq`), otherwise made safe and
/// suffixed with a hash of the original so two keys never share a folder.
pub fn safe_name(raw: &[u8]) -> String {
    let plain = std::str::from_utf8(raw).ok().filter(|s| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.len() <= 120
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    });
    match plain {
        Some(s) => s.to_string(),
        None => {
            let cleaned: String = String::from_utf8_lossy(raw)
                .chars()
                .take(80)
                .map(|c| if c.is_ascii_alphanumeric() || "._:-".contains(c) { c } else { '_' })
                .collect();
            format!("{}~{}", cleaned.trim_start_matches('.'), &hex::encode(Sha256::digest(raw))[..12])
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn safe_names() {
        assert_eq!(super::safe_name(b"caracal.audit.events.dlq"), "caracal.audit.events.dlq");
        assert_eq!(super::safe_name(b"gateway-revocation:host-1"), "gateway-revocation:host-1");
        let odd = super::safe_name(b"a/b c");
        assert!(odd.starts_with("a_b_c~") && odd.len() == "a_b_c~".len() + 12, "{odd}");
        assert_ne!(super::safe_name(b"a/b"), super::safe_name(b"a b"));
        assert!(super::safe_name(&[0xff, 0xfe]).starts_with("__~"));
    }
}

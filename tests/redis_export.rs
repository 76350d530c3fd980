//! The runbook's first ask for three of its critical triggers: "Redis stream status, pending entries, and DLQ
//! contents". Against real `redis-server` processes holding Caracal-shaped data, the export must be exact,
//! consistent while producers keep writing, read-only under a least-privilege ACL user, and survive faults.

mod support;

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::{Value as Json, json};
use support::{
    redis::{RedisServer, redis_quote},
    *,
};

const T0: u64 = 1_764_370_000_000; // 2025-11-28T22:46:40Z, ids below are T0+n ms

/// One stream entry of the fixture: id and (field, value) pairs, value bytes as given.
struct Entry {
    id: String,
    fields: Vec<(&'static str, Vec<u8>)>,
}

fn json_bytes(b: &[u8]) -> Json {
    use base64::Engine;
    match std::str::from_utf8(b) {
        Ok(s) => json!(s),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

/// Expected PEL per (stream, group): (id, consumer, deliveries).
type Pels = BTreeMap<(&'static str, &'static str), Vec<(String, &'static str, i64)>>;

/// Caracal's streams, groups, PELs, DLQ and keys (caracal.md §1), with ids and values the test knows.
struct Fixture {
    streams: BTreeMap<&'static str, Vec<Entry>>,
    /// (stream, group) -> [(id, consumer, deliveries)]
    pending: Pels,
}

fn load_fixture(r: &RedisServer) -> Fixture {
    let mut streams: BTreeMap<&'static str, Vec<Entry>> = BTreeMap::new();
    let audit: Vec<Entry> = (0..40)
        .map(|i| Entry {
            id: format!("{}-0", T0 + i),
            fields: vec![
                ("id", format!("evt-{i:04}").into_bytes()),
                ("data", format!("{{\"id\":\"evt-{i:04}\",\"zone_id\":\"z1\",\"event_type\":\"token.exchange\",\"request_id\":\"req-{i}\",\"decision\":\"allow\"}}").into_bytes()),
                ("sig", format!("{:064x}", i * 7919).into_bytes()),
            ],
        })
        .collect();
    streams.insert("caracal.audit.events", audit);
    let dlq: Vec<Entry> = (0..5)
        .map(|i| Entry {
            id: format!("{}-{}", T0 + 1000, i),
            fields: vec![
                (
                    "reason",
                    if i == 0 { b"hmac_verify_failed".to_vec() } else { b"json_parse_error:unexpected EOF".to_vec() },
                ),
                ("src_id", format!("evt-bad-{i}").into_bytes()),
                ("received_at", (T0 + 1000).to_string().into_bytes()),
                // A binary value, as a corrupted frame would carry.
                ("src_data", if i == 2 { vec![0xff, 0x00, 0x7b, 0x22] } else { b"{\"id\":\"evt-bad\"".to_vec() }),
                ("src_sig", b"deadbeef".to_vec()),
            ],
        })
        .collect();
    streams.insert("caracal.audit.events.dlq", dlq);
    let revoke: Vec<Entry> = (0..12)
        .map(|i| Entry {
            id: format!("{}-0", T0 + 2000 + i),
            fields: vec![
                ("zone_id", b"z1".to_vec()),
                ("session_id", format!("ar_{i}").into_bytes()),
                ("agent_session_id", format!("as_{i}").into_bytes()),
                ("delegation_edge_id", format!("de_{i}").into_bytes()),
                ("reason", b"operator_revoke".to_vec()),
                ("outbox_id", format!("ob-{i}").into_bytes()),
                ("dedupe_key", format!("revoke:ar_{i}").into_bytes()),
                ("_sig", format!("{:064x}", i).into_bytes()),
            ],
        })
        .collect();
    streams.insert("caracal.sessions.revoke", revoke);
    streams.insert(
        "caracal.sessions.revoke.dead",
        vec![Entry {
            id: format!("{}-0", T0 + 3000),
            fields: vec![
                ("original_id", format!("{}-0", T0 + 2003).into_bytes()),
                ("error", b"apply revocation: context deadline exceeded".to_vec()),
                ("values", b"{\"zone_id\":\"z1\",\"session_id\":\"ar_3\"}".to_vec()),
                ("_sig", b"abc123".to_vec()),
            ],
        }],
    );

    let mut script = String::new();
    for (key, entries) in &streams {
        for e in entries {
            script.push_str(&format!("XADD {key} {}", e.id));
            for (f, v) in &e.fields {
                script.push_str(&format!(" {f} {}", redis_quote(v)));
            }
            script.push('\n');
        }
    }
    script.push_str(
        "XGROUP CREATE caracal.audit.events audit-ingestor 0\n\
         XGROUP CREATE caracal.audit.events siem-export $\n\
         XGROUP CREATE caracal.sessions.revoke gateway-revocation:gw-0 0\n\
         XGROUP CREATE caracal.sessions.revoke gateway-revocation:gw-1 0\n\
         XGROUP CREATE caracal.sessions.revoke sts-revocation $\n\
         XGROUP CREATE caracal.audit.events.dlq audit-dlq-observer 0\n\
         XREADGROUP GROUP audit-ingestor audit-worker-0 COUNT 10 STREAMS caracal.audit.events >\n\
         XREADGROUP GROUP gateway-revocation:gw-0 gateway-gw-0-17 COUNT 3 STREAMS caracal.sessions.revoke >\n\
         XREADGROUP GROUP gateway-revocation:gw-1 gateway-gw-1-23 COUNT 5 STREAMS caracal.sessions.revoke >\n",
    );
    // Redeliveries: XCLAIM moves an entry and counts a delivery.
    for (i, times) in [(2u64, 1), (5, 3)] {
        for _ in 0..times {
            script.push_str(&format!("XCLAIM caracal.audit.events audit-ingestor audit-worker-1 0 {}-0\n", T0 + i));
        }
    }
    // Acknowledged entries leave the PEL.
    script.push_str(&format!("XACK caracal.audit.events audit-ingestor {}-0\n", T0 + 9));
    // Short-lived keys of Caracal's families, and every value type, one binary.
    script.push_str(
        "SET audit:jti:8c1d app-1|1764370000 EX 900\n\
         SET audit:jti:9e2f app-2|1764370100 EX 900\n\
         SET seen:jti:8c1d req-77 PX 600000\n\
         SET stream-failure:caracal.sessions.revoke:gateway-revocation:gw-0:1764370002003-0 4 EX 86400\n\
         SET api:admin_auth_fail:10.0.0.9:29406172 7 EX 90\n\
         SET provider-refresh-circuit:prov-1 open\n\
         HSET fixture:hash field-a 1 field-b \"\\xfe\\xff\"\n\
         SADD fixture:set m1 m2 m3\n\
         ZADD fixture:zset 1.5 low 10 high\n\
         RPUSH fixture:list first second third\n\
         SET \"fixture:\\xff\\xfebinary-key\" \"\\x00\\x01value\"\n",
    );
    r.script(&script);

    let mut pending = BTreeMap::new();
    let mut audit_pel: Vec<(String, &str, i64)> =
        (0..10u64).filter(|i| *i != 9).map(|i| (format!("{}-0", T0 + i), "audit-worker-0", 1)).collect();
    for (i, times) in [(2u64, 1i64), (5, 3)] {
        let e = audit_pel.iter_mut().find(|e| e.0 == format!("{}-0", T0 + i)).unwrap();
        e.1 = "audit-worker-1";
        e.2 = 1 + times;
    }
    pending.insert(("caracal.audit.events", "audit-ingestor"), audit_pel);
    pending.insert(("caracal.audit.events", "siem-export"), vec![]);
    pending.insert(
        ("caracal.sessions.revoke", "gateway-revocation:gw-0"),
        (0..3).map(|i| (format!("{}-0", T0 + 2000 + i), "gateway-gw-0-17", 1)).collect(),
    );
    pending.insert(
        ("caracal.sessions.revoke", "gateway-revocation:gw-1"),
        (0..5).map(|i| (format!("{}-0", T0 + 2000 + i), "gateway-gw-1-23", 1)).collect(),
    );
    pending.insert(("caracal.sessions.revoke", "sts-revocation"), vec![]);
    pending.insert(("caracal.audit.events.dlq", "audit-dlq-observer"), vec![]);
    Fixture { streams, pending }
}

fn collectors(ws: &Workspace, extra: &str) -> std::path::PathBuf {
    collectors_dir(
        ws,
        "redis.toml",
        &format!(
            r#"
[[collector]]
name = "redis-evidence"
kind = "redis"
streams = ["caracal.*", "*.dlq", "*.dead"]
keys = [
  {{ pattern = "audit:jti:*" }},
  {{ pattern = "seen:jti:*" }},
  {{ pattern = "stream-failure:*" }},
  {{ pattern = "api:admin_auth_fail:*" }},
  {{ pattern = "provider-refresh-circuit:*" }},
  {{ pattern = "fixture:*" }},
  {{ pattern = "caracal:sts:gw-nonce:*", count_only = true }},
]
{extra}
"#
        ),
    )
}

fn read_jsonl(p: &Path) -> Vec<Json> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn snapshot(ws: &Workspace, dir: &Path, url: &str) -> std::process::Output {
    run(ws.snapshot(dir).args(["-c", "redis-evidence"]).env("PRESERVE_REDIS_URL", url))
}

#[test]
fn caracal_streams_groups_pending_and_keys_are_exported_exactly() {
    exported_exactly("direct");
}

/// The client library's reader (and TLS's) writes the same entries as the direct one.
#[test]
fn the_client_reader_exports_the_same_entries() {
    exported_exactly("client");
}

/// Two entries a page, so every stream is paged, with each reader.
fn exported_exactly(reader: &str) {
    let ws = Workspace::new();
    let r = RedisServer::start(&ws.path().join("redis"), &[]);
    let fx = load_fixture(&r);
    let dir = collectors(&ws, &format!("page = 2\nreader = \"{reader}\""));
    let out = snapshot(&ws, &dir, &r.url());
    assert_eq!(out.status.code(), Some(0), "complete");
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let data = bag.join("data/redis-evidence");

    for (key, entries) in &fx.streams {
        let got = read_jsonl(&data.join(format!("streams/{key}/entries.jsonl")));
        let want: Vec<Json> = entries
            .iter()
            .map(|e| json!({ "id": e.id, "fields": e.fields.iter().map(|(f, v)| json!([f, json_bytes(v)])).collect::<Vec<_>>() }))
            .collect();
        assert_eq!(got, want, "entries of {key}");
    }
    for ((key, group), want) in &fx.pending {
        let got = read_jsonl(&data.join(format!("streams/{key}/pending/{group}.jsonl")));
        let got: Vec<(String, String, i64)> = got
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_string(),
                    p["consumer"].as_str().unwrap().to_string(),
                    p["deliveries"].as_i64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, String, i64)> = want.iter().map(|(i, c, d)| (i.clone(), c.to_string(), *d)).collect();
        assert_eq!(got, want, "PEL of {key} / {group}");
    }

    // Groups and consumers, from XINFO.
    let xinfo: Json =
        serde_json::from_slice(&std::fs::read(data.join("streams/caracal.sessions.revoke/xinfo.json")).unwrap())
            .unwrap();
    let groups: Vec<&str> = xinfo["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(groups, ["gateway-revocation:gw-0", "gateway-revocation:gw-1", "sts-revocation"]);
    let gw1 = &xinfo["groups"][1];
    assert_eq!(gw1["pending"], 5);
    assert_eq!(gw1["last-delivered-id"], format!("{}-0", T0 + 2004));
    assert_eq!(gw1["consumers"][0]["name"], "gateway-gw-1-23");
    assert_eq!(gw1["consumers"][0]["pending"], 5);
    assert_eq!(xinfo["stream"]["last-generated-id"], format!("{}-0", T0 + 2011));
    let audit: Json =
        serde_json::from_slice(&std::fs::read(data.join("streams/caracal.audit.events/xinfo.json")).unwrap()).unwrap();
    let consumers: Vec<&str> =
        audit["groups"][0]["consumers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(consumers, ["audit-worker-0", "audit-worker-1"]);

    // The manifest's stream record: cut id, counts, first/last, trimming.
    let m = manifest(&bag);
    let c = collector(&m, "redis-evidence");
    let dlq =
        c["details"]["streams"].as_array().unwrap().iter().find(|s| s["key"] == "caracal.audit.events.dlq").unwrap();
    assert_eq!(dlq["cut_id"], format!("{}-4", T0 + 1000));
    assert_eq!(dlq["exported"], 5);
    assert_eq!(dlq["first_exported_id"], format!("{}-0", T0 + 1000));
    assert_eq!(dlq["last_exported_id"], format!("{}-4", T0 + 1000));
    assert_eq!(dlq["missing_below_cut"], 0);
    assert_eq!(dlq["reader"], reader);
    let entries_artifact = c["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "data/redis-evidence/streams/caracal.audit.events.dlq/entries.jsonl")
        .unwrap();
    assert_eq!(entries_artifact["records"], 5);

    // Keys: type, TTL, value; binary keys and values marked.
    let mut keys: BTreeMap<String, Json> = BTreeMap::new();
    for f in std::fs::read_dir(data.join("keys")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "jsonl") {
            for k in read_jsonl(&p) {
                keys.insert(k["key"].to_string(), k);
            }
        }
    }
    let jti = &keys["\"audit:jti:8c1d\""];
    assert_eq!(jti["type"], "string");
    assert_eq!(jti["value"], "app-1|1764370000");
    let ttl = jti["pttl_ms"].as_i64().unwrap();
    assert!(ttl > 800_000 && ttl <= 900_000, "{ttl}");
    assert_eq!(keys["\"provider-refresh-circuit:prov-1\""]["pttl_ms"], -1);
    assert_eq!(keys["\"fixture:hash\""]["value"], json!([["field-a", "1"], ["field-b", {"base64": "/v8="}]]));
    let mut set: Vec<String> =
        keys["\"fixture:set\""]["value"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    set.sort();
    assert_eq!(set, ["m1", "m2", "m3"]);
    assert_eq!(keys["\"fixture:zset\""]["value"], json!([["low", "1.5"], ["high", "10"]]));
    assert_eq!(keys["\"fixture:list\""]["value"], json!(["first", "second", "third"]));
    let binary_key = json!({ "base64": base64_of(b"fixture:\xff\xfebinary-key") }).to_string();
    assert_eq!(keys[&binary_key]["value"], json_bytes(b"\x00\x01value"));
    let summary = &c["details"]["keys"];
    let nonce = summary.as_array().unwrap().iter().find(|f| f["pattern"] == "caracal:sts:gw-nonce:*").unwrap();
    assert_eq!(nonce["matched"], 0);
    assert_eq!(run(ws.preserve().arg("verify").arg(ws.only_bundle())).status.code(), Some(0));
}

/// Checks a complete snapshot exported every fixture stream's entries, each stream read by `reader`; returns the
/// manifest.
fn every_stream_read_by(ws: &Workspace, out: &std::process::Output, fx: &Fixture, reader: &str) -> Json {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    for (key, entries) in &fx.streams {
        let got = read_jsonl(&bag.join(format!("data/redis-evidence/streams/{key}/entries.jsonl")));
        let ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids, entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), "entries of {key}");
    }
    let m = manifest(&bag);
    let streams = &collector(&m, "redis-evidence")["details"]["streams"];
    assert!(streams.as_array().unwrap().iter().all(|s| s["reader"] == reader), "{streams}");
    m
}

/// Over a Unix socket, with a password and a database other than 0: the direct reader authenticates and selects
/// the database as the client connection does (without `SELECT` it would read the empty database 0).
#[test]
fn a_unix_socket_with_a_password_and_a_database_is_read_directly() {
    let ws = Workspace::new();
    let sock = ws.path().join("redis.sock");
    let r = RedisServer::start(
        &ws.path().join("redis"),
        &["--unixsocket", sock.to_str().unwrap(), "--unixsocketperm", "700"],
    );
    let fx = load_fixture(&r);
    r.cli(&["SWAPDB", "0", "3"]).unwrap();
    r.cli(&["CONFIG", "SET", "requirepass", "sock-pass-9d2e"]).unwrap();
    let dir = collectors(&ws, "page = 2");
    let out = snapshot(&ws, &dir, &format!("unix://{}?db=3&pass=sock-pass-9d2e", sock.display()));
    let m = every_stream_read_by(&ws, &out, &fx, "direct");
    assert!(!m.to_string().contains("sock-pass-9d2e"), "the password never reaches the manifest");
}

/// `rediss://` with a private CA (`[redis] ca_file`): the server's certificate is checked against that CA, and the
/// entries are read through the client library (the direct reader does not do TLS). Without the CA it is refused.
#[test]
fn tls_with_a_private_ca_is_checked_and_read_through_the_client() {
    let ws = Workspace::new();
    let (ca, cert, key) = certificates(&["127.0.0.1"]);
    let (cert, key, ca) = (ws.write("tls/redis.crt", cert), ws.write("tls/redis.key", key), ws.write("tls/ca.pem", ca));
    let tls_port = support::redis::free_port().to_string();
    let r = RedisServer::start(
        &ws.path().join("redis"),
        &[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
    );
    let fx = load_fixture(&r);
    let dir = collectors(&ws, "page = 2");
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    // A snapshot in `w` of the server at `url`, the CA given as `[redis] ca_file`.
    let with_ca = |w: &Workspace, url: &str| {
        let config = w.write("preserve.toml", format!("[redis]\nca_file = \"{}\"\n", ca.display()));
        run(w.snapshot(&dir).arg("--config").arg(&config).args(["-c", "redis-evidence"]).env("PRESERVE_REDIS_URL", url))
    };
    every_stream_read_by(&ws, &with_ca(&ws, &url), &fx, "client");

    // The same server without its CA: the public roots do not vouch for it.
    let other = Workspace::new();
    let out = run(other.snapshot(&dir).args(["-c", "redis-evidence"]).env("PRESERVE_REDIS_URL", &url));
    assert_eq!(out.status.code(), Some(3));
    let c = collector(&other.side_manifest(), "redis-evidence").clone();
    assert_eq!(c["status"], "failed");
    assert!(c["error"].as_str().unwrap().to_lowercase().contains("certificate"), "{}", c["error"]);

    // A CA for a URL without TLS is a mistake worth naming, not something to ignore.
    let plain = Workspace::new();
    assert_eq!(with_ca(&plain, &r.url()).status.code(), Some(3));
    let c = collector(&plain.side_manifest(), "redis-evidence").clone();
    assert!(c["error"].as_str().unwrap().contains("is not a rediss://"), "{}", c["error"]);
}

#[test]
fn builtin_caracal_collectors_split_streams_and_dead_letters() {
    let ws = Workspace::new();
    let r = RedisServer::start(&ws.path().join("redis"), &[]);
    load_fixture(&r);
    let out = run(ws
        .preserve()
        .args(["snapshot", "-q", "-c", "redis-streams", "-c", "redis-dlq", "-c", "redis-keys"])
        .env("PRESERVE_REDIS_URL", r.url()));
    assert_eq!(out.status.code(), Some(0));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let dirs = |c: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(bag.join(format!("data/{c}/streams")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(dirs("redis-streams"), ["caracal.audit.events", "caracal.sessions.revoke"]);
    assert_eq!(dirs("redis-dlq"), ["caracal.audit.events.dlq", "caracal.sessions.revoke.dead"]);
    let m = manifest(&bag);
    let keys = collector(&m, "redis-keys")["details"]["keys"].as_array().unwrap().clone();
    let jti = keys.iter().find(|k| k["pattern"] == "audit:jti:*").unwrap();
    assert_eq!(jti["exported"], 2);
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn export_is_a_consistent_cut_while_producers_keep_writing() {
    let ws = Workspace::new();
    let r = RedisServer::start(&ws.path().join("redis"), &[]);
    // 30k entries first, so the export takes long enough for the writer to interleave.
    let mut bulk = String::new();
    for i in 0..30_000u64 {
        bulk.push_str(&format!(
            "XADD caracal.audit.events * id evt-{i} data {}\n",
            redis_quote(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200)).as_bytes())
        ));
    }
    pipe(&r, &bulk);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let port = r.port;
        std::thread::spawn(move || {
            let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
            let mut con = client.get_connection().unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _: String = ::redis::cmd("XADD")
                    .arg("caracal.audit.events")
                    .arg("*")
                    .arg("id")
                    .arg(format!("late-{n}"))
                    .query(&mut con)
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let dir = collectors(&ws, "");
    let out = snapshot(&ws, &dir, &r.url());
    stop.store(true, Ordering::Relaxed);
    let written_during = writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(written_during > 0);

    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let report = collector(&m, "redis-evidence")["details"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "caracal.audit.events")
        .unwrap()
        .clone();
    let cut = report["cut_id"].as_str().unwrap().to_string();
    let got: Vec<String> = read_jsonl(&bag.join("data/redis-evidence/streams/caracal.audit.events/entries.jsonl"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    // Every id up to the cut, in order, none after it: compare with the server's own list.
    let client = ::redis::Client::open(r.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let want: Vec<String> = ::redis::cmd("XRANGE")
        .arg("caracal.audit.events")
        .arg("-")
        .arg(&cut)
        .query::<Vec<(String, Vec<(String, String)>)>>(&mut con)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got.len(), want.len(), "gap-free up to the cut");
    assert_eq!(got, want);
    assert_eq!(got.last().unwrap(), &cut, "ends exactly at the cut");
    let after: Vec<(String, Vec<(String, String)>)> = ::redis::cmd("XRANGE")
        .arg("caracal.audit.events")
        .arg(format!("({cut}"))
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(&mut con)
        .unwrap();
    assert!(!after.is_empty(), "producers wrote past the cut while the export ran");
    assert_eq!(report["exported"].as_u64().unwrap() as usize, want.len());
}

/// Sends many commands fast with `redis-cli --pipe` (the data must be in RESP).
fn pipe(r: &RedisServer, commands: &str) {
    use std::io::Write;
    let mut resp = Vec::new();
    for line in commands.lines() {
        let args = shell_words(line);
        resp.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            resp.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            resp.extend_from_slice(&a);
            resp.extend_from_slice(b"\r\n");
        }
    }
    let mut child = Command::new("redis-cli")
        .args(["-p", &r.port.to_string(), "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&resp).unwrap();
    assert!(child.wait().unwrap().success());
}

/// Splits a fixture line the way redis-cli does for the quoting used here.
fn shell_words(line: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
            continue;
        }
        let mut word = Vec::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('x') => {
                            let h: String = [chars.next().unwrap(), chars.next().unwrap()].iter().collect();
                            word.push(u8::from_str_radix(&h, 16).unwrap());
                        }
                        Some(o) => word.push(o as u8),
                        None => {}
                    },
                    c => word.extend_from_slice(c.to_string().as_bytes()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                word.extend_from_slice(c.to_string().as_bytes());
                chars.next();
            }
        }
        out.push(word);
    }
    out
}

fn digest_and_state(r: &RedisServer) -> (String, Vec<String>) {
    let digest = r.cli(&["DEBUG", "DIGEST"]).unwrap();
    let mut full = Vec::new();
    for key in
        ["caracal.audit.events", "caracal.audit.events.dlq", "caracal.sessions.revoke", "caracal.sessions.revoke.dead"]
    {
        full.push(r.cli(&["XINFO", "STREAM", key, "FULL"]).unwrap());
    }
    for key in ["audit:jti:8c1d", "fixture:hash", "fixture:list"] {
        full.push(r.cli(&["DUMP", key]).unwrap());
    }
    (digest, full)
}

#[test]
fn full_export_under_a_read_only_acl_user_changes_nothing_and_sends_no_write() {
    let ws = Workspace::new();
    let r = RedisServer::start(&ws.path().join("redis"), &[]);
    let fx = load_fixture(&r);
    // The least-privilege user of the runbook: reads, connection commands and INFO; nothing that writes.
    r.cli(&[
        "ACL",
        "SETUSER",
        "preserve",
        "on",
        ">ro-pass-4c1f",
        "~*",
        "&*",
        "+@read",
        "+@connection",
        "-@write",
        "-@admin",
        "-@dangerous",
        "+info",
    ])
    .unwrap();
    let before = digest_and_state(&r);
    r.cli(&["CONFIG", "RESETSTAT"]).unwrap();

    let cfg = ws.write("site.toml", format!("[redis]\nurl = \"redis://127.0.0.1:{}/0\"\nusername = \"preserve\"\npassword = \"env:PRESERVE_TEST_REDIS_PASSWORD\"\n", r.port));
    let dir = collectors(&ws, "");
    let out = run(ws
        .snapshot(&dir)
        .args(["-c", "redis-evidence", "--config"])
        .arg(&cfg)
        .env("PRESERVE_TEST_REDIS_PASSWORD", "ro-pass-4c1f"));
    assert_eq!(out.status.code(), Some(0), "the full export works under the read-only user");

    let stats = r.cli(&["INFO", "commandstats"]).unwrap();
    let after = digest_and_state(&r);
    assert_eq!(before.0, after.0, "DEBUG DIGEST unchanged");
    assert_eq!(before.1, after.1, "XINFO STREAM FULL and DUMP unchanged");

    let mut sent = Vec::new();
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_")) {
        let name = line.trim_start_matches("cmdstat_").split(':').next().unwrap().to_string();
        sent.push(name);
    }
    assert!(sent.iter().any(|c| c == "xrange") && sent.iter().any(|c| c == "xpending"), "{sent:?}");
    for name in &sent {
        let base = name.split('|').next().unwrap();
        assert!(
            !["xreadgroup", "xack", "xclaim", "xautoclaim", "xgroup", "xtrim", "xdel", "keys"].contains(&base),
            "forbidden command {name} was sent"
        );
        let info = r.cli(&["COMMAND", "INFO", base]).unwrap();
        let is_write = info.lines().any(|l| l.contains("\"write\""));
        // `config|resetstat` and `info` are the test's own calls.
        assert!(!is_write, "a write command was sent: {name}");
    }

    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let got = read_jsonl(&bag.join("data/redis-evidence/streams/caracal.audit.events/entries.jsonl"));
    assert_eq!(got.len(), fx.streams["caracal.audit.events"].len());
    let m = manifest(&bag);
    let denied = collector(&m, "redis-evidence")["details"]["denied"].to_string();
    assert!(
        denied.contains("CONFIG GET") && denied.contains("no permissions"),
        "a refused CONFIG is recorded: {denied}"
    );
    let secrets = files_below(&bag).into_iter().any(|(_, b)| String::from_utf8_lossy(&b).contains("ro-pass-4c1f"));
    assert!(!secrets, "the password never reaches the bundle");
}

/// A big DLQ, so an export takes long enough to be interrupted.
fn big_stream(r: &RedisServer, n: u64) {
    let mut bulk = String::new();
    for i in 0..n {
        bulk.push_str(&format!(
            "XADD caracal.audit.events.dlq * reason {} src_id evt-{i} received_at {} src_data {}\n",
            redis_quote(b"transient_exceeded_max_deliveries:pg timeout"),
            T0 + i,
            redis_quote(
                format!("{{\"id\":\"evt-{i}\",\"zone_id\":\"z1\",\"pad\":\"{}\"}}", "p".repeat(400)).as_bytes()
            )
        ));
    }
    pipe(r, &bulk);
}

#[test]
fn server_killed_mid_export_gives_a_partial_bundle_that_verifies() {
    let ws = Workspace::new();
    let mut r = RedisServer::start(&ws.path().join("redis"), &[]);
    big_stream(&r, 120_000);
    let dir = collectors(&ws, "page = 200");
    let mut child = ws
        .snapshot(&dir)
        .args(["-c", "redis-evidence", "--collector", "context"])
        .env("PRESERVE_REDIS_URL", r.url())
        .spawn()
        .unwrap();
    ws.wait_for_staged("redis-evidence/streams/caracal.audit.events.dlq/entries.jsonl", 32 << 10, &mut child);
    r.kill();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "partial bundle");
    let bundle = ws.only_bundle();
    assert_eq!(run(ws.preserve().arg("verify").arg(&bundle)).status.code(), Some(0));
    let bag = unpack(&bundle, &ws.path().join("x"));
    let m = manifest(&bag);
    let c = collector(&m, "redis-evidence");
    assert_eq!(c["status"], "failed");
    assert!(c["error"].as_str().unwrap().contains("XRANGE caracal.audit.events.dlq"), "{}", c["error"]);
    let a = c["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"].as_str().unwrap().ends_with("dlq/entries.jsonl"))
        .unwrap();
    let records = a["records"].as_u64().unwrap();
    assert!(records > 0 && records < 120_000, "what was exported is kept: {records}");
    assert_eq!(a["truncated"], true);
    assert_eq!(
        read_jsonl(&bag.join(a["path"].as_str().unwrap())).len() as u64,
        records,
        "records match the kept lines"
    );
    assert_eq!(collector(&m, "context")["status"], "ok", "other collectors are unaffected");
}

#[test]
fn a_dropped_connection_is_resumed_once_from_the_last_exported_id() {
    let ws = Workspace::new();
    let r = RedisServer::start(&ws.path().join("redis"), &[]);
    big_stream(&r, 120_000);
    let dir = collectors(&ws, "page = 200");
    let mut child =
        ws.snapshot(&dir).args(["-c", "redis-evidence"]).env("PRESERVE_REDIS_URL", r.url()).spawn().unwrap();
    ws.wait_for_staged("redis-evidence/streams/caracal.audit.events.dlq/entries.jsonl", 32 << 10, &mut child);
    r.cli(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "resumed and complete");
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let ids: Vec<String> = read_jsonl(&bag.join("data/redis-evidence/streams/caracal.audit.events.dlq/entries.jsonl"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 120_000, "no entry lost or repeated");
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    let m = manifest(&bag);
    assert_eq!(collector(&m, "redis-evidence")["details"]["reconnects"], 1);
}

#[test]
fn refused_connection_and_bad_password_fail_the_collector_not_the_bundle() {
    let ws = Workspace::new();
    let dir = collectors(&ws, "");
    let closed = support::redis::free_port();
    let out = run(ws
        .snapshot(&dir)
        .args(["-c", "redis-evidence", "-c", "context"])
        .env("PRESERVE_REDIS_URL", format!("redis://127.0.0.1:{closed}/0")));
    assert_eq!(out.status.code(), Some(3));
    let m = ws.side_manifest();
    let c = collector(&m, "redis-evidence");
    assert_eq!(c["status"], "failed");
    assert!(c["error"].as_str().unwrap().contains("cannot connect"), "{}", c["error"]);

    let ws = Workspace::new();
    let r = RedisServer::start(&ws.path().join("redis"), &["--requirepass", "right-pass-1234"]);
    let dir = collectors(&ws, "");
    let out = run(ws
        .snapshot(&dir)
        .args(["-c", "redis-evidence"])
        .env("PRESERVE_REDIS_URL", format!("redis://:wrong-pass-5678@127.0.0.1:{}/0", r.port)));
    assert_eq!(out.status.code(), Some(3));
    let m = ws.side_manifest();
    let c = collector(&m, "redis-evidence");
    assert_eq!(c["status"], "failed");
    let err = c["error"].as_str().unwrap();
    assert!(err.to_lowercase().contains("authentication failed"), "{err}");
    assert!(!m.to_string().contains("wrong-pass-5678"), "the password never reaches the manifest");
}

#[test]
fn window_by_id_time_and_entry_cap_keep_the_right_entries() {
    let ws = Workspace::new();
    let r = RedisServer::start(&ws.path().join("redis"), &[]);
    // One entry per minute from 10:00 to 10:09 UTC, by id time.
    let base = "2026-11-29T10:00:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let script: String =
        (0..10).map(|i| format!("XADD caracal.sessions.revoke {}-0 n {i}\n", base + i * 60_000)).collect();
    r.script(&script);
    let dir = collectors_dir(
        &ws,
        "w.toml",
        "[[collector]]\nname = \"win\"\nkind = \"redis\"\nstreams = [\"caracal.*\"]\nserver_info = false\n\n\
         [[collector]]\nname = \"cap\"\nkind = \"redis\"\nstreams = [\"caracal.*\"]\nserver_info = false\nwindow = false\nmax_entries = 3\npage = 2\n",
    );
    let out = run(ws
        .preserve()
        .args([
            "snapshot",
            "-q",
            "-c",
            "win",
            "-c",
            "cap",
            "--since",
            "2026-11-29T10:02:00Z",
            "--until",
            "2026-11-29T10:05:30Z",
            "--collectors",
        ])
        .arg(&dir)
        .env("PRESERVE_REDIS_URL", r.url()));
    assert_eq!(out.status.code(), Some(0));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let ns = |c: &str| -> Vec<String> {
        read_jsonl(&bag.join(format!("data/{c}/streams/caracal.sessions.revoke/entries.jsonl")))
            .iter()
            .map(|e| e["fields"][0][1].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ns("win"), ["2", "3", "4", "5"], "10:02 to 10:05:30, both ends inclusive");
    assert_eq!(ns("cap"), ["7", "8", "9"], "the newest three");
    let m = manifest(&bag);
    let cap = &collector(&m, "cap")["details"]["streams"][0];
    assert_eq!(cap["truncated"], true);
    let win = &collector(&m, "win")["details"]["streams"][0];
    assert_eq!(win["truncated"], false);
    assert_eq!(win["exported"], 4);
}

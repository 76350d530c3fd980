//! Issue 14, items 5 and 6: the redaction corpus (`tests/corpus/redaction.toml`) through every source kind in one
//! snapshot. Each secret shape is planted, with a canary of its own, where its entry says it is written: log files,
//! YAML, env, TOML and JSON files, Docker json-file logs (plain and as a service's JSON line), Redis stream entries,
//! strings and binary values, PostgreSQL rows, HTTP bodies and headers, compared configuration, a command's output;
//! the one value preserve knows is planted in each spelling systems write it in. Then no canary and no spelling of
//! the known value may be anywhere: the unpacked bundle (every file, manifest and tag files included), the side
//! files, the run's output. And the evidence the corpus keeps must come out verbatim.
//!
//! `REDACTION_CORPUS=path` runs another corpus file (candidate shapes) through the same harness.

mod support;

#[path = "support/corpus.rs"]
mod corpus;

use std::{
    fmt::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
};

use axum::{
    Router,
    http::{HeaderName, HeaderValue, header},
    response::IntoResponse,
    routing::get,
};
use corpus::{Corpus, Place, Planted, go_escape, json_inner};
use serde_json::json;
use support::{
    postgres::PgServer,
    redis::{RedisServer, redis_quote},
    *,
};

/// Files of the `file` kind, by format.
const FILES: &[(Place, &str)] = &[
    (Place::Text, "corpus.log"),
    (Place::Yaml, "corpus.yaml"),
    (Place::Env, "corpus.env"),
    (Place::Toml, "corpus.toml"),
    (Place::Json, "corpus.json"),
];

/// The entries' texts one after another, each ending its line.
fn joined(entries: &[&Planted]) -> String {
    entries.iter().map(|p| format!("{}\n", p.text)).collect()
}

/// Docker json-file records of `lines` as Docker's daemon (Go) writes them; `wrapped`: each line first becomes the
/// service's own JSON log line, so what it holds is escaped twice.
fn docker_records(entries: &[&Planted], wrapped: bool) -> Vec<String> {
    // One time for every record (the collector reads them all, window = false), so a kept line's record is known.
    let at = "2026-11-29T10:00:00.000000000Z";
    entries
        .iter()
        .flat_map(|p| p.text.lines().map(str::to_string).collect::<Vec<_>>())
        .map(|line| {
            let log = if wrapped { json!({ "level": "info", "msg": line }).to_string() } else { line };
            go_escape(&json!({ "log": format!("{log}\n"), "stream": "stdout", "time": at }).to_string())
        })
        .collect()
}

fn write_docker(ws: &Workspace, service: &str, records: &[String]) {
    let id = format!("{:0>64}", hex::encode(service));
    ws.write(
        &format!("docker/{id}/config.v2.json"),
        json!({ "ID": id, "Name": format!("/corpus-{service}-1"), "Config": { "Labels": {
            "com.docker.compose.project": "corpus", "com.docker.compose.service": service } } })
        .to_string(),
    );
    ws.write(&format!("docker/{id}/{id}-json.log"), records.iter().map(|r| format!("{r}\n")).collect::<String>());
}

/// Each data entry as a stream entry's field, a string key and a binary value (after a byte that is not UTF-8, so
/// preserve writes it base64-marked).
fn load_redis(r: &RedisServer, data: &[&Planted]) {
    let mut script = String::new();
    for (i, p) in data.iter().enumerate() {
        let text = redis_quote(p.text.as_bytes());
        let mut binary = vec![0xff];
        binary.extend_from_slice(p.text.as_bytes());
        writeln!(script, "XADD corpus.entries * entry {i} text {text}").unwrap();
        writeln!(script, "SET corpus:str:{i:03} {text}").unwrap();
        writeln!(script, "SET corpus:bin:{i:03} {}", redis_quote(&binary)).unwrap();
    }
    r.script(&script);
}

/// Each data entry as a row of a text column. PostgreSQL refuses a NUL in text: such an entry is left out here.
fn load_postgres(pg: &PgServer, data: &[&Planted]) {
    pg.psql("postgres", "CREATE DATABASE corpus");
    let mut sql = String::from("CREATE TABLE public.corpus_rows (id int PRIMARY KEY, body text);\n");
    for (i, p) in data.iter().enumerate().filter(|(_, p)| !p.text.contains('\0')) {
        writeln!(sql, "INSERT INTO public.corpus_rows VALUES ({i}, '{}');", p.text.replace('\'', "''")).unwrap();
    }
    pg.psql("corpus", &sql);
}

/// A stand-in service: the text entries as a text/plain body, JSON and YAML bodies, the header entries as response
/// headers. Returns its base URL; it runs as long as `runtime`.
fn serve_http(runtime: &tokio::runtime::Runtime, c: &Corpus) -> String {
    let text = joined(&c.written_in(Place::Text));
    let json_body = joined(&c.written_in(Place::Json));
    let yaml = joined(&c.written_in(Place::Yaml));
    let mut headers = axum::http::HeaderMap::new();
    for p in c.written_in(Place::Header) {
        for line in p.text.lines() {
            let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("{}: not `Name: value`", p.label));
            let name = HeaderName::from_bytes(name.trim().as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", p.label));
            let value = HeaderValue::from_str(value.trim()).unwrap_or_else(|e| panic!("{}: {e}", p.label));
            headers.append(name, value);
        }
    }
    let router = Router::new()
        .route("/log", get(move || async move { ([(header::CONTENT_TYPE, "text/plain")], text) }))
        .route("/json", get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json_body) }))
        .route("/yaml", get(move || async move { ([(header::CONTENT_TYPE, "application/yaml")], yaml) }))
        .route("/headers", get(move || async move { (headers, "ok\n").into_response() }));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.set_nonblocking(true).expect("non-blocking listener");
    let addr = listener.local_addr().expect("local address");
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

fn collectors(ws: &Workspace, http: &str) -> PathBuf {
    let p = ws.path().display();
    collectors_dir(
        ws,
        "corpus.toml",
        &format!(
            r#"
[[collector]]
name = "files"
kind = "file"
window = false
paths = ["{p}/evidence/corpus.*"]

[[collector]]
name = "docker"
kind = "file"
window = false
docker = {{ project = "corpus" }}

[[collector]]
name = "redis"
kind = "redis"
window = false
streams = ["corpus.*"]
keys = [{{ pattern = "corpus:*" }}]

[[collector]]
name = "postgres"
kind = "postgres"
tables = [{{ table = "public.corpus_rows" }}]

[[collector]]
name = "http"
kind = "http"
urls = ["{http}"]
requests = [
  {{ name = "log", path = "/log" }},
  {{ name = "json", path = "/json" }},
  {{ name = "yaml", path = "/yaml" }},
  {{ name = "headers", path = "/headers" }},
]

[[collector]]
name = "config"
kind = "config_diff"
files = ["{p}/install/caracal.env", "{p}/install/compose.yml"]
baseline = "{p}/known-good"

[[collector]]
name = "command"
kind = "command"
argv = ["cat", "{p}/evidence/corpus.log"]
"#
        ),
    )
}

/// Every place a run leaves bytes, each as (source, name, content): the unpacked bag (source: the collector whose
/// folder holds the file, or the bag's own file), the output directory (the archive decompressed: compressed bytes
/// would hide a canary), the run's stdout and stderr.
fn everything(ws: &Workspace, bag: &Path, out: &std::process::Output) -> Vec<(String, String, Vec<u8>)> {
    let mut all = Vec::new();
    for (p, b) in files_below(bag) {
        let rel = p.strip_prefix(bag).unwrap_or(&p).display().to_string();
        let source = match rel.strip_prefix("data/") {
            Some(r) => r.split('/').next().unwrap_or(r).to_string(),
            None => rel.clone(),
        };
        all.push((source, format!("bundle:{rel}"), b));
    }
    for (p, b) in files_below(&ws.out()) {
        let file = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        if file.ends_with(".tar.zst") {
            let raw = std::process::Command::new("zstd").arg("-dc").arg(&p).output().expect("zstd must be installed");
            all.push(("the archive".into(), format!("{file} (decompressed)"), raw.stdout));
        } else {
            all.push((format!("side file {file}"), file, b));
        }
    }
    all.push(("stdout".into(), "stdout of preserve".into(), out.stdout.clone()));
    all.push(("stderr".into(), "stderr of preserve".into(), out.stderr.clone()));
    all
}

/// The lines of `content` that hold any needle: (1-based number, line).
fn lines_with_needles(c: &Corpus, content: &[u8]) -> Vec<(usize, String)> {
    let text = String::from_utf8_lossy(content);
    text.lines()
        .enumerate()
        .filter(|(_, l)| c.needles.iter().any(|n| l.contains(&n.value)))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// A line cut to a readable length around `needle` (a long line is usually one JSON document).
fn cut(line: &str, needle: &str) -> String {
    if line.chars().count() <= 400 {
        return line.to_string();
    }
    let at = line[..line.find(needle).unwrap_or(0)].chars().count();
    let around: String = line.chars().skip(at.saturating_sub(150)).take(needle.chars().count() + 300).collect();
    format!("…{around}…")
}

/// The payload file of collector `collector` whose path holds `part`.
fn artifact(bag: &Path, collector: &str, part: &str) -> Option<String> {
    files_below(&bag.join("data").join(collector))
        .into_iter()
        .find(|(p, _)| p.to_string_lossy().contains(part))
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
}

/// Where each kept text must come out verbatim, as (artifact, the bytes it must hold).
fn kept_where(k: &Planted) -> Vec<(&'static str, &'static str, String)> {
    let mut want = Vec::new();
    for place in &k.places {
        match place {
            Place::Docker => {
                for (service, wrapped) in [("/plain/", false), ("/wrapped/", true)] {
                    for r in docker_records(&[k], wrapped) {
                        want.push(("docker", service, r));
                    }
                }
            }
            Place::Header => {
                for line in k.text.lines() {
                    let value = line.split_once(':').map_or(line, |(_, v)| v.trim());
                    want.push(("http", "headers.response.json", json_inner(value)));
                }
            }
            Place::Env => {
                want.push(("files", "corpus.env", k.text.clone()));
                want.push(("config", "current/caracal.env", k.text.clone()));
            }
            Place::Yaml => {
                want.push(("files", "corpus.yaml", k.text.clone()));
                want.push(("config", "current/compose.yml", k.text.clone()));
            }
            other => {
                let file = FILES.iter().find(|(p, _)| p == other).map(|(_, f)| *f).unwrap_or("?");
                want.push(("files", file, k.text.clone()));
            }
        }
        // The other artifacts holding the same text: proof that they were collected at all.
        match place {
            Place::Text => {
                want.push(("http", "log.body", k.text.clone()));
                want.push(("command", "stdout", k.text.clone()));
            }
            Place::Json => want.push(("http", "json.body", k.text.clone())),
            Place::Yaml => want.push(("http", "yaml.body", k.text.clone())),
            _ => {}
        }
    }
    if k.data {
        want.push(("redis", "entries.jsonl", json_inner(&k.text)));
        want.push(("redis", "keys/corpus", json_inner(&k.text)));
        want.push(("postgres", "corpus_rows.csv", k.text.replace('"', "\"\"")));
    }
    want
}

/// What the corpus was planted in: the servers run until this is dropped.
struct Systems {
    redis: RedisServer,
    pg: PgServer,
    http: String,
    _runtime: tokio::runtime::Runtime,
}

/// Writes every entry where its `in` says, the known value into `$CARACAL_HOME/secrets/`, and starts the servers.
fn plant(ws: &Workspace, c: &Corpus) -> Systems {
    ws.write(&format!("home/secrets/{}", c.known_file), &c.known_value);
    for (place, file) in FILES {
        ws.write(&format!("evidence/{file}"), joined(&c.written_in(*place)));
    }
    let docker = c.written_in(Place::Docker);
    write_docker(ws, "plain", &docker_records(&docker, false));
    write_docker(ws, "wrapped", &docker_records(&docker, true));
    ws.write("install/caracal.env", format!("# caracal.env\n{}", joined(&c.written_in(Place::Env))));
    ws.write("install/compose.yml", format!("# compose.yml\n{}", joined(&c.written_in(Place::Yaml))));
    ws.write("known-good/caracal.env", "# caracal.env\n");
    ws.write("known-good/compose.yml", "# compose.yml\n");

    let data = c.data();
    let redis = RedisServer::start(&ws.path().join("redis"), &[]);
    load_redis(&redis, &data);
    let pg = PgServer::start(&ws.path().join("pg"));
    load_postgres(&pg, &data);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime");
    let http = serve_http(&runtime, c);
    Systems { redis, pg, http, _runtime: runtime }
}

/// Every line of the run's leftovers holding something planted, after a summary per entry of the sources it
/// survived in; empty when nothing survived. The archive decompressed is the bag again: it is reported only for
/// what the unpacked files do not show (tar headers).
fn survivors(c: &Corpus, ws: &Workspace, bag: &Path, out: &std::process::Output) -> String {
    let mut survived: Vec<(String, std::collections::BTreeSet<String>)> = Vec::new();
    let mut lines = String::new();
    for (source, name, bytes) in everything(ws, bag, out) {
        for (line, text) in lines_with_needles(c, &bytes) {
            let mut found: Vec<&corpus::Needle> = c.needles.iter().filter(|n| text.contains(&n.value)).collect();
            if found.iter().any(|n| !n.part) {
                found.retain(|n| !n.part);
            }
            let mut by: Vec<String> = found
                .iter()
                .flat_map(|n| match c.planted_by(&n.value)[..] {
                    [one] if one.starts_with("secret") => vec![one.to_string()],
                    _ => vec![n.what.clone()],
                })
                .collect();
            by.dedup();
            if source == "the archive" && by.iter().all(|b| survived.iter().any(|(s, _)| s == b)) {
                continue;
            }
            for b in &by {
                match survived.iter_mut().find(|(s, _)| s == b) {
                    Some((_, sources)) => drop(sources.insert(source.clone())),
                    None => survived.push((b.clone(), [source.clone()].into())),
                }
            }
            let shown = cut(&text, &found[0].value);
            writeln!(lines, "  {name}:{line}: {}\n      {shown}", by.join("; ")).unwrap();
        }
    }
    if survived.is_empty() {
        return String::new();
    }
    // In corpus order: canaries by their entry's number, then the known value's spellings.
    survived.sort_by_key(|(by, _)| {
        by.strip_prefix("secret #").and_then(|r| r.split(' ').next()?.parse::<usize>().ok()).unwrap_or(usize::MAX)
    });
    let mut report = String::from("SURVIVED (entry: sources):\n");
    for (by, sources) in &survived {
        writeln!(report, "  {by}: {}", sources.iter().cloned().collect::<Vec<_>>().join(", ")).unwrap();
    }
    writeln!(report, "where:\n{lines}").unwrap();
    report
}

/// Every kept text that did not come out verbatim where it must.
fn lost(c: &Corpus, bag: &Path) -> String {
    let mut report = String::new();
    for k in &c.keeps {
        for (collector, part, want) in kept_where(k) {
            match artifact(bag, collector, part) {
                Some(text) if text.contains(&want) => {}
                Some(_) => {
                    writeln!(report, "LOST {} is not verbatim in {collector}/…{part}…: {want:?}", k.label).unwrap()
                }
                None => writeln!(report, "LOST {}: no artifact {collector}/…{part}…", k.label).unwrap(),
            }
        }
    }
    report
}

#[test]
fn no_shape_of_the_corpus_survives_any_source_kind() {
    let path = std::env::var_os("REDACTION_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/redaction.toml"));
    let c = Corpus::load(&path);
    let ws = Workspace::new();
    let systems = plant(&ws, &c);
    let dir = collectors(&ws, &systems.http);
    let out = run(ws
        .snapshot(&dir)
        .args(["-c", "files", "-c", "docker", "-c", "redis", "-c", "postgres", "-c", "http", "-c", "config"])
        .args(["-c", "command"])
        .env("CARACAL_HOME", ws.path().join("home"))
        .env("PRESERVE_REDIS_URL", systems.redis.url())
        .env("PRESERVE_POSTGRES_URL", systems.pg.url("postgres", "corpus")));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));

    let mut failures = String::new();
    if out.status.code() != Some(0) {
        writeln!(failures, "preserve exited {:?}", out.status.code()).unwrap();
    }
    // A collector that failed lost evidence, or the last scan dropped an artifact redaction let a known value into.
    for col in manifest(&bag)["collectors"].as_array().unwrap() {
        if col["status"] != "ok" {
            writeln!(failures, "collector {} is {}: {}", col["name"], col["status"], col["error"]).unwrap();
        }
    }
    failures.push_str(&survivors(&c, &ws, &bag, &out));
    failures.push_str(&lost(&c, &bag));
    assert!(failures.is_empty(), "redaction corpus {}:\n{failures}", c.path.display());
}

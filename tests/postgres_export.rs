//! "Postgres backup or snapshot before manual remediation": tables exported from one point in time, exactly,
//! read-only, with filters whose values can never become SQL, against a PostgreSQL the tests start themselves.

mod support;

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use support::{postgres::PgServer, *};

/// Caracal-shaped tables (caracal.md §2.3): zones, a partitioned audit ledger under RLS keyed on
/// `caracal.zone_id`, policy-set versions and bindings, and a table whose name needs quoting.
const SCHEMA: &str = r#"
CREATE TABLE zones (id text PRIMARY KEY, name text NOT NULL, slug text UNIQUE, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE audit_events (
  id text NOT NULL, zone_id text NOT NULL, event_type text NOT NULL, request_id text, decision text,
  policy_set_version_id text, manifest_sha text, metadata_json jsonb, occurred_at timestamptz NOT NULL,
  ingested_at timestamptz NOT NULL DEFAULT now(), content_sha256 text, prev_content_sha256 text, chain_hmac text,
  chain_seq bigint, PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE audit_events_y2026m10 PARTITION OF audit_events FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE audit_events_y2026m11 PARTITION OF audit_events FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;
CREATE INDEX audit_events_zone_seq ON audit_events (zone_id, chain_seq DESC);
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY zone_isolation ON audit_events USING (current_setting('caracal.zone_id', true) = '*' OR zone_id = current_setting('caracal.zone_id', true));
CREATE TABLE policy_set_versions (id text PRIMARY KEY, policy_set_id text NOT NULL, version int NOT NULL, manifest_json jsonb NOT NULL, manifest_sha256 text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE policy_set_bindings (zone_id text NOT NULL, policy_set_id text NOT NULL, active_version_id text REFERENCES policy_set_versions(id), updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (zone_id, policy_set_id));
CREATE TABLE admin_tokens (id text PRIMARY KEY, name text, token_sha256 bytea, token_hash text, scope text, revoked_at timestamptz);
CREATE TABLE "odd ""name"" é" ("we ird" text, "Ünïcode" int);
INSERT INTO zones SELECT 'z' || i, 'Zone ' || i, 'zone-' || i FROM generate_series(1, 3) i;
INSERT INTO audit_events (id, zone_id, event_type, request_id, decision, metadata_json, occurred_at, content_sha256, prev_content_sha256, chain_seq)
  SELECT 'evt-' || lpad(i::text, 5, '0'), 'z' || (i % 3 + 1), 'token.exchange', 'req-' || i,
         CASE WHEN i % 7 = 0 THEN 'deny' ELSE 'allow' END,
         jsonb_build_object('agent_session_id', 'as_' || i, 'note', E'line one\nline "two", with comma'),
         timestamptz '2026-10-20 00:00:00+00' + (i || ' hours')::interval, md5(i::text), md5((i - 1)::text), i
  FROM generate_series(1, 900) i;
INSERT INTO policy_set_versions VALUES ('psv-1', 'ps-1', 1, '{"policies":["pv-1"]}', 'aa11'), ('psv-2', 'ps-1', 2, '{"policies":["pv-1","pv-2"]}', 'bb22');
INSERT INTO policy_set_bindings VALUES ('z1', 'ps-1', 'psv-2', now());
INSERT INTO admin_tokens VALUES ('tok-1', 'ci', '\xdeadbeef', 'argon2id$v=19$secret-hash', 'global', NULL);
INSERT INTO "odd ""name"" é" VALUES ('a "quoted" value', 1), (NULL, 2);
CREATE TABLE copy_edges (k int, v text, j jsonb);
INSERT INTO copy_edges VALUES
  (1, E'tab\there', '{"a": "x\ty"}'),
  (2, E'back\\slash \\. and \\N', '{"q": "say \"hi\", ok"}'),
  (3, E'cr\rlf\ncrlf\r\n', NULL),
  (4, '', '[]'),
  (5, NULL, 'null'),
  (6, E'\\.', '"\\."'),
  (7, E'ctl \b\f\x0b\x01 end', '{}'),
  (8, ' spaces , comma ', '{"é": "ü"}');
CREATE TABLE copy_single (v text);
INSERT INTO copy_single VALUES (E'\\.'), (''), (NULL), ('plain'), (E'x\\y');
"#;

fn server(ws: &Workspace) -> PgServer {
    let pg = PgServer::start(&ws.path().join("pg"));
    pg.psql("postgres", "CREATE DATABASE caracal");
    pg.psql("caracal", SCHEMA);
    pg
}

const COLLECTORS: &str = r#"
[[collector]]
name = "pg"
kind = "postgres"
settings = { "caracal.zone_id" = "*" }
tables = [
  { table = "public.zones" },
  { table = "audit_events" },
  { table = "policy_set_versions" },
  { table = "policy_set_bindings" },
  { table = "admin_tokens", exclude_columns = ["token_sha256", "*_hash"] },
  { table = 'odd "name" é' },
  { table = "copy_edges" },
  { table = "copy_single" },
]
queries = [{ name = "partitions", sql = "SELECT inhrelid::regclass::text AS partition FROM pg_inherits WHERE inhparent = 'audit_events'::regclass ORDER BY 1" }]
"#;

fn digest(pg: &PgServer, table: &str) -> String {
    pg.psql(
        "caracal",
        &format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
        ),
    )
}

#[test]
fn caracal_tables_export_exactly_and_reimport_identically() {
    let ws = Workspace::new();
    let pg = server(&ws);
    let dir = collectors_dir(&ws, "pg.toml", COLLECTORS);
    let out = run(ws.snapshot(&dir).args(["-c", "pg"]).env("PRESERVE_POSTGRES_URL", pg.url("postgres", "caracal")));
    assert_eq!(out.status.code(), Some(0));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let tables = bag.join("data/pg/tables");

    // Re-import every CSV into an empty copy of its table: the rows must be identical.
    for (table, file) in [
        ("zones", "public.zones"),
        ("audit_events", "public.audit_events"),
        ("policy_set_versions", "public.policy_set_versions"),
        ("policy_set_bindings", "public.policy_set_bindings"),
    ] {
        let csv = tables.join(format!("{file}.csv"));
        reimport(&pg, table, &csv);
        assert_eq!(
            digest(&pg, &format!("copy_of_{table}")),
            digest(&pg, &format!("(SELECT * FROM {table}) ")),
            "{table}"
        );
    }
    assert_eq!(digest(&pg, "audit_events").split(':').next().unwrap().trim(), "900");

    let m = manifest(&bag);
    let c = collector(&m, "pg");
    let exports = c["details"]["exports"].as_array().unwrap();
    let audit = exports.iter().find(|e| e["name"] == "audit_events").unwrap();
    assert_eq!(audit["rows"], 900);
    assert_eq!(
        audit["partitions"],
        serde_json::json!(["audit_events_default", "audit_events_y2026m10", "audit_events_y2026m11"])
    );
    let artifact = c["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "data/pg/tables/public.audit_events.csv")
        .unwrap();
    assert_eq!(artifact["records"], 900, "records are rows, though values hold newlines");
    let point = &c["details"]["point_in_time"];
    for k in ["snapshot", "txid_snapshot", "wal_lsn", "server_now", "version", "database", "user"] {
        assert!(!point[k].is_null(), "point_in_time.{k}");
    }

    // Secrets columns are never exported, and say so.
    let tokens = std::fs::read_to_string(tables.join("public.admin_tokens.csv")).unwrap();
    assert_eq!(tokens.lines().next().unwrap(), "id,name,scope,revoked_at");
    assert!(!tokens.contains("secret-hash") && !tokens.contains("deadbeef"));
    assert!(c["redactions"].as_array().unwrap().iter().any(|r| r["rule"] == "column-excluded" && r["count"] == 2));

    // DDL from the catalog, and a name that needs quoting.
    let ddl = std::fs::read_to_string(tables.join("public.audit_events.ddl.sql")).unwrap();
    for needle in [
        "PARTITION BY RANGE (occurred_at)",
        "ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY \"zone_isolation\"",
        "audit_events_zone_seq",
        "PRIMARY KEY (id, occurred_at)",
    ] {
        assert!(ddl.contains(needle), "{needle} in\n{ddl}");
    }
    let odd = std::fs::read_to_string(tables.join("public.odd__name__é.csv")).unwrap();
    assert_eq!(odd, "we ird,Ünïcode\n\"a \"\"quoted\"\" value\",1\n,2\n");
    let parts = std::fs::read_to_string(bag.join("data/pg/queries/partitions.csv")).unwrap();
    assert_eq!(parts.lines().count(), 4);

    // Read in text format, written as CSV: byte for byte the server's own CSV of the same rows (tabs, backslashes,
    // control characters, line breaks, empty text and NULL, `\.` alone on a line, JSON's quotes).
    for (file, table) in [
        ("public.zones", "zones"),
        ("public.audit_events", "audit_events"),
        ("public.policy_set_versions", "policy_set_versions"),
        ("public.copy_edges", "copy_edges"),
        ("public.copy_single", "copy_single"),
        ("public.odd__name__é", r#""odd ""name"" é""#),
    ] {
        let ours = std::fs::read_to_string(tables.join(format!("{file}.csv"))).unwrap();
        let server = pg.psql(
            "caracal",
            &format!(
                "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; COPY (SELECT * FROM {table}) TO STDOUT WITH (FORMAT csv, HEADER true)"
            ),
        );
        assert_eq!(ours, server, "{table}");
    }
    let single = std::fs::read_to_string(tables.join("public.copy_single.csv")).unwrap();
    assert_eq!(single, "v\n\"\\.\"\n\"\"\n\nplain\nx\\y\n");
}

/// Creates `copy_of_<table>` like `table` (no partitions, no RLS) and loads the CSV with psql's client-side \copy.
fn reimport(pg: &PgServer, table: &str, csv: &Path) {
    pg.psql("caracal", &format!("CREATE TABLE copy_of_{table} (LIKE {table})"));
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "caracal",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
        ])
        .arg(format!("\\copy copy_of_{table} FROM '{}' WITH (FORMAT csv, HEADER true)", csv.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_table_reflects_the_same_instant_while_writers_commit() {
    let ws = Workspace::new();
    let pg = server(&ws);
    // Three tables written together in every transaction: a consistent export holds equal counts in all three.
    pg.psql(
        "caracal",
        "CREATE TABLE event_outbox (n bigint, payload text); CREATE TABLE sessions (n bigint); CREATE TABLE delegation_edges (n bigint);
         INSERT INTO event_outbox SELECT i, repeat('x', 300) FROM generate_series(1, 200000) i;",
    );
    let stop = Arc::new(AtomicBool::new(false));
    // One psql session committing transactions as fast as it can, so any two moments differ in what they see.
    let writer = {
        let (stop, port) = (stop.clone(), pg.port);
        std::thread::spawn(move || {
            use std::io::Write;
            let mut psql = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "caracal",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = psql.stdin.take().unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tx = format!(
                    "BEGIN; INSERT INTO event_outbox VALUES (-{n}, 'late'); INSERT INTO sessions VALUES ({n}); INSERT INTO delegation_edges VALUES ({n}); COMMIT;\n"
                );
                stdin.write_all(tx.as_bytes()).unwrap();
                n += 1;
            }
            drop(stdin);
            assert!(psql.wait().unwrap().success());
            n
        })
    };
    let dir = collectors_dir(
        &ws,
        "c.toml",
        "[[collector]]\nname = \"pg\"\nkind = \"postgres\"\nworkers = 3\ntables = [{ table = \"event_outbox\" }, { table = \"sessions\" }, { table = \"delegation_edges\" }]\npg_dump = {}\n",
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = run(ws.snapshot(&dir).args(["-c", "pg"]).env("PRESERVE_POSTGRES_URL", pg.url("postgres", "caracal")));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let committed = writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let rows = |t: &str| {
        std::fs::read_to_string(bag.join(format!("data/pg/tables/public.{t}.csv"))).unwrap().lines().count() - 1
    };
    let late_outbox = std::fs::read_to_string(bag.join("data/pg/tables/public.event_outbox.csv"))
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(",late"))
        .count();
    let (sessions, edges) = (rows("sessions"), rows("delegation_edges"));
    assert!(committed > 2, "the writer committed during the run ({committed})");
    assert!(
        sessions > 0 && (sessions as u64) < committed,
        "the export cut the writer's history: {sessions} of {committed}"
    );
    assert_eq!(sessions, edges, "same instant in every table");
    assert_eq!(late_outbox, sessions, "same instant in every table, even the big one exported by the other worker");
    // The pg_dump ran in the same snapshot, though it started later, in another process.
    assert_eq!(dumped_rows(&pg, &bag.join("data/pg/pg_dump/caracal.dump"), "sessions"), sessions);
}

/// Rows of `table` in a custom-format dump, read back by `pg_restore` (as SQL, no database needed).
fn dumped_rows(pg: &PgServer, dump: &Path, table: &str) -> usize {
    let out =
        Command::new(pg.tool("pg_restore")).args(["--data-only", "-t", table, "-f", "-"]).arg(dump).output().unwrap();
    assert!(out.status.success(), "pg_restore reads the dump: {}", String::from_utf8_lossy(&out.stderr));
    let sql = String::from_utf8(out.stdout).unwrap();
    let copy = sql.split_once(&format!("COPY public.{table} ")).expect("a COPY block").1;
    copy.lines().skip(1).take_while(|l| *l != "\\.").count()
}

#[test]
fn read_only_role_exports_everything_and_writes_nothing() {
    let ws = Workspace::new();
    let pg = server(&ws);
    pg.psql("postgres", "CREATE ROLE evidence LOGIN PASSWORD 'ro-pg-pass-77'; GRANT pg_read_all_data TO evidence;");
    let counters = || {
        std::thread::sleep(Duration::from_millis(1200)); // backends report statistics about once a second
        pg.psql("caracal", "SELECT pg_stat_clear_snapshot(); SELECT tup_inserted || ',' || tup_updated || ',' || tup_deleted FROM pg_stat_database WHERE datname = 'caracal'")
    };
    let before = counters();
    let cfg = ws.write("site.toml", format!("[postgres]\nurl = \"postgres://evidence@127.0.0.1:{}/caracal\"\npassword = \"env:PRESERVE_TEST_PG_PASSWORD\"\n", pg.port));
    let dir = collectors_dir(&ws, "pg.toml", COLLECTORS);
    let out = run(ws
        .snapshot(&dir)
        .args(["-c", "pg", "--config"])
        .arg(&cfg)
        .env("PRESERVE_TEST_PG_PASSWORD", "ro-pg-pass-77"));
    assert_eq!(out.status.code(), Some(0), "complete under pg_read_all_data");
    assert_eq!(before, counters(), "no row inserted, updated or deleted");
    let m = ws.side_manifest();
    let exports = collector(&m, "pg")["details"]["exports"].clone();
    let audit = exports.as_array().unwrap().iter().find(|e| e["name"] == "audit_events").unwrap();
    assert_eq!(audit["rows"], 900, "RLS opened by the caracal.zone_id setting");
    assert!(!m.to_string().contains("ro-pg-pass-77"));
    assert!(m["findings"].as_array().unwrap().is_empty(), "{}", m["findings"]);

    // The same role without the setting reads nothing through RLS: that must be flagged, not taken as "empty".
    let ws2 = Workspace::new();
    let dir = collectors_dir(
        &ws2,
        "n.toml",
        "[[collector]]\nname = \"norls\"\nkind = \"postgres\"\ntables = [{ table = \"audit_events\" }, { table = \"zones\" }]\n",
    );
    let out = run(ws2
        .snapshot(&dir)
        .args(["-c", "norls", "--config"])
        .arg(&cfg)
        .env("PRESERVE_TEST_PG_PASSWORD", "ro-pg-pass-77"));
    assert_eq!(out.status.code(), Some(0));
    let m = ws2.side_manifest();
    let findings = m["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["code"], "postgres.rls_zero_rows");
    assert!(findings[0]["summary"].as_str().unwrap().starts_with("audit_events:"));
}

#[test]
fn a_statement_timeout_costs_only_its_query() {
    let ws = Workspace::new();
    let pg = server(&ws);
    let dir = collectors_dir(
        &ws,
        "t.toml",
        "[[collector]]\nname = \"pg\"\nkind = \"postgres\"\nworkers = 1\nstatement_timeout = \"1s\"\n\
         tables = [{ table = \"zones\" }]\n\
         queries = [{ name = \"slow\", sql = \"SELECT pg_sleep(30) AS never\" }, { name = \"after\", sql = \"SELECT 42 AS answer\" }]\n",
    );
    let out = run(ws.snapshot(&dir).args(["-c", "pg"]).env("PRESERVE_POSTGRES_URL", pg.url("postgres", "caracal")));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let m = ws.side_manifest();
    let c = collector(&m, "pg");
    assert_eq!(c["status"], "partial");
    let timeout = "canceling statement due to statement timeout (57014)";
    assert!(
        c["error"].as_str().unwrap().starts_with("slow: ") && c["error"].as_str().unwrap().contains(timeout),
        "{c}"
    );
    let slow = c["artifacts"].as_array().unwrap().iter().find(|a| a["path"] == "data/pg/queries/slow.csv").unwrap();
    assert_eq!(slow["truncated"], true);
    assert!(slow["error"].as_str().unwrap().contains(timeout), "the artifact says why it ends: {slow}");
    let rows: Vec<String> =
        c["details"]["exports"].as_array().unwrap().iter().map(|e| format!("{}={}", e["name"], e["rows"])).collect();
    assert_eq!(rows, ["\"zones\"=3", "\"slow\"=null", "\"after\"=1"]);
    // The point in time carries the server clock against ours (same host here, so within a second).
    let point = &c["details"]["point_in_time"];
    assert!(point["clock_offset_ms"].as_i64().unwrap().abs() < 1000, "{point}");
    assert_eq!(point["ssl"], false);
}

#[test]
fn alert_label_values_are_bound_never_executed() {
    let ws = Workspace::new();
    let pg = server(&ws);
    let dir = collectors_dir(
        &ws,
        "f.toml",
        "[[collector]]\nname = \"pgf\"\nkind = \"postgres\"\nsettings = { \"caracal.zone_id\" = \"*\" }\n\
         tables = [{ table = \"audit_events\", where = \"zone_id = :zone_id AND occurred_at >= :since\" }, { table = \"zones\", where = \"id = :request_id\" }]\n",
    );
    let alert = |zone: &str| {
        ws.write(
            "alert.json",
            serde_json::json!({ "labels": { "alertname": "CaracalAuditTamperDetected", "zone_id": zone } }).to_string(),
        )
    };
    let snapshot = |zone: &str, out: &str| {
        let a = alert(zone);
        let o = run(ws
            .snapshot(&dir)
            .args(["-c", "pgf", "--since", "2026-11-01T00:00:00Z", "--out", out, "--alert"])
            .arg(&a)
            .env("PRESERVE_POSTGRES_URL", pg.url("postgres", "caracal")));
        assert_eq!(o.status.code(), Some(0));
        let b = std::fs::read_dir(out)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
            .unwrap();
        manifest(&b)
    };
    let injected = snapshot("x' OR '1'='1", &ws.path().join("o1").to_string_lossy());
    let e = collector(&injected, "pgf")["details"]["exports"].clone();
    assert_eq!(e[0]["rows"], 0, "the quote is data: no zone has that id: {e}");
    assert!(
        e[1]["skipped"].as_str().unwrap().contains(":request_id"),
        "a filter without its value is skipped, not run"
    );
    let real = snapshot("z2", &ws.path().join("o2").to_string_lossy());
    let want =
        pg.psql("caracal", "SELECT count(*) FROM audit_events WHERE zone_id = 'z2' AND occurred_at >= '2026-11-01'");
    assert_eq!(collector(&real, "pgf")["details"]["exports"][0]["rows"].to_string(), want.trim());
    assert_eq!(pg.psql("caracal", "SELECT count(*) FROM zones").trim(), "3", "nothing was dropped or changed");
}

#[test]
fn denied_table_fails_alone_and_a_stopped_server_leaves_a_partial_bundle() {
    let ws = Workspace::new();
    let mut pg = server(&ws);
    pg.psql("postgres", "CREATE ROLE limited LOGIN; GRANT CONNECT ON DATABASE caracal TO limited;");
    pg.psql("caracal", "GRANT SELECT ON zones, policy_set_versions TO limited; CREATE TABLE big_ledger AS SELECT i, repeat('r', 400) AS pad FROM generate_series(1, 400000) i; GRANT SELECT ON big_ledger TO limited;");
    let dir = collectors_dir(
        &ws,
        "d.toml",
        "[[collector]]\nname = \"pg\"\nkind = \"postgres\"\nworkers = 1\ntables = [{ table = \"zones\" }, { table = \"admin_tokens\" }, { table = \"policy_set_versions\" }]\n\n[[collector]]\nname = \"pgbig\"\nkind = \"postgres\"\ntables = [{ table = \"big_ledger\" }]\n",
    );
    let out = run(ws.snapshot(&dir).args(["-c", "pg"]).env("PRESERVE_POSTGRES_URL", pg.url("limited", "caracal")));
    assert_eq!(out.status.code(), Some(3));
    let m = ws.side_manifest();
    let c = collector(&m, "pg");
    assert_eq!(c["status"], "partial");
    assert!(c["error"].as_str().unwrap().contains("admin_tokens: permission denied"), "{}", c["error"]);
    let rows: Vec<String> =
        c["details"]["exports"].as_array().unwrap().iter().map(|e| format!("{}={}", e["name"], e["rows"])).collect();
    assert_eq!(
        rows,
        ["\"zones\"=3", "\"admin_tokens\"=null", "\"policy_set_versions\"=2"],
        "the tables after the denied one are exported"
    );

    // The server stops in the middle of a COPY.
    let ws2 = Workspace::new();
    let mut child = ws2
        .snapshot(&dir)
        .args(["-c", "pgbig", "-c", "context"])
        .env("PRESERVE_POSTGRES_URL", pg.url("postgres", "caracal"))
        .spawn()
        .unwrap();
    ws2.wait_for_staged("pgbig/tables/public.big_ledger.csv", 32 << 10, &mut child);
    pg.kill();
    assert_eq!(child.wait().unwrap().code(), Some(3));
    assert_eq!(run(ws2.preserve().arg("verify").arg(ws2.only_bundle())).status.code(), Some(0));
    let m = ws2.side_manifest();
    let c = collector(&m, "pgbig");
    assert_eq!(c["status"], "partial", "the rows exported so far are kept: {c}");
    let a = c["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "data/pgbig/tables/public.big_ledger.csv")
        .unwrap();
    let kept = a["records"].as_u64().unwrap();
    assert!(kept > 0 && kept < 400_000, "rows so far are kept: {kept}");
    assert_eq!(collector(&m, "context")["status"], "ok");
}

/// The full ledger shape the chain formula covers, with a valid chain per zone built by the formula in SQL.
const LEDGER: &str = r#"
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE audit_events (
  id text NOT NULL, zone_id text NOT NULL, event_type text NOT NULL, request_id text, decision text, policy_set_id text,
  policy_set_version_id text, manifest_sha text, evaluation_status text, determining_policies_json jsonb,
  diagnostics_json jsonb, metadata_json jsonb, occurred_at timestamptz NOT NULL, ingested_at timestamptz DEFAULT now(),
  content_sha256 text, prev_content_sha256 text, chain_hmac text, chain_seq bigint, ingest_signature text,
  PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;
INSERT INTO audit_events (id, zone_id, event_type, request_id, decision, policy_set_version_id, manifest_sha,
  evaluation_status, determining_policies_json, diagnostics_json, metadata_json, occurred_at, chain_seq)
SELECT 'evt-' || z || '-' || s, 'z' || z, 'token.exchange', CASE WHEN s % 5 = 0 THEN NULL ELSE 'req-' || s END,
  CASE WHEN s % 4 = 0 THEN 'deny' ELSE 'allow' END, 'psv-2', 'bb22', 'evaluated',
  jsonb_build_array('pv-1'), CASE WHEN s % 3 = 0 THEN NULL ELSE jsonb_build_object('rule', 'r' || s) END,
  jsonb_build_object('agent_session_id', 'as_' || s, 'note', 'ünï "q"'),
  timestamptz '2026-11-29 01:00:00.123456+00' + (s || ' seconds')::interval, s
FROM generate_series(1, 3) z, generate_series(1, 30) s;
SELECT fixture_audit_content();
SELECT fixture_chain_links('audit_events', '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff');
CREATE TABLE admin_audit_events (
  id text PRIMARY KEY, request_id text, actor_id text, action text, method text, path text, zone_id text,
  status_code int, payload_json jsonb, occurred_at timestamptz NOT NULL, content_sha256 text, prev_content_sha256 text,
  chain_hmac text, chain_seq bigint
);
-- A global chain (no zone) and one for z1; the content hashes stand in for the JavaScript ones.
INSERT INTO admin_audit_events (id, request_id, actor_id, action, method, path, zone_id, status_code, payload_json, occurred_at, content_sha256, chain_seq)
SELECT 'adm-' || coalesce(z, 'g') || '-' || s, 'req-a' || s, 'admin-1', 'policy_set.activate', 'POST',
  '/v1/zones/z1/policy-sets/ps-1/activate', z, 200, jsonb_build_object('change_kind', 'activate', 'secret_rotated', false),
  timestamptz '2026-11-29 02:00:00+00' + (s || ' seconds')::interval, md5(coalesce(z, 'g') || s) || md5(s::text), s
FROM (VALUES (NULL), ('z1')) v(z), generate_series(1, 12) s;
SELECT fixture_chain_links('admin_audit_events', '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff');
"#;

const HMAC_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn chain_snapshot(ws: &Workspace, pg: &PgServer, out: &str) -> (serde_json::Value, Vec<(String, i64, String)>) {
    let dir = collectors_dir(
        ws,
        "chain.toml",
        "[[collector]]\nname = \"ledger\"\nkind = \"postgres\"\nverify_audit_chain = true\ntables = [{ table = \"audit_events\" }]\n\n\
         [[collector]]\nname = \"ledger-only\"\nkind = \"postgres\"\nverify_audit_chain = true\n",
    );
    // `ledger` verifies the chain from its export of the table; `ledger-only` exports nothing and reads the chain
    // with its own query. Both must find the same.
    let o = run(ws
        .snapshot(&dir)
        .args(["-c", "ledger", "-c", "ledger-only", "--out", out])
        .env("PRESERVE_POSTGRES_URL", pg.url("postgres", "ledger"))
        .env("AUDIT_HMAC_KEY", HMAC_KEY));
    assert_eq!(o.status.code(), Some(0));
    let bundle = std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .unwrap();
    let bag = unpack(&bundle, &ws.path().join(format!("{out}-x").replace('/', "_")));
    let problems = |collector: &str| -> Vec<(String, i64, String)> {
        let mut p: Vec<_> = ["audit_chain", "admin_audit_chain"]
            .iter()
            .flat_map(|l| {
                let path = bag.join(format!("data/{collector}/analysis/{l}_problems.jsonl"));
                std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect::<Vec<_>>()
            })
            .map(|l| {
                let j: serde_json::Value = serde_json::from_str(&l).unwrap();
                (
                    j["zone_id"].as_str().unwrap().to_string(),
                    j["chain_seq"].as_i64().unwrap(),
                    j["check"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        p.sort();
        p
    };
    let m = manifest(&bag);
    for c in ["ledger", "ledger-only"] {
        assert_eq!(collector(&m, c)["status"], "ok", "{}", collector(&m, c));
    }
    assert_eq!(problems("ledger"), problems("ledger-only"), "the export and the query see the same chain");
    // The export is in the table's own order (no server-side sort of the ledger); where a zone's rows are not in
    // chain order there (an UPDATEd row moves), the chain is read again in order. Either way, the same verdict.
    let export = &collector(&m, "ledger")["details"]["exports"][0];
    let query = export["query"].as_str().unwrap();
    assert!(!query.contains("ORDER BY"), "exported in the table's order: {query}");
    assert!(export["audit_chain"].as_str().unwrap().starts_with("verified from "), "{export}");
    (m, problems("ledger"))
}

#[test]
fn audit_chain_verification_finds_exactly_the_planted_tampering() {
    let ws = Workspace::new();
    let pg = PgServer::start(&ws.path().join("pg"));
    pg.psql("postgres", "CREATE DATABASE ledger");
    pg.psql("ledger", include_str!("support/audit_chain.sql"));
    pg.psql("ledger", LEDGER);

    let (m, problems) = chain_snapshot(&ws, &pg, &ws.path().join("clean").to_string_lossy());
    assert_eq!(problems, vec![], "the valid chain has no problem");
    let ok = m["findings"].as_array().unwrap().iter().find(|f| f["code"] == "audit.chain.ok").expect("an ok finding");
    assert_eq!(ok["details"]["rows"], 90);
    assert_eq!(ok["details"]["hmac"]["checked"], true);
    let admin =
        m["findings"].as_array().unwrap().iter().find(|f| f["code"] == "admin_audit.chain.ok").expect("admin ok");
    assert_eq!((admin["details"]["rows"].as_u64(), admin["details"]["zones"].as_u64()), (Some(24), Some(2)));
    assert!(admin["summary"].as_str().unwrap().contains("content hashes not recomputed"), "{admin}");
    assert!(!m.to_string().contains(HMAC_KEY), "the key never reaches the manifest, only its fingerprint");

    // Tampering, as an attacker with write access would do it.
    pg.psql(
        "ledger",
        "UPDATE audit_events SET decision = 'allow' WHERE zone_id = 'z1' AND chain_seq = 12;
         DELETE FROM audit_events WHERE zone_id = 'z1' AND chain_seq = 20;
         UPDATE audit_events SET chain_seq = CASE chain_seq WHEN 5 THEN 6 ELSE 5 END WHERE zone_id = 'z2' AND chain_seq IN (5, 6);
         UPDATE audit_events SET chain_hmac = repeat('0', 64) WHERE zone_id = 'z3' AND chain_seq = 3;
         DELETE FROM admin_audit_events WHERE zone_id IS NULL AND chain_seq = 4;
         UPDATE admin_audit_events SET content_sha256 = md5('forged') || md5('forged'), status_code = 403
          WHERE zone_id = 'z1' AND chain_seq = 9;",
    );
    let (m, mut problems) = chain_snapshot(&ws, &pg, &ws.path().join("tampered").to_string_lossy());
    problems.sort();
    // The UPDATEd rows moved to the end of the heap: each zone came as runs in chain order, verified at their seams
    // from the export itself, without reading the ledger again.
    let export = &collector(&m, "ledger")["details"]["exports"][0];
    assert_eq!(export["audit_chain"], "verified from the export", "{export}");
    let mut want: Vec<(String, i64, String)> = [
        ("z1", 12, "content_mismatch"),
        ("z1", 21, "chain_break"),
        ("z1", 21, "seq_gap"),
        ("z2", 5, "chain_break"),
        ("z2", 6, "chain_break"),
        ("z2", 7, "chain_break"),
        ("z3", 3, "hmac_mismatch"),
        // The admin ledger: the deleted global row breaks the link and the sequence; the forged row's new hash
        // no longer matches its HMAC, and the next row's link no longer matches it.
        ("", 5, "chain_break"),
        ("", 5, "seq_gap"),
        ("z1", 9, "hmac_mismatch"),
        ("z1", 10, "chain_break"),
    ]
    .iter()
    .map(|(z, s, c)| (z.to_string(), *s, c.to_string()))
    .collect();
    want.sort();
    assert_eq!(problems, want);
    let codes: Vec<&str> = m["findings"].as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap()).collect();
    for c in
        ["audit.chain.content_mismatch", "audit.chain.chain_break", "audit.chain.seq_gap", "audit.chain.hmac_mismatch"]
    {
        assert!(codes.contains(&c), "{codes:?}");
    }
    assert!(!codes.contains(&"audit.chain.ok") && !codes.contains(&"admin_audit.chain.ok"));
    assert!(codes.contains(&"admin_audit.chain.chain_break") && codes.contains(&"admin_audit.chain.hmac_mismatch"));
}

#[test]
fn tls_modes_check_the_server_as_libpq_would() {
    let ws = Workspace::new();
    let mut pg = server(&ws);
    // The certificate names another host than the one we connect to (127.0.0.1).
    let (ca, cert, key) = certificates(&["db.caracal.internal"]);
    pg.configure(
        "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        &[("server.crt", &cert), ("server.key", &key)],
    );
    let ca_file = ws.write("ca.pem", &ca);
    let (other_ca, _, _) = certificates(&["elsewhere"]);
    let other_ca_file = ws.write("other-ca.pem", &other_ca);
    let dir = collectors_dir(
        &ws,
        "t.toml",
        "[[collector]]\nname = \"pg\"\nkind = \"postgres\"\ntables = [{ table = \"zones\" }]\n",
    );
    let snapshot = |query: &str| {
        let w = Workspace::new();
        let url = format!("{}?{query}", pg.url("postgres", "caracal"));
        let out = run(w.snapshot(&dir).args(["-c", "pg"]).env("PRESERVE_POSTGRES_URL", url));
        let m = w.side_manifest();
        let c = collector(&m, "pg").clone();
        (out.status.code(), c)
    };
    let ca_q = format!("sslrootcert={}", ca_file.display());

    let (code, c) = snapshot(&format!("sslmode=verify-ca&{ca_q}"));
    assert_eq!(code, Some(0), "{c}");
    assert_eq!(c["details"]["point_in_time"]["ssl"], true, "the session is encrypted");
    assert_eq!(c["details"]["point_in_time"]["sslmode"], "verify-ca");

    let (code, c) = snapshot(&format!("sslmode=verify-full&{ca_q}"));
    assert_eq!((code, c["status"].as_str()), (Some(3), Some("failed")), "{c}");
    assert!(c["error"].as_str().unwrap().contains("certificate not valid for name"), "the host name is checked: {c}");

    let (code, c) = snapshot(&format!("sslmode=verify-ca&sslrootcert={}", other_ca_file.display()));
    assert_eq!(code, Some(3));
    assert!(c["error"].as_str().unwrap().contains("UnknownIssuer"), "another CA is refused: {c}");

    let (code, c) = snapshot("sslmode=require");
    assert_eq!((code, &c["details"]["point_in_time"]["ssl"]), (Some(0), &serde_json::json!(true)), "{c}");
    let (code, c) = snapshot("sslmode=disable");
    assert_eq!((code, &c["details"]["point_in_time"]["ssl"]), (Some(0), &serde_json::json!(false)), "{c}");

    let (code, c) = snapshot("sslmode=verify-full");
    assert_eq!(code, Some(3));
    assert!(c["error"].as_str().unwrap().contains("needs sslrootcert"), "{c}");
}

#[test]
fn pg_dump_restores_with_known_secrets_masked_and_says_when_it_cannot_run() {
    let ws = Workspace::new();
    let pg = server(&ws);
    pg.psql("postgres", "CREATE ROLE evidence LOGIN PASSWORD 'dump-pass-4242'; GRANT pg_read_all_data TO evidence;");
    pg.psql("caracal", "INSERT INTO zones VALUES ('z9', 'leaked dump-pass-4242 here', 'zone-9')");
    let cfg = ws.write(
        "site.toml",
        format!(
            "[postgres]\nurl = \"postgres://evidence@127.0.0.1:{}/caracal\"\npassword = \"env:PRESERVE_TEST_PG_PASSWORD\"\n",
            pg.port
        ),
    );
    // A pg_dump too old for this server: it must be refused, not run.
    let old = ws.write("old/pg_dump", "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n");
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dir = collectors_dir(
        &ws,
        "d.toml",
        &format!(
            "[[collector]]\nname = \"pgd\"\nkind = \"postgres\"\nsettings = {{ \"caracal.zone_id\" = \"*\" }}\n\
             tables = [{{ table = \"zones\" }}]\npg_dump = {{ exclude_table_data = [\"public.admin_tokens\"] }}\n\n\
             [[collector]]\nname = \"pgold\"\nkind = \"postgres\"\ntables = [{{ table = \"zones\" }}]\n\
             pg_dump = {{ binary = \"{}\" }}\n",
            old.display()
        ),
    );
    let out = run(ws
        .snapshot(&dir)
        .args(["-c", "pgd", "-c", "pgold", "--config"])
        .arg(&cfg)
        .env("PRESERVE_TEST_PG_PASSWORD", "dump-pass-4242"));
    assert_eq!(out.status.code(), Some(0), "a skipped dump is a finding, not a failure");
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let dump = bag.join("data/pgd/pg_dump/caracal.dump");
    let raw = std::fs::read(&dump).unwrap();
    assert!(memchr::memmem::find(&raw, b"dump-pass-4242").is_none(), "the known secret is not in the dump");
    let m = manifest(&bag);
    let pgd = collector(&m, "pgd");
    let report = pgd["details"]["exports"].as_array().unwrap().iter().find(|e| e["name"] == "pg_dump").unwrap();
    assert_eq!(report["secrets_masked"], 1, "{report}");

    // Restorable, RLS opened by the collector's settings, excluded data left out, the secret masked at its length.
    pg.psql("postgres", "CREATE DATABASE restored");
    let st = Command::new(pg.tool("pg_restore"))
        .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-d", "restored"])
        .args(["--no-owner", "--no-privileges", "--exit-on-error"])
        .arg(&dump)
        .status()
        .unwrap();
    assert!(st.success(), "pg_restore restores the masked dump");
    assert_eq!(pg.psql("restored", "SELECT count(*) FROM audit_events").trim(), "900");
    assert_eq!(pg.psql("restored", "SELECT count(*) FROM admin_tokens").trim(), "0");
    assert_eq!(pg.psql("restored", "SELECT name FROM zones WHERE id = 'z9'").trim(), "leaked ************** here");

    let pgold = collector(&m, "pgold");
    assert_eq!(pgold["status"], "ok");
    let skipped = m["findings"].as_array().unwrap().iter().find(|f| f["code"] == "postgres.pg_dump_skipped").unwrap();
    let summary = skipped["summary"].as_str().unwrap();
    let major = pg.psql("postgres", "SHOW server_version_num").trim().parse::<u32>().unwrap() / 10000;
    let want = format!("no pg_dump of major version {major} or newer");
    assert!(summary.contains(&want) && summary.contains("9.6.24"), "{summary}");
    assert!(!bag.join("data/pgold/pg_dump").exists());
}

#[test]
fn table_patterns_and_per_partition_exports_cover_every_row() {
    let ws = Workspace::new();
    let pg = server(&ws);
    let dir = collectors_dir(
        &ws,
        "p.toml",
        "[[collector]]\nname = \"pg\"\nkind = \"postgres\"\nsettings = { \"caracal.zone_id\" = \"*\" }\n\
         tables = [{ table = \"public.policy_set_*\" }, { table = \"audit_events\", partitions = \"each\" }, { table = \"nothing_*\" }]\n",
    );
    let out = run(ws.snapshot(&dir).args(["-c", "pg"]).env("PRESERVE_POSTGRES_URL", pg.url("postgres", "caracal")));
    assert_eq!(out.status.code(), Some(3), "a pattern that matches nothing is reported");
    let m = ws.side_manifest();
    let c = collector(&m, "pg");
    assert!(c["error"].as_str().unwrap().contains("tables `nothing_*`: no table matches"), "{c}");
    let rows: Vec<(String, u64)> = c["details"]["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["rows"].as_u64().unwrap()))
        .collect();
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "public.policy_set_bindings",
            "public.policy_set_versions",
            "public.audit_events_default",
            "public.audit_events_y2026m10",
            "public.audit_events_y2026m11"
        ]
    );
    let ledger: u64 = rows.iter().filter(|(n, _)| n.contains("audit_events")).map(|(_, r)| r).sum();
    assert_eq!(ledger, 900, "the partitions together hold every row: {rows:?}");
    assert!(rows.iter().all(|(n, r)| n.ends_with("_default") || *r > 0), "{rows:?}");
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    assert!(bag.join("data/pg/tables/public.audit_events_y2026m11.csv").exists());
}

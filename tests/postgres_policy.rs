//! "Bad policy allow": the policy set each zone enforces, as evidence. For every binding, the active version and
//! the one before it, their manifests, every referenced Rego policy with its hash recomputed, and a diff, read from
//! the collector's snapshot of a real PostgreSQL, under Caracal's row-level security.

mod support;

use sha2::{Digest, Sha256};
use support::{postgres::PgServer, *};

/// Caracal's policy tables (caracal.md §2.3): immutable versions (trigger), one active set per zone, RLS keyed on
/// `caracal.zone_id` on the zoned tables, ids as text.
const SCHEMA: &str = r#"
CREATE TABLE zones (id text PRIMARY KEY, name text NOT NULL, slug text UNIQUE);
CREATE TABLE policies (id text PRIMARY KEY, zone_id text NOT NULL REFERENCES zones(id), name text NOT NULL,
  description text, owner_type text DEFAULT 'customer', created_by text, created_at timestamptz NOT NULL DEFAULT now(),
  archived_at timestamptz);
CREATE TABLE policy_versions (id text PRIMARY KEY, policy_id text NOT NULL REFERENCES policies(id), version int NOT NULL,
  content text NOT NULL, content_sha256 text NOT NULL, schema_version text NOT NULL DEFAULT '2026-03-16',
  created_by text, created_at timestamptz NOT NULL DEFAULT now(), archived_at timestamptz,
  created_via_operator boolean NOT NULL DEFAULT false, UNIQUE (policy_id, version));
CREATE FUNCTION reject_policy_version_mutation() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'versions are immutable'; END $$;
CREATE TRIGGER policy_versions_immutable BEFORE UPDATE OR DELETE ON policy_versions
  FOR EACH ROW EXECUTE FUNCTION reject_policy_version_mutation();
CREATE TABLE policy_sets (id text PRIMARY KEY, zone_id text NOT NULL REFERENCES zones(id), name text NOT NULL,
  description text, created_by text, created_at timestamptz NOT NULL DEFAULT now(), archived_at timestamptz);
CREATE TABLE policy_set_versions (id text PRIMARY KEY, policy_set_id text NOT NULL REFERENCES policy_sets(id),
  version int NOT NULL, manifest_json jsonb NOT NULL, manifest_sha256 text NOT NULL,
  schema_version text NOT NULL DEFAULT '2026-03-16', created_by text, created_at timestamptz NOT NULL DEFAULT now(),
  archived_at timestamptz, UNIQUE (policy_set_id, version));
CREATE TRIGGER policy_set_versions_immutable BEFORE UPDATE OR DELETE ON policy_set_versions
  FOR EACH ROW EXECUTE FUNCTION reject_policy_version_mutation();
CREATE TABLE policy_set_bindings (zone_id text NOT NULL REFERENCES zones(id), policy_set_id text NOT NULL REFERENCES policy_sets(id),
  active_version_id text REFERENCES policy_set_versions(id), shadow_version_id text,
  updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (zone_id, policy_set_id));
CREATE UNIQUE INDEX policy_set_bindings_one_active_per_zone ON policy_set_bindings (zone_id) WHERE active_version_id IS NOT NULL;
ALTER TABLE policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE policy_sets ENABLE ROW LEVEL SECURITY;
ALTER TABLE policy_set_bindings ENABLE ROW LEVEL SECURITY;
CREATE POLICY zone_isolation ON policies USING (current_setting('caracal.zone_id', true) = '*' OR zone_id = current_setting('caracal.zone_id', true));
CREATE POLICY zone_isolation ON policy_sets USING (current_setting('caracal.zone_id', true) = '*' OR zone_id = current_setting('caracal.zone_id', true));
CREATE POLICY zone_isolation ON policy_set_bindings USING (current_setting('caracal.zone_id', true) = '*' OR zone_id = current_setting('caracal.zone_id', true));
"#;

const BASE_REGO: &str = "package caracal.authz\n\ndefault result := {\"decision\": \"deny\"}\n";
const TOOLS_V1: &str = "package caracal.authz\n\nimport rego.v1\n\nallow if {\n\tinput.resource == \"resource://crm\"\n\tinput.tool == \"read\"\n}\n\nresult := {\"decision\": \"allow\"} if allow\n";
const TOOLS_V2: &str = "package caracal.authz\n\nimport rego.v1\n\nallow if {\n\tinput.resource == \"resource://crm\"\n\tinput.tool != \"delete\"\n}\n\nresult := {\"decision\": \"allow\"} if allow\n";

/// The policies and policy sets as Caracal's API writes them: `content_sha256` the SHA-256 of the Rego text,
/// `manifest_sha256` that of `JSON.stringify(manifest)` (no spaces; jsonb gives the manifest back with spaces).
fn fixtures() -> String {
    let pv = |id: &str, policy: &str, v: i32, content: &str| {
        format!(
            "INSERT INTO policy_versions (id, policy_id, version, content, content_sha256, created_by) VALUES ('{id}', '{policy}', {v}, $rego${content}$rego$, encode(sha256(convert_to($rego${content}$rego$, 'UTF8')), 'hex'), 'admin@example.com');\n"
        )
    };
    let psv = |id: &str, set: &str, v: i32, ids: &[&str]| {
        let manifest = format!(
            "[{}]",
            ids.iter().map(|i| format!("{{\"policy_version_id\":\"{i}\"}}")).collect::<Vec<_>>().join(",")
        );
        format!(
            "INSERT INTO policy_set_versions (id, policy_set_id, version, manifest_json, manifest_sha256, created_by) VALUES ('{id}', '{set}', {v}, '{manifest}'::jsonb, encode(sha256(convert_to('{manifest}', 'UTF8')), 'hex'), 'admin@example.com');\n"
        )
    };
    let mut sql = String::from(
        "INSERT INTO zones VALUES ('z-a', 'Zone A', 'zone-a'), ('z-b', 'Zone B', 'zone-b'), ('../zone c', 'Zone C', 'zone-c'), \
         ('z-d', 'Zone D', 'zone-d'), ('z-e', 'Zone E', 'zone-e'), ('z-f', 'Zone F', 'zone-f');\n\
         INSERT INTO policies (id, zone_id, name) VALUES ('pol-a-base', 'z-a', 'baseline deny'), ('pol-a-tools', 'z-a', 'crm tools'), \
         ('pol-b', 'z-b', 'b rules'), ('pol-c', '../zone c', 'c rules'), ('pol-d', 'z-d', 'd rules'), ('pol-f', 'z-f', 'f rules');\n\
         INSERT INTO policy_sets (id, zone_id, name) VALUES ('ps-a', 'z-a', 'A'), ('ps-b', 'z-b', 'B'), ('ps-c', '../zone c', 'C'), \
         ('ps-d', 'z-d', 'D'), ('ps-e', 'z-e', 'E'), ('ps-f', 'z-f', 'F');\n",
    );
    sql += &pv("pv-a-base-1", "pol-a-base", 1, BASE_REGO);
    sql += &pv("pv-a-tools-1", "pol-a-tools", 1, TOOLS_V1);
    sql += &pv("pv-a-tools-2", "pol-a-tools", 2, TOOLS_V2);
    sql += &pv("pv-a-tools-3", "pol-a-tools", 3, "package caracal.authz\n# a draft nobody activated\n");
    sql += &pv("pv-b-1", "pol-b", 1, BASE_REGO);
    sql += &pv("pv-c-1", "pol-c", 1, BASE_REGO);
    sql += &pv("pv-d-1", "pol-d", 1, BASE_REGO);
    sql += &pv("pv-f-1", "pol-f", 1, BASE_REGO);
    sql += &pv("pv-f-2", "pol-f", 2, TOOLS_V2);
    sql += &psv("psv-a1", "ps-a", 1, &["pv-a-base-1", "pv-a-tools-1"]);
    sql += &psv("psv-a2", "ps-a", 2, &["pv-a-base-1", "pv-a-tools-2"]);
    sql += &psv("psv-a3", "ps-a", 3, &["pv-a-base-1", "pv-a-tools-3"]);
    sql += &psv("psv-b1", "ps-b", 1, &["pv-b-1"]);
    sql += &psv("psv-c1", "ps-c", 1, &["pv-c-1"]);
    sql += &psv("psv-f1", "ps-f", 1, &["pv-f-1"]);
    sql += "INSERT INTO policy_set_bindings (zone_id, policy_set_id, active_version_id) VALUES ('z-a', 'ps-a', 'psv-a2'), \
            ('z-b', 'ps-b', 'psv-b1'), ('../zone c', 'ps-c', 'psv-c1'), ('z-e', 'ps-e', NULL), \
            ('z-f', 'ps-f', 'psv-f1');\n";
    sql
}

fn server(ws: &Workspace) -> PgServer {
    let pg = PgServer::start(&ws.path().join("pg"));
    pg.psql("postgres", "CREATE DATABASE caracal");
    pg.psql("caracal", SCHEMA);
    pg.psql("caracal", &fixtures());
    pg
}

const COLLECTOR: &str = r#"
[[collector]]
name = "pg"
kind = "postgres"
settings = { "caracal.zone_id" = "*" }
policy_sets = true
tables = [{ table = "public.policy_set_bindings" }]
"#;

fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The summary of one binding in the collector's details.
fn summary<'a>(c: &'a serde_json::Value, zone: &str) -> &'a serde_json::Value {
    c["details"]["policy_sets"].as_array().unwrap().iter().find(|s| s["zone_id"] == zone).unwrap()
}

#[test]
fn the_active_policy_set_its_predecessor_and_the_changed_rego_line_are_preserved() {
    let ws = Workspace::new();
    let pg = server(&ws);
    let dir = collectors_dir(&ws, "pg.toml", COLLECTOR);
    let out = run(ws.snapshot(&dir).args(["-c", "pg"]).env("PRESERVE_POSTGRES_URL", pg.url("postgres", "caracal")));
    assert_eq!(out.status.code(), Some(0));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let c = collector(&m, "pg");
    let root = bag.join("data/pg");

    // Zone A: v2 active, v1 before it (v3, a newer draft, is neither).
    let a = read_json(&root.join("policy-sets/z-a/ps-a.json"));
    assert_eq!(a["format"], "preserve-policy-set/1");
    assert_eq!(
        (a["active"]["version"]["version"].as_i64(), a["previous"]["version"]["version"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(a["binding"]["active_version_id"], "psv-a2");
    assert_eq!(
        a["active"]["manifest"],
        serde_json::json!([{ "policy_version_id": "pv-a-base-1" }, { "policy_version_id": "pv-a-tools-2" }])
    );
    assert_eq!(a["previous"]["manifest"][1]["policy_version_id"], "pv-a-tools-1");
    for side in ["active", "previous"] {
        assert_eq!(a[side]["manifest_sha256"]["ok"], true, "{side}: {}", a[side]["manifest_sha256"]);
        assert_eq!(a[side]["manifest_sha256"]["matched"], "compact");
    }
    let policies = a["active"]["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);
    for (p, rego) in policies.iter().zip([BASE_REGO, TOOLS_V2]) {
        assert_eq!(p["content_sha256_computed"], sha(rego));
        assert_eq!(p["content_sha256_stored"], p["content_sha256_computed"]);
        assert_eq!(p["ok"], true);
        let file = root.join(p["file"].as_str().unwrap());
        assert_eq!(std::fs::read_to_string(file).unwrap(), rego, "the Rego as stored");
    }
    assert_eq!(policies[1]["policy_name"], "crm tools");
    assert_eq!(policies[1]["row"]["created_by"], "admin@example.com");
    assert_eq!(
        std::fs::read_to_string(root.join("policy-sets/z-a/ps-a/previous/pv-a-tools-1.rego")).unwrap(),
        TOOLS_V1
    );

    // The diff: the manifest's changed reference and the changed Rego line, under the policy's own name.
    let diff = std::fs::read_to_string(root.join("policy-sets/z-a/ps-a.diff")).unwrap();
    assert_eq!(a["diff"], "policy-sets/z-a/ps-a.diff");
    for line in [
        "--- previous/manifest.json",
        "-    \"policy_version_id\": \"pv-a-tools-1\"",
        "+    \"policy_version_id\": \"pv-a-tools-2\"",
        "--- previous/pol-a-tools.rego\tpv-a-tools-1",
        "+++ active/pol-a-tools.rego\tpv-a-tools-2",
        "-\tinput.tool == \"read\"",
        "+\tinput.tool != \"delete\"",
    ] {
        assert!(diff.lines().any(|l| l == line), "{line:?} in\n{diff}");
    }
    assert!(!diff.contains("pol-a-base"), "an unchanged policy is not in the diff:\n{diff}");

    // A zone id that is not a safe path, and a set with only one version.
    let zc = summary(c, "../zone c");
    let path = zc["artifact"].as_str().unwrap();
    assert!(path.starts_with("policy-sets/_zone_c~") && path.ends_with("/ps-c.json"), "{path}");
    let zc = read_json(&root.join(path));
    assert_eq!(zc["zone_id"], "../zone c");
    assert!(zc["previous"].is_null() && zc["diff"].is_null());
    assert!(zc["note"].as_str().unwrap().contains("no previous version"), "{zc}");
    assert_eq!(zc["active"]["policies"][0]["ok"], true);
    // A binding with nothing active.
    let ze = read_json(&root.join("policy-sets/z-e/ps-e.json"));
    assert!(ze["active"].is_null() && ze["note"].as_str().unwrap().contains("no active version"), "{ze}");

    let sa = summary(c, "z-a");
    assert_eq!(sa["active"], serde_json::json!({ "id": "psv-a2", "version": 2 }));
    assert_eq!(sa["previous"], serde_json::json!({ "id": "psv-a1", "version": 1 }));
    assert_eq!((sa["missing"].as_u64(), sa["mismatches"].as_u64()), (Some(0), Some(0)));
    assert_eq!(c["details"]["policy_sets"].as_array().unwrap().len(), 5, "every binding");
    let codes: Vec<&str> = m["findings"].as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["policy_set.ok"]);
    assert!(root.join("tables/public.policy_set_bindings.csv").exists(), "the tables are exported beside it");
    assert_eq!(run(ws.preserve().arg("verify").arg(ws.only_bundle())).status.code(), Some(0));
}

#[test]
fn tampered_rego_a_forged_manifest_and_a_missing_policy_version_are_findings() {
    let ws = Workspace::new();
    let pg = server(&ws);
    // As someone with write access would: around the immutability triggers, hashes left as they were.
    pg.psql(
        "caracal",
        &format!(
            "ALTER TABLE policy_versions DISABLE TRIGGER policy_versions_immutable;
             UPDATE policy_versions SET content = $rego${TOOLS_V2}$rego$ WHERE id = 'pv-b-1';
             ALTER TABLE policy_versions ENABLE TRIGGER policy_versions_immutable;
             ALTER TABLE policy_set_versions DISABLE TRIGGER policy_set_versions_immutable;
             UPDATE policy_set_versions SET manifest_json = '[{{\"policy_version_id\":\"pv-f-1\"}},{{\"policy_version_id\":\"pv-f-2\"}}]' WHERE id = 'psv-f1';
             ALTER TABLE policy_set_versions ENABLE TRIGGER policy_set_versions_immutable;
             INSERT INTO policy_set_versions (id, policy_set_id, version, manifest_json, manifest_sha256)
               SELECT 'psv-d1', 'ps-d', 1, m::jsonb, encode(sha256(convert_to(m, 'UTF8')), 'hex')
               FROM (VALUES ('[{{\"policy_version_id\":\"pv-d-1\"}},{{\"policy_version_id\":\"pv-gone\"}}]')) t(m);
             INSERT INTO policy_set_bindings (zone_id, policy_set_id, active_version_id) VALUES ('z-d', 'ps-d', 'psv-d1');
             INSERT INTO zones VALUES ('z-g', 'Zone G', 'zone-g');
             INSERT INTO policies (id, zone_id, name) VALUES ('pol-g', 'z-g', 'generated');
             INSERT INTO policy_versions (id, policy_id, version, content, content_sha256)
               SELECT 'pv-g-1', 'pol-g', 1, c, encode(sha256(convert_to(c, 'UTF8')), 'hex')
               FROM (SELECT 'package caracal.authz' || repeat(E'\\n# generated rule', 300000) AS c) t;
             INSERT INTO policy_sets (id, zone_id, name) VALUES ('ps-g', 'z-g', 'G');
             INSERT INTO policy_set_versions (id, policy_set_id, version, manifest_json, manifest_sha256)
               SELECT 'psv-g1', 'ps-g', 1, m::jsonb, encode(sha256(convert_to(m, 'UTF8')), 'hex')
               FROM (VALUES ('[{{\"policy_version_id\":\"pv-g-1\"}}]')) t(m);
             INSERT INTO policy_set_bindings (zone_id, policy_set_id, active_version_id) VALUES ('z-g', 'ps-g', 'psv-g1');"
        ),
    );
    let dir = collectors_dir(&ws, "pg.toml", COLLECTOR);
    let out = run(ws.snapshot(&dir).args(["-c", "pg"]).env("PRESERVE_POSTGRES_URL", pg.url("postgres", "caracal")));
    assert_eq!(out.status.code(), Some(0), "findings are evidence, not a failure to collect");
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let findings = m["findings"].as_array().unwrap();
    let one = |code: &str| {
        let hits: Vec<_> = findings.iter().filter(|f| f["code"] == code).collect();
        assert_eq!(hits.len(), 1, "{code} in {findings:#?}");
        hits[0].clone()
    };

    let tampered = one("policy_set.content_mismatch");
    assert_eq!(tampered["severity"], "critical");
    let text = tampered["summary"].as_str().unwrap();
    for needle in ["zone z-b", "policy set ps-b", "version 1 (psv-b1)", "pv-b-1"] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    assert_eq!(tampered["details"]["computed"], sha(TOOLS_V2));
    assert_eq!(tampered["details"]["stored"], sha(BASE_REGO));
    // The file holds what the database holds now: the tampered Rego.
    let b = read_json(&bag.join("data/pg/policy-sets/z-b/ps-b.json"));
    assert_eq!(b["active"]["policies"][0]["ok"], false);
    assert_eq!(std::fs::read_to_string(bag.join("data/pg/policy-sets/z-b/ps-b/active/pv-b-1.rego")).unwrap(), TOOLS_V2);

    let missing = one("policy_set.missing_policy_version");
    assert_eq!(missing["severity"], "critical");
    let text = missing["summary"].as_str().unwrap();
    for needle in ["zone z-d", "policy set ps-d", "(psv-d1)", "pv-gone"] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    let d = read_json(&bag.join("data/pg/policy-sets/z-d/ps-d.json"));
    assert_eq!(d["active"]["policies"][1]["missing"], true);
    assert_eq!(d["active"]["policies"][0]["ok"], true, "the policy that exists is still collected");

    let forged = one("policy_set.manifest_mismatch");
    assert!(forged["summary"].as_str().unwrap().contains("zone z-f, policy set ps-f"), "{forged}");
    assert!(findings.iter().all(|f| f["code"] != "policy_set.ok"));

    // A policy over the 4 MiB cap: its file is cut and says so, its hash still covers all of it.
    let g = read_json(&bag.join("data/pg/policy-sets/z-g/ps-g.json"));
    let big = &g["active"]["policies"][0];
    assert_eq!(
        (big["truncated"].as_bool(), big["computed_by"].as_str(), big["ok"].as_bool()),
        (Some(true), Some("server"), Some(true)),
        "{big}"
    );
    assert!(big["bytes"].as_u64().unwrap() > 4 << 20);
    let file = bag.join("data/pg/policy-sets/z-g/ps-g/active/pv-g-1.rego");
    assert_eq!(std::fs::metadata(file).unwrap().len(), 4 << 20);

    let c = collector(&m, "pg");
    assert_eq!(c["status"], "ok");
    let a = c["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "data/pg/policy-sets/z-g/ps-g/active/pv-g-1.rego")
        .unwrap();
    assert_eq!(a["truncated"], true);
    assert_eq!(summary_counts(c, "z-b"), (0, 1));
    assert_eq!(summary_counts(c, "z-d"), (1, 0));
    assert_eq!(summary(c, "z-f")["manifest_mismatches"], 1);
}

fn summary_counts(c: &serde_json::Value, zone: &str) -> (u64, u64) {
    let s = summary(c, zone);
    (s["missing"].as_u64().unwrap(), s["mismatches"].as_u64().unwrap())
}

#[test]
fn a_service_role_under_row_level_security_sees_every_zone_with_the_setting() {
    let ws = Workspace::new();
    let pg = server(&ws);
    pg.psql("caracal", "CREATE ROLE caracalapi LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO caracalapi;");
    let collectors =
        |settings: &str| format!("[[collector]]\nname = \"pg\"\nkind = \"postgres\"\n{settings}policy_sets = true\n");
    let snapshot = |settings: &str| {
        let w = Workspace::new();
        let dir = collectors_dir(&w, "pg.toml", &collectors(settings));
        let out =
            run(w.snapshot(&dir).args(["-c", "pg"]).env("PRESERVE_POSTGRES_URL", pg.url("caracalapi", "caracal")));
        assert_eq!(out.status.code(), Some(0));
        w.side_manifest()
    };

    let m = snapshot("settings = { \"caracal.zone_id\" = \"*\" }\n");
    let c = collector(&m, "pg");
    let zones: Vec<&str> =
        c["details"]["policy_sets"].as_array().unwrap().iter().map(|s| s["zone_id"].as_str().unwrap()).collect();
    assert_eq!(zones, ["../zone c", "z-a", "z-b", "z-e", "z-f"], "every zone, through RLS");
    assert_eq!(summary(c, "z-a")["previous"]["version"], 1);
    let codes: Vec<&str> = m["findings"].as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["policy_set.ok"]);

    // Without the setting RLS hides every binding: said, not taken for "no policy set".
    let m = snapshot("");
    let c = collector(&m, "pg");
    assert_eq!(c["details"]["policy_sets"], serde_json::json!([]));
    let f = &m["findings"].as_array().unwrap()[0];
    assert_eq!(f["code"], "postgres.rls_zero_rows");
    assert!(f["summary"].as_str().unwrap().starts_with("policy_set_bindings:"), "{f}");
}

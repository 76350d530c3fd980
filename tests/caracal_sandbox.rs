//! Issue 5, "what must be shown": each of the seven incident profiles, run against a Caracal sandbox (real Redis and
//! PostgreSQL with Caracal's data, HTTP stand-ins for its services, a `$CARACAL_HOME`, Docker logs), captures every
//! item of its row in design.md's table (and caracal.md §7's additions where the profile claims them), in a bundle
//! that verifies and holds no secret. The tamper alert's labels choose what the request-filtered collectors read.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

// The sandbox module finds the server helpers as `super::redis` and `super::postgres`.
use support::{collector, files_below, manifest, postgres, redis, unpack};

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::{
    GATEWAY_PODS, GW_NONCES, Sandbox,
    http::{CANARY_BEARER, CANARY_URL_PASSWORD},
};

/// One thing a profile must capture: files below `data/` matching `path` (a glob; `*` crosses folders), `count` of
/// them (0: at least one), each non-empty, holding every `has` and none of `lacks`. `{name}` is a sandbox fact.
struct Item {
    what: &'static str,
    path: &'static str,
    count: usize,
    has: &'static [&'static str],
    lacks: &'static [&'static str],
}

const fn item(what: &'static str, path: &'static str, has: &'static [&'static str]) -> Item {
    Item { what, path, count: 0, has, lacks: &[] }
}

const fn per_instance(what: &'static str, path: &'static str, count: usize, has: &'static [&'static str]) -> Item {
    Item { what, path, count, has, lacks: &[] }
}

const fn without(
    what: &'static str,
    path: &'static str,
    has: &'static [&'static str],
    lacks: &'static [&'static str],
) -> Item {
    Item { what, path, count: 0, has, lacks }
}

/// design.md's table, row by row, as artifacts.
#[rustfmt::skip]
const AUDIT_TAMPER: &[Item] = &[
    item("all audit_events with chain fields", "postgres-audit/tables/public.audit_events.csv",
        &["content_sha256", "prev_content_sha256", "chain_hmac", "chain_seq", "evt-alpha-0001", "evt-beta-0020", "evt-sys-0006", "{tampered_event}"]),
    item("every partition", "postgres-audit/queries/audit_events_partitions.csv", &["audit_events_default", "{partition_old}", "{partition_now}"]),
    item("every zone's chain re-verified", "postgres-audit/analysis/audit_chain_zones.json", &["zone-alpha", "zone-beta", "caracal-sys-00"]),
    item("the tampered row found", "postgres-audit/analysis/audit_chain_problems.jsonl", &["{tampered_event}", "content_mismatch"]),
    item("audit_ingest_alerts", "postgres-audit/tables/public.audit_ingest_alerts.csv", &["content_mismatch_on_replay", "{tampered_event}"]),
    item("audit_chain_rehash (§7)", "postgres-audit/tables/public.audit_chain_rehash.csv", &["completed_at", "\n1,"]),
    item("audit_retention", "postgres-audit/tables/public.audit_retention.csv", &["retention_days", "365"]),
    item("admin_audit_events, incl. PUT /v1/audit-retention (§7)", "postgres-audit/tables/public.admin_audit_events.csv", &["/v1/audit-retention", "PUT", "policy_set.activate"]),
    item("admin audit chain checked", "postgres-audit/analysis/admin_audit_chain_zones.json", &["zone-alpha"]),
    item("Audit logs with tamper: lines (§7)", "audit-logs/audit/caracal-audit-1/*-json.log", &["tamper: content hash mismatch", "{tampered_event}", "tamper sweep complete"]),
    item("audit DLQ, whole", "redis-dlq/streams/caracal.audit.events.dlq/entries.jsonl", &["{dlq_id_0}", "{dlq_id_1}", "{dlq_id_2}", "{dlq_id_3}", "tamper_on_replay"]),
    per_instance("Audit /metrics, per-replica tamper counters (§7)", "audit-http/*/metrics.body", 1, &["caracal_audit_tamper_mismatch_total{instance=\"caracal-audit-1\"} 1"]),
    per_instance("Audit /metrics sent with the metrics bearer", "audit-http/*/metrics.response.json", 1, &["\"status\": 200"]),
    item("the operator's alerts", "alertmanager-alerts/*/alerts.body", &["CaracalAuditTamperDetected"]),
];

#[rustfmt::skip]
const REVOCATION_STALE: &[Item] = &[
    item("XINFO of caracal.sessions.revoke with every group", "redis-streams/streams/caracal.sessions.revoke/xinfo.json",
        &["gateway-revocation:caracal-gateway-7d9f-0", "gateway-revocation:caracal-gateway-7d9f-1", "gateway-revocation:caracal-gateway-5c2a-0", "sts-revocation", "\"lag\""]),
    item("pending entries of a Gateway pod's group", "redis-streams/streams/caracal.sessions.revoke/pending/gateway-revocation:caracal-gateway-7d9f-0.jsonl",
        &["{revoke_pending_id}", "gateway-caracal-gateway-7d9f-0-1"]),
    item("caracal.sessions.revoke.dead", "redis-dlq/streams/caracal.sessions.revoke.dead/entries.jsonl", &["{revoke_dead_id}", "context deadline exceeded"]),
    without("revoked authority records the snapshot loads", "postgres-revocation/tables/public.authority_records.csv", &["ar-revoked-01"], &["ar-revoked-old", "ar-active-01"]),
    without("terminated sessions the snapshot loads", "postgres-revocation/tables/public.sessions.csv", &["as-terminated-01"], &["as-terminated-old", "as-active-01"]),
    without("revoked delegations the snapshot loads", "postgres-revocation/tables/public.delegation_edges.csv", &["de-revoked-01"], &["de-revoked-old", "de-active-01"]),
    per_instance("Gateway /metrics per instance", "gateway-http/*/metrics.body", 2,
        &["caracal_gateway_revocation_snapshot_fresh", "caracal_gateway_revocation_propagation_seconds", "caracal_gateway_revocation_reload_errors_total"]),
    per_instance("Gateway /ready per instance", "gateway-http/*/ready.body", 2, &["revocation_snapshot_stale"]),
    item("Gateway logs", "gateway-logs/gateway/caracal-gateway-1/*-json.log", &["revocation snapshot reload failed"]),
];

#[rustfmt::skip]
const STS_CIRCUIT_OPEN: &[Item] = &[
    per_instance("Gateway /ready per instance", "gateway-http/*/ready.body", 2, &["\"ready\":false"]),
    per_instance("Gateway /metrics: STS circuit (§7)", "gateway-http/*/metrics.body", 2,
        &["caracal_gateway_sts_circuit_state", "caracal_gateway_sts_exchange_errors_total", "caracal_gateway_sts_exchange_latency_ms"]),
    per_instance("STS /ready with its reason", "sts-http/*/ready.body", 1, &["redis_nonce_store_degraded"]),
    per_instance("STS /metrics", "sts-http/*/metrics.body", 1, &["caracal_sts_gateway_exchange_total"]),
    per_instance("STS JWKS", "sts-http/*/jwks.body", 1, &["\"kty\":\"EC\""]),
    item("STS logs", "sts-logs/sts/caracal-sts-1/*-json.log", &["gateway exchange rejected: nonce replay"]),
    item("Gateway logs", "gateway-logs/gateway/caracal-gateway-1/*-json.log", &["sts circuit open"]),
    // The count itself is checked against the manifest (`gw_nonces_counted` in check_bundle).
    item("caracal:sts:gw-nonce:* counted", "redis-keys/keys/summary.json", &["caracal:sts:gw-nonce:*"]),
];

#[rustfmt::skip]
const AUDIT_DLQ: &[Item] = &[
    item("the full caracal.audit.events.dlq", "redis-dlq/streams/caracal.audit.events.dlq/entries.jsonl",
        &["{dlq_id_0}", "{dlq_id_3}", "hmac_verify_failed", "json_parse_error", "transient_exceeded_max_deliveries", "src_data", "received_at"]),
    item("every *.dead stream: revocations", "redis-dlq/streams/caracal.sessions.revoke.dead/entries.jsonl", &["{revoke_dead_id}"]),
    item("every *.dead stream: policy invalidations", "redis-dlq/streams/caracal.policy.invalidate.dead/entries.jsonl", &["{policy_dead_id}", "rego_parse_error"]),
    item("XPENDING of audit-ingestor", "redis-streams/streams/caracal.audit.events/pending/audit-ingestor.jsonl", &["{audit_pending_id}", "audit-worker-0"]),
    item("replay files", "audit-replay-files/*pending-4127-*.ndjson", &["evt-replay-00", "evt-replay-02"]),
    item("replay files, every producer", "audit-replay-files/*pending-5310-*.ndjson", &["evt-replay-gw-00"]),
    item("Audit logs: event sent to DLQ (§7)", "audit-logs/audit/caracal-audit-1/*-json.log", &["event sent to DLQ", "evt-dlq-00"]),
    without("outbox dead rows", "postgres-outbox/tables/public.event_outbox.csv", &["ob-audit-dead-01", "infinity"], &["ob-policy-01"]),
    without("Coordinator outbox dead rows", "postgres-outbox/tables/public.caracal_outbox.csv", &["cob-dead-01"], &["cob-published-01"]),
    item("the Audit DLQ view, with the admin token", "audit-admin-http/*/dlq.body", &["{dlq_id_0}", "transient_exceeded_max_deliveries"]),
    per_instance("producers' audit metrics (§7)", "sts-http/*/metrics.body", 1, &["caracal_sts_audit_replay_files"]),
];

#[rustfmt::skip]
const SECRET_EXPOSURE: &[Item] = &[
    without("credential_revealed audit events", "postgres-secret-exposure/tables/public.audit_events.csv", &["credential_revealed", "evt-alpha-0043"], &["token.exchange"]),
    without("admin audit with secret rotation", "postgres-secret-exposure/tables/public.admin_audit_events.csv", &["secret_rotation", "adm-alpha-3"], &["policy_set.activate"]),
    without("admin_tokens without hashes", "postgres-secret-exposure/tables/public.admin_tokens.csv",
        &["adm-tok-ci", "adm-tok-oncall", "last_used_at", "revoked_at"], &["token_sha256", "token_hash", "argon2id", "\\x"]),
    without("authority records created since (§7)", "postgres-secret-exposure/tables/public.authority_records.csv", &["ar-active-01", "ar-revoked-01"], &["ar-revoked-old"]),
    item("api:admin_auth_fail:*", "redis-keys/keys/api:admin_auth_fail:*.jsonl", &["{admin_auth_fail_key}"]),
    item("audit:jti:*", "redis-keys/keys/audit:jti:*.jsonl", &["audit:jti:{jti}", "app-billing|"]),
    // Its redactions, with fingerprints, are checked against the manifest (`compose_config_fingerprinted`), and the
    // diff against the previous bundle in `check_config_diff`.
    item("redacted config: compose.yml", "compose-config/current/compose.yml",
        &["AUDIT_ADMIN_TOKEN: \"[REDACTED:", "STS_ADMIN_TOKEN: \"[REDACTED:", "METRICS_BEARER_FILE: /run/secrets/metricsBearer", "ghcr.io/garudex-labs/caracal-go"]),
    item("redacted config: caracal.env", "compose-config/current/caracal.env", &["AUDIT_ADMIN_TOKEN=[REDACTED:", "REDIS_MAXMEMORY=512mb"]),
    item("API logs", "api-logs/api/caracal-api-1/*-json.log", &["admin auth failed", "203.0.113.9"]),
];

#[rustfmt::skip]
const BAD_POLICY_ALLOW: &[Item] = &[
    item("policy_set_bindings", "postgres-policy/tables/public.policy_set_bindings.csv", &["zone-alpha,ps-main,psv-main-2"]),
    item("policy_set_versions with manifests", "postgres-policy/tables/public.policy_set_versions.csv", &["psv-main-1", "psv-main-2", "manifest_sha256", "pv-allow-2"]),
    item("referenced policy_versions content", "postgres-policy/tables/public.policy_versions.csv",
        &["pv-allow-2", "pv-base-1", "startswith(input.scope", "{pv_allow_2_sha256}"]),
    item("per zone: active and previous policy-set version, manifests, every referenced policy's hash checked",
        "postgres-policy/policy-sets/zone-alpha/ps-main.json",
        &["psv-main-2", "psv-main-1", "pv-allow-2", "pv-base-1", "{pv_allow_2_sha256}", "\"ok\": true"]),
    without("no policy's hash is wrong", "postgres-policy/policy-sets/zone-alpha/ps-main.json", &["pv-allow-2"], &["\"ok\": false"]),
    item("the active version's Rego", "postgres-policy/policy-sets/zone-alpha/ps-main/active/pv-allow-2.rego", &["startswith(input.scope, \"billing:\")"]),
    item("the diff from the previous version", "postgres-policy/policy-sets/zone-alpha/ps-main.diff",
        &["psv-main-1", "psv-main-2", "+allow if startswith(input.scope, \"billing:\")"]),
    without("audit rows for the incident's request", "postgres-request/tables/public.audit_events.csv",
        &["{incident_request}", "evt-alpha-0041", "evt-alpha-0042", "psv-main-2", "manifest-sha-v2", "determining_policies_json"], &["req-alpha-0040"]),
    without("event_outbox rows for caracal.policy.invalidate", "postgres-policy/tables/public.event_outbox.csv", &["ob-policy-00", "ob-policy-01", "psv-main-2"], &["ob-revoke-01"]),
    without("admin audit of policy routes", "postgres-policy-admin/tables/public.admin_audit_events.csv",
        &["/v1/zones/zone-alpha/policy-sets/ps-main/activate", "/v1/zones/zone-alpha/policies/pol-allow/versions"], &["/v1/audit-retention", "rotate-secret"]),
    item("STS logs", "sts-logs/sts/caracal-sts-1/*-json.log", &["opa policy set loaded", "psv-main-2"]),
    item("explain of the request (§7)", "console-explain/*/explain.body", &["{incident_request}", "final_decision", "policy_input"]),
    item("activation status of the policy set (§7)", "console-explain/*/activation_status.body", &["psv-main-2", "ob-policy-01"]),
    per_instance("STS policy age metric (§7)", "sts-http/*/metrics.body", 1, &["caracal_sts_opa_max_policy_age_seconds"]),
];

/// What `full` adds to the union: every other collector preserve has.
#[rustfmt::skip]
const FULL_EXTRAS: &[Item] = &[
    per_instance("Coordinator /stats with its token", "coordinator-http/*/stats.body", 1, &["outbox_rows_dead"]),
    per_instance("API /metrics", "api-http/*/metrics.body", 1, &["caracal_api_outbox_dead"]),
    per_instance("Web /version", "web-http/*/version.body", 1, &["1.0.0"]),
    item("Coordinator logs", "coordinator-logs/coordinator/*-json.log", &["outbox_rows_dead"]),
    item("Web logs", "web-logs/web/*-json.log", &["caracal-auth"]),
    item("Postgres logs", "postgres-logs/postgres/*-json.log", &["duration: 812.331 ms"]),
    item("Redis logs", "redis-logs/redis/*-json.log", &["Background saving"]),
    item("pg_stat_activity", "postgres-activity/queries/pg_stat_activity.csv", &["preserve"]),
    item("the host's processes", "host-processes/stdout.txt", &["PID"]),
];

/// Which alert each profile's run is triggered by (labels feed the request-filtered collectors).
fn alert_for(profile: &str) -> Option<serde_json::Value> {
    let z = ("zone_id", "zone-alpha");
    let r = ("request_id", "req-incident-7f3a");
    match profile {
        "audit-tamper" | "full" => Some(sandbox::tamper_alert()),
        "revocation-stale" => {
            Some(sandbox::alert("CaracalGatewayRevocationSnapshotStale", &[("pod", GATEWAY_PODS[0])]))
        }
        "sts-circuit-open" => Some(sandbox::alert("CaracalGatewaySTSCircuitOpen", &[("pod", GATEWAY_PODS[1])])),
        "audit-dlq" => Some(sandbox::alert("CaracalAuditDLQGrowth", &[])),
        "bad-policy-allow" => Some(sandbox::alert("UnexpectedAllow", &[z, r, ("policy_set_id", "ps-main")])),
        _ => None, // secret-exposure: a report, not an alert
    }
}

fn rows(profile: &str) -> Vec<&'static Item> {
    let all = || {
        [AUDIT_TAMPER, REVOCATION_STALE, STS_CIRCUIT_OPEN, AUDIT_DLQ, SECRET_EXPOSURE, BAD_POLICY_ALLOW, FULL_EXTRAS]
    };
    match profile {
        "audit-tamper" => AUDIT_TAMPER.iter().collect(),
        "revocation-stale" => REVOCATION_STALE.iter().collect(),
        "sts-circuit-open" => STS_CIRCUIT_OPEN.iter().collect(),
        "audit-dlq" => AUDIT_DLQ.iter().collect(),
        "secret-exposure" => SECRET_EXPOSURE.iter().collect(),
        "bad-policy-allow" => BAD_POLICY_ALLOW.iter().collect(),
        // The tamper alert has no policy_set_id: activation status is checked as skipped instead.
        "full" => all().into_iter().flatten().filter(|i| !i.path.contains("activation_status")).collect(),
        _ => unreachable!(),
    }
}

/// `preserve snapshot` pointed only at the sandbox: its config, no inherited site settings.
fn preserve_snapshot(sb: &Sandbox) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_preserve"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PRESERVE_") || k == "CARACAL_HOME" || k == "AUDIT_HMAC_KEY" || k == "XDG_DATA_HOME" {
            c.env_remove(k);
        }
    }
    // The site key the markers are checked with (support::marker).
    let key = sb.root.join("fingerprint.key");
    std::fs::write(&key, support::FINGERPRINT_KEY).unwrap();
    c.env("PRESERVE_FINGERPRINT_KEY", format!("file:{}", key.display()));
    c.env("HOME", sb.root.join("home")).args(["snapshot", "--config"]).arg(&sb.config);
    c
}

/// Runs the profile, verifies the bundle, unpacks it; returns the bag and the problems found so far.
fn snapshot(sb: &Sandbox, profile: &str) -> (PathBuf, Vec<String>) {
    let mut problems = Vec::new();
    // One evidence directory, as an operator keeps: `full` finds secret-exposure's bundle as its config baseline.
    let out = sb.root.join("evidence");
    let mut cmd = preserve_snapshot(sb);
    cmd.args(["-q", "--profile", profile, "--out"]).arg(&out);
    if let Some(a) = alert_for(profile) {
        let file = sb.root.join(format!("alert-{profile}.json"));
        std::fs::write(&file, a.to_string()).unwrap();
        cmd.arg("--alert").arg(file);
    }
    let o = support::run(&mut cmd);
    let bundle = PathBuf::from(support::stdout(&o).trim());
    assert!(bundle.is_file(), "{profile}: no bundle written (exit {:?})", o.status.code());
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join(bundle.file_name().unwrap().to_string_lossy().replace(".tar.zst", ".manifest.json")))
            .unwrap(),
    )
    .unwrap();
    if o.status.code() != Some(0) {
        for c in m["collectors"].as_array().unwrap().iter().filter(|c| c["status"] != "ok") {
            problems.push(format!("{profile}: collector {} is {}: {}", c["name"], c["status"], c["error"]));
        }
        problems.push(format!("{profile}: snapshot exited {:?}, not 0 (complete)", o.status.code()));
    }
    let v = support::run(Command::new(env!("CARGO_BIN_EXE_preserve")).arg("verify").arg(&bundle));
    if v.status.code() != Some(0) {
        problems.push(format!("{profile}: preserve verify failed: {}", support::stdout(&v)));
    }
    (unpack(&bundle, &sb.root.join("unpacked").join(profile)), problems)
}

/// Checks `items` against the bag's payload.
fn check_items(sb: &Sandbox, profile: &str, bag: &Path, items: &[&Item]) -> Vec<String> {
    let data = bag.join("data");
    let files: Vec<(String, Vec<u8>)> = files_below(&data)
        .into_iter()
        .map(|(p, b)| (p.strip_prefix(&data).unwrap().to_string_lossy().into_owned(), b))
        .collect();
    let mut problems = Vec::new();
    for i in items {
        let pattern = glob::Pattern::new(&sb.expand(i.path)).unwrap();
        let matched: Vec<&(String, Vec<u8>)> = files.iter().filter(|(p, _)| pattern.matches(p)).collect();
        let say = |p: &mut Vec<String>, m: String| p.push(format!("{profile}: {} ({}): {m}", i.what, i.path));
        if matched.is_empty() || (i.count > 0 && matched.len() != i.count) {
            say(
                &mut problems,
                format!(
                    "{} files match, want {}",
                    matched.len(),
                    if i.count == 0 { "some".into() } else { i.count.to_string() }
                ),
            );
            continue;
        }
        for (path, bytes) in matched {
            let text = String::from_utf8_lossy(bytes);
            if text.trim().is_empty() {
                say(&mut problems, format!("{path} is empty"));
            }
            for h in i.has.iter().map(|h| sb.expand(h)) {
                if !text.contains(&h) {
                    say(&mut problems, format!("{path} lacks `{h}`"));
                }
            }
            for l in i.lacks.iter().map(|l| sb.expand(l)) {
                if text.contains(&l) {
                    say(&mut problems, format!("{path} holds `{l}`, which it must not"));
                }
            }
        }
    }
    problems
}

/// Every profile: the alert and context recorded, no secret anywhere, and the checks only the manifest can show.
fn check_bundle(sb: &Sandbox, profile: &str, bag: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let m = manifest(bag);
    let context = std::fs::read_to_string(bag.join("data/context/context.json")).unwrap_or_default();
    if !context.contains("\"tool\"") || !bag.join("data/context/preserve.toml").exists() {
        problems.push(format!("{profile}: context (tool, host, time, configuration used) missing"));
    }
    if let Some(a) = alert_for(profile) {
        let name = a["alerts"][0]["labels"]["alertname"].as_str().unwrap().to_string();
        let alerts = std::fs::read_to_string(bag.join("data/context/alerts.json")).unwrap_or_default();
        if !alerts.contains(&name) || m["trigger"]["kind"] != "alert" {
            problems.push(format!("{profile}: the alert {name} is not recorded (context/alerts.json, trigger.kind)"));
        }
    }
    // No secret value anywhere: payload, manifest, tag files; neither those preserve knows (secrets/) nor the
    // canaries it does not, nor the token Compose holds only inline.
    let canaries = [("canary bearer", CANARY_BEARER.to_string()), ("canary URL password", CANARY_URL_PASSWORD.into())];
    for (path, bytes) in files_below(bag) {
        for (name, value) in sb.secrets.iter().map(|(n, v)| (*n, v.clone())).chain(canaries.clone()) {
            if memchr::memmem::find(&bytes, value.as_bytes()).is_some() {
                problems.push(format!("{profile}: secret {name} leaked into {}", path.display()));
            }
        }
    }
    let collectors: Vec<String> =
        m["collectors"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    if collectors.iter().any(|c| c == "postgres-audit") {
        let codes: Vec<&str> = m["findings"].as_array().unwrap().iter().filter_map(|f| f["code"].as_str()).collect();
        if !codes.contains(&"audit.chain.content_mismatch") {
            problems.push(format!("{profile}: the tampered row is not a finding: {codes:?}"));
        }
        // The key that checked chain_hmac is named by its fingerprint (§7: fingerprint of AUDIT_HMAC_KEY).
        if !m.to_string().contains("key_fingerprint") {
            problems.push(format!("{profile}: no fingerprint of the audit HMAC key in the manifest"));
        }
    }
    if collectors.iter().any(|c| c == "redis-keys") {
        let families = &collector(&m, "redis-keys")["details"]["keys"];
        let nonce = families.as_array().unwrap().iter().find(|f| f["pattern"] == "caracal:sts:gw-nonce:*");
        if nonce.map(|f| f["matched"].as_u64()) != Some(Some(GW_NONCES as u64)) {
            problems.push(format!("{profile}: gw_nonces_counted: want {GW_NONCES}, got {nonce:?}"));
        }
    }
    if collectors.iter().any(|c| c == "compose-config") {
        let fingerprinted = collector(&m, "compose-config")["redactions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["count"].as_u64() > Some(0) && r["fingerprints"].as_array().is_some_and(|f| !f.is_empty()));
        if !fingerprinted {
            problems.push(format!(
                "{profile}: compose_config_fingerprinted: the compose file's secrets are not recorded with fingerprints"
            ));
        }
    }
    problems
}

/// One unknown bearer token, logged by the STS (JSON field) and the Gateway (message text) and echoed by the console:
/// one marker in all three, so the responder sees it was the same token; the ids around it stay readable.
fn check_canaries(bag: &Path) -> Vec<String> {
    let m = manifest(bag);
    let mark = support::marker(&m, CANARY_BEARER);
    let text = |glob: &str| -> String {
        let pattern = glob::Pattern::new(glob).unwrap();
        let data = bag.join("data");
        files_below(&data)
            .into_iter()
            .filter(|(p, _)| pattern.matches(&p.strip_prefix(&data).unwrap().to_string_lossy()))
            .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
            .collect()
    };
    let mut problems = Vec::new();
    for (what, glob, id) in [
        ("STS log", "sts-logs/*-json.log", "ar-revoked-01"),
        ("Gateway log", "gateway-logs/*-json.log", "as-incident-01"),
        ("console explain", "console-explain/*/explain.body", "ar-revoked-01"),
    ] {
        let t = text(glob);
        if !t.contains(&mark) {
            problems.push(format!("canary: the {what} does not show the bearer token as {mark}"));
        }
        if !t.contains(id) {
            problems.push(format!("canary: the {what} lost the evidence id {id}"));
        }
    }
    let explain = text("console-explain/*/explain.body");
    if !explain.contains(&format!("https://preserve:{}@hooks.example", support::marker(&m, CANARY_URL_PASSWORD))) {
        problems.push(format!("canary: the password in the response's URL is not marked: {explain}"));
    }
    problems
}

/// `full` runs after secret-exposure into the same directory, and after someone turned on debug logging: the
/// Compose config is diffed against secret-exposure's bundle, the change shows, the unchanged secrets do not.
fn check_config_diff(bag: &Path) -> Vec<String> {
    let m = manifest(bag);
    let c = collector(&m, "compose-config");
    let items = c["details"]["items"].as_array().cloned().unwrap_or_default();
    let item = |name: &str| items.iter().find(|i| i["name"] == name).cloned().unwrap_or_default();
    let mut problems = Vec::new();
    let env = item("caracal.env");
    if env["differs"] != true || !env["baseline"].as_str().is_some_and(|b| b.starts_with("preserve-secret-exposure-")) {
        problems.push(format!("config: caracal.env should differ from secret-exposure's bundle: {env}"));
    }
    if item("compose.yml")["differs"] != false {
        problems.push(format!("config: compose.yml did not change: {}", item("compose.yml")));
    }
    let diff = std::fs::read_to_string(bag.join("data/compose-config/caracal.env.diff")).unwrap_or_default();
    if !diff.contains("-CARACAL_LOG_LEVEL=info\n+CARACAL_LOG_LEVEL=debug\n") || diff.contains("+AUDIT_ADMIN_TOKEN") {
        problems.push(format!("config: the diff should show the log level change alone:\n{diff}"));
    }
    problems
}

/// The tamper alert's labels choose what the request-filtered collectors read (full runs them all).
fn check_alert_filters(sb: &Sandbox, bag: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let rows =
        std::fs::read_to_string(bag.join("data/postgres-request/tables/public.audit_events.csv")).unwrap_or_default();
    let requests: std::collections::BTreeSet<&str> = rows.lines().skip(1).filter_map(|l| l.split(',').nth(3)).collect();
    let want = sb.psql("SELECT count(*) FROM audit_events WHERE request_id = 'req-incident-7f3a'");
    if requests.into_iter().collect::<Vec<_>>() != ["req-incident-7f3a"]
        || (rows.lines().count() - 1).to_string() != want.trim()
    {
        problems
            .push(format!("alert: postgres-request did not read exactly the alert's request ({want} rows):\n{rows}"));
    }
    let search = files_below(&bag.join("data/audit-admin-http"))
        .into_iter()
        .find(|(p, _)| p.ends_with("search_request.body"))
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    if !search.contains("evt-alpha-0041") || search.contains("req-alpha-0040") {
        problems.push(format!("alert: the Audit search was not filtered by the alert's request_id: {search}"));
    }
    let m = manifest(bag);
    let skipped = collector(&m, "console-explain")["details"]["requests"].as_array().unwrap().iter().any(|r| {
        r["name"] == "activation_status" && r["skipped"].as_str().is_some_and(|s| s.contains("policy_set_id"))
    });
    if !skipped {
        problems.push("alert: activation_status should be skipped for want of a policy_set_id label".into());
    }
    problems
}

#[test]
fn every_profile_captures_its_row_of_the_runbook_from_a_caracal_sandbox() {
    let started = std::time::Instant::now();
    let sb = Sandbox::start();
    eprintln!("sandbox up in {:?}", started.elapsed());
    let mut problems = Vec::new();
    for profile in [
        "audit-tamper",
        "revocation-stale",
        "sts-circuit-open",
        "audit-dlq",
        "secret-exposure",
        "bad-policy-allow",
        "full",
    ] {
        if profile == "full" {
            // Someone turned on debug logging since the last snapshot.
            let env = sb.caracal_home.join("caracal.env");
            let text = std::fs::read_to_string(&env).unwrap();
            std::fs::write(&env, text.replace("CARACAL_LOG_LEVEL=info", "CARACAL_LOG_LEVEL=debug")).unwrap();
        }
        let (bag, mut p) = snapshot(&sb, profile);
        p.extend(check_items(&sb, profile, &bag, &rows(profile)));
        p.extend(check_bundle(&sb, profile, &bag));
        if profile == "full" {
            p.extend(check_alert_filters(&sb, &bag));
            p.extend(check_canaries(&bag));
            p.extend(check_config_diff(&bag));
        }
        problems.extend(p);
    }
    eprintln!("all profiles in {:?}", started.elapsed());
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

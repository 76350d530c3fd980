//! A secret leaked into logs, config files and command output must never reach a bundle. Secrets named by `env:`
//! references, Caracal's generated secret files and passwords inside environment URLs are all known to the
//! redactor before anything is collected; the manifest records what was redacted, never the value.

mod support;

use support::*;

const REDIS_PASSWORD: &str = "Rp-7f3a9c1e5b2d4-redis";
const TOKEN: &str = "tok_9a8b7c6d5e4f3a2b1c";
const HMAC_FILE_SECRET: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f0";
const PG_PASSWORD: &str = "pgPa55-in-url-31337";
const ARGV_PASSWORD: &str = "argvPass-unknown-424242";
const ALERT_PASSWORD: &str = "alertPw-in-annotation-999";
const PROM_PASSWORD: &str = "promSecret-in-generator-77";

#[test]
fn secrets_never_appear_anywhere_in_the_bundle() {
    let ws = Workspace::new();
    let home = ws.path().join("caracal-home");
    ws.write("caracal-home/secrets/auditHmacKey", format!("{HMAC_FILE_SECRET}\n"));
    let cfg = ws.write(
        "site.toml",
        "organization = \"ACME SecOps\"\n[redis]\nusername = \"preserve\"\npassword = \"env:PRESERVE_TEST_REDIS_PASSWORD\"\n",
    );
    ws.write(
        "evidence/gateway.log",
        format!(
            "{{\"level\":\"error\",\"msg\":\"redis auth failed\",\"password\":\"{REDIS_PASSWORD}\",\"session_id\":\"sess_0042\",\"agent_session_id\":\"as_77\",\"request_id\":\"req-1\"}}\n\
             {{\"msg\":\"audit key loaded {HMAC_FILE_SECRET}\",\"delegation_edge_id\":\"de_5\",\"zone_id\":\"z1\"}}\n\
             {{\"msg\":\"dsn postgres://caracal:{PG_PASSWORD}@db:5432/caracal\"}}\n"
        ),
    );
    ws.write("evidence/app.conf", format!("[redis]\nhost = cache\npassword = {REDIS_PASSWORD}\ntoken = {TOKEN}\n"));
    let dir = collectors_dir(
        &ws,
        "leaky.toml",
        &format!(
            r#"
[[collector]]
name = "leaky-files"
kind = "file"
window = false
paths = ["{p}/evidence/*"]

[[collector]]
name = "leaky-command"
kind = "command"
argv = ["sh", "-c", "echo token=$TOKEN; echo redis=$PRESERVE_TEST_REDIS_PASSWORD >&2"]
env_credentials = {{ TOKEN = "env:PRESERVE_TEST_TOKEN" }}

[[collector]]
name = "leaky-argv"
kind = "command"
argv = ["echo", "postgres://u:{ARGV_PASSWORD}@h/db"]
"#,
            p = ws.path().display()
        ),
    );
    let alert = ws.write(
        "alert.json",
        serde_json::json!({
            "version": "4", "status": "firing",
            "alerts": [{
                "status": "firing",
                "labels": { "alertname": "CaracalAuditTamperDetected", "zone_id": "z1", "severity": "critical" },
                "annotations": { "runbook": format!("connect with postgres://audit:{ALERT_PASSWORD}@db/caracal") },
                "startsAt": "2026-11-29T01:00:00Z",
                "generatorURL": format!("http://admin:{PROM_PASSWORD}@prometheus:9090/graph"),
                "fingerprint": "5c1f1e3c2a9b7d10"
            }]
        })
        .to_string(),
    );
    let out = run(ws
        .preserve()
        .args(["snapshot", "-c", "leaky-files", "-c", "leaky-command", "-c", "leaky-argv", "--alert"])
        .arg(&alert)
        .arg("--config")
        .arg(&cfg)
        .arg("--collectors")
        .arg(&dir)
        .env("PRESERVE_TEST_REDIS_PASSWORD", REDIS_PASSWORD)
        .env("PRESERVE_TEST_TOKEN", TOKEN)
        .env("CARACAL_HOME", &home)
        .env("PRESERVE_POSTGRES_URL", format!("postgres://caracal:{PG_PASSWORD}@127.0.0.1:5432/caracal")));
    assert_eq!(out.status.code(), Some(0));

    let bundle = ws.only_bundle();
    let bag = unpack(&bundle, &ws.path().join("x"));
    let all = [REDIS_PASSWORD, TOKEN, HMAC_FILE_SECRET, PG_PASSWORD, ARGV_PASSWORD, ALERT_PASSWORD, PROM_PASSWORD];
    assert_no_secret_anywhere(&ws, &bag, &out, &all);

    // The evidence is still there around the holes, evidence IDs untouched.
    let m = manifest(&bag);
    let logs = collector_text(&bag, "leaky-files");
    assert!(logs.contains(&format!(r#""password":"{}""#, marker(&m, REDIS_PASSWORD))), "{logs}");
    for id in ["sess_0042", "as_77", "de_5", "req-1", "z1"] {
        assert!(logs.contains(id), "evidence id {id} must survive redaction");
    }
    assert!(collector_text(&bag, "leaky-command").contains(&format!("token={}", marker(&m, TOKEN))));

    // The manifest says what was redacted, by rule, count and fingerprint.
    let files = collector(&m, "leaky-files");
    let rules: Vec<&str> =
        files["redactions"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert!(rules.contains(&"credential env:PRESERVE_TEST_REDIS_PASSWORD"), "{rules:?}");
    assert!(rules.contains(&"caracal secret auditHmacKey"), "{rules:?}");
    let redis_rule = files["redactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "credential env:PRESERVE_TEST_REDIS_PASSWORD")
        .unwrap();
    assert_eq!(redis_rule["count"], 2, "once in the log, once in app.conf");
    assert_eq!(redis_rule["fingerprints"].as_array().unwrap().len(), 1);
    assert_eq!(m["trigger"]["kind"], "alert");
    assert_eq!(m["trigger"]["alerts"][0]["fingerprint"], "5c1f1e3c2a9b7d10", "evidence in the alert survives");
    assert!(!m["trigger"]["redactions"].as_array().unwrap().is_empty(), "the alert's redactions are recorded");
    assert!(
        collector(&m, "leaky-argv")["source"]
            .as_str()
            .unwrap()
            .contains(&format!("postgres://u:{}@h/db", marker(&m, ARGV_PASSWORD)))
    );
    let context = collector_text(&bag, "context");
    assert!(context.contains("env:PRESERVE_TEST_REDIS_PASSWORD"), "the config used is recorded, as references");
    assert!(context.contains("postgres://caracal@127.0.0.1:5432/caracal"), "URLs are recorded without their password");
}

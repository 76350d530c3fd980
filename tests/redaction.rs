//! Canary secrets planted where a Caracal install keeps them (its env file, its Compose file's inline env, its
//! `secrets/` folder, the environment, log lines of two services, URLs) never reach a bundle; one secret seen by two
//! services reads as one marker, whose fingerprint a holder of the value can check; evidence ids stay visible. And
//! when redaction misses a known secret, the last scan drops the artifact and fails its collector.

mod support;

use support::*;

/// Known to preserve: a file of Caracal's `secrets/` folder.
const ADMIN_TOKEN: &str = "canary-admin-token-0a1b2c3d4e";
/// Unknown to preserve: each must be caught by a key-name or value rule.
const GOOGLE_CLIENT_SECRET: &str = "canary-google-cs-1f2e3d4c";
const SMTP_PASSWORD: &str = "canary-smtp-pw-9d8c7b";
const STS_ADMIN_TOKEN: &str = "canary-sts-admin-77aa66";
const AUDIT_ADMIN_TOKEN: &str = "canary-audit-admin-88bb55";
const BEARER: &str = "canary-bearer-5e6f7a8b9c0d";
const JWT: &str = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImNhbmFyeSJ9.eyJzdWIiOiJjYW5hcnktand0In0.c2lnbmF0dXJlLWNhbmFyeQ";
const VAULT_TOKEN: &str = "canary-vault-66dd44";
const PG_URL_PASSWORD: &str = "canary-pg-url-pw-4455";
const AWS_KEY: &str = "AKIACANARY0000000042";

const ALL: &[&str] = &[
    ADMIN_TOKEN,
    GOOGLE_CLIENT_SECRET,
    SMTP_PASSWORD,
    STS_ADMIN_TOKEN,
    AUDIT_ADMIN_TOKEN,
    BEARER,
    JWT,
    VAULT_TOKEN,
    PG_URL_PASSWORD,
    AWS_KEY,
];

fn caracal_home(ws: &Workspace) {
    ws.write("home/secrets/caracalAdminToken", format!("{ADMIN_TOKEN}\n"));
    ws.write(
        "home/caracal.env",
        format!(
            "# operator overrides\nCARACAL_LOG_LEVEL=debug\nGOOGLE_CLIENT_SECRET={GOOGLE_CLIENT_SECRET}\n\
             CARACAL_SMTP_URL=smtps://ops:{SMTP_PASSWORD}@mail.example:465\nAWS_ACCESS_KEY_ID={AWS_KEY}\n"
        ),
    );
    ws.write(
        "home/compose.yml",
        format!(
            "name: caracal\nservices:\n  sts:\n    image: caracal/sts:1.4.2\n    environment:\n      STS_ADMIN_TOKEN: \"{STS_ADMIN_TOKEN}\"\n      \
             CARACAL_ADMIN_TOKEN_FILE: /run/secrets/caracalAdminToken\n      OPA_POLL_SECONDS: 60\n    secrets:\n      - caracalAdminToken\n  \
             audit:\n    environment:\n      - AUDIT_ADMIN_TOKEN={AUDIT_ADMIN_TOKEN}\n      - LOG_LEVEL=info\nsecrets:\n  caracalAdminToken:\n    \
             file: ./secrets/caracalAdminToken\n"
        ),
    );
    // The same bearer token and JWT seen by two services, in two log shapes.
    ws.write(
        "logs/sts.log",
        format!(
            "{{\"level\":\"warn\",\"service\":\"sts\",\"msg\":\"exchange rejected\",\"authorization\":\"Bearer {BEARER}\",\
             \"session_id\":\"sess_keep_01\",\"request_id\":\"req-keep-1\"}}\n\
             {{\"level\":\"info\",\"msg\":\"assertion {JWT}\",\"agent_session_id\":\"as_keep_02\",\"delegation_edge_id\":\"de_keep_03\"}}\n\
             {{\"level\":\"info\",\"msg\":\"admin token {ADMIN_TOKEN} accepted\",\"zone_id\":\"z-keep\"}}\n"
        ),
    );
    ws.write(
        "logs/gateway.log",
        format!(
            "2026-11-29T10:00:00Z WARN sts exchange failed: Authorization: Bearer {BEARER} agent_session_id=as_keep_02\n\
             2026-11-29T10:00:01Z WARN forwarded jwt={JWT} session_id=sess_keep_01\n"
        ),
    );
}

fn collectors(ws: &Workspace) -> std::path::PathBuf {
    let p = ws.path().display();
    collectors_dir(
        ws,
        "canary.toml",
        &format!(
            r#"
[[collector]]
name = "sts-logs"
kind = "file"
window = false
paths = ["{p}/logs/sts.log"]

[[collector]]
name = "gateway-logs"
kind = "file"
window = false
paths = ["{p}/logs/gateway.log"]

[[collector]]
name = "install"
kind = "file"
window = false
paths = ["${{caracal_home}}/caracal.env", "${{caracal_home}}/compose.yml"]

[[collector]]
name = "service-env"
kind = "command"
argv = ["env"]
inherit_env = ["CARACAL_VAULT_TOKEN", "CARACAL_LOG_LEVEL"]
"#
        ),
    )
}

#[test]
fn canary_secrets_never_reach_the_bundle_and_one_secret_reads_as_one_marker() {
    let ws = Workspace::new();
    caracal_home(&ws);
    let dir = collectors(&ws);
    let out = run(ws
        .snapshot(&dir)
        .args(["-c", "sts-logs", "-c", "gateway-logs", "-c", "install", "-c", "service-env"])
        .env("CARACAL_HOME", ws.path().join("home"))
        .env("CARACAL_VAULT_TOKEN", VAULT_TOKEN)
        .env("CARACAL_LOG_LEVEL", "debug")
        .env("PRESERVE_POSTGRES_URL", format!("postgres://caracal:{PG_URL_PASSWORD}@127.0.0.1:1/caracal")));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let bundle = ws.only_bundle();
    let bag = unpack(&bundle, &ws.path().join("x"));
    assert_no_secret_anywhere(&ws, &bag, &out, ALL);

    let m = manifest(&bag);
    let sts = collector_text(&bag, "sts-logs");
    let gateway = collector_text(&bag, "gateway-logs");
    // One secret, two services, two shapes: one marker, so the responder sees it was the same token.
    for (secret, what) in [(BEARER, "bearer token"), (JWT, "JWT")] {
        let mark = marker(&m, secret);
        assert!(sts.contains(&mark) && gateway.contains(&mark), "{what} as {mark}:\n{sts}\n{gateway}");
    }
    assert!(sts.contains(&marker(&m, ADMIN_TOKEN)), "a known secret is marked the same way: {sts}");
    for id in ["sess_keep_01", "as_keep_02", "de_keep_03", "req-keep-1", "z-keep"] {
        assert!(sts.contains(id), "evidence id {id} must stay visible: {sts}");
    }
    assert!(gateway.contains("agent_session_id=as_keep_02") && gateway.contains("session_id=sess_keep_01"));

    // The install's config keeps its shape: what is not secret stays, each secret is a marker.
    let install = collector_text(&bag, "install");
    for kept in [
        "CARACAL_LOG_LEVEL=debug",
        "CARACAL_ADMIN_TOKEN_FILE: /run/secrets/caracalAdminToken",
        "OPA_POLL_SECONDS: 60",
        "- caracalAdminToken",
        "file: ./secrets/caracalAdminToken",
        "- LOG_LEVEL=info",
        "smtps://ops:",
    ] {
        assert!(install.contains(kept), "{kept} lost:\n{install}");
    }
    for (secret, shape) in [
        (STS_ADMIN_TOKEN, format!("STS_ADMIN_TOKEN: \"{}\"", marker(&m, STS_ADMIN_TOKEN))),
        (AUDIT_ADMIN_TOKEN, format!("- AUDIT_ADMIN_TOKEN={}", marker(&m, AUDIT_ADMIN_TOKEN))),
        (GOOGLE_CLIENT_SECRET, format!("GOOGLE_CLIENT_SECRET={}", marker(&m, GOOGLE_CLIENT_SECRET))),
        (AWS_KEY, format!("AWS_ACCESS_KEY_ID={}", marker(&m, AWS_KEY))),
    ] {
        assert!(install.contains(&shape), "{secret}: expected {shape} in\n{install}");
    }
    let env = collector_text(&bag, "service-env");
    assert!(env.contains(&format!("CARACAL_VAULT_TOKEN={}", marker(&m, VAULT_TOKEN))), "{env}");
    assert!(env.contains("CARACAL_LOG_LEVEL=debug"), "{env}");

    // The manifest lists each marker's fingerprint under the rule that found it, and which key made them (never
    // anything to check them with: that takes the site key).
    let fingerprint = |s: &str| marker(&m, s)["[REDACTED:".len()..].trim_end_matches(']').to_string();
    let listed = |name: &str| -> Vec<String> {
        collector(&m, name)["redactions"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["fingerprints"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()))
            .collect()
    };
    for name in ["sts-logs", "gateway-logs"] {
        assert!(listed(name).contains(&fingerprint(BEARER)), "{name}: {:?}", listed(name));
    }
    assert!(m["redaction"].get("salt").is_none(), "{}", m["redaction"]);
    assert_eq!(m["redaction"]["key"], "site");
    assert!(m["redaction"]["marker"].as_str().unwrap().starts_with("[REDACTED:"));
}

#[test]
fn a_known_secret_that_slips_past_redaction_drops_its_artifact_and_fails_the_collector() {
    let ws = Workspace::new();
    ws.write("home/secrets/caracalAdminToken", format!("{ADMIN_TOKEN}\n"));
    // A line longer than the file reader's 1 MiB piece, with the secret across the cut: each piece is redacted
    // alone, so neither holds the whole value. The last scan sees the bytes as written, whole.
    let mut line = "x".repeat((1 << 20) - 10);
    line.push_str(ADMIN_TOKEN);
    line.push('\n');
    ws.write("logs/huge.log", format!("{line}short line\n"));
    ws.write("logs/fine.log", "nothing secret here\n");
    let p = ws.path().display();
    let dir = collectors_dir(
        &ws,
        "leak.toml",
        &format!(
            "[[collector]]\nname = \"huge\"\nkind = \"file\"\nwindow = false\npaths = [\"{p}/logs/huge.log\"]\n\n\
             [[collector]]\nname = \"fine\"\nkind = \"file\"\nwindow = false\npaths = [\"{p}/logs/fine.log\"]\n"
        ),
    );
    let out = run(ws.snapshot(&dir).args(["-c", "huge", "-c", "fine"]).env("CARACAL_HOME", ws.path().join("home")));
    assert_eq!(out.status.code(), Some(3), "a failed collector makes the bundle partial: {}", stderr(&out));

    let bundle = ws.only_bundle();
    let bag = unpack(&bundle, &ws.path().join("x"));
    let m = manifest(&bag);
    let huge = collector(&m, "huge");
    assert_eq!(huge["status"], "failed", "{huge}");
    let error = huge["error"].as_str().unwrap();
    assert!(
        error.contains("huge.log held a known secret")
            && error.contains("caracal secret caracalAdminToken")
            && error.contains("dropped"),
        "the reason names the artifact and the secret's rule: {error}"
    );
    assert!(huge["artifacts"].as_array().unwrap().is_empty(), "{huge}");
    assert!(!bag.join("data/huge").exists(), "the leaking artifact is not in the bag");
    assert_eq!(collector(&m, "fine")["status"], "ok", "other collectors are unaffected");
    assert!(files_below(&bag.join("data/fine")).len() == 1);
    let raw = std::process::Command::new("zstd").arg("-dc").arg(&bundle).output().unwrap();
    assert!(!String::from_utf8_lossy(&raw.stdout).contains(ADMIN_TOKEN));
    let verify = run(ws.preserve().arg("verify").arg(&bundle));
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
}

//! The command line as an operator meets it: the plan without side effects, JSON for scripts, inspect, list, help.

mod support;

use support::*;

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let ws = Workspace::new();
    let out = run(ws.preserve().args(["snapshot", "--profile", "full", "--dry-run", "--json", "--since", "2h"]));
    assert_eq!(out.status.code(), Some(0));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = plan["collectors"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "context", "context always comes first");
    for n in ["audit-logs", "gateway-logs", "host-logs"] {
        assert!(names.contains(&n), "{names:?}");
    }
    assert!(plan["window"]["since"].is_string());
    let audit = plan["collectors"].as_array().unwrap().iter().find(|c| c["name"] == "audit-logs").unwrap();
    assert!(audit["source"].as_str().unwrap().contains(&format!("docker {}", ws.path().join("docker").display())));
    assert!(!ws.out().exists(), "a dry run writes nothing");
}

#[test]
fn json_summary_inspect_and_list() {
    let ws = Workspace::new();
    ws.write("evidence/a.log", "one\ntwo\n");
    let dir = collectors_dir(
        &ws,
        "a.toml",
        &format!(
            "[[collector]]\nname = \"a\"\nkind = \"file\"\ndescription = \"the a files\"\nwindow = false\npaths = [\"{}/evidence/*.log\"]\n",
            ws.path().display()
        ),
    );
    let out = run(ws.preserve().args(["snapshot", "-c", "a", "--json"]).arg("--collectors").arg(&dir));
    assert_eq!(out.status.code(), Some(0));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("stdout is JSON only");
    assert_eq!(summary["status"], "complete");
    let bundle = summary["bundle"].as_str().unwrap();
    assert_eq!(std::path::Path::new(bundle), ws.only_bundle());
    assert_eq!(summary["sha256"].as_str().unwrap().len(), 64);
    let a = summary["collectors"].as_array().unwrap().iter().find(|c| c["name"] == "a").unwrap();
    assert_eq!(a["records"], 2);
    assert_eq!(a["bytes"], 8);

    let inspect = run(ws.preserve().args(["inspect", bundle]));
    assert_eq!(inspect.status.code(), Some(0));
    let text = stdout(&inspect);
    assert!(text.contains("status:   complete"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("a ") && l.contains("ok") && l.contains("2 records")),
        "{text}"
    );

    let verify = run(ws.preserve().args(["verify", "--json", bundle]));
    let report: serde_json::Value = serde_json::from_str(&stdout(&verify)).unwrap();
    assert_eq!(report["problems"].as_array().unwrap().len(), 0);
    assert_eq!(report["archive_hash_checked"], true);

    let list = run(ws.preserve().args(["list", "--json"]).arg("--collectors").arg(&dir));
    let list: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    let mine = list["collectors"].as_array().unwrap().iter().find(|c| c["name"] == "a").unwrap();
    assert_eq!(mine["description"], "the a files");
    assert!(list["profiles"].as_array().unwrap().iter().any(|p| p["name"] == "full"));
}

#[test]
fn help_teaches_with_examples() {
    let ws = Workspace::new();
    for cmd in ["snapshot", "verify", "inspect", "list", "serve"] {
        let out = run(ws.preserve().args([cmd, "--help"]));
        assert_eq!(out.status.code(), Some(0));
        let help = stdout(&out);
        assert!(help.contains("Example"), "{cmd} --help has examples: {help}");
    }
    let out = run(ws.preserve().args(["snapshot", "--no-such-flag"]));
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn commands_do_not_inherit_preserves_credentials() {
    let ws = Workspace::new();
    let dir = collectors_dir(
        &ws,
        "e.toml",
        "[[collector]]\nname = \"e\"\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"echo probe=$${PRESERVE_REDIS_URL:-unset} path=$${PATH:+set} extra=$${PRESERVE_EXTRA:-unset}\"]\ninherit_env = [\"PRESERVE_EXTRA\"]\n",
    );
    let out = run(ws
        .preserve()
        .args(["snapshot", "-c", "e", "--collectors"])
        .arg(&dir)
        .env("PRESERVE_REDIS_URL", "redis://x@h/0")
        .env("PRESERVE_EXTRA", "passed"));
    assert_eq!(out.status.code(), Some(0));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    assert_eq!(collector_text(&bag, "e").trim(), "probe=unset path=set extra=passed");
}

#[test]
fn a_site_override_replaces_a_builtin_collector() {
    let ws = Workspace::new();
    ws.write("evidence/compose.yml", "services: {}\n");
    let dir = collectors_dir(
        &ws,
        "o.toml",
        &format!(
            "[[collector]]\nname = \"compose-config\"\nkind = \"file\"\nwindow = false\npaths = [\"{}/evidence/compose.yml\"]\n",
            ws.path().display()
        ),
    );
    let out = run(ws.preserve().args(["snapshot", "-c", "compose-config", "--json"]).arg("--collectors").arg(&dir));
    assert_eq!(out.status.code(), Some(0));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    assert!(collector_text(&bag, "compose-config").contains("services: {}"));
}

/// The runbook's profiles (design.md's table): each exists, answers its alerts, and holds the collectors for every
/// item of its row. (What those collectors capture is shown by each kind's own tests.)
#[test]
fn the_incident_profiles_cover_their_rows_of_the_runbook() {
    let ws = Workspace::new();
    let list = run(ws.preserve().args(["list", "--json"]));
    assert_eq!(list.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    let profile = |name: &str| -> (Vec<String>, Vec<String>) {
        let p =
            list["profiles"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name}"));
        let strings = |k: &str| p[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        (strings("collectors"), strings("alerts"))
    };
    let rows: &[(&str, &[&str], &[&str])] = &[
        ("audit-tamper", &["CaracalAuditTamperDetected"], &["postgres-audit", "audit-logs", "redis-dlq", "audit-http"]),
        (
            "revocation-stale",
            &[
                "CaracalGatewayRevocationSnapshotStale",
                "CaracalGatewayRevocationPropagationLag",
                "CaracalGatewayRevocationReloadErrors",
            ],
            &["redis-streams", "redis-dlq", "postgres-revocation", "gateway-http", "gateway-logs"],
        ),
        (
            "sts-circuit-open",
            &["CaracalGatewaySTSCircuitOpen"],
            &["gateway-http", "sts-http", "sts-logs", "gateway-logs", "redis-keys"],
        ),
        (
            "audit-dlq",
            &["CaracalAuditDLQ*", "CaracalGatewayAuditEvidenceLost"],
            &["redis-dlq", "redis-streams", "audit-replay-files", "audit-logs", "postgres-outbox"],
        ),
        ("secret-exposure", &[], &["postgres-secret-exposure", "redis-keys", "compose-config"]),
        (
            "bad-policy-allow",
            &[],
            &["postgres-policy", "postgres-request", "postgres-policy-admin", "console-explain", "sts-logs"],
        ),
    ];
    let (all, _) = profile("full");
    for (name, alerts, needs) in rows {
        let (collectors, answers) = profile(name);
        for n in *needs {
            assert!(collectors.iter().any(|c| c == n), "{name} lacks {n}: {collectors:?}");
        }
        for a in *alerts {
            assert!(answers.iter().any(|x| x == a), "{name} does not answer {a}: {answers:?}");
        }
        assert!(collectors.iter().all(|c| all.contains(c)), "full is the union: {name}");
        assert_eq!(collectors[0], "alertmanager-alerts", "alert context first, it is the most volatile: {name}");
    }
}

#[test]
fn the_documented_site_configs_load() {
    let ws = Workspace::new();
    for f in ["docs/examples/preserve.compose.toml", "deploy/kubernetes/preserve.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        let out =
            run(ws.preserve().args(["snapshot", "--profile", "full", "--dry-run", "--json", "--config"]).arg(&path));
        assert_eq!(out.status.code(), Some(0), "{f}: {}", String::from_utf8_lossy(&out.stderr));
        let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert!(plan.to_string().contains("gateway"), "{f}");
    }
}

/// Every alert of Caracal's PrometheusRule (`infra/helm/caracal/templates/prometheusrule.yaml`, group
/// `caracal.enterprise-readiness`: 21 rules) is answered by exactly one profile, so the sidecar takes a snapshot
/// for each and never has to choose between two.
#[test]
fn every_alert_of_caracals_rule_file_is_answered_by_one_profile() {
    const CARACAL_ALERTS: [&str; 21] = [
        "CaracalSTSOPACompileErrors",
        "CaracalSTSPolicyBundleStale",
        "CaracalSTSProviderRefreshErrors",
        "CaracalSTSProviderCircuitOpen",
        "CaracalAuditDLQNonEmpty",
        "CaracalAuditDLQGrowth",
        "CaracalAuditConsumerLagHigh",
        "CaracalGatewayAuditReplayBacklogOld",
        "CaracalSTSAuditReplayBacklogOld",
        "CaracalGatewayAuditEvidenceLost",
        "CaracalSTSAuditEvidenceLost",
        "CaracalAuditTamperDetected",
        "CaracalAPIOutboxDeadMessages",
        "CaracalAPIOutboxPendingOldest",
        "CaracalGatewaySTSExchangeErrors",
        "CaracalGatewaySTSCircuitOpen",
        "CaracalGatewayRevocationSnapshotStale",
        "CaracalGatewayRevocationPropagationLag",
        "CaracalGatewayRevocationReloadErrors",
        "CaracalPostgresPoolSaturation",
        "CaracalReadinessFlapping",
    ];
    let ws = Workspace::new();
    let out = run(ws.preserve().args(["list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let profiles = list["profiles"].as_array().unwrap();
    let collectors: Vec<&str> =
        list["collectors"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let answers = |alert: &str, profile: &serde_json::Value| {
        profile["alerts"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).any(|a| match a.strip_suffix('*') {
            Some(prefix) => alert.starts_with(prefix),
            None => a == alert,
        })
    };
    for alert in CARACAL_ALERTS {
        let by: Vec<&str> =
            profiles.iter().filter(|p| answers(alert, p)).map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(by.len(), 1, "{alert} is answered by {by:?}");
    }
    // Each profile that answers an alert takes the alert's context and only collectors that exist.
    for p in profiles.iter().filter(|p| !p["alerts"].as_array().unwrap().is_empty()) {
        let cs: Vec<&str> = p["collectors"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(cs.first(), Some(&"alertmanager-alerts"), "{}", p["name"]);
        for c in cs {
            assert!(collectors.contains(&c), "{} names {c}, which does not exist", p["name"]);
        }
    }
}

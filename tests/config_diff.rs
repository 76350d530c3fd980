//! Someone changed Caracal's configuration before (or during) the incident: the `config_diff` kind records the
//! configuration as it is, what it is compared with, and the unified diff between them, all redacted, with both
//! sides' hashes and whether they differ in the manifest.

mod support;

use sha2::{Digest, Sha256};
use support::*;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn items(c: &serde_json::Value) -> &Vec<serde_json::Value> {
    c["details"]["items"].as_array().unwrap_or_else(|| panic!("no details.items in {c}"))
}

fn item<'a>(c: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    items(c).iter().find(|i| i["name"] == name).unwrap_or_else(|| panic!("no item {name} in {c}"))
}

fn read(bag: &std::path::Path, collector: &str, relative: &str) -> String {
    let p = bag.join("data").join(collector).join(relative);
    String::from_utf8(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn findings<'a>(m: &'a serde_json::Value, collector: &str, code: &str) -> Vec<&'a serde_json::Value> {
    m["findings"].as_array().unwrap().iter().filter(|f| f["collector"] == collector && f["code"] == code).collect()
}

#[test]
fn an_edited_compose_file_shows_in_the_diff_against_the_known_good_copies() {
    let ws = Workspace::new();
    ws.write(
        "etc/compose.yml",
        "services:\n  api:\n    image: caracal/api:1.4.2\n    ports: [\"127.0.0.1:3000:3000\"]\n",
    );
    ws.write("etc/caracal.env", "LOG_LEVEL=info\n");
    ws.write(
        "known-good/compose.yml",
        "services:\n  api:\n    image: caracal/api:1.4.1\n    ports: [\"127.0.0.1:3000:3000\"]\n",
    );
    ws.write("known-good/caracal.env", "LOG_LEVEL=info\n");
    let dir = collectors_dir(
        &ws,
        "c.toml",
        &format!(
            "[[collector]]\nname = \"compose\"\nkind = \"config_diff\"\nfiles = [\"{p}/etc/*\"]\nbaseline = \"{p}/known-good\"\n",
            p = ws.path().display()
        ),
    );
    let out = run(ws.snapshot(&dir).args(["-c", "compose"]));
    assert_eq!(out.status.code(), Some(0), "a difference is a finding, not a failure");
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let c = collector(&m, "compose");
    assert_eq!(c["status"], "ok");

    let diff = read(&bag, "compose", "compose.yml.diff");
    assert!(diff.contains("-    image: caracal/api:1.4.1\n+    image: caracal/api:1.4.2\n"), "{diff}");
    assert!(diff.starts_with("--- baseline/compose.yml"), "a unified diff with its sides named: {diff}");
    assert!(diff.contains("+++ current/compose.yml"), "{diff}");
    assert_eq!(read(&bag, "compose", "caracal.env.diff"), "", "an unchanged file has an empty diff");
    assert_eq!(item(c, "compose.yml")["differs"], true);
    assert_eq!(item(c, "caracal.env")["differs"], false);
    assert_eq!(
        read(&bag, "compose", "baseline/compose.yml"),
        std::fs::read_to_string(ws.path().join("known-good/compose.yml")).unwrap()
    );

    // The hashes in the details are those of the sides as written, and agree with the artifact records.
    let artifacts = c["artifacts"].as_array().unwrap();
    for i in items(c) {
        let name = i["name"].as_str().unwrap();
        for (side, key) in [("current", "current_sha256"), ("baseline", "baseline_sha256")] {
            let bytes = std::fs::read(bag.join("data/compose").join(side).join(name)).unwrap();
            assert_eq!(i[key], sha256(&bytes), "{side}/{name}");
            let record = artifacts.iter().find(|a| a["path"] == format!("data/compose/{side}/{name}")).unwrap();
            assert_eq!(record["sha256"], i[key], "{side}/{name}");
        }
        assert!(i["baseline"].as_str().unwrap().ends_with(&format!("known-good/{name}")), "{i}");
    }
    let changed = findings(&m, "compose", "config.changed");
    assert_eq!(changed.len(), 1, "{m}");
    assert_eq!(changed[0]["severity"], "info");
    assert_eq!(changed[0]["details"]["files"], serde_json::json!(["compose.yml"]));
}

#[test]
fn the_previous_bundle_is_the_baseline_of_the_next_snapshot() {
    let ws = Workspace::new();
    let home = ws.path().join("caracal-home");
    ws.write("caracal-home/compose.yml", "services:\n  gateway:\n    environment:\n      LOG_LEVEL: info\n");
    ws.write("caracal-home/caracal.env", "CARACAL_MODE=production\n");
    let dir = collectors_dir(
        &ws,
        "c.toml",
        "[[collector]]\nname = \"compose\"\nkind = \"config_diff\"\nfiles = [\"${caracal_home}/compose.yml\", \"${caracal_home}/caracal.env\"]\nbaseline = \"previous\"\nrequired = false\n",
    );
    let first = run(ws.snapshot(&dir).args(["-c", "compose"]).env("CARACAL_HOME", &home));
    assert_eq!(first.status.code(), Some(0), "no earlier bundle is not a failure");
    let first_bundle = ws.only_bundle();
    let m1 = ws.side_manifest();
    let c1 = collector(&m1, "compose");
    assert_eq!(c1["status"], "ok");
    assert_eq!(c1["details"]["previous_bundle"], serde_json::Value::Null);
    assert_eq!(item(c1, "compose.yml")["differs"], serde_json::Value::Null);
    let none = findings(&m1, "compose", "config.no_baseline");
    assert_eq!(none.len(), 1, "{m1}");
    assert_eq!(none[0]["severity"], "info");
    assert!(none[0]["summary"].as_str().unwrap().contains("no earlier bundle"), "{}", none[0]);

    // Someone turns on debug logging and removes the operator overrides.
    ws.write("caracal-home/compose.yml", "services:\n  gateway:\n    environment:\n      LOG_LEVEL: debug\n");
    std::fs::remove_file(home.join("caracal.env")).unwrap();
    let second = run(ws.snapshot(&dir).args(["-c", "compose"]).env("CARACAL_HOME", &home));
    assert_eq!(second.status.code(), Some(0));
    let second_bundle = ws.bundles().into_iter().find(|b| *b != first_bundle).expect("a second bundle");
    let bag = unpack(&second_bundle, &ws.path().join("x"));
    let m2 = manifest(&bag);
    let c2 = collector(&m2, "compose");
    let first_id = m1["bundle_id"].as_str().unwrap();
    assert_eq!(c2["details"]["previous_bundle"], first_id);
    let compose = item(c2, "compose.yml");
    assert_eq!(compose["differs"], true);
    assert_eq!(compose["baseline"], first_id, "the baseline names the bundle it came from");
    let diff = read(&bag, "compose", "compose.yml.diff");
    assert!(diff.contains("-      LOG_LEVEL: info\n+      LOG_LEVEL: debug\n"), "{diff}");
    assert!(diff.contains(first_id), "{diff}");
    let env = item(c2, "caracal.env");
    assert_eq!(env["differs"], true, "a removed file is a change");
    assert_eq!(env["current_sha256"], serde_json::Value::Null);
    assert!(read(&bag, "compose", "caracal.env.diff").contains("-CARACAL_MODE=production"));

    // The baseline is exactly what the first bundle recorded as current.
    let first_bag = unpack(&first_bundle, &ws.path().join("y"));
    assert_eq!(read(&bag, "compose", "baseline/compose.yml"), read(&first_bag, "compose", "current/compose.yml"));
    assert_eq!(compose["baseline_sha256"], item(c1, "compose.yml")["current_sha256"]);
    let changed = findings(&m2, "compose", "config.changed");
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["details"]["files"], serde_json::json!(["caracal.env", "compose.yml"]));
}

#[test]
fn a_programs_output_is_compared_and_a_missing_program_is_recorded() {
    let ws = Workspace::new();
    ws.write("values.yaml", "global:\n  logLevel: debug\nreplayPersistence:\n  enabled: false\n");
    ws.write("known-good/values.yaml", "global:\n  logLevel: info\nreplayPersistence:\n  enabled: true\n");
    let p = ws.path().display();
    let dir = collectors_dir(
        &ws,
        "c.toml",
        &format!(
            r#"
[[collector]]
name = "helm-values"
kind = "config_diff"
command = ["cat", "{p}/values.yaml"]
stdout = "values.yaml"
baseline = "{p}/known-good/values.yaml"

[[collector]]
name = "no-helm"
kind = "config_diff"
command = ["preserve-test-no-such-helm", "get", "values", "caracal", "--all"]

[[collector]]
name = "optional-helm"
kind = "config_diff"
command = ["preserve-test-no-such-helm", "get", "values", "caracal", "--all"]
required = false

[[collector]]
name = "helm-fails"
kind = "config_diff"
command = ["cat", "{p}/no-such-release.yaml"]

[[collector]]
name = "no-compose-plugin"
kind = "config_diff"
command = ["cat", "{p}/values.yaml"]
available_if = ["sh", "-c", "exit 125"]
required = false
"#
        ),
    );
    let out = run(ws
        .snapshot(&dir)
        .args(["-c", "helm-values", "-c", "no-helm", "-c", "optional-helm", "-c", "helm-fails"])
        .args(["-c", "no-compose-plugin"]));
    assert_eq!(out.status.code(), Some(3), "a missing or failing program makes the bundle partial");
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);

    let helm = collector(&m, "helm-values");
    assert_eq!(helm["status"], "ok");
    let diff = read(&bag, "helm-values", "values.yaml.diff");
    assert!(diff.contains("-  logLevel: info\n+  logLevel: debug\n"), "{diff}");
    assert!(diff.contains("-  enabled: true\n+  enabled: false\n"), "{diff}");
    assert_eq!(item(helm, "values.yaml")["differs"], true);
    assert!(item(helm, "values.yaml")["source"].as_str().unwrap().starts_with("cat "));

    // As the command kind does: a program that cannot be started fails the collector, saying which.
    let missing = collector(&m, "no-helm");
    assert_eq!(missing["status"], "failed");
    assert!(missing["error"].as_str().unwrap().contains("cannot start `preserve-test-no-such-helm`"), "{missing}");
    // Unless it is not required (a Kubernetes-only collector on a Compose host): skipped, saying why.
    let optional = collector(&m, "optional-helm");
    assert_eq!(optional["status"], "skipped", "{optional}");
    assert!(
        optional["error"].as_str().unwrap().contains("`preserve-test-no-such-helm` is not installed here"),
        "{optional}"
    );

    // `docker` without its Compose plugin: the probe says the command cannot run here, so it is not run.
    let probed = collector(&m, "no-compose-plugin");
    assert_eq!(probed["status"], "skipped", "{probed}");
    assert!(probed["error"].as_str().unwrap().contains("exit 125` says `cat` cannot run here"), "{probed}");
    assert!(!bag.join("data/no-compose-plugin/current").exists());

    let fails = collector(&m, "helm-fails");
    assert_eq!(fails["status"], "failed");
    assert!(fails["error"].as_str().unwrap().contains("`cat` exited with status 1"), "{fails}");
    assert!(read(&bag, "helm-fails", "stderr.txt").contains("no-such-release.yaml"), "its stderr is kept");
    assert!(!bag.join("data/helm-fails/current").exists(), "a failed run's output is no configuration");
}

#[test]
fn a_rotated_secret_shows_as_a_changed_marker_and_an_unchanged_one_as_no_change() {
    // Unknown to preserve (no secrets/ files): caught by the env key rules, fingerprinted with the site key the
    // workspace sets (PRESERVE_FINGERPRINT_KEY), the same in every bundle.
    const OLD_KEY: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5";
    const NEW_KEY: &str = "ffeeddccbbaa99887766554433221100";
    const STREAMS_KEY: &str = "0123456789abcdef0123456789abcdef";
    let ws = Workspace::new();
    let home = ws.path().join("caracal-home");
    let env = |audit: &str| format!("AUDIT_HMAC_KEY={audit}\nSTREAMS_HMAC_KEY={STREAMS_KEY}\nLOG_LEVEL=info\n");
    ws.write("caracal-home/caracal.env", env(OLD_KEY));
    let dir = collectors_dir(
        &ws,
        "c.toml",
        "[[collector]]\nname = \"env\"\nkind = \"config_diff\"\nfiles = [\"${caracal_home}/caracal.env\"]\n",
    );
    assert_eq!(run(ws.snapshot(&dir).args(["-c", "env"]).env("CARACAL_HOME", &home)).status.code(), Some(0));
    let first = ws.only_bundle();
    let m1 = ws.side_manifest();
    // Someone rotates the audit HMAC key by hand.
    ws.write("caracal-home/caracal.env", env(NEW_KEY));
    assert_eq!(run(ws.snapshot(&dir).args(["-c", "env"]).env("CARACAL_HOME", &home)).status.code(), Some(0));
    let second = ws.bundles().into_iter().find(|b| *b != first).unwrap();
    let bag = unpack(&second, &ws.path().join("x"));
    let m2 = manifest(&bag);
    assert_eq!(m1["redaction"], m2["redaction"], "one site key made both bundles' markers");
    let diff = read(&bag, "env", "caracal.env.diff");
    // Both sides carry the site key's markers: the rotation is one changed marker, nothing else moves.
    let (old, new) = (marker(&m1, OLD_KEY), marker(&m2, NEW_KEY));
    assert!(diff.contains(&format!("-AUDIT_HMAC_KEY={old}\n+AUDIT_HMAC_KEY={new}\n")), "{diff}");
    assert!(!diff.contains("-STREAMS_HMAC_KEY") && !diff.contains("+STREAMS_HMAC_KEY"), "{diff}");
    assert_eq!(item(collector(&m2, "env"), "caracal.env")["differs"], true);
    assert_eq!(item(collector(&m2, "env"), "caracal.env")["secrets_compared"], true, "one site key made both sides");
    assert!(findings(&m2, "env", "config.secrets_not_compared").is_empty(), "{m2}");
    // The current side itself carries this bundle's markers, like every other artifact of it.
    assert!(read(&bag, "env", "current/caracal.env").contains(&marker(&m2, NEW_KEY)));
    for secret in [OLD_KEY, NEW_KEY, STREAMS_KEY] {
        for (path, content) in files_below(&bag) {
            assert!(!String::from_utf8_lossy(&content).contains(secret), "{secret} in {}", path.display());
        }
    }

    // Nothing changed since: no change at all, secrets included.
    assert_eq!(run(ws.snapshot(&dir).args(["-c", "env"]).env("CARACAL_HOME", &home)).status.code(), Some(0));
    let third = ws.bundles().into_iter().find(|b| *b != first && *b != second).unwrap();
    let m3 = manifest(&unpack(&third, &ws.path().join("y")));
    assert_eq!(item(collector(&m3, "env"), "caracal.env")["differs"], false, "{m3}");
}

#[test]
fn without_a_site_key_secrets_are_not_compared_with_the_previous_bundle_and_the_bundle_says_so() {
    // Each bundle's markers are keyed by its own key, written nowhere: the previous bundle's markers cannot be
    // matched with this one's (the old way, re-marking the current side under the previous bundle's published salt,
    // is what let anyone test guesses). The diff compares everything but the secrets' values, and says so.
    const OLD_KEY: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5";
    const NEW_KEY: &str = "ffeeddccbbaa99887766554433221100";
    let ws = Workspace::new();
    let home = ws.path().join("caracal-home");
    let env = |audit: &str, level: &str| format!("AUDIT_HMAC_KEY={audit}\nLOG_LEVEL={level}\n");
    ws.write("caracal-home/caracal.env", env(OLD_KEY, "info"));
    let dir = collectors_dir(
        &ws,
        "c.toml",
        "[[collector]]\nname = \"env\"\nkind = \"config_diff\"\nfiles = [\"${caracal_home}/caracal.env\"]\n",
    );
    let snapshot = || {
        let mut cmd = ws.snapshot(&dir);
        cmd.args(["-c", "env"]).env("CARACAL_HOME", &home).env_remove("PRESERVE_FINGERPRINT_KEY");
        assert_eq!(run(&mut cmd).status.code(), Some(0));
        let newest = ws.bundles().into_iter().max_by_key(|b| std::fs::metadata(b).unwrap().modified().unwrap());
        let bag = unpack(&newest.unwrap(), &ws.path().join(format!("x{}", ws.bundles().len())));
        (manifest(&bag), bag)
    };
    let (m1, _) = snapshot();
    assert_eq!(m1["redaction"]["key"], "per-bundle");
    ws.write("caracal-home/caracal.env", env(NEW_KEY, "debug"));
    let (m2, bag) = snapshot();
    let diff = read(&bag, "env", "caracal.env.diff");
    assert!(diff.contains("-LOG_LEVEL=info\n+LOG_LEVEL=debug\n"), "everything else is compared: {diff}");
    assert!(!diff.contains("-AUDIT_HMAC_KEY") && !diff.contains("+AUDIT_HMAC_KEY"), "{diff}");
    assert!(diff.contains(" AUDIT_HMAC_KEY=[REDACTED:not-compared]\n"), "a marker says nothing across keys: {diff}");
    let it = item(collector(&m2, "env"), "caracal.env");
    assert_eq!((&it["secrets_compared"], &it["differs"]), (&false.into(), &true.into()), "{it}");
    let f = findings(&m2, "env", "config.secrets_not_compared");
    assert_eq!(f.len(), 1, "{m2}");
    assert!(f[0]["summary"].as_str().unwrap().contains("were made with its own key, which is gone"), "{}", f[0]);

    // Unchanged since: no change, although every marker of this bundle differs from the previous one's.
    let (m3, bag) = snapshot();
    let it = item(collector(&m3, "env"), "caracal.env");
    assert_eq!(it["differs"], false, "{it}");
    assert_ne!(read(&bag, "env", "current/caracal.env"), read(&bag, "env", "baseline/caracal.env"));
    for secret in [OLD_KEY, NEW_KEY] {
        for (path, content) in files_below(&bag) {
            assert!(!String::from_utf8_lossy(&content).contains(secret), "{secret} in {}", path.display());
        }
    }
}

#[test]
fn secrets_in_the_configuration_never_reach_either_side_or_the_diff() {
    const DB_PASSWORD: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a0";
    const SMTP_PASSWORD: &str = "smtpPw-44c1b2a0e9";
    let ws = Workspace::new();
    let home = ws.path().join("caracal-home");
    ws.write("caracal-home/secrets/postgresPassword", format!("{DB_PASSWORD}\n"));
    let current = format!(
        "POSTGRES_PASSWORD={DB_PASSWORD}\nCARACAL_SMTP_URL=smtp://ops:{SMTP_PASSWORD}@mail:587\nLOG_LEVEL=debug\n"
    );
    let known = format!(
        "POSTGRES_PASSWORD={DB_PASSWORD}\nCARACAL_SMTP_URL=smtp://ops:{SMTP_PASSWORD}@mail:587\nLOG_LEVEL=info\n"
    );
    ws.write("caracal-home/caracal.env", &current);
    ws.write("known-good/caracal.env", &known);
    let p = ws.path().display();
    let dir = collectors_dir(
        &ws,
        "c.toml",
        &format!(
            r#"
[[collector]]
name = "env-files"
kind = "config_diff"
files = ["${{caracal_home}}/caracal.env"]
baseline = "{p}/known-good"

[[collector]]
name = "env-command"
kind = "config_diff"
command = ["cat", "${{caracal_home}}/caracal.env"]
stdout = "caracal.env"
baseline = "{p}/known-good/caracal.env"
"#
        ),
    );
    let out = run(ws.snapshot(&dir).args(["-c", "env-files", "-c", "env-command"]).env("CARACAL_HOME", &home));
    assert_eq!(out.status.code(), Some(0));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    assert_no_secret_anywhere(&ws, &bag, &out, &[DB_PASSWORD, SMTP_PASSWORD]);
    let m = manifest(&bag);
    for name in ["env-files", "env-command"] {
        let c = collector(&m, name);
        for side in ["current", "baseline"] {
            let text = read(&bag, name, &format!("{side}/caracal.env"));
            let (db, smtp) = (marker(&m, DB_PASSWORD), marker(&m, SMTP_PASSWORD));
            assert!(text.contains(&format!("POSTGRES_PASSWORD={db}\n")), "{name} {side}: {text}");
            assert!(text.contains(&format!("smtp://ops:{smtp}@mail:587")), "{name} {side}: {text}");
        }
        // The same secret on both sides redacts alike, so only the real change shows.
        let diff = read(&bag, name, "caracal.env.diff");
        assert!(diff.contains("-LOG_LEVEL=info\n+LOG_LEVEL=debug\n"), "{name}: {diff}");
        assert!(!diff.contains("-POSTGRES_PASSWORD") && !diff.contains("+POSTGRES_PASSWORD"), "{name}: {diff}");
        assert_eq!(item(c, "caracal.env")["differs"], true);
        let rules: Vec<&str> =
            c["redactions"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
        assert!(rules.contains(&"caracal secret postgresPassword"), "{name}: {rules:?}");
    }
}

#[test]
fn files_and_command_together_or_neither_are_config_errors() {
    for (body, wants) in [
        (
            "files = [\"/etc/caracal/compose.yml\"]\ncommand = [\"docker\", \"compose\", \"config\"]\n",
            "collector `cfg`: `files` and `command` are both given",
        ),
        (
            "baseline = \"previous\"\n",
            "collector `cfg`: needs `files` (paths or globs of the configuration) or `command`",
        ),
        ("files = [\"/etc/x.yml\"]\nstdout = \"x.yml\"\n", "collector `cfg`: stdout: only applies with `command`"),
        ("files = [\"/etc/x.yml\"]\nbaseline_dir = \"/srv\"\n", "unknown field `baseline_dir`"),
    ] {
        let ws = Workspace::new();
        let dir =
            collectors_dir(&ws, "c.toml", &format!("[[collector]]\nname = \"cfg\"\nkind = \"config_diff\"\n{body}"));
        let out = run(ws.snapshot(&dir).args(["--profile", "host"]));
        assert_eq!(out.status.code(), Some(2), "config errors exit 2");
        let err = stderr(&out);
        assert!(err.contains("c.toml:"), "the file is named: {err}");
        assert!(err.contains(wants), "{wants}: {err}");
        assert!(!ws.out().exists(), "nothing may be written on a config error");
    }
}

#[test]
fn a_previous_bundle_that_does_not_match_its_manifest_is_not_trusted_as_baseline() {
    let ws = Workspace::new();
    let home = ws.path().join("caracal-home");
    ws.write("caracal-home/compose.yml", "services: {}\n");
    let dir = collectors_dir(
        &ws,
        "c.toml",
        "[[collector]]\nname = \"compose\"\nkind = \"config_diff\"\nfiles = [\"${caracal_home}/compose.yml\"]\n",
    );
    assert_eq!(run(ws.snapshot(&dir).args(["-c", "compose"]).env("CARACAL_HOME", &home)).status.code(), Some(0));
    // Someone edits the record of the earlier bundle (or its archive): it no longer proves what was there.
    let side = ws.only_bundle().to_string_lossy().replace(".tar.zst", ".manifest.json");
    let text = std::fs::read_to_string(&side).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let recorded = item(collector(&m, "compose"), "compose.yml")["current_sha256"].as_str().unwrap().to_string();
    std::fs::write(&side, text.replace(&recorded, &"0".repeat(64))).unwrap();

    let out = run(ws.snapshot(&dir).args(["-c", "compose"]).env("CARACAL_HOME", &home));
    assert_eq!(out.status.code(), Some(3), "partial: the baseline could not be trusted");
    let newest = ws
        .bundles()
        .into_iter()
        .map(|b| manifest(&std::path::PathBuf::from(b.to_string_lossy().replace(".tar.zst", ".manifest.json"))))
        .find(|m| m["status"] == "partial")
        .unwrap();
    let c = collector(&newest, "compose");
    assert!(c["error"].as_str().unwrap().contains("does not match the hash its manifest records"), "{c}");
    assert_eq!(item(c, "compose.yml")["differs"], serde_json::Value::Null);
    assert_eq!(item(c, "compose.yml")["baseline_sha256"], serde_json::Value::Null);
}

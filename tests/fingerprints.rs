//! A marker's fingerprint must not let whoever holds a bundle recover a weak secret. The review's attack: the
//! manifest published the salt of every fingerprint, the fingerprints and which credential each was, and a 1M-word
//! dictionary found an 8-letter Postgres password in seconds. Fingerprints are now keyed by the site's key (never in
//! a bundle) or a per-bundle key (written nowhere); only the site key's holder can check a candidate.

mod support;

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    process::{Output, Stdio},
};

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use support::*;

/// Caracal's Postgres password: one dictionary word, as the review found it.
const PG_PASSWORD: &str = "marmoset";
/// The site's fingerprint key, as `openssl rand -hex 32` makes one.
const SITE_KEY: &str = "9c1b7e04a3f25d68e0b4c7a19f3d2e5b86a0c4f7e1d93b25a6c8f0e47d1b3a92";

fn hmac16(key: &[u8], value: &[u8]) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(value);
    hex::encode(&mac.finalize().into_bytes()[..8])
}

/// A Compose host whose Postgres password is in Caracal's secrets and in a log line, and a collector of that log.
fn host() -> (Workspace, PathBuf) {
    let ws = Workspace::new();
    ws.write("caracal-home/secrets/postgresPassword", format!("{PG_PASSWORD}\n"));
    ws.write(
        "logs/api.log",
        format!(
            "level=error msg=\"db connect failed\" dsn_password={PG_PASSWORD} request_id=req-7\n\
             level=info msg=\"retrying with password={PG_PASSWORD}\" zone_id=z1\n"
        ),
    );
    ws.write("site/fingerprint.key", format!("{SITE_KEY}\n"));
    let dir = collectors_dir(
        &ws,
        "c.toml",
        &format!(
            "[[collector]]\nname = \"api-logs\"\nkind = \"file\"\nwindow = false\npaths = [\"{}/logs/*.log\"]\n",
            ws.path().display()
        ),
    );
    (ws, dir)
}

/// A snapshot of the host; `site_key` decides whether the site key is configured (in `[redaction]`, not the
/// workspace's environment variable). Returns the bundle.
fn snapshot(ws: &Workspace, dir: &Path, site_key: bool) -> PathBuf {
    let before: BTreeSet<_> = ws.bundles().into_iter().collect();
    let mut cmd = ws.snapshot(dir);
    cmd.env_remove("PRESERVE_FINGERPRINT_KEY").env("CARACAL_HOME", ws.path().join("caracal-home"));
    if site_key {
        let cfg = ws.write(
            "site/preserve.toml",
            format!("[redaction]\nfingerprint_key = \"file:{}/site/fingerprint.key\"\n", ws.path().display()),
        );
        cmd.arg("--config").arg(cfg);
    }
    let out = run(cmd.args(["-c", "api-logs"]));
    assert_eq!(out.status.code(), Some(0));
    ws.bundles().into_iter().find(|b| !before.contains(b)).expect("a new bundle")
}

/// Everything a bundle publishes: every file in the archive and every file beside it.
fn published(ws: &Workspace, bundle: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let id = bundle.file_name().unwrap().to_string_lossy().trim_end_matches(".tar.zst").to_string();
    let mut all = files_below(&unpack(bundle, &ws.path().join("unpacked").join(&id)));
    for side in [".tar.zst.sha256", ".manifest.json"] {
        let p = ws.out().join(format!("{id}{side}"));
        all.push((p.clone(), std::fs::read(&p).unwrap()));
    }
    all
}

/// The marker each line's `password=` got in a bundle's copy of the log.
fn markers_in_log(ws: &Workspace, bundle: &Path) -> Vec<String> {
    let re = regex::Regex::new(r"password=(\[REDACTED:[0-9a-f]{16}\])").unwrap();
    let text: String = published(ws, bundle)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("/data/api-logs/"))
        .map(|(_, b)| String::from_utf8(b).unwrap())
        .collect();
    re.captures_iter(&text).map(|c| c[1].to_string()).collect()
}

/// The offline check of the review, over whatever a bundle publishes: every hex string in it taken as a key (as
/// the manifest's `redaction.salt` was), and no key at all (a plain hash), tried on every word. Returns the words
/// whose fingerprint is among `targets`.
fn dictionary_attack(published: &[Vec<u8>], targets: &BTreeSet<String>, words: &[String]) -> Vec<String> {
    let hex_run = regex::bytes::Regex::new(r"[0-9a-fA-F]{16,}").unwrap();
    let mut keys: BTreeSet<Vec<u8>> = BTreeSet::from([Vec::new()]);
    for text in published {
        for m in hex_run.find_iter(text) {
            keys.insert(m.as_bytes().to_vec());
            if let Ok(decoded) = hex::decode(m.as_bytes()) {
                keys.insert(decoded);
            }
        }
    }
    let mut found = Vec::new();
    for w in words {
        let plain = hex::encode(&Sha256::digest(w.as_bytes())[..8]);
        if targets.contains(&plain) || keys.iter().any(|k| targets.contains(&hmac16(k, w.as_bytes()))) {
            found.push(w.clone());
        }
    }
    found
}

/// The fingerprints a bundle exposes: those its manifest lists per rule, and those of every marker in it.
fn fingerprints(published: &[Vec<u8>], manifest: &serde_json::Value) -> BTreeSet<String> {
    let marker = regex::bytes::Regex::new(r"\[REDACTED:([0-9a-f]{16})\]").unwrap();
    let mut out: BTreeSet<String> = published
        .iter()
        .flat_map(|t| marker.captures_iter(t).map(|c| String::from_utf8_lossy(&c[1]).into_owned()).collect::<Vec<_>>())
        .collect();
    for c in manifest["collectors"].as_array().unwrap() {
        for r in c["redactions"].as_array().unwrap() {
            out.extend(r["fingerprints"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()));
        }
    }
    out
}

fn dictionary() -> Vec<String> {
    let mut words: Vec<String> = ["password", "caracal", "postgres", "letmein", "dragon", "sunshine", "monkey"]
        .iter()
        .map(|w| w.to_string())
        .collect();
    words.extend((0..1000).map(|i| format!("word{i:04}")));
    words.push(PG_PASSWORD.to_string());
    words
}

#[test]
fn a_dictionary_over_everything_a_bundle_publishes_does_not_find_the_postgres_password() {
    let words = dictionary();
    // The attack itself works: on what the old scheme published (a salt, and HMAC(salt, secret) per marker) it
    // finds the password.
    let salt = "3f9a0c7d5e1b2a4c6d8e0f1a2b3c4d5e";
    let old_manifest = serde_json::json!({ "redaction": { "salt": salt } }).to_string().into_bytes();
    let old_target = BTreeSet::from([hmac16(&hex::decode(salt).unwrap(), PG_PASSWORD.as_bytes())]);
    assert_eq!(dictionary_attack(&[old_manifest], &old_target, &words), [PG_PASSWORD]);

    for site_key in [false, true] {
        let (ws, dir) = host();
        let bundle = snapshot(&ws, &dir, site_key);
        let files = published(&ws, &bundle);
        let m = manifest(&files.iter().find(|(p, _)| p.ends_with("manifest.json")).unwrap().0);
        // The password was redacted and its fingerprint recorded, under the credential it is: the attacker's
        // target is there.
        let pg = collector(&m, "api-logs")["redactions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == "caracal secret postgresPassword")
            .unwrap_or_else(|| panic!("the password's redaction is recorded: {m}"))
            .clone();
        assert_eq!(pg["count"], 2, "{pg}");
        assert_eq!(pg["fingerprints"].as_array().unwrap().len(), 1, "{pg}");
        let texts: Vec<Vec<u8>> = files.into_iter().map(|(_, b)| b).collect();
        for t in &texts {
            assert!(!String::from_utf8_lossy(t).contains(PG_PASSWORD), "the password itself is nowhere");
        }
        // Nothing to test a guess with: no salt, no key, only which kind of key made the fingerprints.
        let scheme = m["redaction"].as_object().unwrap();
        let fields: BTreeSet<&str> = scheme.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = if site_key {
            ["marker", "fingerprint", "key", "key_id"].into()
        } else {
            ["marker", "fingerprint", "key"].into()
        };
        assert_eq!(fields, expected, "{}", m["redaction"]);
        assert_eq!(m["redaction"]["key"], if site_key { "site" } else { "per-bundle" });

        let targets = fingerprints(&texts, &m);
        assert!(targets.contains(pg["fingerprints"][0].as_str().unwrap()));
        assert_eq!(
            dictionary_attack(&texts, &targets, &words),
            Vec::<String>::new(),
            "a guess can be tested offline (site key: {site_key})"
        );
    }
}

/// `preserve fingerprint ARGS`, the candidates on stdin.
fn fingerprint(ws: &Workspace, args: &[&str], stdin: &str) -> Output {
    let mut cmd = ws.preserve();
    cmd.env_remove("PRESERVE_FINGERPRINT_KEY").arg("fingerprint").args(args);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // A command that refuses its arguments exits before reading: its closed stdin is no failure of the test.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing the candidates: {e}"),
        _ => {}
    }
    let out = child.wait_with_output().unwrap();
    eprintln!("--- fingerprint {args:?} exit {:?}\n{}{}", out.status.code(), stdout(&out), stderr(&out));
    out
}

#[test]
fn the_key_holder_confirms_the_real_password_and_a_wrong_guess_does_not_match() {
    let (ws, dir) = host();
    let bundle = snapshot(&ws, &dir, true);
    let b = bundle.to_str().unwrap();
    let key = format!("file:{}/site/fingerprint.key", ws.path().display());

    let out = fingerprint(&ws, &["--key", &key, "--bundle", b], &format!("hunter22\n{PG_PASSWORD}\n"));
    assert_eq!(out.status.code(), Some(0), "a candidate matched");
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("line 1: [REDACTED:") && lines[0].ends_with("no match"), "{lines:?}");
    assert!(
        lines[1].ends_with("MATCH: collector api-logs, rule caracal secret postgresPassword"),
        "the real value matches the recorded fingerprint: {lines:?}"
    );
    // The marker printed is the one the bundle's copy of the log carries.
    let in_log = markers_in_log(&ws, &bundle);
    assert!(!in_log.is_empty() && lines[1].contains(&in_log[0]), "{lines:?} {in_log:?}");
    assert!(!stdout(&out).contains(PG_PASSWORD) && !stdout(&out).contains("hunter22"), "candidates are not echoed");

    // Only wrong guesses: exit 1, like grep. The side manifest serves as well as the archive, and JSON says the same.
    let side = ws.out().join(bundle.file_name().unwrap().to_string_lossy().replace(".tar.zst", ".manifest.json"));
    let out = fingerprint(&ws, &["--key", &key, "--bundle", side.to_str().unwrap(), "--json"], "hunter22\ncaracal\n");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(v.as_array().unwrap().iter().all(|c| c["matches"] == serde_json::json!([])), "{v}");

    // Another key cannot check this bundle, and says so rather than report no match.
    let other = ws.write("other.key", "0000000000000000000000000000000000000000000000000000000000000000");
    let out = fingerprint(&ws, &["--key", &format!("file:{}", other.display()), "--bundle", b], "marmoset\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("were made with site key"), "{}", stderr(&out));
    // Without --bundle: the marker a value gets, with the key from the site config.
    let cfg = ws.path().join("site/preserve.toml");
    let out = fingerprint(&ws, &["--config", cfg.to_str().unwrap()], &format!("{PG_PASSWORD}\n"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).trim(), format!("line 1: {}", in_log[0]));

    // A bundle made without a site key can be checked by nobody.
    let unkeyed = snapshot(&ws, &dir, false);
    let out = fingerprint(&ws, &["--key", &key, "--bundle", unkeyed.to_str().unwrap()], "marmoset\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("per-bundle key that was never stored"), "{}", stderr(&out));

    let help = run(ws.preserve().args(["fingerprint", "--help"]));
    assert!(stdout(&help).contains("Examples:") && stdout(&help).contains("stdin"), "{}", stdout(&help));
}

#[test]
fn with_the_site_key_two_bundles_mark_a_secret_alike_and_without_it_they_differ() {
    let (ws, dir) = host();
    let (a, b) = (snapshot(&ws, &dir, true), snapshot(&ws, &dir, true));
    let (ma, mb) = (markers_in_log(&ws, &a), markers_in_log(&ws, &b));
    assert_eq!(ma.len(), 2);
    assert_eq!(ma[0], ma[1], "one secret, one marker within a bundle");
    assert_eq!(ma, mb, "and across the site's bundles");

    let (c, d) = (snapshot(&ws, &dir, false), snapshot(&ws, &dir, false));
    let (mc, md) = (markers_in_log(&ws, &c), markers_in_log(&ws, &d));
    assert_eq!(mc.len(), 2);
    assert_eq!(mc[0], mc[1], "one secret, one marker within a bundle, whatever its key");
    assert_ne!(mc[0], md[0], "per-bundle keys: markers do not link bundles");
    assert_ne!(mc[0], ma[0]);
}

#[test]
fn the_site_key_never_appears_in_the_bundle_or_beside_it() {
    let (ws, dir) = host();
    // Someone printed the key into a log the snapshot reads.
    ws.write("logs/ops.log", format!("installed fingerprint key {SITE_KEY} for preserve\n"));
    let bundle = snapshot(&ws, &dir, true);
    let bag = unpack(&bundle, &ws.path().join("x"));
    let m = manifest(&bag);
    let everything = published(&ws, &bundle);
    for (path, content) in &everything {
        assert!(!String::from_utf8_lossy(content).contains(SITE_KEY), "the key leaked into {}", path.display());
    }
    // It was a known secret: replaced by its marker, counted under its own rule.
    let rules: Vec<_> = collector(&m, "api-logs")["redactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect();
    assert!(rules.iter().any(|r| r == "credential redaction.fingerprint_key"), "{rules:?}");
    assert!(collector_text(&bag, "api-logs").contains("installed fingerprint key [REDACTED:"));
    // The configuration recorded by the context collector names the key only by its reference.
    let context = collector_text(&bag, "context");
    assert!(context.contains("/site/fingerprint.key"), "{context}");
}

#[test]
fn a_site_key_that_cannot_be_used_still_gives_a_bundle_which_says_so() {
    let (ws, dir) = host();
    ws.write("site/fingerprint.key", "too-short\n");
    let bundle = snapshot(&ws, &dir, true);
    let m = manifest(&unpack(&bundle, &ws.path().join("x")));
    assert_eq!(m["redaction"]["key"], "per-bundle", "{}", m["redaction"]);
    let warned = m["findings"].as_array().unwrap().iter().any(|f| {
        f["code"] == "config.credential_unavailable"
            && f["summary"].as_str().unwrap().contains("redaction.fingerprint_key: the fingerprint key is 9 bytes")
    });
    assert!(warned, "{}", m["findings"]);

    // An unknown key in [redaction] is a config error, as everywhere in the site config.
    let cfg = ws.write("bad.toml", "[redaction]\nfingerprint_keys = \"file:/x\"\n");
    let out = run(ws.snapshot(&dir).arg("--config").arg(cfg).args(["-c", "api-logs"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("fingerprint_keys"), "{}", stderr(&out));
}

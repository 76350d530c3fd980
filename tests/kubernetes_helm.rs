//! The Helm config diff, from release records built here in Helm's own encoding (base64 of gzip of the release
//! JSON, inside the API's base64) and served by the stand-in API server (tests/support/kube.rs; no real one can run
//! here): the diff between two revisions shows exactly what changed, a secret in the values is redacted on both
//! sides, Secrets are found by list or, refused, by name, never any other Secret, and a corrupt record is named
//! while the good ones are still compared.

mod support;

use serde_json::{Value, json};
use support::{kube::*, *};

const DB_PASSWORD: &str = "helm-values-db-pa55-4d2e";
const REDIS_PASSWORD: &str = "helm-manifest-redis-pw-77c1";

fn values(replicas: u32) -> Value {
    json!({
        "global": { "tag": "1.0.0", "logLevel": "info" },
        "services": { "gateway": { "replicas": replicas }, "sts": { "replicas": 2 } },
        "secrets": { "create": true, "plaintext": { "databasePassword": DB_PASSWORD } },
    })
}

fn rendered(replicas: u32) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(REDIS_PASSWORD);
    format!(
        "---\n# Source: caracal/templates/secret.yaml\napiVersion: v1\nkind: Secret\nmetadata:\n  name: caracal-runtime\n\
         type: Opaque\ndata:\n  redisPassword: {b64}\nstringData:\n  databasePassword: {DB_PASSWORD}\n\
         ---\n# Source: caracal/templates/deployments.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  \
         name: caracal-caracal-gateway\nspec:\n  replicas: {replicas}\n  template:\n    spec:\n      containers:\n        \
         - name: gateway\n          image: ghcr.io/garudex-labs/caracal-gateway:1.0.0\n"
    )
}

/// Revision 1 (two Gateways), deployed days before; revision 2 (three), deployed inside the window.
fn release() -> Cluster {
    let c = Cluster::start();
    let mut v1 = helm_release_secret(RELEASE, 1, "superseded", values(2), &rendered(2));
    v1["metadata"]["labels"]["status"] = "superseded".into();
    c.add("v1", "secrets", v1);
    c.add("v1", "secrets", helm_release_secret(RELEASE, 2, "deployed", values(3), &rendered(3)));
    // Not the release's: another release's record and the runtime Secret, which must never be read.
    c.add("v1", "secrets", helm_release_secret("other", 7, "deployed", json!({"x": 1}), ""));
    c.add(
        "v1",
        "secrets",
        json!({ "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": { "name": "caracal-runtime", "namespace": NAMESPACE, "labels": { "owner": "helm", "name": RELEASE } },
                "data": { "databasePassword": "c2VjcmV0" } }),
    );
    c
}

fn snapshot(ws: &Workspace, cluster: &Cluster) -> (std::process::Output, std::path::PathBuf, Value) {
    let site = ws.write(
        "preserve.toml",
        format!(
            "[kubernetes]\nkubeconfig = \"{}\"\nrelease = \"{RELEASE}\"\n",
            cluster.kubeconfig(ws.path()).display()
        ),
    );
    let out = run(ws.preserve().args(["snapshot", "--config"]).arg(&site).args([
        "-q",
        "-c",
        "helm-release",
        "--since",
        "2026-12-04T00:00:00Z",
        "--until",
        "2026-12-04T23:00:00Z",
    ]));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    (out, bag, m)
}

fn read(bag: &std::path::Path, rel: &str) -> String {
    std::fs::read_to_string(bag.join("data/helm-release").join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The changed lines of a unified diff, without its headers.
fn changes(diff: &str) -> Vec<&str> {
    diff.lines()
        .filter(|l| (l.starts_with('-') || l.starts_with('+')) && !l.starts_with("---") && !l.starts_with("+++"))
        .collect()
}

/// Every Secrets request was Helm's records of the release: the selected list, or a get of one of its names.
fn only_release_records_were_read(cluster: &Cluster) {
    let secrets: Vec<Seen> = cluster.requests().into_iter().filter(|r| r.uri.contains("/secrets")).collect();
    assert!(!secrets.is_empty());
    for r in &secrets {
        assert_eq!(r.method, "GET");
        let path = r.uri.split('?').next().unwrap();
        let list = path.ends_with("/secrets")
            && r.uri.contains("labelSelector=owner%3Dhelm%2Cname%3Dcaracal")
            && r.uri.contains("fieldSelector=type%3Dhelm.sh%2Frelease.v1");
        let record = path.rsplit('/').next().unwrap().starts_with("sh.helm.release.v1.caracal.v");
        assert!(list || record, "read a Secret that is not the release's record: {}", r.uri);
    }
}

#[test]
fn two_revisions_differ_by_exactly_the_changed_value_and_the_secret_is_redacted_on_both_sides() {
    let ws = Workspace::new();
    let cluster = release();
    let (out, bag, m) = snapshot(&ws, &cluster);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = collector(&m, "helm-release");
    assert_eq!(c["status"], "ok", "{c}");
    assert_eq!((c["details"]["current"].as_u64(), c["details"]["baseline"].as_u64()), (Some(2), Some(1)));
    assert_eq!(c["details"]["found_by"], "list");
    // The values: one line changed, the replica count.
    let diff = read(&bag, "values.json.diff");
    assert_eq!(changes(&diff), ["-      \"replicas\": 2", "+      \"replicas\": 3"], "{diff}");
    assert!(diff.contains("revision 1 (superseded") && diff.contains("current/values.json"), "{diff}");
    // The manifest: the Deployment's replicas, and nothing of the Secret, whose values are the same marker.
    let diff = read(&bag, "manifest.yaml.diff");
    assert_eq!(changes(&diff), ["-  replicas: 2", "+  replicas: 3"], "{diff}");
    // Both sides are there, redacted: the secret's marker in each, the same one.
    let (was, now) = (read(&bag, "baseline/values.json"), read(&bag, "current/values.json"));
    let marker = |text: &str| text.lines().find(|l| l.contains("databasePassword")).unwrap().to_string();
    assert!(marker(&was).contains("[REDACTED:"), "{was}");
    assert_eq!(marker(&was), marker(&now));
    let manifest_now = read(&bag, "current/manifest.yaml");
    assert!(manifest_now.contains("redisPassword: [REDACTED:"), "{manifest_now}");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(REDIS_PASSWORD);
    assert_no_secret_anywhere(&ws, &bag, &out, &[DB_PASSWORD, REDIS_PASSWORD, &b64]);
    // The history of every revision, without values or manifests.
    let history: Value = serde_json::from_str(&read(&bag, "history.json")).unwrap();
    let revisions: Vec<u64> = history.as_array().unwrap().iter().map(|h| h["revision"].as_u64().unwrap()).collect();
    assert_eq!(revisions, [1, 2]);
    assert_eq!(history[1]["status"], "deployed");
    assert!(!read(&bag, "history.json").contains("replicas"));
    only_release_records_were_read(&cluster);
}

#[test]
fn refused_a_list_of_secrets_the_records_are_got_by_name() {
    let ws = Workspace::new();
    let cluster = release();
    cluster.forbid_list("v1", "secrets");
    let (out, bag, m) = snapshot(&ws, &cluster);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let c = collector(&m, "helm-release");
    assert_eq!(c["status"], "ok", "{c}");
    assert!(c["details"]["found_by"].as_str().unwrap().starts_with("get by name"), "{c}");
    assert_eq!(changes(&read(&bag, "values.json.diff")), ["-      \"replicas\": 2", "+      \"replicas\": 3"]);
    only_release_records_were_read(&cluster);
    // Names up to max_revision are asked, and no other Secret.
    let gets = cluster.requests().iter().filter(|r| r.uri.contains("/secrets/")).count();
    assert_eq!(gets, 100);
}

#[test]
fn a_corrupt_record_is_named_and_the_good_revisions_are_still_compared() {
    use std::io::Write;
    let ws = Workspace::new();
    let cluster = release();
    // Revision 3: not base64 inside. Revision 4: a gzip bomb, 80 MiB of zeros in a few hundred KiB.
    let mut bad = helm_release_secret(RELEASE, 3, "failed", json!({}), "");
    use base64::Engine;
    bad["data"]["release"] = base64::engine::general_purpose::STANDARD.encode("%%% not Helm's base64 %%%").into();
    cluster.add("v1", "secrets", bad);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..80 {
        gz.write_all(&zeros).unwrap();
    }
    let helm = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let mut bomb = helm_release_secret(RELEASE, 4, "pending-upgrade", json!({}), "");
    bomb["data"]["release"] = base64::engine::general_purpose::STANDARD.encode(helm).into();
    cluster.add("v1", "secrets", bomb);
    let (out, bag, m) = snapshot(&ws, &cluster);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let c = collector(&m, "helm-release");
    assert_eq!(c["status"], "partial", "{c}");
    let error = c["error"].as_str().unwrap();
    assert!(error.contains("sh.helm.release.v1.caracal.v3: the release record is not Helm's base64"), "{error}");
    assert!(error.contains("sh.helm.release.v1.caracal.v4: the release record expands beyond 64 MiB"), "{error}");
    assert_eq!(changes(&read(&bag, "values.json.diff")), ["-      \"replicas\": 2", "+      \"replicas\": 3"]);
}

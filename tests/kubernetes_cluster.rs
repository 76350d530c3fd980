//! The cluster context of a Helm install, read from a stand-in API server (tests/support/kube.rs; no real one can
//! run here): the release's pods with restarts and last terminations, workloads and their revisions, PDBs, HPAs,
//! the namespace's events in the window only; a secret in a pod's env never leaves; a 403 on one resource fails
//! only that part; only GETs, never a Secret; and the deploy Role grants exactly what is asked.

mod support;

use serde_json::{Value, json};
use support::{kube::*, *};

const ENV_SECRET: &str = "plain-env-db-passw0rd-7781";

fn labels(component: Option<&str>) -> Value {
    let mut l = json!({
        "app.kubernetes.io/name": "caracal",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/part-of": "caracal",
        "app.kubernetes.io/managed-by": "Helm",
    });
    if let Some(c) = component {
        l["app.kubernetes.io/component"] = c.into();
    }
    l
}

fn object(kind: &str, api_version: &str, name: &str, component: Option<&str>, rest: Value) -> Value {
    let mut o = json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": { "name": name, "namespace": NAMESPACE, "labels": labels(component) },
    });
    for (k, v) in rest.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

fn event(name: &str, reason: &str, first: &str, last: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": { "name": name, "namespace": NAMESPACE },
        "involvedObject": { "kind": "Pod", "name": "caracal-caracal-gateway-1", "namespace": NAMESPACE },
        "reason": reason, "message": message, "type": "Warning", "count": 3,
        "firstTimestamp": first, "lastTimestamp": last,
    })
}

/// A release with two Gateway pods (one restarted after an OOM kill, its env carrying a plaintext password), an
/// STS StatefulSet and a Gateway Deployment at revision 4, a PDB, an HPA, a migration Job, events before, in and
/// after the window 10:00–11:00, and another release's pod that must not be read.
fn release() -> Cluster {
    let c = Cluster::start();
    c.add("v1", "pods", caracal_pod("caracal-caracal-gateway-0", "gateway", "10.0.1.5", true, 0));
    let mut restarted = caracal_pod("caracal-caracal-gateway-1", "gateway", "10.0.2.6", false, 4);
    restarted["spec"]["nodeName"] = "node-b".into();
    restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"] = "OOMKilled".into();
    restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] = 137.into();
    restarted["spec"]["containers"][0]["env"] = json!([
        { "name": "LOG_LEVEL", "value": "debug" },
        { "name": "DATABASE_PASSWORD", "value": ENV_SECRET },
        { "name": "REDIS_PASSWORD", "valueFrom": { "secretKeyRef": { "name": "caracal-runtime", "key": "redisPassword" } } },
    ]);
    c.add("v1", "pods", restarted);
    let mut other = caracal_pod("other-caracal-gateway-0", "gateway", "10.0.3.7", true, 0);
    other["metadata"]["labels"]["app.kubernetes.io/instance"] = "other".into();
    c.add("v1", "pods", other);
    c.add(
        "apps/v1",
        "deployments",
        object(
            "Deployment",
            "apps/v1",
            "caracal-caracal-gateway",
            Some("gateway"),
            json!({
                "metadata": { "name": "caracal-caracal-gateway", "namespace": NAMESPACE, "labels": labels(Some("gateway")),
                              "annotations": { "deployment.kubernetes.io/revision": "4" } },
                "spec": { "replicas": 2 },
                "status": { "replicas": 2, "readyReplicas": 1, "unavailableReplicas": 1 },
            }),
        ),
    );
    c.add(
        "apps/v1",
        "statefulsets",
        object(
            "StatefulSet",
            "apps/v1",
            "caracal-caracal-sts",
            Some("sts"),
            json!({ "status": { "currentRevision": "caracal-caracal-sts-5c9d", "updateRevision": "caracal-caracal-sts-7f1a", "readyReplicas": 2 } }),
        ),
    );
    c.add(
        "apps/v1",
        "replicasets",
        object("ReplicaSet", "apps/v1", "caracal-caracal-gateway-6d8f7b9c4", Some("gateway"), json!({})),
    );
    c.add(
        "batch/v1",
        "jobs",
        object("Job", "batch/v1", "caracal-caracal-migrate", None, json!({ "status": { "failed": 1 } })),
    );
    c.add(
        "policy/v1",
        "poddisruptionbudgets",
        object(
            "PodDisruptionBudget",
            "policy/v1",
            "caracal-caracal-gateway",
            Some("gateway"),
            json!({ "spec": { "minAvailable": 1 } }),
        ),
    );
    c.add(
        "autoscaling/v2",
        "horizontalpodautoscalers",
        object(
            "HorizontalPodAutoscaler",
            "autoscaling/v2",
            "caracal-caracal-gateway",
            Some("gateway"),
            json!({ "spec": { "maxReplicas": 6 } }),
        ),
    );
    c.add(
        "v1",
        "events",
        event("before.1", "Scheduled", "2026-12-04T08:00:00Z", "2026-12-04T08:05:00Z", "long before"),
    );
    c.add(
        "v1",
        "events",
        event(
            "in.1",
            "BackOff",
            "2026-12-04T09:50:00Z",
            "2026-12-04T10:20:00Z",
            "Back-off restarting failed container",
        ),
    );
    c.add(
        "v1",
        "events",
        event(
            "in.2",
            "Unhealthy",
            "2026-12-04T10:40:00Z",
            "2026-12-04T10:45:00Z",
            "Readiness probe failed: HTTP probe failed with statuscode: 503",
        ),
    );
    c.add("v1", "events", event("after.1", "Pulled", "2026-12-04T12:00:00Z", "2026-12-04T12:00:00Z", "long after"));
    c
}

fn site(ws: &Workspace, cluster: &Cluster) -> std::path::PathBuf {
    ws.write(
        "preserve.toml",
        format!(
            "[kubernetes]\nkubeconfig = \"{}\"\nrelease = \"{RELEASE}\"\n",
            cluster.kubeconfig(ws.path()).display()
        ),
    )
}

fn snapshot(ws: &Workspace, site: &std::path::Path) -> std::process::Output {
    run(ws.preserve().args(["snapshot", "--config"]).arg(site).args([
        "-q",
        "-c",
        "kubernetes-cluster",
        "--since",
        "2026-12-04T10:00:00Z",
        "--until",
        "2026-12-04T11:00:00Z",
    ]))
}

fn jsonl(bag: &std::path::Path, name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(bag.join("data/kubernetes-cluster").join(name)).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn names(objects: &[Value]) -> Vec<String> {
    objects.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn the_releases_pods_workloads_budgets_autoscalers_and_the_windows_events() {
    let ws = Workspace::new();
    let cluster = release();
    let out = snapshot(&ws, &site(&ws, &cluster));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    assert_eq!(collector(&m, "kubernetes-cluster")["status"], "ok");
    // The release's pods only, whole.
    let pods = jsonl(&bag, "pods.jsonl");
    assert_eq!(names(&pods), ["caracal-caracal-gateway-0", "caracal-caracal-gateway-1"]);
    assert_eq!(pods[1]["spec"]["nodeName"], "node-b");
    // The summary: restarts, why the last instance ended, the image's digest, readiness.
    let summary: Value =
        serde_json::from_slice(&std::fs::read(bag.join("data/kubernetes-cluster/pods.summary.json")).unwrap()).unwrap();
    let restarted = &summary[1];
    assert_eq!(restarted["pod"], "caracal-caracal-gateway-1");
    assert_eq!(restarted["ready"], false);
    assert_eq!(restarted["node"], "node-b");
    assert_eq!(restarted["containers"][0]["restart_count"], 4);
    assert_eq!(restarted["containers"][0]["last_termination"]["reason"], "OOMKilled");
    assert_eq!(restarted["containers"][0]["last_termination"]["exit_code"], 137);
    assert!(restarted["containers"][0]["image_id"].as_str().unwrap().contains("@sha256:"), "{restarted}");
    assert_eq!(summary[0]["containers"][0]["last_termination"], Value::Null);
    // Workloads with their revisions, the budget, the autoscaler, the migration Job.
    let deployments = jsonl(&bag, "deployments.jsonl");
    assert_eq!(deployments[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "4");
    assert_eq!(jsonl(&bag, "statefulsets.jsonl")[0]["status"]["updateRevision"], "caracal-caracal-sts-7f1a");
    assert_eq!(names(&jsonl(&bag, "replicasets.jsonl")), ["caracal-caracal-gateway-6d8f7b9c4"]);
    assert_eq!(names(&jsonl(&bag, "jobs.jsonl")), ["caracal-caracal-migrate"]);
    assert_eq!(jsonl(&bag, "poddisruptionbudgets.jsonl")[0]["spec"]["minAvailable"], 1);
    assert_eq!(jsonl(&bag, "horizontalpodautoscalers.jsonl")[0]["spec"]["maxReplicas"], 6);
    // Events that happened in the window, one begun before it included; none before or after.
    assert_eq!(names(&jsonl(&bag, "events.jsonl")), ["in.1", "in.2"]);
    // The env entry's plaintext value is gone, the other entries stay as they were.
    assert_no_secret_anywhere(&ws, &bag, &out, &[ENV_SECRET]);
    let env = &pods[1]["spec"]["containers"][0]["env"];
    assert_eq!(env[0]["value"], "debug");
    assert!(env[1]["value"].as_str().unwrap().starts_with("[REDACTED"), "{env}");
    assert_eq!(env[2]["valueFrom"]["secretKeyRef"]["key"], "redisPassword");
    // Read-only, and never a Secret.
    let requests = cluster.requests();
    assert!(requests.iter().all(|r| r.method == "GET"), "{requests:?}");
    assert!(!requests.iter().any(|r| r.uri.contains("/secrets")), "{requests:?}");
    assert_eq!(run(ws.preserve().arg("verify").arg(ws.only_bundle())).status.code(), Some(0));
}

#[test]
fn a_forbidden_resource_fails_only_its_part_and_names_it() {
    let ws = Workspace::new();
    let cluster = release();
    cluster.forbid("policy/v1", "poddisruptionbudgets");
    let out = snapshot(&ws, &site(&ws, &cluster));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let c = collector(&m, "kubernetes-cluster");
    assert_eq!(c["status"], "partial", "{c}");
    let error = c["error"].as_str().unwrap();
    assert!(error.contains("list poddisruptionbudgets: 403 Forbidden"), "{error}");
    assert!(error.contains("cannot list resource \"poddisruptionbudgets\""), "the API's own words: {error}");
    // Everything else is there.
    assert!(!bag.join("data/kubernetes-cluster/poddisruptionbudgets.jsonl").exists());
    for other in [
        "pods.jsonl",
        "pods.summary.json",
        "deployments.jsonl",
        "statefulsets.jsonl",
        "horizontalpodautoscalers.jsonl",
        "events.jsonl",
    ] {
        assert!(bag.join("data/kubernetes-cluster").join(other).is_file(), "{other}");
    }
    // Every part refused: failed, and still a bundle.
    let ws = Workspace::new();
    let cluster = release();
    for (gv, r) in [
        ("v1", "pods"),
        ("apps/v1", "deployments"),
        ("apps/v1", "statefulsets"),
        ("apps/v1", "replicasets"),
        ("batch/v1", "jobs"),
        ("policy/v1", "poddisruptionbudgets"),
        ("autoscaling/v2", "horizontalpodautoscalers"),
        ("v1", "events"),
    ] {
        cluster.forbid(gv, r);
    }
    let out = snapshot(&ws, &site(&ws, &cluster));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let m = ws.side_manifest();
    assert_eq!(collector(&m, "kubernetes-cluster")["status"], "failed");
}

/// The (API group, resource, verb) of each request the stand-in saw.
fn grants_used(requests: &[Seen]) -> std::collections::BTreeSet<(String, String, String)> {
    requests
        .iter()
        .map(|r| {
            let path = r.uri.split('?').next().unwrap();
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            // /api/v1/namespaces/ns/<res>[/<name>[/<sub>]] or /apis/<group>/<version>/namespaces/ns/<res>...
            let (group, rest) = if parts[0] == "api" { ("", &parts[4..]) } else { (parts[1], &parts[5..]) };
            let (resource, verb) = match rest {
                [res] => (res.to_string(), "list"),
                [res, _name] => (res.to_string(), "get"),
                [res, _name, sub] => (format!("{res}/{sub}"), "get"),
                _ => panic!("unexpected path {path}"),
            };
            (group.to_string(), resource, verb.to_string())
        })
        .collect()
}

/// The (API group, resource, verb) triples a Role grants, read from its YAML (flow-style lists, as the file is
/// written); `resourceNames` are checked separately.
fn grants_of_role(yaml: &str) -> std::collections::BTreeSet<(String, String, String)> {
    let list = |line: &str| -> Vec<String> {
        let inner = line.split_once('[').unwrap().1.rsplit_once(']').unwrap().0;
        inner
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty() || inner.trim() == "\"\"")
            .collect()
    };
    let mut out = std::collections::BTreeSet::new();
    let (mut groups, mut resources) = (Vec::new(), Vec::new());
    for line in yaml.lines() {
        let t = line.trim().trim_start_matches("- ");
        if t.starts_with("apiGroups:") {
            groups = list(t);
        } else if t.starts_with("resources:") {
            resources = list(t);
        } else if t.starts_with("verbs:") {
            for g in &groups {
                for r in &resources {
                    for v in list(t) {
                        out.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_deploy_role_grants_exactly_what_the_kubernetes_collectors_ask() {
    let role = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/role.yaml")).unwrap();
    let granted = grants_of_role(&role);
    // Every request of the cluster, log and discovery collectors against a stand-in with everything present.
    let ws = Workspace::new();
    let cluster = release();
    cluster.log(
        "caracal-caracal-gateway-0",
        "gateway",
        false,
        Log::Lines(vec![("2026-12-04T10:10:00Z".parse().unwrap(), "up".into())]),
    );
    cluster.log(
        "caracal-caracal-gateway-1",
        "gateway",
        false,
        Log::Lines(vec![("2026-12-04T10:10:00Z".parse().unwrap(), "up".into())]),
    );
    cluster.log(
        "caracal-caracal-gateway-1",
        "gateway",
        true,
        Log::Lines(vec![("2026-12-04T10:05:00Z".parse().unwrap(), "oom".into())]),
    );
    cluster.add(
        "discovery.k8s.io/v1",
        "endpointslices",
        endpoint_slice("gateway", 9, &[("127.0.0.1", true, "caracal-caracal-gateway-0")]),
    );
    cluster.add("v1", "secrets", helm_release_secret(RELEASE, 1, "deployed", json!({}), ""));
    let site = site(&ws, &cluster);
    let out = run(ws.preserve().args(["snapshot", "--config"]).arg(&site).args([
        "-q",
        "-c",
        "kubernetes-cluster",
        "-c",
        "gateway-logs",
        "-c",
        "gateway-http",
        "-c",
        "helm-release",
    ]));
    assert!(out.status.code().is_some_and(|c| c == 0 || c == 3), "{}", stderr(&out));
    let used = grants_used(&cluster.requests());
    // What the Role grants beyond what was asked: nothing but the Helm records' names (get, by resourceNames).
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        unused.iter().all(|(g, r, v)| g.is_empty() && r == "secrets" && v == "get"),
        "granted, never asked: {unused:?}"
    );
    let missing: Vec<_> = used.iter().filter(|u| !granted.contains(*u)).collect();
    // Listing Helm's records may be refused by the Role: the helm collector falls back to get by name.
    assert!(
        missing.iter().all(|(g, r, v)| g.is_empty() && r == "secrets" && v == "list"),
        "asked, not granted: {missing:?}"
    );
    // The Role never grants a write, a watch, or Secrets beyond the release's records.
    for verb in ["create", "update", "patch", "delete", "deletecollection", "watch", "*"] {
        assert!(!granted.iter().any(|(_, _, v)| v == verb), "{verb} granted");
    }
    let secrets_rule = role.split("- apiGroups").find(|r| r.contains("secrets")).unwrap();
    assert!(secrets_rule.contains("resourceNames"), "Secrets only by name: {secrets_rule}");
    assert!(secrets_rule.contains("sh.helm.release.v1.caracal.v1") && !secrets_rule.contains("caracal-runtime"));
}

#[test]
fn a_namespace_of_many_events_is_read_a_page_at_a_time() {
    let ws = Workspace::new();
    let cluster = release();
    for i in 0..600 {
        cluster.add(
            "v1",
            "events",
            event(&format!("many.{i:04}"), "Unhealthy", "2026-12-04T10:30:00Z", "2026-12-04T10:31:00Z", "probe"),
        );
    }
    let out = snapshot(&ws, &site(&ws, &cluster));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    // Every event of the window, across pages: the 600 and the two of the release's own.
    assert_eq!(jsonl(&bag, "events.jsonl").len(), 602);
    let pages: Vec<Seen> = cluster.requests().into_iter().filter(|r| r.uri.contains("/events?")).collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages.iter().all(|p| p.uri.contains("limit=250")), "{pages:?}");
    assert!(pages[1].uri.contains("continue=page-250") && pages[2].uri.contains("continue=page-500"), "{pages:?}");
}

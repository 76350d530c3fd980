//! Issue 16 item 3, "Every replica, found": on a Kubernetes site the `http` collectors ask every pod of a Caracal
//! service, found from its Service's EndpointSlices through the Kubernetes API (the stand-in of `support/kube.rs`),
//! not pod IPs listed by hand. Real HTTP stand-in Gateways (`support/caracal_http.rs`) listen on 127.0.0.1, .2 and
//! .3 on one port, as three pods behind one EndpointSlice port would.

mod support;

#[allow(dead_code)]
#[path = "support/caracal_http.rs"]
mod caracal_http;

use std::path::{Path, PathBuf};

use axum::{Json, Router, routing::get};
use serde_json::{Value, json};
use support::{kube::Cluster, *};

const METRICS_TOKEN: &str = "metrics-bearer-canary-9c1e";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/caracal/endpointslices";

/// The chart's Gateway pods (a Deployment's), the loopback address each listens on, and whether it is ready.
const PODS: [(&str, &str, bool); 3] = [
    ("caracal-caracal-gateway-6d8f7b9c4-2xkqp", "127.0.0.1", true),
    ("caracal-caracal-gateway-6d8f7b9c4-9tdlw", "127.0.0.2", false),
    ("caracal-caracal-gateway-6d8f7b9c4-mz4rn", "127.0.0.3", true),
];

fn tokens() -> caracal_http::Tokens {
    caracal_http::Tokens {
        metrics: METRICS_TOKEN.into(),
        admin: "admin-unused".into(),
        audit_admin: "audit-admin-unused".into(),
        coordinator: "coordinator-unused".into(),
    }
}

/// A Gateway replica as `caracal_http` stands it in; its `/ready` answers 503 (revocation snapshot stale). A
/// ready one answers `/ready` with 200 and leaves everything else to the same stand-in.
fn gateway(pod: &'static str, ready: bool) -> Router {
    let stand_in = caracal_http::gateway(&tokens(), pod);
    if !ready {
        return stand_in;
    }
    Router::new()
        .route("/ready", get(move || async move { Json(json!({ "ready": true, "instance": pod })) }))
        .fallback_service(stand_in)
}

/// Serves each `(address, router)` on the same port of its loopback address, in a background thread; returns
/// the port. The port is chosen free on the first address and retried until the others have it free too.
fn serve_on_one_port(servers: Vec<(&'static str, Router)>) -> u16 {
    let listeners = 'retry: loop {
        let first = std::net::TcpListener::bind((servers[0].0, 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for (addr, _) in &servers[1..] {
            match std::net::TcpListener::bind((*addr, port)) {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'retry,
            }
        }
        break listeners;
    };
    let port = listeners[0].local_addr().unwrap().port();
    for (listener, (_, router)) in listeners.into_iter().zip(servers) {
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, router).await.unwrap();
            });
        });
    }
    port
}

/// The three Gateway pods listening, and the EndpointSlice of their Service in the cluster.
fn three_gateways(cluster: &Cluster) -> u16 {
    let port = serve_on_one_port(PODS.iter().map(|(pod, addr, ready)| (*addr, gateway(pod, *ready))).collect());
    let endpoints: Vec<(&str, bool, &str)> = PODS.iter().map(|(pod, addr, ready)| (*addr, *ready, *pod)).collect();
    cluster.add("discovery.k8s.io/v1", "endpointslices", kube::endpoint_slice("gateway", port, &endpoints));
    port
}

/// A Kubernetes site config reaching `cluster`, with Caracal's home (holding the metrics bearer) in the workspace,
/// and `extra` appended.
fn site(ws: &Workspace, cluster: &Cluster, extra: &str) -> PathBuf {
    let home = ws.path().join("caracal");
    ws.write("caracal/secrets/metricsBearer", METRICS_TOKEN);
    let kubeconfig = cluster.kubeconfig(ws.path());
    ws.write(
        "preserve.toml",
        format!(
            "caracal_home = \"{}\"\n{extra}\n[kubernetes]\nkubeconfig = \"{}\"\nrequest_timeout = \"10s\"\n",
            home.display(),
            kubeconfig.display()
        ),
    )
}

/// `preserve snapshot` of `collectors` with the built-in definitions (an empty extra directory).
fn snapshot(ws: &Workspace, config: &Path, collectors: &[&str]) -> std::process::Output {
    let dir = collectors_dir(ws, "none.toml", "");
    let mut cmd = ws.snapshot(&dir);
    cmd.arg("--config").arg(config);
    for c in collectors {
        cmd.args(["-c", c]);
    }
    run(&mut cmd)
}

fn check(ws: &Workspace, config: &Path, collectors: &[&str]) -> std::process::Output {
    let mut cmd = ws.preserve();
    cmd.arg("check").arg("--config").arg(config);
    for c in collectors {
        cmd.args(["-c", c]);
    }
    run(&mut cmd)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn slice_requests(cluster: &Cluster) -> Vec<String> {
    cluster.requests().into_iter().filter(|r| r.uri.starts_with(SLICES)).map(|r| r.uri).collect()
}

#[test]
fn every_gateway_pod_is_asked_in_its_own_folder_the_not_ready_one_included() {
    let cluster = Cluster::start();
    let port = three_gateways(&cluster);
    let ws = Workspace::new();
    let config = site(&ws, &cluster, "");
    let out = snapshot(&ws, &config, &["gateway-http"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let c = collector(&m, "gateway-http");
    assert_eq!(c["status"], "ok", "{c}");
    let mut folders: Vec<String> = std::fs::read_dir(bag.join("data/gateway-http"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders, PODS.map(|(pod, _, _)| pod.to_string()), "one folder per pod, named by the pod");

    for (pod, addr, ready) in PODS {
        let folder = bag.join("data/gateway-http").join(pod);
        let response = read_json(&folder.join("ready.response.json"));
        assert_eq!(response["url"], format!("http://{addr}:{port}/ready"), "{response}");
        let body = std::fs::read_to_string(folder.join("ready.body")).unwrap();
        assert!(body.contains(pod), "each pod answered for itself: {body}");
        if ready {
            assert_eq!(response["status"], 200, "{response}");
        } else {
            assert_eq!(response["status"], 503, "the failing /ready is the evidence: {response}");
            assert!(body.contains("revocation_snapshot_stale"), "{body}");
        }
        let metrics = std::fs::read_to_string(folder.join("metrics.body")).unwrap();
        assert!(metrics.contains("caracal_gateway_revocation_snapshot_age_seconds"), "the bearer went: {metrics}");

        let endpoint = read_json(&folder.join("endpoint.json"));
        assert_eq!(endpoint["pod"], pod);
        assert_eq!(endpoint["address"], addr);
        assert_eq!((endpoint["ready"].as_bool(), endpoint["terminating"].as_bool()), (Some(ready), Some(false)));
        assert_eq!(endpoint["discovered_from"], "EndpointSlice caracal-caracal-gateway-x7k2p", "{endpoint}");
    }
    // The manifest's index says the same of each request.
    let requests = c["details"]["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 3 * 4, "four requests to each of three pods");
    for r in requests {
        let (pod, addr, ready) = PODS.into_iter().find(|(p, _, _)| r["instance"] == *p).unwrap();
        let d = &r["discovered"];
        assert_eq!(
            (d["pod"].as_str(), d["address"].as_str(), d["ready"].as_bool()),
            (Some(pod), Some(addr), Some(ready))
        );
        assert_eq!(d["state"], if ready { "ready" } else { "not ready" });
        assert_eq!(d["discovered_from"], "EndpointSlice caracal-caracal-gateway-x7k2p");
    }
    assert_eq!(c["details"]["discovery"]["service"], "caracal-caracal-gateway", "{c}");
    assert!(c["source"].as_str().unwrap_or_default().contains("caracal-caracal-gateway"), "{c}");

    // One read of the API: the Service's slices by their label, and only GETs.
    let seen = cluster.requests();
    assert!(seen.iter().all(|r| r.method == "GET"), "{seen:?}");
    let slices = slice_requests(&cluster);
    assert_eq!(slices.len(), 1, "{seen:?}");
    assert!(slices[0].contains("labelSelector=kubernetes.io%2Fservice-name%3Dcaracal-caracal-gateway"), "{slices:?}");
    assert_no_secret_anywhere(&ws, &bag, &out, &[METRICS_TOKEN]);
}

#[test]
fn refused_endpointslices_fail_the_collector_naming_the_service_and_the_bundle_is_written() {
    let cluster = Cluster::start();
    three_gateways(&cluster);
    cluster.forbid("discovery.k8s.io/v1", "endpointslices");
    let ws = Workspace::new();
    let config = site(&ws, &cluster, "");
    let out = snapshot(&ws, &config, &["gateway-http", "context"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let c = collector(&m, "gateway-http");
    assert_eq!(c["status"], "failed", "not skipped: the pods are there, preserve may not see them: {c}");
    let error = c["error"].as_str().unwrap();
    assert!(error.contains("service `gateway`") && error.contains("caracal-caracal-gateway"), "{error}");
    assert!(error.contains("403") && error.contains("endpointslices is forbidden"), "the API's own words: {error}");
    assert!(!bag.join("data/gateway-http").exists(), "no pod was asked");
    assert_eq!(collector(&m, "context")["status"], "ok", "the rest of the bundle is there");

    // `preserve check` says the same before anything runs.
    let out = check(&ws, &config, &["gateway-http"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let line = stdout(&out).lines().find(|l| l.contains("gateway-http")).unwrap_or_default().to_string();
    assert!(line.starts_with("NO") && line.contains("403") && line.contains("service `gateway`"), "{line}");

    // An API server that does not answer: the same, with the client's error.
    let ws = Workspace::new();
    let config = site(&ws, &cluster, "");
    let kubeconfig = ws.path().join("kubeconfig");
    let text = std::fs::read_to_string(&kubeconfig).unwrap().replace(&cluster.url, "https://127.0.0.1:1");
    std::fs::write(&kubeconfig, text).unwrap();
    let out = snapshot(&ws, &config, &["gateway-http"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let m = ws.side_manifest();
    let c = collector(&m, "gateway-http");
    assert_eq!(c["status"], "failed", "{c}");
    let error = c["error"].as_str().unwrap();
    assert!(error.contains("service `gateway`") && error.contains("list endpointslices"), "{error}");
}

#[test]
fn a_static_list_on_a_kubernetes_site_is_used_without_asking_the_api() {
    let cluster = Cluster::start();
    // The cluster knows pods elsewhere: the static list wins.
    three_gateways(&cluster);
    let port = serve_on_one_port(vec![("127.0.0.1", gateway("gateway-static", false))]);
    let ws = Workspace::new();
    let config = site(&ws, &cluster, &format!("[services]\ngateway = [\"http://127.0.0.1:{port}\"]\n"));
    let out = snapshot(&ws, &config, &["gateway-http"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    assert_eq!(collector(&m, "gateway-http")["status"], "ok");
    let folders: Vec<String> = std::fs::read_dir(bag.join("data/gateway-http"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(folders, [format!("127.0.0.1_{port}")]);
    assert!(
        std::fs::read_to_string(bag.join(format!("data/gateway-http/127.0.0.1_{port}/ready.body")))
            .unwrap()
            .contains("gateway-static")
    );
    assert!(slice_requests(&cluster).is_empty(), "{:?}", cluster.requests());

    let out = check(&ws, &config, &["gateway-http"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(slice_requests(&cluster).is_empty(), "{:?}", cluster.requests());
}

#[test]
fn check_reports_the_discovered_pods_and_missing_services_are_skipped_naming_them() {
    let cluster = Cluster::start();
    three_gateways(&cluster);
    let ws = Workspace::new();
    let config = site(&ws, &cluster, "");

    let out = check(&ws, &config, &["gateway-http", "sts-http", "alertmanager-alerts"]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    // The report's lines are cut to fit a terminal: `--json` has each note whole.
    let line = |name: &str| said.lines().find(|l| l.contains(name)).unwrap_or_default().to_string();
    assert!(line("gateway-http").starts_with("ok") && line("gateway-http").contains("3 pod(s)"), "{said}");
    assert!(line("sts-http").starts_with("skip") && line("sts-http").contains("caracal-caracal-sts"), "{said}");
    assert!(line("alertmanager-alerts").starts_with("skip") && line("alertmanager-alerts").contains("[services]"));
    let mut json_cmd = ws.preserve();
    json_cmd.args(["check", "--json", "-c", "gateway-http", "--config"]).arg(&config);
    let report: Value = serde_json::from_str(&stdout(&run(&mut json_cmd))).unwrap();
    let gw = report["collectors"].as_array().unwrap().iter().find(|c| c["name"] == "gateway-http").unwrap();
    let note = gw["why"][0].as_str().unwrap_or_default().to_string();
    for (pod, addr, ready) in PODS {
        let state = if ready { "ready" } else { "not ready" };
        assert!(note.contains(&format!("{pod} ({addr}, {state})")), "{note}");
    }

    // A snapshot: the Service without EndpointSlices and the operator's Alertmanager without a URL are skipped,
    // each saying why.
    let out = snapshot(&ws, &config, &["sts-http", "alertmanager-alerts"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m = ws.side_manifest();
    let sts = collector(&m, "sts-http");
    assert_eq!(sts["status"], "skipped", "{sts}");
    assert!(sts["error"].as_str().unwrap().contains("Service `caracal-caracal-sts` has no EndpointSlice"), "{sts}");
    let am = collector(&m, "alertmanager-alerts");
    assert_eq!(am["status"], "skipped", "{am}");
    let why = am["error"].as_str().unwrap();
    assert!(why.contains("alertmanager") && why.contains("not discovered") && why.contains("[services]"), "{why}");
}

#[test]
fn a_terminating_pod_is_asked_and_marked_and_an_address_in_two_slices_is_asked_once() {
    let cluster = Cluster::start();
    let terminating = "caracal-caracal-gateway-5b7c9d8e6-hq2vz";
    let mut servers: Vec<(&'static str, Router)> =
        PODS.iter().map(|(pod, addr, ready)| (*addr, gateway(pod, *ready))).collect();
    servers.push(("127.0.0.4", gateway(terminating, false)));
    let port = serve_on_one_port(servers);
    let endpoints: Vec<(&str, bool, &str)> = PODS.iter().map(|(pod, addr, ready)| (*addr, *ready, *pod)).collect();
    cluster.add("discovery.k8s.io/v1", "endpointslices", kube::endpoint_slice("gateway", port, &endpoints));
    // A second slice of the same Service, as the EndpointSlice controller makes during a rollout: the pod of the
    // old ReplicaSet shutting down, and a pod the first slice already lists.
    cluster.add(
        "discovery.k8s.io/v1",
        "endpointslices",
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": "caracal-caracal-gateway-q4w8z", "namespace": kube::NAMESPACE,
                          "labels": { "kubernetes.io/service-name": "caracal-caracal-gateway" } },
            "addressType": "IPv4",
            "ports": [{ "name": "metrics", "port": 9464, "protocol": "TCP" }, { "name": "http", "port": port, "protocol": "TCP" }],
            "endpoints": [
                { "addresses": ["127.0.0.4"], "conditions": { "ready": false, "serving": true, "terminating": true },
                  "targetRef": { "kind": "Pod", "name": terminating } },
                { "addresses": ["127.0.0.3"], "conditions": { "ready": true, "serving": true, "terminating": false },
                  "targetRef": { "kind": "Pod", "name": PODS[2].0 } },
            ],
        }),
    );
    let ws = Workspace::new();
    let config = site(&ws, &cluster, "");
    let out = snapshot(&ws, &config, &["gateway-http"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let c = collector(&manifest(&bag), "gateway-http").clone();
    assert_eq!(c["status"], "ok", "{c}");
    let instances = c["details"]["discovery"]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 4, "four pods, the one in both slices once: {c}");
    assert_eq!(c["details"]["requests"].as_array().unwrap().len(), 4 * 4, "{c}");

    let gone = read_json(&bag.join("data/gateway-http").join(terminating).join("endpoint.json"));
    assert_eq!((gone["terminating"].as_bool(), gone["serving"].as_bool()), (Some(true), Some(true)), "{gone}");
    assert_eq!(gone["state"], "terminating");
    assert_eq!(gone["discovered_from"], "EndpointSlice caracal-caracal-gateway-q4w8z");
    let body = std::fs::read_to_string(bag.join("data/gateway-http").join(terminating).join("ready.body")).unwrap();
    assert!(body.contains(terminating), "{body}");
    let twice = read_json(&bag.join("data/gateway-http").join(PODS[2].0).join("endpoint.json"));
    // Slices are read in the order of their names.
    assert_eq!(twice["discovered_from"], "EndpointSlice caracal-caracal-gateway-q4w8z", "{twice}");
    assert_eq!(twice["also_in"], json!(["caracal-caracal-gateway-x7k2p"]), "{twice}");
}

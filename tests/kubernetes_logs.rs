//! Pod logs on Kubernetes: the `audit-tamper` profile run against a stand-in API server (tests/support/kube.rs;
//! no real one can run here) with two Audit pods, one of them restarted, gets every container's log, the previous
//! instance of the restarted one, only the window's lines, secrets redacted; a refused resource fails only its
//! part; the same profile on a Compose site still reads Docker's logs.

mod support;

use jiff::{SignedDuration, Timestamp};
use support::{kube::*, *};

const CANARY_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.canary-pod-log-token.Zm9vYmFy";
const CANARY_PASSWORD: &str = "pod-log-db-password-9c41e";

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// zerolog-shaped lines of the Audit service, one a minute from `from` (exclusive of `to`), each naming its pod.
fn lines(pod: &str, from: &str, to: &str, what: &str) -> Vec<(Timestamp, String)> {
    let (mut t, end) = (at(from), at(to));
    let mut v = Vec::new();
    while t < end {
        v.push((
            t,
            format!("{{\"level\":\"info\",\"time\":{},\"pod\":\"{pod}\",\"msg\":\"{what}\"}}", t.as_millisecond()),
        ));
        t += SignedDuration::from_mins(1);
    }
    v
}

/// A site config for the stand-in cluster, with Redis and Postgres pointed at a closed port: only the Kubernetes
/// collectors can find anything.
fn kubernetes_site(ws: &Workspace, cluster: &Cluster) -> std::path::PathBuf {
    let kubeconfig = cluster.kubeconfig(ws.path());
    ws.write(
        "preserve.toml",
        format!(
            "[kubernetes]\nkubeconfig = \"{}\"\nnamespace = \"{NAMESPACE}\"\nrelease = \"{RELEASE}\"\n\n\
             [redis]\nurl = \"redis://127.0.0.1:9/0\"\n[postgres]\nurl = \"postgres://preserve@127.0.0.1:9/caracal\"\n",
            kubeconfig.display()
        ),
    )
}

/// Two Audit pods: `-0` running since before the window, `-1` restarted inside it, whose previous container
/// panicked with a secret in its last words. Lines at 09:00–10:00 and 11:00–11:30 are outside the window
/// 10:00–11:00; the window holds 60 lines of each current container and 15 of the previous one.
fn audit_cluster() -> Cluster {
    let cluster = Cluster::start();
    let (a0, a1) = ("caracal-caracal-audit-6f7c9-a0", "caracal-caracal-audit-6f7c9-b1");
    cluster.add("v1", "pods", caracal_pod(a0, "audit", "10.0.1.10", true, 0));
    cluster.add("v1", "pods", caracal_pod(a1, "audit", "10.0.2.11", true, 1));
    // A Gateway pod, which audit-tamper must not read.
    cluster.add("v1", "pods", caracal_pod("caracal-caracal-gateway-0", "gateway", "10.0.1.12", true, 0));
    let mut log0 = lines(a0, "2026-12-04T09:00:00Z", "2026-12-04T10:00:00Z", "before the window");
    log0.extend(lines(a0, "2026-12-04T10:00:00Z", "2026-12-04T11:00:00Z", "chain verified"));
    log0.push((
        at("2026-12-04T10:30:30Z"),
        format!("{{\"level\":\"warn\",\"msg\":\"client sent Authorization: Bearer {CANARY_TOKEN}\"}}"),
    ));
    log0.extend(lines(a0, "2026-12-04T11:00:30Z", "2026-12-04T11:30:00Z", "after the window"));
    cluster.log(a0, "audit", false, Log::Lines(log0));
    let mut prev = lines(a1, "2026-12-04T09:40:00Z", "2026-12-04T10:15:00Z", "consumer running");
    prev.push((
        at("2026-12-04T10:15:00Z"),
        format!(
            "panic: connect postgres://audit:{CANARY_PASSWORD}@caracal-caracal-db:5432/caracal: tamper sweep aborted"
        ),
    ));
    cluster.log(a1, "audit", true, Log::Lines(prev));
    let mut cur = lines(a1, "2026-12-04T10:16:00Z", "2026-12-04T11:16:00Z", "restarted");
    cur.push((at("2026-12-04T10:20:00Z"), format!("{{\"level\":\"error\",\"password\":\"{CANARY_PASSWORD}\"}}")));
    cluster.log(a1, "audit", false, Log::Lines(cur));
    cluster.log(
        "caracal-caracal-gateway-0",
        "gateway",
        false,
        Log::Lines(lines("gw", "2026-12-04T10:00:00Z", "2026-12-04T10:10:00Z", "gateway")),
    );
    cluster
}

/// A snapshot of the window 10:00–11:00 with `args`, on the site `site` (none: a Compose host's defaults); its
/// bag and manifest, `audit-logs` checked `ok`.
fn in_the_window(
    ws: &Workspace,
    site: Option<&std::path::Path>,
    args: &[&str],
) -> (std::process::Output, std::path::PathBuf, serde_json::Value) {
    let mut c = ws.preserve();
    c.args(["snapshot", "-q", "--since", "2026-12-04T10:00:00Z", "--until", "2026-12-04T11:00:00Z"]).args(args);
    if let Some(site) = site {
        c.arg("--config").arg(site);
    }
    let out = run(&mut c);
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let logs = collector(&m, "audit-logs");
    assert_eq!(logs["status"], "ok", "{logs}\n{}", stderr(&out));
    (out, bag, m)
}

fn line_count(text: &str) -> usize {
    text.lines().count()
}

#[test]
fn audit_tamper_on_kubernetes_reads_every_audit_pod_and_the_restarted_ones_last_words() {
    let ws = Workspace::new();
    let cluster = audit_cluster();
    let site = kubernetes_site(&ws, &cluster);
    let (out, bag, m) = in_the_window(&ws, Some(&site), &["--profile", "audit-tamper"]);
    let logs = collector(&m, "audit-logs");
    let dir = bag.join("data/audit-logs/audit");
    let read = |rel: &str| std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let a0 = read("caracal-caracal-audit-6f7c9-a0/audit.log");
    let a1 = read("caracal-caracal-audit-6f7c9-b1/audit.log");
    let a1_prev = read("caracal-caracal-audit-6f7c9-b1/audit.previous.log");
    // Only the window's lines: 60 a minute apart from 10:00, and the token line.
    assert_eq!(line_count(&a0), 61, "{a0}");
    assert!(!a0.contains("before the window") && !a0.contains("after the window"));
    // The restarted pod's current container from 10:16 to 11:00 (45 lines) and its error line.
    assert_eq!(line_count(&a1), 46, "{a1}");
    // Its previous container's last words: 15 lines from 10:00 and the panic.
    assert_eq!(line_count(&a1_prev), 16, "{a1_prev}");
    assert!(a1_prev.lines().last().unwrap().contains("tamper sweep aborted"), "{a1_prev}");
    // Each line keeps the kubelet's time, inside the window.
    for l in a0.lines().chain(a1.lines()).chain(a1_prev.lines()) {
        let t: Timestamp = l.split(' ').next().unwrap().parse().unwrap();
        assert!(t >= at("2026-12-04T10:00:00Z") && t <= at("2026-12-04T11:00:00Z"), "{l}");
    }
    // No other component's pod, no pod the previous container of which did not exist.
    let files = files_below(&bag.join("data/audit-logs"));
    assert_eq!(files.len(), 3, "{:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    // The manifest counts what it says it read.
    let index = logs["details"]["logs"].as_array().unwrap();
    let lines_of = |pod: &str, previous: bool| {
        index.iter().find(|e| e["pod"].as_str().unwrap().ends_with(pod) && e["previous"] == previous).unwrap()["lines"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((lines_of("a0", false), lines_of("b1", false), lines_of("b1", true)), (61, 46, 16));
    // Secrets in the logs are redacted, and counted.
    assert_no_secret_anywhere(&ws, &bag, &out, &[CANARY_TOKEN, CANARY_PASSWORD]);
    assert!(a0.contains("[REDACTED"), "{a0}");
    assert!(a1_prev.contains("[REDACTED"), "{a1_prev}");
    // The API was only read: list pods by the chart's labels and three log reads, never followed.
    let requests = cluster.requests();
    assert!(requests.iter().all(|r| r.method == "GET"), "{requests:?}");
    let log_reads: Vec<&Seen> = requests.iter().filter(|r| r.uri.contains("/log?")).collect();
    assert_eq!(log_reads.len(), 3, "{log_reads:?}");
    for r in &log_reads {
        assert!(r.uri.contains("timestamps=true") && r.uri.contains("follow=false"), "{}", r.uri);
        assert!(r.uri.contains("sinceTime=2026-12-04T10%3A00%3A00Z"), "{}", r.uri);
        assert!(r.uri.contains("container=audit"), "{}", r.uri);
    }
    assert!(
        requests.iter().any(|r| r.uri.contains("/pods?")
            && r.uri.contains("labelSelector=app.kubernetes.io%2Fname%3Dcaracal%2Capp.kubernetes.io%2Finstance%3Dcaracal%2Capp.kubernetes.io%2Fcomponent%3Daudit")),
        "{requests:?}"
    );
    // The bundle verifies.
    assert_eq!(run(ws.preserve().arg("verify").arg(ws.only_bundle())).status.code(), Some(0));
}

#[test]
fn a_refused_resource_fails_only_its_own_collector() {
    let ws = Workspace::new();
    let cluster = audit_cluster();
    cluster.forbid("v1", "pods");
    let site = kubernetes_site(&ws, &cluster);
    let out =
        run(ws.preserve().args(["snapshot", "--config"]).arg(&site).args(["-q", "-c", "audit-logs", "-c", "context"]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let logs = collector(&m, "audit-logs");
    assert_eq!(logs["status"], "failed", "{logs}");
    let error = logs["error"].as_str().unwrap();
    assert!(error.contains("list pods") && error.contains("403") && error.contains("forbidden"), "{error}");
    assert_eq!(collector(&m, "context")["status"], "ok");
    assert!(bag.join("data/context/context.json").is_file());
}

#[test]
fn a_compose_site_still_reads_dockers_logs_with_the_same_profile() {
    let ws = Workspace::new();
    // One Audit container's json-file log, as Docker keeps it.
    let id = "a".repeat(64);
    ws.write(
        &format!("docker/{id}/config.v2.json"),
        r#"{"Name":"/caracal-audit-1","Config":{"Labels":{"com.docker.compose.project":"caracal","com.docker.compose.service":"audit"}}}"#,
    );
    ws.write(
        &format!("docker/{id}/{id}-json.log"),
        "{\"log\":\"{\\\"level\\\":\\\"info\\\",\\\"msg\\\":\\\"chain verified\\\"}\\n\",\"stream\":\"stdout\",\"time\":\"2026-12-04T10:30:00.000000000Z\"}\n",
    );
    let (_, bag, m) = in_the_window(&ws, None, &["-c", "audit-logs"]);
    let logs = collector(&m, "audit-logs");
    assert!(
        logs["source"].as_str().unwrap_or_default().contains("docker") || logs.to_string().contains("docker"),
        "{logs}"
    );
    let text = collector_text(&bag, "audit-logs");
    assert!(text.contains("chain verified"), "{text}");
    assert!(bag.join(format!("data/audit-logs/audit/caracal-audit-1/{id}-json.log")).is_file());
}

#[test]
fn collectors_for_the_other_platform_are_left_out_and_checked_names_stay_unique() {
    let ws = Workspace::new();
    let cluster = Cluster::start();
    let site = kubernetes_site(&ws, &cluster);
    // On Kubernetes the log collectors are the kubernetes kind, and the cluster's own collectors exist.
    let list = |site: Option<&std::path::Path>| {
        let mut c = ws.preserve();
        c.args(["list", "--json"]);
        if let Some(s) = site {
            c.arg("--config").arg(s);
        }
        stdout(&run(&mut c))
    };
    let on_k8s: serde_json::Value = serde_json::from_str(&list(Some(&site))).unwrap();
    let on_compose: serde_json::Value = serde_json::from_str(&list(None)).unwrap();
    let kind_of = |v: &serde_json::Value, name: &str| {
        v["collectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["kind"].as_str().unwrap().to_string())
    };
    assert_eq!(kind_of(&on_k8s, "audit-logs").as_deref(), Some("kubernetes"));
    assert_eq!(kind_of(&on_compose, "audit-logs").as_deref(), Some("file"));
    assert_eq!(kind_of(&on_k8s, "kubernetes-cluster").as_deref(), Some("kubernetes"));
    assert_eq!(kind_of(&on_compose, "kubernetes-cluster"), None);
    // Two definitions of one name for the same platform are refused, naming both.
    let dir = collectors_dir(
        &ws,
        "twice.toml",
        "[[collector]]\nname = \"x-logs\"\nkind = \"kubernetes\"\non = \"kubernetes\"\nlogs = { components = [\"audit\"] }\n\n\
         [[collector]]\nname = \"x-logs\"\nkind = \"kubernetes\"\nlogs = { components = [\"sts\"] }\n",
    );
    let out = run(ws.preserve().args(["list", "--collectors"]).arg(&dir));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("duplicate collector `x-logs`"), "{}", stderr(&out));
}

#[test]
fn check_says_which_pods_each_log_collector_would_read_and_what_it_cannot() {
    let ws = Workspace::new();
    let cluster = audit_cluster();
    let site = kubernetes_site(&ws, &cluster);
    let check = |cluster_forbids: bool| {
        if cluster_forbids {
            cluster.forbid("v1", "pods");
        }
        let out = run(ws.preserve().args(["check", "--json", "--config"]).arg(&site).args([
            "-c",
            "audit-logs",
            "-c",
            "postgres-logs",
        ]));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let of =
            |name: &str| report["collectors"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
        // A Kubernetes site has no Caracal home or Docker directory to miss: the site says where the release is.
        let site: Vec<&str> = report["site"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(site, ["config", "kubernetes", "out_dir"], "{report}");
        (out.status.code(), of("audit-logs"), of("postgres-logs"))
    };
    // Two Audit pods to read; no in-chart Postgres (an external database): nothing to read, which is no fault.
    let (code, audit, postgres) = check(false);
    assert_eq!(code, Some(0), "{audit} {postgres}");
    assert_eq!(audit["state"], "ready", "{audit}");
    assert!(audit["why"].to_string().contains("2 pod(s)"), "{audit}");
    assert_eq!(postgres["state"], "skip", "{postgres}");
    assert!(postgres["why"].as_str().unwrap().contains("app.kubernetes.io/component=db"), "{postgres}");
    // RBAC refuses listing pods: neither can run, and each says why in the API's words.
    let (code, audit, _) = check(true);
    assert_eq!(code, Some(3));
    assert_eq!(audit["state"], "cannot", "{audit}");
    assert!(audit["why"].as_str().unwrap().contains("403"), "{audit}");
}

//! A newcomer ran preserve's built-in collectors on the wrong host and against the wrong systems, and the statuses
//! looked better (or worse) than what was collected. Each status must say what was collected: nothing to read
//! because the input is absent is `skipped` with the reason, every request failing is `failed`, and a Redis that
//! holds no `caracal.*` stream is a finding.

mod support;

use support::{redis::RedisServer, *};

fn findings<'a>(m: &'a serde_json::Value, collector: &str, code: &str) -> Vec<&'a serde_json::Value> {
    m["findings"].as_array().unwrap().iter().filter(|f| f["collector"] == collector && f["code"] == code).collect()
}

/// Serves `router` on a free local port, in a background thread with its own runtime; returns the base URL.
fn serve(router: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), router).await.unwrap();
        });
    });
    format!("http://{addr}")
}

fn error(c: &serde_json::Value) -> &str {
    c["error"].as_str().unwrap_or_else(|| panic!("no error in {c}"))
}

/// A Kubernetes site, or a host without Caracal: `$CARACAL_HOME` does not exist.
#[test]
fn an_absent_caracal_home_skips_the_compose_and_helm_config_naming_what_is_missing() {
    let ws = Workspace::new();
    let home = ws.path().join("no-such-caracal-home");
    let out = run(ws
        .preserve()
        .args(["snapshot", "-q", "-c", "compose-config", "-c", "compose-config-rendered", "-c", "helm-values"])
        .env("CARACAL_HOME", &home)
        // No helm on this PATH, whatever the machine has: a Compose host.
        .env("PATH", format!("{}:/usr/bin:/bin", ws.path().join("bin").display())));
    assert_eq!(out.status.code(), Some(0), "skipped collectors leave the bundle complete: {}", stderr(&out));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    assert_eq!(m["status"], "complete");

    let missing = format!("`{}` does not exist", home.display());
    for name in ["compose-config", "compose-config-rendered"] {
        let c = collector(&m, name);
        assert_eq!(c["status"], "skipped", "{c}");
        assert!(error(c).contains(&missing), "the reason names the missing home: {c}");
        assert!(c["artifacts"].as_array().unwrap().is_empty(), "{c}");
        assert!(!bag.join("data").join(name).exists());
    }
    let helm = collector(&m, "helm-values");
    assert_eq!(helm["status"], "skipped", "{helm}");
    assert!(error(helm).contains("`helm` is not installed here"), "{helm}");

    // A skip never hides evidence: a home that existed at the last bundle and is gone now is a change, not a skip.
    let ws = Workspace::new();
    let home = ws.path().join("caracal-home");
    ws.write("caracal-home/compose.yml", "services:\n  sts:\n    image: caracal/sts:1.4.2\n");
    let first = run(ws.preserve().args(["snapshot", "-q", "-c", "compose-config"]).env("CARACAL_HOME", &home));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let earlier = ws.only_bundle();
    std::fs::remove_dir_all(&home).unwrap();
    let again = run(ws.preserve().args(["snapshot", "-q", "-c", "compose-config"]).env("CARACAL_HOME", &home));
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let newest = ws.bundles().into_iter().find(|b| *b != earlier).unwrap();
    let m = manifest(&std::path::PathBuf::from(newest.to_string_lossy().replace(".tar.zst", ".manifest.json")));
    assert_eq!(collector(&m, "compose-config")["status"], "ok", "{}", collector(&m, "compose-config"));
    let changed = findings(&m, "compose-config", "config.changed");
    assert!(changed.len() == 1 && changed[0]["summary"].as_str().unwrap().contains("compose.yml"), "{}", m["findings"]);
}

/// The same home, present but not a directory: something is there that cannot be read. That is no absence, so it
/// is not skipped, and the files recorded by the previous bundle are not reported as deleted either.
#[test]
fn a_caracal_home_that_cannot_be_read_fails_and_is_not_skipped() {
    let ws = Workspace::new();
    let home = ws.path().join("caracal-home");
    ws.write("caracal-home/compose.yml", "services:\n  sts:\n    image: caracal/sts:1.4.2\n");
    ws.write("caracal-home/caracal.env", "LOG_LEVEL=info\n");
    let first = run(ws.preserve().args(["snapshot", "-q", "-c", "compose-config"]).env("CARACAL_HOME", &home));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let earlier = ws.only_bundle();

    std::fs::remove_dir_all(&home).unwrap();
    std::fs::write(&home, "not a directory").unwrap();
    let out = run(ws.preserve().args(["snapshot", "-q", "-c", "compose-config"]).env("CARACAL_HOME", &home));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let newest = ws.bundles().into_iter().find(|b| *b != earlier).unwrap();
    let m = manifest(&std::path::PathBuf::from(newest.to_string_lossy().replace(".tar.zst", ".manifest.json")));
    let c = collector(&m, "compose-config");
    assert_eq!(c["status"], "failed", "{c}");
    assert!(error(c).contains(&format!("cannot look in `{}/compose.yml`", home.display())), "{c}");
    // What cannot be looked into is not known to be gone: no diff says the files were deleted.
    assert!(c["artifacts"].as_array().unwrap().is_empty(), "{c}");
    assert!(findings(&m, "compose-config", "config.changed").is_empty(), "{}", m["findings"]);
}

/// STS is down on every instance: every request refused. Nothing was collected, so the collector failed.
#[test]
fn every_request_refused_is_failed_and_some_refused_is_partial() {
    let ws = Workspace::new();
    // Bound, then closed: nothing listens there.
    let dead = format!("http://127.0.0.1:{}", support::redis::free_port());
    let out = run(ws.preserve().args(["snapshot", "-q", "-c", "sts-http"]).env("PRESERVE_STS_URLS", &dead));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let m = ws.side_manifest();
    let sts = collector(&m, "sts-http");
    assert_eq!(sts["status"], "failed", "{sts}");
    assert!(error(sts).starts_with("every request failed: "), "{sts}");
    let requests = sts["details"]["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 5, "each request is still recorded with its error: {sts}");
    assert!(requests.iter().all(|r| r["error"].is_string()), "{sts}");

    // One instance answering (not ready, which is evidence too), one refusing: what was read is kept, the rest named.
    let alive =
        serve(axum::Router::new().fallback(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready") }));
    let ws = Workspace::new();
    let urls = format!("{alive},{dead}");
    let out = run(ws.preserve().args(["snapshot", "-q", "-c", "sts-http"]).env("PRESERVE_STS_URLS", &urls));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let m = ws.side_manifest();
    let sts = collector(&m, "sts-http");
    assert_eq!(sts["status"], "partial", "{sts}");
    let dead_authority = dead.trim_start_matches("http://");
    assert!(error(sts).contains(dead_authority) && !error(sts).starts_with("every request failed"), "{sts}");
}

/// `PRESERVE_REDIS_URL` points at some other team's Redis: reachable, readable, and holding no Caracal stream.
#[test]
fn a_redis_without_any_caracal_stream_is_a_finding_naming_it() {
    let ws = Workspace::new();
    let redis = RedisServer::start(&ws.path().join("redis"), &[]);
    redis.script("XADD orders.events * id 1\nXADD other.dlq * id 2\nSET caracal-ish 1\n");
    let out = run(ws
        .preserve()
        .args(["snapshot", "-q", "-c", "redis-streams", "-c", "redis-dlq"])
        .env("PRESERVE_REDIS_URL", redis.url()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m = ws.side_manifest();
    assert_eq!(collector(&m, "redis-streams")["status"], "ok");
    let f = findings(&m, "redis-streams", "redis.no_caracal_streams");
    assert_eq!(f.len(), 1, "{}", m["findings"]);
    assert_eq!(f[0]["severity"], "warning");
    let summary = f[0]["summary"].as_str().unwrap();
    assert!(summary.contains(&redis.url()), "which Redis: {summary}");
    assert!(summary.contains("no `caracal.*` stream") && summary.contains("is this Caracal's Redis?"), "{summary}");
    assert!(findings(&m, "redis-dlq", "redis.no_caracal_streams").is_empty(), "said once, by redis-streams");

    // Caracal's Redis, even with only a DLQ left (excluded from redis-streams): no such finding.
    redis.script("XADD caracal.audit.events.dlq * id 3\n");
    let ws = Workspace::new();
    let out = run(ws.preserve().args(["snapshot", "-q", "-c", "redis-streams"]).env("PRESERVE_REDIS_URL", redis.url()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m = ws.side_manifest();
    assert!(findings(&m, "redis-streams", "redis.no_caracal_streams").is_empty(), "{}", m["findings"]);
}

/// Not a Docker host (a Kubernetes node, a bastion): the Docker directory does not exist.
#[test]
fn an_absent_docker_directory_skips_the_log_collectors_with_the_reason() {
    let ws = Workspace::new();
    let docker = ws.path().join("no-docker-here").join("containers");
    let out = run(ws
        .preserve()
        .args(["snapshot", "-q", "-c", "sts-logs", "-c", "gateway-logs", "-c", "audit-logs"])
        .env("PRESERVE_DOCKER_DIR", &docker));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m = ws.side_manifest();
    assert_eq!(m["status"], "complete");
    for name in ["sts-logs", "gateway-logs", "audit-logs"] {
        let c = collector(&m, name);
        assert_eq!(c["status"], "skipped", "{c}");
        let why = error(c);
        assert!(why.contains("no Docker containers directory"), "{c}");
        assert!(why.contains(&format!("`{}` does not exist", ws.path().join("no-docker-here").display())), "{c}");
    }
}

/// A Docker directory that exists but is a file: something is there that cannot be read, so it is not skipped.
#[test]
fn a_docker_directory_that_cannot_be_read_fails_the_log_collectors() {
    let ws = Workspace::new();
    let docker = ws.write("docker-is-a-file", "x");
    let out = run(ws.preserve().args(["snapshot", "-q", "-c", "sts-logs"]).env("PRESERVE_DOCKER_DIR", &docker));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let m = ws.side_manifest();
    let c = collector(&m, "sts-logs");
    assert_eq!(c["status"], "failed", "{c}");
    assert!(error(c).contains("cannot read Docker containers directory"), "{c}");
}

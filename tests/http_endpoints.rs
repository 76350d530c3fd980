//! Every instance's `/ready`, `/metrics` and console endpoints, read with GET only: status, headers, body and timing
//! are kept even for a 503, bearer tokens and cookies never reach the bundle, and endpoints with side effects are
//! refused before anything runs. Small local HTTP servers stand in for two Gateway replicas.

mod support;

use std::time::Duration;

use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use support::*;

const TOKEN: &str = "metrics-canary-bearer-7f3a9c";

/// A Gateway replica: `/ready` failing with Caracal's reason, `/metrics` behind the bearer token, explain echoing its
/// ids, a cookie carrying a secret, and an endpoint that never answers.
fn gateway(replica: &'static str) -> Router {
    Router::new()
        .route(
            "/ready",
            get(move || async move {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::SET_COOKIE, "session=cookie-canary-55d1; HttpOnly")],
                    format!("{{\"ok\":false,\"ready\":false,\"reason\":\"revocation_snapshot_stale\",\"replica\":\"{replica}\"}}"),
                )
            }),
        )
        .route(
            "/metrics",
            get(move |h: HeaderMap| async move {
                if h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
                    return (StatusCode::UNAUTHORIZED, "missing bearer".to_string()).into_response();
                }
                format!("# HELP caracal_gateway_revocation_snapshot_age_seconds age\ncaracal_gateway_revocation_snapshot_age_seconds{{replica=\"{replica}\"}} 412\n").into_response()
            }),
        )
        .route(
            "/v1/zones/{zone}/audit/by-request/{request}/explain",
            get(|Path((zone, request)): Path<(String, String)>| async move {
                format!("{{\"zone_id\":\"{zone}\",\"request_id\":\"{request}\",\"final_decision\":\"allow\",\"session_id\":\"sess_visible_01\"}}\n")
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }),
        )
}

/// Serves `router` on a free local port from a background thread; returns the base URL.
fn serve(router: Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, router).await.unwrap();
        });
    });
    format!("http://{addr}")
}

#[test]
fn every_instance_is_read_with_status_headers_body_and_no_secret() {
    let ws = Workspace::new();
    let (a, b) = (serve(gateway("gw-0")), serve(gateway("gw-1")));
    let dir = collectors_dir(
        &ws,
        "h.toml",
        &format!(
            "[[collector]]\nname = \"gw\"\nkind = \"http\"\nurls = [\"{a}\", \"{b}\"]\nbearer = \"env:TEST_METRICS_BEARER\"\n\
             request_timeout = \"1s\"\nrequests = [\n  {{ name = \"ready\", path = \"/ready\", auth = false }},\n  {{ name = \"metrics\", path = \"/metrics\" }},\n  \
             {{ name = \"explain\", path = \"/v1/zones/{{zone_id}}/audit/by-request/{{request_id}}/explain\" }},\n  \
             {{ name = \"missing\", path = \"/v1/zones/{{zone_id}}/sessions/{{agent_session_id}}\" }},\n  {{ name = \"slow\", path = \"/slow\" }},\n]\n"
        ),
    );
    let alert = ws.write(
        "alert.json",
        r#"{"status":"firing","labels":{"alertname":"CaracalGatewayRevocationSnapshotStale","zone_id":"z-7","request_id":"req-42"},"annotations":{},"startsAt":"2026-11-29T06:00:00Z"}"#,
    );
    let out = run(ws.snapshot(&dir).args(["-c", "gw", "--alert"]).arg(&alert).env("TEST_METRICS_BEARER", TOKEN));
    assert_eq!(out.status.code(), Some(3), "the endpoint that never answers makes the collector partial");
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let c = collector(&m, "gw");
    assert_eq!(c["status"], "partial", "{c}");
    assert!(c["error"].as_str().unwrap().contains("slow"), "{c}");

    for (base, replica) in [(&a, "gw-0"), (&b, "gw-1")] {
        let inst = base.trim_start_matches("http://").replace(':', "_");
        let folder = bag.join(format!("data/gw/{inst}"));
        let ready: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join("ready.response.json")).unwrap()).unwrap();
        assert_eq!(ready["status"], 503, "a failing /ready is evidence: {ready}");
        assert!(ready["elapsed_ms"].is_u64());
        assert_eq!(ready["headers"]["set-cookie"], marker(&m, "session=cookie-canary-55d1; HttpOnly"));
        let body = std::fs::read_to_string(folder.join("ready.body")).unwrap();
        assert!(body.contains("revocation_snapshot_stale") && body.contains(replica), "each instance separately");
        let metrics = std::fs::read_to_string(folder.join("metrics.body")).unwrap();
        assert!(metrics.contains("caracal_gateway_revocation_snapshot_age_seconds"), "the bearer was sent: {metrics}");
        let explain = std::fs::read_to_string(folder.join("explain.body")).unwrap();
        assert!(explain.contains("\"zone_id\":\"z-7\"") && explain.contains("req-42"), "labels fill the path");
        assert!(explain.contains("sess_visible_01"), "evidence ids stay visible");
        assert!(!folder.join("missing.body").exists());
    }
    let alerts = std::fs::read_to_string(bag.join("data/context/alerts.json")).unwrap();
    assert!(alerts.contains("CaracalGatewayRevocationSnapshotStale") && alerts.contains("req-42"), "{alerts}");
    let skipped = c["details"]["requests"].as_array().unwrap().iter().find(|r| r["name"] == "missing").unwrap();
    assert!(skipped["skipped"].as_str().unwrap().contains("agent_session_id"), "{skipped}");
    let slow = c["details"]["requests"].as_array().unwrap().iter().find(|r| r["name"] == "slow").unwrap();
    assert!(slow["error"].as_str().unwrap().contains("timed out"), "{slow}");

    // Nothing of the token or the cookie anywhere: bag, side files, output.
    let everything = [bag.to_string_lossy().into_owned()];
    let grep = std::process::Command::new("grep")
        .args(["-r", "-l", "-e", TOKEN, "-e", "cookie-canary-55d1"])
        .args(&everything)
        .arg(ws.out())
        .output()
        .unwrap();
    assert!(grep.stdout.is_empty(), "leaked into {}", String::from_utf8_lossy(&grep.stdout));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(TOKEN) && !String::from_utf8_lossy(&out.stderr).contains(TOKEN)
    );
}

#[test]
fn endpoints_with_side_effects_and_other_methods_are_config_errors() {
    for (request, says) in [
        ("{ name = \"reveal\", path = \"/v1/zones/z1/applications/app-1/client-secret\" }", "client-secret is refused"),
        ("{ name = \"replay\", path = \"/api/audit/dlq/replay\" }", "replays the audit DLQ"),
        ("{ name = \"reload\", path = \"/internal/revocations/reload\" }", "revocation snapshot"),
        ("{ name = \"post\", path = \"/ready\", method = \"POST\" }", "only GET"),
    ] {
        let ws = Workspace::new();
        let dir = collectors_dir(
            &ws,
            "bad.toml",
            &format!("[[collector]]\nname = \"bad\"\nkind = \"http\"\nservice = \"api\"\nrequests = [{request}]\n"),
        );
        let out = run(ws.snapshot(&dir).args(["-c", "context"]));
        assert_eq!(out.status.code(), Some(2), "{request}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.toml") && err.contains(says), "{err}");
        assert!(!ws.out().exists() || std::fs::read_dir(ws.out()).unwrap().next().is_none(), "nothing written");
    }
}

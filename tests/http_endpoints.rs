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

/// Runs `accept` on a listener bound to a free local port, in a background thread with its own runtime; returns
/// the port's address.
fn on_free_port<F: std::future::Future<Output = ()> + 'static>(
    accept: impl FnOnce(tokio::net::TcpListener) -> F + Send + 'static,
) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move { accept(tokio::net::TcpListener::from_std(listener).unwrap()).await });
    });
    addr
}

/// Serves `router` on a free local port; returns the base URL.
fn serve(router: Router) -> String {
    let addr = on_free_port(|listener| async move { axum::serve(listener, router).await.unwrap() });
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

/// Serves `router` over TLS with the PEM certificate and key on a free local port; returns the base URL.
fn serve_tls(router: Router, cert: &str, key: &str) -> String {
    let acceptor = tls_acceptor(cert, key);
    let addr = on_free_port(|listener| serve_tls_on(listener, acceptor, router));
    format!("https://{addr}")
}

#[test]
fn https_instances_are_trusted_through_the_sites_own_ca_and_only_through_it() {
    let ws = Workspace::new();
    // Caracal behind TLS with the site's own CA: the certificate names the address preserve connects to.
    let (ca, cert, key) = certificates(&["127.0.0.1"]);
    let url = serve_tls(gateway("gw-tls"), &cert, &key);
    let ca_file = ws.write("site-ca.pem", &ca);
    let not_a_ca = ws.write("not-a-ca.pem", "just text\n");
    let collector_with = |name: &str, ca: Option<&std::path::Path>| {
        let ca = ca.map(|p| format!("ca_file = \"{}\"\n", p.display())).unwrap_or_default();
        format!(
            "[[collector]]\nname = \"{name}\"\nkind = \"http\"\nurls = [\"{url}\"]\n{ca}bearer = \"env:TEST_METRICS_BEARER\"\n\
             requests = [\n  {{ name = \"ready\", path = \"/ready\", auth = false }},\n  {{ name = \"metrics\", path = \"/metrics\" }},\n]\n\n"
        )
    };
    let dir = collectors_dir(
        &ws,
        "tls.toml",
        &(collector_with("with-ca", Some(&ca_file))
            + &collector_with("system-roots", None)
            + &collector_with("bad-ca", Some(&not_a_ca))),
    );
    let out = run(ws
        .snapshot(&dir)
        .args(["-c", "with-ca", "-c", "system-roots", "-c", "bad-ca"])
        .env("TEST_METRICS_BEARER", TOKEN));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);

    let trusted = collector(&m, "with-ca");
    assert_eq!(trusted["status"], "ok", "{trusted}");
    let folder = bag.join(format!("data/with-ca/{}", url.trim_start_matches("https://").replace(':', "_")));
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("ready.response.json")).unwrap()).unwrap();
    assert_eq!(ready["status"], 503, "{ready}");
    assert!(
        std::fs::read_to_string(folder.join("metrics.body")).unwrap().contains("gw-tls"),
        "the bearer went over TLS"
    );

    // Without the site's CA the certificate is not trusted: each request says so, nothing is read: failed.
    let untrusted = collector(&m, "system-roots");
    assert_eq!(untrusted["status"], "failed", "{untrusted}");
    assert!(untrusted["error"].as_str().unwrap().starts_with("every request failed: "), "{untrusted}");
    for r in untrusted["details"]["requests"].as_array().unwrap() {
        let e = r["error"].as_str().unwrap_or_default().to_ascii_lowercase();
        assert!(e.contains("certificate") || e.contains("issuer"), "{r}");
        assert!(r.get("status").is_none_or(|s| s.is_null()), "{r}");
    }
    let bad = collector(&m, "bad-ca");
    assert_eq!(bad["status"], "failed", "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("no certificate in it"), "{bad}");
}

#[test]
fn endpoints_with_side_effects_and_other_methods_are_config_errors() {
    for (request, says) in [
        ("{ name = \"reveal\", path = \"/v1/zones/z1/applications/app-1/client-secret\" }", "client-secret is refused"),
        ("{ name = \"replay\", path = \"/api/audit/dlq/replay\" }", "replays the audit DLQ"),
        ("{ name = \"reload\", path = \"/internal/revocations/reload\" }", "revocation snapshot"),
        ("{ name = \"post\", path = \"/ready\", method = \"POST\" }", "only GET"),
        // Dot segments and escapes that hide them, or hide a refused endpoint, from a check of the path as written.
        (
            "{ name = \"up\", path = \"/v1/zones/z1/../../admin-audit\" }",
            "request `up`: path `/v1/zones/z1/../../admin-audit` holds a dot segment",
        ),
        (
            "{ name = \"here\", path = \"/v1/./audit-retention\" }",
            "request `here`: path `/v1/./audit-retention` holds a dot segment",
        ),
        (
            "{ name = \"enc\", path = \"/v1/zones/%2E%2e/admin-audit\" }",
            "request `enc`: path `/v1/zones/%2E%2e/admin-audit` holds the escape `%2e`",
        ),
        (
            "{ name = \"hid\", path = \"/api/audit/dlq%2freplay\" }",
            "request `hid`: path `/api/audit/dlq%2freplay` holds the escape `%2f`",
        ),
        ("{ name = \"esc\", path = \"/api/audit/dlq/%72eplay\" }", "replays the audit DLQ"),
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
        assert!(err.contains("bad.toml") && err.contains("collector `bad`") && err.contains(says), "{err}");
        assert!(!ws.out().exists() || std::fs::read_dir(ws.out()).unwrap().next().is_none(), "nothing written");
    }
}

/// A stand-in that answers every path and records each it receives (path and query, as the server sees them).
fn recorder() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let router = Router::new().fallback(move |uri: axum::http::Uri| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(uri.path_and_query().map_or_else(|| uri.path().to_string(), |p| p.to_string()));
            "{}"
        }
    });
    (serve(router), seen)
}

/// The review's attack: an alert whose labels come from request data (`zone_id=".."`) turned the console
/// collector's admin-token requests into `/v1/admin-audit`, `/v1/policy-sets`, `/v1/audit/explain`, and a label
/// `replay` filled `/api/audit/dlq/{view}` into the endpoint that replays (and so destroys) the DLQ.
#[test]
fn alert_labels_cannot_steer_the_admin_bearer_to_another_endpoint() {
    let (base, seen) = recorder();
    let collectors = format!(
        "[[collector]]\nname = \"console\"\nkind = \"http\"\nurls = [\"{base}\"]\nbearer = \"env:TEST_ADMIN_BEARER\"\nrequests = [\n  \
         {{ name = \"explain\", path = \"/v1/zones/{{zone_id}}/audit/by-request/{{request_id}}/explain\" }},\n  \
         {{ name = \"admin_audit\", path = \"/v1/zones/{{zone_id}}/admin-audit?limit=1000\" }},\n  \
         {{ name = \"policy_sets\", path = \"/v1/zones/{{zone_id}}/policy-sets\" }},\n  \
         {{ name = \"dlq_view\", path = \"/api/audit/dlq/{{view}}\" }},\n  \
         {{ name = \"retention\", path = \"/v1/audit-retention\" }},\n]\n"
    );
    let snapshot = |zone: &str, request: &str, view: &str| {
        seen.lock().unwrap().clear();
        let ws = Workspace::new();
        let dir = collectors_dir(&ws, "c.toml", &collectors);
        let alert = serde_json::json!({ "labels": { "alertname": "CaracalAuditTamperDetected", "zone_id": zone,
                                                   "request_id": request, "view": view } });
        let alert = ws.write("alert.json", alert.to_string());
        let out = run(ws.snapshot(&dir).args(["-c", "console", "--alert"]).arg(&alert).env("TEST_ADMIN_BEARER", TOKEN));
        let m = ws.side_manifest();
        let c = collector(&m, "console").clone();
        let skipped = |name: &str| {
            let r = c["details"]["requests"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap();
            r["skipped"].as_str().unwrap_or_default().to_string()
        };
        let reasons: Vec<String> = ["explain", "admin_audit", "policy_sets", "dlq_view"].map(skipped).to_vec();
        (out.status.code(), seen.lock().unwrap().clone(), reasons, c)
    };

    // An honest alert: each request goes where its template says, the recorder sees them all.
    let (code, paths, reasons, _) = snapshot("zone-alpha", "req-1", "entries");
    assert_eq!(code, Some(0));
    assert!(reasons.iter().all(String::is_empty), "{reasons:?}");
    let mut paths = paths;
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/audit/dlq/entries",
            "/v1/audit-retention",
            "/v1/zones/zone-alpha/admin-audit?limit=1000",
            "/v1/zones/zone-alpha/audit/by-request/req-1/explain",
            "/v1/zones/zone-alpha/policy-sets",
        ]
    );

    // Hostile labels: dot segments as written and encoded, and a label that completes a refused endpoint.
    for zone in ["..", "%2e%2e", ".", "%2E"] {
        let (code, paths, reasons, c) = snapshot(zone, "..", "replay");
        assert_eq!(paths, ["/v1/audit-retention"], "zone_id={zone:?}: only the request without labels was sent");
        assert_eq!(code, Some(3), "refused requests make the collector partial");
        assert_eq!(c["status"], "partial", "{c}");
        for r in &reasons[..3] {
            assert!(r.contains("not sent: the alert label `zone_id`") && r.contains("dot segment"), "{zone:?}: {r}");
        }
        assert!(
            reasons[3].contains("/api/audit/dlq/replay is refused") && reasons[3].contains("replays the audit DLQ")
        );
    }
}

#[test]
fn an_alert_label_holding_nul_is_refused_naming_the_label() {
    let ws = Workspace::new();
    let dir = collectors_dir(&ws, "none.toml", "");
    let alert = ws.write(
        "alert.json",
        r#"{"version":"4","alerts":[{"labels":{"alertname":"CaracalAuditTamperDetected","zone_id":"zone-alpha\u0000' OR true"}}]}"#,
    );
    let out = run(ws.snapshot(&dir).args(["-c", "context", "--alert"]).arg(&alert));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("alert.json") && err.contains("alert label `zone_id` holds a NUL"), "{err}");
    assert!(ws.bundles().is_empty(), "nothing collected");
}

#[test]
fn collector_urls_with_credentials_are_config_errors_that_never_show_the_password() {
    const PASSWORD: &str = "pw-canary-4e1b";
    for url in [
        format!("http://preserve:{PASSWORD}@127.0.0.1:9/"),
        format!("https://ops:{PASSWORD}/x@y@127.0.0.1:9/api"),
        format!("http://127.0.0.1:9/?password={PASSWORD}"),
        "http://preserve@127.0.0.1:9/".to_string(),
    ] {
        let ws = Workspace::new();
        let dir = collectors_dir(
            &ws,
            "creds.toml",
            &format!(
                "[[collector]]\nname = \"creds\"\nkind = \"http\"\nurls = [\"{url}\"]\nrequests = [{{ name = \"ready\", path = \"/ready\" }}]\n"
            ),
        );
        let out = run(ws.snapshot(&dir).args(["-c", "creds"]));
        assert_eq!(out.status.code(), Some(2), "{url}");
        let err = stderr(&out);
        assert!(
            err.contains("creds.toml") && err.contains("collector `creds`: urls:") && err.contains("credentials"),
            "{err}"
        );
        assert!(!err.contains(PASSWORD) && !stdout(&out).contains(PASSWORD), "{err}");
        assert!(!err.contains("preserve@") && !err.contains("ops:"), "no user name either: {err}");
        assert!(ws.bundles().is_empty());
    }
}

//! Small HTTP servers standing in for Caracal's services (caracal.md §4) and the operator's Alertmanager: the
//! endpoints preserve reads, with plausible bodies and Caracal's bearer checks (`METRICS_BEARER` on metrics, the
//! admin token on the API, `AUDIT_ADMIN_TOKEN` on the Audit admin API, the Coordinator token on `/stats`). A request
//! without the right token gets 401, so a bundle holding the body proves the token was sent.

use axum::{
    Json, Router,
    extract::{Path, Query},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use std::collections::HashMap;

/// The tokens the stand-ins check.
#[derive(Clone)]
pub struct Tokens {
    pub metrics: String,
    pub admin: String,
    pub audit_admin: String,
    pub coordinator: String,
}

/// The incident the stand-ins describe, shared with the database and Redis fixtures.
pub const ZONE: &str = "zone-alpha";
pub const INCIDENT_REQUEST: &str = "req-incident-7f3a";
/// Credentials preserve is never told of, leaked where services leak them: a bearer token the STS and the Gateway
/// both log and the console echoes, and a password in a webhook URL of a response. Redaction rules must catch them.
pub const CANARY_BEARER: &str = "canary-bearer-3f9a7c2e1d5b";
pub const CANARY_URL_PASSWORD: &str = "canary-hook-pw-81f4";

fn bearer_ok(h: &HeaderMap, token: &str) -> bool {
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}"))
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({ "error": "unauthorized" }))).into_response()
}

/// `body` behind `token`.
fn guarded(h: &HeaderMap, token: &str, body: impl IntoResponse) -> Response {
    if bearer_ok(h, token) { body.into_response() } else { unauthorized() }
}

fn prometheus(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn health() -> Router {
    Router::new().route("/health", get(|| async { Json(json!({ "ok": true })) }))
}

/// STS: exchange metrics (OPA policy age, audit replay), ready with its reason, JWKS.
pub fn sts(t: &Tokens, instance: &'static str) -> Router {
    let (m1, m2) = (t.metrics.clone(), t.metrics.clone());
    health()
        .route(
            "/metrics",
            get(move |h: HeaderMap| async move {
                guarded(&h, &m1, prometheus(format!(
                    "# TYPE caracal_sts_opa_max_policy_age_seconds gauge\ncaracal_sts_opa_max_policy_age_seconds{{instance=\"{instance}\"}} 2710\n\
                     # TYPE caracal_sts_gateway_exchange_total counter\ncaracal_sts_gateway_exchange_total{{result=\"nonce_replay\"}} 14\n\
                     caracal_sts_gateway_exchange_total{{result=\"ok\"}} 20311\n\
                     # TYPE caracal_sts_audit_replay_files gauge\ncaracal_sts_audit_replay_files 1\n"
                )))
            }),
        )
        .route(
            "/metrics.json",
            get(move |h: HeaderMap| async move {
                guarded(&h, &m2, Json(json!({ "instance": instance, "opa_max_policy_age_seconds": 2710, "audit_replay_files": 1 })))
            }),
        )
        .route(
            "/ready",
            get(move || async move {
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "reason": "redis_nonce_store_degraded", "instance": instance })))
            }),
        )
        .route(
            "/.well-known/jwks.json",
            get(|| async {
                Json(json!({ "keys": [{ "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "zone-alpha-2026-11",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" }] }))
            }),
        )
}

/// A Gateway replica: revocation snapshot stale, STS circuit open; each instance says which it is.
pub fn gateway(t: &Tokens, instance: &'static str) -> Router {
    let (m1, m2) = (t.metrics.clone(), t.metrics.clone());
    health()
        .route(
            "/metrics",
            get(move |h: HeaderMap| async move {
                guarded(&h, &m1, prometheus(format!(
                    "# TYPE caracal_gateway_revocation_snapshot_fresh gauge\ncaracal_gateway_revocation_snapshot_fresh{{instance=\"{instance}\"}} 0\n\
                     # TYPE caracal_gateway_revocation_snapshot_age_seconds gauge\ncaracal_gateway_revocation_snapshot_age_seconds{{instance=\"{instance}\"}} 412\n\
                     # TYPE caracal_gateway_revocation_propagation_seconds gauge\ncaracal_gateway_revocation_propagation_seconds 388\n\
                     # TYPE caracal_gateway_revocation_reload_errors_total counter\ncaracal_gateway_revocation_reload_errors_total 13\n\
                     # TYPE caracal_gateway_revocations_active gauge\ncaracal_gateway_revocations_active 2\n\
                     # TYPE caracal_gateway_sts_circuit_state gauge\ncaracal_gateway_sts_circuit_state{{state=\"open\"}} 1\n\
                     # TYPE caracal_gateway_sts_exchange_errors_total counter\ncaracal_gateway_sts_exchange_errors_total{{reason=\"nonce_replay\"}} 14\n\
                     # TYPE caracal_gateway_sts_exchange_latency_ms histogram\ncaracal_gateway_sts_exchange_latency_ms_sum 90211\ncaracal_gateway_sts_exchange_latency_ms_count 20325\n"
                )))
            }),
        )
        .route(
            "/metrics.json",
            get(move |h: HeaderMap| async move {
                guarded(&h, &m2, Json(json!({ "instance": instance, "revocation_snapshot_age_seconds": 412, "sts_circuit": "open" })))
            }),
        )
        .route(
            "/ready",
            get(move || async move {
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "reason": "revocation_snapshot_stale", "instance": instance })))
            }),
        )
}

/// Audit: tamper and DLQ counters, and the admin API (DLQ view, raw search) behind `AUDIT_ADMIN_TOKEN`.
pub fn audit(t: &Tokens, instance: &'static str, dlq_ids: Vec<String>) -> Router {
    let (m1, m2, a1, a2) = (t.metrics.clone(), t.metrics.clone(), t.audit_admin.clone(), t.audit_admin.clone());
    health()
        .route(
            "/metrics",
            get(move |h: HeaderMap| async move {
                guarded(&h, &m1, prometheus(format!(
                    "# TYPE caracal_audit_tamper_mismatch_total counter\ncaracal_audit_tamper_mismatch_total{{instance=\"{instance}\"}} 1\n\
                     # TYPE caracal_audit_tamper_chain_breaks_total counter\ncaracal_audit_tamper_chain_breaks_total 0\n\
                     # TYPE caracal_audit_tamper_hmac_failures_total counter\ncaracal_audit_tamper_hmac_failures_total 1\n\
                     # TYPE caracal_audit_tamper_replay_total counter\ncaracal_audit_tamper_replay_total 1\n\
                     # TYPE caracal_audit_dlq_size gauge\ncaracal_audit_dlq_size 4\n\
                     # TYPE caracal_audit_consumer_lag gauge\ncaracal_audit_consumer_lag 5\n"
                )))
            }),
        )
        .route(
            "/metrics.json",
            get(move |h: HeaderMap| async move {
                guarded(&h, &m2, Json(json!({ "instance": instance, "tamper_mismatch_total": 1, "dlq_size": 4 })))
            }),
        )
        .route("/ready", get(move || async move { Json(json!({ "ready": true, "instance": instance })) }))
        .route(
            "/api/audit/dlq",
            get(move |h: HeaderMap| {
                let ids = dlq_ids.clone();
                async move {
                    let entries: Vec<_> = ids
                        .iter()
                        .zip(["hmac_verify_failed", "json_parse_error:unexpected EOF", "transient_exceeded_max_deliveries:deadlock detected", "tamper_on_replay"])
                        .map(|(id, reason)| json!({ "id": id, "reason": reason, "replayable": reason.starts_with("transient"), "zone_id": ZONE }))
                        .collect();
                    guarded(&h, &a1, Json(json!({ "entries": entries, "next_cursor": null })))
                }
            }),
        )
        .route(
            "/api/audit/search",
            get(move |h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                // The raw rows of the ledger the stand-in knows: the incident's, and one unrelated request.
                let rows = [
                    ("evt-alpha-0041", INCIDENT_REQUEST, 41),
                    ("evt-alpha-0042", INCIDENT_REQUEST, 42),
                    ("evt-alpha-0040", "req-alpha-0040", 40),
                ];
                let events: Vec<_> = rows
                    .iter()
                    .filter(|(_, rid, _)| q.get("request_id").is_none_or(|want| want == rid))
                    .filter(|_| q.get("zone_id").is_some_and(|z| z == ZONE))
                    .map(|(id, rid, seq)| json!({ "Event": { "id": id, "zone_id": ZONE, "request_id": rid, "decision": "allow" }, "ChainSeq": seq }))
                    .collect();
                guarded(&h, &a2, Json(json!({ "events": events, "next_cursor": null })))
            }),
        )
}

/// API: metrics, readiness, and the console endpoints preserve reads, behind the admin token.
pub fn api(t: &Tokens) -> Router {
    let m = t.metrics.clone();
    let admin = t.admin.clone();
    let a = move || admin.clone();
    let (a1, a2, a3, a4, a5, a6) = (a(), a(), a(), a(), a(), a());
    health()
        .route(
            "/metrics",
            get(move |h: HeaderMap| async move {
                guarded(&h, &m, prometheus("# TYPE caracal_api_outbox_dead gauge\ncaracal_api_outbox_dead 1\n".into()))
            }),
        )
        .route("/ready", get(|| async { Json(json!({ "ready": true })) }))
        .route(
            "/v1/zones/{zone}/audit/by-request/{request}/explain",
            get(move |h: HeaderMap, Path((zone, request)): Path<(String, String)>| async move {
                if request != INCIDENT_REQUEST {
                    return guarded(&h, &a1, (StatusCode::NOT_FOUND, Json(json!({ "error": "not_found" }))));
                }
                guarded(&h, &a1, Json(json!({
                    "request_id": request, "zone_id": zone, "final_decision": "allow", "denied": [],
                    "events": [{ "event_id": "evt-alpha-0041", "decision": "allow", "policy_set_version_id": "psv-main-2",
                                 "determining_policies": ["pv-allow-2"], "policy_input": { "scope": "billing:export",
                                 "headers": { "authorization": format!("Bearer {CANARY_BEARER}") } } }],
                    "notify": format!("https://preserve:{CANARY_URL_PASSWORD}@hooks.example/caracal"),
                    "session_id": "ar-revoked-01"
                })))
            }),
        )
        .route(
            "/v1/zones/{zone}/audit/by-request/{request}",
            get(move |h: HeaderMap, Path((zone, request)): Path<(String, String)>| async move {
                let items = if request == INCIDENT_REQUEST { vec!["evt-alpha-0041", "evt-alpha-0042"] } else { vec![] };
                guarded(&h, &a2, Json(json!({ "zone_id": zone, "request_id": request, "items": items })))
            }),
        )
        .route(
            "/v1/zones/{zone}/admin-audit",
            get(move |h: HeaderMap| async move {
                guarded(&h, &a3, Json(json!({ "items": [{ "id": "adm-alpha-2", "path": "/v1/zones/zone-alpha/policy-sets/ps-main/activate", "chain_seq": 2, "signed": true }], "next_cursor": null })))
            }),
        )
        .route(
            "/v1/zones/{zone}/policy-sets",
            get(move |h: HeaderMap| async move {
                guarded(&h, &a4, Json(json!({ "items": [{ "id": "ps-main", "name": "main", "active_version_id": "psv-main-2" }] })))
            }),
        )
        .route(
            "/v1/zones/{zone}/policy-sets/{set}/activation-status",
            get(move |h: HeaderMap, Path((_zone, set)): Path<(String, String)>| async move {
                guarded(&h, &a5, Json(json!({ "policy_set_id": set, "active_version_id": "psv-main-2",
                    "outbox": { "id": "ob-policy-01", "state": "dispatched" }, "sts": { "loaded_version_id": "psv-main-2", "age_seconds": 2650 } })))
            }),
        )
        .route(
            "/v1/audit-retention",
            get(move |h: HeaderMap| async move { guarded(&h, &a6, Json(json!({ "retention_days": 365, "updated_by": "admin-oncall" }))) }),
        )
}

/// Coordinator: `/stats` behind its token.
pub fn coordinator(t: &Tokens) -> Router {
    let c = t.coordinator.clone();
    health()
        .route(
            "/stats",
            get(move |h: HeaderMap| async move {
                guarded(&h, &c, Json(json!({ "outbox": { "pending": 0, "dead": 1 }, "invocations": { "running": 3 }, "outbox_rows_dead": 1 })))
            }),
        )
        .route("/ready", get(|| async { Json(json!({ "ready": true })) }))
}

pub fn web() -> Router {
    health().route("/version", get(|| async { Json(json!({ "version": "1.0.0", "commit": "4be1c0d" })) }))
}

/// The operator's Alertmanager, with the alerts that fired.
pub fn alertmanager(alerts: serde_json::Value) -> Router {
    Router::new()
        .route("/api/v2/alerts", get(move || async move { Json(alerts.clone()) }))
        .route("/api/v2/silences", get(|| async { Json(json!([])) }))
        .route(
            "/api/v2/status",
            get(|| async { Json(json!({ "cluster": { "status": "ready" }, "versionInfo": { "version": "0.27.0" } })) }),
        )
}

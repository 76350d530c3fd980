//! The sidecar's HTTP interface: the Alertmanager webhook (bearer token, JSON, size limit, version 4) and the
//! endpoints for probes, Prometheus and people. The webhook only routes alerts; it never waits for a snapshot.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::scheduler::Scheduler;
use crate::{alert::WebhookPayload, config::Secret};

/// How much of an oversize body is read (and thrown away) before answering 413; past it the connection is closed.
const DRAIN_LIMIT: usize = 16 << 20;

/// Seconds Alertmanager (or anyone) is asked to wait before retrying a refused webhook.
const RETRY_AFTER_SECONDS: u32 = 30;

#[derive(Clone)]
struct App {
    scheduler: Arc<Scheduler>,
    /// SHA-256 of the expected token: comparing digests in constant time hides the token's length as well.
    token_digest: [u8; 32],
    body_limit: usize,
    /// Deadline for a whole request body, from the moment its headers are in.
    body_timeout: std::time::Duration,
}

pub fn router(scheduler: Arc<Scheduler>, token: &Secret) -> Router {
    let app = App {
        body_limit: usize::try_from(scheduler.env.serve.body_limit).unwrap_or(usize::MAX),
        body_timeout: scheduler.env.serve.body_timeout,
        token_digest: Sha256::digest(token.expose_secret().as_bytes()).into(),
        scheduler,
    };
    Router::new()
        .route("/alertmanager", post(alertmanager))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/snapshots", get(snapshots))
        .with_state(app)
}

fn refuse(app: &App, code: StatusCode, reason: impl Into<String>) -> Response {
    app.scheduler.metrics.webhook(code.as_u16());
    let mut r = (code, Json(serde_json::json!({ "error": reason.into() }))).into_response();
    if code == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some((scheme, token)) = value.split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    digest.ct_eq(&app.token_digest).into()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"))
}

/// Checks in the order a caller can fix them: who you are (401), what you send (415, 413), what it says (400).
async fn alertmanager(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // A refused body is still read to its end (discarded, bounded in size and by serve.body_timeout), so the
    // client gets the answer, not a reset.
    if !authorized(&app, &parts.headers) {
        let late = matches!(read_before_deadline(&app, body, 0).await, Err(BodyError::Late(_)));
        let r = refuse(&app, StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        return if late { closing(r) } else { r };
    }
    if !is_json(&parts.headers) {
        let late = matches!(read_before_deadline(&app, body, 0).await, Err(BodyError::Late(_)));
        let r = refuse(&app, StatusCode::UNSUPPORTED_MEDIA_TYPE, "the body must be application/json");
        return if late { closing(r) } else { r };
    }
    let too_large = || format!("the body is larger than the limit of {} bytes (serve.body_limit)", app.body_limit);
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return refuse(&app, StatusCode::PAYLOAD_TOO_LARGE, too_large());
    }
    let bytes = match read_before_deadline(&app, body, app.body_limit).await {
        Ok(Some(b)) => b,
        Ok(None) => return refuse(&app, StatusCode::PAYLOAD_TOO_LARGE, too_large()),
        Err(e @ BodyError::Late(_)) => {
            return closing(refuse(&app, StatusCode::REQUEST_TIMEOUT, e.to_string()));
        }
        Err(e) => return refuse(&app, StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")),
    };
    let payload = match parse(&bytes) {
        Ok(p) => p,
        Err(reason) => return refuse(&app, StatusCode::BAD_REQUEST, reason.to_string()),
    };
    let accepted = app.scheduler.accept(payload.alerts);
    let code = if accepted.refused.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::ACCEPTED };
    app.scheduler.metrics.webhook(code.as_u16());
    let mut body = serde_json::to_value(&accepted).unwrap_or_default();
    if let Some(why) = accepted.refused {
        body["error"] = why.into();
    }
    let mut r = (code, Json(body)).into_response();
    if accepted.refused.is_some() {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    r
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the body did not arrive within {0:?} (serve.body_timeout)")]
    Late(std::time::Duration),
    #[error(transparent)]
    Read(#[from] axum::Error),
}

/// [`read_limited`] within `serve.body_timeout`: a client dribbling its body a byte at a time holds a connection
/// (of `serve.max_connections`) only that long, whatever the size it announced.
async fn read_before_deadline(app: &App, body: Body, limit: usize) -> Result<Option<Vec<u8>>, BodyError> {
    match tokio::time::timeout(app.body_timeout, read_limited(body, limit)).await {
        Ok(read) => Ok(read?),
        Err(_) => Err(BodyError::Late(app.body_timeout)),
    }
}

/// The answer to a request whose body missed its deadline closes the connection: the rest is never read.
fn closing(mut r: Response) -> Response {
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Reads the body, keeping at most `limit` bytes; `None` when it is larger. An oversize body is still read to its
/// end (discarded, up to [`DRAIN_LIMIT`]) so that a client still sending it gets the 413, not a reset connection.
async fn read_limited(mut body: Body, limit: usize) -> Result<Option<Vec<u8>>, axum::Error> {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            kept.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT.max(limit) {
            break;
        } else {
            kept = Vec::new();
        }
    }
    Ok((seen <= limit).then_some(kept))
}

/// Why a webhook's body is refused (`400`, the text in its `error`).
#[derive(Debug, thiserror::Error)]
enum PayloadError {
    #[error("malformed JSON: {0}")]
    Malformed(serde_json::Error),
    /// The `version` as sent, JSON-encoded (`"3"`, `4`).
    #[error("webhook payload version {0}: preserve accepts Alertmanager webhook payloads of version \"4\"")]
    Version(serde_json::Value),
    #[error("not an Alertmanager webhook payload: no `version`")]
    NoVersion,
    #[error("not an Alertmanager webhook payload: {0}")]
    Shape(serde_json::Error),
    #[error("alerts[{0}] has no labels")]
    Unlabelled(usize),
}

/// An Alertmanager webhook payload of version 4, or the reason it is not one.
fn parse(bytes: &[u8]) -> Result<WebhookPayload, PayloadError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(PayloadError::Malformed)?;
    match value.get("version") {
        Some(serde_json::Value::String(v)) if v == "4" => {}
        Some(v) => return Err(PayloadError::Version(v.clone())),
        None => return Err(PayloadError::NoVersion),
    }
    let payload: WebhookPayload = serde_json::from_value(value).map_err(PayloadError::Shape)?;
    if let Some(i) = payload.alerts.iter().position(|a| a.labels.is_empty()) {
        return Err(PayloadError::Unlabelled(i));
    }
    Ok(payload)
}

async fn readyz(State(app): State<App>) -> Response {
    if !app.scheduler.accepting() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let out = app.scheduler.env.out_dir.clone();
    match tokio::task::spawn_blocking(move || writable(&out)).await {
        Ok(Ok(())) => {
            // Ready means snapshots can be written; what the check at start found of each collector is shown, not
            // counted: a sidecar that is taken out of service cannot take even the snapshots that would work.
            let preflight = app.scheduler.preflight.read().unwrap_or_else(|p| p.into_inner()).clone();
            let mut body = String::from("ready\n");
            if preflight.is_empty() {
                body.push_str("check: still running\n");
            }
            for line in preflight {
                body.push_str(&format!("check: {line}\n"));
            }
            body.into_response()
        }
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("output directory {} is not writable: {e}\n", app.scheduler.env.out_dir.display()),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("readiness check failed: {e}\n")).into_response(),
    }
}

/// Whether a file can be created in `out`, checked without a file at a name anyone could guess: whoever else may
/// write there could have planted a link at it, and root writing through that link truncates its target. An
/// unnamed file (`O_TMPFILE`) where the file system has them, else a random name created exclusively (`O_EXCL`
/// refuses an existing name, a link included) and removed.
fn writable(out: &std::path::Path) -> std::io::Result<()> {
    use nix::libc;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(out)?;
    let unnamed = std::fs::OpenOptions::new().write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(out);
    match unnamed {
        Ok(_) => return Ok(()),
        // Not supported by this file system (or, EISDIR, by a kernel that predates it).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {}
        Err(e) => return Err(e),
    }
    named_probe(out)
}

/// The probe where the file system has no unnamed files: a random name, created exclusively, never through a link.
fn named_probe(out: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = [0u8; 16];
    getrandom::fill(&mut name).map_err(|e| std::io::Error::other(format!("no random name for the probe file: {e}")))?;
    let probe = out.join(format!(".preserve-ready-{}", hex::encode(name)));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

async fn metrics(State(app): State<App>) -> Response {
    let text = app.scheduler.metrics.render();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn snapshots(State(app): State<App>) -> Response {
    Json(serde_json::json!({
        "queue_depth": app.scheduler.queue_depth(),
        "snapshots": app.scheduler.history(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_readiness_probes_leave_the_directory_as_they_found_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bundle"), b"kept").unwrap();
        super::writable(dir.path()).unwrap();
        super::named_probe(dir.path()).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["bundle"]);
        assert!(super::named_probe(&dir.path().join("missing")).is_err(), "a directory that is not there fails");
    }

    #[test]
    fn only_version_4_payloads_with_labelled_alerts_pass() {
        let refused = |body: &[u8]| super::parse(body).unwrap_err().to_string();
        assert!(super::parse(br#"{"version":"4","alerts":[{"labels":{"alertname":"X"}}]}"#).is_ok());
        assert!(refused(br#"{"version":"3","alerts":[]}"#).contains("version \"3\""));
        assert!(refused(br#"{"version":4,"alerts":[]}"#).contains("version 4"));
        assert!(refused(br#"{"alerts":[]}"#).contains("no `version`"));
        assert!(refused(b"{not json").starts_with("malformed JSON"));
        assert!(refused(br#"{"version":"4","alerts":[{"labels":{}}]}"#).contains("alerts[0]"));
        assert!(refused(br#"{"version":"4"}"#).contains("alerts"));
    }
}

//! The `http` source kind: read-only GETs against every instance of a service (`/ready`, `/metrics`, JWKS, the
//! Audit service's DLQ view, console explain ...). Status, headers, body and timing are recorded whatever the
//! status: a 503 from `/ready` is evidence. Endpoints that change state or reveal secrets are refused, even when
//! configured (caracal.md §4.3).

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    sync::{Arc, LazyLock},
    time::Instant,
};

use async_trait::async_trait;
use bytesize::ByteSize;
use futures::StreamExt;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{CollectError, Collection, Outcome, Redaction, Source};
use crate::{
    config::{CredentialRef, Environment},
    redact::Format,
};

/// Requests that change Caracal's state or reveal secrets: never sent, and a configuration error when asked for.
const REFUSED: &[(&str, &str)] = &[
    (r"/applications/[^/]+/client-secret", "reveals an application's client secret and emits credential_revealed"),
    (r"/workloads/[^/]+/secret", "reveals a workload secret and emits credential_revealed"),
    (r"/api/audit/dlq/replay", "replays the audit DLQ (destroys the evidence it holds)"),
    (r"/outbox/[^/]+/requeue", "requeues a Coordinator outbox row"),
    (r"/signing-key/rotate", "rotates an STS signing key"),
    (r"/internal/revocations/reload", "reloads the Gateway's revocation snapshot"),
    (r"/internal/policy/status", "needs a signed STS request; use the API's activation-status instead"),
];

/// Response headers whose values are credentials.
const SECRET_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"];

/// Settings of an `http` collector.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    /// Whose instances to ask: a service of the site's `[services]` (`sts`, `gateway`, `audit`, `api`,
    /// `coordinator`, `web`, and the operator's `alertmanager`; `PRESERVE_<SVC>_URLS`). Each instance is captured
    /// separately.
    pub service: Option<String>,
    /// Or base URLs given here.
    #[serde(default)]
    pub urls: Vec<String>,
    pub requests: Vec<RequestSpec>,
    /// Bearer token for requests with `auth = true` (the default when a token is set), as a credential reference
    /// (`env:NAME` or `file:PATH`, `${caracal_home}` allowed). A `file:` that does not exist means no token (a
    /// development install serves metrics openly): requests go without it, and the collector says so.
    pub bearer: Option<String>,
    /// Limit per request (default 10s; the collector's own `timeout` bounds them all).
    pub request_timeout: Option<SignedDuration>,
    /// A CA (PEM) to trust besides the Mozilla roots, for services with an internal CA.
    pub ca_file: Option<PathBuf>,
    /// Bodies beyond this are cut and marked truncated (default 64 MiB).
    pub max_body: Option<ByteSize>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// The artifact's name: `<instance>/<name>.body` and `<instance>/<name>.response.json`.
    pub name: String,
    /// Path and query, with `{label}` placeholders filled from the alert (`{zone_id}`, `{request_id}`); a request
    /// whose label is missing is skipped, and says so.
    pub path: String,
    /// Only `GET`.
    pub method: Option<String>,
    /// Send the collector's bearer token (default: when one is set).
    pub auth: Option<bool>,
}

impl HttpSource {
    fn bearer_ref(&self, env: &Environment) -> Result<Option<CredentialRef>, String> {
        let Some(b) = &self.bearer else { return Ok(None) };
        let expanded = env.expand(b).map_err(|e| format!("bearer: {e}"))?;
        expanded.parse().map(Some).map_err(|e| format!("bearer: {e}"))
    }

    fn bases(&self, env: &Environment) -> Vec<String> {
        let mut v = self.urls.clone();
        if let Some(s) = &self.service {
            v.extend(env.services.get(s).cloned().unwrap_or_default());
        }
        v
    }
}

/// Why a path may not be requested, if it may not.
pub fn refused(path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path).to_ascii_lowercase();
    static COMPILED: LazyLock<Vec<(regex::Regex, &'static str)>> =
        LazyLock::new(|| REFUSED.iter().map(|(re, why)| (regex::Regex::new(re).expect("valid regex"), *why)).collect());
    COMPILED.iter().find(|(re, _)| re.is_match(&path)).map(|(_, why)| *why)
}

/// What stays as it is in a path segment (RFC 3986 unreserved); everything else is percent-encoded.
const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `{label}` placeholders filled from the alert's labels, percent-encoded; `Err` names the first missing label.
fn fill(path: &str, labels: &BTreeMap<String, String>) -> Result<String, String> {
    static PLACEHOLDER: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"\{([A-Za-z_][A-Za-z0-9_]*)\}").expect("valid regex"));
    let mut missing = None;
    let out = PLACEHOLDER.replace_all(path, |c: &regex::Captures| match labels.get(&c[1]) {
        Some(v) => percent_encoding::utf8_percent_encode(v, UNRESERVED).to_string(),
        None => {
            missing.get_or_insert_with(|| c[1].to_string());
            String::new()
        }
    });
    match missing {
        Some(m) => Err(m),
        None => Ok(out.into_owned()),
    }
}

/// A folder name for an instance: `gateway-0_8081`.
fn instance_name(base: &str) -> String {
    let hostport = base.split("://").nth(1).unwrap_or(base).split('/').next().unwrap_or(base);
    hostport.chars().map(|c| if c.is_ascii_alphanumeric() || "-.".contains(c) { c } else { '_' }).collect()
}

#[async_trait]
impl Source for HttpSource {
    fn check(&self, env: &Environment) -> Result<(), String> {
        self.bearer_ref(env)?;
        if self.service.is_none() && self.urls.is_empty() {
            return Err("an http collector needs `service` or `urls`".into());
        }
        if let Some(s) = &self.service
            && !crate::config::SERVICES.iter().any(|(n, _)| n == s)
        {
            return Err(format!(
                "service `{s}`: expected one of sts, gateway, audit, api, coordinator, web, alertmanager"
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &self.requests {
            if let Some(m) = &r.method
                && !m.eq_ignore_ascii_case("GET")
            {
                return Err(format!("request `{}`: method {m}: only GET is ever sent to Caracal", r.name));
            }
            if let Some(why) = refused(&r.path) {
                return Err(format!("request `{}`: {} is refused: it {why}", r.name, r.path));
            }
            if !r.path.starts_with('/') {
                return Err(format!("request `{}`: path must start with `/`", r.name));
            }
            if !names.insert(&r.name) {
                return Err(format!("request `{}` appears twice", r.name));
            }
        }
        for u in &self.urls {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(format!("urls: `{u}` is not an http(s) URL"));
            }
        }
        Ok(())
    }

    fn credentials(&self, env: &Environment) -> Vec<(String, CredentialRef)> {
        self.bearer_ref(env).ok().flatten().map(|b| ("bearer".to_string(), b)).into_iter().collect()
    }

    fn describe(&self, env: &Environment) -> String {
        let names: Vec<&str> = self.requests.iter().map(|r| r.path.as_str()).collect();
        format!("{} {}", self.bases(env).join(","), names.join(","))
    }

    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError> {
        let mut out = Outcome::default();
        let client = client(self).map_err(CollectError::Failed)?;
        let token = match self.bearer_ref(&cx.env).map_err(CollectError::Failed)? {
            Some(r @ CredentialRef::File(_)) if !matches!(&r, CredentialRef::File(p) if p.exists()) => {
                out.findings.push(cx.finding(
                    "http.no_bearer",
                    crate::bundle::manifest::Severity::Info,
                    format!("bearer {r} does not exist: requests were sent without a token"),
                ));
                None
            }
            Some(r) => Some(r.resolve().map_err(|e| CollectError::Failed(format!("bearer: {e}")))?),
            None => None,
        };
        let timeout = self.request_timeout.unwrap_or(SignedDuration::from_secs(10)).unsigned_abs();
        let max_body = self.max_body.map_or(64 << 20, |b| b.as_u64());
        let mut index = Vec::new();
        for base in self.bases(&cx.env) {
            let instance = instance_name(&base);
            for r in &self.requests {
                if cx.is_cancelled() {
                    return Err(CollectError::Cancelled);
                }
                let path = match fill(&r.path, &cx.labels) {
                    Ok(p) => p,
                    Err(label) => {
                        index.push(json!({ "instance": instance, "name": r.name,
                            "skipped": format!("needs the alert label `{label}`, which is not given") }));
                        continue;
                    }
                };
                let url = format!("{}{path}", base.trim_end_matches('/'));
                let auth = r.auth.unwrap_or(token.is_some()).then_some(token.as_ref()).flatten();
                let rec =
                    fetch(&cx, &client, &url, auth.map(|t| t.expose()), timeout, max_body, &instance, &r.name).await;
                if let Some(e) = rec.get("error").and_then(|e| e.as_str()) {
                    out.warn(format!("{instance} {}: {e}", r.name));
                }
                index.push(rec);
            }
        }
        out.detail("requests", &index);
        Ok(out)
    }
}

fn client(s: &HttpSource) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &s.ca_file {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .and_then(|i| i.collect())
            .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
        if roots.add_parsable_certificates(certs).0 == 0 {
            return Err(format!("ca_file {}: no certificate in it", ca.display()));
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(format!("{}/{}", crate::TOOL_NAME, crate::TOOL_VERSION))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// One GET: the body streamed (redacted) into `<instance>/<name>.body`, the response's metadata into
/// `<instance>/<name>.response.json`; returns that metadata.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    cx: &Collection,
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    timeout: std::time::Duration,
    max_body: u64,
    instance: &str,
    name: &str,
) -> serde_json::Value {
    let shown = crate::config::strip_password(url).unwrap_or_else(|| url.to_string());
    let mut rec = json!({ "instance": instance, "name": name, "url": cx.redact_str(&shown),
                          "started_at": jiff::Timestamp::now() });
    let started = Instant::now();
    let mut req = client.get(url).timeout(timeout);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let result: Result<(), String> = async {
        let resp = req.send().await.map_err(|e| describe(&e))?;
        rec["status"] = json!(resp.status().as_u16());
        rec["headers"] = headers(cx, resp.headers());
        rec["time_to_headers_ms"] = json!(started.elapsed().as_millis() as u64);
        let kind = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let media = if kind.is_empty() { "application/octet-stream".to_string() } else { kind };
        let body_redaction = Redaction::Text(Format::of(name, &media));
        let mut artifact =
            cx.artifact(&format!("{instance}/{name}.body"), &media, body_redaction).map_err(|e| e.to_string())?;
        artifact.set_source(cx.redact_str(&shown));
        // A body without line ends (one JSON document) is redacted whole, up to `max_body`: its keys and values
        // are read together.
        artifact.set_max_line(usize::try_from(max_body).unwrap_or(usize::MAX));
        let mut body = resp.bytes_stream();
        let (mut total, mut cut) = (0u64, false);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let why = format!("body interrupted after {total} bytes: {}", describe(&e));
                    artifact.abandon(&why);
                    return Err(why);
                }
            };
            let room = max_body.saturating_sub(total) as usize;
            let take = chunk.len().min(room);
            total += take as u64;
            artifact.write_all(&chunk[..take]).map_err(|e| e.to_string())?;
            if take < chunk.len() {
                cut = true;
                break;
            }
        }
        if cut {
            artifact.set_truncated();
            rec["truncated"] = json!(format!("body cut at max_body ({max_body} bytes)"));
        }
        rec["body_bytes"] = json!(total);
        artifact.flush().map_err(|e| e.to_string())?;
        artifact.finish().map_err(|e| e.to_string())
    }
    .await;
    rec["elapsed_ms"] = json!(started.elapsed().as_millis() as u64);
    if let Err(e) = result {
        rec["error"] = json!(cx.redact_str(&e));
    }
    let text = serde_json::to_vec_pretty(&rec).unwrap_or_default();
    if let Err(e) = cx.write_small(&format!("{instance}/{name}.response.json"), "application/json", &text) {
        rec["error"] = json!(e.to_string());
    }
    rec
}

/// Response headers, credentials replaced by the marker.
fn headers(cx: &Collection, h: &reqwest::header::HeaderMap) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (k, v) in h {
        let name = k.as_str().to_string();
        let value = if SECRET_HEADERS.contains(&name.as_str()) || crate::redact::rules::is_secret_key(name.as_bytes()) {
            cx.redactor().replace(v.as_bytes(), "header", cx.tally())
        } else {
            cx.redact_str(&String::from_utf8_lossy(v.as_bytes()))
        };
        match out.get_mut(&name) {
            Some(serde_json::Value::Array(a)) => a.push(json!(value)),
            Some(prev) => *prev = json!([prev.clone(), value]),
            None => {
                out.insert(name, json!(value));
            }
        }
    }
    serde_json::Value::Object(out)
}

/// An error with its causes (reqwest's Display says only "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_effect_endpoints_are_refused_and_labels_fill_paths() {
        assert!(refused("/v1/zones/z1/applications/app-1/client-secret").is_some());
        assert!(refused("/api/audit/dlq/replay?all=1").is_some());
        assert!(refused("/zones/z1/outbox/o-9/requeue").is_some());
        assert!(refused("/api/audit/dlq?limit=1000").is_none());
        assert!(refused("/v1/zones/z1/audit/by-request/r1/explain").is_none());
        let mut labels = BTreeMap::new();
        labels.insert("zone_id".to_string(), "z 1".to_string());
        assert_eq!(fill("/v1/zones/{zone_id}/audit", &labels).unwrap(), "/v1/zones/z%201/audit");
        assert_eq!(fill("/x/{request_id}", &labels).unwrap_err(), "request_id");
        assert_eq!(instance_name("http://gateway-0:8081/"), "gateway-0_8081");
    }
}

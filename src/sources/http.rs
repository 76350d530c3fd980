//! The `http` source kind: read-only GETs against every instance of a service (`/ready`, `/metrics`, JWKS, the
//! Audit service's DLQ view, console explain ...). Status, headers, body and timing are recorded whatever the
//! status: a 503 from `/ready` is evidence. Endpoints that change state or reveal secrets are refused, even when
//! configured (caracal.md §4.3).

use std::{io::Write, path::PathBuf, time::Instant};

use async_trait::async_trait;
use bytesize::ByteSize;
use futures::StreamExt;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use serde_json::json;

mod failures;
mod target;

use failures::{Failure, Failures};
pub use target::refused;

use super::{
    CollectError, Collection, DefinitionError, Outcome, Redaction, Source, Verdict,
    kubernetes::{
        Api,
        discovery::{self, Discovered, DiscoveryError},
    },
};
use crate::{
    config::{CredentialRef, Environment},
    redact::Format,
};

/// The operator's Alertmanager: not Caracal's, so not in its chart and not discovered on Kubernetes; it is asked
/// only where `[services]` or `PRESERVE_ALERTMANAGER_URLS` lists it.
const NOT_DISCOVERED: &[&str] = &["alertmanager"];

/// Response headers whose values are credentials.
const SECRET_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"];

/// Why an http collector could not send its requests (a request that fails is a warning, not this).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `bearer` names a `${var}` the site does not define.
    #[error("bearer: {0}")]
    BearerExpand(#[source] crate::config::ExpandError),
    /// `bearer` is no credential reference, or the one it names cannot be read.
    #[error("bearer: {0}")]
    Bearer(#[source] crate::config::CredentialError),
    #[error("ca_file {}: {source}", path.display())]
    CaFile { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("ca_file {}: no certificate in it", .0.display())]
    NoCertificate(PathBuf),
    #[error(transparent)]
    Client(crate::web::ClientError),
}

/// Settings of an `http` collector.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    /// Whose instances to ask: a service of the site's `[services]` (`sts`, `gateway`, `audit`, `api`,
    /// `coordinator`, `web`, and the operator's `alertmanager`; `PRESERVE_<SVC>_URLS`). Each instance is captured
    /// separately. On a Kubernetes site a Caracal service without a configured URL is asked at every pod its
    /// Service's EndpointSlices list (ready or not), each in a folder named by the pod; `alertmanager` never is.
    pub service: Option<String>,
    /// Or base URLs given here, without credentials (as in `[services]`).
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
    /// whose label is missing, or would not fill exactly one path segment (a dot segment, a slash, a NUL), is
    /// skipped, and says so. No dot segments or `%2e`/`%2f`/`%5c`/`%25` in the path itself.
    pub path: String,
    /// Only `GET`.
    pub method: Option<String>,
    /// Send the collector's bearer token (default: when one is set).
    pub auth: Option<bool>,
}

impl HttpSource {
    fn bearer_ref(&self, env: &Environment) -> Result<Option<CredentialRef>, Error> {
        let Some(b) = &self.bearer else { return Ok(None) };
        let expanded = env.expand(b).map_err(Error::BearerExpand)?;
        expanded.parse().map(Some).map_err(Error::Bearer)
    }

    fn bases(&self, env: &Environment) -> Vec<String> {
        let mut v = self.urls.clone();
        if let Some(s) = &self.service {
            v.extend(env.services.get(s).cloned().unwrap_or_default());
        }
        v
    }

    /// The Caracal service whose pods are discovered from its EndpointSlices: on a Kubernetes site, when nothing
    /// (the collector's `urls`, `[services]`, `PRESERVE_<SVC>_URLS`) gives a URL, for Caracal's own services.
    fn discovered_service<'a>(&'a self, env: &Environment) -> Option<&'a str> {
        let s = self.service.as_deref()?;
        (env.kubernetes.is_some() && !NOT_DISCOVERED.contains(&s) && self.bases(env).is_empty()).then_some(s)
    }

    /// Where the requests go: the configured base URLs, which take precedence, else the service's pods found
    /// through the Kubernetes API.
    async fn targets(&self, env: &Environment) -> Targets {
        let bases = self.bases(env);
        if !bases.is_empty() {
            return Targets::Configured(bases);
        }
        let Some(service) = self.discovered_service(env) else {
            return match (&self.service, &env.kubernetes) {
                (Some(s), Some(_)) => Targets::NotDiscovered(format!(
                    "service `{s}` has no URL: it is not Caracal's, so it is not discovered on Kubernetes; list it in \
                     the site config's [services] ({s} = [\"http://...\"]) or PRESERVE_{}_URLS",
                    s.to_ascii_uppercase()
                )),
                _ => Targets::Configured(Vec::new()),
            };
        };
        let found = match Api::connect(env).await {
            Ok(api) => discovery::discover(&api, service).await,
            Err(source) => Err(DiscoveryError {
                service: service.to_string(),
                kube_service: env.kubernetes.as_ref().map_or_else(String::new, |k| discovery::service_name(k, service)),
                source,
            }),
        };
        match found {
            Ok(d) => Targets::Discovered(d),
            Err(e) => Targets::Failed(e),
        }
    }
}

/// Where an http collector's requests go.
enum Targets {
    /// Base URLs given by the collector's `urls`, `[services]` or `PRESERVE_<SVC>_URLS` (maybe none).
    Configured(Vec<String>),
    /// The pods of a Caracal service, from its EndpointSlices.
    Discovered(Discovered),
    /// The Kubernetes API did not say.
    Failed(DiscoveryError),
    /// On Kubernetes, a service that is not discovered and has no URL: why.
    NotDiscovered(String),
}

/// One instance to ask: its folder, its base URL, and what its EndpointSlice said of it when discovered.
struct Target {
    folder: String,
    base: String,
    discovered: Option<discovery::Instance>,
}

/// `url` without its userinfo (`user:password@`), when it has one. Lenient as the site config's own check: the
/// last `@` before any `?` or `#` ends it, so a password holding `/` or `@` is still found.
fn without_userinfo(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    Some(format!("{scheme}://{}", &rest[at + 1..]))
}

/// A folder name for an instance: `gateway-0_8081`.
fn instance_name(base: &str) -> String {
    let hostport = base.split("://").nth(1).unwrap_or(base).split('/').next().unwrap_or(base);
    super::path_segment(hostport)
}

#[async_trait]
impl Source for HttpSource {
    fn check(&self, env: &Environment) -> Result<(), DefinitionError> {
        self.bearer_ref(env).map_err(|e| match e {
            Error::BearerExpand(source) => DefinitionError::Expand { setting: "bearer", source },
            Error::Bearer(source) => DefinitionError::invalid("bearer")(source),
            other => DefinitionError::invalid("bearer")(other),
        })?;
        if self.service.is_none() && self.urls.is_empty() {
            return Err(DefinitionError::Shape("an http collector needs `service` or `urls`"));
        }
        if let Some(s) = &self.service
            && !crate::config::SERVICES.iter().any(|(n, _)| n == s)
        {
            return Err(DefinitionError::Refused {
                setting: format!("service `{s}`"),
                why: format!(
                    "expected one of {}",
                    crate::config::SERVICES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &self.requests {
            if let Some(m) = &r.method
                && !m.eq_ignore_ascii_case("GET")
            {
                return Err(DefinitionError::Refused {
                    setting: format!("request `{}`", r.name),
                    why: format!("method {m}: only GET is ever sent to Caracal"),
                });
            }
            target::check_template(&r.path).map_err(DefinitionError::invalid(format!("request `{}`", r.name)))?;
            if !names.insert(&r.name) {
                return Err(DefinitionError::Twice { what: "request", name: r.name.clone() });
            }
        }
        for u in &self.urls {
            // Userinfo would be sent as Basic auth and written into folder names and the manifest's `source`.
            if let Some(clean) =
                without_userinfo(u).or_else(|| crate::config::strip_password(u).filter(|clean| clean != u))
            {
                return Err(DefinitionError::Refused {
                    setting: "urls".into(),
                    why: format!(
                        "`{clean}` is given with credentials; base URLs must not carry them (as in [services]): give \
                         a token as `bearer`"
                    ),
                });
            }
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(DefinitionError::Refused {
                    setting: "urls".into(),
                    why: format!("`{u}` is not an http(s) URL"),
                });
            }
        }
        Ok(())
    }

    fn credentials(&self, env: &Environment) -> Vec<(String, CredentialRef)> {
        self.bearer_ref(env).ok().flatten().map(|b| ("bearer".to_string(), b)).into_iter().collect()
    }

    fn describe(&self, env: &Environment) -> String {
        let names: Vec<&str> = self.requests.iter().map(|r| r.path.as_str()).collect();
        let from = match (self.discovered_service(env), &env.kubernetes) {
            (Some(s), Some(k)) => format!("pods of Service {} (its EndpointSlices)", discovery::service_name(k, s)),
            _ => self.bases(env).join(","),
        };
        format!("{from} {}", names.join(","))
    }

    async fn preflight(&self, env: &Environment) -> super::Readiness {
        use super::Readiness;
        let mut notes = Vec::new();
        match self.bearer_ref(env) {
            Err(e) => return Readiness::Cannot(e.to_string()),
            Ok(Some(r @ CredentialRef::File(_))) if !matches!(&r, CredentialRef::File(p) if p.exists()) => {
                notes.push(format!("bearer {r} does not exist: requests will go without a token"));
            }
            Ok(Some(r)) => {
                if let Err(e) = r.resolve() {
                    return Readiness::Cannot(format!("bearer: {e}"));
                }
            }
            Ok(None) => {}
        }
        if let Err(e) = client(self) {
            return Readiness::Cannot(e.to_string());
        }
        let bases = match self.targets(env).await {
            Targets::Configured(bases) => bases,
            Targets::Discovered(d) => {
                if let Some(why) = d.absent() {
                    return Readiness::Skip(why);
                }
                notes.extend(d.problems.iter().map(|p| format!("Service `{}`: {p}", d.service)));
                if d.instances.is_empty() {
                    return Readiness::Cannot(notes.join("; "));
                }
                notes.push(d.summary());
                d.instances.iter().map(|i| i.url.clone()).collect()
            }
            Targets::Failed(e) => return Readiness::Cannot(e.to_string()),
            Targets::NotDiscovered(why) => return Readiness::Skip(why),
        };
        if bases.is_empty() {
            let service = self.service.as_deref().unwrap_or("?");
            return Readiness::Cannot(format!(
                "no URL for service `{service}`: set it in the site config's [services]"
            ));
        }
        let checks = bases.iter().map(|b| reach(b));
        let unreachable: Vec<String> = futures::future::join_all(checks).await.into_iter().flatten().collect();
        if unreachable.len() == bases.len() {
            return Readiness::Cannot(unreachable.join("; "));
        }
        notes.extend(unreachable);
        Readiness::Ready(notes)
    }

    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError> {
        let mut out = Outcome::default();
        let client = client(self)?;
        let token = match self.bearer_ref(&cx.env)? {
            Some(r @ CredentialRef::File(_)) if !matches!(&r, CredentialRef::File(p) if p.exists()) => {
                out.findings.push(cx.finding(
                    "http.no_bearer",
                    crate::bundle::manifest::Severity::Info,
                    format!("bearer {r} does not exist: requests were sent without a token"),
                ));
                None
            }
            Some(r) => Some(r.resolve().map_err(Error::Bearer)?),
            None => None,
        };
        let timeout = self.request_timeout.unwrap_or(SignedDuration::from_secs(10)).unsigned_abs();
        let max_body = self.max_body.map_or(64 << 20, |b| b.as_u64());
        let mut index = Vec::new();
        // Requests tried (sent or refused) and those of them that got no response: none answered is `failed`.
        let (mut tried, mut unanswered) = (0usize, 0usize);
        let mut labels_missing = std::collections::BTreeSet::new();
        let mut failures = Failures::default();
        // Discovery waits at most the site's Kubernetes `request_timeout`; a run stopping does not wait for it.
        let found = tokio::select! {
            t = self.targets(&cx.env) => t,
            _ = cx.cancelled() => return Err(CollectError::Cancelled),
        };
        let targets: Vec<Target> = match found {
            Targets::Configured(bases) => {
                bases.into_iter().map(|base| Target { folder: instance_name(&base), base, discovered: None }).collect()
            }
            Targets::Discovered(d) => {
                for p in &d.problems {
                    out.warn(cx.redact_str(&format!("Service `{}`: {p}", d.service)));
                }
                out.detail("discovery", &d);
                if let Some(why) = d.absent() {
                    out.verdict = Verdict::Absent(why);
                    return Ok(out);
                }
                if d.instances.is_empty() {
                    out.verdict = Verdict::AllFailed(format!("no endpoint of Service `{}` could be asked", d.service));
                    return Ok(out);
                }
                d.instances
                    .into_iter()
                    .map(|i| Target { folder: i.folder.clone(), base: i.url.clone(), discovered: Some(i) })
                    .collect()
            }
            Targets::Failed(e) => {
                out.verdict = Verdict::AllFailed(cx.redact_str(&e.to_string()));
                return Ok(out);
            }
            Targets::NotDiscovered(why) => {
                out.verdict = Verdict::Absent(why);
                return Ok(out);
            }
        };
        // Each discovered instance's folder says first which pod it is and what its EndpointSlice said of it; the
        // same record goes with each of its requests.
        let records: Vec<Option<serde_json::Value>> =
            targets.iter().map(|t| t.discovered.as_ref().map(discovered_record)).collect();
        for (t, record) in targets.iter().zip(&records) {
            if let Some(r) = record {
                let text = serde_json::to_vec_pretty(r)?;
                if let Err(e) = cx.write_small(&format!("{}/endpoint.json", t.folder), "application/json", &text) {
                    out.warn(format!("{}/endpoint.json: {e}", t.folder));
                }
            }
        }
        for (Target { folder: instance, base, .. }, found) in targets.iter().zip(&records) {
            let instance = instance.clone();
            for r in &self.requests {
                if cx.is_cancelled() {
                    return Err(CollectError::Cancelled);
                }
                let url = match target::request_url(base, &r.path, &cx.labels) {
                    Ok(u) => u,
                    Err(unsent) => {
                        let why = cx.redact_str(&unsent.to_string());
                        if unsent.is_refusal() {
                            out.warn(format!("{instance} {}: {why}", r.name));
                            (tried, unanswered) = (tried + 1, unanswered + 1);
                        }
                        if let target::Unsent::MissingLabel(label) = unsent {
                            labels_missing.insert(label);
                        }
                        let mut rec = json!({ "instance": instance, "name": r.name, "skipped": why });
                        if let Some(f) = &found {
                            rec["discovered"] = f.clone();
                        }
                        index.push(rec);
                        continue;
                    }
                };
                let auth = r.auth.unwrap_or(token.is_some()).then_some(token.as_ref()).flatten();
                let (mut rec, failure) =
                    fetch(&cx, &client, &url, auth.map(|t| t.expose_secret()), timeout, max_body, &instance, &r.name)
                        .await;
                if let Some(f) = &found {
                    rec["discovered"] = f.clone();
                }
                tried += 1;
                if let Some(f) = failure {
                    failures.add(&failures::authority(&url), &r.name, &f);
                    unanswered += 1;
                }
                index.push(rec);
            }
        }
        for clause in failures.clauses() {
            out.warn(cx.redact_str(&clause));
        }
        out.detail("requests", &index);
        if tried > 0 && unanswered == tried {
            out.verdict = Verdict::AllFailed("every request failed".into());
        } else if tried == 0 {
            // Nothing asked: no instance, or every request needs a label no alert gave.
            let labels: Vec<String> = labels_missing.into_iter().map(|l| format!("`{l}`")).collect();
            out.verdict = Verdict::Absent(match (&self.service, targets.is_empty()) {
                (Some(s), true) => format!("no instance of service `{s}` is configured"),
                (None, true) => "no base URL is configured".into(),
                _ if labels.is_empty() => "no request is configured".into(),
                _ => format!("every request needs an alert label that is not given: {}", labels.join(", ")),
            });
        }
        Ok(out)
    }
}

/// What an instance's EndpointSlice said of it, for its `endpoint.json` and each of its requests' records.
fn discovered_record(i: &discovery::Instance) -> serde_json::Value {
    json!({
        "pod": i.pod, "address": i.address, "port": i.port,
        "ready": i.ready, "serving": i.serving, "terminating": i.terminating,
        "state": i.state(),
        "discovered_from": format!("EndpointSlice {}", i.endpoint_slice),
        "also_in": i.also_in,
    })
}

/// Why `base` cannot be reached (a TCP connection to its host and port, within 3 s), or `None` when it can.
async fn reach(base: &str) -> Option<String> {
    let url = match reqwest::Url::parse(base) {
        Ok(u) => u,
        Err(e) => return Some(format!("{base}: not a URL: {e}")),
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Some(format!("{base}: no host to connect to"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(std::time::Duration::from_secs(3), tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Some(format!("{base} refuses connections (is the service running?)"))
        }
        Ok(Err(e)) => Some(format!("{base} cannot be reached: {e}")),
        Err(_) => Some(format!("{base} did not answer within 3 s")),
    }
}

fn client(s: &HttpSource) -> Result<reqwest::Client, Error> {
    let mut extra = Vec::new();
    if let Some(ca) = &s.ca_file {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .and_then(|i| i.collect())
            .map_err(|source| Error::CaFile { path: ca.clone(), source })?;
        let mut probe = rustls::RootCertStore::empty();
        if probe.add_parsable_certificates(certs.clone()).0 == 0 {
            return Err(Error::NoCertificate(ca.clone()));
        }
        extra = certs;
    }
    crate::web::client(extra).map_err(Error::Client)
}

/// One GET: the body streamed (redacted) into `<instance>/<name>.body`, the response's metadata into
/// `<instance>/<name>.response.json`; returns that metadata (with the error whole) and why the request failed.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    cx: &Collection,
    client: &reqwest::Client,
    url: &reqwest::Url,
    token: Option<&str>,
    timeout: std::time::Duration,
    max_body: u64,
    instance: &str,
    name: &str,
) -> (serde_json::Value, Option<Failure>) {
    let shown = crate::config::strip_password(url.as_str()).unwrap_or_else(|| url.to_string());
    let mut rec = json!({ "instance": instance, "name": name, "url": cx.redact_str(&shown),
                          "started_at": jiff::Timestamp::now() });
    let started = Instant::now();
    let mut req = client.get(url.clone()).timeout(timeout);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let other = |e: String| (e.clone(), Failure::Other(e));
    let result: Result<(), (String, Failure)> = async {
        let resp = req.send().await.map_err(|e| (describe(&e), Failure::of(&e, timeout)))?;
        rec["status"] = json!(resp.status().as_u16());
        rec["headers"] = headers(cx, resp.headers());
        rec["time_to_headers_ms"] = json!(started.elapsed().as_millis() as u64);
        let kind = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let media = if kind.is_empty() { "application/octet-stream".to_string() } else { kind };
        let body_redaction = Redaction::Text(Format::of(name, &media));
        let mut artifact = cx
            .artifact(&format!("{instance}/{name}.body"), &media, body_redaction)
            .map_err(|e| other(e.to_string()))?;
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
                    let failure = match Failure::of(&e, timeout) {
                        Failure::Connect(c) | Failure::Other(c) => {
                            Failure::Other(format!("body interrupted after {total} bytes: {c}"))
                        }
                        f => f,
                    };
                    return Err((why, failure));
                }
            };
            let room = max_body.saturating_sub(total) as usize;
            let take = chunk.len().min(room);
            total += take as u64;
            artifact.write_all(&chunk[..take]).map_err(|e| other(e.to_string()))?;
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
        artifact.flush().map_err(|e| other(e.to_string()))?;
        artifact.finish().map_err(|e| other(e.to_string()))
    }
    .await;
    rec["elapsed_ms"] = json!(started.elapsed().as_millis() as u64);
    let mut failure = None;
    if let Err((e, f)) = result {
        rec["error"] = json!(cx.redact_str(&e));
        failure = Some(f);
    }
    let text = serde_json::to_vec_pretty(&rec).unwrap_or_default();
    if let Err(e) = cx.write_small(&format!("{instance}/{name}.response.json"), "application/json", &text) {
        rec["error"] = json!(e.to_string());
        failure = Some(Failure::Other(e.to_string()));
    }
    (rec, failure)
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
    fn instance_names_and_userinfo() {
        assert_eq!(instance_name("http://gateway-0:8081/"), "gateway-0_8081");
        assert_eq!(without_userinfo("http://u:p/w@d@h:1/x?y=@").as_deref(), Some("http://h:1/x?y=@"));
        assert_eq!(without_userinfo("http://h:1/x?y=@"), None);
    }
}

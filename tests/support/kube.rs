//! A stand-in for the Kubernetes API server: no API server can run on this machine, so the tests talk to this one.
//! It serves what preserve reads the way the Kubernetes API documents it: object lists under their API paths with
//! `labelSelector` and `fieldSelector` (equality), single objects by name, the pod `log` subresource with
//! `container`, `previous`, `sinceTime`, `timestamps` and `follow`, and `Status` errors (401 without the bearer
//! token, 403 for a resource the test forbids, 404, 400 for a previous container that never ran). It listens with
//! TLS under a test CA and checks a bearer token, as the API server does for a pod's service account. Every
//! request is recorded, so a test can check preserve only ever read.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use serde_json::{Value, json};

/// The namespace the stand-in's Caracal release lives in.
pub const NAMESPACE: &str = "caracal";
/// The Helm release name, so objects are `caracal-caracal-<svc>` as the chart names them.
pub const RELEASE: &str = "caracal";

/// A container's log as the kubelet keeps it: lines with the time each was written.
#[derive(Clone)]
pub enum Log {
    Lines(Vec<(jiff::Timestamp, String)>),
    /// `count` lines of about `line_len` bytes, one every `step`, from `start`, made as they are sent (a big log
    /// the test does not hold).
    Generated {
        count: u64,
        line_len: usize,
        start: jiff::Timestamp,
        step: jiff::SignedDuration,
    },
}

#[derive(Default)]
struct Api {
    /// Objects by collection path (`/api/v1/namespaces/caracal/pods`).
    objects: BTreeMap<String, Vec<Value>>,
    /// Logs by (pod, container, previous).
    logs: BTreeMap<(String, String, bool), Log>,
    /// Collection paths answered 403 (list, get and any subresource below).
    forbidden: BTreeSet<String>,
    /// Collection paths whose list alone is answered 403 (a Role granting `get` by name only).
    forbidden_lists: BTreeSet<String>,
    requests: Vec<(Method, String)>,
}

/// One request preserve made.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query, as sent.
    pub uri: String,
}

/// A running stand-in cluster.
pub struct Cluster {
    api: Arc<Mutex<Api>>,
    pub url: String,
    pub ca_pem: String,
    pub token: String,
    _runtime: std::thread::JoinHandle<()>,
}

/// The collection path of `resource` (plural, as in a URL) in the stand-in's namespace: core resources under
/// `/api/v1`, others under `/apis/<group>/<version>`.
pub fn collection(group_version: &str, resource: &str) -> String {
    let root = if group_version == "v1" { "/api/v1".to_string() } else { format!("/apis/{group_version}") };
    format!("{root}/namespaces/{NAMESPACE}/{resource}")
}

impl Cluster {
    /// Starts an empty cluster on a free port.
    pub fn start() -> Self {
        let (ca_pem, cert, key) = super::certificates(&["127.0.0.1"]);
        let api = Arc::new(Mutex::new(Api::default()));
        let token = format!("sa-token-{}", std::process::id());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().fallback(handle).with_state((api.clone(), token.clone()));
        let acceptor = super::tls_acceptor(&cert, &key);
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                super::serve_tls_on(listener, acceptor, router).await
            });
        });
        Self { api, url: format!("https://{addr}"), ca_pem, token, _runtime: runtime }
    }

    /// Adds an object to the collection of `resource` in `group_version` (`v1`, `apps/v1`, ...).
    pub fn add(&self, group_version: &str, resource: &str, object: Value) {
        self.api.lock().unwrap().objects.entry(collection(group_version, resource)).or_default().push(object);
    }

    /// Sets the log of a pod's container; `previous`: of the container instance that ran before a restart.
    pub fn log(&self, pod: &str, container: &str, previous: bool, mut log: Log) {
        // The kubelet keeps a container's lines in the order they came.
        if let Log::Lines(lines) = &mut log {
            lines.sort_by_key(|(t, _)| *t);
        }
        self.api.lock().unwrap().logs.insert((pod.into(), container.into(), previous), log);
    }

    /// Answers every request for `resource` in `group_version` (list, get, subresources) with 403 Forbidden.
    pub fn forbid(&self, group_version: &str, resource: &str) {
        self.api.lock().unwrap().forbidden.insert(collection(group_version, resource));
    }

    /// Answers a list of `resource` with 403, while a get by name still answers: a Role granting only `get` with
    /// `resourceNames`.
    pub fn forbid_list(&self, group_version: &str, resource: &str) {
        self.api.lock().unwrap().forbidden_lists.insert(collection(group_version, resource));
    }

    /// Every request made so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.api.lock().unwrap().requests.iter().map(|(m, u)| Seen { method: m.clone(), uri: u.clone() }).collect()
    }

    /// Writes a kubeconfig that reaches this cluster as a pod's service account does (the CA file, a token file,
    /// the namespace) into `dir`; returns its path.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> PathBuf {
        let ca = dir.join("cluster-ca.pem");
        std::fs::write(&ca, &self.ca_pem).unwrap();
        let token = dir.join("sa-token");
        std::fs::write(&token, &self.token).unwrap();
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {url}\n    \
                 certificate-authority: {ca}\nusers:\n- name: preserve\n  user:\n    tokenFile: {token}\n\
                 contexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: preserve\n    \
                 namespace: {NAMESPACE}\ncurrent-context: stand-in\n",
                url = self.url,
                ca = ca.display(),
                token = token.display(),
            ),
        )
        .unwrap();
        path
    }
}

/// A `Status` error as the API server sends it.
fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn query(uri: &axum::http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| {
                    let v = percent_decode(v);
                    (k.to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A query value as `application/x-www-form-urlencoded` writes it (`+` for a space).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// The value at a dotted path (`metadata.name`, `type`) of an object, as text.
fn field<'a>(object: &'a Value, path: &str) -> Option<&'a str> {
    path.split('.').try_fold(object, |v, k| v.get(k)).and_then(Value::as_str)
}

/// Whether `object` satisfies a selector of comma-separated `key=value`, `key==value`, `key!=value` and `key`
/// (exists) terms, over `lookup`.
fn selects(selector: &str, lookup: impl Fn(&str) -> Option<String>) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            lookup(k).as_deref() != Some(v)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            lookup(k).as_deref() == Some(v)
        } else {
            lookup(term).is_some()
        }
    })
}

async fn handle(State((api, token)): State<(Arc<Mutex<Api>>, String)>, request: Request) -> Response {
    let uri = request.uri().clone();
    let method = request.method().clone();
    let path_and_query = uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    api.lock().unwrap().requests.push((method.clone(), path_and_query));
    let authorized =
        request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}"));
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized".into());
    }
    let path = uri.path().trim_end_matches('/').to_string();
    let q = query(&uri);
    let api = api.lock().unwrap();
    let refused = api.forbidden.iter().find(|c| path == **c || path.starts_with(&format!("{c}/")));
    if let Some(c) = refused.or_else(|| api.forbidden_lists.get(&path)) {
        let resource = c.rsplit('/').next().unwrap_or("");
        let verb = if path == *c { "list" } else { "get" };
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{resource} is forbidden: User \"system:serviceaccount:{NAMESPACE}:preserve\" cannot {verb} \
                 resource \"{resource}\" in the namespace \"{NAMESPACE}\""
            ),
        );
    }
    if method != Method::GET {
        return status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("{method} is not served here"));
    }
    // The log subresource.
    let pods = collection("v1", "pods");
    if let Some(rest) = path.strip_prefix(&format!("{pods}/"))
        && let Some(pod) = rest.strip_suffix("/log")
    {
        let Some(object) =
            api.objects.get(&pods).and_then(|l| l.iter().find(|o| field(o, "metadata.name") == Some(pod)))
        else {
            return status(StatusCode::NOT_FOUND, "NotFound", format!("pods \"{pod}\" not found"));
        };
        let containers: Vec<String> = object["spec"]["containers"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        let container = match q.get("container") {
            Some(c) => c.clone(),
            None if containers.len() == 1 => containers[0].clone(),
            None => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("a container name must be specified for pod {pod}, choose one of: {containers:?}"),
                );
            }
        };
        if !containers.contains(&container) {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("container {container} is not valid for pod {pod}"),
            );
        }
        if q.get("follow").is_some_and(|f| f == "true") {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "the stand-in never follows a log".into());
        }
        let previous = q.get("previous").is_some_and(|p| p == "true");
        let Some(log) = api.logs.get(&(pod.to_string(), container.clone(), previous)).cloned() else {
            let what = if previous { "previous terminated container" } else { "container" };
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("{what} \"{container}\" in pod \"{pod}\" not found"),
            );
        };
        let since = match q.get("sinceTime").map(|s| s.parse::<jiff::Timestamp>()) {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => return status(StatusCode::BAD_REQUEST, "BadRequest", format!("sinceTime: {e}")),
            None => None,
        };
        let timestamps = q.get("timestamps").is_some_and(|t| t == "true");
        drop(api);
        return log_body(log, since, timestamps);
    }
    // A single object, or a list.
    if let Some(items) = api.objects.get(&path) {
        let label_selector = q.get("labelSelector").cloned().unwrap_or_default();
        let field_selector = q.get("fieldSelector").cloned().unwrap_or_default();
        let items: Vec<&Value> = items
            .iter()
            .filter(|o| selects(&label_selector, |k| o["metadata"]["labels"][k].as_str().map(String::from)))
            .filter(|o| selects(&field_selector, |k| field(o, k).map(String::from)))
            .collect();
        let kind = items.first().and_then(|o| o["kind"].as_str()).unwrap_or("List").to_string();
        let api_version = items.first().and_then(|o| o["apiVersion"].as_str()).unwrap_or("v1").to_string();
        // Paging as the API pages: `limit` objects from the `continue` token's place, and the next token while
        // more remain.
        let from: usize =
            q.get("continue").and_then(|c| c.strip_prefix("page-")).and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
        let end = from.saturating_add(limit).min(items.len());
        let mut metadata = json!({ "resourceVersion": "1000" });
        if end < items.len() {
            metadata["continue"] = format!("page-{end}").into();
            metadata["remainingItemCount"] = (items.len() - end).into();
        }
        let body = json!({
            "kind": format!("{kind}List"),
            "apiVersion": api_version,
            "metadata": metadata,
            "items": &items[from.min(items.len())..end],
        });
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    }
    if let Some((parent, name)) = path.rsplit_once('/')
        && let Some(items) = api.objects.get(parent)
    {
        return match items.iter().find(|o| field(o, "metadata.name") == Some(name)) {
            Some(o) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], o.to_string()).into_response(),
            None => {
                let resource = parent.rsplit('/').next().unwrap_or("");
                status(StatusCode::NOT_FOUND, "NotFound", format!("{resource} \"{name}\" not found"))
            }
        };
    }
    status(StatusCode::NOT_FOUND, "NotFound", format!("the server could not find the requested resource {path}"))
}

/// The kubelet's answer: lines from `since` on, each prefixed with its RFC 3339 nanosecond time when asked.
fn log_body(log: Log, since: Option<jiff::Timestamp>, timestamps: bool) -> Response {
    let line = move |t: jiff::Timestamp, text: &str| {
        let mut s = String::with_capacity(text.len() + 32);
        if timestamps {
            // RFC 3339 with as many fraction digits as needed, as the kubelet's RFC3339Nano.
            s.push_str(&format!("{t} "));
        }
        s.push_str(text);
        s.push('\n');
        s
    };
    let body = match log {
        Log::Lines(lines) => {
            let text: String =
                lines.iter().filter(|(t, _)| since.is_none_or(|s| *t >= s)).map(|(t, l)| line(*t, l)).collect();
            Body::from(text)
        }
        Log::Generated { count, line_len, start, step } => {
            let chunk_lines = 1024u64;
            let stream = futures::stream::iter((0..count.div_ceil(chunk_lines)).map(move |chunk| {
                let mut text = String::with_capacity((line_len + 40) * chunk_lines as usize);
                for i in chunk * chunk_lines..((chunk + 1) * chunk_lines).min(count) {
                    let t = start + step * i as i32;
                    if since.is_some_and(|s| t < s) {
                        continue;
                    }
                    let head = format!("{{\"level\":\"info\",\"msg\":\"ingest batch\",\"seq\":{i},\"pad\":\"");
                    let pad = line_len.saturating_sub(head.len() + 2);
                    text.push_str(&line(t, &format!("{head}{}\"}}", "x".repeat(pad))));
                }
                Ok::<_, std::io::Error>(axum::body::Bytes::from(text))
            }));
            Body::from_stream(stream)
        }
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// A Caracal pod as the chart makes it: the release's labels, one container named after the component, its
/// readiness, restart count and last termination, the node and the pod IP.
pub fn caracal_pod(name: &str, component: &str, ip: &str, ready: bool, restarts: u32) -> Value {
    let last_state = if restarts > 0 {
        json!({ "terminated": { "exitCode": 2, "reason": "Error", "finishedAt": "2026-12-04T09:58:00Z" } })
    } else {
        json!({})
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": "caracal",
                "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/component": component,
            },
        },
        "spec": {
            "nodeName": format!("node-{}", name.len() % 3),
            "containers": [{ "name": component, "image": format!("ghcr.io/garudex-labs/caracal-{component}:1.0.0") }],
        },
        "status": {
            "phase": "Running", "podIP": ip,
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
            "containerStatuses": [{
                "name": component, "ready": ready, "restartCount": restarts,
                "image": format!("ghcr.io/garudex-labs/caracal-{component}:1.0.0"),
                "imageID": format!("ghcr.io/garudex-labs/caracal-{component}@sha256:{}", "ab".repeat(32)),
                "lastState": last_state,
                "state": { "running": { "startedAt": "2026-12-04T09:58:05Z" } },
            }],
        },
    })
}

/// The EndpointSlice of a Caracal Service (`<release>-caracal-<svc>`, port `http`): one endpoint per
/// `(address, ready, pod)`.
pub fn endpoint_slice(service: &str, port: u16, endpoints: &[(&str, bool, &str)]) -> Value {
    let svc = format!("{RELEASE}-caracal-{service}");
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{svc}-x7k2p"), "namespace": NAMESPACE,
            "labels": { "kubernetes.io/service-name": svc, "app.kubernetes.io/instance": RELEASE },
        },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": port, "protocol": "TCP" }],
        "endpoints": endpoints.iter().map(|(addr, ready, pod)| json!({
            "addresses": [addr],
            "conditions": { "ready": ready, "serving": ready, "terminating": false },
            "targetRef": { "kind": "Pod", "name": pod, "namespace": NAMESPACE },
        })).collect::<Vec<_>>(),
    })
}

/// A Helm release record as Helm 3 stores it: a Secret `sh.helm.release.v1.<release>.v<version>` of type
/// `helm.sh/release.v1` whose `release` key holds base64 of the gzip of the release JSON (and the API's own
/// base64 of that, as every Secret value).
pub fn helm_release_secret(release: &str, version: u32, status: &str, values: Value, manifest: &str) -> Value {
    use std::io::Write;
    let record = json!({
        "name": release, "namespace": NAMESPACE, "version": version,
        "info": { "status": status, "last_deployed": format!("2026-12-0{}T08:00:00Z", version.min(9)), "description": "Upgrade complete" },
        "chart": { "metadata": { "name": "caracal", "version": "1.0.0", "appVersion": "1.0.0" } },
        "config": values,
        "manifest": manifest,
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(record.to_string().as_bytes()).unwrap();
    let helm = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {
            "name": format!("sh.helm.release.v1.{release}.v{version}"), "namespace": NAMESPACE,
            "labels": { "name": release, "owner": "helm", "status": status, "version": version.to_string() },
        },
        "data": { "release": base64::engine::general_purpose::STANDARD.encode(helm) },
    })
}

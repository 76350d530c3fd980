//! The connection to the Kubernetes API: configuration from the site's kubeconfig, `KUBECONFIG` or the in-cluster
//! service account, and the only three requests preserve makes (`list`, `get`, the pod `log` subresource), as
//! raw JSON so the evidence keeps every field the API server sent.

use std::path::PathBuf;

use futures::AsyncBufRead;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use serde_json::Value;

use crate::config::{Environment, KubernetesSite};

/// Why the Kubernetes API could not be used or answered a request with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no [kubernetes] section in the site config: this site is not a Kubernetes install")]
    NotConfigured,
    #[error("kubeconfig {}: {source}", path.display())]
    Kubeconfig { path: PathBuf, source: kube::config::KubeconfigError },
    #[error("Kubernetes configuration (KUBECONFIG, ~/.kube/config, or the in-cluster service account): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The API server answered with an error `Status`: 403 when RBAC refuses, 404 when absent.
    #[error("{what}: {code} {reason}: {message}")]
    Refused { what: String, code: u16, reason: String, message: String },
    /// The request got no answer, or one that is not what the API documents.
    #[error("{what}: {source}")]
    Request { what: String, source: kube::Error },
}

impl Error {
    fn from_kube(what: impl Into<String>, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => {
                Self::Refused { what: what.into(), code: s.code, reason: s.reason.clone(), message: s.message.clone() }
            }
            source => Self::Request { what: what.into(), source },
        }
    }

    /// The HTTP status of an API error, when the server answered with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A client of the site's Kubernetes API, in the release's namespace.
#[derive(Clone)]
pub struct Api {
    client: kube::Client,
    pub namespace: String,
    pub site: KubernetesSite,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("namespace", &self.namespace).field("release", &self.site.release).finish()
    }
}

impl Api {
    /// Connects as the site config says: its `kubeconfig` (and `context`), else `KUBECONFIG` or `~/.kube/config`,
    /// else the in-cluster service account. Requests are never retried (a retry could double a slow read), and
    /// each waits at most the site's `request_timeout`.
    pub async fn connect(env: &Environment) -> Result<Self, Error> {
        let site = env.kubernetes.clone().ok_or(Error::NotConfigured)?;
        let options = KubeConfigOptions { context: site.context.clone(), ..Default::default() };
        let mut config = match &site.kubeconfig {
            Some(path) => {
                let kubeconfig = |source| Error::Kubeconfig { path: path.clone(), source };
                let kc = Kubeconfig::read_from(path).map_err(kubeconfig)?;
                Config::from_custom_kubeconfig(kc, &options).await.map_err(kubeconfig)?
            }
            None if site.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|source| Error::Kubeconfig { path: "KUBECONFIG".into(), source })?,
            None => Config::infer().await.map_err(Error::Infer)?,
        };
        let timeout = site.request_timeout.unsigned_abs();
        config.default_retry = false;
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        config.connect_timeout = Some(timeout.min(std::time::Duration::from_secs(10)));
        let namespace = site.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(Error::Client)?;
        Ok(Self { client, namespace, site })
    }

    /// Whether the API answers and lets preserve list the release's pods.
    pub async fn can_reach(&self) -> Result<(), Error> {
        self.list("v1", "pods", Some(&self.site.selector(None)), None).await.map(|_| ())
    }

    /// The path of a namespaced collection: core resources under `/api/v1`, others under `/apis/<group>/<version>`.
    pub fn collection(&self, group_version: &str, resource: &str) -> String {
        let root = if group_version == "v1" { "/api/v1".to_string() } else { format!("/apis/{group_version}") };
        format!("{root}/namespaces/{}/{resource}", self.namespace)
    }

    /// Lists `resource` in the namespace (`group_version` `v1`, `apps/v1`, ...), filtered by a label and a field
    /// selector: the list object as the API sent it.
    pub async fn list(
        &self,
        group_version: &str,
        resource: &str,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Value, Error> {
        let params = kube::api::ListParams {
            label_selector: label_selector.map(String::from),
            field_selector: field_selector.map(String::from),
            ..Default::default()
        };
        self.list_with(group_version, resource, &params).await
    }

    /// One page of a list: at most `limit` objects, from the `continue` token of the page before (`None`: the
    /// first). The list object as the API sent it; its `metadata.continue` is the next page's token when there is
    /// one. Paging keeps each answer (held whole in memory) bounded however big the collection is.
    pub async fn list_page(
        &self,
        group_version: &str,
        resource: &str,
        label_selector: Option<&str>,
        limit: u32,
        continue_token: Option<&str>,
    ) -> Result<Value, Error> {
        let params = kube::api::ListParams {
            label_selector: label_selector.map(String::from),
            limit: Some(limit),
            continue_token: continue_token.map(String::from),
            ..Default::default()
        };
        self.list_with(group_version, resource, &params).await
    }

    async fn list_with(
        &self,
        group_version: &str,
        resource: &str,
        params: &kube::api::ListParams,
    ) -> Result<Value, Error> {
        let what = format!("list {resource}");
        let request = kube::core::Request::new(self.collection(group_version, resource))
            .list(params)
            .map_err(|e| Error::Request { what: what.clone(), source: kube::Error::BuildRequest(e) })?;
        self.client.request::<Value>(request).await.map_err(|e| Error::from_kube(what, e))
    }

    /// Gets one object by name.
    pub async fn get(&self, group_version: &str, resource: &str, name: &str) -> Result<Value, Error> {
        let what = format!("get {resource}/{name}");
        let request = kube::core::Request::new(self.collection(group_version, resource))
            .get(name, &Default::default())
            .map_err(|e| Error::Request { what: what.clone(), source: kube::Error::BuildRequest(e) })?;
        self.client.request::<Value>(request).await.map_err(|e| Error::from_kube(what, e))
    }

    /// The log of one container of a pod, from `since` on, each line prefixed with the time the kubelet received
    /// it (RFC 3339, nanoseconds); `previous`: of the instance that ran before the container's last restart.
    /// Never followed: the stream ends where the log ends now.
    pub async fn log(
        &self,
        pod: &str,
        container: &str,
        previous: bool,
        since: Option<jiff::Timestamp>,
    ) -> Result<impl AsyncBufRead + Unpin + use<>, Error> {
        let what = format!("log of {pod}/{container}{}", if previous { " (previous)" } else { "" });
        let mut query = url_query(&[("container", container), ("timestamps", "true"), ("follow", "false")]);
        if previous {
            query.push_str("&previous=true");
        }
        if let Some(t) = since {
            // The API takes whole seconds: round down, so no line of the window's first second is lost.
            let t = jiff::Timestamp::from_second(t.as_second()).unwrap_or(t);
            query.push_str("&sinceTime=");
            query.push_str(&encode(&t.to_string()));
        }
        let uri = format!("{}/{}/log?{query}", self.collection("v1", "pods"), encode(pod));
        let request = http::Request::get(uri)
            .body(Vec::new())
            .map_err(|e| Error::Request { what: what.clone(), source: kube::Error::HttpError(e) })?;
        let stream = self.client.request_stream(request).await.map_err(|e| Error::from_kube(what, e))?;
        Ok(Box::pin(stream))
    }
}

/// Everything but RFC 3986's unreserved characters, so a name or value is one path segment or query value.
const RESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}

fn url_query(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join("&")
}

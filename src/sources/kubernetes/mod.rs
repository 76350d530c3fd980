//! The `kubernetes` source kind: Caracal installed by its Helm chart, read through the Kubernetes API with
//! kube-rs (the ecosystem's maintained client) from the in-cluster service account or a kubeconfig. Read-only by
//! construction: only `get`, `list` and the pod `log` subresource are ever requested, never `watch` or `follow`.
//!
//! A collector does one of three things, named by the table it sets:
//! - `logs`: the logs of every container of the release's pods of some components, the current and the
//!   previous instance of each, from the window's start, streamed into `<component>/<pod>/<container>[.previous].log`;
//! - `cluster`: the release's pods, workloads, disruption budgets and autoscalers and the namespace's events, as
//!   JSON;
//! - `helm`: the release's Helm revisions (values and manifest, redacted) and their unified diff.
//!
//! A refusal of the API (403) for one resource fails only that part: the collector is `partial` and says which.

mod client;
mod cluster;
pub mod discovery;
mod helm;
mod logs;

use async_trait::async_trait;
use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

pub use client::{Api, Error};

use super::{CollectError, Collection, DefinitionError, Outcome, Readiness, Source};
use crate::config::Environment;

/// Settings of a `kubernetes` collector: exactly one of `logs`, `cluster`, `helm`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSource {
    pub logs: Option<LogsSpec>,
    pub cluster: Option<ClusterSpec>,
    pub helm: Option<HelmSpec>,
    /// Most bytes written in all (default 1 GiB); what is beyond is cut, and the collector says so.
    pub max_bytes: Option<ByteSize>,
}

/// Whose logs: the release's pods of these Caracal components (`app.kubernetes.io/component`), or the pods a
/// label selector picks (Postgres, Redis), in the release's namespace.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsSpec {
    #[serde(default)]
    pub components: Vec<String>,
    /// A label selector (`app.kubernetes.io/name=redis`), for pods that are not Caracal's own.
    pub selector: Option<String>,
    /// Also the previous instance of each container, the one that ran before its last restart (default true).
    pub previous: Option<bool>,
}

/// The cluster context of the release.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {}

/// The release's Helm revisions.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HelmSpec {
    /// Where listing Secrets is refused, records are got by name from revision 1 up to this one (default 100; the
    /// Role's `resourceNames` should list as many).
    pub max_revision: Option<u32>,
}

impl LogsSpec {
    /// The label selectors of the pods whose logs are read, each with the component it stands for: one per
    /// component of the release, or the `selector` given.
    fn selectors(&self, site: &crate::config::KubernetesSite) -> Vec<(Option<&str>, String)> {
        match &self.selector {
            Some(s) => vec![(None, s.clone())],
            None => self.components.iter().map(|c| (Some(c.as_str()), site.selector(Some(c)))).collect(),
        }
    }
}

impl KubernetesSource {
    fn mode(&self) -> Result<&'static str, DefinitionError> {
        match (&self.logs, &self.cluster, &self.helm) {
            (Some(_), None, None) => Ok("logs"),
            (None, Some(_), None) => Ok("cluster"),
            (None, None, Some(_)) => Ok("helm"),
            _ => Err(DefinitionError::Shape("a kubernetes collector sets exactly one of `logs`, `cluster`, `helm`")),
        }
    }
}

#[async_trait]
impl Source for KubernetesSource {
    fn check(&self, _env: &Environment) -> Result<(), DefinitionError> {
        self.mode()?;
        if self.helm.as_ref().is_some_and(|h| h.max_revision == Some(0)) {
            return Err(DefinitionError::Zero("helm.max_revision"));
        }
        if let Some(l) = &self.logs {
            if l.components.is_empty() && l.selector.is_none() {
                return Err(DefinitionError::Shape("logs needs `components` or `selector`"));
            }
            for c in &l.components {
                // A label value (the chart's components: sts, gateway, audit, api, coordinator, web, db, redis).
                if c.is_empty() || c.len() > 63 || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(DefinitionError::Refused {
                        setting: format!("logs.components `{c}`"),
                        why: "not a label value (letters, digits, `-`, `_`, `.`, at most 63)".into(),
                    });
                }
            }
        }
        Ok(())
    }

    fn describe(&self, env: &Environment) -> String {
        let Some(site) = &env.kubernetes else { return "Kubernetes API (no [kubernetes] section)".into() };
        let ns = site.namespace.as_deref().unwrap_or("(the context's namespace)");
        match (&self.logs, &self.helm) {
            (Some(l), _) => {
                let who = match &l.selector {
                    Some(s) => s.clone(),
                    None => site.selector(None) + ",app.kubernetes.io/component in (" + &l.components.join(",") + ")",
                };
                format!("pod logs in namespace {ns}: {who}")
            }
            (_, Some(_)) => format!("Helm release `{}` revisions in namespace {ns}", site.release),
            _ => format!("pods, workloads, events of release `{}` in namespace {ns}", site.release),
        }
    }

    async fn preflight(&self, env: &Environment) -> Readiness {
        let api = match Api::connect(env).await {
            Ok(api) => api,
            Err(e) => return Readiness::Cannot(e.to_string()),
        };
        let Some(l) = &self.logs else {
            return match api.can_reach().await {
                Ok(()) => Readiness::Ready(Vec::new()),
                Err(e) => Readiness::Cannot(e.to_string()),
            };
        };
        // Pod logs: the pods it would read must be listable; none there (an external database) is a skip.
        let selectors: Vec<String> = l.selectors(&api.site).into_iter().map(|(_, s)| s).collect();
        let mut pods = 0;
        for s in &selectors {
            match api.list("v1", "pods", Some(s), None).await {
                Ok(list) => pods += list["items"].as_array().map_or(0, Vec::len),
                Err(e) => return Readiness::Cannot(e.to_string()),
            }
        }
        if pods == 0 {
            Readiness::Skip(format!("no pod in namespace {} matches {}", api.namespace, selectors.join("; ")))
        } else {
            Readiness::Ready(vec![format!("{pods} pod(s)")])
        }
    }

    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError> {
        let api = Api::connect(&cx.env).await?;
        let max_bytes = self.max_bytes.map_or(1 << 30, |b| b.as_u64());
        match (&self.logs, &self.cluster, &self.helm) {
            (Some(spec), _, _) => logs::collect(&api, spec, &cx, max_bytes).await,
            (_, Some(spec), _) => cluster::collect(&api, spec, &cx, max_bytes).await,
            (_, _, Some(spec)) => helm::collect(&api, spec, &cx, max_bytes).await,
            // `check` refuses such a definition before anything runs.
            (None, None, None) => Ok(Outcome::absent("sets none of `logs`, `cluster`, `helm`")),
        }
    }
}

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
pub struct HelmSpec {}

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
        if let Some(l) = &self.logs {
            if l.components.is_empty() && l.selector.is_none() {
                return Err(DefinitionError::Shape("logs needs `components` or `selector`"));
            }
            for c in &l.components {
                if !crate::config::SERVICES.iter().any(|(n, _)| n == c) && c != "control" {
                    return Err(DefinitionError::Refused {
                        setting: format!("logs.components `{c}`"),
                        why: "not a component of Caracal's chart".into(),
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
        match Api::connect(env).await {
            Ok(api) => match api.can_reach().await {
                Ok(()) => Readiness::Ready(Vec::new()),
                Err(e) => Readiness::Cannot(e.to_string()),
            },
            Err(e) => Readiness::Cannot(e.to_string()),
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

//! The `[kubernetes]` section resolved: which API, which namespace and which Helm release, and the names Caracal's
//! chart gives its objects. Whether it is present decides the site's [`Platform`].

use std::path::PathBuf;

use jiff::SignedDuration;

use super::site::KubernetesConfig;

/// How Caracal is installed on the site: what log collectors read and where services are found. A collector
/// definition may hold `on = "compose"` or `on = "kubernetes"` to apply on one only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Docker Compose on one host (no `[kubernetes]` section): Docker's json-file logs, local service URLs.
    Compose,
    /// Caracal's Helm chart (a `[kubernetes]` section): pod logs and EndpointSlices through the Kubernetes API.
    Kubernetes,
}

/// The resolved `[kubernetes]` section.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KubernetesSite {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// `None`: the kubeconfig context's namespace, or the service account's.
    pub namespace: Option<String>,
    pub release: String,
    #[serde(serialize_with = "crate::config::kubernetes::as_text")]
    pub request_timeout: SignedDuration,
}

pub(crate) fn as_text<S: serde::Serializer>(d: &SignedDuration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.to_string())
}

/// A `[kubernetes]` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesSettingError {
    #[error("kubernetes.release: `{0}` is not a Helm release name (lowercase letters, digits and `-`, at most 53)")]
    Release(String),
    #[error("kubernetes.namespace: `{0}` is not a namespace name (lowercase letters, digits and `-`, at most 63)")]
    Namespace(String),
    #[error("kubernetes.request_timeout must be positive")]
    Timeout,
}

impl KubernetesSite {
    pub(super) fn resolve(c: KubernetesConfig) -> Result<Self, KubernetesSettingError> {
        let release = c.release.unwrap_or_else(|| "caracal".into());
        if !dns_label(&release, 53) {
            return Err(KubernetesSettingError::Release(release));
        }
        if let Some(ns) = &c.namespace
            && !dns_label(ns, 63)
        {
            return Err(KubernetesSettingError::Namespace(ns.clone()));
        }
        let request_timeout = c.request_timeout.unwrap_or(SignedDuration::from_secs(30));
        if request_timeout <= SignedDuration::ZERO {
            return Err(KubernetesSettingError::Timeout);
        }
        Ok(Self { kubeconfig: c.kubeconfig, context: c.context, namespace: c.namespace, release, request_timeout })
    }

    /// The chart's `caracal.fullname`: `<release>-caracal` (no de-duplication, so release `caracal` gives
    /// `caracal-caracal`).
    pub fn fullname(&self) -> String {
        format!("{}-caracal", self.release)
    }

    /// The label selector of the release's pods of one component (`sts`, `gateway`, ...), or of all of them.
    pub fn selector(&self, component: Option<&str>) -> String {
        let mut s = format!("app.kubernetes.io/name=caracal,app.kubernetes.io/instance={}", self.release);
        if let Some(c) = component {
            s.push_str(",app.kubernetes.io/component=");
            s.push_str(c);
        }
        s
    }
}

/// An RFC 1123 label: what Kubernetes accepts as a namespace, and Helm as a release name.
fn dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_chart() {
        let site =
            KubernetesSite::resolve(KubernetesConfig { release: Some("prod".into()), ..Default::default() }).unwrap();
        assert_eq!(site.fullname(), "prod-caracal");
        assert_eq!(
            site.selector(Some("audit")),
            "app.kubernetes.io/name=caracal,app.kubernetes.io/instance=prod,app.kubernetes.io/component=audit"
        );
        for bad in ["Prod", "-x", "a,b", "a=b", ""] {
            let e = KubernetesSite::resolve(KubernetesConfig { release: Some(bad.into()), ..Default::default() });
            assert!(matches!(e, Err(KubernetesSettingError::Release(_))), "{bad}");
        }
    }
}

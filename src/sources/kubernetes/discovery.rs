//! Every replica of a Caracal service, found: the pod addresses of the chart's Service `<release>-caracal-<svc>`,
//! read from its EndpointSlices (label `kubernetes.io/service-name`), so that nobody lists pod IPs by hand and a
//! replica that restarted with a new IP is still asked. Ready and not-ready endpoints alike become instances (a
//! pod failing `/ready` is the evidence), terminating ones too, each marked as the slice says.
//!
//! What the API answers is evidence and may be hostile: addresses are parsed as IP addresses (or, in an `FQDN`
//! slice, as host names) before they go into a URL, pod names are made safe as folder names, and at most
//! [`MAX_INSTANCES`] endpoints are taken.

use std::{collections::BTreeMap, net::IpAddr};

use serde::Serialize;
use serde_json::Value;

use super::{Api, Error};

/// The most endpoints taken of one Service; the rest are named in a note, not asked.
pub const MAX_INSTANCES: usize = 128;

/// The longest folder name an instance gets (a pod name may be 253 characters).
const MAX_FOLDER: usize = 100;

/// One endpoint of a Service: a pod to ask, where, and what the EndpointSlice said of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// The folder its responses go in: the pod's name made safe, or the address when the endpoint names no pod.
    pub folder: String,
    /// The base URL: `http://<address>:<port>` (an IPv6 address in brackets).
    pub url: String,
    /// The pod (`targetRef.name`), as the slice gives it.
    pub pod: Option<String>,
    pub address: String,
    pub port: u16,
    /// The endpoint's conditions, `None` when the slice leaves one out (the API calls that unknown).
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    /// The EndpointSlice it was discovered from.
    pub endpoint_slice: String,
    /// Other slices that list the same address and port (it is asked once).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_in: Vec<String>,
}

/// What the EndpointSlices of one Service say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Discovered {
    /// The Kubernetes Service (`caracal-caracal-gateway`).
    pub service: String,
    pub namespace: String,
    /// The slices read, by name.
    pub endpoint_slices: Vec<String>,
    pub instances: Vec<Instance>,
    /// Endpoints or slices that could not be used, each saying why (no `http` port, an address that is none).
    pub problems: Vec<String>,
}

impl Discovered {
    /// Why there is nothing to ask, when there is nothing: no slice at all, or slices without endpoints. `None`
    /// when there are instances, or endpoints that could not be used (the problems say why).
    pub fn absent(&self) -> Option<String> {
        if !self.instances.is_empty() || !self.problems.is_empty() {
            return None;
        }
        Some(if self.endpoint_slices.is_empty() {
            format!(
                "Service `{}` has no EndpointSlice in namespace `{}` (no such Service, or another release name)",
                self.service, self.namespace
            )
        } else {
            format!(
                "Service `{}` has no endpoints (EndpointSlice {}): no pod of it is running",
                self.service,
                self.endpoint_slices.join(", ")
            )
        })
    }

    /// One line for `preserve check`: how many pods, and each with its state.
    pub fn summary(&self) -> String {
        let pods: Vec<String> = self
            .instances
            .iter()
            .map(|i| format!("{} ({}, {})", i.pod.as_deref().unwrap_or(&i.address), i.address, i.state()))
            .collect();
        format!("{} pod(s) of Service `{}` discovered: {}", self.instances.len(), self.service, pods.join(", "))
    }
}

impl Instance {
    /// `ready`, `not ready` or `terminating`, as a word for messages.
    pub fn state(&self) -> &'static str {
        match (self.terminating, self.ready) {
            (Some(true), _) => "terminating",
            (_, Some(false)) => "not ready",
            (_, Some(true)) => "ready",
            (_, None) => "readiness unknown",
        }
    }
}

/// Why the pods of a service could not be discovered.
#[derive(Debug, thiserror::Error)]
#[error(
    "discovering the pods of service `{service}` from the EndpointSlices of Service `{kube_service}`: {source}{}{}",
    innermost(source),
    hint(source)
)]
pub struct DiscoveryError {
    pub service: String,
    pub kube_service: String,
    #[source]
    pub source: Error,
}

/// The innermost cause of a request that got no answer (`Connection refused`), which the client's own words
/// ("client error (Connect)") leave out.
fn innermost(e: &Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    let mut depth = 0;
    while let Some(next) = cause.source() {
        cause = next;
        depth += 1;
    }
    // An API error's Status message is already said whole.
    if depth < 2 || e.code().is_some() {
        return String::new();
    }
    format!(": {}", cause.to_string().chars().take(200).collect::<String>())
}

/// What to do about a refusal: grant the read, or list the URLs by hand.
fn hint(e: &Error) -> &'static str {
    match e.code() {
        Some(403) => {
            " (grant the service account `list` on endpointslices.discovery.k8s.io in the namespace, or list the \
             service's URLs in the site config's [services])"
        }
        _ => "",
    }
}

/// The chart's Service of a Caracal service: `<release>-caracal-<svc>`.
pub fn service_name(site: &crate::config::KubernetesSite, service: &str) -> String {
    format!("{}-{service}", site.fullname())
}

/// Lists the EndpointSlices of Caracal's Service for `service` (`gateway`) and turns them into instances.
pub async fn discover(api: &Api, service: &str) -> Result<Discovered, DiscoveryError> {
    let kube_service = service_name(&api.site, service);
    let selector = format!("kubernetes.io/service-name={kube_service}");
    let list = api.list("discovery.k8s.io/v1", "endpointslices", Some(&selector), None).await.map_err(|source| {
        DiscoveryError { service: service.to_string(), kube_service: kube_service.clone(), source }
    })?;
    Ok(from_list(&kube_service, &api.namespace, &list))
}

/// The instances an `EndpointSliceList` describes, in the order of the slices' names and their endpoints.
pub fn from_list(kube_service: &str, namespace: &str, list: &Value) -> Discovered {
    let mut d =
        Discovered { service: kube_service.to_string(), namespace: namespace.to_string(), ..Default::default() };
    let mut slices: Vec<&Value> = list["items"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    slices.sort_by_key(|s| s["metadata"]["name"].as_str().unwrap_or_default().to_string());
    // (address, port) -> index in `d.instances`.
    let mut seen: BTreeMap<(String, u16), usize> = BTreeMap::new();
    let mut beyond = 0usize;
    for slice in slices {
        let name = short(slice["metadata"]["name"].as_str().unwrap_or("(unnamed)"));
        d.endpoint_slices.push(name.clone());
        let endpoints = slice["endpoints"].as_array().map(Vec::as_slice).unwrap_or_default();
        if endpoints.is_empty() {
            continue;
        }
        let port = match http_port(slice) {
            Ok(p) => p,
            Err(why) => {
                d.problems.push(format!("EndpointSlice {name}: {why}"));
                continue;
            }
        };
        let fqdn = slice["addressType"].as_str() == Some("FQDN");
        for e in endpoints {
            let Some(raw) = e["addresses"].as_array().and_then(|a| a.first()).and_then(Value::as_str) else {
                d.problems.push(format!("EndpointSlice {name}: an endpoint without an address"));
                continue;
            };
            let Some((address, host)) = host(raw, fqdn) else {
                d.problems.push(format!("EndpointSlice {name}: `{}` is not an address", short(raw)));
                continue;
            };
            if let Some(&i) = seen.get(&(address.clone(), port)) {
                d.instances[i].also_in.push(name.clone());
                continue;
            }
            if d.instances.len() == MAX_INSTANCES {
                beyond += 1;
                continue;
            }
            let pod = e["targetRef"]["name"].as_str().map(short);
            let condition = |c: &str| e["conditions"][c].as_bool();
            seen.insert((address.clone(), port), d.instances.len());
            d.instances.push(Instance {
                folder: String::new(),
                url: format!("http://{host}:{port}"),
                pod,
                address,
                port,
                ready: condition("ready"),
                serving: condition("serving"),
                terminating: condition("terminating"),
                endpoint_slice: name.clone(),
                also_in: Vec::new(),
            });
        }
    }
    if beyond > 0 {
        d.problems.push(format!("{beyond} more endpoint(s) beyond the first {MAX_INSTANCES} were not asked"));
    }
    name_folders(&mut d.instances);
    d
}

/// The slice's port for Caracal's HTTP: the one named `http`, else its only port.
fn http_port(slice: &Value) -> Result<u16, String> {
    let ports = slice["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
    let number = |p: &Value| p["port"].as_u64().and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0);
    let chosen = match ports.iter().find(|p| p["name"].as_str() == Some("http")) {
        Some(p) => p,
        None if ports.len() == 1 => &ports[0],
        None => {
            let names: Vec<String> =
                ports.iter().map(|p| format!("`{}`", short(p["name"].as_str().unwrap_or("")))).collect();
            return Err(format!("no port named `http` among {} port(s) {}", ports.len(), names.join(", ")));
        }
    };
    number(chosen).ok_or_else(|| "its port has no number".to_string())
}

/// The address as recorded and as written in a URL's host: an IP address (IPv6 in brackets), or in an `FQDN`
/// slice a host name; `None` for anything else, which must not be put into a URL.
fn host(raw: &str, fqdn: bool) -> Option<(String, String)> {
    match raw.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => Some((v4.to_string(), v4.to_string())),
        Ok(IpAddr::V6(v6)) => Some((v6.to_string(), format!("[{v6}]"))),
        Err(_) if fqdn && is_host_name(raw) => Some((raw.to_string(), raw.to_string())),
        Err(_) => None,
    }
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A name from the API, cut to a length a message can hold.
fn short(s: &str) -> String {
    s.chars().take(253).collect()
}

/// Each instance's folder: its pod's name made safe (as [`crate::sources::http`] names instance folders), or its
/// address when it names no pod or a name that makes no folder; a name taken twice gets the address added.
fn name_folders(instances: &mut [Instance]) {
    let mut taken = std::collections::BTreeSet::new();
    for i in instances.iter_mut() {
        let by_address = || safe(&i.address);
        let mut folder = i.pod.as_deref().map(safe).filter(|f| !f.is_empty()).unwrap_or_else(by_address);
        if taken.contains(&folder) {
            folder = safe(&format!("{folder}_{}", i.address));
        }
        taken.insert(folder.clone());
        i.folder = folder;
    }
}

/// One path segment ([`crate::sources::path_segment`]) of at most [`MAX_FOLDER`] characters.
fn safe(s: &str) -> String {
    crate::sources::path_segment(s).chars().take(MAX_FOLDER).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(name: &str, ports: Value, address_type: &str, endpoints: Value) -> Value {
        json!({ "metadata": { "name": name }, "addressType": address_type, "ports": ports, "endpoints": endpoints })
    }

    fn endpoint(addr: &str, ready: bool, terminating: bool, pod: Option<&str>) -> Value {
        let mut e = json!({ "addresses": [addr],
                            "conditions": { "ready": ready, "serving": ready || terminating, "terminating": terminating } });
        if let Some(p) = pod {
            e["targetRef"] = json!({ "kind": "Pod", "name": p });
        }
        e
    }

    #[test]
    fn ready_not_ready_and_terminating_endpoints_are_all_instances_named_by_pod() {
        let http = json!([{ "name": "metrics", "port": 9100 }, { "name": "http", "port": 8081 }]);
        let list = json!({ "items": [
            slice("gw-b", http.clone(), "IPv4", json!([endpoint("10.0.0.3", false, true, Some("gw-2")),
                                                      endpoint("10.0.0.1", true, false, Some("gw-0"))])),
            slice("gw-a", http, "IPv4", json!([endpoint("10.0.0.1", true, false, Some("gw-0")),
                                              endpoint("10.0.0.2", false, false, Some("gw-1"))])),
        ]});
        let d = from_list("caracal-caracal-gateway", "caracal", &list);
        let got: Vec<(&str, &str, &str, &str)> = d
            .instances
            .iter()
            .map(|i| (i.folder.as_str(), i.url.as_str(), i.state(), i.endpoint_slice.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("gw-0", "http://10.0.0.1:8081", "ready", "gw-a"),
                ("gw-1", "http://10.0.0.2:8081", "not ready", "gw-a"),
                ("gw-2", "http://10.0.0.3:8081", "terminating", "gw-b"),
            ]
        );
        assert_eq!(d.instances[0].also_in, ["gw-b"], "an address in two slices is asked once");
        assert_eq!(d.absent(), None);
    }

    #[test]
    fn ipv6_is_bracketed_the_only_port_is_used_and_hostile_names_make_safe_folders() {
        let list = json!({ "items": [slice("s", json!([{ "port": 8080 }]), "IPv6", json!([
            endpoint("fd00::1", true, false, None),
            endpoint("fd00::2", true, false, Some("../../etc")),
            endpoint("fd00::3", true, false, Some("../../etc")),
            endpoint("10.0.0.1/evil@x", true, false, Some("x")),
        ]))]});
        let d = from_list("svc", "ns", &list);
        let got: Vec<(&str, &str)> = d.instances.iter().map(|i| (i.folder.as_str(), i.url.as_str())).collect();
        assert_eq!(
            got,
            [
                ("fd00__1", "http://[fd00::1]:8080"),
                ("_.._.._etc", "http://[fd00::2]:8080"),
                ("_.._.._etc_fd00__3", "http://[fd00::3]:8080"),
            ]
        );
        assert_eq!(d.problems, ["EndpointSlice s: `10.0.0.1/evil@x` is not an address"]);
    }

    #[test]
    fn no_slice_no_endpoint_and_no_http_port_say_why() {
        let none = from_list("caracal-caracal-gateway", "caracal", &json!({ "items": [] }));
        assert!(none.absent().unwrap().contains("Service `caracal-caracal-gateway` has no EndpointSlice"));
        let empty = from_list("svc", "ns", &json!({ "items": [slice("svc-1", json!([]), "IPv4", json!([]))] }));
        assert!(empty.absent().unwrap().contains("has no endpoints (EndpointSlice svc-1)"), "{:?}", empty.absent());
        let ports = json!([{ "name": "grpc", "port": 1 }, { "name": "metrics", "port": 2 }]);
        let list =
            json!({ "items": [slice("svc-1", ports, "IPv4", json!([endpoint("10.0.0.1", true, false, None)]))] });
        let d = from_list("svc", "ns", &list);
        assert_eq!(d.absent(), None);
        assert!(d.problems[0].contains("no port named `http` among 2 port(s) `grpc`, `metrics`"), "{:?}", d.problems);
    }
}

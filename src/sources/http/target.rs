//! Where a request goes. `{label}` placeholders are filled from the alert, and the final URL, as the client sends
//! it (dot segments resolved) and as a server routes it (percent-escapes decoded, `\` read as `/`), is checked
//! against the endpoints preserve never calls. So a label cannot steer a request to another endpoint, and a
//! configured path cannot hide a refused one behind `/../` or `%2e`.

use std::{collections::BTreeMap, sync::LazyLock};

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

/// Escapes that decode to a dot, a slash, a backslash or another escape: in a configured path they only serve to
/// hide a dot segment or a refused endpoint from a check that reads the path as written.
const HIDING_ESCAPES: [&str; 4] = ["%2e", "%2f", "%5c", "%25"];

/// Why a request was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsent {
    #[error("needs the alert label `{0}`, which is not given")]
    MissingLabel(String),
    #[error("not sent: the alert label `{label}` {why}")]
    UnsafeLabel { label: String, why: &'static str },
    #[error("not sent: {path} is refused: it {why}")]
    Refused { path: String, why: &'static str },
    #[error("not sent: {path} holds a dot segment (`.` or `..`) once decoded, which a server resolves to another path")]
    DotSegment { path: String },
    #[error("not sent: `{url}` is not a valid URL: {reason}")]
    BadUrl { url: String, reason: String },
}

impl Unsent {
    /// Whether the request was refused for what the alert or the site gave, rather than merely lacking a label.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Unsent::MissingLabel(_))
    }
}

/// Why a path may not be requested, if it may not. `path` may hold a query, which is not considered.
pub fn refused(path: &str) -> Option<&'static str> {
    refused_route(&route(path.split('?').next().unwrap_or(path)))
}

/// The same, for a path already in the form a server routes on ([`route`]).
fn refused_route(routed: &str) -> Option<&'static str> {
    static COMPILED: LazyLock<Vec<(regex::Regex, &'static str)>> =
        LazyLock::new(|| REFUSED.iter().map(|(re, why)| (regex::Regex::new(re).expect("valid regex"), *why)).collect());
    let routed = routed.to_ascii_lowercase();
    COMPILED.iter().find(|(re, _)| re.is_match(&routed)).map(|(_, why)| *why)
}

/// A path (no query) as a lenient server may route it: percent-escapes decoded, repeatedly (a proxy in front may
/// decode once more), backslashes read as slashes and runs of slashes merged.
fn route(path: &str) -> String {
    let decoded = decode_fully(path).replace('\\', "/");
    let mut out = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

fn decode_fully(s: &str) -> String {
    let mut s = s.to_string();
    // Each round shortens the text; four rounds undo any encoding a proxy chain plausibly applies.
    for _ in 0..4 {
        let d = percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned();
        if d == s {
            break;
        }
        s = d;
    }
    s
}

fn has_dot_segment(routed: &str) -> bool {
    routed.split('/').any(|s| s == "." || s == "..")
}

/// Checks a configured path template (`/v1/zones/{zone_id}/admin-audit?limit=1000`) before anything runs.
pub fn check_template(template: &str) -> Result<(), PathError> {
    if !template.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let path = template.split('?').next().unwrap_or(template);
    let lower = path.to_ascii_lowercase();
    if let Some(escape) = HIDING_ESCAPES.iter().find(|e| lower.contains(*e)) {
        return Err(PathError::HidingEscape { template: template.to_string(), escape });
    }
    if has_dot_segment(&route(path)) {
        return Err(PathError::DotSegment(template.to_string()));
    }
    match refused_route(&route(path)) {
        Some(why) => Err(PathError::Refused { template: template.to_string(), why }),
        None => Ok(()),
    }
}

/// Why a request's path is not sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with `/`")]
    NotAbsolute,
    #[error(
        "path `{template}` holds the escape `{escape}` (an encoded dot, slash or percent sign): write the path as the \
         server should read it"
    )]
    HidingEscape { template: String, escape: &'static str },
    #[error("path `{0}` holds a dot segment (`/./` or `/../`), which a client resolves to another endpoint")]
    DotSegment(String),
    /// A route of Caracal's that writes or reveals a secret, with what it does.
    #[error("{template} is refused: it {why}")]
    Refused { template: String, why: &'static str },
}

/// The URL a request is sent to: `template` filled from `labels` and joined to `base`, then checked in its final
/// form. The URL returned is the one to send, so the check and the request cannot disagree.
pub fn request_url(base: &str, template: &str, labels: &BTreeMap<String, String>) -> Result<reqwest::Url, Unsent> {
    let filled = fill(template, labels)?;
    let joined = format!("{}{filled}", base.trim_end_matches('/'));
    let url = reqwest::Url::parse(&joined).map_err(|e| Unsent::BadUrl {
        url: crate::config::strip_password(&joined).unwrap_or_default(),
        reason: e.to_string(),
    })?;
    let routed = route(url.path());
    if has_dot_segment(&routed) {
        return Err(Unsent::DotSegment { path: url.path().to_string() });
    }
    if let Some(why) = refused_route(&routed) {
        return Err(Unsent::Refused { path: url.path().to_string(), why });
    }
    Ok(url)
}

/// What stays as it is in a path segment (RFC 3986 unreserved); everything else is percent-encoded.
const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `{label}` placeholders filled from the alert's labels, percent-encoded. A label filling a path must be one
/// whole segment; one filling the query only needs to be free of NUL (it is encoded, so it cannot end its value).
fn fill(template: &str, labels: &BTreeMap<String, String>) -> Result<String, Unsent> {
    let (path, query) = match template.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (template, None),
    };
    let mut out = fill_part(path, labels, true)?;
    if let Some(q) = query {
        out.push('?');
        out.push_str(&fill_part(q, labels, false)?);
    }
    Ok(out)
}

fn fill_part(part: &str, labels: &BTreeMap<String, String>, in_path: bool) -> Result<String, Unsent> {
    static PLACEHOLDER: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"\{([A-Za-z_][A-Za-z0-9_]*)\}").expect("valid regex"));
    let mut out = String::with_capacity(part.len());
    let mut last = 0;
    for c in PLACEHOLDER.captures_iter(part) {
        let (whole, name) = (c.get(0).map_or(0..0, |m| m.range()), &c[1]);
        out.push_str(&part[last..whole.start]);
        let value = labels.get(name).ok_or_else(|| Unsent::MissingLabel(name.to_string()))?;
        if let Some(why) = label_problem(value, in_path) {
            return Err(Unsent::UnsafeLabel { label: name.to_string(), why });
        }
        out.push_str(&percent_encoding::utf8_percent_encode(value, UNRESERVED).to_string());
        last = whole.end;
    }
    out.push_str(&part[last..]);
    Ok(out)
}

/// Why a label's value may not fill a placeholder. Judged on the value decoded as a server would decode it, so
/// `%2e%2e` is the dot segment it encodes.
fn label_problem(value: &str, in_path: bool) -> Option<&'static str> {
    let decoded = decode_fully(value);
    if value.contains('\0') || decoded.contains('\0') {
        return Some("holds a NUL character");
    }
    if !in_path {
        return None;
    }
    if decoded.is_empty() {
        return Some("is empty, which would drop a path segment");
    }
    if decoded.split(['/', '\\']).any(|s| s == "." || s == "..") {
        return Some("is or encodes a dot segment (`.` or `..`), which would send the request to another endpoint");
    }
    if decoded.contains(['/', '\\']) {
        return Some("holds a slash, which would send the request to another endpoint");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn side_effect_endpoints_are_refused_however_written() {
        assert!(refused("/v1/zones/z1/applications/app-1/client-secret").is_some());
        assert!(refused("/api/audit/dlq/replay?all=1").is_some());
        assert!(refused("/zones/z1/outbox/o-9/requeue").is_some());
        assert!(refused("/api/audit/dlq?limit=1000").is_none());
        assert!(refused("/v1/zones/z1/audit/by-request/r1/explain").is_none());
        assert!(refused("/api/audit/dlq/%72eplay").is_some(), "an escaped letter");
        assert!(refused("/api/audit/dlq%2Freplay").is_some(), "an escaped slash");
        assert!(refused(r"/api\audit\dlq\replay").is_some(), "backslashes");
        assert!(refused("/api//audit/dlq/REPLAY").is_some(), "doubled slashes and case");
    }

    #[test]
    fn templates_with_dot_segments_or_hiding_escapes_are_refused() {
        for (t, says) in [
            ("/v1/zones/../admin-audit", "dot segment"),
            ("/v1/./ready", "dot segment"),
            ("/v1/zones/{zone_id}/..", "dot segment"),
            (r"/v1\..\ready", "dot segment"),
            ("/v1/zones/%2e%2e/admin-audit", "`%2e`"),
            ("/v1/zones/%2E/x", "`%2e`"),
            ("/api/audit/dlq%2freplay", "`%2f`"),
            ("/api/audit/%252e", "`%25`"),
            ("/api/audit/dlq/replay", "replays the audit DLQ"),
            ("/api/audit/dlq/%72eplay", "replays the audit DLQ"),
            ("ready", "must start with `/`"),
        ] {
            let e = check_template(t).unwrap_err();
            assert!(e.to_string().contains(says), "{t}: {e}");
        }
        for t in [
            "/.well-known/jwks.json",
            "/metrics.json",
            "/v1/zones/{zone_id}/admin-audit?limit=1000",
            "/api/audit/search?q=a%2eb",
        ] {
            assert_eq!(check_template(t), Ok(()), "{t}");
        }
    }

    #[test]
    fn labels_fill_single_segments_and_cannot_steer() {
        let l = labels(&[("zone_id", "z 1.a"), ("request_id", "r-1")]);
        assert_eq!(fill("/v1/zones/{zone_id}/audit", &l).unwrap(), "/v1/zones/z%201.a/audit");
        assert_eq!(fill("/x/{missing}", &l).unwrap_err(), Unsent::MissingLabel("missing".into()));
        for bad in ["..", ".", "%2e%2e", "%2E", "%252e%252e", "../admin", "a/b", r"a\b", "a%2fb", "", "z\0"] {
            let e = fill("/v1/zones/{zone_id}/admin-audit", &labels(&[("zone_id", bad)])).unwrap_err();
            assert!(matches!(&e, Unsent::UnsafeLabel { label, .. } if label == "zone_id"), "{bad:?}: {e}");
        }
        // In the query a label is only a value: encoded, it cannot leave it.
        assert_eq!(fill("/search?zone_id={zone_id}", &labels(&[("zone_id", "..")])).unwrap(), "/search?zone_id=..");
        assert!(fill("/search?zone_id={zone_id}", &labels(&[("zone_id", "a\0")])).is_err());
    }

    #[test]
    fn the_final_url_is_checked() {
        let base = "http://127.0.0.1:1/";
        let l = labels(&[("view", "replay"), ("zone_id", "z1")]);
        let e = request_url(base, "/api/audit/dlq/{view}", &l).unwrap_err();
        assert!(matches!(&e, Unsent::Refused { path, .. } if path == "/api/audit/dlq/replay"), "{e}");
        // A base URL with its own prefix is part of the final path.
        let e = request_url("http://h/api/audit", "/dlq/{view}", &l).unwrap_err();
        assert!(e.is_refusal(), "{e}");
        let ok = request_url(base, "/v1/zones/{zone_id}/admin-audit?limit=10", &l).unwrap();
        assert_eq!(ok.as_str(), "http://127.0.0.1:1/v1/zones/z1/admin-audit?limit=10");
    }
}

//! How failed requests are worded in the collector's error: one clause per instance and cause ("5 requests to
//! 127.0.0.1:8080 refused"), not the client's chain of causes once per request. Each request's record
//! (`<instance>/<name>.response.json`, the manifest's `details.requests`) keeps its own error whole.

use std::time::Duration;

/// The longest cause quoted in a clause; the request's record has it whole.
const CAUSE: usize = 120;

/// Why one request got no complete answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens there.
    Refused,
    /// No answer within the request's limit.
    TimedOut(Duration),
    /// No connection for another reason (a name that does not resolve, a certificate not trusted).
    Connect(String),
    /// Anything else (a body cut off, an artifact that could not be written).
    Other(String),
}

impl Failure {
    /// The cause of a client error, from its innermost source: reqwest's own words are only "error sending
    /// request for url (...)", the same for every request.
    pub fn of(e: &reqwest::Error, limit: Duration) -> Self {
        if e.is_timeout() {
            return Failure::TimedOut(limit);
        }
        let mut innermost: &dyn std::error::Error = e;
        let mut refused = false;
        while let Some(next) = innermost.source() {
            if next
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            {
                refused = true;
            }
            innermost = next;
        }
        let cause = innermost.to_string();
        match () {
            _ if refused => Failure::Refused,
            _ if e.is_connect() => Failure::Connect(cause),
            _ => Failure::Other(cause),
        }
    }

    /// What happened, after "N requests to <host:port>".
    fn phrase(&self) -> String {
        match self {
            Failure::Refused => "refused".into(),
            Failure::TimedOut(d) => format!("timed out after {}", human(*d)),
            Failure::Connect(cause) => format!("could not connect: {}", short(cause)),
            Failure::Other(cause) => format!("failed: {}", short(cause)),
        }
    }
}

/// The failures of one collector's requests, grouped by where they went and why they failed, in the order first
/// met.
#[derive(Debug, Default)]
pub struct Failures {
    groups: Vec<Group>,
}

#[derive(Debug)]
struct Group {
    authority: String,
    phrase: String,
    requests: Vec<String>,
}

impl Failures {
    /// Records that request `name` to `authority` (`host:port`) failed.
    pub fn add(&mut self, authority: &str, name: &str, failure: &Failure) {
        let phrase = failure.phrase();
        match self.groups.iter_mut().find(|g| g.authority == authority && g.phrase == phrase) {
            Some(g) => g.requests.push(name.to_string()),
            None => {
                self.groups.push(Group { authority: authority.to_string(), phrase, requests: vec![name.to_string()] })
            }
        }
    }

    /// One clause per group: "5 requests to 127.0.0.1:8080 refused", or, for one request, "request `ready` to
    /// 127.0.0.1:8080 refused".
    pub fn clauses(&self) -> Vec<String> {
        self.groups
            .iter()
            .map(|g| match g.requests.as_slice() {
                [one] => format!("request `{one}` to {} {}", g.authority, g.phrase),
                many => format!("{} requests to {} {}", many.len(), g.authority, g.phrase),
            })
            .collect()
    }
}

/// `host:port` of a URL, as the clauses name where a request went.
pub fn authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

fn short(cause: &str) -> String {
    let one_line: String = cause.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= CAUSE {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(CAUSE - 1).collect();
    cut.push('…');
    cut
}

fn human(d: Duration) -> String {
    jiff::SignedDuration::try_from(d).map(|d| format!("{d:#}")).unwrap_or_else(|_| format!("{d:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_failing_alike_are_one_clause() {
        let mut f = Failures::default();
        for name in ["metrics", "metrics_json", "ready", "health", "jwks"] {
            f.add("127.0.0.1:8080", name, &Failure::Refused);
        }
        f.add("127.0.0.1:8081", "slow", &Failure::TimedOut(Duration::from_secs(1)));
        f.add("127.0.0.1:8081", "ready", &Failure::Other("body interrupted after 3 bytes: reset".into()));
        assert_eq!(
            f.clauses(),
            [
                "5 requests to 127.0.0.1:8080 refused",
                "request `slow` to 127.0.0.1:8081 timed out after 1s",
                "request `ready` to 127.0.0.1:8081 failed: body interrupted after 3 bytes: reset",
            ]
        );
    }

    #[test]
    fn causes_are_short_and_on_one_line() {
        let long = Failure::Other(format!("line\n{}", "x".repeat(500)));
        let phrase = long.phrase();
        assert!(phrase.chars().count() <= CAUSE + "failed: ".len() && !phrase.contains('\n'), "{phrase}");
    }
}

//! The cluster's view of the release: its pods (specs and statuses: restarts, last terminations, image digests,
//! nodes), workloads with their rollout revisions, disruption budgets, autoscalers and migration Jobs, and the
//! namespace's events in the window. Each resource is one part: a list the API refuses (RBAC's 403) or cannot give
//! is a warning naming it, and the other parts are still written. Secrets are never read.
//!
//! Objects are written as JSON Lines, one object per line as the API sent it: an env entry's name and value stay
//! on one line, where the redactor reads them together.

use std::io::Write;

use serde_json::{Value, json};

use super::{Api, ClusterSpec};
use crate::sources::{CollectError, Collection, Outcome, Verdict};

/// One resource listed.
struct Part {
    artifact: &'static str,
    group_version: &'static str,
    resource: &'static str,
    /// Whether the release's label selector applies (events are the namespace's).
    of_release: bool,
}

const PARTS: &[Part] = &[
    Part { artifact: "pods.jsonl", group_version: "v1", resource: "pods", of_release: true },
    Part { artifact: "deployments.jsonl", group_version: "apps/v1", resource: "deployments", of_release: true },
    Part { artifact: "statefulsets.jsonl", group_version: "apps/v1", resource: "statefulsets", of_release: true },
    Part { artifact: "replicasets.jsonl", group_version: "apps/v1", resource: "replicasets", of_release: true },
    Part { artifact: "jobs.jsonl", group_version: "batch/v1", resource: "jobs", of_release: true },
    Part {
        artifact: "poddisruptionbudgets.jsonl",
        group_version: "policy/v1",
        resource: "poddisruptionbudgets",
        of_release: true,
    },
    Part {
        artifact: "horizontalpodautoscalers.jsonl",
        group_version: "autoscaling/v2",
        resource: "horizontalpodautoscalers",
        of_release: true,
    },
    Part { artifact: "events.jsonl", group_version: "v1", resource: "events", of_release: false },
];

pub async fn collect(api: &Api, _spec: &ClusterSpec, cx: &Collection, max_bytes: u64) -> Result<Outcome, CollectError> {
    let mut out = Outcome::default();
    let selector = api.site.selector(None);
    let mut counts = serde_json::Map::new();
    let mut failed = 0;
    let mut left = max_bytes;
    for part in PARTS {
        if cx.is_cancelled() {
            return Err(CollectError::Cancelled);
        }
        let label = part.of_release.then_some(selector.as_str());
        match write_part(api, cx, part, label, &mut left).await? {
            Ok(written) => {
                counts.insert(part.resource.into(), written.objects.into());
                if written.cut {
                    out.warn(format!("max_bytes reached: {} {} written", written.objects, part.resource));
                }
                if part.resource == "pods" {
                    let text = serde_json::to_string_pretty(&written.summaries)?;
                    cx.write_small("pods.summary.json", "application/json", text.as_bytes())?;
                }
            }
            Err(e) => {
                failed += 1;
                out.warn(cx.redact_str(&e.to_string()));
            }
        }
    }
    out.detail("namespace", &api.namespace);
    out.detail("selector", &selector);
    out.detail("objects", &counts);
    if failed == PARTS.len() {
        out.verdict = Verdict::AllFailed("no resource could be listed".into());
    }
    Ok(out)
}

/// Objects asked for in one page: each answer is held whole, so a namespace's thousands of events come a page at a
/// time.
const PAGE: u32 = 250;

/// What one resource's part wrote.
struct Written {
    objects: usize,
    cut: bool,
    /// The pods' summaries, when the part is the pods.
    summaries: Vec<Value>,
}

/// Lists one resource a page at a time into its artifact, one object per line, within what is `left` of the byte
/// budget. The API's refusal of the first page is the part's error (nothing written); a page failing later ends
/// the artifact there, marked truncated, and is that error too.
async fn write_part(
    api: &Api,
    cx: &Collection,
    part: &Part,
    label: Option<&str>,
    left: &mut u64,
) -> Result<Result<Written, super::Error>, CollectError> {
    let first = match api.list_page(part.group_version, part.resource, label, PAGE, None).await {
        Ok(page) => page,
        Err(e) => return Ok(Err(e)),
    };
    let io = CollectError::io(format!("writing {}", part.artifact));
    let mut a = cx.text_artifact(part.artifact, "application/x-ndjson")?;
    let mut written = Written { objects: 0, cut: false, summaries: Vec::new() };
    let mut page = first;
    let mut failure = None;
    'pages: loop {
        for item in page["items"].as_array().into_iter().flatten() {
            if part.resource == "events" && !in_window(item, cx) {
                continue;
            }
            let mut line = serde_json::to_vec(item)?;
            line.push(b'\n');
            if line.len() as u64 > *left {
                written.cut = true;
                break 'pages;
            }
            *left -= line.len() as u64;
            if let Err(e) = a.write_all(&line) {
                a.abandon(&e.to_string());
                return Err(io(e));
            }
            written.objects += 1;
            if part.resource == "pods" {
                written.summaries.push(pod_summary(item));
            }
        }
        let Some(token) = page["metadata"]["continue"].as_str().filter(|t| !t.is_empty()).map(String::from) else {
            break;
        };
        match api.list_page(part.group_version, part.resource, label, PAGE, Some(&token)).await {
            Ok(next) => page = next,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    a.add_records(written.objects as u64);
    if written.cut || failure.is_some() {
        a.set_truncated();
    }
    a.finish().map_err(io)?;
    Ok(match failure {
        Some(e) => Err(e),
        None => Ok(written),
    })
}

/// When an event happened: its last occurrence (`lastTimestamp`, or `series.lastObservedTime`), else its
/// `eventTime`, `firstTimestamp` or creation.
fn event_times(e: &Value) -> (Option<jiff::Timestamp>, Option<jiff::Timestamp>) {
    let at = |v: &Value| v.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok());
    let first =
        at(&e["firstTimestamp"]).or_else(|| at(&e["eventTime"])).or_else(|| at(&e["metadata"]["creationTimestamp"]));
    let last = at(&e["lastTimestamp"]).or_else(|| at(&e["series"]["lastObservedTime"])).or_else(|| at(&e["eventTime"]));
    (first, last.or(first))
}

/// Whether an event happened in the window: any of its occurrences, from the first to the last, inside it. An
/// event with no time at all is kept (better one too many than a lost one).
fn in_window(e: &Value, cx: &Collection) -> bool {
    let (first, last) = event_times(e);
    let (Some(first), Some(last)) = (first, last) else { return true };
    cx.window.since.is_none_or(|s| last >= s) && cx.window.until.is_none_or(|u| first <= u)
}

/// What an operator reads first of a pod: where it runs, whether it is ready, how often each container restarted
/// and why it last ended, and exactly which image it runs.
fn pod_summary(p: &Value) -> Value {
    let containers: Vec<Value> = p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let last = &c["lastState"]["terminated"];
            json!({
                "name": c["name"],
                "ready": c["ready"],
                "restart_count": c["restartCount"],
                "state": c["state"].as_object().and_then(|s| s.keys().next().cloned()),
                "last_termination": last.is_object().then(|| json!({
                    "reason": last["reason"],
                    "exit_code": last["exitCode"],
                    "signal": last["signal"],
                    "started_at": last["startedAt"],
                    "finished_at": last["finishedAt"],
                    "message": last["message"],
                })),
                "image": c["image"],
                "image_id": c["imageID"],
            })
        })
        .collect();
    let ready = p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True");
    json!({
        "pod": p["metadata"]["name"],
        "component": p["metadata"]["labels"]["app.kubernetes.io/component"],
        "node": p["spec"]["nodeName"],
        "phase": p["status"]["phase"],
        "ready": ready,
        "pod_ip": p["status"]["podIP"],
        "started_at": p["status"]["startTime"],
        "containers": containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_time_is_its_span_of_occurrences() {
        let e = json!({ "firstTimestamp": "2026-12-04T09:00:00Z", "lastTimestamp": "2026-12-04T10:30:00Z" });
        let (first, last) = event_times(&e);
        assert_eq!(first.unwrap().to_string(), "2026-12-04T09:00:00Z");
        assert_eq!(last.unwrap().to_string(), "2026-12-04T10:30:00Z");
        // events.k8s.io-style: only eventTime and a series.
        let e = json!({ "eventTime": "2026-12-04T09:00:00.000000Z", "series": { "lastObservedTime": "2026-12-04T11:00:00Z" } });
        let (first, last) = event_times(&e);
        assert_eq!(
            (first.unwrap().to_string(), last.unwrap().to_string()),
            ("2026-12-04T09:00:00Z".into(), "2026-12-04T11:00:00Z".into())
        );
    }
}

//! Pod logs: every container of every selected pod, the current instance and the previous one (the one that ran
//! before the container's last restart: a crash-looping pod's last words), from the window's start, each line
//! prefixed with the time the kubelet received it. Streamed from the API into the artifact a batch at a time, so a
//! gigabyte of logs takes no more memory than a small one. Lines after the window's end stop the read.
//!
//! Artifacts: `<component>/<pod>/<container>.log` and `<component>/<pod>/<container>.previous.log`.

use std::{collections::BTreeSet, io::Write};

use futures::{AsyncBufReadExt, AsyncReadExt};
use serde_json::{Value, json};

use super::{Api, LogsSpec};
use crate::sources::{CollectError, Collection, Outcome, Verdict};

/// Lines longer than this are written in pieces (as the file kind does).
const MAX_LINE: u64 = 1 << 20;
/// What is gathered from the stream before it is written (and redacted). Written on the async worker: handing each
/// batch to another thread ([`crate::sources::off_worker`]) raised the peak RSS of 1 GiB of pod logs from 54 to
/// 65 MiB (an allocator arena per thread that touches the batches) and saved no time.
const BATCH: usize = 256 << 10;

/// One container instance's log to read.
struct Job {
    component: String,
    pod: String,
    container: String,
    previous: bool,
}

impl Job {
    fn relative(&self) -> String {
        let previous = if self.previous { ".previous" } else { "" };
        // Kubernetes names are DNS labels already; this holds whatever an API server sends.
        let safe = crate::sources::path_segment;
        format!("{}/{}/{}{previous}.log", safe(&self.component), safe(&self.pod), safe(&self.container))
    }
}

/// What reading one container instance's log came to.
struct Read {
    lines: u64,
    bytes: u64,
    truncated: bool,
}

pub async fn collect(api: &Api, spec: &LogsSpec, cx: &Collection, max_bytes: u64) -> Result<Outcome, CollectError> {
    let mut out = Outcome::default();
    let selectors = spec.selectors(&api.site);
    let mut jobs = Vec::new();
    let mut pods_seen = BTreeSet::new();
    let mut listed = 0usize;
    for (component, selector) in &selectors {
        let list = match api.list("v1", "pods", Some(selector), None).await {
            Ok(l) => l,
            Err(e) => {
                out.warn(cx.redact_str(&e.to_string()));
                continue;
            }
        };
        listed += 1;
        let mut pods: Vec<&Value> = list["items"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        pods.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_string());
        for pod in pods {
            let Some(name) = pod["metadata"]["name"].as_str() else { continue };
            if !pods_seen.insert(name.to_string()) {
                continue;
            }
            let component = component
                .map(String::from)
                .or_else(|| pod["metadata"]["labels"]["app.kubernetes.io/component"].as_str().map(String::from))
                .or_else(|| pod["metadata"]["labels"]["app.kubernetes.io/name"].as_str().map(String::from))
                .unwrap_or_else(|| "pods".into());
            jobs.extend(container_jobs(pod, name, &component, spec.previous.unwrap_or(true)));
        }
    }
    if listed == 0 {
        out.verdict = Verdict::AllFailed("no pod could be listed".into());
        return Ok(out);
    }
    if jobs.is_empty() {
        let who = selectors.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join("; ");
        out.absorb(Outcome::absent(format!("no pod in namespace {} matches {who}", api.namespace)));
        return Ok(out);
    }

    // One log at a time, as the file kind reads its files: each big artifact has a compressor of its own, so
    // reading several at once multiplies the memory a collector holds (1 GiB through four pods, tests/memory.rs:
    // peak RSS 84 MiB four at a time, 66 MiB two) and took no less time on two cores.
    let mut left = max_bytes;
    let mut results: Vec<(Job, Result<Read, String>)> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let r = read_one(api, cx, &job, &mut left).await;
        results.push((job, r));
        if cx.is_cancelled() {
            break;
        }
    }
    if cx.is_cancelled() {
        return Err(CollectError::Cancelled);
    }
    let mut index = Vec::new();
    let (mut failed, mut cut) = (0usize, 0usize);
    for (job, r) in &results {
        let mut entry = json!({
            "component": job.component, "pod": job.pod, "container": job.container, "previous": job.previous,
            "artifact": job.relative(),
        });
        match r {
            Ok(read) => {
                entry["lines"] = read.lines.into();
                entry["bytes"] = read.bytes.into();
                if read.truncated {
                    entry["truncated"] = true.into();
                    cut += 1;
                }
            }
            Err(why) => {
                entry["error"] = why.clone().into();
                failed += 1;
                out.warn(why.clone());
            }
        }
        index.push(entry);
    }
    if cut > 0 {
        out.warn(format!("max_bytes ({max_bytes} bytes) reached: {cut} log(s) cut short"));
    }
    out.detail("namespace", &api.namespace);
    out.detail("logs", &index);
    if failed == results.len() {
        out.verdict = Verdict::AllFailed("no log could be read".into());
    }
    Ok(out)
}

/// The logs to read of one pod: each container's current instance, and its previous one when its status says
/// one ran (a restart, or a last termination).
fn container_jobs(pod: &Value, name: &str, component: &str, previous: bool) -> Vec<Job> {
    let statuses: Vec<&Value> =
        pod["status"]["containerStatuses"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let mut jobs = Vec::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let Some(container) = c["name"].as_str() else { continue };
        let job = |previous| Job {
            component: component.to_string(),
            pod: name.to_string(),
            container: container.to_string(),
            previous,
        };
        jobs.push(job(false));
        let status = statuses.iter().find(|s| s["name"].as_str() == Some(container));
        let restarted = status
            .is_some_and(|s| s["restartCount"].as_u64().unwrap_or(0) > 0 || s["lastState"]["terminated"].is_object());
        if previous && restarted {
            jobs.push(job(true));
        }
    }
    jobs
}

/// Streams one container instance's log into its artifact: from the window's start (the API's `sinceTime`, in
/// whole seconds, then exactly here), up to the window's end, within what is `left` of the collector's bytes.
async fn read_one(api: &Api, cx: &Collection, job: &Job, left: &mut u64) -> Result<Read, String> {
    let relative = job.relative();
    let mut stream = api
        .log(&job.pod, &job.container, job.previous, cx.window.since)
        .await
        .map_err(|e| cx.redact_str(&e.to_string()))?;
    let mut artifact = cx.text_artifact(&relative, "text/plain").map_err(|e| format!("{relative}: {e}"))?;
    artifact.set_source(cx.redact_str(&format!(
        "pods/{}/log?container={}{}",
        job.pod,
        job.container,
        if job.previous { "&previous=true" } else { "" }
    )));
    let mut read = Read { lines: 0, bytes: 0, truncated: false };
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH + MAX_LINE as usize);
    let mut line = Vec::with_capacity(8 << 10);
    let mut failure = None;
    loop {
        if cx.is_cancelled() {
            failure = Some("stopped before the end of the log".to_string());
            break;
        }
        line.clear();
        let got = match (&mut stream).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(n) => n as u64,
            Err(e) => {
                failure = Some(format!("reading the log of {}/{}: {e}", job.pod, job.container));
                break;
            }
        };
        match line_time(&line) {
            Some(t) if cx.window.since.is_some_and(|s| t < s) => continue,
            // Lines come in the order the kubelet received them: the first after the window ends the read.
            Some(t) if cx.window.until.is_some_and(|u| t > u) => break,
            _ => {}
        }
        // This line's bytes come out of what the collector's `max_bytes` leaves for all its logs.
        let Some(rest) = left.checked_sub(got) else {
            read.truncated = true;
            break;
        };
        *left = rest;
        batch.extend_from_slice(&line);
        read.lines += 1;
        read.bytes += got;
        if batch.len() >= BATCH {
            artifact.write_all(&batch).map_err(|e| format!("writing {relative}: {e}"))?;
            batch.clear();
        }
    }
    artifact.write_all(&batch).map_err(|e| format!("writing {relative}: {e}"))?;
    artifact.add_records(read.lines);
    if read.truncated {
        artifact.set_truncated();
    }
    match failure {
        Some(why) => {
            artifact.abandon(&why);
            Err(cx.redact_str(&why))
        }
        None => artifact.finish().map(|()| read).map_err(|e| format!("writing {relative}: {e}")),
    }
}

/// The kubelet's timestamp at the start of a line (`2026-12-04T10:00:00.123456789Z `).
fn line_time(line: &[u8]) -> Option<jiff::Timestamp> {
    let end = memchr::memchr(b' ', &line[..line.len().min(40)])?;
    std::str::from_utf8(&line[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_timestamp_is_read_and_anything_else_is_not_one() {
        let t = line_time(b"2026-12-04T10:00:00.123456789Z {\"msg\":\"x\"}\n").unwrap();
        assert_eq!(t.to_string(), "2026-12-04T10:00:00.123456789Z");
        assert_eq!(line_time(b"{\"msg\":\"no time\"}\n"), None);
        assert_eq!(line_time(b"not-a-time rest\n"), None);
    }
}

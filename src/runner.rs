//! Schedules collectors: all run concurrently, each isolated in its own task with its own timeout, under one
//! deadline for the whole run and one stop signal. A collector that fails, hangs, panics or is stopped is recorded
//! with its status and error; what it wrote is sealed and kept; the others are not affected.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

use crate::{
    bundle::{
        artifact::{Counters, Staging},
        manifest::{CollectorRecord, CollectorStatus},
    },
    config::Environment,
    progress::Progress,
    redact::{Redactor, Tally},
    sources::{CollectError, Collection, Outcome, Source},
    time::Window,
};

/// How long a stopped or timed-out collector gets to wind down (kill its processes, flush) before it is abandoned.
const WIND_DOWN: Duration = Duration::from_secs(2);

/// A collector as it will run.
#[derive(Debug, Clone)]
pub struct PlannedCollector {
    pub name: String,
    pub kind: String,
    pub source: Arc<dyn Source>,
    pub timeout: Duration,
    /// What it reads, credentials removed.
    pub describe: String,
    /// Where it was defined, for errors about it.
    pub origin: Option<crate::catalog::Origin>,
}

/// A request to stop collecting (a signal), with the reason recorded in the manifest.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    token: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl Stop {
    pub fn stop(&self, reason: impl Into<String>) {
        let _ = self.reason.set(reason.into());
        self.token.cancel();
    }
    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

/// What every collector of one run shares.
pub struct RunContext {
    pub env: Arc<Environment>,
    pub window: Window,
    pub labels: std::collections::BTreeMap<String, String>,
    pub plan_summary: Arc<serde_json::Value>,
    pub staging: Arc<Staging>,
    pub redactor: Arc<Redactor>,
    pub run_timeout: Duration,
}

/// What one collector left for the manifest.
pub struct Ran {
    pub record: CollectorRecord,
    pub findings: Vec<crate::bundle::manifest::Finding>,
}

/// Runs every collector and returns their records (artifacts are filled in later from the staging area).
pub async fn run(collectors: Vec<PlannedCollector>, rc: &RunContext, stop: &Stop, progress: &Progress) -> Vec<Ran> {
    let deadline = Instant::now() + rc.run_timeout;
    let runs = collectors.into_iter().map(|c| run_one(c, rc, stop, deadline, progress));
    futures::future::join_all(runs).await
}

enum End {
    Finished(Result<Result<Outcome, CollectError>, JoinError>),
    TimedOut(String),
    Stopped(String),
}

async fn run_one(c: PlannedCollector, rc: &RunContext, stop: &Stop, run_deadline: Instant, progress: &Progress) -> Ran {
    let started_at = Timestamp::now();
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let tally = Arc::new(Tally::default());
    let token = CancellationToken::new();
    let cx = Collection::new(
        c.name.clone(),
        rc.window,
        rc.env.clone(),
        rc.labels.clone(),
        rc.plan_summary.clone(),
        token.clone(),
        rc.staging.clone(),
        rc.redactor.clone(),
        tally.clone(),
        counters.clone(),
    );
    progress.started(&c.name, counters.clone());
    let source = c.source.clone();
    let mut task = tokio::spawn(async move { source.collect(cx).await });

    let own_deadline = started + c.timeout;
    let (deadline, what) = if own_deadline <= run_deadline {
        (own_deadline, format!("timed out after {}", human(c.timeout)))
    } else {
        (run_deadline, format!("cut off by the run timeout of {}", human(rc.run_timeout)))
    };
    let end = tokio::select! {
        r = &mut task => End::Finished(r),
        _ = tokio::time::sleep_until(deadline.into()) => End::TimedOut(what),
        _ = stop.token.cancelled() => End::Stopped(format!("interrupted: {}", stop.reason().unwrap_or("stop requested"))),
    };
    let (status, error, outcome) = match end {
        End::Finished(Ok(Ok(o))) => {
            let (status, error) = o.status();
            (status, error, Some(o))
        }
        End::Finished(Ok(Err(e))) => (CollectorStatus::Failed, Some(e.to_string()), None),
        End::Finished(Err(e)) => (CollectorStatus::Failed, Some(join_error(e)), None),
        End::TimedOut(why) | End::Stopped(why) => {
            let timed_out = !stop.is_stopped();
            rc.staging.stopping(&c.name, &why);
            token.cancel();
            let late = tokio::time::timeout(WIND_DOWN, &mut task).await;
            if late.is_err() {
                task.abort();
            }
            let outcome = match late {
                Ok(Ok(Ok(o))) => Some(o),
                _ => None,
            };
            (if timed_out { CollectorStatus::Timeout } else { CollectorStatus::Partial }, Some(why), outcome)
        }
    };
    // Whatever is still open was cut off: keep it, hashed as written, and say so.
    rc.staging.seal_collector(&c.name, error.as_deref().unwrap_or("the collector returned without closing it"));
    // An artifact that held a known secret was dropped: the collector failed, whatever it reported.
    let leaks = rc.staging.leaks(&c.name);
    let (status, error) = if leaks.is_empty() {
        (status, error)
    } else {
        let mut why = leaks.join("; ");
        // The collector's own error is usually the dropped artifact's failed write, said already.
        if let Some(e) = error.filter(|e| !e.contains("held a known secret")) {
            why = format!("{why}; {e}");
        }
        (CollectorStatus::Failed, Some(why))
    };
    // Everything that reaches the manifest passes the redactor, like the artifacts did.
    let (details, mut findings) = outcome.map(|o| (o.details, o.findings)).unwrap_or_default();
    let mut details = serde_json::Value::Object(details);
    for f in &mut findings {
        f.summary = rc.redactor.redact_str(&f.summary, &tally);
    }
    crate::redact::redact_json(&mut details, &rc.redactor, &tally);
    let record = CollectorRecord {
        name: c.name.clone(),
        kind: c.kind.clone(),
        status,
        error: error.map(|e| rc.redactor.redact_str(&e, &tally)),
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        source: rc.redactor.redact_str(&c.describe, &tally),
        artifacts: Vec::new(),
        redactions: tally.records(),
        details: match details {
            serde_json::Value::Object(m) => m,
            _ => Default::default(),
        },
    };
    progress.finished(&record, &counters);
    Ran { record, findings }
}

fn join_error(e: JoinError) -> String {
    if !e.is_panic() {
        return format!("collector task ended abnormally: {e}");
    }
    let payload = e.into_panic();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into());
    format!("collector panicked: {msg}")
}

fn human(d: Duration) -> String {
    jiff::SignedDuration::try_from(d).map(|d| format!("{d:#}")).unwrap_or_else(|_| format!("{d:?}"))
}

//! From alerts to snapshots under an alert storm: each firing alert is routed to a profile, a repeat within the
//! cooldown is dropped, an alert for a profile already queued or running joins that snapshot, and only then does a
//! new snapshot wait in a bounded queue. At most one snapshot per profile runs at a time, and at most
//! `concurrency` in all. Every run is kept in a short history for `GET /snapshots`.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::{runtime::Handle, sync::Notify};

use super::{
    answered::Answered, metrics::Metrics, metrics::ProfileLabels, metrics::SnapshotLabels, retention, rules::Rules,
};
use crate::{
    alert::Alert,
    bundle::{self, manifest::TriggerKind},
    catalog::Catalog,
    config::Environment,
    progress::Progress,
    redact::{Redactor, Tally},
    runner::Stop,
    snapshot::{self, LateAlerts, Request},
};

/// What `GET /snapshots` (unauthenticated) shows of one alert: at most this many labels, each key and value cut to
/// [`SHOWN_BYTES`]. Together with `serve.listed_snapshots` and `serve.listed_alerts` this bounds the history's
/// memory and the answer's size, whatever the webhooks carried.
const SHOWN_LABELS: usize = 32;
const SHOWN_BYTES: usize = 256;
/// A run's error as shown: errors name paths and systems, never more than a few lines.
const SHOWN_ERROR_BYTES: usize = 2048;
/// Alerts one snapshot carries at most: a flapping alert (a new `startsAt` each time) during a long snapshot must
/// not grow memory and the manifest without bound. The rest are counted as ignored (`run_full`).
const MAX_ALERTS_PER_RUN: usize = 1000;

/// What happened to one alert of a webhook.
#[derive(Debug, Clone, Serialize)]
pub struct Disposition {
    pub alertname: Option<String>,
    pub fingerprint: String,
    /// `queued` (a new snapshot), `attached` (joined a queued or running one), `deduplicated`, `ignored`,
    /// `rejected` (queue full).
    pub disposition: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to one webhook.
#[derive(Debug, Serialize)]
pub struct Accepted {
    /// The snapshots the alerts went to (new, joined, or answered before within the cooldown).
    pub snapshots: Vec<String>,
    pub alerts: Vec<Disposition>,
    /// Some alert needed a new snapshot and the queue was full (or the sidecar is shutting down).
    #[serde(skip)]
    pub refused: Option<&'static str>,
}

/// An alert as recorded in the history.
#[derive(Debug, Clone, Serialize)]
pub struct AlertSummary {
    pub alertname: Option<String>,
    pub fingerprint: String,
    pub starts_at: Option<String>,
    /// Redacted as the bundle's manifest redacts `trigger.alerts`, then cut to size.
    pub labels: BTreeMap<String, String>,
    /// Labels left out past the first 32.
    #[serde(skip_serializing_if = "is_zero")]
    pub labels_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One snapshot of the sidecar, as `GET /snapshots` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub profile: String,
    /// `queued`, `running`, `complete`, `partial`, `failed` (no bundle), `cancelled` (shut down while queued).
    pub status: &'static str,
    /// The first `serve.listed_alerts` of its alerts.
    pub alerts: Vec<AlertSummary>,
    /// How many alerts the run carries (its `alerts` may show fewer).
    pub alerts_total: usize,
    pub queued_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub bundle: Option<PathBuf>,
    pub sha256: Option<String>,
    pub bytes: Option<u64>,
    pub error: Option<String>,
    /// How the bundle was sealed (`[seal]`): `signed by ...; timestamped ...`, or what is missing and why.
    pub seal: Option<String>,
    /// What became of its upload (`[store]`): where it is stored and confirmed, or why not.
    pub upload: Option<String>,
}

/// Why a sidecar's snapshot wrote no bundle; shown as the run's `error` and logged.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Plan(#[from] snapshot::PlanError),
    #[error(transparent)]
    Secrets(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    /// A panic's message, when it had one.
    #[error("snapshot panicked: {0}")]
    Panicked(String),
}

struct Queued {
    id: String,
    profile: String,
    alerts: Vec<Alert>,
}

struct State {
    queue: VecDeque<Queued>,
    /// Profile -> (snapshot id, where late alerts go).
    running: HashMap<String, (String, LateAlerts)>,
    /// Alerts answered within the cooldown, at most `serve.remembered_alerts` of them.
    answered: Answered,
    history: VecDeque<RunRecord>,
    accepting: bool,
}

impl State {
    fn record(&mut self, id: &str) -> Option<&mut RunRecord> {
        self.history.iter_mut().rev().find(|r| r.id == id)
    }
}

pub struct Scheduler {
    pub env: Arc<Environment>,
    catalog: Arc<Catalog>,
    pub rules: Rules,
    pub metrics: Metrics,
    state: Mutex<State>,
    wake: Notify,
    /// Stops every running snapshot (shutdown past half the grace period).
    pub stop: Stop,
    progress: Progress,
    snapshots: Handle,
    /// Redacts the alert labels `GET /snapshots` shows, with the secrets known when the sidecar started.
    redactor: Redactor,
    /// What `preserve check` found at start, as lines (`/readyz` shows them); empty until it finished.
    pub preflight: std::sync::RwLock<Vec<String>>,
}

/// The fingerprint Alertmanager gives an alert; for an alert without one, a hash of its labels.
fn fingerprint(a: &Alert) -> String {
    match &a.fingerprint {
        Some(f) if !f.is_empty() => f.clone(),
        _ => {
            let labels = serde_json::to_vec(&a.labels).unwrap_or_default();
            hex::encode(&Sha256::digest(&labels)[..8])
        }
    }
}

/// `s` cut to at most `max` bytes (at a character boundary), saying how much was left out.
fn shown(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let cut = s.floor_char_boundary(max);
    format!("{}…[{} more bytes]", &s[..cut], s.len() - cut)
}

/// An alert as the unauthenticated `GET /snapshots` shows it: labels through the bundle's own redaction of
/// `trigger.alerts` (known secrets, key names, token shapes), then bounded in count and size.
fn summary(a: &Alert, redactor: &Redactor) -> AlertSummary {
    let mut labels = serde_json::to_value(&a.labels).unwrap_or_default();
    crate::redact::redact_json(&mut labels, redactor, &Tally::default());
    let labels: BTreeMap<String, String> = serde_json::from_value(labels).unwrap_or_default();
    let omitted = labels.len().saturating_sub(SHOWN_LABELS);
    let labels: BTreeMap<String, String> =
        labels.into_iter().take(SHOWN_LABELS).map(|(k, v)| (shown(&k, SHOWN_BYTES), shown(&v, SHOWN_BYTES))).collect();
    AlertSummary {
        alertname: labels.get("alertname").cloned(),
        fingerprint: shown(&fingerprint(a), SHOWN_BYTES),
        starts_at: a.starts_at.as_deref().map(|s| shown(s, SHOWN_BYTES)),
        labels,
        labels_omitted: omitted,
    }
}

impl Scheduler {
    /// `snapshots` is where snapshots run: a runtime of their own, so that a collector busy redacting on a worker
    /// thread never delays the answer to a webhook. `redactor` redacts the alert labels the history shows.
    pub fn new(
        env: Arc<Environment>,
        catalog: Arc<Catalog>,
        rules: Rules,
        snapshots: Handle,
        redactor: Redactor,
    ) -> Arc<Self> {
        let state = State {
            queue: VecDeque::new(),
            running: HashMap::new(),
            answered: Answered::new(env.serve.remembered_alerts),
            history: VecDeque::new(),
            accepting: true,
        };
        Arc::new(Self {
            redactor,
            snapshots,
            env,
            catalog,
            rules,
            metrics: Metrics::default(),
            state: Mutex::new(state),
            wake: Notify::new(),
            stop: Stop::default(),
            progress: Progress::log(),
            preflight: Default::default(),
        })
    }

    /// Runs `preserve check` over the collectors of every profile a rule may start, logs what cannot run, and
    /// keeps the report for `/readyz`.
    pub async fn preflight(&self) {
        let mut profiles: Vec<String> = self.rules.iter().map(|r| r.profile.clone()).collect();
        profiles.sort();
        profiles.dedup();
        let request = crate::snapshot::Request { profiles, ..Default::default() };
        let lines = match crate::snapshot::plan(&self.env, &self.catalog, &request, jiff::Timestamp::now()) {
            Ok(plan) => {
                let report = crate::check::run(&self.env, &plan.collectors).await;
                for s in report.site.iter().filter(|s| !s.ok) {
                    tracing::warn!(check = s.name, "check: {}: {}", s.name, s.detail);
                }
                for c in report.cannot() {
                    if let crate::sources::Readiness::Cannot(why) = &c.readiness {
                        tracing::warn!(collector = %c.name, "check: collector {} cannot run: {why}", c.name);
                    }
                }
                let lines = report.lines();
                tracing::info!("check: {}", lines.last().map(String::as_str).unwrap_or_default());
                lines
            }
            Err(e) => vec![format!("the check could not plan the rules' profiles: {e}")],
        };
        *self.preflight.write().unwrap_or_else(|p| p.into_inner()) = lines;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is a single step): carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes the alerts of one webhook. Never waits for a snapshot.
    pub fn accept(&self, alerts: Vec<Alert>) -> Accepted {
        let cooldown = self.env.serve.cooldown.unsigned_abs();
        let now = Instant::now();
        // Redacted before the lock is taken: a large webhook must not hold up `/snapshots` and other webhooks.
        let summaries: Vec<AlertSummary> = alerts.iter().map(|a| summary(a, &self.redactor)).collect();
        let mut st = self.state();
        st.answered.expire(now, cooldown);
        let mut out = Accepted { snapshots: Vec::new(), alerts: Vec::new(), refused: None };
        for (alert, rec) in alerts.into_iter().zip(summaries) {
            self.metrics.alerts_received.inc();
            let mut d = Disposition {
                alertname: alert.name().map(String::from),
                fingerprint: fingerprint(&alert),
                disposition: "ignored",
                profile: None,
                snapshot: None,
                reason: None,
            };
            if alert.status.as_deref() == Some("resolved") {
                self.metrics.ignored("resolved");
                d.reason = Some("resolved".into());
                let alert = d.alertname.as_deref().unwrap_or("?");
                tracing::info!(alert, "alert {alert} resolved: recorded, no snapshot");
                out.alerts.push(d);
                continue;
            }
            let Some(rule) = self.rules.route(&alert) else {
                self.metrics.ignored("no_rule");
                d.reason = Some("no rule matches it".into());
                out.alerts.push(d);
                continue;
            };
            let profile = rule.profile.clone();
            d.profile = Some(profile.clone());
            let key = (profile.clone(), d.fingerprint.clone(), alert.starts_at.clone().unwrap_or_default());
            if let Some(id) = st.answered.get(&key) {
                self.metrics.alerts_deduplicated.inc();
                d.disposition = "deduplicated";
                d.snapshot = Some(id.to_string());
                out.alerts.push(d);
                continue;
            }
            if !st.accepting {
                self.metrics.ignored("shutting_down");
                d.disposition = "rejected";
                d.reason = Some("shutting down".into());
                out.refused = Some("shutting down");
                out.alerts.push(d);
                continue;
            }
            let joined = st
                .running
                .get(&profile)
                .map(|(id, _)| id.clone())
                .or_else(|| st.queue.iter().find(|q| q.profile == profile).map(|q| q.id.clone()));
            if let Some(full) = joined.filter(|id| st.record(id).is_some_and(|r| r.alerts_total >= MAX_ALERTS_PER_RUN))
            {
                self.metrics.ignored("run_full");
                d.reason = Some(format!("snapshot {full} already carries {MAX_ALERTS_PER_RUN} alerts"));
                d.snapshot = Some(full.clone());
                st.answered.insert(key, now, full);
                out.alerts.push(d);
                continue;
            }
            let id = if let Some((id, late)) = st.running.get(&profile)
                && late.attach(&alert)
            {
                d.disposition = "attached";
                Some(id.clone())
            } else if let Some(q) = st.queue.iter_mut().find(|q| q.profile == profile) {
                q.alerts.push(alert);
                d.disposition = "attached";
                Some(q.id.clone())
            } else if st.queue.len() < self.env.serve.queue {
                let id = bundle::bundle_id(&profile, Timestamp::now());
                st.queue.push_back(Queued { id: id.clone(), profile: profile.clone(), alerts: vec![alert] });
                st.history.push_back(RunRecord {
                    id: id.clone(),
                    profile: profile.clone(),
                    status: "queued",
                    alerts: Vec::new(),
                    alerts_total: 0,
                    queued_at: Timestamp::now(),
                    started_at: None,
                    finished_at: None,
                    bundle: None,
                    sha256: None,
                    bytes: None,
                    error: None,
                    seal: None,
                    upload: None,
                });
                while st.history.len() > self.env.serve.listed_snapshots {
                    // The oldest finished run goes first: a queued or running one still takes alerts.
                    let finished = st.history.iter().position(|r| !matches!(r.status, "queued" | "running"));
                    st.history.remove(finished.unwrap_or(0));
                }
                d.disposition = "queued";
                let alert = d.alertname.as_deref().unwrap_or("?");
                tracing::info!(
                    alert,
                    profile,
                    rule = %rule.origin,
                    snapshot = id,
                    status = "queued",
                    "alert {alert} -> {profile} ({}): snapshot {id} queued",
                    rule.origin
                );
                Some(id)
            } else {
                None
            };
            let Some(id) = id else {
                // Not remembered as seen: Alertmanager retries the webhook, and the retry must get its snapshot.
                self.metrics.ignored("queue_full");
                d.disposition = "rejected";
                d.reason = Some(format!("the queue is full ({} snapshots waiting)", self.env.serve.queue));
                out.refused = Some("the snapshot queue is full");
                out.alerts.push(d);
                continue;
            };
            if d.disposition == "attached" {
                self.metrics.alerts_attached.inc();
            }
            let listed = self.env.serve.listed_alerts;
            if let Some(r) = st.record(&id) {
                r.alerts_total += 1;
                if r.alerts.len() < listed {
                    r.alerts.push(rec);
                }
            }
            st.answered.insert(key, now, id.clone());
            d.snapshot = Some(id);
            out.alerts.push(d);
        }
        for d in &out.alerts {
            if let Some(id) = &d.snapshot
                && !out.snapshots.contains(id)
            {
                out.snapshots.push(id.clone());
            }
        }
        self.metrics.queue_depth.set(st.queue.len() as i64);
        self.metrics.alerts_remembered.set(st.answered.len() as i64);
        drop(st);
        self.wake.notify_one();
        out
    }

    /// Starts queued snapshots as their turn comes; returns when shutdown has begun.
    pub async fn dispatch(self: Arc<Self>) {
        loop {
            let starting = {
                let mut st = self.state();
                if !st.accepting {
                    return;
                }
                let mut starting = Vec::new();
                while st.running.len() < self.env.serve.concurrency {
                    let Some(i) = st.queue.iter().position(|q| !st.running.contains_key(&q.profile)) else { break };
                    let Some(q) = st.queue.remove(i) else { break };
                    let late = LateAlerts::default();
                    st.running.insert(q.profile.clone(), (q.id.clone(), late.clone()));
                    if let Some(r) = st.record(&q.id) {
                        r.status = "running";
                        r.started_at = Some(Timestamp::now());
                    }
                    starting.push((q, late));
                }
                self.metrics.queue_depth.set(st.queue.len() as i64);
                self.metrics.running.set(st.running.len() as i64);
                starting
            };
            for (q, late) in starting {
                self.snapshots.spawn(self.clone().run(q, late));
            }
            self.wake.notified().await;
        }
    }

    async fn run(self: Arc<Self>, q: Queued, late: LateAlerts) {
        use futures::FutureExt;
        let started = Instant::now();
        // Whatever happens inside, the profile must leave `running`: a panic that escaped would hold it (and, with
        // concurrency 1, every snapshot) forever.
        let result = match std::panic::AssertUnwindSafe(self.snapshot(&q, late.clone())).catch_unwind().await {
            Ok(r) => r,
            Err(p) => Err(RunError::Panicked(
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default(),
            )),
        };
        // A run that failed before writing its manifest still closes its list: later alerts get a new snapshot.
        let stranded = late.close();
        let elapsed = started.elapsed();
        let labels = |result: &str| SnapshotLabels { profile: q.profile.clone(), result: result.into() };
        let mut st = self.state();
        st.running.remove(&q.profile);
        let status = match &result {
            Ok(o) => {
                let status = o.manifest.status.as_str();
                self.metrics.snapshots.get_or_create(&labels(status)).inc();
                self.metrics.bytes_written.inc_by(o.bundle.bytes);
                self.metrics.last_success.set(Timestamp::now().as_millisecond() as f64 / 1000.0);
                tracing::info!(
                    snapshot = q.id,
                    profile = q.profile,
                    status,
                    archive = %o.bundle.archive.display(),
                    sha256 = o.bundle.sha256,
                    bytes = o.bundle.bytes,
                    "snapshot {} {status}: {}",
                    q.id,
                    o.bundle.archive.display()
                );
                for (code, why) in o.seal.missing() {
                    tracing::warn!(snapshot = q.id, code, "snapshot {}: {why}", q.id);
                }
                if let Some(u) = &o.upload {
                    log_upload(&q.id, u);
                }
                status
            }
            Err(e) => {
                self.metrics.snapshots.get_or_create(&labels("failed")).inc();
                // No bundle: its alerts are forgotten as answered, so Alertmanager's next send (or the next
                // alert) takes a new snapshot instead of being deduplicated to this failure.
                st.answered.forget_snapshot(&q.id);
                self.metrics.alerts_remembered.set(st.answered.len() as i64);
                tracing::error!(
                    snapshot = q.id,
                    profile = q.profile,
                    status = "failed",
                    error = %e,
                    "snapshot {} failed, its alerts may take a new one: {e}",
                    q.id
                );
                "failed"
            }
        };
        self.metrics
            .duration
            .get_or_create(&ProfileLabels { profile: q.profile.clone() })
            .observe(elapsed.as_secs_f64());
        if let Some(r) = st.record(&q.id) {
            r.status = status;
            r.finished_at = Some(Timestamp::now());
            match &result {
                Ok(o) => {
                    r.bundle = Some(o.bundle.archive.clone());
                    r.sha256 = Some(o.bundle.sha256.clone());
                    r.bytes = Some(o.bundle.bytes);
                    r.seal = o.seal.configured().then(|| o.seal.summary());
                    r.upload = o.upload.as_ref().map(|u| u.summary());
                }
                Err(e) => r.error = Some(shown(&e.to_string(), SHOWN_ERROR_BYTES)),
            }
        }
        if !stranded.is_empty() {
            tracing::warn!(
                snapshot = q.id,
                profile = q.profile,
                alerts = stranded.len(),
                "snapshot {} ended before {} late alert(s) could join it",
                q.id,
                stranded.len()
            );
        }
        self.metrics.running.set(st.running.len() as i64);
        drop(st);
        self.prune();
        self.wake.notify_one();
    }

    async fn snapshot(&self, q: &Queued, late: LateAlerts) -> Result<snapshot::Outcome, RunError> {
        let request = Request {
            profiles: vec![q.profile.clone()],
            alerts: q.alerts.clone(),
            trigger: Some(TriggerKind::Alert),
            // With a [store], every bundle leaves the host as it is written.
            upload: self.env.store.is_some(),
            ..Request::default()
        };
        let mut plan = snapshot::plan(&self.env, &self.catalog, &request, Timestamp::now())?;
        plan.bundle_id = Some(q.id.clone());
        plan.late_alerts = late;
        let secrets = snapshot::resolve_secrets(&self.env, &plan)?;
        self.prune();
        Ok(snapshot::execute(plan, self.env.clone(), secrets, &self.stop, &self.progress).await?)
    }

    /// Uploads again every finished bundle whose copy in `[store]` is not confirmed (the store was down, the
    /// credentials wrong): at start, then with a backoff from one minute doubling to an hour while some fail.
    /// Each success lets retention delete the local copy in turn.
    pub async fn retry_uploads(self: Arc<Self>) {
        let Some(settings) = self.env.store.clone() else { return };
        let first = settings.retry_every.unsigned_abs();
        let most = std::time::Duration::from_secs(3600).max(first);
        let mut wait = first;
        loop {
            let in_progress: HashSet<String> = self.state().running.values().map(|(id, _)| id.clone()).collect();
            let pending = retention::unconfirmed(&self.env.out_dir, &in_progress);
            let mut failed = false;
            for archive in pending {
                if self.stop.is_stopped() {
                    return;
                }
                let id = archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let (seal, at) = (self.env.seal.clone(), archive.clone());
                let sealer =
                    tokio::task::spawn_blocking(move || crate::seal::custody_signer(&seal, &at)).await.ok().flatten();
                let custody = sealer.as_ref().map(|s| s as &dyn crate::store::upload::Custody);
                match crate::store::upload::upload_bundle(settings.clone(), &archive, custody).await {
                    Ok(record) => {
                        failed |= !record.confirmed();
                        let shown = crate::bundle::split_archive_name(&id).map_or(id.as_str(), |(id, _)| id);
                        log_upload(shown, &record);
                    }
                    Err(why) => {
                        failed = true;
                        tracing::warn!(bundle = %archive.display(), "upload: {why}");
                    }
                }
            }
            self.prune();
            wait = if failed { (wait * 2).min(most) } else { first };
            tokio::time::sleep(wait).await;
        }
    }

    /// Applies retention, sparing the bundles of running snapshots (and, with a `[store]`, those whose remote copy
    /// is not confirmed).
    pub fn prune(&self) {
        let in_progress: HashSet<String> = self.state().running.values().map(|(id, _)| id.clone()).collect();
        match retention::prune(&self.env.out_dir, self.env.serve.retention, &in_progress, self.env.store.is_some()) {
            Ok(deleted) => {
                for d in deleted {
                    self.metrics.bundles_deleted.inc();
                    tracing::info!(
                        snapshot = d.bundle.id,
                        bytes = d.bundle.bytes,
                        "retention: deleted {} ({} bytes): {}",
                        d.bundle.id,
                        d.bundle.bytes,
                        d.why
                    );
                }
            }
            Err(e) => tracing::warn!(
                out_dir = %self.env.out_dir.display(),
                "retention: cannot list {}: {e}",
                self.env.out_dir.display()
            ),
        }
    }

    /// The history, newest first.
    pub fn history(&self) -> Vec<RunRecord> {
        self.state().history.iter().rev().cloned().collect()
    }

    /// Shutdown: refuse new alerts, cancel what has not started, give running snapshots until half of `grace`
    /// to finish, then stop them (they write partial bundles) and wait for the rest of `grace`. Returns whether
    /// every snapshot ended in time.
    pub async fn shutdown(&self, grace: Duration, why: &str) -> bool {
        let begun = Instant::now();
        {
            let mut st = self.state();
            st.accepting = false;
            let cancelled: Vec<Queued> = st.queue.drain(..).collect();
            for q in cancelled {
                tracing::info!(
                    snapshot = q.id,
                    profile = q.profile,
                    status = "cancelled",
                    "{why}: snapshot {} of {} cancelled before it started",
                    q.id,
                    q.profile
                );
                if let Some(r) = st.record(&q.id) {
                    r.status = "cancelled";
                    r.finished_at = Some(Timestamp::now());
                }
            }
            self.metrics.queue_depth.set(0);
        }
        self.wake.notify_one();
        let idle = || self.state().running.is_empty();
        let mut stopped = false;
        while !idle() {
            if begun.elapsed() >= grace {
                // Stopped at the latest now, so what was collected is written as a partial bundle.
                if !stopped {
                    self.stop.stop(format!("{why}, grace period over"));
                }
                return false;
            }
            if !stopped && begun.elapsed() >= grace / 2 {
                tracing::warn!("{why}: stopping running snapshots; they are written as partial bundles");
                self.stop.stop(format!("{why}, grace period half over"));
                stopped = true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        true
    }

    pub fn accepting(&self) -> bool {
        self.state().accepting
    }

    pub fn queue_depth(&self) -> usize {
        self.state().queue.len()
    }
}

/// Logs an upload's outcome: info when the copy is confirmed, a warning otherwise.
fn log_upload(id: &str, u: &crate::store::record::UploadRecord) {
    let line = crate::bundle::bounds::printable(&u.summary());
    if u.confirmed() {
        tracing::info!(snapshot = id, url = u.url, version = u.version_id, "snapshot {id}: upload: {line}");
    } else {
        tracing::warn!(snapshot = id, url = u.url, state = ?u.state, "snapshot {id}: upload: {line}");
    }
}

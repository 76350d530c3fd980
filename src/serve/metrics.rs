//! The sidecar's own metrics for `GET /metrics`, in the text format Prometheus scrapes (OpenMetrics): what it
//! snapshotted and with which result, how long that took, how much it wrote, and what it did with the alerts.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotLabels {
    pub profile: String,
    /// `complete`, `partial` or `failed` (no bundle).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabels {
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `resolved`, `no_rule`, or `queue_full` for an alert refused with 503.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

type DurationFamily = Family<ProfileLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 s .. ~68 min: a small profile takes seconds, `full` on a large ledger tens of minutes.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

pub struct Metrics {
    registry: Registry,
    pub snapshots: Family<SnapshotLabels, Counter>,
    pub duration: DurationFamily,
    pub bytes_written: Counter,
    pub last_success: Gauge<f64, AtomicU64>,
    pub queue_depth: Gauge,
    pub running: Gauge,
    pub alerts_received: Counter,
    pub alerts_deduplicated: Counter,
    pub alerts_attached: Counter,
    pub alerts_remembered: Gauge,
    pub alerts_ignored: Family<ReasonLabels, Counter>,
    pub webhooks: Family<CodeLabels, Counter>,
    pub bundles_deleted: Counter,
    pub connections_open: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("preserve");
        let m = Self {
            snapshots: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            bytes_written: Counter::default(),
            last_success: Gauge::default(),
            queue_depth: Gauge::default(),
            running: Gauge::default(),
            alerts_received: Counter::default(),
            alerts_deduplicated: Counter::default(),
            alerts_attached: Counter::default(),
            alerts_remembered: Gauge::default(),
            alerts_ignored: Family::default(),
            webhooks: Family::default(),
            bundles_deleted: Counter::default(),
            connections_open: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "snapshots",
            "Snapshots finished, by profile and result (complete, partial, failed)",
            m.snapshots.clone(),
        );
        r.register(
            "snapshot_duration_seconds",
            "Time from a snapshot's start to its bundle on disk",
            m.duration.clone(),
        );
        r.register("bundle_bytes_written", "Bytes of bundles written", m.bytes_written.clone());
        r.register(
            "last_success_timestamp_seconds",
            "Unix time of the last snapshot that wrote a bundle",
            m.last_success.clone(),
        );
        r.register("queue_depth", "Snapshots waiting for their turn", m.queue_depth.clone());
        r.register("snapshots_running", "Snapshots running now", m.running.clone());
        r.register("alerts_received", "Alerts received in webhooks", m.alerts_received.clone());
        r.register(
            "alerts_deduplicated",
            "Alerts already answered within the cooldown (same profile, fingerprint and startsAt)",
            m.alerts_deduplicated.clone(),
        );
        r.register(
            "alerts_attached",
            "Alerts added to a snapshot of their profile that was already queued or running",
            m.alerts_attached.clone(),
        );
        r.register(
            "alerts_remembered",
            "Alerts remembered as answered for de-duplication (at most serve.remembered_alerts)",
            m.alerts_remembered.clone(),
        );
        r.register("alerts_ignored", "Alerts that took no snapshot, by reason", m.alerts_ignored.clone());
        r.register("webhook_requests", "Webhook requests answered, by status code", m.webhooks.clone());
        r.register("bundles_deleted", "Bundles deleted by retention", m.bundles_deleted.clone());
        r.register(
            "http_connections_open",
            "HTTP connections being served (at most serve.max_connections)",
            m.connections_open.clone(),
        );
        Self { registry: r, ..m }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn ignored(&self, reason: &str) {
        self.alerts_ignored.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub fn webhook(&self, code: u16) {
        self.webhooks.get_or_create(&CodeLabels { code: code.to_string() }).inc();
    }
}

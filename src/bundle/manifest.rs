//! The rich manifest (`manifest.json`): what was collected, how, when, from where, with which result. Its shape is
//! part of the bundle format (`preserve-bundle/1`, see docs/bundle-format.md).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{alert::Alert, redact::FingerprintKey};

pub const FORMAT: &str = "preserve-bundle/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub bundle_id: String,
    /// The profile(s) the snapshot ran, joined with `+`; `custom` when only `--collector` was given.
    pub profile: String,
    pub profiles: Vec<String>,
    pub created_at: Timestamp,
    pub finished_at: Timestamp,
    pub tool: Tool,
    pub host: String,
    pub trigger: Trigger,
    pub window: WindowRecord,
    /// How secrets were replaced: the marker, and which key made its fingerprints (never the key).
    #[serde(default)]
    pub redaction: RedactionScheme,
    pub collectors: Vec<CollectorRecord>,
    pub findings: Vec<Finding>,
    pub status: BundleStatus,
}

/// The manifest beside an encrypted archive (`<id>.manifest.json`): what a custodian without the key needs to
/// file and check it, and nothing of what the evidence holds. Hosts, alert labels and annotations, collector
/// sources and errors, findings and artifact names stay inside the ciphertext, in the archive's own
/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicManifest {
    pub format: String,
    pub bundle_id: String,
    pub profile: String,
    pub created_at: Timestamp,
    pub finished_at: Timestamp,
    pub tool: Tool,
    pub status: BundleStatus,
    /// Always true here; what tells this manifest from a full one.
    pub encrypted: bool,
    /// The archive's size: the ciphertext.
    pub archive_bytes: u64,
    /// How many collectors ran and how many were not ok (their names and errors are inside).
    pub collectors: usize,
    pub collectors_failed: usize,
}

impl PublicManifest {
    pub fn of(m: &Manifest, archive_bytes: u64) -> Self {
        Self {
            format: m.format.clone(),
            bundle_id: m.bundle_id.clone(),
            profile: m.profile.clone(),
            created_at: m.created_at,
            finished_at: m.finished_at,
            tool: m.tool.clone(),
            status: m.status,
            encrypted: true,
            archive_bytes,
            collectors: m.collectors.len(),
            collectors_failed: m
                .collectors
                .iter()
                .filter(|c| !matches!(c.status, CollectorStatus::Ok | CollectorStatus::Skipped))
                .count(),
        }
    }
}

/// The bundle's redaction marker. Every redacted secret reads `[REDACTED:<fingerprint>]`, the fingerprint being
/// HMAC-SHA256 over the secret, first 16 hex, keyed by a key the bundle never holds: equal markers are equal secrets,
/// and only a holder of the key can check a candidate value against a marker (`preserve fingerprint`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactionScheme {
    #[serde(default)]
    pub marker: String,
    #[serde(default)]
    pub fingerprint: String,
    /// Which key made the fingerprints. Absent in bundles written before fingerprints were keyed: those published a
    /// salt instead (ignored when read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyKind>,
    /// With a site key: its id (see `redact::FingerprintKey::id`), so a key holder knows which key to use. The id
    /// lets nobody test a candidate secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

pub use crate::redact::fingerprint::KeyKind;

impl RedactionScheme {
    /// What the manifest says about `key`: its kind, and a site key's id.
    pub fn of(key: &FingerprintKey) -> Self {
        Self {
            marker: "[REDACTED:<fingerprint>]".into(),
            fingerprint: "hex(HMAC-SHA256(key, secret))[..16]".into(),
            key: Some(key.kind()),
            key_id: key.id(),
        }
    }

    /// Whether the markers written under this scheme were made with this very `key`, so they compare with its
    /// markers. A per-bundle key is never the same as another bundle's.
    pub fn made_by(&self, key: &FingerprintKey) -> bool {
        key.kind() == KeyKind::Site && self.key == Some(KeyKind::Site) && self.key_id == key.id()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    Cli,
    Alert,
    Schedule,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trigger {
    pub kind: TriggerKind,
    #[serde(default)]
    pub alerts: Vec<Alert>,
    /// What was redacted from the alerts themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redactions: Vec<RedactionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowRecord {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectorStatus {
    Ok,
    Partial,
    Failed,
    Timeout,
    Skipped,
}

impl CollectorStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleStatus {
    Complete,
    Partial,
}

impl BundleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Partial => "partial",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectorRecord {
    pub name: String,
    pub kind: String,
    pub status: CollectorStatus,
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub duration_ms: u64,
    /// What was read, with credentials removed.
    pub source: String,
    pub artifacts: Vec<ArtifactRecord>,
    pub redactions: Vec<RedactionRecord>,
    /// Kind-specific facts (files skipped, exit codes, stream cut ids ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Path inside the bag, `data/<collector>/...`.
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    pub media_type: String,
    pub records: Option<u64>,
    pub truncated: bool,
    /// Where the content came from (original file path, container), when that is not obvious from `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Set when the artifact could not be completely written (e.g. the disk failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How its content was redacted as it was written: `text:<format>`, `data`, or `binary: <why>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction: Option<String>,
}

pub use crate::redact::RedactionRecord;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub collector: String,
    /// A stable identifier such as `audit.chain.break`.
    pub code: String,
    pub severity: Severity,
    pub summary: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

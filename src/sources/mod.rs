//! Source kinds: the drivers that know how to read one kind of system. Each kind is one module with a typed config
//! struct (serde, `deny_unknown_fields`) implementing [`Source`], registered once in [`KINDS`]. A source never knows
//! about tar, zstd or BagIt: it writes artifacts through [`Collection::artifact`], which hashes and counts.

pub mod artifact;
pub mod command;
pub mod config_diff;
pub mod context;
pub mod file;
pub mod http;
pub mod kubernetes;
pub mod postgres;
pub mod presence;
pub mod redis;

use std::{collections::BTreeMap, io::Write, sync::Arc};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

pub use artifact::{Artifact, Redaction};

use crate::{
    bundle::{
        artifact::{ArtifactError, Counters, Staging},
        manifest::CollectorStatus,
    },
    config::Environment,
    redact::{Format, Redactor, Tally},
    time::Window,
};

/// What is wrong with a collector's definition, found before anything runs; the catalog places it at the
/// definition's file and line. Each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The settings given do not make a collector of the kind (none of those it needs, or two that exclude each
    /// other): the sentence says which.
    #[error("{0}")]
    Shape(&'static str),
    /// A setting names a `${var}` the site does not define.
    #[error("{setting}: {source}")]
    Expand {
        setting: &'static str,
        #[source]
        source: crate::config::ExpandError,
    },
    /// A glob (or a stream pattern) that does not parse.
    #[error("{setting}: `{pattern}` is not a valid {what}: {source}")]
    Glob {
        setting: &'static str,
        what: &'static str,
        pattern: String,
        #[source]
        source: glob::PatternError,
    },
    /// A setting that means something only beside another.
    #[error("{setting}: only applies with `{with}`")]
    OnlyWith { setting: &'static str, with: &'static str },
    /// A count that must be at least 1.
    #[error("{0}: must be at least 1")]
    Zero(&'static str),
    /// A name given twice where each must be unique.
    #[error("{what} `{name}` appears twice")]
    Twice { what: &'static str, name: String },
    /// A setting whose value another part of preserve refuses, with that part's own error.
    #[error("{setting}: {source}")]
    Invalid {
        setting: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A setting's value refused here, and why.
    #[error("{setting}: {why}")]
    Refused { setting: String, why: String },
}

impl DefinitionError {
    /// The `${var}` expansion of `setting` failed.
    pub fn expand(setting: &'static str) -> impl FnOnce(crate::config::ExpandError) -> Self {
        move |source| Self::Expand { setting, source }
    }

    /// `pattern` given as `setting` is not a valid glob.
    pub fn glob(setting: &'static str, pattern: &str) -> impl FnOnce(glob::PatternError) -> Self {
        let pattern = pattern.to_string();
        move |source| Self::Glob { setting, what: "glob", pattern, source }
    }

    /// `setting` is refused by another part of preserve, with its error.
    pub fn invalid<E: std::error::Error + Send + Sync + 'static>(setting: impl Into<String>) -> impl FnOnce(E) -> Self {
        let setting = setting.into();
        move |e| Self::Invalid { setting, source: Box::new(e) }
    }
}

/// One source kind's reader, configured by a collector definition.
#[async_trait]
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Checks what only the site can tell (variables, paths), before anything runs. Errors name the field.
    fn check(&self, _env: &Environment) -> Result<(), DefinitionError> {
        Ok(())
    }

    /// Credentials this collector will use, by reference, with the setting naming each (`redis.password`,
    /// `env_credentials.TOKEN`). Their values are given to the redactor before any collector runs, so no artifact
    /// can contain them, and an unset `env:` reference among them stops the run before it starts.
    fn credentials(&self, _env: &Environment) -> Vec<(String, crate::config::CredentialRef)> {
        Vec::new()
    }

    /// What this collector reads, with credentials removed: for `--dry-run` and the manifest's `source`.
    fn describe(&self, env: &Environment) -> String;

    /// Whether this collector can run on this site now (`preserve check`): what it reads is there, what it talks
    /// to answers and lets it read, its credentials resolve. Reads no evidence and never shows a credential.
    async fn preflight(&self, _env: &Environment) -> Readiness {
        Readiness::Ready(Vec::new())
    }

    /// Collects into artifacts. A source should return promptly once `cx.is_cancelled()`; what it wrote is kept.
    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError>;
}

/// What `preserve check` finds of a collector before it runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "why")]
pub enum Readiness {
    /// It can run; the notes say what it will do without (a token file that is absent, one URL of several down).
    Ready(Vec<String>),
    /// It would find nothing to read here, by design of the site (an optional input that is absent: a Compose
    /// file on a Kubernetes site): it runs and records that. Why, naming the place.
    Skip(String),
    /// It cannot run: why, naming the place and what to do.
    Cannot(String),
}

impl Readiness {
    /// Whether a snapshot would get what this collector is for (`Ready` or `Skip`).
    pub fn can_run(&self) -> bool {
        !matches!(self, Self::Cannot(_))
    }
}

/// How a collection ended when it did not fail outright. With its warnings, its [`Verdict`] decides the collector's
/// status in the manifest ([`Outcome::status`]).
#[derive(Debug, Default)]
pub struct Outcome {
    /// Problems that did not stop the collector, each naming the part that failed; any makes its status `partial`.
    pub warnings: Vec<String>,
    /// Kind-specific facts for the manifest.
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Results of analysis steps (e.g. audit-chain verification), for the manifest's `findings`.
    pub findings: Vec<crate::bundle::manifest::Finding>,
    /// What the collection amounted to.
    pub verdict: Verdict,
}

/// What a collection that did not fail outright amounted to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It read what there was to read; a warning names a part that failed (`partial`), none means `ok`.
    #[default]
    Collected,
    /// Nothing to read because its input is absent here (a directory or a home that does not exist, a program
    /// that is not installed): `skipped`, with this reason. Never for an input that exists but cannot be read:
    /// skipping that would hide evidence (see [`presence`]).
    Absent(String),
    /// Every part it tried (every request, every file) failed, so nothing was collected: `failed`. Says what
    /// failed (`every request failed`); the warnings say how.
    AllFailed(String),
}

impl Outcome {
    /// An outcome with nothing read, because its input is absent: `skipped` with `reason`.
    pub fn absent(reason: impl Into<String>) -> Self {
        Self { verdict: Verdict::Absent(reason.into()), ..Default::default() }
    }
    pub fn warn(&mut self, w: impl Into<String>) {
        self.warnings.push(w.into());
    }
    pub fn detail(&mut self, key: &str, value: impl serde::Serialize) {
        self.details.insert(key.to_string(), serde_json::to_value(value).unwrap_or(serde_json::Value::Null));
    }
    /// Takes in what a part of the collector found on its own (warnings, findings, details).
    pub fn absorb(&mut self, other: Outcome) {
        self.warnings.extend(other.warnings);
        self.findings.extend(other.findings);
        self.details.extend(other.details);
    }

    /// The collector's status and error, as the manifest records them. Every part failing is `failed`; a part
    /// failing is `partial` (even when an input was also absent); nothing read because the input is absent is
    /// `skipped` with the reason; the rest is `ok`.
    pub fn status(&self) -> (CollectorStatus, Option<String>) {
        let warned = (!self.warnings.is_empty()).then(|| self.warnings.join("; "));
        match (&self.verdict, warned) {
            (Verdict::AllFailed(what), Some(how)) => (CollectorStatus::Failed, Some(format!("{what}: {how}"))),
            (Verdict::AllFailed(what), None) => (CollectorStatus::Failed, Some(what.clone())),
            (_, Some(how)) => (CollectorStatus::Partial, Some(how)),
            (Verdict::Absent(why), None) => (CollectorStatus::Skipped, Some(why.clone())),
            (Verdict::Collected, None) => (CollectorStatus::Ok, None),
        }
    }
}

/// Why a collector stopped without an outcome. Each source kind says what went wrong in its own error; the
/// manifest records the message.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    File(#[from] file::Error),
    #[error(transparent)]
    Command(#[from] command::Error),
    #[error(transparent)]
    Http(#[from] http::Error),
    #[error(transparent)]
    Redis(#[from] redis::Error),
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    #[error(transparent)]
    ConfigDiff(#[from] config_diff::Error),
    #[error(transparent)]
    Kubernetes(#[from] kubernetes::Error),
    /// A setting's `${var}` the site does not define (the site config's own message).
    #[error(transparent)]
    Expand(#[from] crate::config::ExpandError),
    /// A credential reference that does not resolve.
    #[error(transparent)]
    Credential(#[from] crate::config::CredentialError),
    /// A report or record that could not be turned into JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("stopped before finishing")]
    Cancelled,
}

impl CollectError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// Everything one collector needs while it runs. Cheap to clone.
#[derive(Clone)]
pub struct Collection {
    pub name: String,
    pub window: Window,
    pub env: Arc<Environment>,
    /// Labels of the triggering alert(s) (`zone_id`, `request_id`, ...), for filters.
    pub labels: BTreeMap<String, String>,
    /// The plan of the whole snapshot, for the context collector.
    pub plan_summary: Arc<serde_json::Value>,
    cancel: CancellationToken,
    staging: Arc<Staging>,
    redactor: Arc<Redactor>,
    tally: Arc<Tally>,
    counters: Arc<Counters>,
}

impl Collection {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        window: Window,
        env: Arc<Environment>,
        labels: BTreeMap<String, String>,
        plan_summary: Arc<serde_json::Value>,
        cancel: CancellationToken,
        staging: Arc<Staging>,
        redactor: Arc<Redactor>,
        tally: Arc<Tally>,
        counters: Arc<Counters>,
    ) -> Self {
        Self { name, window, env, labels, plan_summary, cancel, staging, redactor, tally, counters }
    }

    /// Opens an artifact at `relative` (below this collector's folder in the bag), redacted as `redaction` says
    /// while it is written.
    pub fn artifact(&self, relative: &str, media_type: &str, redaction: Redaction) -> Result<Artifact, ArtifactError> {
        let out = self.staging.artifact(&self.name, relative, media_type, self.counters.clone())?;
        Ok(Artifact::new(out, redaction, self.redactor.clone(), self.tally.clone()))
    }

    /// Opens a text artifact, redacted in the format its name and media type say (see [`Format::of`]).
    pub fn text_artifact(&self, relative: &str, media_type: &str) -> Result<Artifact, ArtifactError> {
        self.artifact(relative, media_type, Redaction::Text(Format::of(relative, media_type)))
    }

    /// A setting with the site's `${var}`s expanded.
    pub fn expand(&self, setting: &str) -> Result<String, CollectError> {
        Ok(self.env.expand(setting)?)
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Writes a small text artifact (metadata, a report, a config file) in one go, redacted in the format its
    /// name and media type say.
    pub fn write_small(&self, relative: &str, media_type: &str, text: &[u8]) -> Result<(), CollectError> {
        let io = CollectError::io(format!("writing {relative}"));
        let mut a = self.text_artifact(relative, media_type)?;
        match a.write_all(text) {
            Ok(_) => a.finish().map_err(io),
            Err(e) => Err(io(e)),
        }
    }

    /// A finding of this collector, without details.
    pub fn finding(
        &self,
        code: impl Into<String>,
        severity: crate::bundle::manifest::Severity,
        summary: impl Into<String>,
    ) -> crate::bundle::manifest::Finding {
        crate::bundle::manifest::Finding {
            collector: self.name.clone(),
            code: code.into(),
            severity,
            summary: summary.into(),
            details: Default::default(),
        }
    }

    /// Redacts a whole small text (JSON, an error message) into a string.
    pub fn redact_str(&self, text: &str) -> String {
        self.redactor.redact_str(text, &self.tally)
    }
}

/// A registered source kind.
pub struct Kind {
    pub name: &'static str,
    pub summary: &'static str,
    /// Parses a collector's kind-specific settings; unknown keys are errors with their location.
    pub parse: for<'i> fn(toml::de::ValueDeserializer<'i>) -> Result<Arc<dyn Source>, toml::de::Error>,
}

/// Every source kind, by name. Adding a kind means adding its module and one entry here.
pub static KINDS: &[Kind] = &[
    Kind {
        name: "file",
        summary: "log and config files by glob, rotated/.gz, Docker json-file logs",
        parse: parse_as::<file::FileSource>,
    },
    Kind {
        name: "command",
        summary: "runs a program (no shell) and keeps its output",
        parse: parse_as::<command::CommandSource>,
    },
    Kind {
        name: "http",
        summary: "read-only GETs to every instance of a service: status, headers, body, timing; side effects refused",
        parse: parse_as::<http::HttpSource>,
    },
    Kind {
        name: "redis",
        summary: "Redis streams (entries to a consistent cut, groups, pending), DLQs, key families; read-only",
        parse: parse_as::<redis::RedisSource>,
    },
    Kind {
        name: "postgres",
        summary: "Postgres tables and queries from one exported snapshot, streamed COPY to CSV, DDL; read-only",
        parse: parse_as::<postgres::PostgresSource>,
    },
    Kind {
        name: "config_diff",
        summary: "configuration (files or a program's output) against a baseline or the previous bundle: both sides redacted, unified diff",
        parse: parse_as::<config_diff::ConfigDiffSource>,
    },
    Kind {
        name: "kubernetes",
        summary: "Caracal on Kubernetes: every pod's logs (previous containers too), cluster context, Helm revisions diffed; get/list/log only",
        parse: parse_as::<kubernetes::KubernetesSource>,
    },
    Kind {
        name: "context",
        summary: "tool version, host, time and the configuration used",
        parse: parse_as::<context::ContextSource>,
    },
];

/// Runs a collector's CPU-bound step (redacting, hashing, writing a batch) off the runtime's worker where the
/// runtime allows it: the tasks queued on this worker, such as the database connection's own task reading and
/// parsing the next reply, move to another thread meanwhile instead of waiting for the batch. On a
/// single-threaded runtime, just runs it.
pub fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// `name` as one folder or file name in a collector's folder of the bag, whatever a server or an API sent: ASCII
/// letters, digits, `-`, `_` and `.` kept, anything else `_`; never empty, never `.`, `..` or hidden (a leading
/// dot gets a `_` before it).
pub fn path_segment(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with('.') { format!("_{s}") } else { s }
}

pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

fn parse_as<T: Source + DeserializeOwned + 'static>(
    d: toml::de::ValueDeserializer<'_>,
) -> Result<Arc<dyn Source>, toml::de::Error> {
    Ok(Arc::new(T::deserialize(d)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_elsewhere_stay_one_path_segment() {
        assert_eq!(path_segment("caracal-caracal-audit-7d9f-x2"), "caracal-caracal-audit-7d9f-x2");
        assert_eq!(path_segment("gateway-0:8081"), "gateway-0_8081");
        assert_eq!(path_segment("../etc"), "_.._etc");
        assert_eq!(path_segment("a/b"), "a_b");
        assert_eq!(path_segment(""), "_");
    }

    #[test]
    fn the_status_says_what_was_collected() {
        let with = |verdict: Verdict, warnings: &[&str]| Outcome {
            verdict,
            warnings: warnings.iter().map(|w| w.to_string()).collect(),
            ..Default::default()
        };
        let absent = || Verdict::Absent("nothing to read: `/x` does not exist".into());
        let all_failed = || Verdict::AllFailed("every request failed".into());
        let cases = [
            (with(Verdict::Collected, &[]), CollectorStatus::Ok, None),
            (
                with(Verdict::Collected, &["a: refused", "b: refused"]),
                CollectorStatus::Partial,
                Some("a: refused; b: refused"),
            ),
            (with(absent(), &[]), CollectorStatus::Skipped, Some("nothing to read: `/x` does not exist")),
            // Something failed besides the absence: not a clean skip.
            (with(absent(), &["b: permission denied"]), CollectorStatus::Partial, Some("b: permission denied")),
            (with(all_failed(), &["a: refused"]), CollectorStatus::Failed, Some("every request failed: a: refused")),
            (with(all_failed(), &[]), CollectorStatus::Failed, Some("every request failed")),
        ];
        for (outcome, status, error) in cases {
            assert_eq!(outcome.status(), (status, error.map(String::from)), "{outcome:?}");
        }
    }
}

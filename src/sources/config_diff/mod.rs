//! The `config_diff` source kind: configuration as it is now (files, or a program's output such as
//! `helm get values --all`) against a baseline (known-good copies, or the same collector's current side in the
//! previous bundle). Both sides are written redacted, with a unified diff of the *redacted* texts, so no secret can
//! reach the diff; the manifest records both sides' hashes and whether they differ. Secrets compare by their markers,
//! which only works when one key made both sides' markers (see [`crate::redact::fingerprint`]).

mod previous;

use crate::sources::DefinitionError;
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{
    CollectError, Collection, Outcome, Redaction, Source, Verdict,
    command::{Invocation, StartError},
    file::media_type,
    presence::Presence,
};
use crate::{
    bundle::manifest::{KeyKind, RedactionScheme, Severity},
    config::{CredentialRef, Environment},
    redact::{FingerprintKey, Format},
};

/// Each side of one item is read up to this many bytes (configuration is small); beyond it, it is marked truncated.
const MAX_SIDE: usize = 8 << 20;
/// What is kept of a program's stderr.
const MAX_STDERR: usize = 1 << 20;
/// How long the diff of one item may search for a minimal edit script before settling for a coarser (still
/// correct) one.
const DIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const PREVIOUS: &str = "previous";
/// What every marker reads as in a diff whose sides were keyed differently: their fingerprints say nothing about
/// whether the secrets are equal.
const UNCOMPARED: &[u8] = b"[REDACTED:not-compared]";

/// Settings of a `config_diff` collector. The current side comes from `files` or from `command`, never both.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDiffSource {
    /// Paths or glob patterns of configuration files, `${var}` expanded (e.g. `"${caracal_home}/compose.yml"`). Each
    /// file is one item, named by its file name.
    #[serde(default)]
    pub files: Vec<String>,
    /// A program and its arguments whose stdout is the configuration (e.g. `["helm", "get", "values", "caracal",
    /// "-n", "caracal", "--all"]`), `${var}` expanded, run without a shell like the `command` kind.
    #[serde(default)]
    pub command: Vec<String>,
    /// With `command`: the item's name, i.e. the file name its output is stored under (default `output.txt`).
    pub stdout: Option<String>,
    /// With `command`: names of preserve's own environment variables to pass on (see the `command` kind).
    #[serde(default)]
    pub inherit_env: Vec<String>,
    /// With `command`: environment variables whose values are credentials, by reference (`env:NAME` / `file:PATH`).
    #[serde(default)]
    pub env_credentials: BTreeMap<String, CredentialRef>,
    /// What the current side is compared with: `previous` (this collector's current side in the newest earlier
    /// bundle of the output directory; the default), a file, or a directory of known-good copies matched by file
    /// name. Paths are `${var}` expanded.
    #[serde(default = "previous")]
    pub baseline: String,
    /// Whether a file pattern matching nothing, or a program that is not installed (or that `available_if` says
    /// cannot run here, or whose `needs_files` are missing), makes the collector `partial` or `failed` (default
    /// true). With false, a collector left with nothing to read is `skipped`, with the reason. A file or directory
    /// that exists but cannot be read is never skipped.
    #[serde(default = "yes")]
    pub required: bool,
    /// With `command`: a program and arguments that tell whether `command` can run on this host at all, e.g.
    /// `["docker", "compose", "version"]` where `docker` may be installed without Compose. It runs first; when it
    /// cannot start or exits non-zero, the program counts as not installed.
    #[serde(default)]
    pub available_if: Vec<String>,
    /// With `command`: files the program reads, `${var}` expanded (e.g. `["${caracal_home}/compose.yml"]`). When
    /// one does not exist, there is nothing to run it on, and it is not run: as a program that is not installed.
    #[serde(default)]
    pub needs_files: Vec<String>,
}

fn previous() -> String {
    PREVIOUS.into()
}
fn yes() -> bool {
    true
}

/// One side of one item, as read (before redaction).
#[derive(Debug)]
pub struct Text {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

/// The current sides as read: (name, where from, text) per item, problems met, the names of files that exist but
/// could not be read (not to be mistaken for removed ones), and why patterns that are not required matched nothing.
#[derive(Debug, Default)]
struct Current {
    items: Vec<(String, String, Text)>,
    warnings: Vec<String>,
    unreadable: BTreeSet<String>,
    absent: BTreeSet<String>,
    /// Files and directories that exist but could not be read or looked into.
    failed: usize,
    /// Whether a directory could not be looked into: which files it holds is unknown, so none counts as removed.
    unlooked: bool,
}

/// Why a config_diff collector stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The blocking task that reads and compares panicked or was cancelled.
    #[error("config reader stopped: {0}")]
    Stopped(#[source] tokio::task::JoinError),
    /// The program cannot run here, and the collector is `required`.
    #[error(transparent)]
    Unavailable(Unavailable),
    #[error("baseline {path} is one file but {files} files were read: give a directory of known-good copies")]
    BaselineIsOneFile { path: String, files: usize },
}

/// Why `command` cannot run here: the reason a collector that is not required is skipped.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// A file it needs (`needs_files`) is not there.
    #[error("nothing to run `{program}` on: {reason}")]
    NothingToRunOn { program: String, reason: String },
    #[error("`{0}` is not installed here")]
    NotInstalled(String),
    /// `available_if` ran and said no.
    #[error("`{probe}` says `{program}` cannot run here")]
    CannotRunHere { probe: String, program: String },
}

/// One configuration item compared: its current side against its baseline. Other kinds with two sides to compare
/// (the Helm revisions of the `kubernetes` kind) write theirs through [`write_item`], in this kind's shape.
#[derive(Debug)]
pub(crate) struct Item {
    pub name: String,
    /// Where the current side was read (a path, the command line).
    pub source: Option<String>,
    /// `None`: the item is in the baseline only (the file is gone).
    pub current: Option<Text>,
    /// The baseline's origin and text, or why there is none.
    pub baseline: Result<(String, Text), String>,
}

#[async_trait]
impl Source for ConfigDiffSource {
    fn check(&self, env: &Environment) -> Result<(), DefinitionError> {
        match (self.files.is_empty(), self.command.is_empty()) {
            (false, false) => {
                return Err(DefinitionError::Shape(
                    "`files` and `command` are both given: the current side comes from one of them",
                ));
            }
            (true, true) => {
                return Err(DefinitionError::Shape(
                    "needs `files` (paths or globs of the configuration) or `command` (a program whose output is \
                     the configuration)",
                ));
            }
            _ => {}
        }
        for p in &self.files {
            let expanded = env.expand(p).map_err(DefinitionError::expand("files"))?;
            glob::Pattern::new(&expanded).map_err(DefinitionError::glob("files", &expanded))?;
        }
        for a in &self.command {
            env.expand(a).map_err(DefinitionError::expand("command"))?;
        }
        for f in &self.needs_files {
            env.expand(f).map_err(DefinitionError::expand("needs_files"))?;
        }
        if !self.files.is_empty() {
            let with_command = [
                ("stdout", self.stdout.is_some()),
                ("inherit_env", !self.inherit_env.is_empty()),
                ("available_if", !self.available_if.is_empty()),
                ("needs_files", !self.needs_files.is_empty()),
                ("env_credentials", !self.env_credentials.is_empty()),
            ];
            if let Some((setting, _)) = with_command.iter().find(|(_, set)| *set) {
                return Err(DefinitionError::OnlyWith { setting, with: "command" });
            }
        }
        if let Some(s) = &self.stdout {
            crate::bundle::artifact::safe_relative(s).map_err(DefinitionError::invalid("stdout"))?;
        }
        if self.baseline != PREVIOUS {
            env.expand(&self.baseline).map_err(DefinitionError::expand("baseline"))?;
        }
        Ok(())
    }

    fn credentials(&self, _env: &Environment) -> Vec<(String, CredentialRef)> {
        self.env_credentials.iter().map(|(k, r)| (format!("env_credentials.{k}"), r.clone())).collect()
    }

    fn describe(&self, env: &Environment) -> String {
        let expand = |s: &String| env.expand(s).unwrap_or_else(|_| s.clone());
        let current = if self.command.is_empty() {
            self.files.iter().map(expand).collect::<Vec<_>>().join(" ")
        } else {
            self.command.iter().map(expand).collect::<Vec<_>>().join(" ")
        };
        let baseline = if self.baseline == PREVIOUS { "the previous bundle".into() } else { expand(&self.baseline) };
        format!("{current} against {baseline}")
    }

    async fn preflight(&self, env: &Environment) -> crate::sources::Readiness {
        use crate::sources::Readiness;
        let absent = |why: String| if self.required { Readiness::Cannot(why) } else { Readiness::Skip(why) };
        if !self.command.is_empty() {
            let program = env.expand(&self.command[0]).unwrap_or_else(|_| self.command[0].clone());
            if crate::sources::command::find_program(&program).is_none() {
                return absent(format!("`{program}` is not installed here (not found on PATH)"));
            }
            // As collection decides it (`run_command`): a file the program needs that is not there skips it.
            for needed in &self.needs_files {
                let Ok(needed) = env.expand(needed) else { continue };
                if let missing @ Presence::Absent(_) = Presence::of_path(Path::new(&needed)) {
                    return absent(format!("nothing to run `{program}` on: {}", missing.reason(&needed)));
                }
            }
            if let Some((probe, args)) = self.available_if.split_first() {
                let probe = env.expand(probe).unwrap_or_else(|_| probe.clone());
                let ran = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    tokio::process::Command::new(&probe)
                        .args(args.iter().map(|a| env.expand(a).unwrap_or_else(|_| a.clone())))
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .kill_on_drop(true)
                        .status(),
                )
                .await;
                if !matches!(ran, Ok(Ok(status)) if status.success()) {
                    return absent(format!("`{}` says `{program}` cannot run here", self.available_if.join(" ")));
                }
            }
            return Readiness::Ready(Vec::new());
        }
        let (found, unmatched) = crate::sources::file::unmatched_patterns(env, &self.files);
        if let Some((pattern, p)) = unmatched.iter().find(|(_, p)| !p.is_absent()) {
            return Readiness::Cannot(p.reason(pattern));
        }
        // Where the first missing directory is Caracal's home (or above it), say so as the run's hint does.
        let reason = |(pattern, p): &(String, Presence)| match (p, env.caracal_home_hint()) {
            (Presence::Absent(missing), Some(hint)) if env.caracal_home.starts_with(missing) => hint,
            _ => p.reason(pattern),
        };
        let mut reasons: Vec<String> = unmatched.iter().map(reason).collect();
        reasons.dedup();
        match found {
            true => Readiness::Ready(reasons),
            false => absent(format!("nothing to compare: {}", reasons.join("; "))),
        }
    }

    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError> {
        let current = if self.command.is_empty() {
            let spec = self.clone();
            let cx = cx.clone();
            blocking(move || Ok(spec.read_files(&cx))).await?
        } else {
            match self.run_command(&cx).await? {
                Ok(item) => Current { items: vec![item], ..Default::default() },
                // Not required here, and nothing to read: skipped, saying why.
                Err(why) => return Ok(Outcome::absent(why.to_string())),
            }
        };
        let spec = self.clone();
        blocking(move || spec.compare(&cx, current, Outcome::default())).await
    }
}

/// Runs blocking file work (reading, hashing, writing artifacts) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CollectError> + Send + 'static,
) -> Result<T, CollectError> {
    tokio::task::spawn_blocking(f).await.map_err(Error::Stopped)?
}

impl ConfigDiffSource {
    /// The current sides of `files`.
    fn read_files(&self, cx: &Collection) -> Current {
        let mut current = Current::default();
        let mut paths = BTreeSet::new();
        for pattern in &self.files {
            let Ok(pattern) = cx.env.expand(pattern) else { continue };
            let mut matched = 0;
            for entry in glob::glob(&pattern).into_iter().flatten() {
                let path = match entry {
                    Ok(p) => p,
                    // A directory that exists but cannot be listed may hold configuration: said, not passed over.
                    Err(e) => {
                        current.warnings.push(format!("{}: {}", e.path().display(), e.error()));
                        (current.failed, current.unlooked) = (current.failed + 1, true);
                        continue;
                    }
                };
                // Only regular files: a FIFO or device would block or never end.
                if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                    matched += 1;
                    paths.insert(path);
                }
            }
            if matched == 0 {
                let presence = Presence::of(&pattern);
                match (&presence, self.required) {
                    (Presence::Unreadable { .. }, _) => {
                        current.warnings.push(presence.reason(&pattern));
                        (current.failed, current.unlooked) = (current.failed + 1, true);
                    }
                    (Presence::Absent(_), true) => {
                        current.warnings.push(format!("no file matched `{pattern}`: {}", presence.reason(&pattern)))
                    }
                    (Presence::NoMatch, true) => current.warnings.push(format!("no file matched `{pattern}`")),
                    (_, false) => {
                        current.absent.insert(presence.reason(&pattern));
                    }
                }
            }
        }
        for path in &paths {
            let name = item_name(path, &paths);
            match read_capped(std::fs::File::open(path)) {
                Ok(text) => current.items.push((name, path.display().to_string(), text)),
                Err(e) => {
                    current.warnings.push(format!("{}: {e}", path.display()));
                    current.unreadable.insert(name);
                    current.failed += 1;
                }
            }
        }
        current
    }

    /// Runs `command`; its stdout is the one current item. `Err(why)` when the program is not installed (or
    /// `available_if` says it cannot run here) and not required. A program that fails fails the collector, with
    /// what it wrote kept.
    async fn run_command(&self, cx: &Collection) -> Result<Result<(String, String, Text), Unavailable>, CollectError> {
        let no_env = BTreeMap::new();
        let invocation = |argv| Invocation {
            argv,
            env: &no_env,
            inherit_env: &self.inherit_env,
            env_credentials: &self.env_credentials,
            cwd: None,
        };
        let absent = |why: Unavailable| if self.required { Err(Error::Unavailable(why).into()) } else { Ok(Err(why)) };
        for needed in &self.needs_files {
            let needed = cx.expand(needed)?;
            // Only a file that is not there skips the program; one that cannot be looked at, it reports itself.
            if let missing @ Presence::Absent(_) = Presence::of_path(Path::new(&needed)) {
                let reason = missing.reason(&needed);
                return absent(Unavailable::NothingToRunOn { program: self.command[0].clone(), reason });
            }
        }
        if !self.available_if.is_empty() {
            let probe = match invocation(&self.available_if).start(cx) {
                Ok(mut r) => {
                    let (o, e) = (r.stdout.take(), r.stderr.take());
                    let drain = async {
                        let (a, b) = tokio::join!(capture(o, 64 << 10), capture(e, 64 << 10));
                        a.and(b).map(|_| ())
                    };
                    r.wait(cx, drain).await?.success()
                }
                Err(StartError::Spawn { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    return absent(Unavailable::NotInstalled(self.available_if[0].clone()));
                }
                Err(StartError::Spawn { .. }) => false,
                Err(e) => return Err(e.into()),
            };
            if !probe {
                let (probe, program) = (self.available_if.join(" "), self.command[0].clone());
                return absent(Unavailable::CannotRunHere { probe, program });
            }
        }
        let mut running = match invocation(&self.command).start(cx) {
            Ok(r) => r,
            Err(StartError::Spawn { source, .. })
                if !self.required && source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(Err(Unavailable::NotInstalled(self.command[0].clone())));
            }
            Err(e) => return Err(e.into()),
        };
        let (out_pipe, err_pipe) = (running.stdout.take(), running.stderr.take());
        let (mut stdout, mut stderr) = (None, None);
        let drain = async {
            let (o, e) = tokio::join!(capture(out_pipe, MAX_SIDE), capture(err_pipe, MAX_STDERR));
            stdout = Some(o?);
            stderr = Some(e?);
            Ok(())
        };
        let argv = running.argv.clone();
        let status = running.wait(cx, drain).await?;
        let (stdout, stderr) = (stdout.unwrap_or(Text { bytes: Vec::new(), truncated: false }), stderr);
        let shown = cx.redact_str(&argv.join(" "));
        if let Some(err) = stderr.filter(|e| !e.bytes.is_empty()) {
            write_side(cx, "stderr.txt", &shown, &err)?;
        }
        let name = self.stdout.clone().unwrap_or_else(|| "output.txt".into());
        // As the artifact will be named, so the next run finds it under the same name.
        let name = crate::bundle::artifact::safe_relative(&name).unwrap_or(name);
        if !status.success() {
            // What it printed is kept for the record, but is no configuration to compare.
            if !stdout.bytes.is_empty() {
                // Redacted as what it was meant to be (YAML for `docker compose config`), whatever it is named.
                let clean = cx.redactor().redact_as(&stdout.bytes, Format::of(&name, media_type(&name)), cx.tally());
                write_artifact(cx, "stdout.txt", &shown, &clean, stdout.truncated)?;
            }
            let program = argv[0].clone();
            return Err(match status.code() {
                Some(code) => super::command::Error::Exited { program, code },
                None => super::command::Error::Killed { program },
            }
            .into());
        }
        Ok(Ok((name, shown, stdout)))
    }

    /// Pairs the current items with their baselines, writes every side and diff, and records the result.
    fn compare(&self, cx: &Collection, current: Current, mut out: Outcome) -> Result<Outcome, CollectError> {
        current.warnings.into_iter().for_each(|w| out.warn(w));
        let absent: Vec<String> = current.absent.into_iter().collect();
        let (failed, unlooked) = (current.failed, current.unlooked);
        let mut items: Vec<Item> = current
            .items
            .into_iter()
            .map(|(name, source, text)| Item {
                name,
                source: Some(source),
                current: Some(text),
                baseline: Err(String::new()),
            })
            .collect();
        // Sides from an earlier bundle carry that bundle's markers. Made with this bundle's key (the site's), an
        // unchanged secret is no change and a rotated one shows as a changed marker; made with another key (a
        // per-bundle key, which is gone), no marker can be compared, and the diff compares everything else.
        let mut uncompared = None;
        if self.baseline == PREVIOUS {
            let scheme = self.pair_with_previous(cx, &mut items, &current.unreadable, unlooked, &mut out)?;
            uncompared = scheme.and_then(|(id, scheme)| why_uncompared(cx.redactor().key(), &id, &scheme));
        } else {
            let path = PathBuf::from(cx.expand(&self.baseline)?);
            pair_with_path(&path, &mut items, &mut out)?;
        }
        items.sort_by(|a, b| a.name.cmp(&b.name));
        if !absent.is_empty() {
            out.detail("absent", &absent);
        }
        // Nothing now and nothing in the baseline (a file since removed would be an item): nothing to compare.
        if items.is_empty() && out.warnings.is_empty() && !absent.is_empty() {
            out.verdict = Verdict::Absent(format!("nothing to read: {}", absent.join("; ")));
            return Ok(out);
        }
        if items.is_empty() && failed > 0 {
            out.verdict = Verdict::AllFailed("no configuration could be read".into());
        }

        let mut records = Vec::new();
        let (mut changed, mut unmatched) = (Vec::new(), Vec::new());
        for item in &items {
            if cx.is_cancelled() {
                return Err(CollectError::Cancelled);
            }
            let record = write_item(cx, item, uncompared.is_none())?;
            match record["differs"].as_bool() {
                Some(true) => changed.push(item.name.clone()),
                Some(false) => {}
                None => unmatched.push(item.name.clone()),
            }
            records.push(record);
        }
        out.detail("items", records);
        if let Some(why) = uncompared.filter(|_| items.iter().any(|i| i.baseline.is_ok())) {
            let f = cx.finding(
                "config.secrets_not_compared",
                Severity::Info,
                format!(
                    "secrets not compared with the previous bundle: {why}; a secret changed since does not show in \
                     the diff (a site fingerprint key, [redaction] fingerprint_key, makes markers comparable across \
                     bundles)"
                ),
            );
            out.findings.push(f);
        }
        if !changed.is_empty() {
            let origins: BTreeSet<&str> =
                items.iter().filter_map(|i| i.baseline.as_ref().ok()).map(|b| &*b.0).collect();
            let mut f = cx.finding(
                "config.changed",
                Severity::Info,
                format!("configuration differs from its baseline: {}", changed.join(", ")),
            );
            f.details.insert("files".into(), changed.into());
            f.details.insert("baseline".into(), origins.into_iter().collect::<Vec<_>>().into());
            out.findings.push(f);
        }
        if !unmatched.is_empty() {
            let why: BTreeSet<&str> =
                items.iter().filter_map(|i| i.baseline.as_ref().err()).map(String::as_str).collect();
            let why = why.into_iter().collect::<Vec<_>>().join("; ");
            let mut f = cx.finding(
                "config.no_baseline",
                Severity::Info,
                format!("no baseline to compare {} with: {why}", unmatched.join(", ")),
            );
            f.details.insert("files".into(), unmatched.into());
            out.findings.push(f);
        }
        Ok(out)
    }

    /// Baselines from the newest earlier bundle. An item only that bundle has (a file since removed) joins the
    /// list, so a deletion shows as a change. Returns that bundle's id and how its markers were keyed.
    fn pair_with_previous(
        &self,
        cx: &Collection,
        items: &mut Vec<Item>,
        unreadable: &BTreeSet<String>,
        unlooked: bool,
        out: &mut Outcome,
    ) -> Result<Option<(String, RedactionScheme)>, CollectError> {
        let out_dir = &cx.env.out_dir;
        let found = previous::find(out_dir, &cx.name, jiff::Timestamp::now())
            .map_err(CollectError::io(format!("looking for earlier bundles in {}", out_dir.display())))?;
        if !found.not_ours.is_empty() {
            out.warn(format!(
                "passed over {} bundle(s) in {} as baselines: written by another user or writable by others (a \
                 baseline planted there would hide a change): {}",
                found.not_ours.len(),
                out_dir.display(),
                found.not_ours.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let Some(prev) = found.previous else {
            let why = format!("no earlier bundle in {} holds collector `{}`", out_dir.display(), cx.name);
            items.iter_mut().for_each(|i| i.baseline = Err(why.clone()));
            out.detail("previous_bundle", serde_json::Value::Null);
            return Ok(None);
        };
        out.detail("previous_bundle", &prev.bundle_id);
        let mut sides = prev
            .read(&cx.name, MAX_SIDE, || cx.is_cancelled())
            .map_err(CollectError::io(format!("reading {}", prev.bundle_id)))?;
        // Files that vanished since (one that exists but could not be read was warned of instead, and behind a
        // directory that could not be looked into, nothing is known to have vanished).
        if self.command.is_empty() && !unlooked {
            for name in prev.items.keys() {
                if !items.iter().any(|i| &i.name == name) && !unreadable.contains(name) {
                    items.push(Item { name: name.clone(), source: None, current: None, baseline: Err(String::new()) });
                }
            }
        }
        for item in items.iter_mut() {
            item.baseline = match sides.remove(&item.name) {
                Some(Ok(text)) => Ok((prev.bundle_id.clone(), text)),
                Some(Err(why)) => {
                    out.warn(why.clone());
                    Err(why)
                }
                None => Err(format!("{} has no {}", prev.bundle_id, item.name)),
            };
        }
        Ok(Some((prev.bundle_id, prev.scheme)))
    }
}

/// Baselines from a file (the only item's) or a directory of known-good copies (by item name, then file name).
fn pair_with_path(path: &Path, items: &mut [Item], out: &mut Outcome) -> Result<(), CollectError> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let why = format!("baseline {shown}: {e}");
            out.warn(why.clone());
            items.iter_mut().for_each(|i| i.baseline = Err(why.clone()));
            return Ok(());
        }
    };
    if !meta.is_dir() && items.len() > 1 {
        return Err(Error::BaselineIsOneFile { path: shown, files: items.len() }.into());
    }
    for item in items.iter_mut() {
        let candidates = if meta.is_dir() {
            let base = Path::new(&item.name).file_name().map(|n| path.join(n));
            [Some(path.join(&item.name)), base]
        } else {
            [Some(path.to_path_buf()), None]
        };
        let Some(file) = candidates.into_iter().flatten().find(|p| p.is_file()) else {
            item.baseline = Err(format!("no {} in {shown}", item.name));
            continue;
        };
        item.baseline = match read_capped(std::fs::File::open(&file)) {
            Ok(text) => Ok((file.display().to_string(), text)),
            Err(e) => {
                let why = format!("{}: {e}", file.display());
                out.warn(why.clone());
                Err(why)
            }
        };
    }
    Ok(())
}

/// The one place this kind redacts: a whole side at once, in the format its name says (YAML, env, TOML, JSON), so
/// the same secret gets the same marker on both sides. Everything written or diffed passes here first.
fn redacted(cx: &Collection, name: &str, raw: &[u8]) -> Vec<u8> {
    cx.redactor().redact_as(raw, Format::of(name, media_type(name)), cx.tally()).into_owned()
}

/// Writes `current/<name>`, `baseline/<name>` and `<name>.diff` as far as they exist; returns the item's record
/// for the manifest. Without `markers_compare` (the sides were keyed differently), markers are compared as being
/// there, not by fingerprint.
pub(crate) fn write_item(
    cx: &Collection,
    item: &Item,
    markers_compare: bool,
) -> Result<serde_json::Value, CollectError> {
    let current = match &item.current {
        Some(text) => {
            let clean = redacted(cx, &item.name, &text.bytes);
            let source = item.source.as_deref().map(|s| cx.redact_str(s)).unwrap_or_default();
            write_artifact(cx, &format!("current/{}", item.name), &source, &clean, text.truncated)?;
            Some(clean)
        }
        None => None,
    };
    let mut record = serde_json::json!({
        "name": item.name,
        "source": item.source.as_deref().map(|s| cx.redact_str(s)),
        "current_sha256": current.as_deref().map(sha256),
        "truncated": item.current.as_ref().is_some_and(|t| t.truncated),
    });
    let (origin, text) = match &item.baseline {
        Ok(b) => b,
        Err(why) => {
            record["baseline"] = serde_json::Value::Null;
            record["baseline_sha256"] = serde_json::Value::Null;
            record["differs"] = serde_json::Value::Null;
            record["no_baseline"] = why.clone().into();
            return Ok(record);
        }
    };
    // A previous bundle's side is already redacted; redacting it again changes nothing but is harmless.
    let baseline = redacted(cx, &item.name, &text.bytes);
    write_artifact(cx, &format!("baseline/{}", item.name), origin, &baseline, text.truncated)?;
    let now = current.as_deref().unwrap_or_default();
    let (was, now) = if markers_compare {
        (std::borrow::Cow::Borrowed(&baseline[..]), std::borrow::Cow::Borrowed(now))
    } else {
        (without_fingerprints(&baseline), without_fingerprints(now))
    };
    let diff = unified_diff(&item.name, origin, &was, &now, item.current.is_some());
    // Both sides were redacted before the diff was made (so their markers compare); written as text all the same,
    // which leaves markers as they are.
    let mut a = cx.artifact(&format!("{}.diff", item.name), "text/x-diff", Redaction::Text(Format::Text))?;
    a.add_records(diff.lines().count() as u64);
    a.write_all(diff.as_bytes()).map_err(CollectError::io(format!("writing {}.diff", item.name)))?;
    a.finish().map_err(CollectError::io(format!("writing {}.diff", item.name)))?;
    record["baseline"] = origin.clone().into();
    record["baseline_sha256"] = sha256(&baseline).into();
    record["baseline_truncated"] = text.truncated.into();
    record["secrets_compared"] = markers_compare.into();
    record["differs"] = (item.current.is_none() || was != now).into();
    Ok(record)
}

/// Why the markers of an earlier bundle (`id`, keyed as `scheme`) cannot be compared with those made with `key`;
/// `None` when one key made both.
fn why_uncompared(key: &FingerprintKey, id: &str, scheme: &RedactionScheme) -> Option<String> {
    if scheme.made_by(key) {
        return None;
    }
    Some(match (scheme.key, key.kind()) {
        (None, _) => format!("{id} was written before markers were keyed"),
        (Some(KeyKind::PerBundle), _) => format!("the markers of {id} were made with its own key, which is gone"),
        (Some(KeyKind::Site), KeyKind::PerBundle) => {
            format!("the markers of {id} were made with a site key, and this bundle has none")
        }
        (Some(KeyKind::Site), KeyKind::Site) => format!("the markers of {id} were made with another site key"),
    })
}

/// `text` with every marker's fingerprint replaced by [`UNCOMPARED`].
fn without_fingerprints(text: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    static MARKER: std::sync::LazyLock<regex::bytes::Regex> = std::sync::LazyLock::new(|| {
        regex::bytes::Regex::new(r"\[REDACTED:[0-9a-f]{16}\]").expect("a fixed pattern compiles")
    });
    MARKER.replace_all(text, UNCOMPARED)
}

/// The unified diff from the baseline to the current side (both already redacted); empty when they are equal.
fn unified_diff(name: &str, origin: &str, baseline: &[u8], current: &[u8], exists: bool) -> String {
    let (old, new) = (String::from_utf8_lossy(baseline), String::from_utf8_lossy(current));
    let diff = similar::TextDiff::configure().timeout(DIFF_TIMEOUT).diff_lines(&*old, &*new);
    let now = if exists { format!("current/{name}") } else { "/dev/null".to_string() };
    diff.unified_diff().header(&format!("baseline/{name}\t({origin})"), &now).to_string()
}

/// Writes a side that is already redacted (in the format it was meant to be); the artifact's own text redaction
/// leaves its markers as they are.
fn write_artifact(
    cx: &Collection,
    relative: &str,
    source: &str,
    clean: &[u8],
    truncated: bool,
) -> Result<(), CollectError> {
    let io = CollectError::io(format!("writing {relative}"));
    let mut a = cx.text_artifact(relative, media_type(relative))?;
    a.set_source(source);
    if truncated {
        a.set_truncated();
    }
    a.add_records(clean.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64);
    match a.write_all(clean) {
        Ok(()) => a.finish().map_err(io),
        Err(e) => Err(io(e)),
    }
}

/// Writes a program's output that is not a side (stderr, the stdout of a failed run), redacted.
fn write_side(cx: &Collection, relative: &str, source: &str, text: &Text) -> Result<(), CollectError> {
    let clean = redacted(cx, relative, &text.bytes);
    write_artifact(cx, relative, source, &clean, text.truncated)
}

/// An item's name: its file name, or its whole path (without the leading `/`) when two files share a file name.
fn item_name(path: &Path, all: &BTreeSet<PathBuf>) -> String {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let shared = all.iter().filter(|p| p.file_name() == path.file_name()).count() > 1;
    let name = if shared || file_name.is_empty() {
        path.to_string_lossy().trim_start_matches('/').to_string()
    } else {
        file_name
    };
    // As the artifact will be named, so the next run finds it under the same name.
    crate::bundle::artifact::safe_relative(&name).unwrap_or(name)
}

fn read_capped(file: std::io::Result<std::fs::File>) -> std::io::Result<Text> {
    let mut bytes = Vec::new();
    file?.take(MAX_SIDE as u64 + 1).read_to_end(&mut bytes)?;
    let truncated = bytes.len() > MAX_SIDE;
    bytes.truncate(MAX_SIDE);
    Ok(Text { bytes, truncated })
}

/// Reads a program's output into memory up to `cap` bytes, draining the rest so it never blocks on a full pipe.
async fn capture(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> Result<Text, CollectError> {
    let mut text = Text { bytes: Vec::new(), truncated: false };
    let Some(mut pipe) = pipe else { return Ok(text) };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut buf).await.map_err(CollectError::io("reading command output"))?;
        if n == 0 {
            return Ok(text);
        }
        let room = cap.saturating_sub(text.bytes.len());
        text.truncated |= n > room;
        text.bytes.extend_from_slice(&buf[..n.min(room)]);
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

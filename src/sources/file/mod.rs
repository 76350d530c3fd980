//! The `file` source kind: log and config files by glob pattern, rotated and `.gz`-compressed logs, and Docker
//! json-file logs. Records are filtered by the run's window on their own timestamps (or the file's mtime), byte
//! caps keep the newest data, and every line passes through the redactor. All reads are streamed, and each file
//! is read as it was when opened: what a writer appends meanwhile is left for the next snapshot.

mod docker;
mod open;
pub mod records;

use crate::sources::DefinitionError;
use std::{
    io::{self, BufRead, Read, Write},
    ops::ControlFlow,
    path::PathBuf,
};

use async_trait::async_trait;
use bytesize::ByteSize;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use docker::DockerSelect;
use records::{Format, LineFilter};

use super::{CollectError, Collection, Outcome, Source, Verdict, presence::Presence};
use crate::config::Environment;

/// A line longer than this is handled in pieces, so one endless line cannot exhaust memory.
const MAX_LINE: u64 = 1 << 20;
const READ_BUFFER: usize = 256 * 1024;
/// What is kept of a pseudo file (`pseudo_files = true`) when `max_file_bytes` is not set: such files report no
/// size to fix at open.
const PSEUDO_FILE_DEFAULT_CAP: u64 = 16 << 20;

/// Settings of a `file` collector.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// Glob patterns of files to read, `${var}` expanded (e.g. `"${caracal_home}/compose.yml"`,
    /// `"/var/log/caracal/*.log*"` to include rotations).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Docker json-file logs of Compose containers.
    pub docker: Option<DockerSelect>,
    /// How each record's time is found: `auto`, `json`, `text` or `whole` (see docs/collectors.md).
    #[serde(default)]
    pub format: Format,
    /// The JSON field holding a record's time.
    #[serde(default = "default_time_field")]
    pub time_field: String,
    /// Whether the run's time window applies (set `false` for configuration files).
    #[serde(default = "yes")]
    pub window: bool,
    /// Cap per file; the newest data is kept and the artifact marked truncated. A file is read up to its size
    /// when opened, so a log growing during the snapshot cannot push past the cap.
    pub max_file_bytes: Option<ByteSize>,
    /// Cap for the whole collector; newest files first.
    pub max_bytes: Option<ByteSize>,
    /// Whether a pattern that matches no file makes the collector `partial` (default true). With false, a
    /// collector that finds no file at all is `skipped`, naming what is missing. A missing Docker directory always
    /// skips (not a Docker host); a directory that exists but cannot be read never does.
    #[serde(default = "yes")]
    pub required: bool,
    /// Read files of pseudo file systems (procfs, sysfs, debugfs, tracefs, securityfs, cgroup, ...) that the
    /// patterns match. Off by default: the kernel makes such files up as they are read, they may block
    /// (`/proc/kmsg`) or never end, so each is refused and recorded as such. When on, each is read once, without
    /// blocking, keeping its first `max_file_bytes` (default 16 MiB).
    #[serde(default)]
    pub pseudo_files: bool,
}

fn default_time_field() -> String {
    "time".into()
}
fn yes() -> bool {
    true
}

/// What looking for the files found besides them.
#[derive(Debug, Default)]
struct Found {
    inputs: Vec<Input>,
    /// Inputs that are genuinely absent (a directory that does not exist), each with the reason.
    absent: Vec<String>,
    /// Places that exist but could not be looked into (each also a warning).
    failed: usize,
}

/// One file to read, with where it goes in the bag.
#[derive(Debug)]
struct Input {
    path: PathBuf,
    relative: String,
    mtime: Option<Timestamp>,
    size: u64,
    gz: bool,
}

/// Why a file collector stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The blocking task that reads the files panicked or was cancelled.
    #[error("file reader stopped: {0}")]
    Stopped(#[source] tokio::task::JoinError),
    #[error("bad glob `{pattern}`: {source}")]
    BadGlob { pattern: String, source: glob::PatternError },
    /// Every `name~N` up to the limit is taken already.
    #[error("too many files named {0}")]
    TooManyNamed(String),
}

#[async_trait]
impl Source for FileSource {
    fn check(&self, env: &Environment) -> Result<(), DefinitionError> {
        if self.paths.is_empty() && self.docker.is_none() {
            return Err(DefinitionError::Shape("a file collector needs `paths` or `docker`"));
        }
        for p in &self.paths {
            let expanded = env.expand(p).map_err(DefinitionError::expand("paths"))?;
            glob::Pattern::new(&expanded).map_err(DefinitionError::glob("paths", &expanded))?;
        }
        if let Some(d) = self.docker.as_ref().and_then(|d| d.dir.as_ref()) {
            env.expand(d).map_err(DefinitionError::expand("docker.dir"))?;
        }
        Ok(())
    }

    fn describe(&self, env: &Environment) -> String {
        let mut parts: Vec<String> = self.paths.iter().map(|p| env.expand(p).unwrap_or_else(|_| p.clone())).collect();
        if let Some(d) = &self.docker {
            let dir =
                d.dir.as_ref().and_then(|d| env.expand(d).ok()).unwrap_or_else(|| env.docker_dir.display().to_string());
            let services = if d.services.is_empty() { "*".to_string() } else { d.services.join(",") };
            parts.push(format!("docker {dir} project={} services={services}", d.project));
        }
        parts.join(" ")
    }

    async fn preflight(&self, env: &Environment) -> super::Readiness {
        let spec = self.clone();
        let env = env.clone();
        tokio::task::spawn_blocking(move || spec.preflight_blocking(&env))
            .await
            .unwrap_or_else(|e| super::Readiness::Cannot(format!("check stopped: {e}")))
    }

    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError> {
        let spec = self.clone();
        tokio::task::spawn_blocking(move || spec.collect_blocking(&cx)).await.map_err(Error::Stopped)?
    }
}

/// For `preserve check`: whether any of `patterns` (`${var}` expanded) matches a regular file, and for each that
/// matches none, what is there instead ([`Presence`], as collection tells absent from unreadable).
pub fn unmatched_patterns(env: &Environment, patterns: &[String]) -> (bool, Vec<(String, Presence)>) {
    let mut found = false;
    let mut unmatched = Vec::new();
    for pattern in patterns {
        let Ok(pattern) = env.expand(pattern) else { continue };
        let any = glob::glob(&pattern)
            .map(|mut paths| paths.any(|p| p.is_ok_and(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))))
            .unwrap_or(false);
        if any {
            found = true;
        } else {
            let presence = Presence::of(&pattern);
            unmatched.push((pattern, presence));
        }
    }
    (found, unmatched)
}

impl FileSource {
    /// Whether anything is there to read: a file each pattern matches, the Docker directory and a container of
    /// the selected services in it. Nothing matched at all is `Skip` when no Docker directory exists (not a
    /// Compose host) or nothing is required, else `Cannot`; some patterns matching nothing are notes.
    fn preflight_blocking(&self, env: &Environment) -> super::Readiness {
        use super::Readiness;
        let (mut found, unmatched) = unmatched_patterns(env, &self.paths);
        // A pattern under something that cannot be looked into is never skipped, as in collection.
        if let Some((pattern, p)) = unmatched.iter().find(|(_, p)| !p.is_absent()) {
            return Readiness::Cannot(p.reason(pattern));
        }
        let mut unmatched: Vec<String> = unmatched.iter().map(|(pattern, p)| p.reason(pattern)).collect();
        let mut no_docker = None;
        if let Some(select) = &self.docker {
            let dir = match select.dir.as_ref().map(|d| env.expand(d)) {
                Some(Ok(d)) => PathBuf::from(d),
                Some(Err(e)) => return Readiness::Cannot(format!("docker.dir: {e}")),
                None => env.docker_dir.clone(),
            };
            let services = if select.services.is_empty() { "any".into() } else { select.services.join(", ") };
            match docker::discover(&dir, select) {
                Ok((logs, _)) if !logs.is_empty() => found = true,
                Ok(_) => unmatched.push(format!(
                    "no container of Compose project {} (services: {services}) in {}",
                    select.project,
                    dir.display()
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    no_docker = Some(format!("Docker directory {} not found (not a Docker host?)", dir.display()));
                }
                Err(e) => unmatched.push(format!("Docker directory {}: {e}", dir.display())),
            }
        }
        match (found, no_docker) {
            (true, None) => Readiness::Ready(unmatched),
            (true, Some(why)) => Readiness::Ready(std::iter::once(why).chain(unmatched).collect()),
            (false, Some(why)) if unmatched.is_empty() => Readiness::Skip(why),
            (false, Some(why)) => Readiness::Skip(format!("{why}; {}", unmatched.join("; "))),
            (false, None) if !self.required => Readiness::Skip(unmatched.join("; ")),
            (false, None) => Readiness::Cannot(format!("nothing to read: {}", unmatched.join("; "))),
        }
    }

    fn collect_blocking(&self, cx: &Collection) -> Result<Outcome, CollectError> {
        let mut out = Outcome::default();
        let Found { mut inputs, absent, mut failed } = self.discover(cx, &mut out)?;
        if inputs.is_empty() && out.warnings.is_empty() && !absent.is_empty() {
            // Nothing here to read, and nothing that could not be read: not this kind of host.
            out.detail("absent", &absent);
            out.verdict = Verdict::Absent(format!("nothing to read: {}", absent.join("; ")));
            return Ok(out);
        }
        if !absent.is_empty() {
            out.detail("absent", &absent);
        }
        // Newest first, so the collector's byte budget keeps the newest data.
        inputs.sort_by(|a, b| b.mtime.cmp(&a.mtime).then_with(|| a.relative.cmp(&b.relative)));
        let mut budget = self.max_bytes.map_or(u64::MAX, |b| b.as_u64());
        let mut skipped_by_time = Vec::new();
        let mut dropped_by_cap = Vec::new();
        let mut refused = Vec::new();
        let mut read = 0usize;
        // Every file found, with its size and mtime as they were before reading (replay files: how old the backlog is).
        let inventory: Vec<serde_json::Value> = inputs
            .iter()
            .map(|i| serde_json::json!({ "path": cx.redact_str(&i.path.display().to_string()), "bytes": i.size, "mtime": i.mtime }))
            .collect();
        out.detail("files", &inventory);
        for input in inputs {
            if cx.is_cancelled() {
                return Err(CollectError::Cancelled);
            }
            if self.window
                && let (Some(since), Some(mtime)) = (cx.window.since, input.mtime)
                && mtime < since
            {
                // Last written before the window opened: no record in it can be inside.
                skipped_by_time.push(input.path.display().to_string());
                continue;
            }
            if budget == 0 {
                dropped_by_cap.push(input.path.display().to_string());
                continue;
            }
            let opened = match open::open(&input.path, self.pseudo_files) {
                Ok(o) => o,
                Err(e) => {
                    // One refused or unopenable file must not cost the others.
                    let why = cx.redact_str(&e.to_string());
                    if e.is_refusal() {
                        refused.push(why.clone());
                    }
                    out.warn(why);
                    failed += 1;
                    continue;
                }
            };
            let cap = self.max_file_bytes.map_or(u64::MAX, |b| b.as_u64()).min(budget);
            match self.copy(cx, &input, &opened, cap) {
                Ok(written) => {
                    budget = budget.saturating_sub(written);
                    read += 1;
                }
                Err(_) if cx.is_cancelled() => return Err(CollectError::Cancelled),
                // One unreadable or unnameable file must not cost the others.
                Err(e) => {
                    out.warn(e.to_string());
                    failed += 1;
                }
            }
        }
        if !skipped_by_time.is_empty() {
            out.detail("skipped_older_than_window", &skipped_by_time);
        }
        if !refused.is_empty() {
            out.detail("refused", &refused);
        }
        if !dropped_by_cap.is_empty() {
            out.warn(format!("{} older file(s) left out by max_bytes", dropped_by_cap.len()));
            out.detail("left_out_by_max_bytes", &dropped_by_cap);
        }
        if failed > 0 && read == 0 && skipped_by_time.is_empty() && dropped_by_cap.is_empty() {
            out.verdict = Verdict::AllFailed("no file could be read".into());
        }
        Ok(out)
    }

    fn discover(&self, cx: &Collection, out: &mut Outcome) -> Result<Found, CollectError> {
        let mut found = Found::default();
        let mut seen = std::collections::BTreeSet::new();
        for pattern in &self.paths {
            let pattern = cx.expand(pattern)?;
            let paths = glob::glob(&pattern).map_err(|source| Error::BadGlob { pattern: pattern.clone(), source })?;
            let mut matched = 0;
            for entry in paths {
                let path = match entry {
                    Ok(p) => p,
                    Err(e) => {
                        out.warn(format!("{}: {}", e.path().display(), e.error()));
                        found.failed += 1;
                        continue;
                    }
                };
                match std::fs::metadata(&path) {
                    // Only regular files: a FIFO or device under a log glob would block or never end.
                    Ok(m) if m.is_file() => {}
                    Ok(_) => continue,
                    Err(e) => {
                        out.warn(format!("{}: {e}", path.display()));
                        found.failed += 1;
                        continue;
                    }
                }
                matched += 1;
                if seen.insert(path.clone()) {
                    let relative = path.to_string_lossy().trim_start_matches('/').to_string();
                    found.inputs.push(input(path, relative));
                }
            }
            if matched == 0 {
                let presence = Presence::of(&pattern);
                let reason = presence.reason(&pattern);
                if !presence.is_absent() {
                    out.warn(reason);
                    found.failed += 1;
                } else if self.required {
                    out.warn(match presence {
                        Presence::Absent(_) => format!("no file matched `{pattern}`: {reason}"),
                        _ => format!("no file matched `{pattern}`"),
                    });
                } else {
                    found.absent.push(reason);
                }
            }
        }
        if let Some(select) = &self.docker {
            let dir = match &select.dir {
                Some(d) => PathBuf::from(cx.expand(d)?),
                None => cx.env.docker_dir.clone(),
            };
            match docker::discover(&dir, select) {
                Ok((logs, problems)) => {
                    if logs.is_empty() && self.required {
                        out.warn(format!(
                            "no container logs found in {} for {}",
                            dir.display(),
                            self.describe(&cx.env)
                        ));
                    }
                    found.failed += problems.len();
                    for p in problems {
                        out.warn(p);
                    }
                    found.inputs.extend(logs.into_iter().map(|l| input(l.path, l.relative)));
                }
                // No Docker directory at all: not a Docker host, nothing to read here.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match Presence::of_path(&dir) {
                    missing @ Presence::Absent(_) => found.absent.push(format!(
                        "no Docker containers directory: {}",
                        missing.reason(&dir.display().to_string())
                    )),
                    _ => {
                        out.warn(format!("cannot read Docker containers directory {}: {e}", dir.display()));
                        found.failed += 1;
                    }
                },
                Err(e) => {
                    out.warn(format!("cannot read Docker containers directory {}: {e}", dir.display()));
                    found.failed += 1;
                }
            }
        }
        Ok(found)
    }

    /// Copies one opened file into an artifact, filtered and redacted, keeping at most `cap` bytes: the newest of
    /// what it held when opened, or, for a pseudo file, which has no size to go by, its beginning.
    fn copy(&self, cx: &Collection, input: &Input, opened: &open::Opened, cap: u64) -> Result<u64, CollectError> {
        let shown = input.path.display().to_string();
        let window = if self.window { cx.window } else { Default::default() };
        let filter = || LineFilter::new(window, self.format, &self.time_field);
        let (cap, limit) = match opened.pseudo {
            // One byte past the cap tells whether there was more.
            Some(_) => {
                let cap = if self.max_file_bytes.is_none() { cap.min(PSEUDO_FILE_DEFAULT_CAP) } else { cap };
                (cap, cap.saturating_add(1))
            }
            None => (cap, opened.size_at_open),
        };
        let open = || opened.reader(input.gz, limit).map_err(CollectError::io(shown.clone()));

        let relative =
            if input.gz { input.relative.trim_end_matches(".gz").to_string() } else { input.relative.clone() };
        // Only when the output might exceed the cap do we pay for a counting pass; it reads exactly what the
        // writing pass will, the file as it was when opened. The cap counts the file's bytes, before redaction.
        let mut skip = 0u64;
        if opened.pseudo.is_none() && cap != u64::MAX && (input.gz || limit > cap) {
            let counted = for_each_kept_line(open()?, filter(), cx, |_| Ok(ControlFlow::Continue(())))
                .map_err(CollectError::io(shown.clone()))?;
            skip = counted.kept.saturating_sub(cap);
        }
        let mut artifact = unique_artifact(cx, &relative)?;
        artifact.set_source(cx.redact_str(&shown));
        let (mut skipped, mut written, mut lines) = (0u64, 0u64, 0u64);
        let result = for_each_kept_line(open()?, filter(), cx, |line| {
            if skipped < skip {
                skipped += line.len() as u64;
                return Ok(ControlFlow::Continue(()));
            }
            // The cap holds even if the file changed under us between the passes (truncated and rewritten).
            if written + line.len() as u64 > cap {
                return Ok(ControlFlow::Break(()));
            }
            artifact.write_all(line)?;
            written += line.len() as u64;
            lines += 1;
            Ok(ControlFlow::Continue(()))
        });
        artifact.add_records(lines);
        let cut = match &result {
            Ok(pass) => pass.stopped || (opened.pseudo.is_some() && pass.read > cap),
            Err(_) => false,
        };
        if skip > 0 || cut {
            artifact.set_truncated();
        }
        // What is still gathered for redaction counts too.
        let _ = artifact.flush_lines();
        let written = artifact.bytes();
        artifact.finish().map_err(CollectError::io(format!("writing {relative}")))?;
        result.map_err(CollectError::io(shown))?;
        Ok(written)
    }
}

/// Opens an artifact at `relative`, or at `relative~N` when that name is taken (`x.log.1` beside `x.log.1.gz`,
/// names that differ only by a `%`), redacted as text in the format its name says.
fn unique_artifact(cx: &Collection, relative: &str) -> Result<crate::sources::Artifact, CollectError> {
    let redaction = crate::sources::Redaction::Text(crate::redact::Format::of(relative, media_type(relative)));
    for n in 0..100 {
        let name = if n == 0 { relative.to_string() } else { format!("{relative}~{n}") };
        match cx.artifact(&name, media_type(relative), redaction) {
            Err(crate::bundle::artifact::ArtifactError::Duplicate(_)) => continue,
            other => return Ok(other?),
        }
    }
    Err(Error::TooManyNamed(relative.to_string()).into())
}

fn input(path: PathBuf, relative: String) -> Input {
    let meta = std::fs::metadata(&path).ok();
    let mtime = meta.as_ref().and_then(|m| m.modified().ok()).and_then(|t| Timestamp::try_from(t).ok());
    let gz = path.extension().is_some_and(|e| e == "gz");
    Input { size: meta.map_or(0, |m| m.len()), mtime, gz, path, relative }
}

/// What one pass over a file saw.
struct Pass {
    /// Bytes read from the file (decompressed).
    read: u64,
    /// Bytes of kept lines offered to the sink.
    kept: u64,
    /// Whether the sink stopped the pass before the end.
    stopped: bool,
}

/// Streams lines (pieces of at most [`MAX_LINE`]) that pass the filter to `sink` until it breaks.
/// Stops with `BrokenPipe` when the collection is cancelled.
fn for_each_kept_line(
    mut reader: Box<dyn BufRead + Send>,
    mut filter: LineFilter,
    cx: &Collection,
    mut sink: impl FnMut(&[u8]) -> io::Result<ControlFlow<()>>,
) -> io::Result<Pass> {
    let mut line = Vec::with_capacity(8 * 1024);
    let mut pass = Pass { read: 0, kept: 0, stopped: false };
    let mut n = 0u64;
    loop {
        line.clear();
        let got = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line)?;
        if got == 0 {
            return Ok(pass);
        }
        pass.read += got as u64;
        n += 1;
        if n.is_multiple_of(4096) && cx.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "collection stopped"));
        }
        if !filter.keep(&line) {
            continue;
        }
        pass.kept += line.len() as u64;
        if sink(&line)?.is_break() {
            pass.stopped = true;
            return Ok(pass);
        }
    }
}

/// The media type of an artifact named `path`.
pub(crate) fn media_type(path: &str) -> &'static str {
    if path.contains("-json.log") || path.ends_with(".jsonl") || path.ends_with(".ndjson") {
        "application/x-ndjson"
    } else if path.ends_with(".json") {
        "application/json"
    } else if path.ends_with(".yml") || path.ends_with(".yaml") {
        "application/yaml"
    } else if path.ends_with(".toml") {
        "application/toml"
    } else {
        "text/plain"
    }
}

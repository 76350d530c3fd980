//! The incident timeline (`preserve timeline BUNDLE`): every timestamped record of a bundle as one time-ordered
//! stream of events, each saying where in the bundle it is (docs/timeline.md).
//!
//! The archive is read once, front to back, within the same bounds as `verify` ([`crate::bundle::walk`]); an
//! encrypted one is decrypted on the way with the identities given. Each artifact whose shape gives events
//! ([`extract::shape`]) is read into runs that [`merge::Sorter`] puts in one order; the manifest adds the triggering
//! alerts and the collectors' runs.

pub mod event;
pub mod extract;
pub mod filter;
pub mod format;
pub mod merge;

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

pub use event::{Event, Source};
pub use filter::Filter;
pub use format::{Encoder, Format, Writer};
use jiff::Timestamp;

use crate::bundle::{
    bounds::{Budget, Limits},
    manifest::Manifest,
    verify::{self, bag_relative},
    walk::{self, Flow, WalkError},
};

/// How to read a bundle.
pub struct Options {
    pub limits: Limits,
    /// Identities to decrypt an encrypted bundle (`<id>.tar.zst.age`) with.
    pub identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// Events held in memory before runs are spilled.
    pub budget: usize,
    /// Where the spill directory is made (the system's temporary directory by default).
    pub spill_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self { limits: Limits::default(), identities: Vec::new(), budget: merge::DEFAULT_BUDGET, spill_dir: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bundle(#[from] verify::Error),
    #[error("cannot write the timeline: {0}")]
    Output(io::Error),
    #[error("cannot sort the timeline in {}: {source}", dir.as_ref().map_or("the temporary directory".into(), |d| d.display().to_string()))]
    Spill { dir: Option<PathBuf>, source: io::Error },
}

/// What reading the bundle found, besides the events.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    /// Events written (after the filter).
    pub events: u64,
    /// Artifacts read for events.
    pub artifacts: u64,
    /// Lines and rows that gave no event, and why.
    pub skipped: extract::Tally,
    /// Unsafe entries, and where the archive was cut: the events before the cut are in the timeline.
    pub walked: Walked,
    pub merge: merge::MergeStats,
}

/// The bundle's manifest: beside a plain archive (or inside it), inside an encrypted one (decrypted with `opts`).
pub fn manifest(archive: &Path, opts: &Options) -> Result<Manifest, verify::Error> {
    if !encrypted(archive) {
        return verify::read_manifest(archive, &opts.limits);
    }
    let (plain, length) = open(archive, opts)?;
    verify::manifest_in(archive, plain, length, &opts.limits)
}

fn encrypted(archive: &Path) -> bool {
    crate::bundle::archive_id(archive).is_some_and(|(_, e)| e)
}

/// The archive's `.tar.zst` bytes (decrypted when it is encrypted) and the archive file's length.
fn open(archive: &Path, opts: &Options) -> Result<(Box<dyn Read + Send>, u64), verify::Error> {
    let read_error = |source| verify::Error::Read { path: archive.to_path_buf(), source };
    let file = File::open(archive).map_err(read_error)?;
    let length = file.metadata().map_err(read_error)?.len();
    let buffered = BufReader::with_capacity(1 << 20, file);
    if !encrypted(archive) {
        return Ok((Box::new(buffered), length));
    }
    if opts.identities.is_empty() {
        let detail = "the bundle is encrypted: give --identity FILE to open it".to_string();
        return Err(verify::Error::Decrypt { path: archive.to_path_buf(), detail });
    }
    Ok((Box::new(verify::decrypt(archive, buffered, &opts.identities)?), length))
}

/// What walking the archive found besides the artifacts.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Walked {
    /// Entries refused for an unsafe path (never read).
    pub unsafe_entries: Vec<String>,
    /// Where the archive ended early (corrupt or cut), if it did.
    pub cut: Option<String>,
}

/// Why [`each_artifact`]'s caller stopped reading an artifact.
pub enum Halt {
    /// Its bytes could not be read: the archive is cut or corrupt there. The walk ends, and says so in
    /// [`Walked::cut`]; what was read before stays.
    Cut(io::Error),
    /// The caller's own failure (its output, its spill): the walk ends with it.
    Fail(Error),
}

/// Calls `each` with every artifact of the bundle that its manifest lists, in archive order, and a reader of its
/// content (bounded by its entry's size), buffered.
pub fn each_artifact(
    archive: &Path,
    manifest: &Manifest,
    opts: &Options,
    mut each: impl FnMut(&extract::Artifact<'_>, &mut dyn BufRead) -> Result<(), Halt>,
) -> Result<Walked, Error> {
    let collectors: BTreeMap<&str, &crate::bundle::manifest::CollectorRecord> =
        manifest.collectors.iter().map(|c| (c.name.as_str(), c)).collect();
    let artifacts: BTreeMap<&str, (&str, &crate::bundle::manifest::ArtifactRecord)> = manifest
        .collectors
        .iter()
        .flat_map(|c| c.artifacts.iter().map(move |a| (a.path.as_str(), (c.name.as_str(), a))))
        .collect();
    let (plain, length) = open(archive, opts)?;
    let budget = Budget::derive(&opts.limits, length, None);
    let mut top = None;
    let mut walked = Walked::default();
    let mut failure: Option<Error> = None;
    let tar = walk::unzstd_ahead(plain)
        .map_err(|e| verify::Error::Read { path: archive.to_path_buf(), source: io::Error::other(e.to_string()) })?;
    let result = walk::walk(tar, &opts.limits, &budget, |entry| {
        if entry.kind != tar::EntryType::Regular && entry.kind != tar::EntryType::Continuous {
            return Ok(Flow::Continue);
        }
        let Some(rel) = bag_relative(&entry.path, &mut top) else {
            walked.unsafe_entries.push(crate::bundle::bounds::printable(&entry.path));
            return Ok(Flow::Continue);
        };
        // Only what the manifest lists is read, as the kind of thing its collector wrote.
        let Some((collector, record)) = artifacts.get(rel.as_str()) else { return Ok(Flow::Continue) };
        let Some(c) = collectors.get(collector) else { return Ok(Flow::Continue) };
        let a = extract::Artifact {
            collector,
            kind: &c.kind,
            path: &rel,
            redaction: record.redaction.as_deref(),
            collected_at: Some(c.started_at),
        };
        let mut data = BufReader::with_capacity(256 << 10, entry.data.take(entry.size));
        match each(&a, &mut data) {
            Ok(()) => Ok(Flow::Continue),
            Err(Halt::Cut(e)) => Err(WalkError::Corrupt(io::Error::other(format!("{rel}: {e}")))),
            Err(Halt::Fail(e)) => {
                failure = Some(e);
                Ok(Flow::Stop)
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    match result {
        Ok(()) => {}
        Err(WalkError::Refused(refusal)) => {
            return Err(verify::Error::Refused { path: archive.to_path_buf(), refusal }.into());
        }
        // What was read before the cut is evidence too: the caller keeps it and says where it stopped.
        Err(WalkError::Corrupt(e)) => walked.cut = Some(crate::bundle::bounds::excerpt(e.to_string().as_bytes())),
    }
    Ok(walked)
}

/// Reads the timeline of the bundle at `archive` (whose manifest is `manifest`): the events `filter` keeps, in time
/// order, encoded by `writer`'s encoder and written to its output.
pub fn read<W: io::Write>(
    archive: &Path,
    manifest: &Manifest,
    opts: &Options,
    filter: &Filter,
    writer: &mut Writer<W>,
) -> Result<Summary, Error> {
    let mut summary = Summary::default();
    let mut sorter = merge::Sorter::new(opts.budget, opts.spill_dir.clone());
    let spill_error = |source| Error::Spill { dir: opts.spill_dir.clone(), source };
    let encoder = &mut writer.encoder;
    {
        let mut sink = Kept { filter, encoder: &mut *encoder, sorter: &mut sorter, pushed: Ok(()) };
        for e in extract::from_manifest(manifest) {
            extract::Sink::take(&mut sink, e);
        }
        sink.pushed.map_err(spill_error)?;
    }
    sorter.end_artifact().map_err(spill_error)?;
    summary.walked = each_artifact(archive, manifest, opts, |a, data| {
        let Some(shape) = extract::shape(a) else { return Ok(()) };
        if !filter.reads(a.collector, a.path) {
            return Ok(());
        }
        summary.artifacts += 1;
        let mut sink = Kept { filter, encoder: &mut *encoder, sorter: &mut sorter, pushed: Ok(()) };
        let read = extract::extract(&shape, a, data, &mut summary.skipped, &mut sink);
        let pushed = sink.pushed;
        pushed.and_then(|()| sorter.end_artifact()).map_err(|e| Halt::Fail(spill_error(e)))?;
        read.map_err(Halt::Cut)
    })?;
    let mut written = 0u64;
    let mut output: Option<io::Error> = None;
    let out = &mut writer.out;
    let merged = sorter.merge(|bytes| {
        written += 1;
        out.write_all(bytes).map_err(|e| {
            output = Some(e);
            io::Error::other("the output failed")
        })
    });
    match (merged, output) {
        (_, Some(e)) => return Err(Error::Output(e)),
        (Err(e), None) => return Err(spill_error(e)),
        (Ok(stats), None) => summary.merge = stats,
    }
    summary.events = written;
    Ok(summary)
}

/// The events a filter keeps, encoded into the sorter: a record outside `--around` is not even parsed.
struct Kept<'a> {
    filter: &'a Filter,
    encoder: &'a mut Encoder,
    sorter: &'a mut merge::Sorter,
    pushed: io::Result<()>,
}

impl extract::Sink for Kept<'_> {
    fn wants(&mut self, time: Timestamp, _: &str, _: &str) -> bool {
        self.pushed.is_ok() && self.filter.between.is_none_or(|(from, to)| time >= from && time <= to)
    }
    fn take(&mut self, event: Event) {
        if self.pushed.is_ok() && self.filter.keeps(&event) {
            let encoder = &mut *self.encoder;
            self.pushed = self.sorter.push(event.time, |out| encoder.encode(&event, out));
        }
    }
}

/// When the first triggering alert started, if the bundle was triggered by one.
pub fn alert_start(m: &Manifest) -> Option<Timestamp> {
    first_start(&m.trigger.alerts)
}

/// When the first of `alerts` started.
pub fn first_start(alerts: &[crate::alert::Alert]) -> Option<Timestamp> {
    alerts
        .iter()
        .filter_map(|a| a.starts_at.as_deref().and_then(crate::time::timestamp_from_text))
        .filter(|t| t.as_second() > 0)
        .min()
}

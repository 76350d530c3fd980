//! Puts the events of every artifact in one time order with bounded memory.
//!
//! The archive is one compressed (and maybe encrypted) stream read once, front to back, so the artifacts come one
//! after the other, not side by side. Each artifact's events form runs: an artifact whose records are in time order
//! (a log, a stream) is one run as it is; one that is not (a table in its physical order) is sorted, in pieces of
//! at most half the budget. Runs stay in memory while the events held fit the budget, and go to a temporary
//! directory (private to this process, removed at the end) as zstd-compressed `postcard` records when they do not.
//! A k-way merge of the runs gives the timeline, ties broken by the order the events were read in (artifact order
//! in the archive, then line or row), so the same bundle always gives the same timeline.

use std::{
    borrow::Cow,
    cmp::Reverse,
    collections::BinaryHeap,
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use jiff::Timestamp;

use super::event::{Event, Fields, Source};

/// Events held in memory by default (estimated by [`Event::weight`]).
pub const DEFAULT_BUDGET: usize = 48 << 20;
/// Runs merged at once; more than this are merged in rounds first.
const FAN_IN: usize = 64;
/// The longest spilled record read back (one event is far less; a larger length means the file is not ours).
const RECORD_LIMIT: usize = 4 << 20;

struct Keyed {
    nanos: i128,
    seq: u64,
    event: Event,
}

impl Keyed {
    fn key(&self) -> (i128, u64) {
        (self.nanos, self.seq)
    }
}

/// How the merge went, for the summary.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct MergeStats {
    pub events: u64,
    /// Artifacts whose events were not in time order and were sorted.
    pub unordered_artifacts: u64,
    /// Runs written to the temporary directory, and the events in them.
    pub spilled_runs: u64,
    pub spilled_events: u64,
}

pub struct Sorter {
    budget: usize,
    held: usize,
    memory: Vec<Vec<Keyed>>,
    files: Vec<PathBuf>,
    spill_parent: Option<PathBuf>,
    dir: Option<tempfile::TempDir>,
    current: Vec<Keyed>,
    current_weight: usize,
    current_ordered: bool,
    seq: u64,
    pub stats: MergeStats,
}

impl Sorter {
    /// A sorter holding at most about `budget` bytes of events, spilling into a new directory under `spill_parent`
    /// (the system's temporary directory when `None`).
    pub fn new(budget: usize, spill_parent: Option<PathBuf>) -> Self {
        Self {
            budget: budget.max(1 << 20),
            held: 0,
            memory: Vec::new(),
            files: Vec::new(),
            spill_parent,
            dir: None,
            current: Vec::new(),
            current_weight: 0,
            current_ordered: true,
            seq: 0,
            stats: MergeStats::default(),
        }
    }

    /// Adds an event of the artifact being read.
    pub fn push(&mut self, event: Event) -> io::Result<()> {
        let nanos = event.time.as_nanosecond();
        self.seq += 1;
        if let Some(last) = self.current.last()
            && last.nanos > nanos
        {
            self.current_ordered = false;
        }
        self.current_weight += std::mem::size_of::<Keyed>() + event.weight();
        self.current.push(Keyed { nanos, seq: self.seq, event });
        self.stats.events += 1;
        if self.current_weight > self.budget / 2 {
            self.cut_run(true)?;
        }
        Ok(())
    }

    /// The artifact is read: its last run is kept in memory if it fits, else spilled.
    pub fn end_artifact(&mut self) -> io::Result<()> {
        if !self.current_ordered {
            self.stats.unordered_artifacts += 1;
        }
        let spill = self.held + self.current_weight > self.budget;
        self.cut_run(spill)?;
        self.current_ordered = true;
        Ok(())
    }

    fn cut_run(&mut self, spill: bool) -> io::Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        let mut run = std::mem::take(&mut self.current);
        let weight = std::mem::take(&mut self.current_weight);
        if !self.current_ordered {
            // Stable on equal times: the order the events were read in (`seq`) breaks ties anyway.
            run.sort_unstable_by_key(Keyed::key);
        }
        if spill {
            self.spill(run.into_iter().map(Ok))?;
        } else {
            self.held += weight;
            self.memory.push(run);
        }
        Ok(())
    }

    fn spill_dir(&mut self) -> io::Result<&Path> {
        if self.dir.is_none() {
            let mut b = tempfile::Builder::new();
            b.prefix("preserve-timeline-");
            // A directory of our own, mode 0700: nobody else on the host reads the evidence in it or swaps a file.
            self.dir = Some(match &self.spill_parent {
                Some(p) => b.tempdir_in(p)?,
                None => b.tempdir()?,
            });
        }
        Ok(self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new(".")))
    }

    /// Writes a sorted run to a new file of the spill directory.
    fn spill(&mut self, run: impl Iterator<Item = io::Result<Keyed>>) -> io::Result<()> {
        let name = format!("run-{:06}", self.stats.spilled_runs);
        let path = self.spill_dir()?.join(name);
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        let mut w = BufWriter::with_capacity(256 << 10, zstd::stream::write::Encoder::new(file, 1)?);
        let mut buf = Vec::new();
        for k in run {
            let k = k?;
            buf.clear();
            let e = &k.event;
            let s = &e.source;
            let record = (
                k.nanos,
                k.seq,
                (&s.collector, &s.path, s.line, s.record),
                (&e.service, &e.instance, &e.kind, &e.level, &e.message),
                (&e.ids, &e.details),
            );
            buf = postcard::to_extend(&record, buf).map_err(io::Error::other)?;
            w.write_all(&(buf.len() as u32).to_le_bytes())?;
            w.write_all(&buf)?;
            self.stats.spilled_events += 1;
        }
        w.into_inner().map_err(|e| e.into_error())?.finish()?;
        self.stats.spilled_runs += 1;
        self.files.push(path);
        Ok(())
    }

    /// Hands every event to `each` in time order.
    pub fn merge(mut self, mut each: impl FnMut(Event) -> io::Result<()>) -> io::Result<MergeStats> {
        self.end_artifact()?;
        // Too many runs on disk to open at once: merge them in rounds, each round's output a run of its own.
        while self.files.len() + self.memory.len() > FAN_IN && self.files.len() > 1 {
            let take = self.files.len().min(FAN_IN);
            let group: Vec<PathBuf> = self.files.drain(..take).collect();
            let mut runs = Vec::new();
            for p in &group {
                runs.push(Run::File(RunReader::open(p)?));
            }
            let merged = Merger::new(runs)?;
            self.spill(merged)?;
            for p in group {
                let _ = std::fs::remove_file(p);
            }
        }
        let mut runs: Vec<Run> = self.memory.drain(..).map(|r| Run::Memory(r.into_iter())).collect();
        for p in &self.files {
            runs.push(Run::File(RunReader::open(p)?));
        }
        for k in Merger::new(runs)? {
            each(k?.event)?;
        }
        Ok(self.stats)
    }
}

enum Run {
    Memory(std::vec::IntoIter<Keyed>),
    File(RunReader),
}

impl Run {
    fn next(&mut self) -> io::Result<Option<Keyed>> {
        match self {
            Run::Memory(it) => Ok(it.next()),
            Run::File(r) => r.next(),
        }
    }
}

struct RunReader {
    input: BufReader<zstd::stream::read::Decoder<'static, BufReader<File>>>,
    buf: Vec<u8>,
}

type Stored = (
    i128,
    u64,
    (Arc<str>, Arc<str>, Option<u64>, Option<u64>),
    (Arc<str>, Arc<str>, Cow<'static, str>, Option<Cow<'static, str>>, String),
    (Fields, Fields),
);

impl RunReader {
    fn open(path: &Path) -> io::Result<Self> {
        let d = zstd::stream::read::Decoder::new(File::open(path)?)?;
        Ok(Self { input: BufReader::with_capacity(128 << 10, d), buf: Vec::new() })
    }

    fn next(&mut self) -> io::Result<Option<Keyed>> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > RECORD_LIMIT {
            return Err(io::Error::other(format!("a spilled record of {len} bytes: the spill file is not ours")));
        }
        self.buf.resize(len, 0);
        self.input.read_exact(&mut self.buf)?;
        let (nanos, seq, (collector, path, line, record), (service, instance, kind, level, message), (ids, details)): Stored =
            postcard::from_bytes(&self.buf).map_err(io::Error::other)?;
        let time = Timestamp::from_nanosecond(nanos).map_err(io::Error::other)?;
        let event = Event {
            time,
            source: Source { collector, path, line, record },
            service,
            instance,
            kind,
            level,
            message,
            ids,
            details,
        };
        Ok(Some(Keyed { nanos, seq, event }))
    }
}

/// The k-way merge of sorted runs.
struct Merger {
    runs: Vec<Run>,
    heads: Vec<Option<Keyed>>,
    heap: BinaryHeap<Reverse<((i128, u64), usize)>>,
}

impl Merger {
    fn new(mut runs: Vec<Run>) -> io::Result<Self> {
        let mut heads = Vec::with_capacity(runs.len());
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for (i, r) in runs.iter_mut().enumerate() {
            let head = r.next()?;
            if let Some(k) = &head {
                heap.push(Reverse((k.key(), i)));
            }
            heads.push(head);
        }
        Ok(Self { runs, heads, heap })
    }
}

impl Iterator for Merger {
    type Item = io::Result<Keyed>;

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((_, i)) = self.heap.pop()?;
        let out = self.heads[i].take()?;
        match self.runs[i].next() {
            Ok(Some(k)) => {
                self.heap.push(Reverse((k.key(), i)));
                self.heads[i] = Some(k);
            }
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ms: i64, path: &str) -> Event {
        Event {
            time: Timestamp::from_millisecond(ms).unwrap(),
            source: Source { collector: "c".into(), path: path.into(), line: Some(ms as u64), record: None },
            service: "s".into(),
            instance: "i".into(),
            kind: "log".into(),
            level: Some("info".into()),
            message: format!("at {ms}"),
            ids: Fields::from([("request_id", format!("req-{ms}").as_str())]),
            details: Fields::default(),
        }
    }

    fn merged(sorter: Sorter) -> (Vec<Event>, MergeStats) {
        let mut out = Vec::new();
        let stats = sorter
            .merge(|e| {
                out.push(e);
                Ok(())
            })
            .unwrap();
        (out, stats)
    }

    #[test]
    fn ordered_and_unordered_artifacts_merge_into_one_order_with_ties_in_reading_order() {
        let mut s = Sorter::new(DEFAULT_BUDGET, None);
        for ms in [1, 4, 7] {
            s.push(ev(ms, "a")).unwrap();
        }
        s.end_artifact().unwrap();
        for ms in [9, 2, 4, 3] {
            s.push(ev(ms, "b")).unwrap();
        }
        s.end_artifact().unwrap();
        let (out, stats) = merged(s);
        let got: Vec<(i64, &str)> = out.iter().map(|e| (e.time.as_millisecond(), &*e.source.path)).collect();
        assert_eq!(got, [(1, "a"), (2, "b"), (3, "b"), (4, "a"), (4, "b"), (7, "a"), (9, "b")]);
        assert_eq!(stats.unordered_artifacts, 1);
        assert_eq!(stats.spilled_runs, 0, "small enough to stay in memory");
    }

    #[test]
    fn over_the_budget_runs_spill_and_come_back_whole() {
        let spill = tempfile::tempdir().unwrap();
        // The smallest budget: a few thousand events per run.
        let mut s = Sorter::new(1, Some(spill.path().to_path_buf()));
        let n = 40_000i64;
        for i in 0..n {
            // Two interleaved descending sequences: nothing in order.
            s.push(ev(if i % 2 == 0 { n - i } else { 3 * n - i }, "x")).unwrap();
        }
        s.end_artifact().unwrap();
        for i in 0..n {
            s.push(ev(2 * i, "y")).unwrap();
        }
        let (out, stats) = merged(s);
        assert_eq!(out.len(), 2 * n as usize);
        assert!(out.windows(2).all(|w| w[0].time <= w[1].time), "in time order");
        assert!(stats.spilled_runs >= 2, "{stats:?}");
        let e = out.iter().find(|e| e.message == "at 5000").unwrap();
        assert_eq!(&e.ids["request_id"], "req-5000", "a spilled event comes back with its ids");
        assert_eq!(e.level.as_deref(), Some("info"));
        assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0, "the spill directory is removed");
    }

    #[test]
    fn many_runs_are_merged_in_rounds() {
        let mut s = Sorter::new(1, None);
        let n = 200_000i64;
        for i in 0..n {
            s.push(ev((i * 7919) % n, "z")).unwrap();
        }
        let (out, stats) = merged(s);
        assert!(stats.spilled_runs as usize > FAN_IN, "{stats:?}");
        assert_eq!(out.len(), n as usize);
        assert!(out.windows(2).all(|w| w[0].time <= w[1].time));
    }
}

//! Puts the events of every artifact in one time order with bounded memory.
//!
//! The archive is one compressed (and maybe encrypted) stream read once, front to back, so the artifacts come one
//! after the other, not side by side. An event is encoded in the output's format as soon as it is read (the filter
//! has already kept it), so what is sorted, held and spilled is its bytes and a key, never a tree of allocations:
//! each run is one buffer of encoded events and a vector of fixed-size keys, and its weight is exactly what it
//! holds. Each artifact's events form runs: an artifact whose records are in time order (a log, a stream) is one
//! run as it is; one that is not (a table in its physical order) is sorted, in pieces of at most half the budget.
//! Runs stay in memory while they fit the budget and go to a temporary directory (private to this process, removed
//! at the end) as zstd frames when they do not; the compression runs on a worker thread of zstd's own, beside the
//! reading. A k-way merge of the runs gives the timeline, ties broken by the order the events were read in
//! (artifact order in the archive, then line or row), so the same bundle always gives the same timeline.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, binary_heap::PeekMut},
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use jiff::Timestamp;

/// Bytes of events held in memory by default.
pub const DEFAULT_BUDGET: usize = 48 << 20;
/// Runs merged at once; more than this are merged in rounds first.
const FAN_IN: usize = 64;
/// The longest spilled record read back (one event is far less; a larger length means the file is not ours).
const RECORD_LIMIT: usize = 4 << 20;
/// zstd's level for spilled runs: its fastest positive one. Encoded events are text that compresses several times
/// over, so a spill costs the disk a fraction of what it holds.
const SPILL_LEVEL: i32 = 1;
/// zstd's window for spilled runs: 128 KiB.
const SPILL_WINDOW_LOG: u32 = 17;

/// What orders an event: its UTC time, then the order it was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    second: i64,
    nanosecond: u32,
    seq: u64,
}

/// One event of a run held in memory: its order and where its bytes are in the run's buffer.
#[derive(Debug, Clone, Copy)]
struct Key {
    order: Order,
    start: usize,
    len: u32,
}

/// Events in one buffer, with their keys.
#[derive(Default)]
struct Run {
    keys: Vec<Key>,
    bytes: Vec<u8>,
}

impl Run {
    /// What its events take (its buffers may have room for more: a run kept in memory is shrunk to this).
    fn weight(&self) -> usize {
        self.keys.len() * std::mem::size_of::<Key>() + self.bytes.len()
    }
    fn bytes(&self, k: &Key) -> &[u8] {
        &self.bytes[k.start..k.start + k.len as usize]
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
    memory: Vec<Run>,
    files: Vec<PathBuf>,
    spill_parent: Option<PathBuf>,
    dir: Option<tempfile::TempDir>,
    current: Run,
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
            current: Run::default(),
            current_ordered: true,
            seq: 0,
            stats: MergeStats::default(),
        }
    }

    /// Adds an event of the artifact being read, at `time`, its bytes written by `encode`.
    pub fn push(&mut self, time: Timestamp, encode: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<()> {
        self.seq += 1;
        // jiff counts a time before 1970 as negative seconds and negative nanoseconds: the key counts whole seconds
        // down and nanoseconds up, so that it orders as the time does.
        let (mut second, mut nanosecond) = (time.as_second(), time.subsec_nanosecond());
        if nanosecond < 0 {
            second -= 1;
            nanosecond += 1_000_000_000;
        }
        let order = Order { second, nanosecond: nanosecond as u32, seq: self.seq };
        let run = &mut self.current;
        let start = run.bytes.len();
        if let Err(e) = encode(&mut run.bytes) {
            run.bytes.truncate(start);
            return Err(e);
        }
        let Some(len) = u32::try_from(run.bytes.len() - start).ok().filter(|&l| l as usize <= RECORD_LIMIT) else {
            run.bytes.truncate(start);
            return Err(io::Error::other("an encoded event over 4 MiB"));
        };
        if let Some(last) = run.keys.last()
            && last.order > order
        {
            self.current_ordered = false;
        }
        run.keys.push(Key { order, start, len });
        self.stats.events += 1;
        if self.current.weight() > self.budget / 2 {
            self.cut_run(true)?;
        }
        Ok(())
    }

    /// The artifact is read: its last run is kept in memory if it fits, else spilled.
    pub fn end_artifact(&mut self) -> io::Result<()> {
        if !self.current_ordered {
            self.stats.unordered_artifacts += 1;
        }
        let spill = self.held + self.current.weight() > self.budget;
        self.cut_run(spill)?;
        self.current_ordered = true;
        Ok(())
    }

    fn cut_run(&mut self, spill: bool) -> io::Result<()> {
        if self.current.keys.is_empty() {
            return Ok(());
        }
        if !self.current_ordered {
            // `seq` is unique, so an unstable sort gives the one order there is.
            self.current.keys.sort_unstable_by_key(|k| k.order);
        }
        if spill {
            let run = std::mem::take(&mut self.current);
            let mut w = self.spill_writer()?;
            for k in &run.keys {
                w.write(k.order, run.bytes(k))?;
            }
            self.finish_spill(w)?;
            // The buffers are used again for the next run: a spilling artifact does not grow them anew each time.
            self.current = run;
            self.current.keys.clear();
            self.current.bytes.clear();
        } else {
            let mut run = std::mem::take(&mut self.current);
            run.keys.shrink_to_fit();
            run.bytes.shrink_to_fit();
            self.held += run.weight();
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

    /// A new file of the spill directory to write a sorted run into.
    fn spill_writer(&mut self) -> io::Result<SpillWriter> {
        let name = format!("run-{:06}", self.stats.spilled_runs);
        let path = self.spill_dir()?.join(name);
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        let mut encoder = zstd::stream::write::Encoder::new(file, SPILL_LEVEL)?;
        // Compressed on a worker thread: the reading goes on meanwhile.
        encoder.multithread(1)?;
        // A small window: the merge reads every spilled run at once, each through a decoder holding one window.
        encoder.window_log(SPILL_WINDOW_LOG)?;
        Ok(SpillWriter { path, events: 0, out: BufWriter::with_capacity(256 << 10, encoder) })
    }

    fn finish_spill(&mut self, w: SpillWriter) -> io::Result<()> {
        w.out.into_inner().map_err(|e| e.into_error())?.finish()?;
        self.stats.spilled_runs += 1;
        self.stats.spilled_events += w.events;
        self.files.push(w.path);
        Ok(())
    }

    /// Hands every event's bytes to `each` in time order.
    pub fn merge(mut self, mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<MergeStats> {
        self.end_artifact()?;
        // Too many runs on disk to open at once: merge them in rounds, each round's output a run of its own.
        while self.files.len() + self.memory.len() > FAN_IN && self.files.len() > 1 {
            let take = self.files.len().min(FAN_IN);
            let group: Vec<PathBuf> = self.files.drain(..take).collect();
            let mut runs = Vec::new();
            for p in &group {
                runs.push(Cursor::File(RunReader::open(p)?));
            }
            let mut w = self.spill_writer()?;
            merge_runs(runs, |order, bytes| w.write(order, bytes))?;
            self.finish_spill(w)?;
            for p in group {
                let _ = std::fs::remove_file(p);
            }
        }
        let mut runs: Vec<Cursor> = self.memory.drain(..).map(|run| Cursor::Memory { run, at: None }).collect();
        for p in &self.files {
            runs.push(Cursor::File(RunReader::open(p)?));
        }
        merge_runs(runs, |_, bytes| each(bytes))?;
        Ok(self.stats)
    }
}

/// A run being written to the spill directory: per event its order (24 bytes, little-endian), its length and its
/// bytes.
struct SpillWriter {
    path: PathBuf,
    events: u64,
    out: BufWriter<zstd::stream::write::Encoder<'static, File>>,
}

impl SpillWriter {
    fn write(&mut self, order: Order, bytes: &[u8]) -> io::Result<()> {
        let mut head = [0u8; 24];
        head[..8].copy_from_slice(&order.second.to_le_bytes());
        head[8..12].copy_from_slice(&order.nanosecond.to_le_bytes());
        head[12..20].copy_from_slice(&order.seq.to_le_bytes());
        head[20..].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(bytes)?;
        self.events += 1;
        Ok(())
    }
}

/// A spilled run read back, one event at a time.
struct RunReader {
    input: BufReader<zstd::stream::read::Decoder<'static, BufReader<File>>>,
    buf: Vec<u8>,
}

impl RunReader {
    fn open(path: &Path) -> io::Result<Self> {
        let d = zstd::stream::read::Decoder::new(File::open(path)?)?;
        Ok(Self { input: BufReader::with_capacity(32 << 10, d), buf: Vec::new() })
    }

    /// Reads the next event into `buf`; its order, or `None` at the end.
    fn next(&mut self) -> io::Result<Option<Order>> {
        let mut head = [0u8; 24];
        match self.input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let word = |r: std::ops::Range<usize>| -> [u8; 8] {
            let mut w = [0u8; 8];
            w[..r.len()].copy_from_slice(&head[r]);
            w
        };
        let second = i64::from_le_bytes(word(0..8));
        let nanosecond = u64::from_le_bytes(word(8..12)) as u32;
        let seq = u64::from_le_bytes(word(12..20));
        let len = u64::from_le_bytes(word(20..24)) as usize;
        if len > RECORD_LIMIT {
            return Err(io::Error::other(format!("a spilled record of {len} bytes: the spill file is not ours")));
        }
        self.buf.resize(len, 0);
        self.input.read_exact(&mut self.buf)?;
        Ok(Some(Order { second, nanosecond, seq }))
    }
}

/// Where the merge is in one run.
enum Cursor {
    Memory { run: Run, at: Option<usize> },
    File(RunReader),
}

impl Cursor {
    /// Moves to the next event; its order, or `None` when the run is done.
    fn advance(&mut self) -> io::Result<Option<Order>> {
        match self {
            Cursor::Memory { run, at } => {
                let next = at.map_or(0, |i| i + 1);
                *at = Some(next);
                Ok(run.keys.get(next).map(|k| k.order))
            }
            Cursor::File(r) => r.next(),
        }
    }

    /// The bytes of the event it is at.
    fn bytes(&self) -> &[u8] {
        match self {
            Cursor::Memory { run, at } => at.and_then(|i| run.keys.get(i)).map_or(&[], |k| run.bytes(k)),
            Cursor::File(r) => &r.buf,
        }
    }
}

/// The k-way merge of sorted runs: hands each event to `each` in order.
fn merge_runs(mut runs: Vec<Cursor>, mut each: impl FnMut(Order, &[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, r) in runs.iter_mut().enumerate() {
        if let Some(order) = r.advance()? {
            heap.push(Reverse((order, i)));
        }
    }
    // The head is replaced in place (one sift down) rather than popped and pushed: a long run of one artifact's
    // events costs one comparison each.
    while let Some(mut top) = heap.peek_mut() {
        let Reverse((order, i)) = *top;
        each(order, runs[i].bytes())?;
        match runs[i].advance()? {
            Some(next) => *top = Reverse((next, i)),
            None => {
                PeekMut::pop(top);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(s: &mut Sorter, ms: i64, path: &str) {
        let time = Timestamp::from_millisecond(ms).unwrap();
        s.push(time, |out| writeln!(out, "{ms} {path}")).unwrap();
    }

    fn merged(sorter: Sorter) -> (Vec<(i64, String)>, MergeStats) {
        let mut out = Vec::new();
        let stats = sorter
            .merge(|bytes| {
                let text = std::str::from_utf8(bytes).unwrap();
                let (ms, path) = text.trim_end().split_once(' ').unwrap();
                out.push((ms.parse().unwrap(), path.to_string()));
                Ok(())
            })
            .unwrap();
        (out, stats)
    }

    #[test]
    fn ordered_and_unordered_artifacts_merge_into_one_order_with_ties_in_reading_order() {
        let mut s = Sorter::new(DEFAULT_BUDGET, None);
        for ms in [1, 4, 7] {
            push(&mut s, ms, "a");
        }
        s.end_artifact().unwrap();
        for ms in [9, 2, 4, 3] {
            push(&mut s, ms, "b");
        }
        s.end_artifact().unwrap();
        let (out, stats) = merged(s);
        let got: Vec<(i64, &str)> = out.iter().map(|(ms, p)| (*ms, p.as_str())).collect();
        assert_eq!(got, [(1, "a"), (2, "b"), (3, "b"), (4, "a"), (4, "b"), (7, "a"), (9, "b")]);
        assert_eq!(stats.unordered_artifacts, 1);
        assert_eq!(stats.spilled_runs, 0, "small enough to stay in memory");
    }

    #[test]
    fn times_before_1970_and_within_a_second_keep_their_order() {
        let mut s = Sorter::new(DEFAULT_BUDGET, None);
        for ms in [5, -1500, -1, 999, -2000, 1000, 0] {
            push(&mut s, ms, "x");
        }
        let (out, _) = merged(s);
        let got: Vec<i64> = out.iter().map(|(ms, _)| *ms).collect();
        assert_eq!(got, [-2000, -1500, -1, 0, 5, 999, 1000]);
    }

    #[test]
    fn over_the_budget_runs_spill_and_come_back_whole() {
        let spill = tempfile::tempdir().unwrap();
        // The smallest budget: a few tens of thousands of events per run.
        let mut s = Sorter::new(1, Some(spill.path().to_path_buf()));
        let n = 200_000i64;
        for i in 0..n {
            // Two interleaved descending sequences: nothing in order.
            push(&mut s, if i % 2 == 0 { n - i } else { 3 * n - i }, "x");
        }
        s.end_artifact().unwrap();
        for i in 0..n {
            push(&mut s, 2 * i, "y");
        }
        let (out, stats) = merged(s);
        assert_eq!(out.len(), 2 * n as usize);
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
        assert!(stats.spilled_runs >= 2, "{stats:?}");
        // About 20 MB of keys and bytes in runs of half the 1 MiB budget: some 40 runs, not one per event.
        assert!(stats.spilled_runs < 64, "runs are cut at half the budget: {stats:?}");
        assert!(
            out.contains(&(5000, "x".into())) && out.contains(&(5000, "y".into())),
            "spilled events come back whole"
        );
        assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0, "the spill directory is removed");
    }

    #[test]
    fn many_runs_are_merged_in_rounds() {
        let mut s = Sorter::new(1, None);
        let n = 1_000_000i64;
        for i in 0..n {
            push(&mut s, (i * 7919) % n, "z");
        }
        let (out, stats) = merged(s);
        assert!(stats.spilled_runs as usize > FAN_IN, "{stats:?}");
        assert_eq!(out.len(), n as usize);
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn a_failed_encoding_leaves_nothing_behind() {
        let mut s = Sorter::new(DEFAULT_BUDGET, None);
        push(&mut s, 1, "a");
        let failed = s.push(Timestamp::from_millisecond(2).unwrap(), |out| {
            out.extend_from_slice(b"half");
            Err(io::Error::other("no"))
        });
        assert!(failed.is_err());
        push(&mut s, 3, "a");
        let (out, stats) = merged(s);
        assert_eq!(out, [(1, "a".to_string()), (3, "a".to_string())]);
        assert_eq!(stats.events, 2);
    }
}

//! Artifacts as they are collected. Every artifact is streamed to a staging file and hashed (SHA-256) and counted
//! as it is written, never read back to hash. The staged file is already zstd frames of the artifact: compression
//! happens while collecting, and the archive is then assembled from these frames without compressing again. A
//! collector that is cut off (timeout, signal) has its open artifacts *sealed*: what it wrote so far is kept and
//! hashed exactly, and any later write fails.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Component, Path},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use sha2::{Digest, Sha256};

use super::{manifest::ArtifactRecord, outdir::PrivateDir};
use crate::redact::{Known, guard::LeakWatch};

const WRITE_BUFFER: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact path `{0}` is not a safe relative path")]
    UnsafePath(String),
    #[error("artifact `{0}` was already written by this collector")]
    Duplicate(String),
    #[error("cannot create artifact `{path}`: {source}")]
    Create { path: String, source: io::Error },
}

/// Byte and record counters of one collector, read by the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes: AtomicU64,
    pub records: AtomicU64,
}

/// Called once per artifact when it is sealed, with its path in the bag, its staged file and its size: the archive
/// takes it from there while collection goes on.
type SealHook = Box<dyn Fn(&Sealed) + Send + Sync>;

#[derive(Default)]
struct OnSeal(OnceLock<SealHook>);

/// Gives, for an artifact being opened (collector, path in the bag), a writer that sees its content as it is
/// staged, when something (the report) wants to read it on the way.
type TapHook = Box<dyn Fn(&str, &str) -> Option<Box<dyn Write + Send>> + Send + Sync>;

#[derive(Default)]
struct OnOpen(OnceLock<TapHook>);

impl std::fmt::Debug for OnOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "OnOpen(set)" } else { "OnOpen(unset)" })
    }
}

impl std::fmt::Debug for OnSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "OnSeal(set)" } else { "OnSeal(unset)" })
    }
}

/// The staging area of one bundle: a private directory holding every artifact until the archive is written.
#[derive(Debug)]
pub struct Staging {
    dir: Arc<PrivateDir>,
    /// zstd level of the staged frames (the bundle's level).
    level: i32,
    on_seal: Arc<OnSeal>,
    tap: OnOpen,
    cells: Mutex<Vec<Arc<Cell>>>,
    /// The run's known secret values: every artifact is watched for them as it is written.
    known: OnceLock<Arc<Known>>,
    /// Per collector: why it is being stopped, once it is (timeout, signal).
    stops: Mutex<std::collections::HashMap<String, Arc<OnceLock<String>>>>,
}

#[derive(Debug)]
struct Cell {
    collector: String,
    /// Path inside the bag, `data/<collector>/<relative>`; also where it is staged, below the staging directory.
    bag_path: String,
    dir: Arc<PrivateDir>,
    media_type: String,
    /// Set when the collector is being stopped; an artifact closed unfinished then says why.
    stop: Arc<OnceLock<String>>,
    on_seal: Arc<OnSeal>,
    state: Mutex<CellState>,
}

/// An artifact once sealed, as the archive needs it: the staged frame and what it decompresses to.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Its path in the bag, which is also where it is staged (below the staging directory).
    pub bag_path: String,
    /// Size of the artifact (uncompressed).
    pub bytes: u64,
    /// Size of the staged zstd frame; 0 when nothing usable was staged (a failed write: the artifact is empty).
    pub stored: u64,
}

#[derive(Debug)]
struct CellState {
    /// Open until sealed. Hashing happens below the buffer, on what the file accepted, so the recorded hash and
    /// size always match the staged file, even after a write error.
    out: Option<BufWriter<HashingFile>>,
    /// Set when sealed: sha256 and size of the artifact, and the size of its staged frame.
    sealed: Option<(String, u64, u64)>,
    records: Option<u64>,
    truncated: bool,
    source: Option<String>,
    error: Option<String>,
    /// Set when the artifact was found to hold a known secret: it was removed and is never archived.
    leaked: Option<String>,
    redaction: Option<String>,
}

/// Above this size an artifact's compression moves to a zstd worker thread of its own (a second frame), so that a
/// big export is compressed beside the collector instead of on its thread; small artifacts never pay for a thread.
const BACKGROUND_AFTER: u64 = 8 << 20;
/// zstd job size of that worker: bounds its memory (about window + 2 jobs) whatever the artifact's size.
const BACKGROUND_JOB: u32 = 2 << 20;

/// The staged file: zstd frames of the artifact, hashing and counting exactly the bytes the compressor accepts.
struct HashingFile {
    /// `None` only if switching frames failed; every later write then fails.
    file: Option<zstd::stream::write::Encoder<'static, File>>,
    level: i32,
    background: bool,
    hasher: Sha256,
    bytes: u64,
    watch: Option<LeakWatch>,
    /// Sees every byte hashed (the report's digest); dropped at its first error, never failing the artifact.
    tap: Option<Box<dyn Write + Send>>,
}

impl HashingFile {
    fn encoder(file: File, level: i32, background: bool) -> io::Result<zstd::stream::write::Encoder<'static, File>> {
        let mut e = zstd::stream::write::Encoder::new(file, level)?;
        e.include_checksum(true)?;
        if background {
            e.multithread(1)?;
            e.set_parameter(zstd::stream::raw::CParameter::JobSize(BACKGROUND_JOB))?;
        }
        Ok(e)
    }

    /// Ends the in-thread frame and continues in a frame compressed by a zstd worker thread.
    fn go_background(&mut self) -> io::Result<()> {
        self.background = true;
        let file = self.file.take().map(|e| e.finish()).transpose()?.ok_or_else(broken)?;
        self.file = Some(Self::encoder(file, self.level, true)?);
        Ok(())
    }

    fn encoder_mut(&mut self) -> io::Result<&mut zstd::stream::write::Encoder<'static, File>> {
        self.file.as_mut().ok_or_else(broken)
    }

    /// Completes the last frame; the staged file's size.
    fn finish(self) -> io::Result<u64> {
        self.file.ok_or_else(broken)?.finish()?.metadata().map(|m| m.len())
    }
}

fn broken() -> io::Error {
    io::Error::other("the staged frame could not be continued")
}

impl std::fmt::Debug for HashingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashingFile").field("bytes", &self.bytes).finish()
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.background && self.bytes > BACKGROUND_AFTER && cpus() > 1 {
            self.go_background()?;
        }
        let n = self.encoder_mut()?.write(buf)?;
        if let Some(w) = &mut self.watch {
            w.scan(&buf[..n]);
        }
        self.hasher.update(&buf[..n]);
        if let Some(t) = &mut self.tap
            && t.write_all(&buf[..n]).is_err()
        {
            self.tap = None;
        }
        self.bytes += n as u64;
        Ok(n)
    }
    /// Nothing to do: the frame is completed when the artifact is sealed; flushing the compressor early would
    /// only cost ratio.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A staged artifact ready to go into the archive.
#[derive(Debug, Clone)]
pub struct StagedArtifact {
    pub collector: String,
    /// Size of the staged zstd frame of the artifact (at `record.path` below the staging directory); 0 when
    /// nothing usable was staged.
    pub stored: u64,
    pub record: ArtifactRecord,
}

impl Staging {
    /// A staging area in `dir` whose artifacts are compressed at zstd `level` as they are written.
    pub fn create(dir: Arc<PrivateDir>, level: i32) -> Arc<Self> {
        Arc::new(Self {
            dir,
            level,
            on_seal: Arc::default(),
            tap: OnOpen::default(),
            cells: Mutex::new(Vec::new()),
            known: OnceLock::new(),
            stops: Mutex::default(),
        })
    }

    /// Watches every artifact opened from now on for these secret values (once; later calls are ignored).
    pub fn guard(&self, known: Arc<Known>) {
        let _ = self.known.set(known);
    }

    /// Why artifacts of `collector` were dropped: each held a known secret.
    pub fn leaks(&self, collector: &str) -> Vec<String> {
        lock(&self.cells)
            .iter()
            .filter(|c| c.collector == collector)
            .filter_map(|c| {
                lock(&c.state)
                    .leaked
                    .as_ref()
                    .map(|why| format!("{} held a known secret, {why}; it was dropped", c.bag_path))
            })
            .collect()
    }

    /// Registers the function told of each artifact as it is sealed (once; later calls are ignored).
    pub fn on_seal(&self, hook: impl Fn(&Sealed) + Send + Sync + 'static) {
        let _ = self.on_seal.0.set(Box::new(hook));
    }

    /// Registers the function asked, as each artifact is opened, for a writer to see its content as it is staged
    /// (once; later calls are ignored).
    pub fn tap(&self, hook: impl Fn(&str, &str) -> Option<Box<dyn Write + Send>> + Send + Sync + 'static) {
        let _ = self.tap.0.set(Box::new(hook));
    }

    pub fn dir(&self) -> &Arc<PrivateDir> {
        &self.dir
    }

    /// Opens a new artifact for `collector` at `relative` (a `/`-separated path below the collector's folder).
    pub fn artifact(
        &self,
        collector: &str,
        relative: &str,
        media_type: &str,
        counters: Arc<Counters>,
    ) -> Result<ArtifactWriter, ArtifactError> {
        let relative = safe_relative(relative)?;
        let bag_path = format!("data/{collector}/{relative}");
        let mut cells = lock(&self.cells);
        if cells.iter().any(|c| c.bag_path == bag_path) {
            return Err(ArtifactError::Duplicate(bag_path));
        }
        let create = |e| ArtifactError::Create { path: bag_path.clone(), source: e };
        let file = self.dir.create_file(&bag_path).map_err(create)?;
        let file = Some(HashingFile::encoder(file, self.level, false).map_err(create)?);
        let tap = self.tap.0.get().and_then(|open| open(collector, &bag_path));
        let stop = lock(&self.stops).entry(collector.to_string()).or_default().clone();
        let cell = Arc::new(Cell {
            collector: collector.to_string(),
            bag_path,
            dir: self.dir.clone(),
            media_type: media_type.to_string(),
            stop,
            on_seal: self.on_seal.clone(),
            state: Mutex::new(CellState {
                out: Some(BufWriter::with_capacity(
                    WRITE_BUFFER,
                    HashingFile {
                        file,
                        level: self.level,
                        background: false,
                        hasher: Sha256::new(),
                        bytes: 0,
                        watch: self.known.get().map(|k| LeakWatch::new(k.clone())),
                        tap,
                    },
                )),
                sealed: None,
                records: None,
                truncated: false,
                source: None,
                error: None,
                leaked: None,
                redaction: None,
            }),
        });
        cells.push(cell.clone());
        Ok(ArtifactWriter { cell, counters })
    }

    /// Records why `collector` is being stopped, before it is told to stop: artifacts it then abandons say why.
    pub fn stopping(&self, collector: &str, reason: &str) {
        let _ = lock(&self.stops).entry(collector.to_string()).or_default().set(reason.to_string());
    }

    /// Seals every artifact of `collector` still open, keeping what was written and marking it truncated with
    /// `reason` (the collector was cut off while writing it). Returns how many were open.
    pub fn seal_collector(&self, collector: &str, reason: &str) -> usize {
        let cells: Vec<_> = lock(&self.cells).iter().filter(|c| c.collector == collector).cloned().collect();
        let reason = format!("cut off: {reason}");
        cells.iter().filter(|c| c.seal(Some(&reason))).count()
    }

    /// All artifacts, sealed, sorted by their path in the bag; those dropped for a leak are left out.
    pub fn finish(&self) -> Vec<StagedArtifact> {
        let cells = lock(&self.cells).clone();
        let mut out: Vec<_> = cells
            .iter()
            .filter_map(|c| {
                c.seal(Some("cut off: still open when the bundle was written"));
                let s = lock(&c.state);
                if s.leaked.is_some() {
                    return None;
                }
                let (sha256, bytes, stored) = s.sealed.clone().unwrap_or_default();
                Some(StagedArtifact {
                    collector: c.collector.clone(),
                    stored,
                    record: ArtifactRecord {
                        path: c.bag_path.clone(),
                        sha256,
                        bytes,
                        media_type: c.media_type.clone(),
                        records: s.records,
                        truncated: s.truncated,
                        source: s.source.clone(),
                        error: s.error.clone(),
                        redaction: s.redaction.clone(),
                    },
                })
            })
            .collect();
        out.sort_by(|a, b| a.record.path.cmp(&b.record.path));
        out
    }
}

impl Cell {
    /// Flushes and closes the file and fixes the hash. `cut_off` marks an artifact its writer never finished.
    /// Returns true when this call sealed it.
    fn seal(&self, cut_off: Option<&str>) -> bool {
        let mut s = lock(&self.state);
        let Some(mut out) = s.out.take() else { return false };
        if let Err(e) = out.flush() {
            s.error = Some(format!("write failed: {e}"));
        }
        if let Some(reason) = cut_off {
            s.truncated = true;
            s.error.get_or_insert_with(|| reason.to_string());
        }
        // After a failed flush the buffer's rest is dropped: the hash covers exactly what the compressor took.
        let (file, _unwritten) = out.into_parts();
        let (hasher, bytes) = (file.hasher.clone(), file.bytes);
        if let Some(found) = file.watch.as_ref().and_then(|w| w.found()) {
            // Redaction missed a secret: the artifact is removed, not archived, and its collector will fail.
            s.leaked = Some(found.to_string());
            s.error = Some(format!("held a known secret, {found}; dropped"));
            s.sealed = Some((hex::encode(Sha256::digest(b"")), 0, 0));
            drop(file);
            let _ = self.dir.remove_file(&self.bag_path);
            return true;
        }
        // Only a failed write sets an error before this point, and a failed flush just above.
        let write_failed = s.error.as_deref().is_some_and(|e| e.starts_with("write failed"));
        let sealed = match file.finish() {
            Ok(stored) if !write_failed => (hex::encode(hasher.finalize()), bytes, stored),
            result => {
                // A frame that could not be completed cannot be trusted to decompress: the artifact is recorded
                // empty, and says why, rather than archived corrupt.
                let why = result.err().map(|e| e.to_string()).or_else(|| s.error.clone()).unwrap_or_default();
                s.error = Some(format!("write failed: {why}; what was collected of this artifact is lost"));
                s.truncated = true;
                (hex::encode(Sha256::digest(b"")), 0, 0)
            }
        };
        s.sealed = Some(sealed.clone());
        drop(s);
        if let Some(hook) = self.on_seal.0.get() {
            hook(&Sealed { bag_path: self.bag_path.clone(), bytes: sealed.1, stored: sealed.2 });
        }
        true
    }
}

/// Writes one artifact. Implements [`Write`]; every byte is hashed and counted on its way to disk.
#[derive(Debug)]
pub struct ArtifactWriter {
    cell: Arc<Cell>,
    counters: Arc<Counters>,
}

impl ArtifactWriter {
    /// Counts `n` more records (lines, rows, entries) in this artifact.
    pub fn add_records(&mut self, n: u64) {
        let mut s = lock(&self.cell.state);
        *s.records.get_or_insert(0) += n;
        self.counters.records.fetch_add(n, Ordering::Relaxed);
    }

    /// Marks the artifact as cut short by a limit.
    pub fn set_truncated(&mut self) {
        lock(&self.cell.state).truncated = true;
    }

    /// Records where the artifact's content came from (a file path, a container).
    pub fn set_source(&mut self, source: impl Into<String>) {
        lock(&self.cell.state).source = Some(source.into());
    }

    /// Records how the artifact's content is redacted, for the manifest.
    pub fn set_redaction(&mut self, redaction: String) {
        lock(&self.cell.state).redaction = Some(redaction);
    }
    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        let s = lock(&self.cell.state);
        match (&s.out, &s.sealed) {
            (Some(out), _) => out.get_ref().bytes + out.buffer().len() as u64,
            (None, Some((_, bytes, _))) => *bytes,
            (None, None) => 0,
        }
    }

    /// Closes an artifact its writer could not complete (the source failed mid-way): what was written is kept,
    /// hashed, marked truncated, with `reason` as its error.
    pub fn abandon(self, reason: &str) {
        self.cell.seal(Some(reason));
    }

    /// Closes the artifact; its hash is then fixed. Fails if the data could not all be written.
    pub fn finish(self) -> io::Result<()> {
        self.cell.seal(None);
        match lock(&self.cell.state).error.clone() {
            Some(e) => Err(io::Error::other(e)),
            None => Ok(()),
        }
    }
}

impl Write for ArtifactWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = lock(&self.cell.state);
        let out = s
            .out
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "artifact sealed: the collector was stopped"))?;
        if let Err(e) = out.write_all(buf) {
            // Keep what reached the disk, hashed exactly, and accept nothing more.
            s.error = Some(format!("write failed: {e}"));
            drop(s);
            self.cell.seal(None);
            return Err(e);
        }
        self.counters.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match lock(&self.cell.state).out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for ArtifactWriter {
    /// Only [`ArtifactWriter::finish`] completes an artifact; one dropped before that was cut off (its collector
    /// stopped, failed or panicked) and is marked truncated, with the reason when the runner gave one.
    fn drop(&mut self) {
        let reason = self.cell.stop.get().cloned().unwrap_or_else(|| "its collector ended before finishing it".into());
        self.cell.seal(Some(&format!("cut off: {reason}")));
    }
}

fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking collector may poison a lock; the data behind it is still what was written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Normalizes a `/`-separated relative path, refusing anything that could escape the collector's folder. `%` is
/// replaced by `_`: BagIt would require it percent-encoded in manifests, which `sha256sum -c` and common BagIt
/// tools do not decode, so bundle paths never contain it (the artifact's `source` keeps the original name).
pub fn safe_relative(path: &str) -> Result<String, ArtifactError> {
    let bad = || ArtifactError::UnsafePath(path.to_string());
    if path.is_empty() || path.starts_with('/') || path.contains('\\') || path.chars().any(char::is_control) {
        return Err(bad());
    }
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(bad)?),
            Component::CurDir => {}
            _ => return Err(bad()),
        }
    }
    if parts.is_empty() {
        return Err(bad());
    }
    Ok(parts.join("/").replace('%', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::outdir::OutDir;

    fn staging_in(dir: &tempfile::TempDir) -> Arc<Staging> {
        let out = OutDir::open(dir.path()).unwrap();
        Staging::create(Arc::new(out.private(".s.staging").unwrap()), 3)
    }

    #[test]
    fn hash_is_of_exactly_what_was_written_even_when_sealed_midway() {
        let dir = tempfile::tempdir().unwrap();
        let staging = staging_in(&dir);
        let mut w = staging.artifact("c", "a/b.txt", "text/plain", Default::default()).unwrap();
        w.write_all(b"hello ").unwrap();
        assert_eq!(staging.seal_collector("c", "timed out"), 1);
        assert!(w.write_all(b"world").is_err(), "writes after sealing must fail");
        let staged = staging.finish();
        assert_eq!(staged.len(), 1);
        assert_eq!(staged[0].record.path, "data/c/a/b.txt");
        assert_eq!(staged[0].record.bytes, 6);
        assert_eq!(staged[0].record.sha256, hex::encode(Sha256::digest(b"hello ")));
        assert!(staged[0].record.truncated, "a cut-off artifact says so");
        assert_eq!(staged[0].record.error.as_deref(), Some("cut off: timed out"));
        let frame = std::fs::read(staging.dir().path().join(&staged[0].record.path)).unwrap();
        assert_eq!(frame.len() as u64, staged[0].stored);
        assert_eq!(zstd::decode_all(&frame[..]).unwrap(), b"hello ", "the staged frame holds exactly that");
    }

    #[test]
    fn a_big_artifact_continues_in_a_background_frame_and_decodes_whole() {
        let dir = tempfile::tempdir().unwrap();
        let staging = staging_in(&dir);
        let mut w = staging.artifact("c", "big.csv", "text/csv", Default::default()).unwrap();
        let mut want = Vec::new();
        for i in 0..400_000u32 {
            let line = format!("{i},{:08x},row {i} of the ledger\n", i.wrapping_mul(2_654_435_761));
            want.extend_from_slice(line.as_bytes());
            w.write_all(line.as_bytes()).unwrap();
        }
        assert!(want.len() as u64 > BACKGROUND_AFTER, "big enough to switch");
        w.finish().unwrap();
        let staged = staging.finish();
        let frames = std::fs::read(staging.dir().path().join(&staged[0].record.path)).unwrap();
        assert_eq!(staged[0].record.bytes, want.len() as u64);
        assert_eq!(staged[0].record.sha256, hex::encode(Sha256::digest(&want)));
        assert!(frames.len() < want.len() / 2, "compressed as it was written");
        assert_eq!(zstd::decode_all(&frames[..]).unwrap(), want, "the frames decode to exactly the artifact");
    }

    #[test]
    fn unsafe_paths_and_duplicates_are_refused() {
        for p in ["../x", "/etc/passwd", "a/../../b", "", "a\\b", "a\nb"] {
            assert!(safe_relative(p).is_err(), "{p:?}");
        }
        assert_eq!(safe_relative("./a//b").unwrap(), "a/b");
        assert_eq!(safe_relative("100% sure.txt").unwrap(), "100_ sure.txt");
        let dir = tempfile::tempdir().unwrap();
        let staging = staging_in(&dir);
        let _a = staging.artifact("c", "x", "text/plain", Default::default()).unwrap();
        assert!(matches!(
            staging.artifact("c", "./x", "text/plain", Default::default()),
            Err(ArtifactError::Duplicate(_))
        ));
    }
}

//! The report of a bundle being written. Each artifact the report reads is fed, byte for byte as it is staged, to a
//! thread of its own that digests its events (or keeps the quote), so the report is ready moments after the last
//! collector instead of after a second read of everything. Each artifact's part is kept apart until the end:
//! an artifact dropped for holding a secret never reaches the report.
//!
//! A tap never slows or fails the evidence more than it must: its channel is small and bounded (the collector
//! waits for the digest when it runs ahead, which bounds memory), and a tap whose thread is gone just stops.

use std::{
    collections::BTreeMap,
    io::{self, BufRead, Read, Write},
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
};

use super::{Digest, Inputs, assemble, digest_part, quote, quotes};
use crate::bundle::manifest::Manifest;
use crate::timeline::extract::{self, Artifact, Tally};

/// Chunks in flight per artifact (each at most one staging write, 256 KiB).
const IN_FLIGHT: usize = 4;

enum Part {
    Digest(Box<Digest>),
    Quote(Vec<u8>, bool),
}

struct Shared {
    digest: Digest,
    /// Collector name → its source kind.
    kinds: BTreeMap<String, String>,
    parts: Mutex<BTreeMap<String, Part>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The taps of one snapshot.
#[derive(Clone)]
pub struct Taps(Arc<Shared>);

impl Taps {
    /// Taps that digest onto `digest`'s axis, for collectors of these kinds.
    pub fn new(digest: Digest, kinds: BTreeMap<String, String>) -> Self {
        Self(Arc::new(Shared { digest, kinds, parts: Mutex::default(), threads: Mutex::default() }))
    }

    /// A writer to feed the content of the artifact at `bag_path` of `collector` to, when the report reads it.
    pub fn open(&self, collector: &str, bag_path: &str) -> Option<Box<dyn Write + Send>> {
        let kind = self.0.kinds.get(collector)?.clone();
        let a = Artifact { collector, kind: &kind, path: bag_path, redaction: None, collected_at: None };
        let shape = extract::shape(&a);
        if shape.is_none() && !quotes(&a) {
            return None;
        }
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
        let shared = self.0.clone();
        let (collector, path) = (collector.to_string(), bag_path.to_string());
        let thread = std::thread::Builder::new()
            .name("preserve-report".into())
            .spawn(move || {
                let mut input = ChannelReader { rx, chunk: Vec::new(), at: 0 };
                let a =
                    Artifact { collector: &collector, kind: &kind, path: &path, redaction: None, collected_at: None };
                let part = match &shape {
                    Some(shape) => {
                        // What gives no event is counted by `preserve timeline`; the page does not show it.
                        let (digest, _) = digest_part(&shared.digest, shape, &a, &mut input, &mut Tally::default());
                        Part::Digest(Box::new(digest))
                    }
                    None => match quote(&mut input) {
                        Ok((bytes, more)) => Part::Quote(bytes, more),
                        Err(_) => Part::Quote(Vec::new(), true),
                    },
                };
                // Whatever was not read (the quote's rest, what followed a failure) is taken, so the writer never
                // waits on a reader that left.
                let _ = io::copy(&mut input, &mut io::sink());
                if let Ok(mut parts) = shared.parts.lock() {
                    parts.insert(path.clone(), part);
                }
            })
            .ok()?;
        if let Ok(mut t) = self.0.threads.lock() {
            t.push(thread);
        }
        Some(Box::new(ChannelWriter(Some(tx))))
    }

    /// Waits for every tap (their artifacts are all sealed by now) and returns the report's inputs made of the
    /// artifacts in `kept` (the bundle's payload: one dropped for holding a secret is not in it) and the events of
    /// `manifest`, the bundle's.
    pub fn finish(&self, kept: &std::collections::BTreeSet<String>, manifest: &Manifest) -> Inputs {
        let threads = std::mem::take(&mut *self.0.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        let parts = std::mem::take(&mut *self.0.parts.lock().unwrap_or_else(|p| p.into_inner()));
        let mut digests = BTreeMap::new();
        let mut quoted = BTreeMap::new();
        for (path, part) in parts.into_iter().filter(|(p, _)| kept.contains(p)) {
            match part {
                Part::Digest(d) => {
                    digests.insert(path, *d);
                }
                Part::Quote(bytes, more) => {
                    quoted.insert(path, (bytes, more));
                }
            }
        }
        Inputs { digest: assemble(self.0.digest.fresh(), digests, manifest), quotes: quoted, withheld: None }
    }
}

struct ChannelWriter(Option<mpsc::SyncSender<Vec<u8>>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let tx = self.0.as_ref().ok_or_else(|| io::Error::other("tap closed"))?;
        if tx.send(buf.to_vec()).is_err() {
            self.0 = None;
            return Err(io::Error::other("the report's reader is gone"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

/// The chunks as they came: the extractors read them in place (`BufRead`), not copied into a buffer of their own.
impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.at >= self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.chunk[self.at..])
    }
    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.chunk.len());
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let chunk = self.fill_buf()?;
        let n = buf.len().min(chunk.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.consume(n);
        Ok(n)
    }
}

//! Reads the entries of a bundle's archive within bounds, for `verify` and `inspect`: the decompressed stream is
//! metered, the entry count and every name are checked against their bounds before anything is held.
//!
//! The `tar` crate reads a GNU long-name record or a PAX header whole into memory, whatever size its header declares
//! (`EntriesFields::next_entry` calls `read_all`, with no limit and no option for one, in tar 0.4.46). So the archive
//! is read in the crate's raw mode, which leaves those records to the caller, and the few lines below apply them to
//! the entry that follows after checking their size; the crate still parses and checksums every header.

use std::{
    io::{self, Read},
    sync::mpsc,
};

use super::bounds::{Budget, Limits, Metered, NAME_LIMIT, PAX_LIMIT, Refusal};

/// One member of the archive, its long name or PAX path applied.
pub struct Entry<'a> {
    /// The member's path as the archive gives it (lossy UTF-8; checked for safety by the caller).
    pub path: String,
    pub kind: tar::EntryType,
    /// The size its header declares, already admitted by the budget.
    pub size: u64,
    pub data: &'a mut dyn Read,
}

pub enum Flow {
    Continue,
    Stop,
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("archive is truncated or corrupt: {0}")]
    Corrupt(io::Error),
}

/// The tar inside a zstd-compressed archive, decompressed as it is read.
pub fn unzstd<R: Read>(compressed: R) -> Result<impl Read, WalkError> {
    zstd::stream::read::Decoder::new(compressed).map_err(WalkError::Corrupt)
}

/// The tar inside a zstd-compressed archive, decompressed on a thread of its own, a few MiB ahead of the reader: for
/// a caller whose own work on the entries is as heavy as the decompression (the timeline, the report), the two then
/// take one core each.
pub fn unzstd_ahead<R: Read + Send + 'static>(compressed: R) -> Result<impl Read, WalkError> {
    ReadAhead::spawn(zstd::stream::read::Decoder::new(compressed).map_err(WalkError::Corrupt)?)
        .map_err(WalkError::Corrupt)
}

/// Calls `each` for every member of the tar read from `tar` ([`unzstd`] of a bundle's archive), until the end of
/// the archive or `Stop`.
pub fn walk<R: Read>(
    tar: R,
    limits: &Limits,
    budget: &Budget,
    mut each: impl FnMut(Entry<'_>) -> Result<Flow, WalkError>,
) -> Result<(), WalkError> {
    let corrupt = |e: io::Error| {
        if budget.exceeded() { WalkError::Refused(budget.refusal(String::new())) } else { WalkError::Corrupt(e) }
    };
    let mut archive = tar::Archive::new(Metered::new(tar, budget.clone()));
    let mut pending = Pending::default();
    // Entries met so far; the long-name and PAX records before an entry are part of it (at most one of each kind,
    // or the archive is refused as corrupt), so they cannot multiply the count.
    let mut entries = 0u64;
    let mut names = 0u64;
    for raw in archive.entries().map_err(corrupt)?.raw(true) {
        let mut entry = raw.map_err(corrupt)?;
        let kind = entry.header().entry_type();
        let size = entry.size();
        let record = if kind.is_gnu_longname() {
            Some(("GNU long-name record", NAME_LIMIT))
        } else if kind.is_gnu_longlink() {
            Some(("GNU long-link record", NAME_LIMIT))
        } else if kind.is_pax_local_extensions() {
            Some(("PAX extended header", PAX_LIMIT))
        } else {
            None
        };
        if let Some((record, limit)) = record {
            if size > limit {
                return Err(Refusal::Name { entry: entries + 1, record, declared: size, limit }.into());
            }
            let mut bytes = Vec::with_capacity(size as usize);
            (&mut entry).take(size).read_to_end(&mut bytes).map_err(corrupt)?;
            names = names.saturating_add(size);
            if names > limits.tag_files() {
                return Err(Refusal::Names { entry: entries + 1, limit: limits.tag_files() }.into());
            }
            pending.add(kind, bytes).map_err(WalkError::Corrupt)?;
            continue;
        }
        entries += 1;
        if entries > limits.max_entries {
            return Err(Refusal::Entries { limit: limits.max_entries }.into());
        }
        let path = pending.path(entry.header().path_bytes().into_owned(), size).map_err(WalkError::Corrupt)?;
        names = names.saturating_add(path.len() as u64);
        if names > limits.tag_files() {
            return Err(Refusal::Names { entry: entries, limit: limits.tag_files() }.into());
        }
        let path = String::from_utf8_lossy(&path).into_owned();
        budget.admit(size, &path)?;
        match each(Entry { path, kind, size, data: &mut entry }) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => return Ok(()),
            Err(WalkError::Corrupt(e)) => return Err(corrupt(e)),
            Err(refused) => return Err(refused),
        }
        if budget.exceeded() {
            return Err(budget.refusal(String::new()).into());
        }
    }
    if pending.is_some() {
        return Err(WalkError::Corrupt(io::Error::other("a long-name or PAX record with no entry after it")));
    }
    Ok(())
}

/// Long-name and PAX records read so far, waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
    /// A long link is read (bounded) only to be skipped: links are refused whatever they point to.
    long_link: bool,
    other: bool,
}

impl Pending {
    fn add(&mut self, kind: tar::EntryType, bytes: Vec<u8>) -> io::Result<()> {
        if kind.is_gnu_longname() {
            if self.long_name.is_some() {
                return Err(io::Error::other("two long-name records describe one entry"));
            }
            let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
            self.long_name = Some(bytes[..end].to_vec());
        } else if kind.is_gnu_longlink() {
            if self.long_link {
                return Err(io::Error::other("two long-link records describe one entry"));
            }
            self.long_link = true;
        } else if kind.is_pax_local_extensions() {
            if self.pax_path.is_some() || self.pax_size.is_some() {
                return Err(io::Error::other("two PAX headers describe one entry"));
            }
            for ext in tar::PaxExtensions::new(&bytes) {
                let ext = ext?;
                match ext.key_bytes() {
                    b"path" => self.pax_path = Some(ext.value_bytes().to_vec()),
                    b"size" => {
                        let size = ext.value().ok().and_then(|v| v.parse().ok());
                        self.pax_size = Some(size.ok_or_else(|| io::Error::other("a PAX size that is no number"))?);
                    }
                    _ => {}
                }
            }
        }
        self.other = true;
        Ok(())
    }

    fn is_some(&self) -> bool {
        self.other
    }

    /// The path of the entry these records describe, given its header's own; the records are used up.
    fn path(&mut self, header_path: Vec<u8>, header_size: u64) -> io::Result<Vec<u8>> {
        let Pending { long_name, pax_path, pax_size, .. } = std::mem::take(self);
        // Raw mode reads the entry by its header's size. A PAX size that differs would make GNU tar read a different
        // archive than this one, so such an entry is not read at all; likewise two names for one entry.
        if pax_size.is_some_and(|s| s != header_size) {
            return Err(io::Error::other("a PAX size record disagrees with its entry's header"));
        }
        match (long_name, pax_path) {
            (Some(_), Some(_)) => Err(io::Error::other("both a GNU long name and a PAX path describe one entry")),
            (Some(p), None) | (None, Some(p)) => Ok(p),
            (None, None) => Ok(header_path),
        }
    }
}

/// Chunks decompressed ahead of the reader, and the size of each.
const AHEAD: usize = 4;
const AHEAD_CHUNK: usize = 1 << 20;

/// Reads `inner` on a thread of its own, at most [`AHEAD`] chunks ahead. The end of the stream is a message of its
/// own (an empty chunk), so a thread that stopped without one is an error, never a stream that looks complete.
struct ReadAhead {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
    failed: Option<io::ErrorKind>,
}

impl ReadAhead {
    fn spawn<R: Read + Send + 'static>(mut inner: R) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(AHEAD);
        std::thread::Builder::new().name("preserve-unzstd".into()).spawn(move || {
            loop {
                let mut chunk = vec![0u8; AHEAD_CHUNK];
                let mut filled = 0;
                let end = loop {
                    match inner.read(&mut chunk[filled..]) {
                        Ok(0) => break Ok(true),
                        Ok(n) => {
                            filled += n;
                            if filled == chunk.len() {
                                break Ok(false);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                chunk.truncate(filled);
                // A send fails only when the reader is gone (it stopped early): then so does this thread.
                if !chunk.is_empty() && tx.send(Ok(chunk)).is_err() {
                    return;
                }
                match end {
                    Ok(false) => {}
                    Ok(true) => {
                        let _ = tx.send(Ok(Vec::new()));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        })?;
        Ok(Self { rx, chunk: Vec::new(), at: 0, ended: false, failed: None })
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.chunk.len() {
            if let Some(kind) = self.failed {
                return Err(io::Error::new(kind, "the archive could not be read further"));
            }
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) if chunk.is_empty() => self.ended = true,
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => {
                    self.failed = Some(e.kind());
                    return Err(e);
                }
                Err(_) => {
                    self.failed = Some(io::ErrorKind::Other);
                    return Err(io::Error::other("the thread decompressing the archive stopped"));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that gives `good` bytes, then fails.
    struct Failing {
        good: io::Cursor<Vec<u8>>,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.good.read(buf)? {
                0 => Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt block")),
                n => Ok(n),
            }
        }
    }

    #[test]
    fn reading_ahead_gives_the_same_bytes_over_many_chunks() {
        let data: Vec<u8> = (0..(AHEAD_CHUNK * 5 + 12_345)).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        ReadAhead::spawn(io::Cursor::new(data.clone())).unwrap().read_to_end(&mut out).unwrap();
        assert!(out == data, "{} bytes read of {}", out.len(), data.len());
        let mut empty = Vec::new();
        ReadAhead::spawn(io::empty()).unwrap().read_to_end(&mut empty).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn a_failure_behind_reaches_the_reader_after_the_good_bytes_and_stays() {
        let good: Vec<u8> = vec![b'x'; AHEAD_CHUNK + 10];
        let mut r = ReadAhead::spawn(Failing { good: io::Cursor::new(good.clone()) }).unwrap();
        let mut out = vec![0u8; good.len()];
        r.read_exact(&mut out).unwrap();
        assert_eq!(out, good);
        let e = r.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(r.read(&mut [0u8; 16]).is_err(), "never an end of stream after a failure");
    }

    /// An endless stream that counts its reads.
    struct Endless(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            buf.fill(7);
            Ok(buf.len())
        }
    }

    #[test]
    fn the_thread_stops_when_the_reader_leaves_early() {
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut r = ReadAhead::spawn(Endless(reads.clone())).unwrap();
        let mut some = [0u8; 100];
        r.read_exact(&mut some).unwrap();
        drop(r);
        let settled = |n: usize| {
            std::thread::sleep(std::time::Duration::from_millis(100 * n as u64));
            reads.load(std::sync::atomic::Ordering::Relaxed)
        };
        let (first, later) = (settled(2), settled(3));
        assert_eq!(first, later, "the thread went on reading after its reader left");
        assert!(later <= AHEAD + 3, "{later} chunks read: never more than a few ahead");
    }
}

//! Reads the entries of a bundle's archive within bounds, for `verify` and `inspect`: the decompressed stream is
//! metered, the entry count and every name are checked against their bounds before anything is held.
//!
//! The `tar` crate reads a GNU long-name record or a PAX header whole into memory, whatever size its header declares
//! (`EntriesFields::next_entry` calls `read_all`, with no limit and no option for one, in tar 0.4.46). So the archive
//! is read in the crate's raw mode, which leaves those records to the caller, and the few lines below apply them to
//! the entry that follows after checking their size; the crate still parses and checksums every header.

use std::io::{self, Read};

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

/// Calls `each` for every member of the zstd-compressed tar in `compressed`, until the end of the archive or `Stop`.
pub fn walk<R: Read>(
    compressed: R,
    limits: &Limits,
    budget: &Budget,
    mut each: impl FnMut(Entry<'_>) -> Result<Flow, WalkError>,
) -> Result<(), WalkError> {
    let corrupt = |e: io::Error| {
        if budget.exceeded() { WalkError::Refused(budget.refusal(String::new())) } else { WalkError::Corrupt(e) }
    };
    let decoder = zstd::stream::read::Decoder::new(compressed).map_err(WalkError::Corrupt)?;
    let mut archive = tar::Archive::new(Metered::new(decoder, budget.clone()));
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

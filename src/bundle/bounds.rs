//! What reading a bundle may cost. A bundle is hostile input: every size it declares (a name, the tag files, the
//! number of entries, the side files, the decompressed stream) is checked against a bound before it is trusted, so a
//! crafted bundle is refused with one line instead of taking the machine's memory or hours of its time.

use std::{
    cell::Cell,
    fmt,
    io::{self, Read},
    path::Path,
    rc::Rc,
};

/// One path: a GNU long-name or long-link record. Linux paths stop at 4 KiB; a bundle's add `data/<collector>/`.
pub const NAME_LIMIT: u64 = 16 << 10;
/// One PAX extended header (its `path` plus a few short records).
pub const PAX_LIMIT: u64 = 64 << 10;
/// Every entry's path together, since each is held (in the index, and again in a problem naming it); and
/// `bagit.txt`, `bag-info.txt`, `manifest-sha256.txt`, `tagmanifest-sha256.txt` and `manifest.json` together, all
/// held in memory to be checked (about 600 bytes per payload file). Each is this much per entry the archive may
/// hold, and at least `TAG_FILES_LIMIT`, so raising `--max-entries` makes room for the names and tag files too.
pub const PER_ENTRY_INDEX: u64 = 640;
pub const TAG_FILES_LIMIT: u64 = 64 << 20;
/// `<id>.tar.zst.sha256` holds one `sha256sum` line: 64 hex digits, two spaces and the archive's file name.
pub const SHA256_SIDE_LIMIT: u64 = 4 << 10;
/// Entries (files, directories, anything else; a long-name or PAX record is part of the entry it describes), unless
/// `--max-entries` says otherwise. The index of what was read costs a few hundred bytes per entry.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;
/// Before any manifest figure is known, and as a ceiling on what a manifest may claim: this many times the
/// compressed size, and at least `FLOOR`. Evidence (logs, JSON, CSV) compresses 5 to 30 times with zstd.
pub const RATIO: u64 = 256;
pub const FLOOR: u64 = 1 << 30;
/// What a genuine archive holds beyond the artifacts' bytes: per artifact a header, a long-name record and padding;
/// once, the tag files, directories and the tar end blocks.
pub const PER_ARTIFACT_OVERHEAD: u64 = 8 << 10;
pub const FIXED_OVERHEAD: u64 = TAG_FILES_LIMIT + (64 << 20);

/// The bounds a caller may change (`--max-bytes`, `--max-entries`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Decompressed bytes the archive may expand to. `None`: derived from the manifest's figures and the
    /// compressed size (see [`Budget::derive`]).
    pub max_bytes: Option<u64>,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: None, max_entries: DEFAULT_MAX_ENTRIES }
    }
}

impl Limits {
    /// The tag files together, and likewise every entry's name together.
    pub fn tag_files(&self) -> u64 {
        self.max_entries.saturating_mul(PER_ENTRY_INDEX).max(TAG_FILES_LIMIT)
    }
}

/// A byte count as people read it (`16.0 KiB`).
#[derive(Debug, Clone, Copy)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 1024 {
            write!(f, "{} bytes", self.0)
        } else {
            write!(f, "{}", bytesize::ByteSize::b(self.0).display().iec())
        }
    }
}

/// Where the decompressed-size bound came from; the refusal names it, so the reader knows whether to distrust the
/// bundle or to raise the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    Flag,
    Compressed { compressed: u64 },
    Manifest { file: String, artifact_bytes: u64 },
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Basis::Flag => f.write_str("the bound set by --max-bytes"),
            Basis::Compressed { compressed } => write!(
                f,
                "{RATIO} times its compressed size of {}, at least {}, with no manifest to go by",
                Bytes(*compressed),
                Bytes(FLOOR)
            ),
            Basis::Manifest { file, artifact_bytes } => write!(
                f,
                "what `{file}` says it holds ({} of artifacts) plus {} per artifact and {} for tag files and tar framing",
                Bytes(*artifact_bytes),
                Bytes(PER_ARTIFACT_OVERHEAD),
                Bytes(FIXED_OVERHEAD)
            ),
        }
    }
}

/// Why a bundle was refused unread: what was over which bound.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("entry #{entry} has a {record} of {}, over the {} bound for one name", Bytes(*declared), Bytes(*limit))]
    Name { entry: u64, record: &'static str, declared: u64, limit: u64 },
    #[error("the entries' names together exceed {} (at entry #{entry}); --max-entries N raises the bound", Bytes(*limit))]
    Names { entry: u64, limit: u64 },
    #[error(
        "the tag files together exceed {} (`{file}` of {} brings them to {}); --max-entries N raises the bound",
        Bytes(*limit),
        Bytes(*declared),
        Bytes(*total)
    )]
    TagFiles { file: String, declared: u64, total: u64, limit: u64 },
    #[error("the archive holds more than {limit} entries; --max-entries N raises the bound")]
    Entries { limit: u64 },
    #[error("decompressed, it exceeds {}{at}: {basis}; --max-bytes SIZE raises the bound", Bytes(*limit))]
    Decompressed { limit: u64, basis: Basis, at: String },
    #[error("`{file}` is {why}")]
    SideFile { file: String, why: Unread },
}

/// The decompressed-size budget of one read of an archive, shared by the reader that counts the bytes and the code
/// that learns the manifest's figures on the way (and may then tighten it).
#[derive(Clone)]
pub struct Budget(Rc<State>);

struct State {
    read: Cell<u64>,
    limit: Cell<u64>,
    basis: std::cell::RefCell<Basis>,
    given: bool,
    exceeded: Cell<bool>,
}

impl Budget {
    /// The bound before the archive is read: the flag's when given, else the compressed-size ceiling, tightened to
    /// the figures of a manifest read beforehand (the side copy) when there is one.
    pub fn derive(limits: &Limits, compressed: u64, figures: Option<Figures>) -> Self {
        let (limit, basis) = match limits.max_bytes {
            Some(n) => (n, Basis::Flag),
            None => {
                let ceiling = compressed.saturating_mul(RATIO).max(FLOOR);
                match figures {
                    Some(f) if f.bound() < ceiling => (f.bound(), f.basis()),
                    _ => (ceiling, Basis::Compressed { compressed }),
                }
            }
        };
        Self(Rc::new(State {
            read: Cell::new(0),
            limit: Cell::new(limit),
            basis: std::cell::RefCell::new(basis),
            given: limits.max_bytes.is_some(),
            exceeded: Cell::new(false),
        }))
    }

    /// Lowers the bound to what a manifest met inside the archive allows. Never below what was read already plus
    /// room for the tag files: a manifest that understates the payload is a finding for `verify` to report, not a
    /// reason to stop reading. A bound given by the flag stays as given.
    pub fn tighten(&self, figures: Figures) {
        let floor = self.0.read.get().saturating_add(FIXED_OVERHEAD);
        let bound = figures.bound().max(floor);
        if !self.0.given && bound < self.0.limit.get() {
            self.0.limit.set(bound);
            *self.0.basis.borrow_mut() = figures.basis();
        }
    }

    /// Refuses, before reading it, an entry whose header declares more than the budget has left.
    pub fn admit(&self, declared: u64, path: &str) -> Result<(), Refusal> {
        if self.0.read.get().saturating_add(declared) > self.0.limit.get() {
            return Err(self.refusal(format!(" (entry `{}` declares {})", excerpt(path.as_bytes()), Bytes(declared))));
        }
        Ok(())
    }

    /// Whether reading stopped because the budget ran out (the error the reader returned may have been rewrapped).
    pub fn exceeded(&self) -> bool {
        self.0.exceeded.get()
    }

    pub fn refusal(&self, at: String) -> Refusal {
        Refusal::Decompressed { limit: self.0.limit.get(), basis: self.0.basis.borrow().clone(), at }
    }
}

/// A manifest's own account of the payload, from which the decompressed size of a genuine archive follows.
#[derive(Debug, Clone)]
pub struct Figures {
    pub file: String,
    pub artifacts: u64,
    pub artifact_bytes: u64,
}

impl Figures {
    pub fn of(file: impl Into<String>, manifest: &super::manifest::Manifest) -> Self {
        let artifacts = manifest.collectors.iter().flat_map(|c| &c.artifacts);
        Self {
            file: file.into(),
            artifacts: artifacts.clone().count() as u64,
            artifact_bytes: artifacts.fold(0u64, |sum, a| sum.saturating_add(a.bytes)),
        }
    }
    fn bound(&self) -> u64 {
        self.artifact_bytes
            .saturating_add(self.artifacts.saturating_mul(PER_ARTIFACT_OVERHEAD))
            .saturating_add(FIXED_OVERHEAD)
    }
    fn basis(&self) -> Basis {
        Basis::Manifest { file: self.file.clone(), artifact_bytes: self.artifact_bytes }
    }
}

/// Counts every decompressed byte tar reads (headers, names, data, padding) and fails the read that goes over the
/// budget, so no declared size, however it is encoded, can make the stream expand further.
pub struct Metered<R> {
    inner: R,
    budget: Budget,
}

impl<R> Metered<R> {
    pub fn new(inner: R, budget: Budget) -> Self {
        Self { inner, budget }
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let state = &self.budget.0;
        let n = self.inner.read(buf)?;
        let read = state.read.get().saturating_add(n as u64);
        state.read.set(read);
        if read > state.limit.get() {
            state.exceeded.set(true);
            return Err(io::Error::other("the decompressed-size bound was reached"));
        }
        Ok(n)
    }
}

/// A side file as it lies beside the archive: never followed into a FIFO or device, never read past `cap`.
pub enum Side {
    Absent,
    Unread(Unread),
    Read(Vec<u8>),
}

/// Why a side file was left unread.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unread {
    #[error("not a regular file; not read")]
    NotRegular,
    #[error("a symbolic link, which preserve never makes; not followed")]
    Link,
    #[error("{}, over the {} bound for this file; not read{raise}", Bytes(*size), Bytes(*cap))]
    TooLarge { size: u64, cap: u64, raise: &'static str },
}

/// `raise` ends the message when the cap is too large (e.g. which flag raises it), empty when nothing does.
pub fn read_side(path: &Path, cap: u64, raise: &'static str) -> io::Result<Side> {
    let file = match super::outdir::open_no_follow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Side::Absent),
        // preserve never makes a side file a link: one there is someone else's, and is not followed.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(Side::Unread(Unread::Link)),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Side::Unread(Unread::NotRegular));
    }
    if meta.len() > cap {
        return Ok(Side::Unread(Unread::TooLarge { size: meta.len(), cap, raise }));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may have grown since it was measured.
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Ok(Side::Unread(Unread::TooLarge { size: bytes.len() as u64, cap, raise }));
    }
    Ok(Side::Read(bytes))
}

/// At most 64 characters of untrusted bytes, escaped so that they stay on one line and cannot steer a terminal.
pub fn excerpt(bytes: &[u8]) -> String {
    const SHOWN: usize = 64;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN * 4)]);
    let mut out: String = text.chars().take(SHOWN).flat_map(char::escape_debug).collect();
    if text.chars().count() > SHOWN || bytes.len() > SHOWN * 4 {
        out.push('…');
    }
    out
}

/// A line of a report with every control character escaped, so a hostile name cannot forge further lines.
pub fn printable(line: &str) -> String {
    if !line.chars().any(char::is_control) {
        return line.to_string();
    }
    line.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_single_line() {
        assert_eq!(excerpt(b"ab\ncd\x1b[31m"), "ab\\ncd\\u{1b}[31m");
        let long = excerpt(&[b'x'; 10_000]);
        assert_eq!(long.chars().count(), 65);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn a_manifest_can_lower_the_bound_but_never_below_what_was_read() {
        let b = Budget::derive(&Limits::default(), 1 << 20, None);
        assert_eq!(b.0.limit.get(), FLOOR.max(RATIO << 20));
        b.0.read.set(500 << 20);
        b.tighten(Figures { file: "manifest.json".into(), artifacts: 1, artifact_bytes: 10 });
        assert_eq!(b.0.limit.get(), (500 << 20) + FIXED_OVERHEAD);
        let given = Budget::derive(&Limits { max_bytes: Some(5), ..Limits::default() }, 1 << 20, None);
        given.tighten(Figures { file: "manifest.json".into(), artifacts: 0, artifact_bytes: 0 });
        assert_eq!(given.0.limit.get(), 5);
    }
}

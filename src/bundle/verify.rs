//! `preserve verify`: proves a bundle intact by streaming it once (no extraction to disk). Checks the archive hash
//! against the `.sha256` beside it, every entry against `manifest-sha256.txt` and `tagmanifest-sha256.txt`, that no
//! file is missing or unlisted, Payload-Oxum, and that `manifest.json` agrees with the payload. Entries with unsafe
//! paths or types are refused. Every problem is reported, not just the first, but once: an archive cut short is
//! named as such, without the missing and unlisted files that follow from the cut. Everything is read within the
//! bounds of `bounds` (names, tag files, entries, side files, decompressed size); a bundle over one is refused with
//! one line.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    fs::File,
    io::{self, BufReader, Read},
    path::{Component, Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{
    bagit,
    bounds::{Budget, Figures, Limits, Refusal, SHA256_SIDE_LIMIT, Side, Unread, excerpt, printable, read_side},
    manifest::Manifest,
    walk::{self, Flow, WalkError},
};

/// The manifest's copy beside the archive is bounded as the tag files are.
const RAISE_TAG_FILES: &str = "; --max-entries N raises the bound";
const TAG_FILES: [&str; 5] =
    ["bagit.txt", "bag-info.txt", "manifest-sha256.txt", "tagmanifest-sha256.txt", "manifest.json"];

/// Why a bundle could not be checked or read at all (as opposed to a [`Report`] of what is wrong inside it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read `{}`: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("refused `{}`: {refusal}", path.display())]
    Refused { path: PathBuf, refusal: Refusal },
    #[error("`{}` holds no manifest.json", path.display())]
    NoManifest { path: PathBuf },
    #[error("`{}` is not a preserve manifest: {detail}", path.display())]
    Malformed { path: PathBuf, detail: String },
    #[error("cannot decrypt `{}`: {detail}", path.display())]
    Decrypt { path: PathBuf, detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    ArchiveHash,
    Corrupt,
    UnsafeEntry,
    Missing,
    HashMismatch,
    SizeMismatch,
    Unlisted,
    Duplicate,
    Malformed,
    PayloadOxum,
    ManifestMismatch,
    /// The `.sig` does not verify, is by a key not allowed, or is unreadable.
    Signature,
    /// The `.tsr` does not verify, stamps another digest, or does not chain to the CA.
    Timestamp,
    /// The custody record has a broken link, signature or entry.
    Custody,
    /// A seal layer that `--require-signature` or `--require-timestamp` asks for is absent.
    Unsealed,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        f.write_str(&s)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// The file at fault, relative to the bag (or the archive / side file).
    pub path: String,
    pub kind: ProblemKind,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable(&format!("{}: {}: {}", self.path, self.kind, self.detail)))
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub archive: PathBuf,
    pub bundle_id: Option<String>,
    pub archive_sha256: String,
    /// Whether a `.sha256` file was beside the archive and checked.
    pub archive_hash_checked: bool,
    pub payload_files: usize,
    pub payload_bytes: u64,
    /// `<id>.tar.zst.age`: encrypted for its recipients.
    pub encrypted: bool,
    /// Whether what is inside was checked (not for an encrypted archive read without its identity: then only the
    /// ciphertext's hash and the seal were).
    pub payload_checked: bool,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
    pub fn problem(&mut self, path: impl Into<String>, kind: ProblemKind, detail: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), kind, detail: detail.into() });
    }
}

#[derive(Debug)]
struct Seen {
    sha256: String,
    bytes: u64,
}

/// Verifies the bundle at `archive` within the default bounds.
pub fn verify(archive: &Path) -> Result<Report, Error> {
    verify_with(archive, &Limits::default())
}

/// Verifies the bundle at `archive`. `Err` when the archive cannot be opened, or is refused for going over a bound
/// (then nothing else about it is reported: a crafted bundle gets one line, not a flood).
pub fn verify_with(archive: &Path, limits: &Limits) -> Result<Report, Error> {
    verify_decrypting(archive, limits, &[])
}

/// [`verify_with`], decrypting an encrypted archive (`<id>.tar.zst.age`) with `identities` to check what is inside
/// too. Without one that opens it, the ciphertext's hash is checked and the report says the payload was not.
pub fn verify_decrypting(
    archive: &Path,
    limits: &Limits,
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> Result<Report, Error> {
    let read_error = |source| Error::Read { path: archive.to_path_buf(), source };
    let file = File::open(archive).map_err(read_error)?;
    let compressed = file.metadata().map_err(read_error)?.len();
    verify_stream(archive, file, compressed, limits, identities)
}

/// [`verify_decrypting`] of an archive read from `source` (`compressed` bytes long; a stored object streamed from
/// the store), whose side files are beside `archive`, a path that names it and need not exist.
pub fn verify_stream(
    archive: &Path,
    source: impl Read,
    compressed: u64,
    limits: &Limits,
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> Result<Report, Error> {
    let encrypted = super::archive_id(archive).is_some_and(|(_, e)| e);
    let mut report = Report { archive: archive.to_path_buf(), encrypted, ..Default::default() };
    let read_error = |source| Error::Read { path: archive.to_path_buf(), source };
    // Beside an encrypted archive the manifest is the public one: nothing to compare with what is inside.
    let side = if encrypted { SideManifest::Absent } else { SideManifest::read(archive, limits) };
    let budget = Budget::derive(limits, compressed, side.figures());
    let mut hashing = HashingReader::new(source);
    let mut bag = Bag::default();

    if encrypted && identities.is_empty() {
        let name = display_name(archive);
        let mut buffered = BufReader::new(&mut hashing);
        let is_age = io::BufRead::fill_buf(&mut buffered).map_err(read_error)?.starts_with(b"age-encryption.org/v1\n");
        io::copy(&mut buffered, &mut io::sink()).map_err(read_error)?;
        report.archive_sha256 = hashing.finish();
        if !is_age {
            report.problem(name.as_str(), ProblemKind::Corrupt, "not an age file (no age-encryption.org/v1 header)");
        }
        check_sha256_side_file(archive, &mut report);
        if !report.archive_hash_checked {
            // Nothing about it could be checked: that is not "intact".
            report.problem(
                name,
                ProblemKind::Missing,
                "no .sha256 beside this encrypted archive and no --identity to open it: nothing could be checked",
            );
        }
        return Ok(report);
    }
    let entries = if encrypted {
        let plain = decrypt(archive, BufReader::new(&mut hashing), identities)?;
        read_entries(plain, limits, &budget, &mut report, &mut bag)
    } else {
        read_entries(&mut hashing, limits, &budget, &mut report, &mut bag)
    };
    report.payload_checked = true;
    let cut_short = match entries {
        Ok(()) => false,
        Err(WalkError::Refused(refusal)) => return Err(Error::Refused { path: archive.to_path_buf(), refusal }),
        Err(WalkError::Corrupt(e)) => {
            // The first cause comes first, before what the entries read until then showed.
            let detail = format!("archive is truncated or corrupt after {} files: {e}", bag.seen.len());
            report.problems.insert(0, Problem { path: display_name(archive), kind: ProblemKind::Corrupt, detail });
            true
        }
    };
    // Hash the whole file even where decoding stopped early; this reads the compressed bytes, expanding nothing.
    let _ = io::copy(&mut hashing, &mut io::sink());
    report.archive_sha256 = hashing.finish();
    check_sha256_side_file(archive, &mut report);
    side.check(&mut report, bag.tags.get("manifest.json"));

    let Some(top) = bag.top else {
        if !cut_short {
            report.problem(display_name(archive), ProblemKind::Missing, "archive holds no bag directory");
        }
        return Ok(report);
    };
    report.bundle_id = Some(top.clone());
    check_bag(&mut report, &top, &bag.seen, &bag.tags);
    if cut_short {
        suppress_what_follows_from_the_cut(&mut report, &bag.tags);
    }
    Ok(report)
}

/// The `.tar.zst` inside the encrypted archive `archive` (read from `ciphertext`), decrypted with `identities`.
pub fn decrypt<R: io::BufRead>(
    archive: &Path,
    ciphertext: R,
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> Result<age::stream::StreamReader<R>, Error> {
    let decrypt_error = |e: age::DecryptError| {
        let detail = match e {
            age::DecryptError::NoMatchingKeys => "none of the identities given is a recipient of it".to_string(),
            e => excerpt(e.to_string().as_bytes()),
        };
        Error::Decrypt { path: archive.to_path_buf(), detail }
    };
    let d = age::Decryptor::new_buffered(ciphertext).map_err(decrypt_error)?;
    d.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity)).map_err(decrypt_error)
}

/// An archive read only up to a cut holds less than its listings say: the files past the cut are missing, and,
/// while the listings themselves (the last entries of a bundle) were not reached, every file read is unlisted.
/// Those follow from the cut, which is reported once; what the files read before it show is kept (a hash that
/// does not match, an unsafe entry, a duplicate).
fn suppress_what_follows_from_the_cut(report: &mut Report, tags: &BTreeMap<String, Vec<u8>>) {
    let listings_read =
        ["manifest-sha256.txt", "tagmanifest-sha256.txt", "manifest.json"].iter().all(|t| tags.contains_key(*t));
    let before = report.problems.len();
    report.problems.retain(|p| match p.kind {
        ProblemKind::Missing | ProblemKind::PayloadOxum => false,
        ProblemKind::Unlisted => listings_read,
        _ => true,
    });
    let suppressed = before - report.problems.len();
    if suppressed > 0
        && let Some(cut) = report.problems.iter_mut().find(|p| p.kind == ProblemKind::Corrupt)
    {
        cut.detail
            .push_str(&format!(" ({suppressed} problems that follow from it, missing or unlisted files, not listed)"));
    }
}

/// What the archive holds, as far as verification needs it.
#[derive(Default)]
struct Bag {
    top: Option<String>,
    seen: BTreeMap<String, Seen>,
    tags: BTreeMap<String, Vec<u8>>,
    tag_bytes: u64,
}

fn read_entries(
    reader: impl Read,
    limits: &Limits,
    budget: &Budget,
    report: &mut Report,
    bag: &mut Bag,
) -> Result<(), WalkError> {
    let mut buf = vec![0u8; 256 * 1024];
    walk::walk(walk::unzstd(reader)?, limits, budget, |entry| {
        let raw = entry.path;
        let Some(rel) = bag_relative(&raw, &mut bag.top) else {
            report.problem(
                raw.clone(),
                ProblemKind::UnsafeEntry,
                "refused: absolute path, `..`, or outside the bag directory",
            );
            return Ok(Flow::Continue);
        };
        match entry.kind {
            tar::EntryType::Directory => return Ok(Flow::Continue),
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            other => {
                report.problem(
                    raw,
                    ProblemKind::UnsafeEntry,
                    format!("refused: entry type {other:?} (only files and directories belong in a bundle)"),
                );
                return Ok(Flow::Continue);
            }
        }
        if rel.is_empty() {
            report.problem(raw, ProblemKind::UnsafeEntry, "refused: a file where the bag directory should be");
            return Ok(Flow::Continue);
        }
        // Tag files are held to be checked, so they are bounded together, before any of their bytes is read.
        let keep = TAG_FILES.contains(&rel.as_str());
        if keep {
            bag.tag_bytes = bag.tag_bytes.saturating_add(entry.size);
            if bag.tag_bytes > limits.tag_files() {
                let refusal = Refusal::TagFiles {
                    file: excerpt(rel.as_bytes()),
                    declared: entry.size,
                    total: bag.tag_bytes,
                    limit: limits.tag_files(),
                };
                return Err(refusal.into());
            }
        }
        let mut kept = Vec::with_capacity(if keep { entry.size as usize } else { 0 });
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        loop {
            let n = entry.data.read(&mut buf).map_err(WalkError::Corrupt)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if keep {
                kept.extend_from_slice(&buf[..n]);
            }
            bytes += n as u64;
        }
        if keep {
            learn_figures(budget, &rel, &kept);
            bag.tags.insert(rel.clone(), kept);
        }
        let record = Seen { sha256: hex::encode(hasher.finalize()), bytes };
        if bag.seen.insert(rel.clone(), record).is_some() {
            report.problem(rel, ProblemKind::Duplicate, "the archive holds this path more than once");
        }
        Ok(Flow::Continue)
    })
}

/// The bag's own account of its payload, met on the way, tightens the decompressed-size bound for the rest of the
/// archive (tag files come last in a genuine bundle, so this mostly guards what a crafted one appends after them).
fn learn_figures(budget: &Budget, rel: &str, bytes: &[u8]) {
    let figures = match rel {
        "bag-info.txt" => {
            let text = String::from_utf8_lossy(bytes);
            let oxum = bagit::tag_field(&text, "Payload-Oxum").and_then(|o| o.split_once('.'));
            let Some((Ok(artifact_bytes), Ok(artifacts))) = oxum.map(|(b, n)| (b.parse(), n.parse())) else {
                return;
            };
            Figures { file: "bag-info.txt".into(), artifacts, artifact_bytes }
        }
        "manifest.json" => match serde_json::from_slice::<Manifest>(bytes) {
            Ok(m) => Figures::of("manifest.json", &m),
            Err(_) => return,
        },
        _ => return,
    };
    budget.tighten(figures);
}

/// The path of an entry relative to the bag directory, or `None` when it is unsafe. The first entry fixes the bag
/// directory's name.
pub(crate) fn bag_relative(raw: &str, top: &mut Option<String>) -> Option<String> {
    let path = Path::new(raw);
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    let first = parts.first()?.clone();
    match top {
        Some(t) if *t != first => return None,
        Some(_) => {}
        None => *top = Some(first),
    }
    Some(parts[1..].join("/"))
}

fn check_bag(report: &mut Report, top: &str, seen: &BTreeMap<String, Seen>, tags: &BTreeMap<String, Vec<u8>>) {
    let text = |name: &str| tags.get(name).map(|b| String::from_utf8_lossy(b).into_owned());
    match text("bagit.txt") {
        None => report.problem("bagit.txt", ProblemKind::Missing, "not a BagIt bag"),
        Some(t) if bagit::tag_field(&t, "BagIt-Version") != Some("1.0") => {
            report.problem("bagit.txt", ProblemKind::Malformed, "BagIt-Version is not 1.0")
        }
        Some(_) => {}
    }

    // Payload against manifest-sha256.txt.
    let payload: BTreeMap<&str, &Seen> =
        seen.iter().filter(|(p, _)| p.starts_with("data/")).map(|(p, s)| (p.as_str(), s)).collect();
    report.payload_files = payload.len();
    report.payload_bytes = payload.values().map(|s| s.bytes).sum();
    let listed = check_manifest_file(report, "manifest-sha256.txt", text("manifest-sha256.txt"), seen);
    for path in payload.keys().filter(|p| !listed.contains(**p)) {
        report.problem(*path, ProblemKind::Unlisted, "extra file: not listed in manifest-sha256.txt");
    }

    // Tag files against tagmanifest-sha256.txt.
    let tag_listed = check_manifest_file(report, "tagmanifest-sha256.txt", text("tagmanifest-sha256.txt"), seen);
    for path in seen.keys().filter(|p| !p.starts_with("data/")) {
        if path != "tagmanifest-sha256.txt" && !tag_listed.contains(path) {
            report.problem(path.as_str(), ProblemKind::Unlisted, "extra file: not listed in tagmanifest-sha256.txt");
        }
    }

    // Payload-Oxum.
    if let Some(info) = text("bag-info.txt") {
        let expected = format!("{}.{}", report.payload_bytes, report.payload_files);
        match bagit::tag_field(&info, "Payload-Oxum") {
            Some(oxum) if oxum == expected => {}
            Some(oxum) => report.problem(
                "bag-info.txt",
                ProblemKind::PayloadOxum,
                format!("Payload-Oxum says {}, the payload is {expected}", excerpt(oxum.as_bytes())),
            ),
            None => report.problem("bag-info.txt", ProblemKind::Malformed, "no Payload-Oxum"),
        }
        if bagit::tag_field(&info, "External-Identifier") != Some(top) {
            report.problem(
                "bag-info.txt",
                ProblemKind::ManifestMismatch,
                format!("External-Identifier is not the bag directory `{top}`"),
            );
        }
    } else {
        report.problem("bag-info.txt", ProblemKind::Missing, "bag-info.txt is missing");
    }

    // manifest.json against the payload.
    let Some(raw) = tags.get("manifest.json") else {
        report.problem("manifest.json", ProblemKind::Missing, "manifest.json is missing");
        return;
    };
    let manifest: Manifest = match serde_json::from_slice(raw) {
        Ok(m) => m,
        Err(e) => {
            report.problem(
                "manifest.json",
                ProblemKind::Malformed,
                format!("not a preserve manifest: {}", excerpt(e.to_string().as_bytes())),
            );
            return;
        }
    };
    if manifest.format != super::manifest::FORMAT {
        report.problem(
            "manifest.json",
            ProblemKind::Malformed,
            format!("unknown format `{}`", excerpt(manifest.format.as_bytes())),
        );
    }
    if manifest.bundle_id != top {
        report.problem(
            "manifest.json",
            ProblemKind::ManifestMismatch,
            format!("bundle_id `{}` is not the bag directory `{top}`", excerpt(manifest.bundle_id.as_bytes())),
        );
    }
    let mut described = BTreeSet::new();
    for a in manifest.collectors.iter().flat_map(|c| &c.artifacts) {
        described.insert(a.path.as_str());
        match seen.get(&a.path) {
            None => {
                report.problem(a.path.as_str(), ProblemKind::Missing, "listed in manifest.json but not in the archive")
            }
            Some(s) if s.sha256 != a.sha256 || s.bytes != a.bytes => report.problem(
                a.path.as_str(),
                ProblemKind::ManifestMismatch,
                format!(
                    "manifest.json says {} bytes sha256 {}, the archive holds {} bytes sha256 {}",
                    a.bytes,
                    excerpt(a.sha256.as_bytes()),
                    s.bytes,
                    s.sha256
                ),
            ),
            Some(_) => {}
        }
    }
    for path in payload.keys().filter(|p| !described.contains(**p)) {
        report.problem(*path, ProblemKind::Unlisted, "extra file: no collector in manifest.json lists it");
    }
}

/// Checks every entry of a BagIt manifest file against what the archive holds; returns the paths it lists.
fn check_manifest_file(
    report: &mut Report,
    name: &str,
    text: Option<String>,
    seen: &BTreeMap<String, Seen>,
) -> BTreeSet<String> {
    let mut listed = BTreeSet::new();
    let Some(text) = text else {
        report.problem(name, ProblemKind::Missing, format!("{name} is missing"));
        return listed;
    };
    let (entries, errors) = bagit::parse_manifest(&text);
    for e in errors {
        report.problem(name, ProblemKind::Malformed, e);
    }
    for (path, sha) in entries {
        check_listed(report, &path, &sha, seen.get(&path), name);
        listed.insert(path);
    }
    listed
}

fn check_listed(report: &mut Report, path: &str, sha: &str, seen: Option<&Seen>, manifest: &str) {
    match seen {
        None => report.problem(path, ProblemKind::Missing, format!("listed in {manifest} but not in the archive")),
        Some(s) if s.sha256 != sha => {
            report.problem(path, ProblemKind::HashMismatch, format!("sha256 is {}, {manifest} says {sha}", s.sha256))
        }
        Some(_) => {}
    }
}

fn check_sha256_side_file(archive: &Path, report: &mut Report) {
    let sha_path = PathBuf::from(format!("{}.sha256", archive.display()));
    let name = display_name(&sha_path);
    let text = match read_side(&sha_path, SHA256_SIDE_LIMIT, "") {
        Ok(Side::Absent) => return,
        Ok(Side::Read(text)) => text,
        Ok(Side::Unread(why)) => {
            report.archive_hash_checked = true;
            return report.problem(name, ProblemKind::ArchiveHash, why.to_string());
        }
        Err(e) => return report.problem(name, ProblemKind::ArchiveHash, format!("cannot read: {e}")),
    };
    report.archive_hash_checked = true;
    let Some(expected) = sha256_of_side(&text) else {
        let detail = format!("holds no sha256 (it begins `{}`)", excerpt(&text));
        return report.problem(name, ProblemKind::ArchiveHash, detail);
    };
    if expected != report.archive_sha256 {
        let detail = format!("archive sha256 is {}, {name} says {expected}", report.archive_sha256);
        report.problem(name, ProblemKind::ArchiveHash, detail);
    }
}

/// The SHA-256 a `.sha256` side file holds (its first word: 64 hex digits, in lowercase), or `None`.
pub fn sha256_of_side(text: &[u8]) -> Option<String> {
    let first = text.split(|b| b.is_ascii_whitespace()).find(|t| !t.is_empty())?;
    (first.len() == 64 && first.iter().all(u8::is_ascii_hexdigit))
        .then(|| String::from_utf8_lossy(first).to_ascii_lowercase())
}

/// `<id>.manifest.json`, read once before the archive (capped) for the figures that bound its decompressed size, and
/// remembered by hash to be compared with the manifest inside.
enum SideManifest {
    Absent,
    Unread { name: String, why: Unread },
    Read { name: String, sha256: [u8; 32], len: usize, figures: Option<Figures> },
}

impl SideManifest {
    fn read(archive: &Path, limits: &Limits) -> Self {
        let Some(path) = side_manifest_path(archive) else { return Self::Absent };
        let name = display_name(&path);
        match read_side(&path, limits.tag_files(), RAISE_TAG_FILES) {
            Ok(Side::Read(bytes)) => {
                let figures = serde_json::from_slice::<Manifest>(&bytes).ok().map(|m| Figures::of(name.clone(), &m));
                Self::Read { name, sha256: Sha256::digest(&bytes).into(), len: bytes.len(), figures }
            }
            Ok(Side::Unread(why)) => Self::Unread { name, why },
            // Unreadable beside a readable archive: nothing to compare, as when it is absent.
            Ok(Side::Absent) | Err(_) => Self::Absent,
        }
    }

    fn figures(&self) -> Option<Figures> {
        match self {
            Self::Read { figures, .. } => figures.clone(),
            _ => None,
        }
    }

    fn check(&self, report: &mut Report, inner: Option<&Vec<u8>>) {
        match (self, inner) {
            (Self::Unread { name, why }, _) => {
                report.problem(name.as_str(), ProblemKind::ManifestMismatch, why.to_string())
            }
            (Self::Read { name, sha256, len, .. }, Some(inner))
                if *len != inner.len() || sha256[..] != Sha256::digest(inner)[..] =>
            {
                report.problem(
                    name.as_str(),
                    ProblemKind::ManifestMismatch,
                    "differs from manifest.json inside the archive",
                )
            }
            _ => {}
        }
    }
}

fn side_manifest_path(archive: &Path) -> Option<PathBuf> {
    let (id, _) = super::archive_id(archive)?;
    Some(archive.with_file_name(format!("{id}.manifest.json")))
}

fn display_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new() }
    }
    fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads the public manifest beside an encrypted bundle (capped, never through a link).
pub fn read_public_manifest(archive: &Path, limits: &Limits) -> Result<super::manifest::PublicManifest, Error> {
    let side = side_manifest_path(archive).ok_or_else(|| Error::NoManifest { path: archive.to_path_buf() })?;
    match read_side(&side, limits.tag_files(), RAISE_TAG_FILES)
        .map_err(|source| Error::Read { path: side.clone(), source })?
    {
        Side::Read(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Malformed { path: side.clone(), detail: excerpt(e.to_string().as_bytes()) }),
        Side::Unread(why) => Err(Error::Refused {
            path: archive.to_path_buf(),
            refusal: Refusal::SideFile { file: display_name(&side), why },
        }),
        Side::Absent => Err(Error::NoManifest { path: side }),
    }
}

/// Reads `manifest.json` of a bundle: the side copy when present (capped), else from inside the archive, streamed
/// and bounded like `verify`.
pub fn read_manifest(archive: &Path, limits: &Limits) -> Result<Manifest, Error> {
    let malformed = |path: &Path, e: serde_json::Error| Error::Malformed {
        path: path.to_path_buf(),
        // serde quotes the offending value, which may be anything the bundle's author wrote.
        detail: excerpt(e.to_string().as_bytes()),
    };
    if let Some(side) = side_manifest_path(archive) {
        match read_side(&side, limits.tag_files(), RAISE_TAG_FILES)
            .map_err(|source| Error::Read { path: side.clone(), source })?
        {
            Side::Read(bytes) => return serde_json::from_slice(&bytes).map_err(|e| malformed(&side, e)),
            Side::Unread(why) => {
                let refusal = Refusal::SideFile { file: display_name(&side), why };
                return Err(Error::Refused { path: archive.to_path_buf(), refusal });
            }
            Side::Absent => {}
        }
    }
    let read_error = |source| Error::Read { path: archive.to_path_buf(), source };
    let file = File::open(archive).map_err(read_error)?;
    let compressed = file.metadata().map_err(read_error)?.len();
    manifest_in(archive, BufReader::new(file), compressed, limits)
}

/// `manifest.json` from the archive `archive` read from `compressed` (its plain `.tar.zst` bytes, `length` long),
/// streamed and bounded like `verify`.
pub fn manifest_in(archive: &Path, compressed: impl Read, length: u64, limits: &Limits) -> Result<Manifest, Error> {
    let malformed = |path: &Path, e: serde_json::Error| Error::Malformed {
        path: path.to_path_buf(),
        detail: excerpt(e.to_string().as_bytes()),
    };
    let read_error = |source| Error::Read { path: archive.to_path_buf(), source };
    let budget = Budget::derive(limits, length, None);
    let mut found = None;
    let walked = walk::unzstd(compressed).and_then(|tar| {
        walk::walk(tar, limits, &budget, |entry| {
            let top_level = entry.path.split('/').filter(|s| !s.is_empty()).count() == 2;
            if !(top_level && entry.path.ends_with("/manifest.json")) {
                return Ok(Flow::Continue);
            }
            if entry.size > limits.tag_files() {
                let limit = limits.tag_files();
                let refusal =
                    Refusal::TagFiles { file: "manifest.json".into(), declared: entry.size, total: entry.size, limit };
                return Err(refusal.into());
            }
            found = Some(serde_json::from_reader::<_, Manifest>(entry.data.take(entry.size)));
            Ok(Flow::Stop)
        })
    });
    match walked {
        Ok(()) => {}
        Err(WalkError::Refused(refusal)) => return Err(Error::Refused { path: archive.to_path_buf(), refusal }),
        Err(WalkError::Corrupt(e)) => return Err(read_error(e)),
    }
    match found {
        Some(parsed) => parsed.map_err(|e| malformed(archive, e)),
        None => Err(Error::NoManifest { path: archive.to_path_buf() }),
    }
}

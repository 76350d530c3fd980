//! `preserve verify`: proves a bundle intact by streaming it once (no extraction to disk). Checks the archive hash
//! against the `.sha256` beside it, every entry against `manifest-sha256.txt` and `tagmanifest-sha256.txt`, that no
//! file is missing or unlisted, Payload-Oxum, and that `manifest.json` agrees with the payload. Entries with unsafe
//! paths or types are refused. Every problem is reported, not just the first.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    fs::File,
    io::{self, BufReader, Read},
    path::{Component, Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{bagit, manifest::Manifest};

/// Tag files larger than this are not held in memory (a bundle's are a few MiB at most).
const TAG_FILE_LIMIT: u64 = 256 << 20;
const TAG_FILES: [&str; 5] =
    ["bagit.txt", "bag-info.txt", "manifest-sha256.txt", "tagmanifest-sha256.txt", "manifest.json"];

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
        write!(f, "{}: {}: {}", self.path, self.kind, self.detail)
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
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
    fn problem(&mut self, path: impl Into<String>, kind: ProblemKind, detail: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), kind, detail: detail.into() });
    }
}

#[derive(Debug)]
struct Seen {
    sha256: String,
    bytes: u64,
}

/// Verifies the bundle at `archive`. `Err` only when the archive cannot be opened at all.
pub fn verify(archive: &Path) -> io::Result<Report> {
    let mut report = Report { archive: archive.to_path_buf(), ..Default::default() };
    let file = File::open(archive)?;
    let mut hashing = HashingReader::new(file);
    let mut top: Option<String> = None;
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut tags: BTreeMap<String, Vec<u8>> = BTreeMap::new();

    let read = read_entries(&mut hashing, &mut report, &mut top, &mut seen, &mut tags);
    if let Err(e) = read {
        report.problem(display_name(archive), ProblemKind::Corrupt, format!("archive is truncated or corrupt: {e}"));
    }
    // Hash the whole file even where decoding stopped early.
    let _ = io::copy(&mut hashing, &mut io::sink());
    report.archive_sha256 = hashing.finish();
    check_side_files(archive, &mut report, tags.get("manifest.json"));

    let Some(top) = top else {
        report.problem(display_name(archive), ProblemKind::Missing, "archive holds no bag directory");
        return Ok(report);
    };
    report.bundle_id = Some(top.clone());
    check_bag(&mut report, &top, &seen, &tags);
    Ok(report)
}

fn read_entries(
    reader: &mut HashingReader<File>,
    report: &mut Report,
    top: &mut Option<String>,
    seen: &mut BTreeMap<String, Seen>,
    tags: &mut BTreeMap<String, Vec<u8>>,
) -> io::Result<()> {
    let decoder = zstd::stream::read::Decoder::new(reader)?;
    let mut archive = tar::Archive::new(decoder);
    let mut buf = vec![0u8; 256 * 1024];
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        let Some(rel) = bag_relative(&raw, top) else {
            report.problem(
                raw.clone(),
                ProblemKind::UnsafeEntry,
                "refused: absolute path, `..`, or outside the bag directory",
            );
            continue;
        };
        match kind {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            other => {
                report.problem(
                    raw,
                    ProblemKind::UnsafeEntry,
                    format!("refused: entry type {other:?} (only files and directories belong in a bundle)"),
                );
                continue;
            }
        }
        if rel.is_empty() {
            report.problem(raw, ProblemKind::UnsafeEntry, "refused: a file where the bag directory should be");
            continue;
        }
        let keep = TAG_FILES.contains(&rel.as_str()) && entry.size() <= TAG_FILE_LIMIT;
        let mut kept = Vec::new();
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        loop {
            let n = entry.read(&mut buf)?;
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
            tags.insert(rel.clone(), kept);
        }
        let record = Seen { sha256: hex::encode(hasher.finalize()), bytes };
        if seen.insert(rel.clone(), record).is_some() {
            report.problem(rel, ProblemKind::Duplicate, "the archive holds this path more than once");
        }
    }
    Ok(())
}

/// The path of an entry relative to the bag directory, or `None` when it is unsafe. The first entry fixes the bag
/// directory's name.
fn bag_relative(raw: &str, top: &mut Option<String>) -> Option<String> {
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
                format!("Payload-Oxum says {oxum}, the payload is {expected}"),
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
            report.problem("manifest.json", ProblemKind::Malformed, format!("not a preserve manifest: {e}"));
            return;
        }
    };
    if manifest.format != super::manifest::FORMAT {
        report.problem("manifest.json", ProblemKind::Malformed, format!("unknown format `{}`", manifest.format));
    }
    if manifest.bundle_id != top {
        report.problem(
            "manifest.json",
            ProblemKind::ManifestMismatch,
            format!("bundle_id `{}` is not the bag directory `{top}`", manifest.bundle_id),
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
                    a.bytes, a.sha256, s.bytes, s.sha256
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

fn check_side_files(archive: &Path, report: &mut Report, inner_manifest: Option<&Vec<u8>>) {
    let sha_path = PathBuf::from(format!("{}.sha256", archive.display()));
    let text = match std::fs::read_to_string(&sha_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            report.problem(display_name(&sha_path), ProblemKind::ArchiveHash, format!("cannot read: {e}"));
            None
        }
    };
    if let Some(text) = text {
        report.archive_hash_checked = true;
        let expected = text.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
        if expected != report.archive_sha256 {
            report.problem(
                display_name(&sha_path),
                ProblemKind::ArchiveHash,
                format!("archive sha256 is {}, {} says {expected}", report.archive_sha256, display_name(&sha_path)),
            );
        }
    }
    let name = display_name(archive);
    if let Some(stem) = name.strip_suffix(".tar.zst") {
        let side = archive.with_file_name(format!("{stem}.manifest.json"));
        if let (Ok(copy), Some(inner)) = (std::fs::read(&side), inner_manifest)
            && &copy != inner
        {
            report.problem(
                display_name(&side),
                ProblemKind::ManifestMismatch,
                "differs from manifest.json inside the archive",
            );
        }
    }
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

/// Reads `manifest.json` of a bundle: the side copy when present, else from inside the archive (streamed).
pub fn read_manifest(archive: &Path) -> io::Result<Manifest> {
    let name = display_name(archive);
    if let Some(stem) = name.strip_suffix(".tar.zst") {
        let side = archive.with_file_name(format!("{stem}.manifest.json"));
        if let Ok(bytes) = std::fs::read(&side) {
            return serde_json::from_slice(&bytes).map_err(io::Error::other);
        }
    }
    let decoder = zstd::stream::read::Decoder::new(BufReader::new(File::open(archive)?))?;
    let mut tar = tar::Archive::new(decoder);
    for entry in tar.entries()? {
        let entry = entry?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if path.split('/').filter(|s| !s.is_empty()).count() == 2 && path.ends_with("/manifest.json") {
            return serde_json::from_reader(entry.take(TAG_FILE_LIMIT)).map_err(io::Error::other);
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, "no manifest.json in the archive"))
}

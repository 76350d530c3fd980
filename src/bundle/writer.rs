//! Writes the bundle: a tar of one BagIt bag, compressed with multi-threaded zstd (frame checksums on), hashed as it
//! is written, fsynced and renamed into place only when complete, with the `.sha256` and `.manifest.json` side files.
//! Tar headers are normalized (mode 0644/0755, uid/gid 0, no user names, mtime = snapshot time), so the same
//! evidence gives the same payload hashes; payload entries come in the order they were finished, tag files last.

use std::{
    collections::BTreeSet,
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
};

use sha2::{Digest, Sha256};

use super::{
    artifact::{Sealed, StagedArtifact},
    bagit,
    manifest::Manifest,
    outdir::{OutDir, PrivateDir},
};

/// Staged frames at least this big are appended by [`Assembler::append_file`].
const KERNEL_COPY_FROM: u64 = 1 << 20;

/// The archive's name in the staging directory until it is finished.
const PARTIAL: &str = "bundle.tar.zst.partial";

const TAG_FILES: [&str; 4] = ["bagit.txt", "bag-info.txt", "manifest-sha256.txt", "manifest.json"];
/// The report, a tag file of its own (after the others, before the tag manifest that covers it).
pub const REPORT: &str = "report.html";

#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// Where the bundle goes once finished.
    pub out: Arc<OutDir>,
    /// Where it is written until then: the bundle's staging directory, private to this process.
    pub staging: Arc<PrivateDir>,
    pub zstd_level: i32,
    pub organization: String,
    /// age recipients to encrypt the archive for (`[seal] recipients`); empty: not encrypted.
    pub recipients: Vec<String>,
}

/// A bundle on disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WrittenBundle {
    pub archive: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    pub sha256_file: PathBuf,
    pub manifest_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write bundle {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("staged artifact {path} changed size while archiving (expected {expected} bytes)")]
    Staged { path: String, expected: u64 },
    /// The archive is finished and synced, but it or a side file could not be put in place (something stands at
    /// the name that a rename cannot replace, such as a directory another user made there). It is kept where it is.
    #[error("cannot put {path} in place: {source}; the finished bundle is complete and kept at {kept}")]
    Publish { path: PathBuf, kept: PathBuf, source: io::Error },
}

/// The side files a bundle may have beyond its `.sha256` and `.manifest.json`: its signature, timestamp, custody
/// record and the record of how it was sealed. They go with the bundle (retention deletes them with it). The
/// signature and timestamp are named after the archive (`<id>.tar.zst.age.sig` for an encrypted one).
pub fn seal_file_names(bundle_id: &str, encrypted: bool) -> [String; 4] {
    let archive = super::archive_name(bundle_id, encrypted);
    [
        format!("{archive}.sig"),
        format!("{archive}.tsr"),
        format!("{bundle_id}.custody.jsonl"),
        format!("{bundle_id}.seal.json"),
    ]
}

/// Paths of a bundle's files, from its id and the output directory: archive, `.sha256`, `.manifest.json`.
pub fn bundle_paths(out_dir: &Path, bundle_id: &str, encrypted: bool) -> (PathBuf, PathBuf, PathBuf) {
    let archive = super::archive_name(bundle_id, encrypted);
    (
        out_dir.join(&archive),
        out_dir.join(format!("{archive}.sha256")),
        out_dir.join(format!("{bundle_id}.manifest.json")),
    )
}

/// Where the archive's bytes go: the file (through the hash and the mirror), encrypted first when it has recipients.
enum Out {
    Plain(HashingWriter<BufWriter<File>>),
    Encrypted(age::stream::StreamWriter<HashingWriter<BufWriter<File>>>),
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Encrypted(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.write_all(buf),
            Self::Encrypted(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Encrypted(w) => w.flush(),
        }
    }
}

/// Builds the `.tar.zst` as a sequence of zstd frames: tar headers, padding and tag files are compressed here in
/// small frames; each artifact's content is the frame staged while it was collected, copied as it is. Decompressed
/// end to end (zstd decodes concatenated frames as one stream) it is one ordinary tar.
struct Assembler {
    out: Out,
    /// Where the staged artifacts are.
    staging: Arc<PrivateDir>,
    /// Tar bytes not yet compressed (headers, padding, small files).
    tar: tar::Builder<Vec<u8>>,
    compressor: zstd::bulk::Compressor<'static>,
}

impl Assembler {
    fn new(
        file: File,
        staging: Arc<PrivateDir>,
        level: i32,
        mirror: Option<Box<dyn Mirror>>,
        recipients: &[String],
    ) -> io::Result<Self> {
        let mut compressor = zstd::bulk::Compressor::new(level)?;
        compressor.include_checksum(true)?;
        let hashed = HashingWriter::mirrored(BufWriter::with_capacity(1 << 20, file), mirror);
        let out = if recipients.is_empty() {
            Out::Plain(hashed)
        } else {
            let settings = crate::config::SealSettings { recipients: recipients.to_vec(), ..Default::default() };
            let parsed = settings.age_recipients().map_err(io::Error::other)?;
            let encryptor = age::Encryptor::with_recipients(parsed.iter().map(|r| r.as_ref() as &dyn age::Recipient))
                .map_err(io::Error::other)?;
            Out::Encrypted(encryptor.wrap_output(hashed)?)
        };
        Ok(Self { out, staging, tar: tar::Builder::new(Vec::new()), compressor })
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        let pending = std::mem::take(self.tar.get_mut());
        if !pending.is_empty() {
            self.out.write_all(&self.compressor.compress(&pending)?)?;
        }
        Ok(())
    }

    fn dir(&mut self, path: &str, mtime: u64) -> io::Result<()> {
        let mut h = header(tar::EntryType::Directory, 0, 0o755, mtime);
        self.tar.append_data(&mut h, path, io::empty())
    }

    fn bytes(&mut self, path: &str, content: &[u8], mtime: u64) -> io::Result<()> {
        let mut h = header(tar::EntryType::Regular, content.len() as u64, 0o644, mtime);
        self.tar.append_data(&mut h, path, content)
    }

    /// One artifact: its header, its staged frame copied verbatim, its padding.
    fn staged(&mut self, top: &str, s: &Sealed, mtime: u64) -> io::Result<()> {
        let mut h = header(tar::EntryType::Regular, s.bytes, 0o644, mtime);
        // With no data the builder writes just the header (and a long-name entry when the path needs one).
        self.tar.append_data(&mut h, format!("{top}/{}", s.bag_path), io::empty())?;
        if s.stored > 0 {
            self.flush_pending()?;
            let f = self.staging.open_file(&s.bag_path)?;
            if f.metadata()?.len() != s.stored {
                return Err(io::Error::other(WriteError::Staged { path: s.bag_path.clone(), expected: s.stored }));
            }
            match &mut self.out {
                Out::Plain(plain) if s.stored >= KERNEL_COPY_FROM => Self::append_file(plain, &f, s.stored)?,
                // Encrypted, the bytes must pass through the cipher: no copy file to file.
                out => {
                    io::copy(&mut io::Read::take(f, s.stored), out)?;
                }
            }
        }
        let pad = (512 - s.bytes % 512) % 512;
        self.tar.get_mut().extend(std::iter::repeat_n(0u8, pad as usize));
        Ok(())
    }

    /// Appends the first `n` bytes of a staged frame to the archive. The kernel copies them file to file
    /// (`std::io::copy` between files is `copy_file_range`) while this thread reads them again from the page cache
    /// for the archive's hash: the last artifact's copy is all a snapshot waits for once its collectors are done,
    /// and through a buffer it was a write, a read, a copy and a hash one after the other (docs/performance.md).
    fn append_file(out: &mut HashingWriter<BufWriter<File>>, from: &File, n: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        out.inner.flush()?;
        let (archive, tap) = (out.inner.get_mut(), &mut out.tap);
        let (copied, hashed) = std::thread::scope(|scope| {
            let copy = scope.spawn(|| io::copy(&mut io::Read::take(from, n), archive));
            let mut buf = vec![0u8; 1 << 20];
            let mut at = 0u64;
            let hashed = loop {
                let want = (n - at).min(buf.len() as u64) as usize;
                if want == 0 {
                    break Ok(at);
                }
                match from.read_at(&mut buf[..want], at) {
                    Ok(0) => break Ok(at),
                    Ok(k) => {
                        tap.see(&buf[..k]);
                        at += k as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let copied = copy.join().unwrap_or_else(|_| Err(io::Error::other("the archive copy panicked")));
            (copied, hashed)
        });
        let (copied, hashed) = (copied?, hashed?);
        if copied != n || hashed != n {
            return Err(io::Error::other(format!(
                "staged frame ended early: {copied} bytes copied, {hashed} hashed of {n}"
            )));
        }
        out.bytes += n;
        Ok(())
    }

    /// The end-of-archive blocks, the last frame; returns the file, the archive's sha256 and size, and the mirror,
    /// to be told the archive is complete once the file is synced.
    #[allow(clippy::type_complexity)]
    fn finish(mut self) -> io::Result<(File, String, u64, Option<Box<dyn Mirror>>)> {
        self.tar.finish()?;
        self.flush_pending()?;
        let hashed = match self.out {
            Out::Plain(w) => w,
            // The last chunk and its tag: the ciphertext is complete.
            Out::Encrypted(w) => w.finish()?,
        };
        let (buffered, sha256, bytes, mirror) = hashed.finish_mirrored();
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        Ok((file, sha256, bytes, mirror))
    }
}

/// An archive written while the evidence is collected: each artifact is appended as soon as it is sealed, from the
/// zstd frame staged while it was written, so compression overlaps collection instead of following it. The tag
/// files, which depend on everything, come last. Entries are therefore in the order their artifacts were finished;
/// the payload and its hashes do not depend on that order.
pub struct ArchiveStream {
    opts: ArchiveOptions,
    id: String,
    mtime: u64,
    /// Shown in messages; the file itself is [`PARTIAL`] in the staging directory.
    partial: PathBuf,
    tx: Arc<Mutex<Option<mpsc::Sender<Sealed>>>>,
    thread: Option<std::thread::JoinHandle<Result<Appended, io::Error>>>,
}

struct Appended {
    asm: Assembler,
    paths: BTreeSet<String>,
}

impl ArchiveStream {
    /// Creates the archive in the staging directory and the thread that appends artifacts to it.
    /// `mirror`, when given, receives the archive's bytes as they are written (an upload made meanwhile).
    pub fn start(
        opts: &ArchiveOptions,
        id: &str,
        mtime: u64,
        mirror: Option<Box<dyn Mirror>>,
    ) -> Result<Self, WriteError> {
        let partial = opts.staging.path().join(PARTIAL);
        let asm = opts
            .staging
            .create_file(PARTIAL)
            .and_then(|f| Assembler::new(f, opts.staging.clone(), opts.zstd_level, mirror, &opts.recipients))
            .map_err(io_err(&partial))?;
        let (tx, rx) = mpsc::channel::<Sealed>();
        let top = id.to_string();
        let thread = std::thread::Builder::new()
            .name("preserve-archive".into())
            .spawn(move || {
                let mut out = Appended { asm, paths: BTreeSet::new() };
                out.asm.dir(&format!("{top}/"), mtime)?;
                out.asm.dir(&format!("{top}/data/"), mtime)?;
                for s in rx {
                    out.asm.staged(&top, &s, mtime)?;
                    out.paths.insert(s.bag_path);
                }
                Ok(out)
            })
            .map_err(io_err(&partial))?;
        Ok(Self {
            opts: opts.clone(),
            id: id.to_string(),
            mtime,
            partial,
            tx: Arc::new(Mutex::new(Some(tx))),
            thread: Some(thread),
        })
    }

    /// Queues a sealed artifact; cheap, never blocks. After [`ArchiveStream::finish`] began, ignored.
    pub fn sender(&self) -> impl Fn(&Sealed) + Send + Sync + 'static {
        let tx = self.tx.clone();
        move |sealed| {
            if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = tx.send(sealed.clone());
            }
        }
    }

    /// Appends whatever was not streamed yet and the tag files, then fsyncs and renames the archive into place and
    /// writes the side files. When it fails before the archive is complete, the partial archive is removed (a full
    /// disk stays full otherwise); a complete archive is never removed, whatever fails after it.
    /// `report` is the bundle's `report.html` tag file, when there is one.
    pub fn finish(
        mut self,
        manifest: &Manifest,
        artifacts: &[StagedArtifact],
        report: Option<&[u8]>,
    ) -> Result<WrittenBundle, WriteError> {
        let result = self.complete(manifest, artifacts, report);
        if matches!(result, Err(WriteError::Io { .. } | WriteError::Staged { .. })) {
            let _ = self.opts.staging.remove_file(PARTIAL);
        }
        result
    }

    fn complete(
        &mut self,
        manifest: &Manifest,
        artifacts: &[StagedArtifact],
        report: Option<&[u8]>,
    ) -> Result<WrittenBundle, WriteError> {
        let encrypted = !self.opts.recipients.is_empty();
        let (archive, sha_file, manifest_file) = bundle_paths(self.opts.out.path(), &self.id, encrypted);
        let partial = self.partial.clone();
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let appended = self
            .thread
            .take()
            .map(|t| t.join().unwrap_or_else(|_| Err(io::Error::other("the archive thread panicked"))))
            .unwrap_or_else(|| Err(io::Error::other("archive already finished")));
        let to_write_error = |e: io::Error| match e.downcast::<WriteError>() {
            Ok(w) => w,
            Err(e) => WriteError::Io { path: partial.clone(), source: e },
        };
        let Appended { mut asm, paths } = appended.map_err(to_write_error)?;

        let manifest_json = serde_json::to_vec_pretty(manifest)
            .map_err(|e| WriteError::Io { path: manifest_file.clone(), source: io::Error::other(e) })?;
        let (tag_contents, tagmanifest) = tag_files(&self.opts, manifest, artifacts, &manifest_json, report);
        let (id, mtime) = (self.id.clone(), self.mtime);
        let result: io::Result<()> = (|| {
            // Sealed before the hook was set, or never reported: appended now, in path order.
            for a in artifacts.iter().filter(|a| !paths.contains(&a.record.path)) {
                let s = Sealed { bag_path: a.record.path.clone(), bytes: a.record.bytes, stored: a.stored };
                asm.staged(&id, &s, mtime)?;
            }
            for (name, content) in TAG_FILES.iter().zip(tag_contents.iter()) {
                asm.bytes(&format!("{id}/{name}"), content, mtime)?;
            }
            if let Some(report) = report {
                asm.bytes(&format!("{id}/{REPORT}"), report, mtime)?;
            }
            asm.bytes(&format!("{id}/tagmanifest-sha256.txt"), tagmanifest.as_bytes(), mtime)
        })();
        result.map_err(to_write_error)?;
        let (file, sha256, bytes, mirror) = asm.finish().map_err(io_err(&partial))?;
        file.sync_all().map_err(io_err(&partial))?;
        // Only a durable archive completes its upload: one that failed to sync is removed here, and no object in
        // the store may stand for a bundle that does not exist.
        if let Some(mut m) = mirror {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.end(&sha256, bytes)));
        }

        // From here on the archive is complete: whatever fails, it is kept.
        let kept = |path: &Path| {
            let (path, kept) = (path.to_path_buf(), partial.clone());
            move |source| WriteError::Publish { path, kept, source }
        };
        let archive_name = super::archive_name(&self.id, encrypted);
        self.side_file(&sha_file, format!("{sha256}  {archive_name}\n").as_bytes()).map_err(kept(&sha_file))?;
        // Encrypted, the manifest beside it is the public one: what the archive is, not what it holds.
        let side_manifest = if encrypted {
            serde_json::to_vec_pretty(&super::manifest::PublicManifest::of(manifest, bytes))
                .map_err(|e| WriteError::Io { path: manifest_file.clone(), source: io::Error::other(e) })?
        } else {
            manifest_json
        };
        self.side_file(&manifest_file, &side_manifest).map_err(kept(&manifest_file))?;
        // The archive appears last, complete and synced: its presence means the bundle is finished.
        self.opts.staging.publish(PARTIAL, &self.opts.out, &archive_name).map_err(kept(&archive))?;
        sync_dir(self.opts.out.path());
        Ok(WrittenBundle { archive, sha256, bytes, sha256_file: sha_file, manifest_file })
    }
}

impl ArchiveStream {
    /// Writes a side file in the staging directory, synced, and renames it into place as `path`'s name.
    fn side_file(&self, path: &Path, content: &[u8]) -> io::Result<()> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.opts.staging.write_into(&self.opts.out, &name, content)
    }
}

impl Drop for ArchiveStream {
    /// Never finished (the snapshot failed before writing its bundle): stop the thread, remove the partial file.
    fn drop(&mut self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let _ = self.opts.staging.remove_file(PARTIAL);
        }
    }
}

/// The BagIt tag files and `manifest.json`, and the tag manifest over them.
fn tag_files(
    opts: &ArchiveOptions,
    manifest: &Manifest,
    artifacts: &[StagedArtifact],
    manifest_json: &[u8],
    report: Option<&[u8]>,
) -> ([Vec<u8>; 4], String) {
    let id = &manifest.bundle_id;
    let payload_bytes: u64 = artifacts.iter().map(|a| a.record.bytes).sum();
    let manifest_sha256 =
        bagit::render_manifest(artifacts.iter().map(|a| (a.record.sha256.as_str(), a.record.path.as_str())));
    let bag_info = bagit::render_bag_info(&[
        ("Source-Organization", opts.organization.clone()),
        ("Bagging-Date", manifest.finished_at.strftime("%Y-%m-%d").to_string()),
        ("External-Identifier", id.clone()),
        ("Payload-Oxum", format!("{payload_bytes}.{}", artifacts.len())),
        ("Bag-Software-Agent", format!("{} {}", crate::TOOL_NAME, crate::TOOL_VERSION)),
        (
            "Internal-Sender-Description",
            format!("preserve evidence bundle, profile {}, status {}", manifest.profile, manifest.status.as_str()),
        ),
    ]);
    let contents = [
        bagit::BAGIT_TXT.as_bytes().to_vec(),
        bag_info.into_bytes(),
        manifest_sha256.into_bytes(),
        manifest_json.to_vec(),
    ];
    let mut tag_hashes: Vec<(String, &str)> =
        TAG_FILES.iter().zip(contents.iter()).map(|(name, c)| (hex::encode(Sha256::digest(c)), *name)).collect();
    if let Some(r) = report {
        tag_hashes.push((hex::encode(Sha256::digest(r)), REPORT));
    }
    let tagmanifest = bagit::render_manifest(tag_hashes.iter().map(|(h, name)| (h.as_str(), *name)));
    (contents, tagmanifest)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError::Io { path, source }
}

fn header(kind: tar::EntryType, size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h
}

fn sync_dir(dir: &Path) {
    // Best effort: makes the renames durable; some filesystems refuse to fsync a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Receives every byte of the archive as it is written, in order: an upload made while the bundle is written.
/// A mirror never fails the archive: one that loses its store records why and stops taking bytes, and the bundle
/// is finished on disk all the same.
pub trait Mirror: Send {
    fn feed(&mut self, bytes: &[u8]);
    /// The archive is complete: `sha256` and `bytes` are the whole file's.
    fn end(&mut self, sha256: &str, bytes: u64);
}

/// Sees every byte written to the archive: hashes it, and hands it to the mirror if there is one.
struct Tap {
    hasher: Sha256,
    mirror: Option<Box<dyn Mirror>>,
}

impl Tap {
    fn see(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        if let Some(m) = self.mirror.as_mut() {
            // A mirror that panics is dropped, never the archive.
            let fed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.feed(bytes)));
            if fed.is_err() {
                self.mirror = None;
            }
        }
    }
}

/// Hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    tap: Tap,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self::mirrored(inner, None)
    }
    fn mirrored(inner: W, mirror: Option<Box<dyn Mirror>>) -> Self {
        Self { inner, tap: Tap { hasher: Sha256::new(), mirror }, bytes: 0 }
    }
    pub fn finish(self) -> (W, String, u64) {
        let (inner, sha256, bytes, _) = self.finish_mirrored();
        (inner, sha256, bytes)
    }
    fn finish_mirrored(self) -> (W, String, u64, Option<Box<dyn Mirror>>) {
        (self.inner, hex::encode(self.tap.hasher.finalize()), self.bytes, self.tap.mirror)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.tap.see(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

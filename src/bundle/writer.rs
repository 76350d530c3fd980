//! Writes the bundle: a tar of one BagIt bag, compressed with multi-threaded zstd (frame checksums on), hashed as it
//! is written, fsynced and renamed into place only when complete, with the `.sha256` and `.manifest.json` side files.
//! Tar headers are normalized (mode 0644/0755, uid/gid 0, no user names, mtime = snapshot time) and entries are in a
//! fixed order, so the same evidence gives the same payload hashes.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{artifact::StagedArtifact, bagit, manifest::Manifest};

const JOB_SIZE: u32 = 4 << 20;
const TAG_FILES: [&str; 4] = ["bagit.txt", "bag-info.txt", "manifest-sha256.txt", "manifest.json"];

#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    pub out_dir: PathBuf,
    pub zstd_level: i32,
    /// 0 means one worker per CPU.
    pub zstd_threads: u32,
    pub organization: String,
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
}

/// Paths of a bundle's files, from its id and the output directory.
pub fn bundle_paths(out_dir: &Path, bundle_id: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        out_dir.join(format!("{bundle_id}.tar.zst")),
        out_dir.join(format!("{bundle_id}.tar.zst.sha256")),
        out_dir.join(format!("{bundle_id}.manifest.json")),
    )
}

/// Writes the archive for `manifest` (whose collectors already list every artifact) from the staged artifacts.
pub fn write_bundle(
    opts: &ArchiveOptions,
    manifest: &Manifest,
    artifacts: &[StagedArtifact],
) -> Result<WrittenBundle, WriteError> {
    let id = &manifest.bundle_id;
    let (archive, sha_file, manifest_file) = bundle_paths(&opts.out_dir, id);
    std::fs::create_dir_all(&opts.out_dir).map_err(io_err(&opts.out_dir))?;

    let manifest_json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| WriteError::Io { path: manifest_file.clone(), source: io::Error::other(e) })?;
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
    let tag_contents: [&[u8]; 4] =
        [bagit::BAGIT_TXT.as_bytes(), bag_info.as_bytes(), manifest_sha256.as_bytes(), &manifest_json];
    let tag_hashes: Vec<(String, &str)> =
        TAG_FILES.iter().zip(tag_contents).map(|(name, c)| (hex::encode(Sha256::digest(c)), *name)).collect();
    let tagmanifest = bagit::render_manifest(tag_hashes.iter().map(|(h, name)| (h.as_str(), *name)));

    let partial = opts.out_dir.join(format!(".{id}.tar.zst.partial"));
    let archived = write_archive(opts, manifest, artifacts, &partial, &tag_contents, &tagmanifest);
    let (sha256, bytes) = match archived {
        Ok(done) => done,
        Err(e) => {
            // Never leave a half-written archive behind (a full disk stays full otherwise).
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };

    let archive_name = archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    write_atomically(&sha_file, format!("{sha256}  {archive_name}\n").as_bytes())?;
    write_atomically(&manifest_file, &manifest_json)?;
    // The archive appears last, complete and synced: its presence means the bundle is finished.
    std::fs::rename(&partial, &archive).map_err(io_err(&archive))?;
    sync_dir(&opts.out_dir);
    Ok(WrittenBundle { archive, sha256, bytes, sha256_file: sha_file, manifest_file })
}

/// Writes the tar.zst to `partial`, fsynced; returns its sha256 and size.
fn write_archive(
    opts: &ArchiveOptions,
    manifest: &Manifest,
    artifacts: &[StagedArtifact],
    partial: &Path,
    tag_contents: &[&[u8]; 4],
    tagmanifest: &str,
) -> Result<(String, u64), WriteError> {
    let id = &manifest.bundle_id;
    let partial = partial.to_path_buf();
    let file = File::create(&partial).map_err(io_err(&partial))?;
    let hashing = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut encoder = zstd::stream::write::Encoder::new(hashing, opts.zstd_level).map_err(io_err(&partial))?;
    encoder.include_checksum(true).map_err(io_err(&partial))?;
    let threads = if opts.zstd_threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    } else {
        opts.zstd_threads
    };
    encoder.multithread(threads).map_err(io_err(&partial))?;
    // zstd's default job is several times the window (peak RSS ~53 MiB with 2 workers); 4 MiB jobs keep it near
    // 32 MiB whatever the evidence size, for ~10% in ratio (measured: tests/memory.rs, docs/performance.md).
    encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE)).map_err(io_err(&partial))?;

    let mtime = manifest.created_at.as_second().max(0) as u64;
    let mut tar = tar::Builder::new(encoder);
    let result: io::Result<()> = (|| {
        append_dir(&mut tar, &format!("{id}/"), mtime)?;
        for (name, content) in TAG_FILES.iter().zip(tag_contents.iter()) {
            append_bytes(&mut tar, &format!("{id}/{name}"), content, mtime)?;
        }
        append_bytes(&mut tar, &format!("{id}/tagmanifest-sha256.txt"), tagmanifest.as_bytes(), mtime)?;
        append_dir(&mut tar, &format!("{id}/data/"), mtime)?;
        for a in artifacts {
            let f = File::open(&a.staged)?;
            let len = f.metadata()?.len();
            if len != a.record.bytes {
                return Err(io::Error::other(WriteError::Staged {
                    path: a.record.path.clone(),
                    expected: a.record.bytes,
                }));
            }
            let mut h = header(tar::EntryType::Regular, a.record.bytes, 0o644, mtime);
            tar.append_data(&mut h, format!("{id}/{}", a.record.path), io::Read::take(f, a.record.bytes))?;
        }
        Ok(())
    })();
    result.map_err(io_err(&partial))?;
    let encoder = tar.into_inner().map_err(io_err(&partial))?;
    let hashing = encoder.finish().map_err(io_err(&partial))?;
    let (buffered, sha256, bytes) = hashing.finish();
    let file = buffered.into_inner().map_err(|e| WriteError::Io { path: partial.clone(), source: e.into_error() })?;
    file.sync_all().map_err(io_err(&partial))?;
    Ok((sha256, bytes))
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

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str, mtime: u64) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755, mtime);
    tar.append_data(&mut h, path, io::empty())
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, content: &[u8], mtime: u64) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, content.len() as u64, 0o644, mtime);
    tar.append_data(&mut h, path, content)
}

fn write_atomically(path: &Path, content: &[u8]) -> Result<(), WriteError> {
    let err = |source| WriteError::Io { path: path.to_path_buf(), source };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    let mut f = File::create(&tmp).map_err(err)?;
    f.write_all(content).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn sync_dir(dir: &Path) {
    // Best effort: makes the renames durable; some filesystems refuse to fsync a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), bytes: 0 }
    }
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

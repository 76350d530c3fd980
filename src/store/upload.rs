//! Uploading a bundle: streamed to a multipart upload while the archive is written (memory bounded by a few
//! parts, the archive never read again), or from the finished file when that failed or for a rerun, which resumes
//! the parts already in the store. Every part carries its SHA-256 and the store checks it; the object is created
//! with `If-None-Match: *` and, when configured, Object Lock; the side files follow; the archive's checksum, version
//! and lock are then read back, and only a copy read back is called confirmed.

use std::{
    io::Read,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_sdk_s3::{
    primitives::{ByteStream, DateTime},
    types::{
        ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, ObjectLockLegalHoldStatus,
        ObjectLockMode,
    },
};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{
    Store, StoreError, b64, composite,
    record::{LockRecord, PartRecord, Resume, SideObject, UploadRecord, UploadState},
};
use crate::{
    bundle::{outdir::OutDir, writer::Mirror},
    config::StoreSettings,
};

/// How long, in all, the archive writer may wait for the upload to take its parts before it leaves the upload
/// behind: a slow or hung store must not hold the evidence on disk back. The upload then goes on from the finished
/// file. A stop (SIGTERM, the sidecar's grace) leaves it at once.
const STALL_BUDGET: Duration = Duration::from_secs(15);
/// How often a waiting writer looks whether the snapshot was stopped.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// What the archive writer hands to the upload.
enum Msg {
    Part {
        number: i32,
        bytes: Bytes,
        digest: [u8; 32],
    },
    /// The whole archive, smaller than one part: one `PutObject` whose checksum is the archive's own SHA-256.
    Whole {
        bytes: Bytes,
        digest: [u8; 32],
    },
    End,
}

/// What the archive is stored as, once stored.
#[derive(Debug, Clone)]
struct Stored {
    version_id: Option<String>,
    /// The checksum the store should hold (see [`UploadRecord::expected_checksum`]).
    expected: String,
}

/// Where an upload got to.
struct Progress {
    upload_id: Option<String>,
    parts: Vec<PartRecord>,
    digests: Vec<[u8; 32]>,
    /// Parts kept from an interrupted upload.
    resumed: usize,
}

impl Progress {
    fn new() -> Self {
        Self { upload_id: None, parts: Vec::new(), digests: Vec::new(), resumed: 0 }
    }
    fn resume(&self, part_size: u64) -> Option<Resume> {
        self.upload_id.as_ref().map(|id| Resume { upload_id: id.clone(), part_size, parts: self.parts.clone() })
    }
}

/// An object being put in the store, with the lock every object of this bundle gets.
#[derive(Clone)]
struct Target {
    store: Store,
    key: String,
    url: String,
    /// Fixed when the upload begins, so every object of the bundle is retained until the same moment.
    retain_until: Option<DateTime>,
}

impl Target {
    fn new(store: Store, name: &str, retain_until: Option<DateTime>) -> Self {
        let key = store.settings.location.key(name);
        let url = store.settings.location.url_of(name);
        Self { store, key, url, retain_until }
    }

    fn named(&self, name: &str) -> Self {
        Self::new(self.store.clone(), name, self.retain_until)
    }

    fn lock(&self) -> (Option<ObjectLockMode>, Option<ObjectLockLegalHoldStatus>) {
        let lock = self.store.settings.lock.as_ref();
        let mode = lock.and_then(|l| l.mode.as_deref()).map(ObjectLockMode::from);
        let hold = lock.filter(|l| l.legal_hold).map(|_| ObjectLockLegalHoldStatus::On);
        (mode, hold)
    }

    async fn put(&self, bytes: Bytes, digest: &[u8; 32]) -> Result<Option<String>, StoreError> {
        let (mode, hold) = self.lock();
        let out = self
            .store
            .client()
            .put_object()
            .bucket(self.store.bucket())
            .key(&self.key)
            .content_length(bytes.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(b64(digest))
            .if_none_match("*")
            .set_object_lock_mode(mode.clone())
            .set_object_lock_retain_until_date(mode.and(self.retain_until))
            .set_object_lock_legal_hold_status(hold)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("upload", &self.url, &e))?;
        Ok(out.version_id)
    }

    async fn create(&self) -> Result<String, StoreError> {
        let (mode, hold) = self.lock();
        let out = self
            .store
            .client()
            .create_multipart_upload()
            .bucket(self.store.bucket())
            .key(&self.key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .set_object_lock_mode(mode.clone())
            .set_object_lock_retain_until_date(mode.and(self.retain_until))
            .set_object_lock_legal_hold_status(hold)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("start the upload of", &self.url, &e))?;
        out.upload_id.ok_or_else(|| StoreError::new("start the upload of", &self.url, "the store gave no upload id"))
    }

    async fn part(&self, id: &str, number: i32, bytes: Bytes, digest: &[u8; 32]) -> Result<PartRecord, StoreError> {
        let sha256 = b64(digest);
        let op = format!("upload part {number} of");
        let out = self
            .store
            .client()
            .upload_part()
            .bucket(self.store.bucket())
            .key(&self.key)
            .upload_id(id)
            .part_number(number)
            .content_length(bytes.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(&sha256)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| StoreError::from_sdk(&op, &self.url, &e))?;
        let etag = out.e_tag.ok_or_else(|| StoreError::new(&op, &self.url, "the store gave no ETag"))?;
        Ok(PartRecord { number, etag, sha256 })
    }

    async fn complete(&self, progress: &Progress) -> Result<Stored, StoreError> {
        let parts = progress
            .parts
            .iter()
            .map(|p| CompletedPart::builder().part_number(p.number).e_tag(&p.etag).checksum_sha256(&p.sha256).build())
            .collect();
        let id = progress.upload_id.as_deref().unwrap_or_default();
        let out = self
            .store
            .client()
            .complete_multipart_upload()
            .bucket(self.store.bucket())
            .key(&self.key)
            .upload_id(id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .if_none_match("*")
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("complete the upload of", &self.url, &e))?;
        Ok(Stored { version_id: out.version_id, expected: composite(&progress.digests) })
    }

    async fn abort(&self, id: &str) {
        let _ = self
            .store
            .client()
            .abort_multipart_upload()
            .bucket(self.store.bucket())
            .key(&self.key)
            .upload_id(id)
            .send()
            .await;
    }
}

/// An upload that began with the snapshot: its task takes the archive's parts as they are written.
pub struct Upload {
    task: tokio::task::JoinHandle<(Target, Progress, Result<Stored, StoreError>)>,
    /// Why the writer left the upload behind, if it did.
    left: Arc<Mutex<Option<String>>>,
    part_size: u64,
}

/// Begins the upload of bundle `bundle_id`; the returned mirror goes to the archive writer. `stopped` says whether
/// the snapshot was stopped (the writer then stops waiting for the store).
pub fn begin(
    settings: Arc<StoreSettings>,
    bundle_id: &str,
    encrypted: bool,
    stopped: Box<dyn Fn() -> bool + Send>,
) -> (Upload, Box<dyn Mirror>) {
    let part_size = settings.part_size;
    let (tx, rx) = mpsc::channel(1);
    let name = crate::bundle::archive_name(bundle_id, encrypted);
    let retain_until = retain_until(&settings);
    let task = tokio::spawn(async move {
        let store = Store::connect(settings).await;
        let target = Target::new(store, &name, retain_until);
        let mut progress = Progress::new();
        let result = stream(&target, rx, &mut progress).await;
        (target, progress, result)
    });
    let left = Arc::new(Mutex::new(None));
    let feed = Feed {
        tx: Some(tx),
        rt: tokio::runtime::Handle::current(),
        part: Vec::new(),
        part_size: part_size as usize,
        hasher: Sha256::new(),
        number: 0,
        left: left.clone(),
        waited: Duration::ZERO,
        stopped,
    };
    (Upload { task, left, part_size }, Box::new(feed))
}

fn retain_until(settings: &StoreSettings) -> Option<DateTime> {
    let days = settings.lock.as_ref().filter(|l| l.mode.is_some())?.retain_days;
    let at = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(24 * i64::from(days))).ok()?;
    Some(DateTime::from_secs(at.as_second()))
}

/// Parts sent at once. The largest artifact is often sealed last (the ledger export), so most of the archive can
/// only be sent once collection is over: sending two parts side by side lets the store take them on two cores.
/// Three were no faster on two cores and held one more part (docs/performance.md). With the one filling and the
/// one queued, an upload holds at most `IN_FLIGHT + 2` parts.
const IN_FLIGHT: usize = 2;

async fn stream(target: &Target, mut rx: mpsc::Receiver<Msg>, progress: &mut Progress) -> Result<Stored, StoreError> {
    let mut sending: tokio::task::JoinSet<(Result<PartRecord, StoreError>, [u8; 32])> = tokio::task::JoinSet::new();
    let mut done: Vec<(PartRecord, [u8; 32])> = Vec::new();
    // Whatever ends this upload, the parts stored so far (the unbroken run from part 1) are what a rerun resumes.
    let result = async {
        loop {
            match rx.recv().await {
                Some(Msg::Whole { bytes, digest }) => {
                    progress.digests.push(digest);
                    let version_id = target.put(bytes, &digest).await?;
                    return Ok(Some(Stored { version_id, expected: b64(&digest) }));
                }
                Some(Msg::Part { number, bytes, digest }) => {
                    let id = match &progress.upload_id {
                        Some(id) => id.clone(),
                        None => {
                            let id = target.create().await?;
                            progress.upload_id = Some(id.clone());
                            id
                        }
                    };
                    let t = target.clone();
                    sending.spawn(async move { (t.part(&id, number, bytes, &digest).await, digest) });
                    // A failed part ends the upload: dropping `rx` tells the writer to stop feeding.
                    while sending.len() >= IN_FLIGHT {
                        take_one(&mut sending, &mut done).await?;
                    }
                }
                Some(Msg::End) => {
                    while !sending.is_empty() {
                        take_one(&mut sending, &mut done).await?;
                    }
                    return Ok(None);
                }
                None => {
                    return Err(StoreError::new(
                        "upload",
                        &target.url,
                        "the archive writer stopped feeding the upload before the archive was complete",
                    ));
                }
            }
        }
    }
    .await;
    sending.abort_all();
    done.sort_by_key(|(p, _)| p.number);
    for (i, (p, d)) in done.into_iter().enumerate() {
        if p.number != i as i32 + 1 {
            break;
        }
        progress.parts.push(p);
        progress.digests.push(d);
    }
    match result? {
        Some(whole) => Ok(whole),
        None => target.complete(progress).await,
    }
}

/// Waits for one part being sent; its record is kept, its failure returned.
async fn take_one(
    sending: &mut tokio::task::JoinSet<(Result<PartRecord, StoreError>, [u8; 32])>,
    done: &mut Vec<(PartRecord, [u8; 32])>,
) -> Result<(), StoreError> {
    match sending.join_next().await {
        Some(Ok((Ok(part), digest))) => {
            done.push((part, digest));
            Ok(())
        }
        Some(Ok((Err(e), _))) => Err(e),
        Some(Err(e)) => Err(StoreError::new("upload", "", format!("a part's task stopped: {e}"))),
        None => Ok(()),
    }
}

/// The archive writer's end of a streamed upload: cuts the archive into parts, hashes each, and hands them over.
struct Feed {
    tx: Option<mpsc::Sender<Msg>>,
    rt: tokio::runtime::Handle,
    part: Vec<u8>,
    part_size: usize,
    hasher: Sha256,
    number: i32,
    left: Arc<Mutex<Option<String>>>,
    /// Time spent waiting for the upload so far.
    waited: Duration,
    stopped: Box<dyn Fn() -> bool + Send>,
}

impl Feed {
    fn leave(&mut self, why: String) {
        *self.left.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.tx = None;
    }

    fn send(&mut self, msg: Msg) {
        let Some(tx) = self.tx.clone() else { return };
        let started = std::time::Instant::now();
        loop {
            if (self.stopped)() {
                return self.leave("the snapshot was stopped while the upload was behind".into());
            }
            if self.waited + started.elapsed() >= STALL_BUDGET {
                return self.leave(format!(
                    "the store fell {}s behind the archive; the upload goes on from the finished file",
                    STALL_BUDGET.as_secs()
                ));
            }
            // The writer runs on its own thread (or a blocking one), never on the runtime: it may wait here.
            match self.rt.block_on(async { tokio::time::timeout(STOP_CHECK, tx.reserve()).await }) {
                Ok(Ok(permit)) => {
                    permit.send(msg);
                    self.waited += started.elapsed();
                    return;
                }
                // The upload ended early (it failed): it says why itself.
                Ok(Err(_)) => {
                    self.tx = None;
                    return;
                }
                Err(_) => {}
            }
        }
    }

    fn ship(&mut self, last: bool) {
        let bytes = Bytes::from(std::mem::take(&mut self.part));
        let digest: [u8; 32] = self.hasher.finalize_reset().into();
        let msg = if last && self.number == 0 {
            Msg::Whole { bytes, digest }
        } else {
            self.number += 1;
            Msg::Part { number: self.number, bytes, digest }
        };
        self.send(msg);
    }
}

impl Mirror for Feed {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.tx.is_some() {
            if self.part.capacity() == 0 {
                self.part.reserve_exact(self.part_size);
            }
            let take = (self.part_size - self.part.len()).min(bytes.len());
            self.part.extend_from_slice(&bytes[..take]);
            self.hasher.update(&bytes[..take]);
            bytes = &bytes[take..];
            if self.part.len() == self.part_size {
                self.ship(false);
            }
        }
    }

    fn end(&mut self, _sha256: &str, _bytes: u64) {
        if self.tx.is_none() {
            return;
        }
        if !self.part.is_empty() || self.number == 0 {
            self.ship(true);
        }
        if self.number > 0 {
            self.send(Msg::End);
        }
        self.tx = None;
    }
}

/// A bundle on disk, to be uploaded or whose streamed upload is finished.
pub struct Bundle<'a> {
    pub out: &'a OutDir,
    pub id: &'a str,
    /// `<id>.tar.zst.age`.
    pub encrypted: bool,
    pub archive: &'a Path,
    pub sha256: &'a str,
    pub bytes: u64,
}

/// Appends the custody entry of the upload before the side files go (so the stored record has it).
pub trait Custody: Send + Sync {
    /// `sha256` is the archive's, as written or as read for the upload (the archive is not read again for it).
    /// `Err` says why no entry could be appended; the upload is not failed for it.
    fn uploaded(&self, archive: &Path, sha256: &str, note: &str) -> Result<(), String>;
}

impl Upload {
    /// Waits for the streamed upload; where it failed, goes on from the finished file (not when the run was
    /// `stopped`: a slow store must not outlast a grace period; the record keeps what a rerun needs to resume).
    /// Then the read-back, the custody entry, the side files and the record beside the bundle.
    pub async fn finish(self, bundle: &Bundle<'_>, custody: Option<&dyn Custody>, stopped: bool) -> UploadRecord {
        let joined = self.task.await;
        let left = self.left.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (target, progress, result) = match joined {
            Ok(r) => r,
            Err(e) => {
                let record = failed_record(bundle, None, format!("the upload task stopped: {e}"), None);
                write_record(bundle, &record);
                return record;
            }
        };
        // Where the writer left the upload behind (a stall, a stop), that is why it ended, not the closed channel.
        let result = result.map_err(|e| match left {
            Some(why) => StoreError::new("upload", &target.url, why),
            None => e,
        });
        let (stored, streamed, progress) = match result {
            // Stored: whether the writer was ever behind matters no more.
            Ok(s) => (Ok(s), true, progress),
            Err(e) if e.exists() || stopped => (Err(e), true, progress),
            Err(_) => {
                // Streaming failed or was left behind: once more from the file, resuming the parts stored.
                let resume = progress.resume(self.part_size);
                let (r, p) = from_file(&target, bundle, self.part_size, resume).await;
                (r, false, p)
            }
        };
        settle(&target, bundle, stored, streamed, &progress, self.part_size, custody).await
    }
}

/// Uploads the finished bundle at `archive` (`preserve upload`, the sidecar's retry): resumes the upload its record
/// names as interrupted, leaves one already confirmed as it is, and appends the upload's custody entry through
/// `custody` when there is one. `Err` when it is not a bundle preserve can read.
pub async fn upload_bundle(
    settings: StoreSettings,
    archive: &Path,
    custody: Option<&dyn Custody>,
) -> Result<UploadRecord, String> {
    let name = archive.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let (id, encrypted) = crate::bundle::split_archive_name(name)
        .ok_or_else(|| format!("{}: not a bundle (`<id>.tar.zst` or `<id>.tar.zst.age`)", archive.display()))?;
    let record_path = super::record::path_of(archive).ok_or_else(|| format!("{}: not a bundle", archive.display()))?;
    let previous = super::record::read(&record_path)?;
    if let Some(r) = previous.as_ref().filter(|r| r.confirmed()) {
        return Ok(r.clone());
    }
    let sha_path = archive.with_file_name(format!("{name}.sha256"));
    let sha256 = match crate::bundle::bounds::read_side(&sha_path, crate::bundle::bounds::SHA256_SIDE_LIMIT, "") {
        Ok(crate::bundle::bounds::Side::Read(text)) => crate::bundle::verify::sha256_of_side(&text)
            .ok_or_else(|| format!("{}: holds no SHA-256", sha_path.display()))?,
        _ => return Err(format!("{}: missing or unreadable; the bundle's hash is needed", sha_path.display())),
    };
    let meta = std::fs::symlink_metadata(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", archive.display()));
    }
    let dir = archive.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let out = OutDir::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let bundle = Bundle { out: &out, id, encrypted, archive, sha256: &sha256, bytes: meta.len() };
    let attempts = previous.as_ref().map_or(0, |r| r.attempts).saturating_add(1);
    // The record is a file on disk like any other: a resume it names is used only when it is one S3 could have made.
    let resume = previous
        .and_then(|r| r.resume)
        .filter(|r| (crate::config::MIN_PART_SIZE..=5 << 30).contains(&r.part_size) && r.parts.len() <= 10_000);
    let mut record = upload_file(Arc::new(settings), &bundle, resume, custody).await;
    record.attempts = attempts;
    write_record(&bundle, &record);
    Ok(record)
}

/// Uploads a finished bundle (a rerun, or the sidecar's retry), resuming the interrupted upload `resume` names.
pub async fn upload_file(
    settings: Arc<StoreSettings>,
    bundle: &Bundle<'_>,
    resume: Option<Resume>,
    custody: Option<&dyn Custody>,
) -> UploadRecord {
    let store = Store::connect(settings.clone()).await;
    let target = Target::new(store, &crate::bundle::archive_name(bundle.id, bundle.encrypted), retain_until(&settings));
    let part_size = resume.as_ref().map_or(settings.part_size, |r| r.part_size);
    let (stored, progress) = from_file(&target, bundle, part_size, resume).await;
    settle(&target, bundle, stored, false, &progress, part_size, custody).await
}

/// Reads the archive from disk in parts and uploads it. The parts of `resume` already stored are kept when the
/// file's bytes still hash to them; otherwise the interrupted upload is aborted and a new one begun.
async fn from_file(
    target: &Target,
    bundle: &Bundle<'_>,
    part_size: u64,
    resume: Option<Resume>,
) -> (Result<Stored, StoreError>, Progress) {
    let mut progress = Progress::new();
    let result = from_file_into(target, bundle, part_size, resume, &mut progress).await;
    (result, progress)
}

/// The archive read in parts, hashed whole as it goes.
struct PartReader<'a> {
    path: &'a Path,
    file: std::fs::File,
    whole: Sha256,
    part_size: u64,
}

impl<'a> PartReader<'a> {
    fn open(path: &'a Path, part_size: u64) -> Result<(Self, u64), StoreError> {
        let file = crate::bundle::outdir::open_no_follow(path).map_err(|e| Self::error(path, e))?;
        let size = file.metadata().map_err(|e| Self::error(path, e))?.len();
        Ok((Self { path, file, whole: Sha256::new(), part_size }, size))
    }

    fn error(path: &Path, e: std::io::Error) -> StoreError {
        StoreError::new("read", path.display().to_string(), e.to_string())
    }

    /// Back to the first byte.
    fn restart(&mut self) -> Result<(), StoreError> {
        use std::io::Seek;
        self.file.rewind().map_err(|e| Self::error(self.path, e))?;
        self.whole = Sha256::new();
        Ok(())
    }

    fn next(&mut self) -> Result<(Bytes, [u8; 32]), StoreError> {
        let mut buf = Vec::with_capacity(self.part_size as usize);
        (&mut self.file).take(self.part_size).read_to_end(&mut buf).map_err(|e| Self::error(self.path, e))?;
        self.whole.update(&buf);
        let digest: [u8; 32] = Sha256::digest(&buf).into();
        Ok((Bytes::from(buf), digest))
    }

    fn sha256(&self) -> String {
        hex::encode(self.whole.clone().finalize())
    }
}

async fn from_file_into(
    target: &Target,
    bundle: &Bundle<'_>,
    part_size: u64,
    resume: Option<Resume>,
    progress: &mut Progress,
) -> Result<Stored, StoreError> {
    let (mut reader, size) = PartReader::open(bundle.archive, part_size)?;
    if resume.is_none() && size <= part_size {
        let (bytes, digest) = reader.next()?;
        check_whole(bundle, &hex::encode(digest))?;
        progress.digests.push(digest);
        let version_id = target.put(bytes, &digest).await?;
        return Ok(Stored { version_id, expected: b64(&digest) });
    }
    // Parts already stored: kept if the file still holds what they hold.
    if let Some(r) = resume {
        let mut kept = r.parts.iter().enumerate().all(|(i, p)| p.number == i as i32 + 1);
        for p in &r.parts {
            if !kept {
                break;
            }
            let (_, digest) = reader.next()?;
            kept = b64(&digest) == p.sha256;
            progress.parts.push(p.clone());
            progress.digests.push(digest);
        }
        if kept {
            progress.upload_id = Some(r.upload_id);
            progress.resumed = progress.parts.len();
        } else {
            target.abort(&r.upload_id).await;
            *progress = Progress::new();
            reader.restart()?;
        }
    }
    let mut gone_once = false;
    loop {
        let id = match &progress.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = target.create().await?;
                progress.upload_id = Some(id.clone());
                id
            }
        };
        let mut failed = None;
        while (progress.parts.len() as u64) * part_size < size {
            let number = progress.parts.len() as i32 + 1;
            let (bytes, digest) = reader.next()?;
            match target.part(&id, number, bytes, &digest).await {
                Ok(p) => {
                    progress.parts.push(p);
                    progress.digests.push(digest);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            // The store no longer knows the upload (aborted, expired): once, from the start.
            Some(e) if e.upload_gone() && !gone_once => {
                gone_once = true;
                *progress = Progress::new();
                reader.restart()?;
            }
            Some(e) => return Err(e),
            None => break,
        }
    }
    check_whole(bundle, &reader.sha256())?;
    match target.complete(progress).await {
        // Completing an upload resumed from a record can fail for that upload alone (aborted, expired by a
        // lifecycle rule): once more, from the start, rather than keeping a resume that can never complete.
        Err(_) if progress.resumed > 0 => {
            if let Some(id) = progress.upload_id.take() {
                target.abort(&id).await;
            }
            *progress = Progress::new();
            Box::pin(from_file_into(target, bundle, part_size, None, progress)).await
        }
        r => r,
    }
}

/// The file read for the upload must be the bundle its SHA-256 says: a bundle changed on disk is not stored as
/// if it were the evidence (`preserve verify` tells what changed).
fn check_whole(bundle: &Bundle<'_>, read: &str) -> Result<(), StoreError> {
    if read == bundle.sha256 {
        return Ok(());
    }
    Err(StoreError::new(
        "upload",
        bundle.archive.display().to_string(),
        format!(
            "the archive on disk has SHA-256 {read}, not {} as written: it changed since, and is not uploaded (run \
             `preserve verify` on it)",
            bundle.sha256
        ),
    ))
}

/// After the archive: an object already at the key is accepted only when it is this archive; then the read-back,
/// the custody entry, the side files and the record.
async fn settle(
    target: &Target,
    bundle: &Bundle<'_>,
    stored: Result<Stored, StoreError>,
    streamed: bool,
    progress: &Progress,
    part_size: u64,
    custody: Option<&dyn Custody>,
) -> UploadRecord {
    // Only an upload that created the object gets a custody entry: a rerun finding its own archive already stored
    // appends nothing, so the custody record it stored before still matches.
    let (stored, created) = match stored {
        Ok(s) => (s, true),
        Err(e) if e.exists() => {
            // Stored before (a rerun after an upload whose record was lost): the same archive, or refused.
            if let Some(id) = &progress.upload_id {
                target.abort(id).await;
            }
            let expected = if progress.digests.len() == 1 && progress.upload_id.is_none() {
                b64(&progress.digests[0])
            } else {
                composite(&progress.digests)
            };
            match read_back(target).await {
                Ok(back) if back.checksum.as_deref().is_some_and(|c| same_checksum(c, &expected)) => {
                    (Stored { version_id: back.version_id, expected }, false)
                }
                _ => {
                    let mut r = failed_record(bundle, Some(target), e.to_string(), None);
                    r.streamed = streamed;
                    write_record(bundle, &r);
                    return r;
                }
            }
        }
        Err(e) => {
            let mut r = failed_record(bundle, Some(target), e.to_string(), progress.resume(part_size));
            r.streamed = streamed;
            write_record(bundle, &r);
            return r;
        }
    };
    let mut record = UploadRecord {
        state: UploadState::Unconfirmed,
        url: target.url.clone(),
        bucket: target.store.bucket().to_string(),
        key: target.key.clone(),
        archive_sha256: bundle.sha256.to_string(),
        archive_bytes: bundle.bytes,
        streamed,
        expected_checksum: stored.expected.clone(),
        stored_checksum: None,
        version_id: stored.version_id.clone(),
        lock: None,
        side_files: Vec::new(),
        error: None,
        resume: None,
        resumed_parts: progress.resumed,
        attempts: 1,
        at: jiff::Timestamp::now(),
    };
    confirm(target, &mut record).await;
    if record.state != UploadState::Confirmed && created && lock_missing(target, &record) {
        // Some stores keep a multipart object without the lock its upload was created with (moto does): the lock
        // is then set on the stored version itself, and read back again.
        if let Err(e) = lock_version(target, record.version_id.as_deref()).await {
            record.error = Some(format!(
                "{}; setting it on the stored version failed too: {e}",
                record.error.as_deref().unwrap_or("")
            ));
        } else {
            record.error = None;
            confirm(target, &mut record).await;
        }
    }
    if let Some(c) = custody.filter(|_| created) {
        let note = format!(
            "{} version {} checksum {}{}",
            record.url,
            record.version_id.as_deref().unwrap_or("none"),
            record.stored_checksum.as_deref().unwrap_or("not read back"),
            record.lock.as_ref().map_or(String::new(), |l| format!(
                " lock {} until {}{}",
                l.mode.as_deref().unwrap_or("none"),
                l.retain_until.as_deref().unwrap_or("-"),
                if l.legal_hold { " legal hold" } else { "" }
            ))
        );
        if let Err(why) = c.uploaded(bundle.archive, bundle.sha256, &note) {
            record.error = Some(format!("no custody entry for the upload: {why}"));
        }
    }
    for name in super::side_file_names(bundle.id, bundle.encrypted) {
        if let Some(side) = put_side(target, bundle, &name).await {
            if side.error.is_some() && record.state == UploadState::Confirmed {
                record.state = UploadState::Unconfirmed;
                record.error = Some(format!("side file {name} not stored: {}", side.error.as_deref().unwrap_or("")));
            }
            record.side_files.push(side);
        }
    }
    write_record(bundle, &record);
    record
}

/// What the store says of the archive's object.
struct Back {
    version_id: Option<String>,
    checksum: Option<String>,
    lock: LockRecord,
}

async fn read_back(target: &Target) -> Result<Back, StoreError> {
    let head = target
        .store
        .client()
        .head_object()
        .bucket(target.store.bucket())
        .key(&target.key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .map_err(|e| StoreError::from_sdk("read back", &target.url, &e))?;
    let mut checksum = head.checksum_sha256.clone();
    if checksum.is_none() {
        // Some stores give checksums only through GetObjectAttributes.
        if let Ok(attrs) = target
            .store
            .client()
            .get_object_attributes()
            .bucket(target.store.bucket())
            .key(&target.key)
            .object_attributes(aws_sdk_s3::types::ObjectAttributes::Checksum)
            .object_attributes(aws_sdk_s3::types::ObjectAttributes::ObjectParts)
            .send()
            .await
        {
            let parts = attrs.object_parts.as_ref().and_then(|p| p.total_parts_count);
            checksum = attrs.checksum.and_then(|c| c.checksum_sha256).map(|c| match parts {
                Some(n) if n > 0 && !c.contains('-') => format!("{c}-{n}"),
                _ => c,
            });
        }
    }
    let lock = LockRecord {
        mode: head.object_lock_mode.map(|m| m.as_str().to_string()),
        retain_until: head.object_lock_retain_until_date.and_then(|d| {
            jiff::Timestamp::from_second(d.secs()).ok().map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        }),
        legal_hold: head.object_lock_legal_hold_status.is_some_and(|h| h == ObjectLockLegalHoldStatus::On),
    };
    Ok(Back { version_id: head.version_id, checksum, lock })
}

/// S3 reports a multipart object's checksum as `<base64>-<parts>`; some stores leave the count off.
fn same_checksum(stored: &str, expected: &str) -> bool {
    let split = |c: &str| match c.rsplit_once('-') {
        Some((b, n)) if n.bytes().all(|d| d.is_ascii_digit()) => (b.to_string(), Some(n.to_string())),
        _ => (c.to_string(), None),
    };
    let ((sb, sn), (eb, en)) = (split(stored), split(expected));
    sb == eb && (sn.is_none() || sn == en)
}

/// Reads the archive's checksum, version and lock back, and calls the copy confirmed only when they are what was
/// sent and asked for.
async fn confirm(target: &Target, record: &mut UploadRecord) {
    let back = match read_back(target).await {
        Ok(b) => b,
        Err(e) => {
            record.error = Some(e.to_string());
            return;
        }
    };
    record.stored_checksum = back.checksum.clone();
    if record.version_id.is_none() {
        record.version_id = back.version_id.clone();
    }
    let lock = target.store.settings.lock.as_ref();
    record.lock = lock.map(|_| back.lock.clone());
    let problem = match &back.checksum {
        None => Some("the store gives no SHA-256 checksum back for the object, so the copy cannot be confirmed".into()),
        Some(c) if !same_checksum(c, &record.expected_checksum) => Some(format!(
            "the store holds checksum {c}, not {} as sent: the stored object is not this archive",
            record.expected_checksum
        )),
        Some(_) => None,
    }
    .or_else(|| {
        let l = lock?;
        if let Some(mode) = &l.mode
            && back.lock.mode.as_deref() != Some(mode.as_str())
        {
            return Some(format!(
                "Object Lock {mode} was asked for, and the store reports {}: the copy is not locked",
                back.lock.mode.as_deref().unwrap_or("none")
            ));
        }
        if l.mode.is_some() && back.lock.retain_until.is_none() {
            return Some("the store reports no retain-until date: the copy is not locked".into());
        }
        if l.legal_hold && !back.lock.legal_hold {
            return Some("a legal hold was asked for, and the store reports none".into());
        }
        None
    });
    match problem {
        None => record.state = UploadState::Confirmed,
        Some(p) => record.error = Some(p),
    }
}

/// Whether the copy is unconfirmed only for its lock: the checksum matched, the lock read back is not the one asked.
fn lock_missing(target: &Target, record: &UploadRecord) -> bool {
    let Some(asked) = target.store.settings.lock.as_ref() else { return false };
    let checksum_ok = record.stored_checksum.as_deref().is_some_and(|c| same_checksum(c, &record.expected_checksum));
    let got = record.lock.clone().unwrap_or_default();
    checksum_ok
        && (got.mode != asked.mode
            || (asked.mode.is_some() && got.retain_until.is_none())
            || got.legal_hold != asked.legal_hold)
}

/// Sets the configured retention and legal hold on the stored version of the archive.
async fn lock_version(target: &Target, version_id: Option<&str>) -> Result<(), StoreError> {
    let (mode, hold) = target.lock();
    let client = target.store.client();
    if let Some(mode) = mode {
        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
            .mode(aws_sdk_s3::types::ObjectLockRetentionMode::from(mode.as_str()))
            .set_retain_until_date(target.retain_until)
            .build();
        client
            .put_object_retention()
            .bucket(target.store.bucket())
            .key(&target.key)
            .set_version_id(version_id.map(String::from))
            .retention(retention)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("lock", &target.url, &e))?;
    }
    if let Some(hold) = hold {
        let hold = aws_sdk_s3::types::ObjectLockLegalHold::builder().status(hold).build();
        client
            .put_object_legal_hold()
            .bucket(target.store.bucket())
            .key(&target.key)
            .set_version_id(version_id.map(String::from))
            .legal_hold(hold)
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("lock", &target.url, &e))?;
    }
    Ok(())
}

/// Puts one side file (absent ones are skipped). An object already there with the same bytes is accepted.
async fn put_side(target: &Target, bundle: &Bundle<'_>, name: &str) -> Option<SideObject> {
    let path = bundle.archive.with_file_name(name);
    // Side files are small and bounded (a custody record is the largest, 16 MiB); read without following links.
    let bytes = match crate::bundle::bounds::read_side(&path, 16 << 20, "") {
        Ok(crate::bundle::bounds::Side::Absent) => return None,
        Ok(crate::bundle::bounds::Side::Read(b)) => b,
        Ok(crate::bundle::bounds::Side::Unread(why)) => {
            let t = target.named(name);
            return Some(SideObject { name: name.into(), key: t.key, version_id: None, error: Some(why.to_string()) });
        }
        Err(e) => {
            let t = target.named(name);
            return Some(SideObject { name: name.into(), key: t.key, version_id: None, error: Some(e.to_string()) });
        }
    };
    let t = target.named(name);
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let (version_id, error) = match t.put(Bytes::from(bytes), &digest).await {
        Ok(v) => (v, None),
        Err(e) if e.exists() => match read_back(&t).await {
            Ok(b) if b.checksum.as_deref() == Some(b64(&digest).as_str()) => (b.version_id, None),
            _ => (None, Some(e.to_string())),
        },
        Err(e) => (None, Some(e.to_string())),
    };
    Some(SideObject { name: name.into(), key: t.key, version_id, error })
}

fn failed_record(bundle: &Bundle<'_>, target: Option<&Target>, error: String, resume: Option<Resume>) -> UploadRecord {
    let name = crate::bundle::archive_name(bundle.id, bundle.encrypted);
    UploadRecord {
        state: UploadState::Failed,
        url: target.map_or(name.clone(), |t| t.url.clone()),
        bucket: target.map(|t| t.store.bucket().to_string()).unwrap_or_default(),
        key: target.map_or(name, |t| t.key.clone()),
        archive_sha256: bundle.sha256.to_string(),
        archive_bytes: bundle.bytes,
        streamed: false,
        expected_checksum: String::new(),
        stored_checksum: None,
        version_id: None,
        lock: None,
        side_files: Vec::new(),
        error: Some(error),
        resume,
        resumed_parts: 0,
        attempts: 1,
        at: jiff::Timestamp::now(),
    }
}

/// Writes `<id>.upload.json` beside the bundle, whole or not at all. A record that cannot be written leaves the
/// bundle counted as not uploaded, which is the safe side.
fn write_record(bundle: &Bundle<'_>, record: &UploadRecord) {
    let name = format!("{}.upload.json", bundle.id);
    let Ok(json) = serde_json::to_vec_pretty(record) else { return };
    if let Ok((dir_name, dir)) = bundle.out.private_unique(&format!(".{}-upload", bundle.id), ".staging") {
        let _ = dir.write_into(bundle.out, &name, &json);
        let _ = bundle.out.remove_private(&dir_name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_compare_with_and_without_the_part_count() {
        assert!(same_checksum("abc=-3", "abc=-3"));
        assert!(same_checksum("abc=", "abc=-3"));
        assert!(!same_checksum("abc=-2", "abc=-3"));
        assert!(!same_checksum("abd=-3", "abc=-3"));
        assert!(same_checksum("abc=", "abc="));
    }
}

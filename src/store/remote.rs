//! Bundles read back from the store: `preserve verify s3://bucket/key` streams the archive from the bucket into the
//! same checks as a file (its side files fetched first, bounded), and `preserve list s3://bucket/prefix` lists the
//! bundles there with their profile, time, status, size, lock and seal.

use std::{io::Write, path::Path, sync::Arc};

use aws_sdk_s3::types::ObjectLockLegalHoldStatus;
use serde::Serialize;

use super::{Store, StoreError, record::LockRecord};
use crate::{
    bundle::outdir::PrivateDir,
    config::{S3Location, StoreSettings},
};

/// A side file is fetched only up to this size (the largest, a custody record, is bounded at 16 MiB when read).
const SIDE_LIMIT: u64 = 16 << 20;

/// `s3://bucket/key` of one object.
#[derive(Debug, Clone)]
pub struct ObjectUrl {
    pub bucket: String,
    pub key: String,
}

impl ObjectUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let loc = S3Location::parse(url).map_err(|e| e.to_string())?;
        if loc.prefix.is_empty() {
            return Err(format!("`{url}` names a bucket, not an object (s3://bucket/key)"));
        }
        Ok(Self { bucket: loc.bucket, key: loc.prefix })
    }

    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The object's name (the key's last part).
    pub fn name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }

    fn sibling(&self, name: &str) -> String {
        match self.key.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{name}"),
            None => name.to_string(),
        }
    }
}

/// How to reach `bucket`: the site's `[store]` (endpoint, region, addressing, profile, attempts) for it, else the
/// AWS defaults (`AWS_ENDPOINT_URL`, `AWS_REGION` and the credentials chain apply as the SDK reads them).
pub fn settings_for(site: Option<StoreSettings>, bucket: &str) -> StoreSettings {
    let location = S3Location { bucket: bucket.to_string(), prefix: String::new() };
    match site {
        Some(s) => StoreSettings { location, ..s },
        None => StoreSettings {
            location,
            endpoint: None,
            region: None,
            path_style: false,
            profile: None,
            part_size: crate::config::MIN_PART_SIZE,
            lock: None,
            max_attempts: 5,
            retry_every: jiff::SignedDuration::from_mins(1),
        },
    }
}

/// Fetches the side files of the archive at `object` that the store holds into `dir`, each bounded; those absent
/// are left absent, as they would be beside a file.
pub async fn fetch_side_files(store: &Store, object: &ObjectUrl, dir: &PrivateDir) -> Result<Vec<String>, StoreError> {
    let Some((id, encrypted)) = crate::bundle::split_archive_name(object.name()) else {
        return Err(StoreError::new(
            "verify",
            object.url(),
            "not a bundle's name (`<id>.tar.zst` or `<id>.tar.zst.age`)",
        ));
    };
    let mut fetched = Vec::new();
    for name in super::side_file_names(id, encrypted) {
        let key = object.sibling(&name);
        let url = format!("s3://{}/{key}", object.bucket);
        let Some(bytes) = get_bounded(store, &object.bucket, &key, SIDE_LIMIT).await? else { continue };
        let mut f = dir.create_file(&name).map_err(|e| StoreError::new("keep", &url, e.to_string()))?;
        f.write_all(&bytes).map_err(|e| StoreError::new("keep", &url, e.to_string()))?;
        fetched.push(name);
    }
    Ok(fetched)
}

/// An object's first `limit` bytes (a ranged GET); `None` when there is no such object. A longer object is
/// refused: a side file that large is not one of ours.
async fn get_bounded(store: &Store, bucket: &str, key: &str, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let url = format!("s3://{bucket}/{key}");
    let got = store.client().get_object().bucket(bucket).key(key).range(format!("bytes=0-{limit}")).send().await;
    let out = match got {
        Ok(o) => o,
        Err(e) => {
            let e2 = StoreError::from_sdk("read", &url, &e);
            if matches!(e2.code.as_deref(), Some("NoSuchKey" | "NotFound"))
                || e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
            {
                return Ok(None);
            }
            // An empty object answers a range with 416.
            if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) {
                return Ok(Some(Vec::new()));
            }
            return Err(e2);
        }
    };
    let over = || StoreError::new("read", &url, format!("over the {limit}-byte bound of a side file; not read"));
    // A store that ignores the range is read no further than the bound either: its length first, then the bytes.
    if out.content_length.is_some_and(|n| n as u64 > limit) {
        return Err(over());
    }
    let mut bytes = Vec::new();
    let body = tokio::io::AsyncReadExt::take(out.body.into_async_read(), limit + 1);
    tokio::io::AsyncReadExt::read_to_end(&mut { body }, &mut bytes)
        .await
        .map_err(|e| StoreError::new("read", &url, e.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(over());
    }
    Ok(Some(bytes))
}

/// The archive's body, to be read as a stream, and its length.
pub async fn open_archive(
    store: &Store,
    object: &ObjectUrl,
) -> Result<(aws_sdk_s3::primitives::ByteStream, u64), StoreError> {
    let out = store
        .client()
        .get_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .send()
        .await
        .map_err(|e| StoreError::from_sdk("read", object.url(), &e))?;
    let len = out.content_length.unwrap_or_default().max(0) as u64;
    Ok((out.body, len))
}

/// A bundle in the store, as `preserve list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub bundle_id: String,
    pub url: String,
    pub encrypted: bool,
    pub bytes: u64,
    pub stored_at: Option<String>,
    pub profile: Option<String>,
    pub created_at: Option<String>,
    pub status: Option<String>,
    pub lock: LockRecord,
    pub version_id: Option<String>,
    pub signed: bool,
    pub timestamped: bool,
    pub custody: bool,
    /// Why something above could not be read.
    pub note: Option<String>,
}

/// Lists the bundles under `location`.
pub async fn list(site: Option<StoreSettings>, location: &S3Location) -> Result<Vec<Listed>, StoreError> {
    let store = Store::connect(Arc::new(settings_for(site, &location.bucket))).await;
    let prefix = if location.prefix.is_empty() { String::new() } else { format!("{}/", location.prefix) };
    let mut keys: Vec<(String, u64, Option<String>)> = Vec::new();
    let mut token = None;
    loop {
        let out = store
            .client()
            .list_objects_v2()
            .bucket(&location.bucket)
            .prefix(&prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| StoreError::from_sdk("list", location.to_string(), &e))?;
        for o in out.contents() {
            if let Some(k) = o.key() {
                let at =
                    o.last_modified().and_then(|d| jiff::Timestamp::from_second(d.secs()).ok()).map(|t| t.to_string());
                keys.push((k.to_string(), o.size().unwrap_or_default().max(0) as u64, at));
            }
        }
        match out.next_continuation_token() {
            Some(t) if out.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
            _ => break,
        }
    }
    let names: std::collections::HashSet<&str> = keys.iter().map(|(k, _, _)| k.as_str()).collect();
    let mut listed = Vec::new();
    for (key, bytes, stored_at) in &keys {
        let object = ObjectUrl { bucket: location.bucket.clone(), key: key.clone() };
        let Some((id, encrypted)) = crate::bundle::split_archive_name(object.name()) else { continue };
        let has = |name: &str| names.contains(object.sibling(name).as_str());
        let archive = crate::bundle::archive_name(id, encrypted);
        let mut item = Listed {
            bundle_id: id.to_string(),
            url: object.url(),
            encrypted,
            bytes: *bytes,
            stored_at: stored_at.clone(),
            profile: None,
            created_at: None,
            status: None,
            lock: LockRecord::default(),
            version_id: None,
            signed: has(&format!("{archive}.sig")),
            timestamped: has(&format!("{archive}.tsr")),
            custody: has(&format!("{id}.custody.jsonl")),
            note: None,
        };
        let mut notes = Vec::new();
        match store.client().head_object().bucket(&location.bucket).key(key).send().await {
            Ok(h) => {
                item.version_id = h.version_id.clone();
                item.lock = LockRecord {
                    mode: h.object_lock_mode.map(|m| m.as_str().to_string()),
                    retain_until: h
                        .object_lock_retain_until_date
                        .and_then(|d| jiff::Timestamp::from_second(d.secs()).ok())
                        .map(|t| t.to_string()),
                    legal_hold: h.object_lock_legal_hold_status == Some(ObjectLockLegalHoldStatus::On),
                };
            }
            Err(e) => notes.push(StoreError::from_sdk("read", object.url(), &e).why),
        }
        match get_bounded(&store, &location.bucket, &object.sibling(&format!("{id}.manifest.json")), 1 << 20).await {
            Ok(Some(m)) => match serde_json::from_slice::<serde_json::Value>(&m) {
                Ok(v) => {
                    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(crate::bundle::bounds::printable);
                    (item.profile, item.created_at, item.status) =
                        (text("profile"), text("created_at"), text("status"));
                }
                Err(_) => notes.push("its .manifest.json is not JSON".into()),
            },
            Ok(None) => notes.push("no .manifest.json beside it".into()),
            Err(e) => notes.push(e.why),
        }
        item.note = (!notes.is_empty()).then(|| notes.join("; "));
        listed.push(item);
    }
    listed.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.bundle_id.cmp(&b.bundle_id)));
    Ok(listed)
}

/// Verifies the bundle at `object`: its side files fetched into a private directory under `scratch`, its archive
/// streamed from the store through the checks a file gets. The report names the object by its URL.
pub async fn verify(
    site: Option<StoreSettings>,
    object: &ObjectUrl,
    scratch: &Path,
    limits: crate::bundle::bounds::Limits,
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
) -> Result<(crate::bundle::verify::Report, PrivateDirGuard), String> {
    let store = Store::connect(Arc::new(settings_for(site, &object.bucket))).await;
    let out = crate::bundle::outdir::OutDir::open(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let (name, dir) =
        out.private_unique(".preserve-verify", ".staging").map_err(|e| format!("{}: {e}", scratch.display()))?;
    let guard = PrivateDirGuard { out, name, dir: Arc::new(dir) };
    fetch_side_files(&store, object, &guard.dir).await.map_err(|e| e.to_string())?;
    let (body, len) = open_archive(&store, object).await.map_err(|e| e.to_string())?;
    let archive = guard.dir.path().join(object.name());
    let reader = tokio_util::io::SyncIoBridge::new(body.into_async_read());
    let report = tokio::task::spawn_blocking(move || {
        crate::bundle::verify::verify_stream(
            &archive,
            std::io::BufReader::with_capacity(1 << 20, reader),
            len,
            &limits,
            &identities,
        )
    })
    .await
    .map_err(|e| format!("verify stopped: {e}"))?
    .map_err(|e| e.to_string())?;
    Ok((report, guard))
}

/// The private directory a remote verify keeps the side files in; removed when dropped.
pub struct PrivateDirGuard {
    out: crate::bundle::outdir::OutDir,
    name: String,
    pub dir: Arc<PrivateDir>,
}

impl Drop for PrivateDirGuard {
    fn drop(&mut self) {
        let _ = self.out.remove_private(&self.name);
    }
}

//! Retention of bundles in the output directory: keep at most N bundles and B bytes, deleting the oldest first,
//! never a bundle still being written and never one younger than the minimum age (nobody has copied it yet).
//! Only finished bundles (`preserve-*.tar.zst` with their side files) are considered; staging directories and
//! `.partial` archives are never touched. With a `[store]`, a bundle whose remote copy is not confirmed (its
//! `<id>.upload.json` says its checksum was read back from the store) is never deleted either: it may be the only
//! copy.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use crate::{
    bundle::writer::{bundle_paths, seal_file_names},
    config::Retention,
};

/// A finished bundle on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    pub id: String,
    /// Archive and side files together.
    pub bytes: u64,
    pub modified: SystemTime,
    /// Its upload record says the remote copy is confirmed.
    pub stored: bool,
    /// `<id>.tar.zst.age`.
    pub encrypted: bool,
}

/// A bundle deleted by retention, for the log.
#[derive(Debug)]
pub struct Deleted {
    pub bundle: BundleFile,
    pub why: String,
}

/// What interrupted runs left in `out_dir` (a staging directory, a `.partial` archive) and its size. Retention
/// never deletes these: a staging directory holds what a killed snapshot had collected, which may be the only copy
/// of that evidence. The sidecar names them at start so an operator can rescue or remove them.
pub fn leftovers(out_dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(out_dir) else { return Vec::new() };
    let mut found: Vec<(PathBuf, u64)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with(".preserve-") && name.ends_with(".staging")) || name.ends_with(".partial")
        })
        .map(|e| (e.path(), size_of(&e.path())))
        .collect();
    found.sort();
    found
}

/// Bytes below `path`, not following links.
fn size_of(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            std::fs::read_dir(path).into_iter().flatten().filter_map(Result::ok).map(|e| size_of(&e.path())).sum()
        }
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// The finished bundles in `out_dir`.
pub fn list(out_dir: &Path) -> std::io::Result<Vec<BundleFile>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(out_dir)?.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((id, encrypted)) =
            crate::bundle::split_archive_name(&name).filter(|(id, _)| id.starts_with("preserve-"))
        else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let side: u64 =
            side_files(out_dir, id, encrypted).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
        let stored = crate::store::record::read(&out_dir.join(upload_record_name(id)))
            .ok()
            .flatten()
            .is_some_and(|r| r.confirmed() && r.archive_bytes == meta.len());
        out.push(BundleFile {
            id: id.to_string(),
            bytes: meta.len() + side,
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            stored,
            encrypted,
        });
    }
    Ok(out)
}

/// A bundle's side files: `.sha256`, `.manifest.json`, the seal's and the upload record.
fn side_files(out_dir: &Path, id: &str, encrypted: bool) -> Vec<PathBuf> {
    let (_, sha, manifest) = bundle_paths(out_dir, id, encrypted);
    let mut files = vec![sha, manifest];
    files.extend(seal_file_names(id, encrypted).map(|n| out_dir.join(n)));
    files.push(out_dir.join(upload_record_name(id)));
    files
}

fn upload_record_name(id: &str) -> String {
    format!("{id}.upload.json")
}

/// The finished bundles of `out_dir` whose remote copy is not confirmed, oldest first, but those in progress.
pub fn unconfirmed(out_dir: &Path, in_progress: &HashSet<String>) -> Vec<PathBuf> {
    let mut pending: Vec<BundleFile> =
        list(out_dir).unwrap_or_default().into_iter().filter(|b| !b.stored && !in_progress.contains(&b.id)).collect();
    pending.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.id.cmp(&b.id)));
    pending.into_iter().map(|b| archive_path(out_dir, &b.id, b.encrypted)).collect()
}

/// Which bundles to delete: walking from the newest, every bundle past `max_bundles` or past `max_bytes` goes,
/// unless it is in progress, younger than `min_age`, or (`require_stored`) not confirmed in the store: it is then
/// kept and still counted.
pub fn select(
    mut bundles: Vec<BundleFile>,
    policy: Retention,
    now: SystemTime,
    in_progress: &HashSet<String>,
    require_stored: bool,
) -> Vec<Deleted> {
    bundles.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| b.id.cmp(&a.id)));
    let min_age = policy.min_age.unsigned_abs();
    let (mut count, mut bytes) = (0usize, 0u64);
    let mut out = Vec::new();
    for b in bundles {
        let young = now.duration_since(b.modified).unwrap_or(Duration::ZERO) < min_age;
        let over_count = count + 1 > policy.max_bundles;
        let over_bytes = bytes + b.bytes > policy.max_bytes;
        let only_copy = require_stored && !b.stored;
        if (over_count || over_bytes) && !young && !in_progress.contains(&b.id) && !only_copy {
            let why = if over_count {
                format!("more than {} bundles", policy.max_bundles)
            } else {
                format!("more than {} bytes of bundles", policy.max_bytes)
            };
            out.push(Deleted { bundle: b, why });
        } else {
            count += 1;
            bytes += b.bytes;
        }
    }
    out
}

/// Applies the policy to `out_dir`: deletes what [`select`] chose (archive first, so a half-deleted bundle never
/// looks finished) and returns what went.
pub fn prune(
    out_dir: &Path,
    policy: Retention,
    in_progress: &HashSet<String>,
    require_stored: bool,
) -> std::io::Result<Vec<Deleted>> {
    let chosen = select(list(out_dir)?, policy, SystemTime::now(), in_progress, require_stored);
    let mut deleted = Vec::with_capacity(chosen.len());
    for d in chosen {
        let archive = archive_path(out_dir, &d.bundle.id, d.bundle.encrypted);
        if let Err(e) = std::fs::remove_file(&archive) {
            tracing::warn!(archive = %archive.display(), "retention: cannot delete {}: {e}", archive.display());
            continue;
        }
        for p in side_files(out_dir, &d.bundle.id, d.bundle.encrypted) {
            let _ = std::fs::remove_file(p);
        }
        deleted.push(d);
    }
    Ok(deleted)
}

/// Where a bundle of `id` lives, for the record of a run.
pub fn archive_path(out_dir: &Path, id: &str, encrypted: bool) -> PathBuf {
    bundle_paths(out_dir, id, encrypted).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn bundle(id: &str, age_s: u64, bytes: u64, now: SystemTime) -> BundleFile {
        BundleFile { id: id.into(), bytes, modified: now - Duration::from_secs(age_s), stored: false, encrypted: false }
    }

    fn ids(d: &[Deleted]) -> Vec<&str> {
        d.iter().map(|d| d.bundle.id.as_str()).collect()
    }

    #[test]
    fn oldest_go_first_within_count_and_bytes() {
        let now = SystemTime::now();
        let all = vec![
            bundle("a", 500, 10, now),
            bundle("b", 400, 10, now),
            bundle("c", 300, 10, now),
            bundle("d", 200, 10, now),
        ];
        let p = Retention { max_bundles: 2, max_bytes: u64::MAX, min_age: SignedDuration::ZERO };
        assert_eq!(ids(&select(all.clone(), p, now, &HashSet::new(), false)), ["b", "a"]);
        let p = Retention { max_bundles: 10, max_bytes: 25, min_age: SignedDuration::ZERO };
        assert_eq!(ids(&select(all, p, now, &HashSet::new(), false)), ["b", "a"]);
    }

    #[test]
    fn young_and_in_progress_bundles_are_never_deleted() {
        let now = SystemTime::now();
        let all = vec![bundle("old", 7200, 10, now), bundle("writing", 7000, 10, now), bundle("young", 60, 10, now)];
        let p = Retention { max_bundles: 0, max_bytes: 0, min_age: SignedDuration::from_mins(10) };
        let writing = HashSet::from(["writing".to_string()]);
        assert_eq!(ids(&select(all, p, now, &writing, false)), ["old"]);
    }

    #[test]
    fn with_a_store_only_bundles_confirmed_there_are_deleted() {
        let now = SystemTime::now();
        let mut stored = bundle("stored", 7200, 10, now);
        stored.stored = true;
        let all = vec![bundle("not-stored", 9000, 10, now), stored];
        let p = Retention { max_bundles: 0, max_bytes: 0, min_age: SignedDuration::ZERO };
        assert_eq!(ids(&select(all.clone(), p, now, &HashSet::new(), true)), ["stored"]);
        assert_eq!(ids(&select(all, p, now, &HashSet::new(), false)), ["stored", "not-stored"]);
    }
}

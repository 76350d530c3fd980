//! Retention of bundles in the output directory: keep at most N bundles and B bytes, deleting the oldest first,
//! never a bundle still being written and never one younger than the minimum age (nobody has copied it yet).
//! Only finished bundles (`preserve-*.tar.zst` with their side files) are considered; staging directories and
//! `.partial` archives are never touched.

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
        let Some(id) = name.strip_suffix(".tar.zst").filter(|id| id.starts_with("preserve-")) else { continue };
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let (_, sha, manifest) = bundle_paths(out_dir, id);
        let seal = seal_file_names(id).map(|n| out_dir.join(n));
        let side: u64 =
            [sha, manifest].iter().chain(&seal).filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
        out.push(BundleFile {
            id: id.to_string(),
            bytes: meta.len() + side,
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(out)
}

/// Which bundles to delete: walking from the newest, every bundle past `max_bundles` or past `max_bytes` goes,
/// unless it is in progress or younger than `min_age` (it is then kept and still counted).
pub fn select(
    mut bundles: Vec<BundleFile>,
    policy: Retention,
    now: SystemTime,
    in_progress: &HashSet<String>,
) -> Vec<Deleted> {
    bundles.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| b.id.cmp(&a.id)));
    let min_age = policy.min_age.unsigned_abs();
    let (mut count, mut bytes) = (0usize, 0u64);
    let mut out = Vec::new();
    for b in bundles {
        let young = now.duration_since(b.modified).unwrap_or(Duration::ZERO) < min_age;
        let over_count = count + 1 > policy.max_bundles;
        let over_bytes = bytes + b.bytes > policy.max_bytes;
        if (over_count || over_bytes) && !young && !in_progress.contains(&b.id) {
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
pub fn prune(out_dir: &Path, policy: Retention, in_progress: &HashSet<String>) -> std::io::Result<Vec<Deleted>> {
    let chosen = select(list(out_dir)?, policy, SystemTime::now(), in_progress);
    let mut deleted = Vec::with_capacity(chosen.len());
    for d in chosen {
        let (archive, sha, manifest) = bundle_paths(out_dir, &d.bundle.id);
        if let Err(e) = std::fs::remove_file(&archive) {
            tracing::warn!(archive = %archive.display(), "retention: cannot delete {}: {e}", archive.display());
            continue;
        }
        for p in [sha, manifest].into_iter().chain(seal_file_names(&d.bundle.id).map(|n| out_dir.join(n))) {
            let _ = std::fs::remove_file(p);
        }
        deleted.push(d);
    }
    Ok(deleted)
}

/// Where a bundle of `id` lives, for the record of a run.
pub fn archive_path(out_dir: &Path, id: &str) -> PathBuf {
    bundle_paths(out_dir, id).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn bundle(id: &str, age_s: u64, bytes: u64, now: SystemTime) -> BundleFile {
        BundleFile { id: id.into(), bytes, modified: now - Duration::from_secs(age_s) }
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
        assert_eq!(ids(&select(all.clone(), p, now, &HashSet::new())), ["b", "a"]);
        let p = Retention { max_bundles: 10, max_bytes: 25, min_age: SignedDuration::ZERO };
        assert_eq!(ids(&select(all, p, now, &HashSet::new())), ["b", "a"]);
    }

    #[test]
    fn young_and_in_progress_bundles_are_never_deleted() {
        let now = SystemTime::now();
        let all = vec![bundle("old", 7200, 10, now), bundle("writing", 7000, 10, now), bundle("young", 60, 10, now)];
        let p = Retention { max_bundles: 0, max_bytes: 0, min_age: SignedDuration::from_mins(10) };
        let writing = HashSet::from(["writing".to_string()]);
        assert_eq!(ids(&select(all, p, now, &writing)), ["old"]);
    }
}

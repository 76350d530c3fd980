//! The `previous` baseline: the same collector's current side in the newest earlier bundle of the output directory.
//! Bundles are found by their side manifests (`<id>.manifest.json`, small) and the artifacts read by streaming the
//! archive once, stopping as soon as every wanted file was seen; each is checked against its recorded hash.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use jiff::Timestamp;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Text;
use crate::bundle::{
    bounds,
    manifest::{CollectorStatus, RedactionScheme},
    walk,
};

/// Only what is needed of a side manifest, so bundles written by other versions still serve as baselines.
#[derive(Deserialize)]
struct SideManifest {
    bundle_id: String,
    created_at: Timestamp,
    collectors: Vec<SideCollector>,
    /// Absent in bundles written before markers carried fingerprints.
    #[serde(default)]
    redaction: RedactionScheme,
}

#[derive(Deserialize)]
struct SideCollector {
    name: String,
    kind: String,
    status: CollectorStatus,
    #[serde(default)]
    artifacts: Vec<SideArtifact>,
}

#[derive(Deserialize)]
struct SideArtifact {
    path: String,
    sha256: String,
    #[serde(default)]
    truncated: bool,
}

/// An earlier bundle holding this collector's current side.
#[derive(Debug)]
pub struct Previous {
    pub bundle_id: String,
    archive: PathBuf,
    /// Item name -> the sha256 recorded for `current/<name>`.
    pub items: BTreeMap<String, String>,
    /// Item names whose recorded current side was truncated.
    truncated: Vec<String>,
    /// Which key made that bundle's redaction markers.
    pub scheme: RedactionScheme,
}

/// What [`find`] found: the baseline bundle, if any, and the bundle names it passed over because preserve's user
/// did not write them or others could have changed them (on a shared output directory, a planted baseline would
/// hide a change: that is evidence in itself, and is reported).
#[derive(Debug, Default)]
pub struct Found {
    pub previous: Option<Previous>,
    pub not_ours: Vec<String>,
}

/// Whether a file preserve reads back as its own could be: owned by the user preserve runs as, and writable by
/// nobody else.
fn ours(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0
}

/// The newest finished bundle in `out_dir` created before `before` in which `collector` (a `config_diff` collector
/// that did not fail) wrote a current side. Unreadable or foreign files are passed over; bundles that are not
/// preserve's user's own are passed over and named.
pub fn find(out_dir: &Path, collector: &str, before: Timestamp) -> io::Result<Found> {
    let entries = match std::fs::read_dir(out_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::default()),
        Err(e) => return Err(e),
    };
    let prefix = format!("data/{collector}/current/");
    let mut best: Option<(Timestamp, Previous)> = None;
    let mut not_ours = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = file_name.strip_prefix("preserve-").and_then(|_| file_name.strip_suffix(".manifest.json"))
        else {
            continue;
        };
        // The archive is renamed into place last: without it the bundle is unfinished (or was removed).
        let archive = out_dir.join(format!("{id}.tar.zst"));
        let (Ok(side_meta), Ok(archive_meta)) = (entry.metadata(), std::fs::symlink_metadata(&archive)) else {
            continue;
        };
        if !archive_meta.is_file() {
            continue;
        }
        if !ours(&side_meta) || !ours(&archive_meta) {
            not_ours.push(bounds::printable(&format!("{id}.tar.zst")));
            continue;
        }
        // Another user may have planted files here: no link is followed and no size trusted.
        let read = bounds::read_side(&entry.path(), bounds::TAG_FILES_LIMIT, "");
        let Some(m) = read.ok().and_then(|side| match side {
            bounds::Side::Read(b) => serde_json::from_slice::<SideManifest>(&b).ok(),
            _ => None,
        }) else {
            continue;
        };
        if m.bundle_id != id || m.created_at >= before || best.as_ref().is_some_and(|(t, _)| *t >= m.created_at) {
            continue;
        }
        let Some(c) = m
            .collectors
            .iter()
            .find(|c| c.name == collector && c.kind == "config_diff" && c.status != CollectorStatus::Failed)
        else {
            continue;
        };
        let mut items = BTreeMap::new();
        let mut truncated = Vec::new();
        for a in &c.artifacts {
            if let Some(name) = a.path.strip_prefix(&prefix) {
                items.insert(name.to_string(), a.sha256.clone());
                if a.truncated {
                    truncated.push(name.to_string());
                }
            }
        }
        if !items.is_empty() {
            let scheme = m.redaction;
            best = Some((m.created_at, Previous { bundle_id: m.bundle_id, archive, items, truncated, scheme }));
        }
    }
    not_ours.sort();
    Ok(Found { previous: best.map(|(_, p)| p), not_ours })
}

impl Previous {
    /// Reads the current sides of `collector` from the archive, each at most `cap` bytes. An item whose bytes do
    /// not match the recorded hash, or that is missing from the archive, comes back as an error naming why.
    pub fn read(
        &self,
        collector: &str,
        cap: usize,
        cancelled: impl Fn() -> bool,
    ) -> io::Result<BTreeMap<String, Result<Text, String>>> {
        let file = crate::bundle::outdir::open_no_follow(&self.archive)?;
        let meta = file.metadata()?;
        // Checked again on the file opened: it may have been replaced since it was chosen.
        if !meta.is_file() || !ours(&meta) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} was replaced by a file preserve's user did not write", self.archive.display()),
            ));
        }
        let compressed = meta.len();
        // Read within the bounds `verify` keeps: a planted archive costs bounded memory.
        let limits = bounds::Limits::default();
        let budget = bounds::Budget::derive(&limits, compressed, None);
        let prefix = format!("{}/data/{collector}/current/", self.bundle_id);
        let mut found = BTreeMap::new();
        let walked = walk::unzstd(file).and_then(|tar| {
            walk::walk(tar, &limits, &budget, |entry| {
                if cancelled() {
                    return Err(walk::WalkError::Corrupt(io::Error::new(
                        io::ErrorKind::Interrupted,
                        "collection stopped",
                    )));
                }
                let Some(name) = entry.path.strip_prefix(&prefix) else { return Ok(walk::Flow::Continue) };
                let Some(want) = self.items.get(name) else { return Ok(walk::Flow::Continue) };
                let name = name.to_string();
                let mut bytes = Vec::new();
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = entry.data.read(&mut buf).map_err(walk::WalkError::Corrupt)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    let room = cap.saturating_sub(bytes.len());
                    bytes.extend_from_slice(&buf[..n.min(room)]);
                }
                let got = hex::encode(hasher.finalize());
                let text = if got == *want {
                    let truncated = bytes.len() as u64 != entry.size || self.truncated.contains(&name);
                    Ok(Text { bytes, truncated })
                } else {
                    Err(format!("current/{name} in {} does not match the hash its manifest records", self.bundle_id))
                };
                found.insert(name, text);
                Ok(if found.len() == self.items.len() { walk::Flow::Stop } else { walk::Flow::Continue })
            })
        });
        match walked {
            Ok(()) => {}
            Err(walk::WalkError::Corrupt(e)) => return Err(e),
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
        for name in self.items.keys() {
            found
                .entry(name.clone())
                .or_insert_with(|| Err(format!("current/{name} is listed but missing in {}", self.bundle_id)));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(dir: &Path, id: &str, at: &str, status: &str, archive: bool) {
        let m = serde_json::json!({
            "bundle_id": id, "created_at": at, "format": "preserve-bundle/1",
            "collectors": [{ "name": "cfg", "kind": "config_diff", "status": status, "artifacts": [
                { "path": "data/cfg/current/compose.yml", "sha256": "ab", "bytes": 1, "truncated": false },
                { "path": "data/cfg/compose.yml.diff", "sha256": "cd", "bytes": 0, "truncated": false },
            ]}],
        });
        std::fs::write(dir.join(format!("{id}.manifest.json")), m.to_string()).unwrap();
        if archive {
            std::fs::write(dir.join(format!("{id}.tar.zst")), b"").unwrap();
        }
    }

    #[test]
    fn the_newest_finished_bundle_where_the_collector_did_not_fail_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        side(d, "preserve-full-20261101T000000Z-00000001", "2026-11-01T00:00:00Z", "ok", true);
        side(d, "preserve-full-20261102T000000Z-00000002", "2026-11-02T00:00:00Z", "partial", true);
        side(d, "preserve-full-20261103T000000Z-00000003", "2026-11-03T00:00:00Z", "failed", true);
        side(d, "preserve-full-20261104T000000Z-00000004", "2026-11-04T00:00:00Z", "ok", false);
        side(d, "preserve-full-20261106T000000Z-00000006", "2026-11-06T00:00:00Z", "ok", true);
        std::fs::write(d.join("preserve-x.manifest.json"), b"not json").unwrap();
        // Newer, but others could have written them: a neighbour's planted baseline would hide a change.
        let planted = ["preserve-full-20261104T100000Z-00000005", "preserve-full-20261104T110000Z-00000007"];
        side(d, planted[0], "2026-11-04T10:00:00Z", "ok", true);
        side(d, planted[1], "2026-11-04T11:00:00Z", "ok", true);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join(format!("{}.tar.zst", planted[0])), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        std::fs::set_permissions(
            d.join(format!("{}.manifest.json", planted[1])),
            std::fs::Permissions::from_mode(0o620),
        )
        .unwrap();
        let mut others = planted.map(|id| format!("{id}.tar.zst")).to_vec();
        if nix::unistd::geteuid().is_root() {
            // Another user's, with the modes preserve gives its own.
            let id = "preserve-full-20261104T120000Z-00000008";
            side(d, id, "2026-11-04T12:00:00Z", "ok", true);
            let nobody = Some(nix::unistd::Uid::from_raw(65534));
            nix::unistd::chown(&d.join(format!("{id}.manifest.json")), nobody, None).unwrap();
            others.push(format!("{id}.tar.zst"));
        }
        let before: Timestamp = "2026-11-05T00:00:00Z".parse().unwrap();
        let found = find(d, "cfg", before).unwrap();
        let p = found.previous.expect("a baseline");
        assert_eq!(
            p.bundle_id, "preserve-full-20261102T000000Z-00000002",
            "failed, unfinished, later and others' ones are passed over"
        );
        assert_eq!(p.items.keys().collect::<Vec<_>>(), ["compose.yml"], "only the current side is a baseline");
        assert_eq!(found.not_ours, others, "those others wrote or could write are named");
        assert!(find(d, "other", before).unwrap().previous.is_none());
        assert!(find(&d.join("nowhere"), "cfg", before).unwrap().previous.is_none());
    }
}

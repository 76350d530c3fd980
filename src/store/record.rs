//! `<id>.upload.json`: what became of a bundle's upload, beside the bundle. It says whether the remote copy is
//! confirmed (its checksum read back from the store), the object's version id, checksum and Object Lock, each side
//! file's object, and, for an upload that failed midway, what a rerun needs to resume it.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::bundle::bounds::{Side, read_side};

/// A record is small; anything larger beside a bundle is not one of ours.
const RECORD_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    /// The archive and side files are stored and the archive's checksum was read back and matches.
    Confirmed,
    /// Stored, but the store did not give the checksum back (or gave another): not counted as a safe copy.
    Unconfirmed,
    /// Not stored; `error` says why and `resume` how far it got.
    Failed,
}

/// The Object Lock the store reports on the archive's version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub mode: Option<String>,
    pub retain_until: Option<String>,
    pub legal_hold: bool,
}

/// One part already in the store, as a resumed upload needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub number: i32,
    pub etag: String,
    /// Base64 SHA-256 of the part, as sent and as the store checked it.
    pub sha256: String,
}

/// An interrupted multipart upload: the store keeps its parts until it is completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub upload_id: String,
    pub part_size: u64,
    pub parts: Vec<PartRecord>,
}

/// A side file's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideObject {
    pub name: String,
    pub key: String,
    pub version_id: Option<String>,
    /// Why it is not stored, when it is not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub state: UploadState,
    /// `s3://bucket/key` of the archive.
    pub url: String,
    pub bucket: String,
    pub key: String,
    pub archive_sha256: String,
    pub archive_bytes: u64,
    /// Whether the archive went up while it was written (else from the finished file).
    pub streamed: bool,
    /// The checksum the store should hold: the archive's SHA-256 in base64 for a single part, else S3's composite
    /// (`<SHA-256 of the parts' SHA-256s>-<parts>`).
    pub expected_checksum: String,
    /// What the store gave back when asked.
    pub stored_checksum: Option<String>,
    pub version_id: Option<String>,
    pub lock: Option<LockRecord>,
    pub side_files: Vec<SideObject>,
    pub error: Option<String>,
    pub resume: Option<Resume>,
    /// Parts of an interrupted upload that this one kept (resumed) instead of sending again.
    #[serde(default)]
    pub resumed_parts: usize,
    pub attempts: u32,
    pub at: Timestamp,
}

impl UploadRecord {
    pub fn confirmed(&self) -> bool {
        self.state == UploadState::Confirmed
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let lock = self.lock.as_ref().map_or(String::new(), |l| {
            let mut s = String::new();
            if let Some(m) = &l.mode {
                s.push_str(&format!(", {m} until {}", l.retain_until.as_deref().unwrap_or("?")));
            }
            if l.legal_hold {
                s.push_str(", legal hold");
            }
            s
        });
        match self.state {
            UploadState::Confirmed => format!(
                "stored at {} (version {}, checksum {} read back{lock})",
                self.url,
                self.version_id.as_deref().unwrap_or("none"),
                self.stored_checksum.as_deref().unwrap_or("?")
            ),
            UploadState::Unconfirmed => format!(
                "uploaded to {} but NOT confirmed: {}",
                self.url,
                self.error.as_deref().unwrap_or("the checksum was not read back")
            ),
            UploadState::Failed => {
                format!("upload to {} FAILED: {}", self.url, self.error.as_deref().unwrap_or("unknown"))
            }
        }
    }
}

/// Where the record of the bundle at `archive` is.
pub fn path_of(archive: &Path) -> Option<PathBuf> {
    let (id, _) = crate::bundle::archive_id(archive)?;
    Some(archive.with_file_name(format!("{id}.upload.json")))
}

/// Reads a record, bounded and never through a link; `Ok(None)` when there is none.
pub fn read(path: &Path) -> Result<Option<UploadRecord>, String> {
    match read_side(path, RECORD_LIMIT, "") {
        Ok(Side::Absent) => Ok(None),
        Ok(Side::Read(bytes)) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "{}: not an upload record: {}",
                path.display(),
                crate::bundle::bounds::excerpt(e.to_string().as_bytes())
            )
        }),
        Ok(Side::Unread(why)) => Err(format!("{}: {why}", path.display())),
        Err(e) => Err(format!("{}: cannot read: {e}", path.display())),
    }
}

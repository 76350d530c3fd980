//! The custody record, `<bundle-id>.custody.jsonl`: one JSON line per hand the bundle passed through, append-only.
//! Each line is `{"entry":{...},"signature":"-----BEGIN SSH SIGNATURE-----..."}`: the entry names its sequence
//! number, time, action, actor, host, tool, note, the bundle's SHA-256 and the SHA-256 of the previous line, and
//! the signature (sshsig, namespace `preserve-custody`) is over the entry's exact bytes as they stand in the line.
//! Editing, dropping, reordering or inserting a line breaks a signature or a link; [`check`] names the first.

use std::{
    io::{self, Read, Seek, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use ssh_key::{HashAlg, SshSig};

use super::{
    allowed::AllowedSigners,
    signer::{CUSTODY_NAMESPACE, Signer, SignerError},
};

/// A custody record is a short list; one larger than this is refused unread.
pub const FILE_LIMIT: u64 = 16 << 20;
/// One entry (the note included) is at most this long.
pub const LINE_LIMIT: usize = 64 << 10;
/// A note is at most this long.
pub const NOTE_LIMIT: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Sealed,
    Uploaded,
    Copied,
    Verified,
    Transferred,
    Opened,
    Note,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sealed => "sealed",
            Self::Uploaded => "uploaded",
            Self::Copied => "copied",
            Self::Verified => "verified",
            Self::Transferred => "transferred",
            Self::Opened => "opened",
            Self::Note => "note",
        }
    }
}

/// One custody entry, as signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    pub time: Timestamp,
    pub action: Action,
    pub actor: String,
    pub host: String,
    pub tool: String,
    pub note: String,
    pub bundle_sha256: String,
    /// SHA-256 of the previous line (without its newline); `None` on the first.
    pub prev_sha256: Option<String>,
    /// Fingerprint of the key that signs this entry (`SHA256:...`).
    pub key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(borrow)]
    entry: &'a RawValue,
    signature: String,
}

/// What an entry asks to record.
pub struct NewEntry<'a> {
    pub action: Action,
    pub actor: &'a str,
    pub note: &'a str,
    pub bundle_sha256: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {detail}; nothing was appended", path.display())]
    Broken { path: PathBuf, detail: String },
    #[error("{}: larger than {FILE_LIMIT} bytes; not a custody record", path.display())]
    TooLarge { path: PathBuf },
    #[error("the note is longer than {NOTE_LIMIT} bytes")]
    NoteTooLong,
    #[error(transparent)]
    Sign(#[from] SignerError),
}

/// One signed line, without its newline.
pub fn make_line(
    signer: &Signer,
    prev: Option<&[u8]>,
    seq: u64,
    new: &NewEntry,
    host: &str,
) -> Result<Vec<u8>, CustodyError> {
    if new.note.len() > NOTE_LIMIT {
        return Err(CustodyError::NoteTooLong);
    }
    let entry = Entry {
        seq,
        time: Timestamp::now(),
        action: new.action,
        actor: new.actor.to_string(),
        host: host.to_string(),
        tool: format!("{} {}", crate::TOOL_NAME, crate::TOOL_VERSION),
        note: new.note.to_string(),
        bundle_sha256: new.bundle_sha256.to_string(),
        prev_sha256: prev.map(|p| hex::encode(Sha256::digest(p))),
        key: signer.fingerprint(),
    };
    let entry_json = serde_json::to_string(&entry).map_err(|e| SignerError::Sign(e.to_string()))?;
    let signature = signer.sign_sha256(CUSTODY_NAMESPACE, &Sha256::digest(entry_json.as_bytes()).into())?;
    let raw = RawValue::from_string(entry_json).map_err(|e| SignerError::Sign(e.to_string()))?;
    let line = serde_json::to_vec(&Line { entry: &raw, signature }).map_err(|e| SignerError::Sign(e.to_string()))?;
    Ok(line)
}

/// Appends an entry to the custody record at `path` (made when absent), after checking that the record as it
/// stands is whole: a broken chain is never extended. Never follows a link at `path`; holds an exclusive lock
/// while it reads and writes, so two appends cannot interleave.
pub fn append(path: &Path, signer: &Signer, new: &NewEntry, host: &str) -> Result<Entry, CustodyError> {
    let io_err = |source| CustodyError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err)?;
    if !file.metadata().map_err(io_err)?.is_file() {
        return Err(io_err(io::Error::other("not a regular file")));
    }
    nix::fcntl::Flock::lock(file.try_clone().map_err(io_err)?, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io_err(e.into()))
        .and_then(|lock| {
            let mut text = Vec::new();
            (&mut file).take(FILE_LIMIT + 1).read_to_end(&mut text).map_err(io_err)?;
            if text.len() as u64 > FILE_LIMIT {
                return Err(CustodyError::TooLarge { path: path.to_path_buf() });
            }
            let checked = check(&text, Some(new.bundle_sha256), None);
            if let Some(b) = checked.broken {
                return Err(CustodyError::Broken { path: path.to_path_buf(), detail: b.to_string() });
            }
            let prev =
                text.strip_suffix(b"\n").and_then(|t| t.rsplit(|b| *b == b'\n').next()).filter(|l| !l.is_empty());
            let seq = checked.entries.len() as u64 + 1;
            let mut line = make_line(signer, prev, seq, new, host)?;
            line.push(b'\n');
            file.seek(io::SeekFrom::End(0)).map_err(io_err)?;
            file.write_all(&line).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            drop(lock);
            let raw: Line = serde_json::from_slice(&line).map_err(|e| io_err(io::Error::other(e)))?;
            serde_json::from_str(raw.entry.get()).map_err(|e| io_err(io::Error::other(e)))
        })
}

/// An entry that checked out, with who signed it.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    #[serde(flatten)]
    pub entry: Entry,
    /// The principals `--allowed-signers` gives the signing key in the custody namespace; `None` when no file
    /// was given.
    pub principals: Option<Vec<String>>,
}

/// The first link that does not hold.
#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    /// 1-based line number in the file.
    pub line: usize,
    pub why: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

/// A custody record read and checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Chain {
    /// The entries up to the first broken link.
    pub entries: Vec<Checked>,
    pub broken: Option<Broken>,
    /// Lines after the first broken link, which nothing vouches for.
    pub unchecked_after: usize,
}

/// Checks every line: its shape, its sequence number, its link to the line before, its signature, and (given)
/// that it is about the archive whose SHA-256 is `archive_sha256` and that its signer is an allowed signer.
pub fn check(text: &[u8], archive_sha256: Option<&str>, allowed: Option<&AllowedSigners>) -> Chain {
    let mut chain = Chain::default();
    let Some(body) = text.strip_suffix(b"\n").or(if text.is_empty() { Some(text) } else { None }) else {
        chain.broken = Some(Broken {
            line: text.split(|b| *b == b'\n').count(),
            why: "the last line is cut short (no newline)".into(),
        });
        return chain;
    };
    if body.is_empty() {
        return chain;
    }
    let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    let mut prev: Option<&[u8]> = None;
    for (i, line) in lines.iter().enumerate() {
        match check_line(line, i as u64 + 1, prev, archive_sha256, allowed) {
            Ok(c) => chain.entries.push(c),
            Err(why) => {
                chain.broken = Some(Broken { line: i + 1, why });
                chain.unchecked_after = lines.len() - i - 1;
                return chain;
            }
        }
        prev = Some(line);
    }
    chain
}

fn check_line(
    line: &[u8],
    seq: u64,
    prev: Option<&[u8]>,
    archive_sha256: Option<&str>,
    allowed: Option<&AllowedSigners>,
) -> Result<Checked, String> {
    if line.len() > LINE_LIMIT {
        return Err(format!("longer than {LINE_LIMIT} bytes"));
    }
    // serde quotes what it could not take, which is whatever the record's writer put there: cut and escaped.
    let shown = |e: serde_json::Error| crate::bundle::bounds::excerpt(e.to_string().as_bytes());
    let parsed: Line = serde_json::from_slice(line).map_err(|e| format!("not a custody line: {}", shown(e)))?;
    let entry: Entry =
        serde_json::from_str(parsed.entry.get()).map_err(|e| format!("not a custody entry: {}", shown(e)))?;
    if entry.seq != seq {
        return Err(format!("sequence number {} where {seq} belongs (an entry dropped, moved or inserted)", entry.seq));
    }
    let expected_prev = prev.map(|p| hex::encode(Sha256::digest(p)));
    if entry.prev_sha256 != expected_prev {
        return Err(match (&entry.prev_sha256, &expected_prev) {
            (_, None) => "the first entry names a previous entry".to_string(),
            (None, Some(_)) => "names no previous entry, though it is not the first".to_string(),
            (Some(_), Some(_)) => "its previous-entry hash does not match the line before (that line was edited, or \
                                   an entry dropped or moved)"
                .to_string(),
        });
    }
    let sig = SshSig::from_pem(parsed.signature.as_bytes()).map_err(|e| format!("signature unreadable: {e}"))?;
    if sig.namespace() != CUSTODY_NAMESPACE {
        return Err(format!("signature is for namespace `{}`, not `{CUSTODY_NAMESPACE}`", sig.namespace()));
    }
    let digest: Vec<u8> = match sig.hash_alg() {
        HashAlg::Sha256 => Sha256::digest(parsed.entry.get().as_bytes()).to_vec(),
        HashAlg::Sha512 => sha2::Sha512::digest(parsed.entry.get().as_bytes()).to_vec(),
        other => return Err(format!("signature uses unsupported hash {other}")),
    };
    let key = ssh_key::PublicKey::new(sig.public_key().clone(), "");
    key.verify_prehash(CUSTODY_NAMESPACE, &digest, &sig)
        .map_err(|_| "signature does not match the entry (edited, or signed over other text)".to_string())?;
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    if fingerprint != entry.key {
        return Err(format!("signed by {fingerprint}, but the entry names {}", entry.key));
    }
    if let Some(a) = archive_sha256
        && !entry.bundle_sha256.eq_ignore_ascii_case(a)
    {
        return Err(format!("is about archive {}, not this one ({a})", entry.bundle_sha256));
    }
    let principals = allowed.map(|a| a.principals(sig.public_key(), CUSTODY_NAMESPACE, Timestamp::now()));
    if principals.as_ref().is_some_and(Vec::is_empty) {
        return Err(format!("signed by {fingerprint}, which is not an allowed signer for `{CUSTODY_NAMESPACE}`"));
    }
    Ok(Checked { entry, principals })
}

/// The custody record of the bundle at `archive`: `<id>.custody.jsonl` beside it.
pub fn path_of(archive: &Path) -> Option<PathBuf> {
    let (id, _) = crate::bundle::archive_id(archive)?;
    Some(archive.with_file_name(format!("{id}.custody.jsonl")))
}

/// Reads the custody record's text, bounded, never following a link.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, CustodyError> {
    super::read_side_file(path, FILE_LIMIT)
        .map_err(|why| CustodyError::Io { path: path.to_path_buf(), source: io::Error::other(why) })
}

/// The SHA-256 of the archive at `archive`, read again (custody entries added later are about the archive as it is
/// now: one that changed since it was sealed gets no entry).
pub fn archive_sha256(archive: &Path) -> io::Result<String> {
    super::digest_of::<Sha256>(archive).map(hex::encode)
}

//! `preserve verify`'s seal layers, after the archive and its bag are checked: the signature (`.sig`), the
//! timestamp (`.tsr`) and the custody record (`.custody.jsonl`). Each is named with what it found; each forgery is
//! a problem of its own kind, so the report says which layer failed and why.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;
use sha2::Sha512;
use ssh_key::{HashAlg, PublicKey, SshSig};
use x509_cert::Certificate;

use super::{
    allowed::AllowedSigners,
    custody, digest32, read_side_file as side,
    signer::NAMESPACE,
    timestamp::{self, RESPONSE_LIMIT},
};
use crate::bundle::verify::{ProblemKind, Report};

/// A signature file is a few hundred bytes.
const SIG_LIMIT: u64 = 64 << 10;

/// What `verify` checks the seal against.
#[derive(Debug, Default)]
pub struct Options {
    /// `--allowed-signers`: whose signatures count, and as which principal.
    pub allowed_signers: Option<AllowedSigners>,
    /// `--tsa-ca`: the CA certificates a TSA must chain to.
    pub tsa_ca: Option<Vec<Certificate>>,
    pub require_signature: bool,
    pub require_timestamp: bool,
}

/// One layer as found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Layer {
    Absent,
    Valid {
        file: String,
        #[serde(flatten)]
        detail: serde_json::Value,
    },
    Invalid {
        file: String,
        why: String,
    },
}

/// The seal's layers.
#[derive(Debug, Clone, Serialize)]
pub struct Layers {
    pub signature: Layer,
    pub timestamp: Layer,
    pub custody: Layer,
}

/// A bundle's whole verification: archive and bag, then seal.
#[derive(Debug, Serialize)]
pub struct Verification {
    #[serde(flatten)]
    pub bundle: Report,
    pub seal: Layers,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.bundle.intact()
    }
}

/// Checks the seal of the archive `report` describes, adding a problem for each layer that fails (or is required
/// and absent).
pub fn check(mut report: Report, opts: &Options) -> Verification {
    let archive = report.archive.clone();
    let sha256 = report.archive_sha256.clone();
    let signature = signature(&archive, &sha256, opts);
    let timestamp = stamp(&archive, &sha256, opts);
    let custody = custody_layer(&archive, &sha256, opts);
    for (layer, kind) in
        [(&signature, ProblemKind::Signature), (&timestamp, ProblemKind::Timestamp), (&custody, ProblemKind::Custody)]
    {
        if let Layer::Invalid { file, why } = layer {
            report.problem(file.as_str(), kind, why.as_str());
        }
    }
    let name = file_name(&archive);
    if opts.require_signature && matches!(signature, Layer::Absent) {
        report.problem(format!("{name}.sig"), ProblemKind::Unsealed, "no signature, and --require-signature was given");
    }
    if opts.require_timestamp && matches!(timestamp, Layer::Absent) {
        report.problem(format!("{name}.tsr"), ProblemKind::Unsealed, "no timestamp, and --require-timestamp was given");
    }
    Verification { bundle: report, seal: Layers { signature, timestamp, custody } }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn beside(archive: &Path, suffix: &str) -> PathBuf {
    archive.with_file_name(format!("{}{suffix}", file_name(archive)))
}

/// A layer's side file: its name and bytes, or (`Err`) the layer as found when it is absent or left unread.
fn layer_file(path: &Path, cap: u64) -> Result<(String, Vec<u8>), Layer> {
    let file = file_name(path);
    match side(path, cap) {
        Ok(Some(bytes)) => Ok((file, bytes)),
        Ok(None) => Err(Layer::Absent),
        Err(why) => Err(Layer::Invalid { file, why }),
    }
}

fn signature(archive: &Path, sha256: &str, opts: &Options) -> Layer {
    let (file, pem) = match layer_file(&beside(archive, ".sig"), SIG_LIMIT) {
        Ok(read) => read,
        Err(layer) => return layer,
    };
    let invalid = |why: String| Layer::Invalid { file: file.clone(), why };
    let sig = match SshSig::from_pem(&pem) {
        Ok(s) => s,
        Err(e) => return invalid(format!("not an SSH signature: {e}")),
    };
    if sig.namespace() != NAMESPACE {
        return invalid(format!(
            "signature is for namespace `{}`, not `{NAMESPACE}`",
            crate::bundle::bounds::excerpt(sig.namespace().as_bytes())
        ));
    }
    let digest = match sig.hash_alg() {
        HashAlg::Sha256 => digest32(sha256).map(|d| d.to_vec()),
        // `ssh-keygen -Y sign` hashes with SHA-512: a signature made by hand is checked by reading the archive again.
        HashAlg::Sha512 => super::digest_of::<Sha512>(archive).ok(),
        other => return invalid(format!("unsupported hash {other}")),
    };
    let Some(digest) = digest else { return invalid("the archive could not be hashed".into()) };
    let key = PublicKey::new(sig.public_key().clone(), "");
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    if key.verify_prehash(NAMESPACE, &digest, &sig).is_err() {
        return invalid(format!(
            "signature by {fingerprint} does not match this archive (the archive changed, or the signature is of \
             another bundle)"
        ));
    }
    let principals = opts.allowed_signers.as_ref().map(|a| a.principals(sig.public_key(), NAMESPACE, Timestamp::now()));
    if principals.as_ref().is_some_and(Vec::is_empty) {
        return invalid(format!("signed by {fingerprint}, which is not an allowed signer for `{NAMESPACE}`"));
    }
    Layer::Valid {
        file,
        detail: serde_json::json!({
            "key": fingerprint,
            "algorithm": key.algorithm().as_str(),
            "principals": principals,
        }),
    }
}

fn stamp(archive: &Path, sha256: &str, opts: &Options) -> Layer {
    let (file, tsr) = match layer_file(&beside(archive, ".tsr"), RESPONSE_LIMIT) {
        Ok(read) => read,
        Err(layer) => return layer,
    };
    let invalid = |why: String| Layer::Invalid { file: file.clone(), why };
    let Some(digest) = digest32(sha256) else { return invalid("the archive could not be hashed".into()) };
    match timestamp::check(&tsr, &digest, opts.tsa_ca.as_deref(), None) {
        Ok(s) => Layer::Valid {
            file,
            detail: serde_json::json!({
                "time": s.time.to_string(),
                "tsa": s.tsa,
                "serial": s.serial,
                "policy": s.policy,
                "digest": "matches the archive's SHA-256",
                "chain": match &s.anchored_to {
                    Some(ca) => format!("chains to {ca}"),
                    None => "not checked (give --tsa-ca)".to_string(),
                },
            }),
        },
        Err(why) => invalid(why),
    }
}

fn custody_layer(archive: &Path, sha256: &str, opts: &Options) -> Layer {
    let Some(path) = custody::path_of(archive) else { return Layer::Absent };
    let (file, text) = match layer_file(&path, custody::FILE_LIMIT) {
        Ok(read) => read,
        Err(layer) => return layer,
    };
    let chain = custody::check(&text, Some(sha256), opts.allowed_signers.as_ref());
    if let Some(b) = &chain.broken {
        let after = if chain.unchecked_after > 0 {
            format!(" ({} entries after it are not vouched for)", chain.unchecked_after)
        } else {
            String::new()
        };
        return Layer::Invalid {
            file,
            why: format!(
                "{} of {} entries hold; {b}{after}",
                chain.entries.len(),
                chain.entries.len() + 1 + chain.unchecked_after
            ),
        };
    }
    let mut signers: Vec<serde_json::Value> = Vec::new();
    for c in &chain.entries {
        let s = serde_json::json!({ "key": c.entry.key, "principals": c.principals });
        if !signers.contains(&s) {
            signers.push(s);
        }
    }
    Layer::Valid {
        file,
        detail: serde_json::json!({
            "entries": chain.entries.len(),
            "signers": signers,
            "last": chain.entries.last().map(|c| serde_json::json!({"seq": c.entry.seq, "action": c.entry.action, "actor": c.entry.actor, "time": c.entry.time.to_string()})),
        }),
    }
}

/// `inspect`'s one line about the seal, from the side files as they are (nothing is verified: `verify` does that).
pub fn glance(archive: &Path) -> String {
    let mut parts = Vec::new();
    match side(&beside(archive, ".sig"), SIG_LIMIT) {
        Ok(None) => parts.push("unsigned".to_string()),
        Ok(Some(pem)) => match SshSig::from_pem(&pem) {
            Ok(sig) => parts.push(format!(
                "signed by {} ({})",
                PublicKey::new(sig.public_key().clone(), "").fingerprint(HashAlg::Sha256),
                sig.algorithm().as_str()
            )),
            Err(_) => parts.push("a .sig that is not an SSH signature".to_string()),
        },
        Err(why) => parts.push(format!(".sig {why}")),
    }
    match side(&beside(archive, ".tsr"), RESPONSE_LIMIT) {
        Ok(None) => parts.push("no timestamp".to_string()),
        Ok(Some(tsr)) => parts.push(match timestamp::peek(&tsr) {
            Some((time, tsa)) => format!("timestamped {time} by {tsa}"),
            None => "a .tsr that cannot be read".to_string(),
        }),
        Err(why) => parts.push(format!(".tsr {why}")),
    }
    match custody::path_of(archive).map(|p| side(&p, custody::FILE_LIMIT)) {
        Some(Ok(Some(text))) => {
            let n = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
            parts.push(format!("custody {n} {}", if n == 1 { "entry" } else { "entries" }));
        }
        Some(Err(why)) => parts.push(format!("custody record {why}")),
        _ => parts.push("no custody record".to_string()),
    }
    crate::bundle::bounds::printable(&format!("{} (preserve verify checks them)", parts.join(", ")))
}

//! The key of a bundle's fingerprints. A marker's fingerprint is HMAC-SHA256 over the secret keyed either by the
//! site's fingerprint key (`[redaction] fingerprint_key`, a credential that never enters a bundle: markers are the
//! same in every bundle of the site, and only the key's holder can test a candidate value) or by a random key made
//! for one bundle and written nowhere (markers are the same within that bundle, and nobody can test a candidate).
//! A bundle publishing what its fingerprints were keyed with would let anyone with it test a dictionary offline.

use std::{
    io::{BufRead, Read},
    path::Path,
};

use hmac::{KeyInit, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    bundle::manifest::{KeyKind, Manifest, RedactionScheme},
    config::{CredentialError, KeySource, Secret},
};

/// A site key shorter than this is refused: every fingerprint, and the key's id, would be as guessable as it is.
pub const MIN_SITE_KEY_LEN: usize = 32;
const PER_BUNDLE_KEY_LEN: usize = 32;
/// Keeps the key's id apart from any fingerprint (a hash of a hash, under a name used for nothing else).
const KEY_ID_DOMAIN: &[u8] = b"preserve fingerprint key id/1\0";
/// A candidate longer than this is refused rather than read whole.
const MAX_CANDIDATE: usize = 64 * 1024;
/// A side manifest larger than this is refused rather than read whole (a big bundle's is a few MiB).
const MAX_SIDE_MANIFEST: u64 = 256 << 20;

/// The key every fingerprint of one bundle is made with. `Debug` shows its kind and id, never the key.
#[derive(Clone)]
pub struct FingerprintKey {
    bytes: Vec<u8>,
    kind: KeyKind,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the fingerprint key is {len} bytes; it must be at least {MIN_SITE_KEY_LEN} (make one with `openssl rand -hex 32`)"
    )]
    TooShort { len: usize },
    #[error("no OS random source for this bundle's fingerprint key ({0}); set [redaction] fingerprint_key")]
    NoRandom(String),
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

impl FingerprintKey {
    /// The site's key: the credential's bytes as resolved.
    pub fn site(secret: &Secret) -> Result<Self, KeyError> {
        let bytes = secret.expose().as_bytes().to_vec();
        if bytes.len() < MIN_SITE_KEY_LEN {
            return Err(KeyError::TooShort { len: bytes.len() });
        }
        Ok(Self { bytes, kind: KeyKind::Site })
    }

    /// The site's key from where the configuration says it is.
    pub fn site_from(source: &KeySource) -> Result<Self, KeyError> {
        Self::site(&source.resolve()?)
    }

    /// A random key for one bundle, held in memory only. Without an OS random source there is none: a key that
    /// could be guessed (from the clock) would make every fingerprint testable again.
    pub fn per_bundle() -> Result<Self, KeyError> {
        let mut bytes = vec![0u8; PER_BUNDLE_KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::NoRandom(e.to_string()))?;
        Ok(Self { bytes, kind: KeyKind::PerBundle })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// A site key's id: the first 16 hex of SHA-256 over a domain name and the SHA-256 of the key. Names the key
    /// in a manifest without letting anyone test a secret (or a key) that is not guessable itself.
    pub fn id(&self) -> Option<String> {
        (self.kind == KeyKind::Site).then(|| {
            let inner = Sha256::digest(&self.bytes);
            let outer = Sha256::new().chain_update(KEY_ID_DOMAIN).chain_update(inner).finalize();
            hex::encode(&outer[..8])
        })
    }

    /// The site key's value, to be registered as a known secret so it can never reach a bundle.
    pub fn site_secret(&self) -> Option<Secret> {
        (self.kind == KeyKind::Site).then(|| Secret::new(String::from_utf8_lossy(&self.bytes).into_owned()))
    }

    /// `hex(HMAC-SHA256(key, value))[..16]`.
    pub fn fingerprint(&self, value: &[u8]) -> String {
        let mut mac =
            <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.bytes).expect("HMAC takes keys of any length");
        mac.update(value);
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    /// What the manifest says about this key: its kind, and a site key's id.
    pub fn scheme(&self) -> RedactionScheme {
        RedactionScheme {
            marker: "[REDACTED:<fingerprint>]".into(),
            fingerprint: "hex(HMAC-SHA256(key, secret))[..16]".into(),
            key: Some(self.kind),
            key_id: self.id(),
        }
    }

    /// Whether markers written under `scheme` were made with this very key, so they compare with this key's. A
    /// per-bundle key is never the same as another bundle's.
    pub fn made(&self, scheme: &RedactionScheme) -> bool {
        self.kind == KeyKind::Site && scheme.key == Some(KeyKind::Site) && scheme.key_id == self.id()
    }
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FingerprintKey").field("kind", &self.kind).field("id", &self.id()).finish()
    }
}

/// Why a bundle's fingerprints cannot be checked with a key.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "the fingerprints of {bundle} were made with a per-bundle key that was never stored: no value can be checked against them"
    )]
    PerBundle { bundle: String },
    #[error("the fingerprints of {bundle} were made with site key {theirs}; the key given is {ours}")]
    OtherKey { bundle: String, theirs: String, ours: String },
    #[error("the key given is not a site fingerprint key")]
    NotSiteKey,
    #[error("{bundle} was written before fingerprints were keyed (its manifest names no key)")]
    Unkeyed { bundle: String },
    #[error("candidate on line {line} is longer than {MAX_CANDIDATE} bytes")]
    TooLong { line: usize },
    #[error("reading candidates: {0}")]
    Read(#[from] std::io::Error),
    #[error("cannot read the manifest of `{path}`: {why}")]
    Manifest { path: String, why: String },
}

/// The manifest of a bundle: from the archive, or from a side manifest (`<id>.manifest.json`) when given one.
pub fn bundle_manifest(path: &Path) -> Result<Manifest, CheckError> {
    let err = |why: String| CheckError::Manifest { path: path.display().to_string(), why };
    if path.extension().is_none_or(|e| e != "json") {
        return crate::bundle::verify::read_manifest(path, &Default::default()).map_err(|e| err(e.to_string()));
    }
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SIDE_MANIFEST + 1).read_to_end(&mut raw))
        .map_err(|e| err(e.to_string()))?;
    if raw.len() as u64 > MAX_SIDE_MANIFEST {
        return Err(err(format!("larger than {MAX_SIDE_MANIFEST} bytes")));
    }
    serde_json::from_slice(&raw).map_err(|e| err(e.to_string()))
}

/// A place a fingerprint is recorded in a manifest: a collector's redactions, or (`collector` = `None`) those of
/// the alerts that triggered the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    pub collector: Option<String>,
    pub rule: String,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.collector {
            Some(c) => write!(f, "collector {c}, rule {}", self.rule),
            None => write!(f, "trigger alerts, rule {}", self.rule),
        }
    }
}

/// One candidate value checked: where it was read (never the value), its fingerprint and marker, and with a
/// bundle, where the bundle records that fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub line: usize,
    pub fingerprint: String,
    pub marker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<Place>>,
}

/// Checks that `manifest`'s fingerprints were made with `key`, so candidates can be matched against them.
pub fn check_bundle(key: &FingerprintKey, manifest: &Manifest) -> Result<(), CheckError> {
    let bundle = manifest.bundle_id.clone();
    let ours = key.id().ok_or(CheckError::NotSiteKey)?;
    match (manifest.redaction.key, &manifest.redaction.key_id) {
        (None, _) => Err(CheckError::Unkeyed { bundle }),
        (Some(KeyKind::PerBundle), _) => Err(CheckError::PerBundle { bundle }),
        (Some(KeyKind::Site), theirs) if theirs.as_deref() == Some(ours.as_str()) => Ok(()),
        (Some(KeyKind::Site), theirs) => {
            Err(CheckError::OtherKey { bundle, theirs: theirs.clone().unwrap_or_else(|| "(no id)".into()), ours })
        }
    }
}

/// Where `manifest` records `fingerprint`.
pub fn places(manifest: &Manifest, fingerprint: &str) -> Vec<Place> {
    let has = |r: &crate::bundle::manifest::RedactionRecord| r.fingerprints.iter().any(|f| f == fingerprint);
    let trigger =
        manifest.trigger.redactions.iter().filter(|r| has(r)).map(|r| Place { collector: None, rule: r.rule.clone() });
    let collectors = manifest.collectors.iter().flat_map(|c| {
        c.redactions.iter().filter(|r| has(r)).map(|r| Place { collector: Some(c.name.clone()), rule: r.rule.clone() })
    });
    trigger.chain(collectors).collect()
}

/// Reads candidate values from `input`, one per line (the line end, `\n` or `\r\n`, is not part of the value; empty
/// lines are skipped), and fingerprints each with `key`; with `manifest`, says where that bundle records it. A
/// bundle whose fingerprints another key made is refused before anything is read.
pub fn check_candidates(
    key: &FingerprintKey,
    manifest: Option<&Manifest>,
    mut input: impl BufRead,
) -> Result<Vec<Checked>, CheckError> {
    if let Some(m) = manifest {
        check_bundle(key, m)?;
    } else if key.kind() != KeyKind::Site {
        return Err(CheckError::NotSiteKey);
    }
    let mut out = Vec::new();
    let mut line = Vec::new();
    for n in 1.. {
        line.clear();
        let read = Read::take(input.by_ref(), MAX_CANDIDATE as u64 + 2).read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        let value = line.strip_suffix(b"\n").unwrap_or(&line);
        let value = value.strip_suffix(b"\r").unwrap_or(value);
        if value.len() > MAX_CANDIDATE || (!line.ends_with(b"\n") && read > MAX_CANDIDATE) {
            return Err(CheckError::TooLong { line: n });
        }
        if value.is_empty() {
            continue;
        }
        let fingerprint = key.fingerprint(value);
        out.push(Checked {
            line: n,
            marker: format!("{}{fingerprint}]", super::MARK_PREFIX),
            matches: manifest.map(|m| places(m, &fingerprint)),
            fingerprint,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_site_key_has_a_stable_id_that_is_no_fingerprint_and_short_keys_are_refused() {
        let a = FingerprintKey::site(&Secret::new(KEY)).unwrap();
        let b = FingerprintKey::site(&Secret::new(KEY)).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.fingerprint(b"pw"), b.fingerprint(b"pw"));
        let id = a.id().unwrap();
        assert_eq!(id.len(), 16);
        assert_ne!(Some(id.as_str()), Some(a.fingerprint(KEY.as_bytes()).as_str()), "the id is not the key's marker");
        assert!(matches!(FingerprintKey::site(&Secret::new("short")), Err(KeyError::TooShort { len: 5 })));
        assert!(!format!("{a:?}").contains(KEY));
    }

    #[test]
    fn per_bundle_keys_differ_and_match_no_other_bundle() {
        let (a, b) = (FingerprintKey::per_bundle().unwrap(), FingerprintKey::per_bundle().unwrap());
        assert_ne!(a.fingerprint(b"pw"), b.fingerprint(b"pw"));
        assert!(a.id().is_none() && a.site_secret().is_none());
        assert!(!a.made(&a.scheme()), "a per-bundle key's markers compare with no other bundle's");
        let site = FingerprintKey::site(&Secret::new(KEY)).unwrap();
        assert!(site.made(&site.scheme()));
        let other = FingerprintKey::site(&Secret::new(format!("{KEY}x"))).unwrap();
        assert!(!other.made(&site.scheme()));
    }

    #[test]
    fn candidates_are_read_one_per_line_without_their_line_ends() {
        let key = FingerprintKey::site(&Secret::new(KEY)).unwrap();
        let got = check_candidates(&key, None, &b"hunter22\r\n\ncorrect horse\nlast"[..]).unwrap();
        let lines: Vec<_> = got.iter().map(|c| (c.line, c.fingerprint.clone())).collect();
        assert_eq!(
            lines,
            vec![
                (1, key.fingerprint(b"hunter22")),
                (3, key.fingerprint(b"correct horse")),
                (4, key.fingerprint(b"last"))
            ]
        );
        let long = vec![b'a'; MAX_CANDIDATE + 10];
        assert!(matches!(check_candidates(&key, None, &long[..]), Err(CheckError::TooLong { line: 1 })));
    }
}

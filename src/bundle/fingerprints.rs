//! Checking candidate secret values against a bundle's markers, for the holder of the site's fingerprint key
//! (`preserve fingerprint`): which key made a bundle's fingerprints, and where its manifest records a candidate's.

use std::{
    io::{BufRead, Read},
    path::Path,
};

use serde::Serialize;

use super::manifest::{KeyKind, Manifest, RedactionRecord};
use crate::redact::FingerprintKey;

/// A candidate longer than this is refused rather than read whole.
const MAX_CANDIDATE: usize = 64 * 1024;
/// A side manifest larger than this is refused rather than read whole (a big bundle's is a few MiB).
const MAX_SIDE_MANIFEST: u64 = 256 << 20;

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
        return super::verify::read_manifest(path, &Default::default()).map_err(|e| err(e.to_string()));
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
    let has = |r: &RedactionRecord| r.fingerprints.iter().any(|f| f == fingerprint);
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
            marker: format!("{}{fingerprint}]", crate::redact::MARK_PREFIX),
            matches: manifest.map(|m| places(m, &fingerprint)),
            fingerprint,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn only_the_site_key_that_made_a_scheme_compares_with_it() {
        let per_bundle = FingerprintKey::per_bundle().unwrap();
        let scheme = super::super::manifest::RedactionScheme::of(&per_bundle);
        assert!(!scheme.made_by(&per_bundle), "a per-bundle key's markers compare with no other bundle's");
        let site = FingerprintKey::site(&Secret::new(KEY)).unwrap();
        let scheme = super::super::manifest::RedactionScheme::of(&site);
        assert!(scheme.made_by(&site));
        let other = FingerprintKey::site(&Secret::new(format!("{KEY}x"))).unwrap();
        assert!(!scheme.made_by(&other));
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

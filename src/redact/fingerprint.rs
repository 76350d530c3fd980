//! The key of a bundle's fingerprints. A marker's fingerprint is HMAC-SHA256 over the secret keyed either by the
//! site's fingerprint key (`[redaction] fingerprint_key`, a credential that never enters a bundle: markers are the
//! same in every bundle of the site, and only the key's holder can test a candidate value) or by a random key made
//! for one bundle and written nowhere (markers are the same within that bundle, and nobody can test a candidate).
//! A bundle publishing what its fingerprints were keyed with would let anyone with it test a dictionary offline.

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{CredentialError, KeySource, Secret};

/// A site key shorter than this is refused: every fingerprint, and the key's id, would be as guessable as it is.
pub const MIN_SITE_KEY_LEN: usize = 32;
const PER_BUNDLE_KEY_LEN: usize = 32;
/// Keeps the key's id apart from any fingerprint (a hash of a hash, under a name used for nothing else).
const KEY_ID_DOMAIN: &[u8] = b"preserve fingerprint key id/1\0";

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
        let bytes = secret.expose_secret().as_bytes().to_vec();
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
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FingerprintKey").field("kind", &self.kind).field("id", &self.id()).finish()
    }
}

/// The kind of key a bundle's fingerprints were made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// The site's `[redaction] fingerprint_key`: markers are the same in every bundle of the site.
    Site,
    /// A random key made for this bundle and written nowhere: markers are the same within the bundle only, and
    /// nobody can check a value against them.
    PerBundle,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Site => "site",
            Self::PerBundle => "per-bundle",
        }
    }
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
    }
}

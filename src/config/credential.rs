//! Credentials by reference. A config never holds a secret inline: it names where to read it (`env:NAME` or
//! `file:PATH`). Resolved values live in [`Secret`], which never prints itself and is wiped from memory when dropped,
//! and are registered with the redactor so they cannot reach a bundle.

use std::{fmt, path::PathBuf, str::FromStr};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Where a credential is read from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum CredentialRef {
    /// `env:NAME`: the value of an environment variable.
    Env(String),
    /// `file:PATH`: the contents of a file, without a trailing newline.
    File(PathBuf),
}

/// A resolved secret value: zeroed when dropped, never shown by `Debug`, and no `Display`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into())
    }
    /// The value itself: only where it is used (a connection, the redactor's list), never to show it.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("credential `{0}` must be a reference `env:NAME` or `file:PATH`, never a literal value")]
    NotAReference(String),
    #[error("credential {0}: environment variable is not set")]
    EnvMissing(String),
    #[error("credential {reference}: cannot read file: {source}")]
    FileUnreadable { reference: String, source: std::io::Error },
    #[error("credential {0}: the value is empty")]
    Empty(String),
}

impl CredentialRef {
    pub fn resolve(&self) -> Result<Secret, CredentialError> {
        let value = match self {
            CredentialRef::Env(name) => {
                std::env::var(name).map_err(|_| CredentialError::EnvMissing(self.to_string()))?
            }
            CredentialRef::File(path) => std::fs::read_to_string(path)
                .map_err(|source| CredentialError::FileUnreadable { reference: self.to_string(), source })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        if value.is_empty() {
            return Err(CredentialError::Empty(self.to_string()));
        }
        Ok(Secret::new(value))
    }
}

impl fmt::Display for CredentialRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialRef::Env(n) => write!(f, "env:{n}"),
            CredentialRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl fmt::Debug for CredentialRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for CredentialRef {
    type Err = CredentialError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix("env:").filter(|n| !n.is_empty()) {
            Ok(CredentialRef::Env(name.to_string()))
        } else if let Some(path) = s.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(CredentialRef::File(PathBuf::from(path)))
        } else {
            // Never echo the literal: it may be the secret itself.
            Err(CredentialError::NotAReference("<literal>".into()))
        }
    }
}

impl<'de> Deserialize<'de> for CredentialRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for CredentialRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_values_are_refused_without_echo() {
        let err = "hunter2".parse::<CredentialRef>().unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("env:NAME"));
    }

    #[test]
    fn secret_never_debug_prints() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }

    #[test]
    fn file_reference_trims_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let r: CredentialRef = format!("file:{}", p.display()).parse().unwrap();
        assert_eq!(r.resolve().unwrap().expose_secret(), "s3cret");
    }
}

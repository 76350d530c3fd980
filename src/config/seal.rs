//! The `[seal]` section resolved: which key signs (a private key file, or a key held by an SSH agent), which
//! time-stamp authority stamps, and who this host's custody entries name.

use std::path::{Path, PathBuf};

use jiff::SignedDuration;

use super::{credential::CredentialRef, site::SealConfig};

/// Where a bundle's signing key is.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SignerSource {
    /// An OpenSSH private key file's contents, by reference.
    Key { key: CredentialRef },
    /// The key with this public key, held by the SSH agent at `socket` (`None`: `SSH_AUTH_SOCK` when signing).
    Agent { public_key: String, socket: Option<PathBuf> },
}

/// An RFC 3161 time-stamp authority.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TsaSettings {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    #[serde(serialize_with = "crate::config::kubernetes::as_text")]
    pub timeout: SignedDuration,
}

/// The resolved `[seal]` section.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SealSettings {
    pub signer: Option<SignerSource>,
    pub tsa: Option<TsaSettings>,
    /// Named as the actor of the custody entries this host writes.
    pub actor: Option<String>,
    /// age recipients every archive is encrypted for (checked when the config is read).
    pub recipients: Vec<String>,
}

impl SealSettings {
    /// Whether anything seals bundles.
    pub fn any(&self) -> bool {
        self.signer.is_some() || self.tsa.is_some()
    }

    /// Whether archives are encrypted.
    pub fn encrypted(&self) -> bool {
        !self.recipients.is_empty()
    }

    /// The recipients, parsed (they were checked when the config was read).
    pub fn age_recipients(&self) -> Result<Vec<Box<dyn age::Recipient + Send>>, SealSettingError> {
        self.recipients.iter().map(|r| parse_recipient(r)).collect()
    }
}

/// A `[seal]` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SealSettingError {
    #[error("seal: give signing_key or agent_key, not both")]
    TwoSigners,
    #[error("seal.agent_key: cannot read public key file `{}`: {source}", path.display())]
    AgentKeyUnreadable { path: PathBuf, source: std::io::Error },
    #[error("seal.agent_key: `{0}` is neither an OpenSSH public key line nor a readable .pub file")]
    AgentKeyNotAKey(String),
    #[error("seal.tsa_url: `{0}` must be an http:// or https:// URL")]
    TsaUrl(String),
    #[error("seal.tsa_timeout must be positive")]
    TsaTimeout,
    #[error("seal.tsa_ca_file is set but seal.tsa_url is not")]
    CaWithoutTsa,
    #[error(
        "seal.recipients: `{0}` is neither an age recipient (age1...) nor an SSH public key (ssh-ed25519, ssh-rsa)"
    )]
    Recipient(String),
}

/// Public key files are small; anything larger is not one.
const PUBLIC_KEY_FILE_LIMIT: u64 = 64 * 1024;

impl SealSettings {
    pub fn resolve(c: SealConfig) -> Result<Self, SealSettingError> {
        let signer = match (c.signing_key, c.agent_key) {
            (Some(_), Some(_)) => return Err(SealSettingError::TwoSigners),
            (Some(key), None) => Some(SignerSource::Key { key }),
            (None, Some(given)) => {
                Some(SignerSource::Agent { public_key: public_key_line(&given)?, socket: c.agent_socket })
            }
            (None, None) => None,
        };
        let tsa = match c.tsa_url {
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(SealSettingError::TsaUrl(url));
                }
                let timeout = c.tsa_timeout.unwrap_or(SignedDuration::from_secs(10));
                if timeout <= SignedDuration::ZERO {
                    return Err(SealSettingError::TsaTimeout);
                }
                Some(TsaSettings { url, ca_file: c.tsa_ca_file, timeout })
            }
            None if c.tsa_ca_file.is_some() => return Err(SealSettingError::CaWithoutTsa),
            None => None,
        };
        for r in &c.recipients {
            parse_recipient(r)?;
        }
        Ok(Self { signer, tsa, actor: c.actor, recipients: c.recipients })
    }
}

fn parse_recipient(r: &str) -> Result<Box<dyn age::Recipient + Send>, SealSettingError> {
    let r = r.trim();
    if r.starts_with("age1") {
        return r
            .parse::<age::x25519::Recipient>()
            .map(|k| Box::new(k) as _)
            .map_err(|_| SealSettingError::Recipient(r.into()));
    }
    r.parse::<age::ssh::Recipient>().map(|k| Box::new(k) as _).map_err(|_| SealSettingError::Recipient(r.into()))
}

/// The agent key as one OpenSSH public key line: given as one, or read from a `.pub` file.
fn public_key_line(given: &str) -> Result<String, SealSettingError> {
    let looks_like_key = |s: &str| {
        let mut parts = s.split_whitespace();
        matches!((parts.next(), parts.next()), (Some(alg), Some(_)) if alg.starts_with("ssh-") || alg.starts_with("ecdsa-"))
    };
    if looks_like_key(given) {
        return Ok(given.trim().to_string());
    }
    let path = Path::new(given);
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_string(&mut std::io::Read::take(f, PUBLIC_KEY_FILE_LIMIT), &mut text))
        .map_err(|source| SealSettingError::AgentKeyUnreadable { path: path.to_path_buf(), source })?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or_default();
    if looks_like_key(line) { Ok(line.to_string()) } else { Err(SealSettingError::AgentKeyNotAKey(given.to_string())) }
}

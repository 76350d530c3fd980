//! Signing in the SSH signature format (`sshsig`, what `ssh-keygen -Y sign` makes), from a SHA-256 digest already
//! taken: the archive's, computed while it was written, so signing never reads a bundle again. The key is an OpenSSH
//! private key file or a key held by an SSH agent. The format is `ssh-key`'s and the agent protocol
//! `ssh-agent-client-rs`'s; this module only chooses the key and carries the digest between them.

use std::{
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey, PublicKey, Signature, SshSig};

use crate::config::{CredentialError, SignerSource};

/// The namespace of a bundle's signature (`ssh-keygen -Y verify -n preserve`).
pub const NAMESPACE: &str = "preserve";
/// The namespace of a custody entry's signature: a signature made for one can never pass as the other.
pub const CUSTODY_NAMESPACE: &str = "preserve-custody";

/// How long one exchange with the agent may take (a hardware key may wait for a touch).
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("seal.signing_key: {0}")]
    Credential(#[from] CredentialError),
    #[error("seal.signing_key ({reference}): not an OpenSSH private key: {detail}")]
    NotAKey { reference: String, detail: String },
    #[error(
        "seal.signing_key ({0}): the key is passphrase-protected; add it to an SSH agent (ssh-add) and set \
         seal.agent_key instead"
    )]
    Encrypted(String),
    #[error("seal: {0} keys cannot sign bundles; use Ed25519 (ssh-keygen -t ed25519) or ECDSA P-256")]
    Algorithm(String),
    #[error("seal.agent_key: `{0}` is not an OpenSSH public key")]
    NotAPublicKey(String),
    #[error("seal: no SSH agent: seal.agent_socket is not set and SSH_AUTH_SOCK is not in the environment")]
    NoAgent,
    #[error("seal: the SSH agent at {}: {detail}", socket.display())]
    Agent { socket: PathBuf, detail: String },
    #[error("seal: the SSH agent at {} holds no key {fingerprint}", socket.display())]
    NotInAgent { socket: PathBuf, fingerprint: String },
    #[error("seal: signing failed: {0}")]
    Sign(String),
}

/// A key that signs.
pub enum Signer {
    /// A private key read from its file.
    Key(Box<PrivateKey>),
    /// A key held by an SSH agent: only its public half is here.
    Agent(AgentKey),
}

/// A key the SSH agent at `socket` holds, as the agent listed it when the signer was loaded.
pub struct AgentKey {
    socket: PathBuf,
    public: PublicKey,
    /// The agent's entry for the key (in the agent crate's own `ssh-key` version), which each signature names.
    identity: ssh_agent_client_rs::Identity<'static>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("key", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl Signer {
    /// Reads the key file, or asks the agent whether it holds the key.
    pub fn load(source: &SignerSource) -> Result<Self, SignerError> {
        match source {
            SignerSource::Key { key } => {
                let pem = key.resolve()?;
                let private = PrivateKey::from_openssh(pem.expose_secret())
                    .map_err(|e| SignerError::NotAKey { reference: key.to_string(), detail: e.to_string() })?;
                if private.is_encrypted() {
                    return Err(SignerError::Encrypted(key.to_string()));
                }
                check_algorithm(&private.algorithm())?;
                Ok(Self::Key(Box::new(private)))
            }
            SignerSource::Agent { public_key, socket } => {
                let public =
                    PublicKey::from_openssh(public_key).map_err(|_| SignerError::NotAPublicKey(public_key.clone()))?;
                check_algorithm(&public.algorithm())?;
                let socket = match socket {
                    Some(s) => s.clone(),
                    None => std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from).ok_or(SignerError::NoAgent)?,
                };
                Ok(Self::Agent(AgentKey::find(socket, public)?))
            }
        }
    }

    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::Key(k) => k.public_key().clone(),
            Self::Agent(a) => a.public.clone(),
        }
    }

    /// `SHA256:...`, as `ssh-keygen -l` shows it.
    pub fn fingerprint(&self) -> String {
        self.public_key().fingerprint(HashAlg::Sha256).to_string()
    }

    /// Signs a SHA-256 digest in `namespace`; returns the armored signature (`-----BEGIN SSH SIGNATURE-----`).
    pub fn sign_sha256(&self, namespace: &str, digest: &[u8; 32]) -> Result<String, SignerError> {
        let sig = match self {
            Self::Key(k) => SshSig::sign_prehash(k.as_ref(), namespace, HashAlg::Sha256, digest)
                .map_err(|e| SignerError::Sign(e.to_string()))?,
            Self::Agent(a) => {
                let data = SshSig::signed_data_for_prehash(namespace, HashAlg::Sha256, digest)
                    .map_err(|e| SignerError::Sign(e.to_string()))?;
                SshSig::new(a.public.key_data().clone(), namespace, HashAlg::Sha256, a.sign(&data)?)
                    .map_err(|e| SignerError::Sign(e.to_string()))?
            }
        };
        sig.to_pem(LineEnding::LF).map_err(|e| SignerError::Sign(e.to_string()))
    }
}

impl AgentKey {
    /// Asks the agent at `socket` for its keys and keeps its entry for `public` (the agent's crate has its own
    /// `ssh-key` version: keys are matched by their OpenSSH encoding).
    fn find(socket: PathBuf, public: PublicKey) -> Result<Self, SignerError> {
        let ours = public.to_openssh().map_err(|e| SignerError::Sign(e.to_string()))?;
        let ours = key_part(&ours);
        let identities = client(&socket)?.list_all_identities().map_err(|e| agent_error(&socket, &e))?;
        let identity = identities.into_iter().find(|id| match id {
            ssh_agent_client_rs::Identity::PublicKey(k) => k.to_openssh().is_ok_and(|s| key_part(&s) == ours),
            ssh_agent_client_rs::Identity::Certificate(_) => false,
        });
        match identity {
            Some(identity) => Ok(Self { socket, public, identity }),
            None => {
                Err(SignerError::NotInAgent { fingerprint: public.fingerprint(HashAlg::Sha256).to_string(), socket })
            }
        }
    }

    fn sign(&self, data: &[u8]) -> Result<Signature, SignerError> {
        let signed =
            client(&self.socket)?.sign_with_ref(&self.identity, data).map_err(|e| agent_error(&self.socket, &e))?;
        // From the agent crate's `ssh-key` to this one's: the same algorithm name and signature blob.
        let algorithm = Algorithm::new(signed.algorithm().as_str()).map_err(|e| SignerError::Sign(e.to_string()))?;
        Signature::new(algorithm, signed.as_bytes().to_vec()).map_err(|e| SignerError::Sign(e.to_string()))
    }
}

fn agent_error(socket: &Path, e: &dyn std::fmt::Display) -> SignerError {
    SignerError::Agent { socket: socket.to_path_buf(), detail: e.to_string() }
}

/// A connection to the agent, made here rather than by the crate so that an agent that never answers cannot hold
/// a snapshot.
fn client(socket: &Path) -> Result<ssh_agent_client_rs::Client, SignerError> {
    let stream = UnixStream::connect(socket).map_err(|e| agent_error(socket, &e))?;
    stream.set_read_timeout(Some(AGENT_TIMEOUT)).map_err(|e| agent_error(socket, &e))?;
    stream.set_write_timeout(Some(AGENT_TIMEOUT)).map_err(|e| agent_error(socket, &e))?;
    Ok(ssh_agent_client_rs::Client::with_read_write(Box::new(stream)))
}

/// `ssh-ed25519 AAAA...` without the comment.
fn key_part(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn check_algorithm(alg: &Algorithm) -> Result<(), SignerError> {
    match alg {
        Algorithm::Ed25519 | Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 } => Ok(()),
        other => Err(SignerError::Algorithm(other.as_str().to_string())),
    }
}

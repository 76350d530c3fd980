//! Sealed evidence: a bundle signed in the SSH signature format, stamped by an RFC 3161 time-stamp authority, and
//! followed by a hash-chained, signed custody record, each a side file beside the archive that a reader checks
//! with tools they already have (`ssh-keygen -Y verify`, `openssl ts -verify`, `sha256sum`).

pub mod allowed;
pub mod custody;
pub mod signer;
pub mod timestamp;
pub mod verify;

use std::{io::Read, path::Path, sync::Arc};

use serde::Serialize;

use crate::{
    bundle::outdir::{OutDir, PrivateDir},
    config::SealSettings,
};
use custody::{Action, NewEntry};
use signer::{NAMESPACE, Signer};

/// The digest of the archive at `archive`, read once more through a handle that follows no link: for a signature
/// made by hand (SHA-512), and for a custody entry added later (about the archive as it is now).
fn digest_of<D: sha2::Digest>(archive: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = crate::bundle::outdir::open_no_follow(archive)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!("{} is not a regular file", archive.display())));
    }
    let (mut h, mut buf) = (D::new(), vec![0u8; 1 << 20]);
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(h.finalize().to_vec()),
            n => h.update(&buf[..n]),
        }
    }
}

/// The age identities in the file at `path`: an age identity file (`AGE-SECRET-KEY-1...` lines), or an unencrypted
/// OpenSSH private key (Ed25519 or RSA). Read bounded, never through a link.
pub fn identities(path: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, String> {
    let shown = path.display();
    let bytes = match read_side_file(path, 1 << 20) {
        Ok(Some(b)) => b,
        Ok(None) => return Err(format!("{shown}: no such file")),
        Err(why) => return Err(format!("{shown}: {why}")),
    };
    if let Ok(file) = age::IdentityFile::from_buffer(&bytes[..])
        && let Ok(ids) = file.into_identities()
        && !ids.is_empty()
    {
        return Ok(ids);
    }
    match age::ssh::Identity::from_buffer(&bytes[..], Some(shown.to_string())) {
        Ok(age::ssh::Identity::Unencrypted(k)) => Ok(vec![Box::new(age::ssh::Identity::Unencrypted(k))]),
        Ok(age::ssh::Identity::Encrypted(_)) => {
            Err(format!("{shown}: a passphrase-protected SSH key; decrypt a copy with ssh-keygen -p, or use age -d"))
        }
        _ => Err(format!("{shown}: neither an age identity file nor an OpenSSH private key age can use")),
    }
}

/// A SHA-256 given in hex, as bytes.
fn digest32(hex_sha256: &str) -> Option<[u8; 32]> {
    hex::decode(hex_sha256).ok().and_then(|d| d.try_into().ok())
}

/// A seal side file beside an archive, bounded by `cap` and never through a link (`bounds::read_side`); `None`
/// when it is absent, `Err` saying why it was left unread.
fn read_side_file(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, String> {
    use crate::bundle::bounds::{Side, read_side};
    match read_side(path, cap, "") {
        Ok(Side::Absent) => Ok(None),
        Ok(Side::Read(b)) => Ok(Some(b)),
        Ok(Side::Unread(why)) => Err(why.to_string()),
        Err(e) => Err(format!("cannot read: {e}")),
    }
}

/// One part of a bundle's seal, as sealing left it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Part {
    /// `[seal]` does not ask for it.
    #[default]
    NotConfigured,
    /// Written beside the archive.
    Written {
        file: String,
        #[serde(flatten)]
        detail: serde_json::Value,
    },
    /// Asked for, and not made: the bundle is whole without it.
    Missing { why: String },
}

impl Part {
    fn written(file: String, detail: serde_json::Value) -> Self {
        Self::Written { file, detail }
    }
    pub fn missing(&self) -> Option<&str> {
        match self {
            Self::Missing { why } => Some(why),
            _ => None,
        }
    }
}

/// How a bundle was sealed; written beside it as `<id>.seal.json`, and part of the snapshot's summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SealRecord {
    pub signature: Part,
    pub timestamp: Part,
    pub custody: Part,
}

impl SealRecord {
    /// Every part `settings` asks for missing, for `why`; the others not configured.
    pub fn missing_as_asked(settings: &SealSettings, why: &str) -> Self {
        let part = |asked: bool| match asked {
            true => Part::Missing { why: why.to_string() },
            false => Part::NotConfigured,
        };
        let signed = settings.signer.is_some();
        Self { signature: part(signed), timestamp: part(settings.tsa.is_some()), custody: part(signed) }
    }

    /// Whether a part `[seal]` asks for is missing.
    pub fn incomplete(&self) -> bool {
        [&self.signature, &self.timestamp, &self.custody].iter().any(|p| p.missing().is_some())
    }

    /// Whether `[seal]` asked for anything.
    pub fn configured(&self) -> bool {
        [&self.signature, &self.timestamp, &self.custody].iter().any(|p| !matches!(p, Part::NotConfigured))
    }

    /// Each missing part: `(code, why)`, for findings and log lines.
    pub fn missing(&self) -> Vec<(&'static str, String)> {
        [
            ("seal.signature_missing", &self.signature),
            ("seal.timestamp_missing", &self.timestamp),
            ("seal.custody_missing", &self.custody),
        ]
        .into_iter()
        .filter_map(|(code, p)| p.missing().map(|w| (code, w.to_string())))
        .collect()
    }

    /// One line for people: `signed SHA256:..., timestamped 2026-..., custody 1 entry`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let field = |p: &Part, k: &str| match p {
            Part::Written { detail, .. } => detail.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string(),
            _ => String::new(),
        };
        match &self.signature {
            Part::Written { .. } => parts.push(format!("signed by {}", field(&self.signature, "key"))),
            Part::Missing { why } => parts.push(format!("NOT signed: {why}")),
            Part::NotConfigured => {}
        }
        match &self.timestamp {
            Part::Written { .. } => parts.push(format!("timestamped {}", field(&self.timestamp, "time"))),
            Part::Missing { why } => parts.push(format!("NOT timestamped: {why}")),
            Part::NotConfigured => {}
        }
        if let Part::Missing { why } = &self.custody {
            parts.push(format!("no custody record: {why}"));
        }
        if parts.is_empty() { "not sealed ([seal] is not configured)".into() } else { parts.join("; ") }
    }
}

/// Seals bundles as `[seal]` says. Made while the collectors run (the key read, the agent asked), so a slow agent
/// costs no time; a key that cannot sign never stops the evidence from being collected: the bundle is then written
/// unsigned, and why is said with the other missing parts.
#[derive(Debug)]
pub struct Sealer {
    signer: Option<Result<Signer, String>>,
    settings: SealSettings,
    host: String,
}

impl Sealer {
    pub fn prepare(settings: &SealSettings) -> Self {
        let signer = settings.signer.as_ref().map(|s| Signer::load(s).map_err(|e| e.to_string()));
        Self { signer, settings: settings.clone(), host: gethostname::gethostname().to_string_lossy().into_owned() }
    }

    /// The signature and the custody record's first entry.
    fn sign(&self, staging: &PrivateDir, out: &OutDir, id: &str, sha256_hex: &str, digest: &[u8; 32]) -> (Part, Part) {
        let [sig_name, _, custody_name, _] = crate::bundle::writer::seal_file_names(id, self.settings.encrypted());
        let signer = match &self.signer {
            None => return (Part::NotConfigured, Part::NotConfigured),
            Some(Err(why)) => {
                return (Part::Missing { why: why.clone() }, Part::Missing { why: "no key to sign it with".into() });
            }
            Some(Ok(signer)) => signer,
        };
        let signature = match signer.sign_sha256(NAMESPACE, digest).map_err(|e| e.to_string()).and_then(|pem| {
            staging.write_into(out, &sig_name, pem.as_bytes()).map_err(|e| format!("cannot write {sig_name}: {e}"))
        }) {
            Ok(()) => Part::written(
                sig_name,
                serde_json::json!({
                    "key": signer.fingerprint(),
                    "algorithm": signer.public_key().algorithm().as_str(),
                    "namespace": NAMESPACE,
                }),
            ),
            Err(why) => Part::Missing { why },
        };
        let actor = self.settings.actor.clone().unwrap_or_else(|| format!("preserve@{}", self.host));
        let new = NewEntry { action: Action::Sealed, actor: &actor, note: "", bundle_sha256: sha256_hex };
        let custody = match custody::make_line(signer, None, 1, &new, &self.host).map_err(|e| e.to_string()).and_then(
            |mut line| {
                line.push(b'\n');
                staging.write_into(out, &custody_name, &line).map_err(|e| format!("cannot write {custody_name}: {e}"))
            },
        ) {
            Ok(()) => Part::written(custody_name, serde_json::json!({ "entries": 1, "actor": actor })),
            Err(why) => Part::Missing { why },
        };
        (signature, custody)
    }

    /// Signs, stamps and starts the custody record of the finished archive `id` (SHA-256 `sha256_hex`), writing
    /// each side file through `staging` into `out`. Whatever fails is recorded, never raised: the archive stands.
    /// When the run was `stopped` (SIGTERM, the sidecar's grace running out) the TSA is not asked, as a slow one
    /// would outlast the grace: the bundle is signed, and left unstamped with that reason.
    pub async fn seal(
        self: Arc<Self>,
        staging: Arc<PrivateDir>,
        out: Arc<OutDir>,
        id: &str,
        sha256_hex: &str,
        stopped: bool,
    ) -> SealRecord {
        let Some(digest) = digest32(sha256_hex) else {
            return SealRecord::missing_as_asked(&self.settings, "the archive's SHA-256 is not known");
        };
        let mut record = SealRecord::default();
        let [_, tsr_name, _, seal_name] = crate::bundle::writer::seal_file_names(id, self.settings.encrypted());
        if self.signer.is_some() {
            // An agent may take its time (a hardware key waits for a touch): off the runtime's threads.
            let (me, st, o, id, sha) =
                (self.clone(), staging.clone(), out.clone(), id.to_string(), sha256_hex.to_string());
            let signed = tokio::task::spawn_blocking(move || me.sign(&st, &o, &id, &sha, &digest)).await;
            (record.signature, record.custody) = signed.unwrap_or_else(|e| {
                let why = format!("signing stopped: {e}");
                (Part::Missing { why: why.clone() }, Part::Missing { why })
            });
        }
        if self.settings.tsa.is_some() && stopped {
            record.timestamp = Part::Missing { why: "the snapshot was stopped: the TSA was not asked".into() };
        } else if let Some(tsa) = &self.settings.tsa {
            record.timestamp = match timestamp::stamp(tsa, &digest).await {
                Ok((tsr, stamp)) => match staging.write_into(&out, &tsr_name, &tsr) {
                    Ok(()) => Part::written(
                        tsr_name.clone(),
                        serde_json::json!({ "time": stamp.time.to_string(), "tsa": stamp.tsa, "url": tsa.url, "serial": stamp.serial }),
                    ),
                    Err(e) => Part::Missing { why: format!("cannot write {tsr_name}: {e}") },
                },
                Err(e) => Part::Missing { why: e.to_string() },
            };
        }
        if let Ok(json) = serde_json::to_vec_pretty(&record) {
            let _ = staging.write_into(&out, &seal_name, &json);
        }
        record
    }
}

/// What signs the upload's custody entry of the bundle at `archive`: the sealing key, when `[seal]` has one and the
/// bundle has a custody record to extend. Loading the key may wait on an agent: call it off the runtime's threads.
pub fn custody_signer(settings: &SealSettings, archive: &Path) -> Option<Sealer> {
    let has_record = custody::path_of(archive).is_some_and(|p| p.is_file());
    (settings.signer.is_some() && has_record).then(|| Sealer::prepare(settings))
}

/// The upload's custody entry (`uploaded`), signed with the key that sealed the bundle, appended to its record
/// before the record goes to the store with the archive.
impl crate::store::upload::Custody for Sealer {
    fn uploaded(&self, archive: &Path, sha256: &str, note: &str) -> Result<(), String> {
        let Some(Ok(signer)) = &self.signer else { return Err("no key to sign the entry with".into()) };
        let path = custody::path_of(archive).ok_or("not a bundle's name")?;
        let actor = self.settings.actor.clone().unwrap_or_else(|| format!("preserve@{}", self.host));
        let new = NewEntry { action: Action::Uploaded, actor: &actor, note, bundle_sha256: sha256 };
        custody::append(&path, signer, &new, &self.host).map(|_| ()).map_err(|e| e.to_string())
    }
}

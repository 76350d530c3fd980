//! The site config (`preserve.toml`) as the operator writes it: where the systems are, credentials by reference, the
//! output directory, run and sidecar limits. Every field is optional; `Environment` applies the environment
//! and the defaults. Unknown keys are errors located by file, line and key.

use std::{collections::BTreeMap, path::PathBuf};

use bytesize::ByteSize;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use super::credential::CredentialRef;

/// `preserve.toml` as written by the operator. Every field is optional; the defaults match a Caracal Compose host.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Directory bundles are written into (default `./evidence`; env `PRESERVE_OUT`).
    pub out_dir: Option<PathBuf>,
    /// Recorded as `Source-Organization` in `bag-info.txt`.
    pub organization: Option<String>,
    /// Caracal's home: `compose.yml`, `caracal.env`, `secrets/` (env `CARACAL_HOME`).
    pub caracal_home: Option<PathBuf>,
    /// Docker's containers directory, for json-file logs (env `PRESERVE_DOCKER_DIR`).
    pub docker_dir: Option<PathBuf>,
    /// Directories of extra collector and profile TOML files, read after the built-in ones.
    #[serde(default)]
    pub collectors_dirs: Vec<PathBuf>,
    /// Further credentials whose values must never appear in a bundle, even if a log or command prints them.
    #[serde(default)]
    pub redact_secrets: Vec<CredentialRef>,
    /// Variables usable as `${name}` in collector paths and arguments.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub run: RunConfig,
    #[serde(default)]
    pub redis: StoreConfig,
    #[serde(default)]
    pub postgres: StoreConfig,
    /// Base URLs of each instance of a service (one per pod or replica).
    #[serde(default)]
    pub services: ServicesConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub serve: ServeConfig,
    #[serde(default)]
    pub redaction: RedactionConfig,
    /// Caracal installed by its Helm chart: present, log collectors read pod logs through the Kubernetes API and
    /// services without a static `[services]` list are discovered from their EndpointSlices.
    pub kubernetes: Option<KubernetesConfig>,
    /// Sealing every bundle: an SSH signature, an RFC 3161 timestamp and the first custody entry.
    #[serde(default)]
    pub seal: SealConfig,
    /// Off-host storage: every bundle uploaded to S3-compatible object storage as it is written.
    pub store: Option<ObjectStoreConfig>,
}

/// Where bundles are uploaded (`[store]`): an S3 bucket and prefix, with the credentials of the standard AWS chain
/// (environment, shared config and profile, web identity, instance metadata); none is written here.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// `s3://bucket/prefix`.
    pub url: String,
    /// An S3-compatible endpoint (`https://minio.internal:9000`); default: AWS's, from the region.
    pub endpoint: Option<String>,
    /// Default: the AWS chain's (`AWS_REGION`, the profile), else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores need. Default: on when
    /// `endpoint` is set, off for AWS.
    pub path_style: Option<bool>,
    /// A named profile of the shared AWS config and credentials files.
    pub profile: Option<String>,
    /// Size of each part of the multipart upload (default 8MiB, at least 5MiB): the memory an upload holds per part.
    pub part_size: Option<ByteSize>,
    /// Object Lock on every object uploaded: `GOVERNANCE` or `COMPLIANCE`. The bucket must have Object Lock.
    pub lock_mode: Option<String>,
    /// Days each object is retained under `lock_mode`.
    pub retain_days: Option<u32>,
    /// A legal hold on every object uploaded (needs a bucket with Object Lock).
    #[serde(default)]
    pub legal_hold: bool,
    /// Attempts for each request before the upload is called failed (default 5), with exponential backoff.
    pub max_attempts: Option<u32>,
    /// How soon the sidecar uploads again a bundle whose upload failed (default 1m, doubling while it fails, up to
    /// an hour).
    pub retry_every: Option<SignedDuration>,
}

/// How bundles are sealed (`[seal]`). Without `signing_key` or `agent_key` bundles are not signed and get no custody
/// record; without `tsa_url` they are not timestamped.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    /// An OpenSSH private key (Ed25519 or ECDSA P-256, not passphrase-protected), by reference:
    /// `file:/etc/preserve/seal_ed25519` or `env:NAME`.
    pub signing_key: Option<CredentialRef>,
    /// Sign through the SSH agent instead, with the key it holds that has this public key: an OpenSSH public key
    /// line (`ssh-ed25519 AAAA...`) or the path of a `.pub` file. The private key never needs to be on the host.
    pub agent_key: Option<String>,
    /// The agent's socket (default `SSH_AUTH_SOCK`).
    pub agent_socket: Option<PathBuf>,
    /// An RFC 3161 time-stamp authority to stamp every bundle's SHA-256 (`http://` or `https://`).
    pub tsa_url: Option<String>,
    /// PEM file of the certificate authority (or authorities) the TSA's certificate must chain to: checked on every
    /// token received. Without it a token is checked for its digest and signature only.
    pub tsa_ca_file: Option<PathBuf>,
    /// Limit for the whole exchange with the TSA (default 10s); past it the bundle is left unstamped.
    pub tsa_timeout: Option<SignedDuration>,
    /// Who this host's custody entries name as the actor (default `preserve@<hostname>`).
    pub actor: Option<String>,
    /// Encrypt every archive for these recipients (the age format): `age1...` X25519 recipients and SSH public keys
    /// (`ssh-ed25519 AAAA...`, `ssh-rsa AAAA...`). The archive is then `<id>.tar.zst.age`; its hash and signature
    /// cover the ciphertext.
    #[serde(default)]
    pub recipients: Vec<String>,
}

/// The Kubernetes API and the Caracal release on it (`[kubernetes]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file to use; without it `KUBECONFIG` (or `~/.kube/config`) is read, then the in-cluster
    /// service account (`KUBERNETES_SERVICE_HOST`, its token and CA).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    pub context: Option<String>,
    /// The namespace Caracal is installed in (default: the context's namespace, or the service account's own).
    pub namespace: Option<String>,
    /// The Helm release name (default `caracal`); objects are named `<release>-caracal-<service>`.
    pub release: Option<String>,
    /// Limit for each API request and for each read of a log stream (default 30s).
    pub request_timeout: Option<SignedDuration>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Limit for the whole collection phase (default 10m).
    pub timeout: Option<SignedDuration>,
    /// Default limit for one collector, when the collector sets none (default 2m).
    pub collector_timeout: Option<SignedDuration>,
    /// zstd level of the archive (default 1).
    pub zstd_level: Option<i32>,
    /// Write `report.html` into every bundle, made while the artifacts are collected (docs/timeline.md). Off by
    /// default for now: it costs about a fifth of an `audit-tamper` snapshot at a million ledger rows, where its
    /// target is 5% (docs/performance.md). `preserve report BUNDLE -o FILE` makes the same page for any bundle.
    #[serde(default)]
    pub report: bool,
}

/// A Redis or Postgres endpoint: URL without a password, and the password by reference.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<CredentialRef>,
    /// Redis: a PEM file of the certificate authorities a `rediss://` server's certificate is checked against,
    /// instead of the public web's (a private CA, as in-cluster TLS has). Postgres takes `sslrootcert` in its URL.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesConfig {
    pub sts: Option<Vec<String>>,
    pub gateway: Option<Vec<String>>,
    pub audit: Option<Vec<String>>,
    pub api: Option<Vec<String>>,
    pub coordinator: Option<Vec<String>>,
    pub web: Option<Vec<String>>,
    pub alertmanager: Option<Vec<String>>,
}

impl ServicesConfig {
    pub(super) fn get(&self, service: &str) -> Option<&Vec<String>> {
        match service {
            "sts" => self.sts.as_ref(),
            "gateway" => self.gateway.as_ref(),
            "audit" => self.audit.as_ref(),
            "api" => self.api.as_ref(),
            "coordinator" => self.coordinator.as_ref(),
            "web" => self.web.as_ref(),
            "alertmanager" => self.alertmanager.as_ref(),
            _ => None,
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Key for checking `chain_hmac` of the audit ledger (env `AUDIT_HMAC_KEY` holds the hex value itself).
    pub hmac_key: Option<CredentialRef>,
}

/// How redaction markers are made (`[redaction]`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// The site's fingerprint key, by reference (`file:/etc/preserve/fingerprint.key`; env
    /// `PRESERVE_FINGERPRINT_KEY`, a reference or the value): at least 32 bytes, e.g. from `openssl rand -hex 32`.
    /// Markers are keyed by it, so the same secret reads as the same marker in every bundle of the site (a config
    /// diff against the previous bundle shows whether a secret changed), and only its holder can check a candidate
    /// value (`preserve fingerprint`). It never enters a bundle. Without it each bundle is keyed by a random key
    /// that is written nowhere.
    pub fingerprint_key: Option<CredentialRef>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address `preserve serve` listens on (default `0.0.0.0:9731`; env `PRESERVE_LISTEN`).
    pub listen: Option<String>,
    /// Bearer token Alertmanager must send (env `PRESERVE_SERVE_TOKEN`).
    pub token: Option<CredentialRef>,
    /// Rules mapping alerts to profiles, tried in order before the profiles' own `alerts` lists; the first rule
    /// that matches an alert decides its profile.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Whether the profiles' `alerts` lists (collectors/profiles.toml) apply after `rules` (default true).
    pub default_rules: Option<bool>,
    /// A repeat of the same alert (profile, fingerprint, startsAt) within this time takes no new snapshot
    /// (default 30m).
    pub cooldown: Option<SignedDuration>,
    /// Snapshots that may wait for their turn; beyond that a webhook is answered 503 (default 8).
    pub queue: Option<usize>,
    /// Snapshots that may run at the same time, each of a different profile (default 1).
    pub concurrency: Option<usize>,
    /// Largest webhook body accepted; larger ones are answered 413 (default 1 MiB).
    pub body_limit: Option<ByteSize>,
    /// After SIGTERM: how long running snapshots get before the process exits; they are stopped and written as
    /// partial bundles half-way through it (default 25s, inside Kubernetes' default 30s).
    pub grace: Option<SignedDuration>,
    /// Connections served at once (default 128); more wait in the kernel's listen backlog until one closes.
    pub max_connections: Option<usize>,
    /// Of those, connections one client address may hold (default 32; an IPv6 client's whole /64 counts as one):
    /// one more from it is closed at once with a 503, so one host cannot take every place. Behind a proxy or a
    /// service mesh every client has the proxy's address; raise it to `max_connections` there.
    pub max_connections_per_client: Option<usize>,
    /// Time a client gets to send a request's headers, counted from when the sidecar waits for them: a new
    /// connection, or the next request of a kept-alive one, which is closed when idle that long (default 10s).
    pub header_timeout: Option<SignedDuration>,
    /// Time a client gets to send a webhook's whole body once its headers are in; slower ones are answered 408 and
    /// closed (default 30s).
    pub body_timeout: Option<SignedDuration>,
    /// Time an answer may wait for the client to take it in; a client that stops reading is closed after it
    /// (default 30s).
    pub write_timeout: Option<SignedDuration>,
    /// Alerts remembered as answered for de-duplication within `cooldown`; past it the oldest are forgotten
    /// first (default 10000).
    pub remembered_alerts: Option<usize>,
    /// Runs `GET /snapshots` lists, newest first (default 100).
    pub listed_snapshots: Option<usize>,
    /// Alerts `GET /snapshots` shows per run (default 20); `alerts_total` gives how many it carries.
    pub listed_alerts: Option<usize>,
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// One alert-to-profile rule of `[[serve.rules]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The profile to run when the rule matches.
    pub profile: String,
    /// Alertmanager matchers over the alert's labels, all of which must hold: `name="value"`, `name!="value"`,
    /// `name=~"regex"`, `name!~"regex"` (regexes anchored at both ends, as in Alertmanager).
    pub matchers: Vec<String>,
}

/// How many bundles `preserve serve` keeps in the output directory (`[serve.retention]`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Most bundles kept (default 50); the oldest go first.
    pub max_bundles: Option<usize>,
    /// Most bytes of bundles kept (default 10 GiB).
    pub max_bytes: Option<ByteSize>,
    /// A bundle younger than this is never deleted, whatever the limits (default 1h): nobody has copied it yet.
    pub min_age: Option<SignedDuration>,
}

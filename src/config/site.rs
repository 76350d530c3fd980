//! The site config (`preserve.toml`): where the systems are, credentials by reference, the output directory and
//! run limits. Resolved together with the environment variables of the design into an [`Environment`], which is
//! what collectors see. Unknown keys are errors located by file, line and key.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use bytesize::ByteSize;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use super::{ConfigError, CredentialRef, Secret};

/// The services of Caracal and their default local base URLs on a Compose host.
pub const SERVICES: &[(&str, &str)] = &[
    ("sts", "http://127.0.0.1:8080"),
    ("gateway", "http://127.0.0.1:8081"),
    ("audit", "http://127.0.0.1:9090"),
    ("api", "http://127.0.0.1:3000"),
    ("coordinator", "http://127.0.0.1:4000"),
    ("web", "http://127.0.0.1:3001"),
    // Not Caracal's: the operator's Alertmanager, for the alert context (caracal.md §3, §7.1).
    ("alertmanager", "http://127.0.0.1:9093"),
];

/// Caracal's default `AUDIT_REPLAY_DIR` in the STS and Gateway containers.
pub const DEFAULT_REPLAY_DIR: &str = "/var/lib/caracal/audit-replay";

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
    fn get(&self, service: &str) -> Option<&Vec<String>> {
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

/// `[serve]` after defaults.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub rules: Vec<RuleConfig>,
    pub default_rules: bool,
    pub cooldown: SignedDuration,
    pub queue: usize,
    pub concurrency: usize,
    pub body_limit: u64,
    pub grace: SignedDuration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub header_timeout: std::time::Duration,
    pub body_timeout: std::time::Duration,
    pub write_timeout: std::time::Duration,
    pub remembered_alerts: usize,
    pub listed_snapshots: usize,
    pub listed_alerts: usize,
    pub retention: Retention,
}

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_bundles: usize,
    pub max_bytes: u64,
    pub min_age: SignedDuration,
}

impl ServeSettings {
    fn resolve(c: ServeConfig) -> Result<Self, String> {
        let positive = |name: &str, d: Option<SignedDuration>, default: u64| match d {
            None => Ok(std::time::Duration::from_secs(default)),
            Some(d) if d.is_positive() => Ok(d.unsigned_abs()),
            Some(d) => Err(format!("serve.{name} must be more than 0 (it is {d:#})")),
        };
        let s = Self {
            rules: c.rules,
            default_rules: c.default_rules.unwrap_or(true),
            cooldown: c.cooldown.unwrap_or(SignedDuration::from_mins(30)),
            queue: c.queue.unwrap_or(8),
            concurrency: c.concurrency.unwrap_or(1),
            body_limit: c.body_limit.map_or(1 << 20, |b| b.as_u64()),
            grace: c.grace.unwrap_or(SignedDuration::from_secs(25)),
            max_connections: c.max_connections.unwrap_or(128),
            max_connections_per_client: c.max_connections_per_client.unwrap_or(32),
            header_timeout: positive("header_timeout", c.header_timeout, 10)?,
            body_timeout: positive("body_timeout", c.body_timeout, 30)?,
            write_timeout: positive("write_timeout", c.write_timeout, 30)?,
            remembered_alerts: c.remembered_alerts.unwrap_or(10_000),
            listed_snapshots: c.listed_snapshots.unwrap_or(100),
            listed_alerts: c.listed_alerts.unwrap_or(20),
            retention: Retention {
                max_bundles: c.retention.max_bundles.unwrap_or(50),
                max_bytes: c.retention.max_bytes.map_or(10 << 30, |b| b.as_u64()),
                min_age: c.retention.min_age.unwrap_or(SignedDuration::from_hours(1)),
            },
        };
        if s.concurrency == 0 || s.queue == 0 || s.body_limit == 0 {
            return Err("serve.concurrency, serve.queue and serve.body_limit must be at least 1".into());
        }
        for (name, n) in [
            ("max_connections", s.max_connections),
            ("max_connections_per_client", s.max_connections_per_client),
            ("remembered_alerts", s.remembered_alerts),
            ("listed_snapshots", s.listed_snapshots),
            ("listed_alerts", s.listed_alerts),
        ] {
            if n == 0 {
                return Err(format!("serve.{name} must be at least 1"));
            }
        }
        if s.cooldown.is_negative() || s.retention.min_age.is_negative() {
            return Err("serve.cooldown and serve.retention.min_age must not be negative".into());
        }
        // Writing the partial bundle of a stopped snapshot takes a moment: no grace would lose it.
        if s.grace < SignedDuration::from_secs(2) {
            return Err(
                "serve.grace must be at least 2s: stopped snapshots need time to write their partial bundles".into()
            );
        }
        Ok(s)
    }
}

/// A Redis or Postgres endpoint after defaults and environment. `url` may carry credentials (from an environment
/// variable); it is never printed: `display` is the same URL with them removed.
#[derive(Clone)]
pub struct Endpoint {
    url: String,
    pub display: String,
    pub username: Option<String>,
    pub password: Option<CredentialRef>,
    /// The password is Caracal's default secret file, not something the operator configured: when that file does
    /// not exist, connect without a password rather than fail.
    pub password_is_default: bool,
    /// Redis: the CA file TLS checks the server against (`[redis] ca_file`).
    pub ca_file: Option<PathBuf>,
}

impl Endpoint {
    /// The connection URL, possibly with credentials. Never log it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// Where a value came from, for `AUDIT_HMAC_KEY`, the serve token and the fingerprint key, which may be given as a
/// value in the environment.
#[derive(Debug, Clone)]
pub enum KeySource {
    Value(Secret),
    Reference(CredentialRef),
}

impl KeySource {
    pub fn resolve(&self) -> Result<Secret, super::CredentialError> {
        match self {
            KeySource::Value(s) => Ok(s.clone()),
            KeySource::Reference(r) => r.resolve(),
        }
    }
}

/// Everything collectors may know about the site, resolved from config file, environment and defaults.
#[derive(Debug, Clone)]
pub struct Environment {
    pub config_file: Option<PathBuf>,
    /// The config file's text as read, for the context collector (which redacts it).
    pub config_text: Option<String>,
    pub out_dir: PathBuf,
    pub organization: String,
    pub caracal_home: PathBuf,
    /// Who named `caracal_home` (`CARACAL_HOME`, or `caracal_home` in the config file); `None`: the default.
    pub caracal_home_set_by: Option<String>,
    pub docker_dir: PathBuf,
    pub collectors_dirs: Vec<PathBuf>,
    pub vars: BTreeMap<String, String>,
    pub run_timeout: SignedDuration,
    pub collector_timeout: SignedDuration,
    pub zstd_level: i32,
    pub redis: Endpoint,
    pub postgres: Endpoint,
    pub services: BTreeMap<String, Vec<String>>,
    pub audit_hmac_key: Option<KeySource>,
    pub listen: String,
    pub serve_token: Option<KeySource>,
    pub serve: ServeSettings,
    /// The site's fingerprint key (`[redaction] fingerprint_key`), resolved when a snapshot is planned.
    pub fingerprint_key: Option<KeySource>,
    /// Credential references whose values the redactor must know before anything is collected, with the
    /// setting that names each (`redis.password`, `redact_secrets[0]`, ...).
    pub redact_refs: Vec<(String, CredentialRef)>,
    /// Secret values that arrived inside environment variables (URL passwords, keys given as values).
    pub env_secrets: Vec<(String, Secret)>,
}

/// Reads the process environment; a seam so tests of resolution need not mutate global state.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Environment {
    /// Loads the site config from `path` (or `PRESERVE_CONFIG`, or none) and applies environment and defaults.
    pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let path = path.map(Path::to_path_buf).or_else(|| env.var("PRESERVE_CONFIG").map(PathBuf::from));
        let (config, text) = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::new(p, format!("cannot read site config: {e}")))?;
                let config: SiteConfig = toml::from_str(&text).map_err(|e| ConfigError::from_toml(p, &text, &e))?;
                (config, Some(text))
            }
            None => (SiteConfig::default(), None),
        };
        let file = path.clone().unwrap_or_else(|| PathBuf::from("<defaults>"));
        Self::resolve(config, file, path, text, env)
    }

    fn resolve(
        mut c: SiteConfig,
        file: PathBuf,
        config_file: Option<PathBuf>,
        config_text: Option<String>,
        env: &dyn EnvSource,
    ) -> Result<Self, ConfigError> {
        let err = |m: String| ConfigError::new(&file, m);
        let (caracal_home, caracal_home_set_by) = match (env.var("CARACAL_HOME"), c.caracal_home) {
            (Some(v), _) => (PathBuf::from(v), Some("CARACAL_HOME".to_string())),
            (None, Some(p)) => (p, Some(format!("caracal_home in {}", file.display()))),
            (None, None) => (default_caracal_home(env), None),
        };
        let docker_dir = env
            .var("PRESERVE_DOCKER_DIR")
            .map(PathBuf::from)
            .or(c.docker_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/docker/containers"));
        let out_dir = env.var("PRESERVE_OUT").map(PathBuf::from).or(c.out_dir).unwrap_or_else(|| "evidence".into());
        let secrets_dir = caracal_home.join("secrets");
        let mut env_secrets = Vec::new();

        let redis = endpoint(
            "redis",
            env.var("PRESERVE_REDIS_URL"),
            c.redis,
            "redis://127.0.0.1:6379/0",
            Some(CredentialRef::File(secrets_dir.join("redisPassword"))),
            &mut env_secrets,
        )
        .map_err(err)?;
        let postgres = endpoint("postgres", env.var("PRESERVE_POSTGRES_URL"), c.postgres, "", None, &mut env_secrets)
            .map_err(err)?;
        // Caracal's Compose install renders its database URL, password included, into secrets/databaseUrl.
        let postgres = if postgres.url.is_empty() {
            Endpoint {
                url: String::new(),
                display: format!("(from {})", secrets_dir.join("databaseUrl").display()),
                username: None,
                password: Some(CredentialRef::File(secrets_dir.join("databaseUrl"))),
                password_is_default: true,
                ca_file: None,
            }
        } else {
            postgres
        };

        let mut services = BTreeMap::new();
        for (name, default) in SERVICES {
            let var = format!("PRESERVE_{}_URLS", name.to_ascii_uppercase());
            let urls = match env.var(&var) {
                Some(v) => v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
                None => c.services.get(name).cloned().unwrap_or_else(|| vec![default.to_string()]),
            };
            for u in &urls {
                if let Some(clean) = strip_password(u)
                    && clean != *u
                {
                    return Err(err(format!(
                        "{var} / services.{name}: base URLs must not carry credentials ({clean})"
                    )));
                }
            }
            services.insert(name.to_string(), urls);
        }

        let audit_hmac_key = match env.var("AUDIT_HMAC_KEY") {
            Some(v) => {
                env_secrets.push(("AUDIT_HMAC_KEY".into(), Secret::new(v.clone())));
                Some(KeySource::Value(Secret::new(v)))
            }
            None => c.audit.hmac_key.map(KeySource::Reference),
        };
        let serve_token = match env.var("PRESERVE_SERVE_TOKEN") {
            Some(v) => match v.parse::<CredentialRef>() {
                Ok(r) => Some(KeySource::Reference(r)),
                Err(_) => {
                    env_secrets.push(("PRESERVE_SERVE_TOKEN".into(), Secret::new(v.clone())));
                    Some(KeySource::Value(Secret::new(v)))
                }
            },
            None => c.serve.token.take().map(KeySource::Reference),
        };
        let fingerprint_key = match env.var("PRESERVE_FINGERPRINT_KEY") {
            Some(v) => match v.parse::<CredentialRef>() {
                Ok(r) => Some(KeySource::Reference(r)),
                Err(_) => {
                    env_secrets.push(("PRESERVE_FINGERPRINT_KEY".into(), Secret::new(v.clone())));
                    Some(KeySource::Value(Secret::new(v)))
                }
            },
            None => c.redaction.fingerprint_key.take().map(KeySource::Reference),
        };

        let mut redact_refs: Vec<(String, CredentialRef)> =
            c.redact_secrets.into_iter().enumerate().map(|(i, r)| (format!("redact_secrets[{i}]"), r)).collect();
        redact_refs.extend(redis.password.clone().map(|r| ("redis.password".to_string(), r)));
        redact_refs.extend(postgres.password.clone().map(|r| ("postgres.password".to_string(), r)));
        for (setting, k) in [("audit.hmac_key", &audit_hmac_key), ("serve.token", &serve_token)] {
            if let Some(KeySource::Reference(r)) = k {
                redact_refs.push((setting.to_string(), r.clone()));
            }
        }

        let mut vars = c.vars;
        for (k, v) in [("caracal_home", &caracal_home), ("docker_dir", &docker_dir), ("out_dir", &out_dir)] {
            vars.entry(k.to_string()).or_insert_with(|| v.display().to_string());
        }
        // Where STS and Gateway persist audit batches (AUDIT_REPLAY_DIR, caracal.md §6.2); a host that mounts the
        // replay volumes elsewhere sets `[vars] replay_dir`.
        vars.entry("replay_dir".to_string()).or_insert_with(|| DEFAULT_REPLAY_DIR.to_string());

        let listen = env.var("PRESERVE_LISTEN").or(c.serve.listen.take());
        let serve = ServeSettings::resolve(std::mem::take(&mut c.serve)).map_err(err)?;
        let collector_timeout = c.run.collector_timeout.unwrap_or(SignedDuration::from_mins(2));
        let run_timeout = c.run.timeout.unwrap_or(SignedDuration::from_mins(10));
        if collector_timeout <= SignedDuration::ZERO || run_timeout <= SignedDuration::ZERO {
            return Err(err("run.timeout and run.collector_timeout must be positive".into()));
        }
        Ok(Self {
            config_file,
            config_text,
            out_dir,
            organization: c.organization.unwrap_or_else(|| "unspecified".into()),
            caracal_home,
            caracal_home_set_by,
            docker_dir,
            collectors_dirs: c.collectors_dirs,
            vars,
            run_timeout,
            collector_timeout,
            // Level 1: on Caracal's data (hex hashes, JSON) it compresses as well as 3 and takes a fifth less CPU,
            // which an incident snapshot on a busy host needs more (docs/performance.md).
            zstd_level: c.run.zstd_level.unwrap_or(1),
            redis,
            postgres,
            services,
            audit_hmac_key,
            listen: listen.unwrap_or_else(|| "0.0.0.0:9731".into()),
            serve_token,
            serve,
            fingerprint_key,
            redact_refs,
            env_secrets,
        })
    }

    /// One line for a run that found nothing of Caracal's because Caracal's home is not where preserve looked:
    /// the path, who named it, and what to do. `None` when the home exists.
    pub fn caracal_home_hint(&self) -> Option<String> {
        if self.caracal_home.is_dir() {
            return None;
        }
        let path = self.caracal_home.display();
        Some(match (&self.caracal_home_set_by, &self.config_file) {
            (Some(by), _) => format!("{by} names {path}, which does not exist"),
            (None, None) => format!("CARACAL_HOME not found ({path}): set it or pass --config"),
            (None, Some(f)) => {
                format!("CARACAL_HOME not found ({path}): set it, or caracal_home in {}", f.display())
            }
        })
    }

    /// Expands `${name}` from the site's variables; an unknown name is an error naming it.
    pub fn expand(&self, input: &str) -> Result<String, String> {
        expand_vars(input, &self.vars)
    }
}

fn default_caracal_home(env: &dyn EnvSource) -> PathBuf {
    match env.var("XDG_DATA_HOME") {
        Some(d) => PathBuf::from(d).join("caracal"),
        None => PathBuf::from(env.var("HOME").unwrap_or_else(|| "/root".into())).join(".local/share/caracal"),
    }
}

/// Builds an endpoint. A URL from the environment may carry a password (it is then a secret to redact); a URL in
/// the config file must not: its password belongs in `password = "env:..."`.
fn endpoint(
    what: &str,
    from_env: Option<String>,
    c: StoreConfig,
    default: &str,
    default_password: Option<CredentialRef>,
    env_secrets: &mut Vec<(String, Secret)>,
) -> Result<Endpoint, String> {
    if let Some(u) = &c.url
        && !url_passwords(u).is_empty()
    {
        return Err(format!(
            "{what}.url carries a password inline; remove it and set {what}.password = \"env:NAME\" or \"file:PATH\""
        ));
    }
    let in_env_url = from_env.as_deref().map(url_passwords).unwrap_or_default();
    let from_env_has_password = !in_env_url.is_empty();
    for p in in_env_url {
        env_secrets.push((format!("PRESERVE_{}_URL password", what.to_ascii_uppercase()), Secret::new(p)));
    }
    let url = from_env.or(c.url).unwrap_or_else(|| default.to_string());
    let display = strip_password(&url).unwrap_or_else(|| url.clone());
    let (password, password_is_default) = match (c.password, from_env_has_password) {
        (Some(p), _) => (Some(p), false),
        (None, true) => (None, false),
        (None, false) => (default_password.clone(), default_password.is_some()),
    };
    if c.ca_file.is_some() && what != "redis" {
        return Err(format!("{what}.ca_file: not a {what} setting; give sslrootcert=PATH in {what}.url"));
    }
    Ok(Endpoint { url, display, username: c.username, password, password_is_default, ca_file: c.ca_file })
}

/// Splits `scheme://userinfo@rest` at the userinfo. Lenient on purpose: an unencoded `/` or `@` in a password
/// must still be found (and hidden), so the last `@` before any `?` or `#` ends the userinfo.
fn split_userinfo(url: &str) -> Option<(&str, Option<&str>, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => Some((scheme, Some(&rest[..at]), &rest[at + 1..])),
        None => Some((scheme, None, rest)),
    }
}

/// The query parameters a scheme's client reads as a password: Redis's Unix-socket URLs `pass`
/// (`unix:///run/redis.sock?pass=...`), libpq-style URLs `password` (and `sslpassword`, a client key's).
fn password_params(scheme: &str) -> &'static [&'static str] {
    if is_libpq(scheme) {
        &["password", "sslpassword"]
    } else if scheme.eq_ignore_ascii_case("unix") || scheme.eq_ignore_ascii_case("redis+unix") {
        &["pass"]
    } else {
        &[]
    }
}

fn is_libpq(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
}

/// Every parameter name that may hold a password, whatever the scheme: removed from any URL shown.
const ANY_PASSWORD_PARAM: [&str; 3] = ["pass", "password", "sslpassword"];

/// Whether `#` ends the query: not in libpq-style URLs, whose parser reads a `#` as part of a value.
fn has_fragment(scheme: &str) -> bool {
    !is_libpq(scheme)
}

fn decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// A URL's query (after `?`, up to a fragment where the scheme has them), and what follows it.
fn split_query<'a>(scheme: &str, rest: &'a str) -> Option<(&'a str, &'a str, Option<&'a str>)> {
    let (path, query) = rest.split_once('?')?;
    Some(match query.split_once('#').filter(|_| has_fragment(scheme)) {
        Some((q, f)) => (path, q, Some(f)),
        None => (path, query, None),
    })
}

/// The passwords in a URL, each as written and as its client decodes it (percent-encoding; `+` for a space in a
/// query): its userinfo's, and every query parameter the scheme's client reads as one (a repeated one included: the
/// clients take the last).
pub fn url_passwords(url: &str) -> Vec<String> {
    let Some((scheme, userinfo, rest)) = split_userinfo(url) else { return Vec::new() };
    let mut found: Vec<String> = Vec::new();
    let mut add = |written: &str, plus_is_space: bool| {
        let mut forms = vec![written.to_string(), decoded(written)];
        if plus_is_space {
            forms.push(decoded(&written.replace('+', " ")));
        }
        for f in forms {
            if !f.is_empty() && !found.contains(&f) {
                found.push(f);
            }
        }
    };
    if let Some((_, pw)) = userinfo.and_then(|u| u.split_once(':')) {
        add(pw, false);
    }
    let params = password_params(scheme);
    if let Some((_, query, _)) = split_query(scheme, rest) {
        for (name, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
            if params.contains(&decoded(name).as_str()) {
                add(value, true);
            }
        }
    }
    found
}

/// The URL with its passwords removed, the userinfo's and any password query parameter (the user name is kept), or
/// `None` when it is not a URL.
pub fn strip_password(url: &str) -> Option<String> {
    let (scheme, userinfo, rest) = split_userinfo(url)?;
    let rest = match split_query(scheme, rest) {
        Some((path, query, fragment)) => {
            let is_password = |pair: &&str| {
                let name = decoded(pair.split_once('=').map_or(*pair, |(k, _)| k));
                ANY_PASSWORD_PARAM.iter().any(|p| name.eq_ignore_ascii_case(p))
            };
            let kept: Vec<&str> = query.split('&').filter(|pair| !is_password(pair)).collect();
            let mut out = path.to_string();
            if !kept.is_empty() {
                out = format!("{out}?{}", kept.join("&"));
            }
            if let Some(f) = fragment {
                out = format!("{out}#{f}");
            }
            out
        }
        None => rest.to_string(),
    };
    Some(match userinfo {
        Some(u) => match u.split_once(':').map_or(u, |(user, _)| user) {
            "" => format!("{scheme}://{rest}"),
            user => format!("{scheme}://{user}@{rest}"),
        },
        None => format!("{scheme}://{rest}"),
    })
}

/// `${name}` substitution; `$$` is a literal dollar.
pub fn expand_vars(input: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r.find('}').ok_or_else(|| format!("unclosed `${{` in `{input}`"))?;
            let name = &r[..end];
            let value = vars.get(name).ok_or_else(|| {
                format!(
                    "unknown variable `${{{name}}}` (known: {})",
                    vars.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            out.push_str(value);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl EnvSource for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    #[test]
    fn defaults_match_a_compose_host() {
        let env = MapEnv(HashMap::from([("HOME", "/home/op")]));
        let e = Environment::load(None, &env).unwrap();
        assert_eq!(e.caracal_home, PathBuf::from("/home/op/.local/share/caracal"));
        assert_eq!(e.redis.display, "redis://127.0.0.1:6379/0");
        assert_eq!(
            e.redis.password,
            Some(CredentialRef::File("/home/op/.local/share/caracal/secrets/redisPassword".into()))
        );
        assert_eq!(e.services["gateway"], vec!["http://127.0.0.1:8081"]);
        assert_eq!(e.out_dir, PathBuf::from("evidence"));
        assert_eq!(e.listen, "0.0.0.0:9731");
        assert_eq!(e.expand("${replay_dir}/*.ndjson").unwrap(), "/var/lib/caracal/audit-replay/*.ndjson");
    }

    #[test]
    fn environment_overrides_and_url_passwords_become_secrets() {
        let env = MapEnv(HashMap::from([
            ("PRESERVE_REDIS_URL", "redis://preserve:pa55word@10.0.0.5:6380/0"),
            ("PRESERVE_GATEWAY_URLS", "http://gw-0:8081, http://gw-1:8081"),
            ("PRESERVE_OUT", "/srv/evidence"),
        ]));
        let e = Environment::load(None, &env).unwrap();
        assert_eq!(e.redis.display, "redis://preserve@10.0.0.5:6380/0");
        assert!(!format!("{:?}", e).contains("pa55word"));
        assert!(e.env_secrets.iter().any(|(_, s)| s.expose() == "pa55word"));
        assert_eq!(e.services["gateway"], vec!["http://gw-0:8081", "http://gw-1:8081"]);
        assert_eq!(e.out_dir, PathBuf::from("/srv/evidence"));
    }

    #[test]
    fn the_fingerprint_key_is_a_reference_and_the_environment_overrides_it() {
        let c: SiteConfig = toml::from_str("[redaction]\nfingerprint_key = \"file:/etc/preserve/fp.key\"\n").unwrap();
        let e = Environment::resolve(c, "t".into(), None, None, &MapEnv(HashMap::new())).unwrap();
        assert!(
            matches!(&e.fingerprint_key, Some(KeySource::Reference(CredentialRef::File(p))) if p.ends_with("fp.key"))
        );
        assert!(toml::from_str::<SiteConfig>("[redaction]\nfingerprint_key = \"0123456789abcdef\"\n").is_err());
        // A value in the environment is a secret to redact, like the serve token given so.
        let v = "0123456789abcdef0123456789abcdef";
        let e = Environment::load(None, &MapEnv(HashMap::from([("PRESERVE_FINGERPRINT_KEY", v)]))).unwrap();
        assert!(matches!(&e.fingerprint_key, Some(KeySource::Value(s)) if s.expose() == v));
        assert!(e.env_secrets.iter().any(|(_, s)| s.expose() == v));
    }

    #[test]
    fn inline_password_in_config_is_refused() {
        let c: SiteConfig = toml::from_str("[redis]\nurl = \"redis://u:hunter2@h:6379\"\n").unwrap();
        let err = Environment::resolve(c, "site.toml".into(), None, None, &MapEnv(HashMap::new())).unwrap_err();
        assert!(err.to_string().contains("redis.url carries a password"), "{err}");
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn a_ca_file_is_a_redis_setting() {
        let c: SiteConfig = toml::from_str("[redis]\nca_file = \"/etc/caracal/redis-ca.pem\"\n").unwrap();
        let e = Environment::resolve(c, "site.toml".into(), None, None, &MapEnv(HashMap::new())).unwrap();
        assert_eq!(e.redis.ca_file, Some(PathBuf::from("/etc/caracal/redis-ca.pem")));
        let c: SiteConfig = toml::from_str("[postgres]\nurl = \"postgres://h/db\"\nca_file = \"/ca.pem\"\n").unwrap();
        let err = Environment::resolve(c, "site.toml".into(), None, None, &MapEnv(HashMap::new())).unwrap_err();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
    }

    #[test]
    fn passwords_with_slashes_and_ats_are_still_found() {
        assert_eq!(url_passwords("redis://u:pa/ss@w0rd@h:6379/0"), ["pa/ss@w0rd"]);
        assert_eq!(strip_password("redis://u:pa/ss@w0rd@h:6379/0").unwrap(), "redis://u@h:6379/0");
        assert!(url_passwords("redis://h:6379/0?x=a@b").is_empty());
        assert_eq!(strip_password("http://h:8080/x").unwrap(), "http://h:8080/x");
        assert_eq!(strip_password("redis://:pw@h:6379/0").unwrap(), "redis://h:6379/0");
        assert_eq!(url_passwords("redis://:p%40ss@h/0"), ["p%40ss", "p@ss"], "as written and as the client decodes it");
    }

    #[test]
    fn passwords_in_query_parameters_are_found_and_removed() {
        let unix = "unix:///run/redis.sock?db=3&pass=s3cret-pw";
        assert_eq!(url_passwords(unix), ["s3cret-pw"]);
        assert_eq!(strip_password(unix).unwrap(), "unix:///run/redis.sock?db=3");
        assert_eq!(url_passwords("redis+unix:///s.sock?pass=a+b%21&pass=second"), ["a+b%21", "a+b!", "a b!", "second"]);
        assert_eq!(strip_password("redis+unix:///s.sock?pass=x").unwrap(), "redis+unix:///s.sock");
        // libpq-style: `password` (a `#` is part of the value there, not a fragment), an encoded name too.
        let pg = "postgres://caracal:first@db:5432/caracal?sslmode=require&password=pg-pw#77";
        assert_eq!(url_passwords(pg), ["first", "pg-pw#77"]);
        assert_eq!(strip_password(pg).unwrap(), "postgres://caracal@db:5432/caracal?sslmode=require");
        assert_eq!(url_passwords("postgresql://db/x?pass%77ord=enc"), ["enc"]);
        assert_eq!(strip_password("postgresql://db/x?pass%77ord=enc&a=1").unwrap(), "postgresql://db/x?a=1");
        // Only what the scheme's client reads as a password counts (a Redis TCP URL has no such parameter), but
        // any of them is removed from what is shown.
        assert!(url_passwords("redis://cache:6379/0?pass=x").is_empty());
        assert!(url_passwords("unix:///s.sock?password=x").is_empty());
        assert_eq!(strip_password("redis://cache:6379/0?pass=x#f").unwrap(), "redis://cache:6379/0#f");
        assert!(url_passwords("unix:///s.sock?passive=1&pass=").is_empty(), "only a named, non-empty password");
        assert_eq!(strip_password("redis://h/0?passive=1").unwrap(), "redis://h/0?passive=1");
    }

    #[test]
    fn the_sidecars_limits_have_safe_defaults_and_none_can_be_switched_off() {
        let none = MapEnv(HashMap::new());
        let e = Environment::resolve(SiteConfig::default(), "site.toml".into(), None, None, &none).unwrap();
        let s = &e.serve;
        assert_eq!(
            (s.max_connections, s.max_connections_per_client, s.remembered_alerts, s.listed_snapshots, s.listed_alerts),
            (128, 32, 10_000, 100, 20)
        );
        assert_eq!((s.header_timeout.as_secs(), s.body_timeout.as_secs(), s.write_timeout.as_secs()), (10, 30, 30));
        for (setting, says) in [
            ("max_connections = 0", "serve.max_connections must be at least 1"),
            ("max_connections_per_client = 0", "serve.max_connections_per_client must be at least 1"),
            ("remembered_alerts = 0", "serve.remembered_alerts must be at least 1"),
            ("listed_snapshots = 0", "serve.listed_snapshots must be at least 1"),
            ("header_timeout = \"0s\"", "serve.header_timeout must be more than 0"),
            ("body_timeout = \"-5s\"", "serve.body_timeout must be more than 0"),
            ("write_timeout = \"0s\"", "serve.write_timeout must be more than 0"),
        ] {
            let c: SiteConfig = toml::from_str(&format!("[serve]\n{setting}\n")).unwrap();
            let err = Environment::resolve(c, "site.toml".into(), None, None, &none).unwrap_err();
            assert!(err.to_string().contains(says), "{setting}: {err}");
        }
    }

    #[test]
    fn vars_expand_and_unknown_is_named() {
        let vars = BTreeMap::from([("home".to_string(), "/h".to_string())]);
        assert_eq!(expand_vars("${home}/x/$$y", &vars).unwrap(), "/h/x/$y");
        assert!(expand_vars("${nope}/x", &vars).unwrap_err().contains("${nope}"));
    }
}

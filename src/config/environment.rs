//! The site config resolved with the environment variables of the design and the defaults of a Caracal Compose
//! host into an [`Environment`], which is what collectors see.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use jiff::SignedDuration;

use super::{
    credential::{CredentialError, CredentialRef, Secret},
    endpoint::{Endpoint, EndpointError},
    expand::{ExpandError, expand_vars},
    kubernetes::{KubernetesSettingError, KubernetesSite, Platform},
    location::ConfigError,
    seal::{SealSettingError, SealSettings, SignerSource},
    serve::{ServeSettingError, ServeSettings},
    site::SiteConfig,
    store::{StoreSettingError, StoreSettings},
    url::strip_password,
};

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
const DEFAULT_REPLAY_DIR: &str = "/var/lib/caracal/audit-replay";

/// What is wrong in a site config once the environment is applied; [`Environment::load`] locates it in the file.
#[derive(Debug, thiserror::Error)]
enum SiteError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("{var} / services.{service}: base URLs must not carry credentials ({shown})")]
    CredentialsInServiceUrl { var: String, service: &'static str, shown: String },
    #[error(transparent)]
    Serve(#[from] ServeSettingError),
    #[error(transparent)]
    Kubernetes(#[from] KubernetesSettingError),
    #[error(transparent)]
    Seal(#[from] SealSettingError),
    #[error(transparent)]
    Store(#[from] StoreSettingError),
    #[error("run.timeout and run.collector_timeout must be positive")]
    RunTimeoutNotPositive,
}

/// Where a value came from, for `AUDIT_HMAC_KEY`, the serve token and the fingerprint key, which may be given as a
/// value in the environment.
#[derive(Debug, Clone)]
pub enum KeySource {
    Value(Secret),
    Reference(CredentialRef),
}

impl KeySource {
    pub fn resolve(&self) -> Result<Secret, CredentialError> {
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
    /// Write `report.html` into every bundle (`[run] report`).
    pub report: bool,
    pub redis: Endpoint,
    pub postgres: Endpoint,
    /// Base URLs of each service's instances as configured; on Kubernetes a service without a static list has
    /// none here and is discovered from its EndpointSlices when collected.
    pub services: BTreeMap<String, Vec<String>>,
    /// The `[kubernetes]` section, when Caracal runs on Kubernetes.
    pub kubernetes: Option<KubernetesSite>,
    pub audit_hmac_key: Option<KeySource>,
    pub listen: String,
    pub serve_token: Option<KeySource>,
    pub serve: ServeSettings,
    /// The site's fingerprint key (`[redaction] fingerprint_key`), resolved when a snapshot is planned.
    pub fingerprint_key: Option<KeySource>,
    /// The `[seal]` section: how bundles are signed and timestamped.
    pub seal: SealSettings,
    /// The `[store]` section: where bundles are uploaded.
    pub store: Option<StoreSettings>,
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
        Self::resolve(config, file.clone(), path, text, env).map_err(|e| ConfigError::new(&file, e.to_string()))
    }

    fn resolve(
        mut c: SiteConfig,
        file: PathBuf,
        config_file: Option<PathBuf>,
        config_text: Option<String>,
        env: &dyn EnvSource,
    ) -> Result<Self, SiteError> {
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

        let redis = Endpoint::resolve(
            "redis",
            env.var("PRESERVE_REDIS_URL"),
            c.redis,
            "redis://127.0.0.1:6379/0",
            Some(CredentialRef::File(secrets_dir.join("redisPassword"))),
            &mut env_secrets,
        )?;
        let postgres =
            Endpoint::resolve("postgres", env.var("PRESERVE_POSTGRES_URL"), c.postgres, "", None, &mut env_secrets)?;
        // No URL given: Caracal's Compose install has one, password included, in secrets/databaseUrl.
        let postgres = if postgres.url().expose_secret().is_empty() {
            Endpoint::from_url_file(secrets_dir.join("databaseUrl"))
        } else {
            postgres
        };

        let kubernetes = c.kubernetes.take().map(KubernetesSite::resolve).transpose()?;
        let mut services = BTreeMap::new();
        for (name, default) in SERVICES {
            let var = format!("PRESERVE_{}_URLS", name.to_ascii_uppercase());
            // A Compose host's services listen on local ports; a Kubernetes cluster's move with every restart.
            let default = || if kubernetes.is_some() { Vec::new() } else { vec![default.to_string()] };
            let urls = match env.var(&var) {
                Some(v) => v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
                None => c.services.get(name).cloned().unwrap_or_else(default),
            };
            for u in &urls {
                if let Some(clean) = strip_password(u)
                    && clean != *u
                {
                    return Err(SiteError::CredentialsInServiceUrl { var, service: name, shown: clean });
                }
            }
            services.insert(name.to_string(), urls);
        }

        // A key given in the environment: a reference, or the value itself (AUDIT_HMAC_KEY's always is), which is
        // then a secret to redact.
        let mut key_from_env = |var: &str, may_be_reference: bool| {
            let v = env.var(var)?;
            if may_be_reference && let Ok(r) = v.parse::<CredentialRef>() {
                return Some(KeySource::Reference(r));
            }
            let value = Secret::new(v);
            env_secrets.push((var.to_string(), value.clone()));
            Some(KeySource::Value(value))
        };
        let audit_hmac_key =
            key_from_env("AUDIT_HMAC_KEY", false).or_else(|| c.audit.hmac_key.map(KeySource::Reference));
        let serve_token =
            key_from_env("PRESERVE_SERVE_TOKEN", true).or_else(|| c.serve.token.take().map(KeySource::Reference));
        let fingerprint_key = key_from_env("PRESERVE_FINGERPRINT_KEY", true)
            .or_else(|| c.redaction.fingerprint_key.take().map(KeySource::Reference));

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
        if let Some(k) = &kubernetes {
            vars.entry("release".to_string()).or_insert_with(|| k.release.clone());
        }

        let seal = SealSettings::resolve(std::mem::take(&mut c.seal))?;
        if let Some(SignerSource::Key { key }) = &seal.signer {
            redact_refs.push(("seal.signing_key".to_string(), key.clone()));
        }
        let store = c.store.take().map(StoreSettings::resolve).transpose()?;
        // The AWS chain's secrets, when given in the environment, must never reach a bundle either.
        for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
            if let Some(v) = env.var(var) {
                env_secrets.push((var.to_string(), Secret::new(v)));
            }
        }
        let listen = env.var("PRESERVE_LISTEN").or(c.serve.listen.take());
        let serve = ServeSettings::resolve(std::mem::take(&mut c.serve))?;
        let collector_timeout = c.run.collector_timeout.unwrap_or(SignedDuration::from_mins(2));
        let run_timeout = c.run.timeout.unwrap_or(SignedDuration::from_mins(10));
        if collector_timeout <= SignedDuration::ZERO || run_timeout <= SignedDuration::ZERO {
            return Err(SiteError::RunTimeoutNotPositive);
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
            report: c.run.report,
            redis,
            postgres,
            services,
            kubernetes,
            audit_hmac_key,
            listen: listen.unwrap_or_else(|| "0.0.0.0:9731".into()),
            serve_token,
            serve,
            fingerprint_key,
            seal,
            store,
            redact_refs,
            env_secrets,
        })
    }

    /// How Caracal is installed here: Kubernetes when the site config has a `[kubernetes]` section.
    pub fn platform(&self) -> Platform {
        if self.kubernetes.is_some() { Platform::Kubernetes } else { Platform::Compose }
    }

    /// One line for a run that found nothing of Caracal's because Caracal's home is not where preserve looked:
    /// the path, who named it, and what to do. `None` when the home exists, or on Kubernetes when nobody named one.
    pub fn caracal_home_hint(&self) -> Option<String> {
        // On Kubernetes nothing is read from a home unless the operator named one.
        if self.caracal_home.is_dir() || (self.kubernetes.is_some() && self.caracal_home_set_by.is_none()) {
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
    pub fn expand(&self, input: &str) -> Result<String, ExpandError> {
        expand_vars(input, &self.vars)
    }
}

fn default_caracal_home(env: &dyn EnvSource) -> PathBuf {
    match env.var("XDG_DATA_HOME") {
        Some(d) => PathBuf::from(d).join("caracal"),
        None => PathBuf::from(env.var("HOME").unwrap_or_else(|| "/root".into())).join(".local/share/caracal"),
    }
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
        assert!(e.env_secrets.iter().any(|(_, s)| s.expose_secret() == "pa55word"));
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
        assert!(matches!(&e.fingerprint_key, Some(KeySource::Value(s)) if s.expose_secret() == v));
        assert!(e.env_secrets.iter().any(|(_, s)| s.expose_secret() == v));
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
}

//! Redis and Postgres endpoints: the URL from the environment or the config file, the password by reference, and
//! the same URL without credentials for everything shown.

use std::{fmt, path::PathBuf};

use super::{
    credential::{CredentialRef, Secret},
    site::StoreConfig,
    url::{strip_password, url_passwords},
};

/// A Redis or Postgres endpoint after defaults and environment. `url` may carry credentials (from an environment
/// variable); it is never printed: `display` is the same URL with them removed.
#[derive(Clone)]
pub struct Endpoint {
    url: Secret,
    pub display: String,
    pub username: Option<String>,
    pub password: Option<CredentialRef>,
    /// The password is Caracal's default secret file, not something the operator configured: when that file does
    /// not exist, connect without a password rather than fail.
    pub password_is_default: bool,
    /// Redis: the CA file TLS checks the server against (`[redis] ca_file`).
    pub ca_file: Option<PathBuf>,
}

/// A `[redis]` or `[postgres]` setting that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EndpointError {
    #[error("{what}.url carries a password inline; remove it and set {what}.password = \"env:NAME\" or \"file:PATH\"")]
    InlinePassword { what: &'static str },
    #[error("{what}.ca_file: not a {what} setting; give sslrootcert=PATH in {what}.url")]
    CaFileNotRedis { what: &'static str },
}

impl Endpoint {
    /// Builds an endpoint. A URL from the environment may carry a password (it is then a secret to redact); a URL in
    /// the config file must not: its password belongs in `password = "env:..."`.
    pub(super) fn resolve(
        what: &'static str,
        from_env: Option<String>,
        c: StoreConfig,
        default: &str,
        default_password: Option<CredentialRef>,
        env_secrets: &mut Vec<(String, Secret)>,
    ) -> Result<Self, EndpointError> {
        if let Some(u) = &c.url
            && !url_passwords(u).is_empty()
        {
            return Err(EndpointError::InlinePassword { what });
        }
        let in_env_url = from_env.as_deref().map(url_passwords).unwrap_or_default();
        let from_env_has_password = !in_env_url.is_empty();
        for p in in_env_url {
            env_secrets.push((format!("PRESERVE_{}_URL password", what.to_ascii_uppercase()), Secret::new(p)));
        }
        let url = from_env.or(c.url).unwrap_or_else(|| default.to_string());
        let display = strip_password(&url).unwrap_or_else(|| url.clone());
        let url = Secret::new(url);
        let (password, password_is_default) = match (c.password, from_env_has_password) {
            (Some(p), _) => (Some(p), false),
            (None, true) => (None, false),
            (None, false) => (default_password.clone(), default_password.is_some()),
        };
        if c.ca_file.is_some() && what != "redis" {
            return Err(EndpointError::CaFileNotRedis { what });
        }
        Ok(Self { url, display, username: c.username, password, password_is_default, ca_file: c.ca_file })
    }

    /// Caracal's Compose install renders its database URL, password included, into `secrets/databaseUrl`: the file
    /// holds the whole URL, read as a credential when the endpoint is used.
    pub(super) fn from_url_file(path: PathBuf) -> Self {
        Self {
            url: Secret::new(""),
            display: format!("(from {})", path.display()),
            username: None,
            password: Some(CredentialRef::File(path)),
            password_is_default: true,
            ca_file: None,
        }
    }

    /// The connection URL, possibly with credentials; empty when Caracal's `databaseUrl` file holds it (`password`).
    pub fn url(&self) -> &Secret {
        &self.url
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

//! Configuration: the site config (`preserve.toml`) resolved with the environment, credential references, and the
//! located errors of every config file. The collector and profile definitions, which name source kinds, are
//! [`crate::catalog`]'s.

mod credential;
mod location;
mod site;

pub use credential::{CredentialError, CredentialRef, Secret};
pub use location::ConfigError;
pub use site::{
    Endpoint, EnvSource, Environment, KeySource, ProcessEnv, Retention, RuleConfig, SERVICES, ServeSettings,
    SiteConfig, expand_vars, strip_password, url_passwords,
};

//! Configuration: the site config (`preserve.toml`), credential references, and the collector and profile
//! definitions (TOML in `collectors/`, built in and extendable from directories).

mod catalog;
mod credential;
mod location;
mod site;

pub use catalog::{Catalog, CollectorDef, Origin, ProfileDef};
pub use credential::{CredentialError, CredentialRef, Secret};
pub use location::ConfigError;
pub use site::{
    Endpoint, EnvSource, Environment, KeySource, ProcessEnv, Retention, RuleConfig, SERVICES, ServeSettings,
    SiteConfig, expand_vars, strip_password, url_passwords,
};

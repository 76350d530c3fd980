//! Configuration: the site config (`preserve.toml`) resolved with the environment, credential references, and the
//! located errors of every config file. The collector and profile definitions, which name source kinds, are
//! [`crate::catalog`]'s.

mod credential;
mod endpoint;
mod environment;
mod expand;
mod kubernetes;
mod location;
mod seal;
mod serve;
mod site;
mod store;
mod url;

pub use credential::{CredentialError, CredentialRef, Secret};
pub use endpoint::Endpoint;
pub use environment::{EnvSource, Environment, KeySource, ProcessEnv, SERVICES};
pub use expand::{ExpandError, expand_vars};
pub use kubernetes::{KubernetesSettingError, KubernetesSite, Platform};
pub use location::ConfigError;
pub use seal::{SealSettingError, SealSettings, SignerSource, TsaSettings};
pub use serve::{Retention, ServeSettings};
pub use site::{ObjectStoreConfig, RuleConfig, SealConfig, SiteConfig};
pub use store::{LockSettings, MIN_PART_SIZE, S3Location, StoreSettingError, StoreSettings};
pub use url::{strip_password, url_passwords};

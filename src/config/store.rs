//! The `[store]` section resolved: the bucket and prefix bundles are uploaded to, how the store is reached, and the
//! Object Lock every object gets. Credentials are not here: they come from the standard AWS chain when uploading.

use bytesize::ByteSize;

use super::site::ObjectStoreConfig;

/// The smallest part S3 accepts (every part but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The largest part S3 accepts.
const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

/// An `s3://bucket/prefix` location.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's top.
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<Self, StoreSettingError> {
        let bad = || StoreSettingError::Url(url.to_string());
        let rest = url.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's bucket naming rules: 3-63 characters of lowercase letters, digits, dots and hyphens.
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !valid_bucket {
            return Err(bad());
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "." || s == "..")
            || prefix.contains("//")
            || prefix.chars().any(char::is_control)
        {
            return Err(bad());
        }
        Ok(Self { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }

    /// The key of `name` under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}/{name}", self.prefix) }
    }

    pub fn url_of(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(name))
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Object Lock on every object uploaded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockSettings {
    /// `GOVERNANCE` or `COMPLIANCE`; `None` with only a legal hold.
    pub mode: Option<String>,
    pub retain_days: u32,
    pub legal_hold: bool,
}

/// The resolved `[store]` section.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreSettings {
    pub location: S3Location,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub profile: Option<String>,
    pub part_size: u64,
    pub lock: Option<LockSettings>,
    pub max_attempts: u32,
    /// How soon the sidecar tries a failed upload again (doubling while it fails, up to an hour).
    #[serde(serialize_with = "crate::config::kubernetes::as_text")]
    pub retry_every: jiff::SignedDuration,
}

/// A `[store]` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreSettingError {
    #[error(
        "store.url: `{0}` is not `s3://bucket/prefix` (a bucket name of 3-63 lowercase letters, digits, dots and hyphens)"
    )]
    Url(String),
    #[error("store.endpoint: `{0}` must be an http:// or https:// URL")]
    Endpoint(String),
    #[error("store.part_size: {0} is outside S3's part sizes (5MiB to 5GiB)")]
    PartSize(ByteSize),
    #[error("store.lock_mode: `{0}` is neither GOVERNANCE nor COMPLIANCE")]
    LockMode(String),
    #[error("store.lock_mode needs store.retain_days (at least 1), and retain_days needs lock_mode")]
    Retention,
    #[error("store.max_attempts must be between 1 and 20")]
    Attempts,
    #[error("store.retry_every must be at least one second")]
    RetryEvery,
}

impl StoreSettings {
    pub fn resolve(c: ObjectStoreConfig) -> Result<Self, StoreSettingError> {
        let location = S3Location::parse(&c.url)?;
        if let Some(e) = &c.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(StoreSettingError::Endpoint(e.clone()));
        }
        let part_size = c.part_size.map_or(DEFAULT_PART_SIZE, |b| b.as_u64());
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            return Err(StoreSettingError::PartSize(ByteSize(part_size)));
        }
        let mode = c
            .lock_mode
            .map(|m| match m.to_ascii_uppercase().as_str() {
                "GOVERNANCE" => Ok("GOVERNANCE".to_string()),
                "COMPLIANCE" => Ok("COMPLIANCE".to_string()),
                _ => Err(StoreSettingError::LockMode(m)),
            })
            .transpose()?;
        let lock = match (mode, c.retain_days) {
            (Some(_), None | Some(0)) | (None, Some(_)) => return Err(StoreSettingError::Retention),
            (Some(mode), Some(days)) => {
                Some(LockSettings { mode: Some(mode), retain_days: days, legal_hold: c.legal_hold })
            }
            (None, None) if c.legal_hold => Some(LockSettings { mode: None, retain_days: 0, legal_hold: true }),
            (None, None) => None,
        };
        let max_attempts = c.max_attempts.unwrap_or(5);
        if !(1..=20).contains(&max_attempts) {
            return Err(StoreSettingError::Attempts);
        }
        let retry_every = c.retry_every.unwrap_or(jiff::SignedDuration::from_mins(1));
        if retry_every < jiff::SignedDuration::from_secs(1) {
            return Err(StoreSettingError::RetryEvery);
        }
        Ok(Self {
            retry_every,
            location,
            path_style: c.path_style.unwrap_or(c.endpoint.is_some()),
            endpoint: c.endpoint,
            region: c.region,
            profile: c.profile,
            part_size,
            lock,
            max_attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_bad_ones_are_named() {
        let l = S3Location::parse("s3://evidence/caracal/prod/").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("evidence", "caracal/prod"));
        assert_eq!(l.key("b.tar.zst"), "caracal/prod/b.tar.zst");
        assert_eq!(S3Location::parse("s3://evidence").unwrap().key("b"), "b");
        for bad in ["evidence", "s3://", "s3://Evidence", "s3://ev", "s3://a/../b", "s3://a_b/x", "s3://abc/x//y"] {
            let e = S3Location::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn lock_needs_mode_and_days() {
        let c = |mode: Option<&str>, days: Option<u32>| ObjectStoreConfig {
            url: "s3://evidence".into(),
            lock_mode: mode.map(String::from),
            retain_days: days,
            ..Default::default()
        };
        let s = StoreSettings::resolve(c(Some("compliance"), Some(30))).unwrap();
        assert_eq!(s.lock.unwrap().mode.as_deref(), Some("COMPLIANCE"));
        assert!(matches!(StoreSettings::resolve(c(Some("COMPLIANCE"), None)), Err(StoreSettingError::Retention)));
        assert!(matches!(StoreSettings::resolve(c(None, Some(3))), Err(StoreSettingError::Retention)));
        assert!(matches!(StoreSettings::resolve(c(Some("forever"), Some(3))), Err(StoreSettingError::LockMode(_))));
        let tiny =
            ObjectStoreConfig { url: "s3://evidence".into(), part_size: Some(ByteSize::mib(1)), ..Default::default() };
        assert!(matches!(StoreSettings::resolve(tiny), Err(StoreSettingError::PartSize(_))));
    }
}

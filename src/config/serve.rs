//! `[serve]` after defaults: the sidecar's limits, each checked so that none can be switched off.

use jiff::SignedDuration;

use super::site::{RuleConfig, ServeConfig};

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

/// A `[serve]` setting that would switch a limit off.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServeSettingError {
    #[error("serve.{setting} must be more than 0 (it is {value:#})")]
    NotPositive { setting: &'static str, value: SignedDuration },
    #[error("serve.concurrency, serve.queue and serve.body_limit must be at least 1")]
    NoCapacity,
    #[error("serve.{setting} must be at least 1")]
    Zero { setting: &'static str },
    #[error("serve.cooldown and serve.retention.min_age must not be negative")]
    Negative,
    #[error("serve.grace must be at least 2s: stopped snapshots need time to write their partial bundles")]
    GraceTooShort,
}

impl ServeSettings {
    pub(super) fn resolve(c: ServeConfig) -> Result<Self, ServeSettingError> {
        let positive = |setting, d: Option<SignedDuration>, default| match d {
            None => Ok(std::time::Duration::from_secs(default)),
            Some(d) if d.is_positive() => Ok(d.unsigned_abs()),
            Some(value) => Err(ServeSettingError::NotPositive { setting, value }),
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
            return Err(ServeSettingError::NoCapacity);
        }
        for (setting, n) in [
            ("max_connections", s.max_connections),
            ("max_connections_per_client", s.max_connections_per_client),
            ("remembered_alerts", s.remembered_alerts),
            ("listed_snapshots", s.listed_snapshots),
            ("listed_alerts", s.listed_alerts),
        ] {
            if n == 0 {
                return Err(ServeSettingError::Zero { setting });
            }
        }
        if s.cooldown.is_negative() || s.retention.min_age.is_negative() {
            return Err(ServeSettingError::Negative);
        }
        // Writing the partial bundle of a stopped snapshot takes a moment: no grace would lose it.
        if s.grace < SignedDuration::from_secs(2) {
            return Err(ServeSettingError::GraceTooShort);
        }
        Ok(s)
    }
}

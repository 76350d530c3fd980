//! Which events a timeline keeps: `--around TIME[±DURATION]`, `--id VALUE`, `--source NAME`.

use jiff::{SignedDuration, Timestamp};

use super::event::Event;
use crate::time;

/// How far around a point `--around` reaches when no duration is given.
pub const DEFAULT_AROUND: SignedDuration = SignedDuration::from_mins(15);

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events in `[from, to]`.
    pub between: Option<(Timestamp, Timestamp)>,
    /// Only events carrying one of these values in any id field.
    pub ids: Vec<String>,
    /// Only events of these collectors (`audit-logs`; `trigger` for the alerts) or artifacts (a path in the bag,
    /// or a folder of them: `data/redis-dlq/streams/caracal.audit.events.dlq`).
    pub sources: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AroundError {
    #[error(
        "--around `{0}`: give a time and optionally how far around it, as TIME±DURATION or TIME+-DURATION \
         (2026-12-05T02:41:00Z±10m; `alert` is when the triggering alert started)"
    )]
    Syntax(String),
    #[error("--around alert: this bundle was not triggered by an alert with a start time; give a time instead")]
    NoAlert,
}

impl Filter {
    /// Parses `--around`: `TIME`, `TIME±DURATION` or `TIME+-DURATION`; `TIME` as `--since` takes it (RFC 3339, a
    /// date, `now`, a duration ago), or `alert`: the first triggering alert's start (`alert_start`).
    pub fn around(
        spec: &str,
        now: Timestamp,
        alert_start: Option<Timestamp>,
    ) -> Result<(Timestamp, Timestamp), AroundError> {
        let syntax = || AroundError::Syntax(spec.to_string());
        let (point, reach) = match spec.split_once('±').or_else(|| spec.split_once("+-")) {
            Some((p, d)) => (p.trim(), Some(d.trim())),
            None => (spec.trim(), None),
        };
        let at = if point.eq_ignore_ascii_case("alert") {
            alert_start.ok_or(AroundError::NoAlert)?
        } else {
            time::parse_point(point, now).map_err(|_| syntax())?
        };
        let reach = match reach {
            Some(d) => time::parse_duration(d).filter(|d| !d.is_negative()).ok_or_else(syntax)?,
            None => DEFAULT_AROUND,
        };
        let from = at.checked_sub(reach).map_err(|_| syntax())?;
        let to = at.checked_add(reach).map_err(|_| syntax())?;
        Ok((from, to))
    }

    /// Whether an artifact (or the manifest's events, `collector` `trigger` or a collector's name with path
    /// `manifest.json`) can hold events this filter keeps.
    pub fn reads(&self, collector: &str, path: &str) -> bool {
        self.sources.is_empty() || self.sources.iter().any(|s| matches_source(s, collector, path))
    }

    pub fn keeps(&self, e: &Event) -> bool {
        self.between.is_none_or(|(from, to)| e.time >= from && e.time <= to)
            && (self.ids.is_empty() || self.ids.iter().any(|v| e.carries(v)))
            && self.reads(&e.source.collector, &e.source.path)
    }
}

fn matches_source(s: &str, collector: &str, path: &str) -> bool {
    let s = s.trim_end_matches('/');
    s == collector || s == path || path.strip_prefix(s).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn around_a_time_an_alert_or_now() {
        let now: Timestamp = "2026-12-05T04:00:00Z".parse().unwrap();
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            Filter::around("2026-12-05T02:41:00Z±10m", now, None).unwrap(),
            (t("2026-12-05T02:31:00Z"), t("2026-12-05T02:51:00Z"))
        );
        assert_eq!(
            Filter::around("2026-12-05T02:41:00Z+-1h", now, None).unwrap(),
            (t("2026-12-05T01:41:00Z"), t("2026-12-05T03:41:00Z"))
        );
        assert_eq!(Filter::around("alert", now, Some(t("2026-12-05T02:41:00Z"))).unwrap().1, t("2026-12-05T02:56:00Z"));
        assert!(matches!(Filter::around("alert±5m", now, None), Err(AroundError::NoAlert)));
        assert!(matches!(Filter::around("yesterday-ish", now, None), Err(AroundError::Syntax(_))));
        assert!(matches!(Filter::around("now±-5m", now, None), Err(AroundError::Syntax(_))));
    }

    #[test]
    fn sources_are_collectors_artifacts_or_folders() {
        let f =
            Filter { sources: vec!["data/redis-dlq/streams/caracal.audit.events.dlq".into()], ..Default::default() };
        assert!(f.reads("redis-dlq", "data/redis-dlq/streams/caracal.audit.events.dlq/entries.jsonl"));
        assert!(!f.reads("redis-dlq", "data/redis-dlq/streams/caracal.audit.events.dlq2/entries.jsonl"));
        let f = Filter { sources: vec!["audit-logs".into()], ..Default::default() };
        assert!(f.reads("audit-logs", "data/audit-logs/audit/x/y-json.log"));
        assert!(!f.reads("audit-logs-2", "data/audit-logs-2/a"));
    }
}

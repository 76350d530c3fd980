//! Events the manifest itself records: the alerts that triggered the snapshot (when they started, and ended) and
//! each collector's run.

use std::borrow::Cow;

use crate::{
    bundle::manifest::Manifest,
    time::timestamp_from_text,
    timeline::event::{Event, Fields, MESSAGE_LIMIT, Source, cut, id_name},
};

/// The manifest's events, in the order the manifest lists them.
pub fn from_manifest(m: &Manifest) -> Vec<Event> {
    let mut out = Vec::new();
    let source = |collector: &str, record: usize| Source {
        collector: collector.into(),
        path: "manifest.json".into(),
        line: None,
        record: Some(record as u64 + 1),
    };
    for (i, alert) in m.trigger.alerts.iter().enumerate() {
        let name = alert.labels.get("alertname").map_or("alert", String::as_str);
        let summary = alert.annotations.get("summary").or_else(|| alert.annotations.get("description"));
        let moments = [
            (alert.starts_at.as_deref(), "alert.firing", "firing"),
            (alert.ends_at.as_deref(), "alert.resolved", "resolved"),
        ];
        for (at, kind, what) in moments {
            // Alertmanager sends `0001-01-01T00:00:00Z` as the end of an alert still firing.
            let Some(time) = at.and_then(timestamp_from_text).filter(|t| t.as_second() > 0) else { continue };
            if kind == "alert.resolved" && time > m.finished_at {
                continue; // an end Alertmanager only expects (its resolve timeout), not one that happened
            }
            let mut e = Event {
                time,
                source: source("trigger", i),
                service: "alertmanager".into(),
                instance: name.into(),
                kind: Cow::Borrowed(kind),
                level: alert.labels.get("severity").map(|s| Cow::Owned(s.clone())),
                message: cut(
                    &format!("{name} {what}{}", summary.map(|s| format!(": {s}")).unwrap_or_default()),
                    MESSAGE_LIMIT,
                ),
                ids: Fields::default(),
                details: Fields::default(),
            };
            for (k, v) in &alert.labels {
                match id_name(k) {
                    Some(name) => e.id(name, v),
                    None if k != "alertname" && k != "severity" => e.detail(k.clone(), v),
                    None => {}
                }
            }
            if let Some(f) = &alert.fingerprint {
                e.detail("fingerprint", f);
            }
            out.push(e);
        }
    }
    for (i, c) in m.collectors.iter().enumerate() {
        let records: u64 = c.artifacts.iter().filter_map(|a| a.records).sum();
        let mut message = format!(
            "{} {} in {} ms: {} artifacts, {records} records",
            c.name,
            c.status.as_str(),
            c.duration_ms,
            c.artifacts.len()
        );
        if let Some(err) = &c.error {
            message.push_str(&format!(" ({err})"));
        }
        let mut e = Event {
            time: c.started_at,
            source: source(&c.name, i),
            service: "preserve".into(),
            instance: c.name.as_str().into(),
            kind: Cow::Borrowed("collector.run"),
            level: Some(
                if c.status.as_str() == "ok" || c.status.as_str() == "skipped" { "info" } else { "warn" }.into(),
            ),
            message: cut(&message, MESSAGE_LIMIT),
            ids: Fields::default(),
            details: Fields::default(),
        };
        e.detail("status", c.status.as_str());
        e.detail("kind", &c.kind);
        out.push(e);
    }
    out
}

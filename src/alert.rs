//! Alerts that trigger or accompany a snapshot: Alertmanager webhook payloads (version 4) or single alerts.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Deserializer, Serialize};

/// One alert as Alertmanager describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl Alert {
    pub fn name(&self) -> Option<&str> {
        self.labels.get("alertname").map(String::as_str)
    }
}

/// Labels fill SQL parameters and URL paths. PostgreSQL refuses a NUL in any text, so one NUL in a label failed
/// every table filtered by it; no evidence id holds one. Checked where alerts enter (`--alert` and the sidecar's
/// webhook, through [`WebhookPayload`]), naming the label; a bundle's manifest is read as it was written.
pub fn check_labels(alerts: &[Alert]) -> Result<(), NulLabel> {
    for (index, a) in alerts.iter().enumerate() {
        if let Some((k, _)) = a.labels.iter().find(|(k, v)| k.contains('\0') || v.contains('\0')) {
            return Err(NulLabel { index, label: k.clone() });
        }
    }
    Ok(())
}

/// An alert label (its name or its value) holding a NUL: the label's name is shown escaped.
#[derive(Debug, thiserror::Error)]
#[error("alerts[{index}]: alert label `{}` holds a NUL character", .label.escape_default())]
pub struct NulLabel {
    /// The alert's place in its list.
    pub index: usize,
    pub label: String,
}

fn alerts_without_nul<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Alert>, D::Error> {
    let alerts = Vec::<Alert>::deserialize(d)?;
    check_labels(&alerts).map_err(serde::de::Error::custom)?;
    Ok(alerts)
}

/// An Alertmanager webhook payload, the fields preserve uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    pub version: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(deserialize_with = "alerts_without_nul")]
    pub alerts: Vec<Alert>,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("cannot read alert file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("alert file {path} is not an Alertmanager webhook payload or alert that preserve can use: {reason}")]
    Shape { path: String, reason: ShapeError },
}

/// Why a text is not alerts preserve can use.
#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    /// Not JSON, or JSON of another shape than a webhook payload, a list of alerts or one alert.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("an alert has no labels")]
    NoLabels,
    #[error(transparent)]
    Nul(#[from] NulLabel),
}

/// Reads `--alert FILE`: a webhook payload (`{"version":"4","alerts":[...]}`), a list of alerts, or one alert.
pub fn read_alerts(path: &Path) -> Result<Vec<Alert>, AlertError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AlertError::Read { path: p.clone(), source })?;
    parse_alerts(&text).map_err(|reason| AlertError::Shape { path: p, reason })
}

pub fn parse_alerts(text: &str) -> Result<Vec<Alert>, ShapeError> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let alerts: Vec<Alert> = if value.get("alerts").is_some() {
        serde_json::from_value::<WebhookPayload>(value)?.alerts
    } else if value.is_array() {
        serde_json::from_value(value)?
    } else {
        vec![serde_json::from_value(value)?]
    };
    if alerts.iter().any(|a| a.labels.is_empty()) {
        return Err(ShapeError::NoLabels);
    }
    check_labels(&alerts)?;
    Ok(alerts)
}

#[cfg(test)]
mod tests {
    #[test]
    fn webhook_list_and_single_alert() {
        let hook = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"CaracalAuditTamperDetected","zone_id":"z1"},"annotations":{},"startsAt":"2026-11-29T01:00:00Z","fingerprint":"abc"}]}"#;
        let a = super::parse_alerts(hook).unwrap();
        assert_eq!(a[0].name(), Some("CaracalAuditTamperDetected"));
        assert_eq!(a[0].fingerprint.as_deref(), Some("abc"));
        let single = r#"{"labels":{"alertname":"X"}}"#;
        assert_eq!(super::parse_alerts(single).unwrap().len(), 1);
        assert!(super::parse_alerts(r#"{"labels":{}}"#).is_err());
    }

    #[test]
    fn a_label_holding_nul_is_refused_by_name_in_files_and_webhooks() {
        let single = r#"{"labels":{"alertname":"X","zone_id":"z1\u0000' OR 1=1"}}"#;
        let e = super::parse_alerts(single).unwrap_err().to_string();
        assert!(e.contains("alert label `zone_id` holds a NUL"), "{e}");
        let hook = r#"{"version":"4","alerts":[{"labels":{"alertname":"X","request_id":"r\u0000"}}]}"#;
        let e = serde_json::from_str::<super::WebhookPayload>(hook).unwrap_err().to_string();
        assert!(e.contains("alert label `request_id` holds a NUL"), "{e}");
        let name = r#"{"labels":{"alertname":"X","zone\u0000id":"z1"}}"#;
        assert!(super::parse_alerts(name).unwrap_err().to_string().contains(r"zone\u{0}id"));
        let list = r#"[{"labels":{"alertname":"X"}},{"labels":{"alertname":"Y","zone_id":"\u0000"}}]"#;
        assert!(super::parse_alerts(list).unwrap_err().to_string().contains("alerts[1]: alert label `zone_id`"));
        // A bundle's manifest records alerts as they were: reading one back is not an entry point.
        let recorded = r#"{"labels":{"alertname":"X","zone_id":"\u0000"}}"#;
        assert!(serde_json::from_str::<super::Alert>(recorded).is_ok());
    }
}

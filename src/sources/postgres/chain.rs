//! The audit-chain analysis step of the `postgres` source: streams `audit_events` ordered by zone and `chain_seq`
//! from the collector's snapshot through [`crate::analysis::audit_chain::Verifier`], writing every bad row to an
//! artifact and a summary to the manifest's findings.

use std::io::Write;

use futures::StreamExt;
use serde_json::json;
use tokio_postgres::Client;

use super::sql;
use crate::{
    analysis::audit_chain::{ChainRow, Verifier},
    bundle::manifest::{Finding, Severity},
    config::KeySource,
    redact::fingerprint,
    sources::{CollectError, Collection, Outcome},
};

const QUERY: &str = "SELECT zone_id, chain_seq, id, event_type, coalesce(request_id,''), coalesce(decision,''), \
    coalesce(policy_set_id,''), coalesce(policy_set_version_id,''), coalesce(manifest_sha,''), \
    coalesce(evaluation_status,''), coalesce(determining_policies_json::text,'null'), \
    coalesce(diagnostics_json::text,'null'), coalesce(metadata_json::text,'null'), \
    (extract(epoch FROM occurred_at) * 1000000)::bigint, coalesce(content_sha256,''), \
    coalesce(prev_content_sha256,''), coalesce(chain_hmac,'') \
    FROM public.audit_events ORDER BY zone_id, chain_seq";

fn io(e: std::io::Error) -> CollectError {
    CollectError::Io { context: "writing the audit-chain report".into(), source: e }
}

/// The HMAC key, hex-decoded, from `AUDIT_HMAC_KEY` or `audit.hmac_key`; `Err` says why it cannot be used.
fn key(cx: &Collection) -> Result<Option<Vec<u8>>, String> {
    let secret = match &cx.env.audit_hmac_key {
        None => return Ok(None),
        Some(KeySource::Value(s)) => s.clone(),
        Some(KeySource::Reference(r)) => r.resolve().map_err(|e| e.to_string())?,
    };
    hex::decode(secret.expose().trim()).map(Some).map_err(|_| "AUDIT_HMAC_KEY is not hex".to_string())
}

pub async fn verify(cx: &Collection, client: &Client, out: &mut Outcome) -> Result<(), CollectError> {
    let key = match key(cx) {
        Ok(k) => k,
        Err(e) => {
            out.warn(format!("audit chain: chain_hmac not checked: {e}"));
            None
        }
    };
    let rows = client
        .query_raw(QUERY, Vec::<String>::new())
        .await
        .map_err(|e| CollectError::Failed(format!("audit chain query: {}", sql::describe_error(&e))))?;
    let mut rows = std::pin::pin!(rows);
    let mut report = cx.artifact("analysis/audit_chain_problems.jsonl", "application/x-ndjson")?;
    let mut verifier = Verifier::new(key.clone());
    // Per check: how many rows failed it, and the first few of them for the finding.
    let (mut checked, mut by_check) = (0u64, std::collections::BTreeMap::<&str, (u64, Vec<serde_json::Value>)>::new());
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| CollectError::Failed(format!("audit chain rows: {}", sql::describe_error(&e))))?;
        let chain_row = ChainRow {
            zone_id: row.get(0),
            chain_seq: row.get(1),
            id: row.get(2),
            fields: std::array::from_fn(|i| row.get::<_, String>(i + 3)),
            occurred_us: row.get(13),
            content_sha256: row.get(14),
            prev_content_sha256: row.get(15),
            chain_hmac: row.get(16),
        };
        checked += 1;
        for p in verifier.feed(&chain_row) {
            let j = serde_json::to_value(&p).unwrap_or_default();
            let mut line = serde_json::to_vec(&j).unwrap_or_default();
            line.push(b'\n');
            report.write_all(&line).map_err(io)?;
            report.add_records(1);
            let (count, first) = by_check.entry(p.check).or_default();
            *count += 1;
            if first.len() < 20 {
                first.push(json!({ "zone_id": p.zone_id, "chain_seq": p.chain_seq, "id": p.id }));
            }
        }
    }
    report.finish().map_err(io)?;
    let zones = verifier.finish();
    let summary = serde_json::to_vec_pretty(&zones).unwrap_or_default();
    let mut a = cx.artifact("analysis/audit_chain_zones.json", "application/json")?;
    a.write_all(&summary).map_err(io)?;
    a.finish().map_err(io)?;

    let hmac_note = match &key {
        Some(k) => json!({ "checked": true, "key_fingerprint": fingerprint(k) }),
        None => json!({ "checked": false, "reason": "no AUDIT_HMAC_KEY given" }),
    };
    let total: usize = zones.iter().map(|z| z.problems as usize).sum();
    let details = |extra: serde_json::Value| {
        let mut d = std::collections::BTreeMap::new();
        d.insert("rows".to_string(), json!(checked));
        d.insert("zones".to_string(), json!(zones.len()));
        d.insert("hmac".to_string(), hmac_note.clone());
        d.insert("rows_at_fault".to_string(), extra);
        d
    };
    if total == 0 {
        out.findings.push(Finding {
            collector: cx.name.clone(),
            code: "audit.chain.ok".into(),
            severity: Severity::Info,
            summary: format!(
                "{checked} audit_events rows in {} zone(s) re-verified end to end: no problem",
                zones.len()
            ),
            details: details(json!([])),
        });
    }
    for (check, (count, first)) in &by_check {
        out.findings.push(Finding {
            collector: cx.name.clone(),
            code: format!("audit.chain.{check}"),
            severity: Severity::Critical,
            summary: format!(
                "audit chain: {check} on {count} row(s) (all listed in analysis/audit_chain_problems.jsonl)"
            ),
            details: details(json!(first)),
        });
    }
    out.detail("audit_chain", json!({ "rows": checked, "zones": zones.len(), "problems": total, "hmac": hmac_note }));
    Ok(())
}

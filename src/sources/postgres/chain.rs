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

/// One of Caracal's hash-chained ledgers and how to read it in chain order.
struct Ledger {
    table: &'static str,
    /// Artifact names under `analysis/` and finding codes: `audit_chain` / `audit.chain`.
    name: &'static str,
    code: &'static str,
    query: &'static str,
    /// Whether the content hash can be recomputed (caracal.md §6.1: not for the admin ledger).
    recompute: bool,
}

const AUDIT: Ledger = Ledger {
    table: "audit_events",
    name: "audit_chain",
    code: "audit.chain",
    query: "SELECT zone_id, chain_seq, id, event_type, coalesce(request_id,''), coalesce(decision,''), \
    coalesce(policy_set_id,''), coalesce(policy_set_version_id,''), coalesce(manifest_sha,''), \
    coalesce(evaluation_status,''), coalesce(determining_policies_json::text,'null'), \
    coalesce(diagnostics_json::text,'null'), coalesce(metadata_json::text,'null'), \
    (extract(epoch FROM occurred_at) * 1000000)::bigint, coalesce(content_sha256,''), \
    coalesce(prev_content_sha256,''), coalesce(chain_hmac,'') \
    FROM public.audit_events ORDER BY zone_id, chain_seq",
    recompute: true,
};

/// The admin ledger: one chain per zone and a global one for rows without a zone (`zone_id` reported as "").
const ADMIN: Ledger = Ledger {
    table: "admin_audit_events",
    name: "admin_audit_chain",
    code: "admin_audit.chain",
    query: "SELECT coalesce(zone_id,''), chain_seq, id, coalesce(content_sha256,''), coalesce(prev_content_sha256,''), \
    coalesce(chain_hmac,'') FROM public.admin_audit_events ORDER BY coalesce(zone_id,''), chain_seq",
    recompute: false,
};

const ADMIN_CAVEAT: &str = "content hashes not recomputed: Caracal hashes JavaScript's JSON.stringify of the payload, \
    which jsonb storage has reordered; links, chain_seq and chain_hmac are checked";

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

/// Verifies `audit_events` and, when the table exists, `admin_audit_events`, in the client's snapshot.
pub async fn verify(cx: &Collection, client: &Client, out: &mut Outcome) -> Result<(), CollectError> {
    let key = match key(cx) {
        Ok(k) => k,
        Err(e) => {
            out.warn(format!("audit chain: chain_hmac not checked: {e}"));
            None
        }
    };
    verify_ledger(cx, client, &AUDIT, key.as_deref(), out).await?;
    let admin = client
        .query_one("SELECT to_regclass('public.admin_audit_events') IS NOT NULL", &[])
        .await
        .map_err(|e| CollectError::Failed(format!("looking for admin_audit_events: {}", sql::describe_error(&e))))?;
    if admin.get::<_, bool>(0) {
        verify_ledger(cx, client, &ADMIN, key.as_deref(), out).await?;
    }
    Ok(())
}

async fn verify_ledger(
    cx: &Collection,
    client: &Client,
    ledger: &Ledger,
    key: Option<&[u8]>,
    out: &mut Outcome,
) -> Result<(), CollectError> {
    let what = ledger.table;
    let rows = client
        .query_raw(ledger.query, Vec::<String>::new())
        .await
        .map_err(|e| CollectError::Failed(format!("{what} chain query: {}", sql::describe_error(&e))))?;
    let mut rows = std::pin::pin!(rows);
    let mut report = cx.artifact(&format!("analysis/{}_problems.jsonl", ledger.name), "application/x-ndjson")?;
    let key = key.map(<[u8]>::to_vec);
    let mut verifier = if ledger.recompute { Verifier::new(key.clone()) } else { Verifier::links_only(key.clone()) };
    // Per check: how many rows failed it, and the first few of them for the finding.
    let (mut checked, mut by_check) = (0u64, std::collections::BTreeMap::<&str, (u64, Vec<serde_json::Value>)>::new());
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| CollectError::Failed(format!("{what} chain rows: {}", sql::describe_error(&e))))?;
        let chain_row = if ledger.recompute {
            ChainRow {
                zone_id: row.get(0),
                chain_seq: row.get(1),
                id: row.get(2),
                fields: std::array::from_fn(|i| row.get::<_, String>(i + 3)),
                occurred_us: row.get(13),
                content_sha256: row.get(14),
                prev_content_sha256: row.get(15),
                chain_hmac: row.get(16),
            }
        } else {
            ChainRow {
                zone_id: row.get(0),
                chain_seq: row.get(1),
                id: row.get(2),
                content_sha256: row.get(3),
                prev_content_sha256: row.get(4),
                chain_hmac: row.get(5),
                ..Default::default()
            }
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
    let mut a = cx.artifact(&format!("analysis/{}_zones.json", ledger.name), "application/json")?;
    a.write_all(&summary).map_err(io)?;
    a.finish().map_err(io)?;

    let hmac_note = match &key {
        Some(k) => json!({ "checked": true, "key_fingerprint": fingerprint(k) }),
        None => json!({ "checked": false, "reason": "no AUDIT_HMAC_KEY given" }),
    };
    let caveat = if ledger.recompute { String::new() } else { format!("; {ADMIN_CAVEAT}") };
    let total: usize = zones.iter().map(|z| z.problems as usize).sum();
    let details = |extra: serde_json::Value| {
        let mut d = std::collections::BTreeMap::new();
        d.insert("rows".to_string(), json!(checked));
        d.insert("zones".to_string(), json!(zones.len()));
        d.insert("content_recomputed".to_string(), json!(ledger.recompute));
        d.insert("hmac".to_string(), hmac_note.clone());
        d.insert("rows_at_fault".to_string(), extra);
        d
    };
    if total == 0 {
        out.findings.push(Finding {
            collector: cx.name.clone(),
            code: format!("{}.ok", ledger.code),
            severity: Severity::Info,
            summary: format!(
                "{checked} {what} rows in {} chain(s) re-verified end to end: no problem{caveat}",
                zones.len()
            ),
            details: details(json!([])),
        });
    }
    for (check, (count, first)) in &by_check {
        out.findings.push(Finding {
            collector: cx.name.clone(),
            code: format!("{}.{check}", ledger.code),
            severity: Severity::Critical,
            summary: format!(
                "{what} chain: {check} on {count} row(s) (all listed in analysis/{}_problems.jsonl){caveat}",
                ledger.name
            ),
            details: details(json!(first)),
        });
    }
    out.detail(
        ledger.name,
        json!({ "rows": checked, "zones": zones.len(), "problems": total, "hmac": hmac_note,
                "content_recomputed": ledger.recompute }),
    );
    Ok(())
}

//! The audit-chain analysis step of the `postgres` source: streams `audit_events` ordered by zone and `chain_seq`
//! from the collector's snapshot through [`crate::analysis::audit_chain::Verifier`], writing every bad row to an
//! artifact and a summary to the manifest's findings.

use std::{collections::BTreeMap, io::Write};

use futures::StreamExt;
use serde_json::json;
use tokio_postgres::Client;

use super::{Error, copy_row::Row};
use crate::{
    analysis::audit_chain::{ChainProblem, ChainRow, Verifier},
    bundle::manifest::{Finding, Severity},
    config::KeySource,
    sources::{Artifact, CollectError, Collection, Outcome, Redaction},
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

static AUDIT: Ledger = Ledger {
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
static ADMIN: Ledger = Ledger {
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
    hex::decode(secret.expose_secret().trim()).map(Some).map_err(|_| "AUDIT_HMAC_KEY is not hex".to_string())
}

/// Verifies `audit_events` (unless `audit_in_export`: the export already did, see [`Tap`]) and, when the table
/// exists, `admin_audit_events`, in the client's snapshot.
pub async fn verify(
    cx: &Collection,
    client: &Client,
    key: Option<&[u8]>,
    audit_in_export: bool,
    out: &mut Outcome,
) -> Result<(), CollectError> {
    if !audit_in_export {
        verify_ledger(cx, client, &AUDIT, key, out).await?;
    }
    let admin = client
        .query_one("SELECT to_regclass('public.admin_audit_events') IS NOT NULL", &[])
        .await
        .map_err(|source| Error::Query { what: "looking for admin_audit_events".into(), source })?;
    if admin.get::<_, bool>(0) {
        verify_ledger(cx, client, &ADMIN, key, out).await?;
    }
    Ok(())
}

/// The HMAC key for `chain_hmac`, resolved once per collector for every ledger it checks; a key that cannot be used
/// is a warning, and the chains are then checked without it.
pub fn hmac_key(cx: &Collection, out: &mut Outcome) -> Option<Vec<u8>> {
    match key(cx) {
        Ok(k) => k,
        Err(e) => {
            out.warn(format!("audit chain: chain_hmac not checked: {e}"));
            None
        }
    }
}

async fn verify_ledger(
    cx: &Collection,
    client: &Client,
    ledger: &'static Ledger,
    key: Option<&[u8]>,
    out: &mut Outcome,
) -> Result<(), CollectError> {
    let what = ledger.table;
    let rows = client
        .query_raw(ledger.query, Vec::<String>::new())
        .await
        .map_err(|source| Error::Query { what: format!("{what} chain query"), source })?;
    let mut rows = std::pin::pin!(rows);
    let mut check = LedgerCheck::new(cx, ledger, key.map(<[u8]>::to_vec))?;
    while let Some(row) = rows.next().await {
        let row = row.map_err(|source| Error::Query { what: format!("{what} chain rows"), source })?;
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
        check.feed(&chain_row, None)?;
    }
    check.finish(cx, out)
}

/// The verifier's problems with one row, and `unreadable`, a problem found reading it (a value that does not parse).
fn row_problems(verifier: &mut Verifier, row: &ChainRow, unreadable: Option<String>) -> Vec<ChainProblem> {
    let mut problems = verifier.feed(row);
    if let Some(detail) = unreadable {
        problems.push(ChainProblem {
            zone_id: row.zone_id.clone(),
            chain_seq: row.chain_seq,
            id: row.id.clone(),
            check: "unreadable",
            detail,
        });
    }
    problems
}

/// One ledger's verification in progress: the verifier, the problems artifact, and counts per check.
struct LedgerCheck {
    ledger: &'static Ledger,
    key: Option<Vec<u8>>,
    verifier: Verifier,
    report: Artifact,
    checked: u64,
    by_check: BTreeMap<&'static str, (u64, Vec<serde_json::Value>)>,
}

impl LedgerCheck {
    fn new(cx: &Collection, ledger: &'static Ledger, key: Option<Vec<u8>>) -> Result<Self, CollectError> {
        let report =
            cx.artifact(&format!("analysis/{}_problems.jsonl", ledger.name), "application/x-ndjson", Redaction::Data)?;
        let verifier = if ledger.recompute { Verifier::new(key.clone()) } else { Verifier::links_only(key.clone()) };
        Ok(Self { ledger, key, verifier, report, checked: 0, by_check: BTreeMap::new() })
    }

    /// Checks one row; `unreadable` is a problem found reading it (a value that does not parse).
    fn feed(&mut self, row: &ChainRow, unreadable: Option<String>) -> Result<(), CollectError> {
        self.checked += 1;
        let problems = row_problems(&mut self.verifier, row, unreadable);
        self.record(problems)
    }

    /// Writes problems found to the report and counts them.
    fn record(&mut self, problems: Vec<ChainProblem>) -> Result<(), CollectError> {
        for p in problems {
            let mut line = serde_json::to_vec(&p).unwrap_or_default();
            line.push(b'\n');
            self.report.write_all(&line).map_err(io)?;
            self.report.add_records(1);
            let (count, first) = self.by_check.entry(p.check).or_default();
            *count += 1;
            if first.len() < 20 {
                first.push(json!({ "zone_id": p.zone_id, "chain_seq": p.chain_seq, "id": p.id }));
            }
        }
        Ok(())
    }

    /// Writes the per-zone summary and the findings.
    fn finish(self, cx: &Collection, out: &mut Outcome) -> Result<(), CollectError> {
        let Self { ledger, key, verifier, report, checked, by_check } = self;
        let what = ledger.table;
        report.finish().map_err(io)?;
        let mut zones = verifier.finish();
        zones.sort_by(|a, b| a.zone_id.cmp(&b.zone_id));
        let summary = serde_json::to_vec_pretty(&zones).unwrap_or_default();
        let mut a =
            cx.artifact(&format!("analysis/{}_zones.json", ledger.name), "application/json", Redaction::Data)?;
        a.write_all(&summary).map_err(io)?;
        a.finish().map_err(io)?;

        let hmac_note = match &key {
            Some(k) => json!({ "checked": true, "key_fingerprint": cx.redactor().fingerprint(k.as_ref()) }),
            None => json!({ "checked": false, "reason": "no AUDIT_HMAC_KEY given" }),
        };
        let caveat = if ledger.recompute { String::new() } else { format!("; {ADMIN_CAVEAT}") };
        let total: u64 = by_check.values().map(|(n, _)| n).sum();
        let details = |extra: serde_json::Value| {
            let mut d = BTreeMap::new();
            d.insert("rows".to_string(), json!(checked));
            d.insert("zones".to_string(), json!(zones.len()));
            d.insert("content_recomputed".to_string(), json!(ledger.recompute));
            d.insert("hmac".to_string(), hmac_note.clone());
            d.insert("rows_at_fault".to_string(), extra);
            d
        };
        if total == 0 {
            let summary =
                format!("{checked} {what} rows in {} chain(s) re-verified end to end: no problem{caveat}", zones.len());
            out.findings.push(Finding {
                details: details(json!([])),
                ..cx.finding(format!("{}.ok", ledger.code), Severity::Info, summary)
            });
        }
        for (check, (count, first)) in &by_check {
            let summary = format!(
                "{what} chain: {check} on {count} row(s) (all listed in analysis/{}_problems.jsonl){caveat}",
                ledger.name
            );
            out.findings.push(Finding {
                details: details(json!(first)),
                ..cx.finding(format!("{}.{check}", ledger.code), Severity::Critical, summary)
            });
        }
        out.detail(
            ledger.name,
            json!({ "rows": checked, "zones": zones.len(), "problems": total, "hmac": hmac_note,
                    "content_recomputed": ledger.recompute }),
        );
        Ok(())
    }
}

/// The columns the content hash needs, in [`ChainRow`] order.
pub const COLUMNS: [&str; 17] = [
    "zone_id",
    "chain_seq",
    "id",
    "event_type",
    "request_id",
    "decision",
    "policy_set_id",
    "policy_set_version_id",
    "manifest_sha",
    "evaluation_status",
    "determining_policies_json",
    "diagnostics_json",
    "metadata_json",
    "occurred_at",
    "content_sha256",
    "prev_content_sha256",
    "chain_hmac",
];

/// Verification of `audit_events` from the export's own rows, one COPY message (one row) at a time, split into its
/// values ([`Row::read_text`]): the table is then read once, not twice, and the rows verified are exactly the rows
/// in the bundle. The export is in the
/// table's own order (no server-side sort of the whole ledger): each zone's rows in chain order, as Caracal inserts
/// them, the zones interleaved. Where that does not hold ([`Tap::finish`] says so), the links are verified again
/// from an ordered read. The session must have `TimeZone = UTC` and `DateStyle = ISO`.
pub struct Tap {
    key: Option<Vec<u8>>,
    verifier: Verifier,
    /// Problems, held until the end: a zone found out of order later voids its link problems.
    held: Vec<ChainProblem>,
    /// More problems than are held: the ordered read reports them instead.
    overflow: bool,
    checked: u64,
    /// Set when a row could not be checked at all (its problems artifact failed); later rows are ignored.
    failed: Option<CollectError>,
    positions: Option<[usize; 17]>,
    row: ChainRow,
}

impl Tap {
    pub fn new(key: Option<Vec<u8>>) -> Result<Self, CollectError> {
        Ok(Self {
            verifier: Verifier::segmented(key.clone()),
            key,
            held: Vec::new(),
            overflow: false,
            checked: 0,
            failed: None,
            positions: None,
            row: ChainRow::default(),
        })
    }

    /// The column names first, then one row each.
    pub fn feed(&mut self, row: &Row) {
        if self.failed.is_none()
            && let Err(e) = self.feed_one(row)
        {
            self.failed = Some(e);
        }
    }

    fn feed_one(&mut self, r: &Row) -> Result<(), CollectError> {
        let (n, range, field) = (r.len(), |i: usize| r.range(i), |i: usize| r.field(i));
        let Some(pos) = self.positions else {
            let names: Vec<&[u8]> = (0..n).map(field).collect();
            let mut pos = [0usize; 17];
            for (i, c) in COLUMNS.iter().enumerate() {
                pos[i] = names.iter().position(|n| *n == c.as_bytes()).ok_or(Error::NoChainColumn(c))?;
            }
            self.positions = Some(pos);
            return Ok(());
        };
        // Reused strings: no allocation per row once they have grown. Text from a UTF8 database is valid UTF-8,
        // checked once for the whole row; anything else is taken field by field, lossily, and its row's hash then
        // says it does not match.
        let text = std::str::from_utf8(r.bytes()).ok();
        let set = |dst: &mut String, i: usize| {
            dst.clear();
            let i = pos[i];
            match text.and_then(|t| t.get(range(i))) {
                Some(t) => dst.push_str(t),
                None => dst.push_str(&String::from_utf8_lossy(field(i))),
            }
        };
        let mut unreadable = None;
        set(&mut self.row.zone_id, 0);
        self.row.chain_seq = std::str::from_utf8(field(pos[1])).ok().and_then(|s| s.parse().ok());
        set(&mut self.row.id, 2);
        for (k, f) in self.row.fields.iter_mut().enumerate() {
            set(f, k + 3);
            // SQL NULL reads as an empty field; the formula hashes a NULL JSON column as `null` (a jsonb value is
            // never empty text).
            if k >= 7 && f.is_empty() {
                f.push_str("null");
            }
        }
        match parse_utc_micros(field(pos[13])) {
            Some(us) => self.row.occurred_us = us,
            None => {
                unreadable = Some(format!("occurred_at {:?} does not parse", String::from_utf8_lossy(field(pos[13]))))
            }
        }
        set(&mut self.row.content_sha256, 14);
        set(&mut self.row.prev_content_sha256, 15);
        set(&mut self.row.chain_hmac, 16);
        self.checked += 1;
        let problems = row_problems(&mut self.verifier, &self.row, unreadable);
        if !self.overflow {
            self.held.extend(problems);
            if self.held.len() > MAX_HELD {
                self.overflow = true;
                self.held = Vec::new();
            }
        }
        Ok(())
    }

    /// Reports the verification: `Ok(true)` when done, `Ok(false)` when the export's order could not serve it (a
    /// zone's rows out of chain order, or more problems than are held) and the ordered read must verify the ledger.
    pub fn finish(self, cx: &Collection, out: &mut Outcome) -> Result<bool, CollectError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.positions.is_none() {
            return Err(Error::NoExportHeader.into());
        }
        let mut verifier = self.verifier;
        let seams = verifier.seams();
        if self.overflow || !verifier.in_order() || self.held.len() + seams.len() > MAX_HELD {
            return Ok(false);
        }
        let mut held = self.held;
        held.extend(seams);
        let mut check = LedgerCheck::new(cx, &AUDIT, self.key)?;
        check.verifier = verifier;
        check.checked = self.checked;
        check.record(held)?;
        check.finish(cx, out)?;
        Ok(true)
    }
}

/// Problems the export's tap holds before it knows the ledger was read in chain order; past this, the ordered
/// read reports them (a ledger this broken is read twice, a sound one once).
const MAX_HELD: usize = 10_000;

/// Verifies `audit_events` from an ordered read in the client's snapshot: when the export's order could not serve.
pub async fn verify_audit_ordered(
    cx: &Collection,
    client: &Client,
    key: Option<&[u8]>,
    out: &mut Outcome,
) -> Result<(), CollectError> {
    verify_ledger(cx, client, &AUDIT, key, out).await
}

/// `2026-10-15 00:00:02.123456+00` (Postgres' ISO output in UTC) as Unix microseconds.
fn parse_utc_micros(text: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(text).ok()?;
    let s = s.strip_suffix("+00")?;
    let dt: jiff::civil::DateTime = s.parse().ok()?;
    let ts = jiff::tz::TimeZone::UTC.to_timestamp(dt).ok()?;
    Some(ts.as_microsecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_utc_timestamps_parse_to_the_microsecond() {
        assert_eq!(parse_utc_micros(b"1970-01-01 00:00:01+00"), Some(1_000_000));
        assert_eq!(parse_utc_micros(b"2026-11-29 01:00:00.123456+00"), Some(1_795_914_000_123_456));
        assert_eq!(parse_utc_micros(b"2026-11-29 01:00:00.5+00"), Some(1_795_914_000_500_000));
        assert_eq!(parse_utc_micros(b"2026-11-29 01:00:00+01"), None, "only UTC is accepted");
        assert_eq!(parse_utc_micros(b"infinity"), None);
    }
}

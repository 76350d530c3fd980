//! Offline re-verification of Caracal's audit hash chain (caracal.md §6.1), every zone end to end, ordered by
//! `chain_seq`, with no time window (the Audit service's own sweep has window-edge false positives and blind
//! spots). Per row: the content hash recomputed with Caracal's formula, the link to the previous row, `chain_seq`
//! continuity and duplicates, and, with the key, `chain_hmac`.

use hmac::{KeyInit, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// One row of `audit_events`, as the verification query returns it (NULL text columns as empty strings, NULL
/// JSON as `null`, `occurred_at` in Unix microseconds).
#[derive(Debug, Clone, Default)]
pub struct ChainRow {
    pub zone_id: String,
    pub chain_seq: Option<i64>,
    pub id: String,
    /// The 12 hashed string fields after `id` and `zone_id`: event_type, request_id, decision, policy_set_id,
    /// policy_set_version_id, manifest_sha, evaluation_status, determining_policies, diagnostics, metadata.
    pub fields: [String; 10],
    pub occurred_us: i64,
    pub content_sha256: String,
    pub prev_content_sha256: String,
    pub chain_hmac: String,
}

/// One failed check on one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainProblem {
    pub zone_id: String,
    pub chain_seq: Option<i64>,
    pub id: String,
    /// `content_mismatch`, `chain_break`, `seq_gap`, `seq_duplicate`, `seq_null`, `hmac_mismatch`.
    pub check: &'static str,
    pub detail: String,
}

/// Per zone: what was checked and where the chain is anchored.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ZoneSummary {
    pub zone_id: String,
    pub rows: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// `prev_content_sha256` of the first row: the link to history no longer in the table (dropped partitions).
    pub anchor_prev: String,
    pub head_content_sha256: String,
    pub problems: u64,
}

/// Caracal's content hash: SHA-256 over the 12 string fields each followed by 0x1F, then the decimal UnixNano of
/// `occurred_at`, hex.
pub fn content_sha256(row: &ChainRow) -> String {
    String::from_utf8_lossy(&content_hex(row)).into_owned()
}

/// [`content_sha256`] as hex digits on the stack (it runs once per row of the ledger).
fn content_hex(row: &ChainRow) -> [u8; 64] {
    use std::io::Write;
    let mut h = Sha256::new();
    for f in [&row.id, &row.zone_id].into_iter().chain(row.fields.iter()) {
        h.update(f.as_bytes());
        h.update([0x1f]);
    }
    let mut nanos = std::io::Cursor::new([0u8; 48]);
    // In i64 (until the year 2262) when it fits: formatting an i128 is markedly slower, once per row.
    let _ = match row.occurred_us.checked_mul(1000) {
        Some(ns) => write!(nanos, "{ns}"),
        None => write!(nanos, "{}", row.occurred_us as i128 * 1000),
    };
    let n = nanos.position() as usize;
    h.update(&nanos.get_ref()[..n]);
    let mut out = [0u8; 64];
    let _ = hex::encode_to_slice(h.finalize(), &mut out);
    out
}

/// `hex(HMAC-SHA256(key, content + "|" + prev))`.
pub fn chain_hmac(key: &[u8], content: &str, prev: &str) -> String {
    String::from_utf8_lossy(&hmac_hex(&keyed(key), content, prev)).into_owned()
}

type HmacSha256 = hmac::Hmac<Sha256>;

/// The HMAC with its key's inner and outer blocks already hashed: cloned per row, two compressions fewer each.
fn keyed(key: &[u8]) -> HmacSha256 {
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn hmac_hex(keyed: &HmacSha256, content: &str, prev: &str) -> [u8; 64] {
    let mut mac = keyed.clone();
    mac.update(content.as_bytes());
    mac.update(b"|");
    mac.update(prev.as_bytes());
    let mut out = [0u8; 64];
    let _ = hex::encode_to_slice(mac.finalize().into_bytes(), &mut out);
    out
}

/// Checks rows zone by zone and collects problems and per-zone summaries. Each zone's rows must come in
/// `chain_seq` order; the zones may come one after the other (`ORDER BY zone_id, chain_seq`) or interleaved (a
/// table's physical order, which is insertion order: one pass, no server-side sort). A zone whose rows turn out not
/// to be in order is noted ([`Verifier::in_order`]): its links must then be checked again from an ordered read.
pub struct Verifier {
    key: Option<HmacSha256>,
    /// Whether the content hash can be recomputed from the row (`audit_events`: yes; `admin_audit_events`: no,
    /// its hash covers JavaScript's `JSON.stringify` of a payload that `jsonb` has since reordered).
    recompute: bool,
    zones: Vec<ZoneState>,
    /// Zone id -> index in `zones`.
    index: std::collections::HashMap<String, usize>,
    /// The zone of the previous row: consecutive rows of one zone skip the lookup.
    last: Option<usize>,
    out_of_order: bool,
    /// Whether a zone's rows may come as several runs, each in chain order (a partitioned table read partition by
    /// partition: the default partition's older rows after the monthly ones): links inside a run are checked as
    /// rows come, the seams between runs at the end ([`Verifier::seams`]).
    segmented: bool,
    /// Runs started in all zones; past [`MAX_SEGMENTS`] the order cannot serve.
    segment_count: usize,
}

/// Runs the export may be cut into before an ordered read is cheaper than holding them.
const MAX_SEGMENTS: usize = 100_000;

struct ZoneState {
    summary: ZoneSummary,
    prev_content: String,
    prev_seq: Option<i64>,
    /// Segmented verification: the zone's runs in the order read.
    segments: Vec<Segment>,
}

/// A run of one zone's rows in chain order: its ends, to check the seams with the runs before and after it.
struct Segment {
    first_seq: i64,
    first_prev: String,
    first_id: String,
    last_seq: i64,
    last_content: String,
}

impl Verifier {
    pub fn new(key: Option<Vec<u8>>) -> Self {
        Self {
            key: key.as_deref().map(keyed),
            recompute: true,
            zones: Vec::new(),
            index: Default::default(),
            last: None,
            out_of_order: false,
            segmented: false,
            segment_count: 0,
        }
    }

    /// A verifier of a ledger read in the table's own order, whose zones may each come as several runs in chain
    /// order; call [`Verifier::seams`] when every row was fed.
    pub fn segmented(key: Option<Vec<u8>>) -> Self {
        Self { segmented: true, ..Self::new(key) }
    }

    /// A verifier of links, `chain_seq` and `chain_hmac` only (the HMAC covers the stored hashes, so it can still
    /// be checked when the content hash cannot be recomputed).
    pub fn links_only(key: Option<Vec<u8>>) -> Self {
        Self { recompute: false, ..Self::new(key) }
    }

    /// Whether every zone's rows came in `chain_seq` order, so the links and sequence checks hold.
    pub fn in_order(&self) -> bool {
        !self.out_of_order
    }

    /// Checks one row; returns its problems (usually none).
    pub fn feed(&mut self, row: &ChainRow) -> Vec<ChainProblem> {
        let mut problems = Vec::new();
        let mut problem = |check: &'static str, detail: String| {
            problems.push(ChainProblem {
                zone_id: row.zone_id.clone(),
                chain_seq: row.chain_seq,
                id: row.id.clone(),
                check,
                detail,
            })
        };
        let known = match self.last {
            Some(i) if self.zones[i].summary.zone_id == row.zone_id => Some(i),
            _ => self.index.get(&row.zone_id).copied(),
        };
        let first_in_zone = known.is_none();
        let i = known.unwrap_or_else(|| {
            self.zones.push(ZoneState {
                summary: ZoneSummary {
                    zone_id: row.zone_id.clone(),
                    first_seq: row.chain_seq,
                    anchor_prev: row.prev_content_sha256.clone(),
                    ..Default::default()
                },
                prev_content: String::new(),
                prev_seq: None,
                segments: Vec::new(),
            });
            self.index.insert(row.zone_id.clone(), self.zones.len() - 1);
            self.zones.len() - 1
        });
        self.last = Some(i);
        let zone = &mut self.zones[i];
        // Segmented: a row that does not follow the previous one of its zone starts a run; its links are checked
        // at the seams, once every run is known. A NULL chain_seq cannot be placed: the ordered read takes over.
        let mut starts_run = first_in_zone;
        if self.segmented {
            match (row.chain_seq, zone.prev_seq) {
                (None, _) => self.out_of_order = true,
                (Some(s), Some(p)) if !first_in_zone && s != p + 1 => starts_run = true,
                _ => {}
            }
            if starts_run && let Some(s) = row.chain_seq {
                zone.segments.push(Segment {
                    first_seq: s,
                    first_prev: row.prev_content_sha256.clone(),
                    first_id: row.id.clone(),
                    last_seq: s,
                    last_content: String::new(),
                });
                self.segment_count += 1;
                if self.segment_count > MAX_SEGMENTS {
                    self.out_of_order = true;
                }
            }
        } else if let (Some(s), Some(p)) = (row.chain_seq, zone.prev_seq)
            && s < p
        {
            self.out_of_order = true;
        }
        let link_checked_here = if self.segmented { !starts_run } else { !first_in_zone };

        if self.recompute {
            let recomputed = content_hex(row);
            if recomputed[..] != *row.content_sha256.as_bytes() {
                let recomputed = String::from_utf8_lossy(&recomputed);
                problem("content_mismatch", format!("stored {} recomputed {recomputed}", row.content_sha256));
            }
        }
        if link_checked_here && row.prev_content_sha256 != zone.prev_content {
            problem(
                "chain_break",
                format!(
                    "prev_content_sha256 {} but the previous row's content is {}",
                    row.prev_content_sha256, zone.prev_content
                ),
            );
        }
        match (row.chain_seq, zone.prev_seq) {
            _ if self.segmented => {} // in order within a run by construction; gaps show at the seams
            (None, _) => problem("seq_null", "chain_seq is NULL".into()),
            (Some(s), Some(p)) if !first_in_zone && s == p => {
                problem("seq_duplicate", format!("chain_seq {s} appears again"))
            }
            (Some(s), Some(p)) if !first_in_zone && s != p + 1 => {
                problem("seq_gap", format!("chain_seq jumps from {p} to {s}: {} row(s) missing", s - p - 1))
            }
            _ => {}
        }
        if let Some(keyed) = &self.key {
            let want = hmac_hex(keyed, &row.content_sha256, &row.prev_content_sha256);
            if want[..] != *row.chain_hmac.as_bytes() {
                problem("hmac_mismatch", "chain_hmac does not match the key".into());
            }
        }

        zone.summary.rows += 1;
        zone.summary.last_seq = row.chain_seq.or(zone.summary.last_seq);
        zone.summary.problems += problems.len() as u64;
        zone.prev_content.clear();
        zone.prev_content.push_str(&row.content_sha256);
        zone.prev_seq = row.chain_seq.or(zone.prev_seq);
        if let Some(run) = zone.segments.last_mut()
            && let Some(s) = row.chain_seq
        {
            run.last_seq = s;
            run.last_content.clear();
            run.last_content.push_str(&row.content_sha256);
        }
        problems
    }

    /// Segmented verification, after the last row: puts each zone's runs in chain order and checks the seams
    /// between them (a gap in `chain_seq`, a `prev_content_sha256` that is not the previous run's last content),
    /// reporting each at the first row of the later run, as an in-order read reports it. Runs that overlap (a
    /// `chain_seq` twice, rows moved inside a run) cannot be placed: the order then cannot serve ([`Verifier::in_order`]
    /// turns false) and nothing is returned.
    pub fn seams(&mut self) -> Vec<ChainProblem> {
        let mut problems = Vec::new();
        if !self.segmented || self.out_of_order {
            return problems;
        }
        for zone in &mut self.zones {
            zone.segments.sort_by_key(|s| s.first_seq);
            let mut found = 0;
            for pair in zone.segments.windows(2) {
                let (before, run) = (&pair[0], &pair[1]);
                if run.first_seq <= before.last_seq {
                    self.out_of_order = true;
                    return Vec::new();
                }
                let mut problem = |check: &'static str, detail: String| {
                    found += 1;
                    problems.push(ChainProblem {
                        zone_id: zone.summary.zone_id.clone(),
                        chain_seq: Some(run.first_seq),
                        id: run.first_id.clone(),
                        check,
                        detail,
                    })
                };
                if run.first_prev != before.last_content {
                    problem(
                        "chain_break",
                        format!(
                            "prev_content_sha256 {} but the previous row's content is {}",
                            run.first_prev, before.last_content
                        ),
                    );
                }
                if run.first_seq != before.last_seq + 1 {
                    problem(
                        "seq_gap",
                        format!(
                            "chain_seq jumps from {} to {}: {} row(s) missing",
                            before.last_seq,
                            run.first_seq,
                            run.first_seq - before.last_seq - 1
                        ),
                    );
                }
            }
            zone.summary.problems += found;
            if let (Some(first), Some(last)) = (zone.segments.first(), zone.segments.last()) {
                zone.summary.first_seq = Some(first.first_seq);
                zone.summary.anchor_prev = first.first_prev.clone();
                zone.summary.last_seq = Some(last.last_seq);
                zone.prev_content = last.last_content.clone();
            }
        }
        problems
    }

    /// The zones in the order first seen, each with its head.
    pub fn finish(self) -> Vec<ZoneSummary> {
        self.zones.into_iter().map(|z| ZoneSummary { head_content_sha256: z.prev_content, ..z.summary }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(zone: &str, seq: i64, prev: &str) -> ChainRow {
        let mut r = ChainRow {
            zone_id: zone.into(),
            chain_seq: Some(seq),
            id: format!("evt-{seq}"),
            fields: ["token.exchange", "req", "allow", "", "", "", "ok", "null", "null", "null"].map(String::from),
            occurred_us: 1_764_370_000_000_000 + seq,
            prev_content_sha256: prev.into(),
            ..Default::default()
        };
        r.content_sha256 = content_sha256(&r);
        r.chain_hmac = chain_hmac(b"k", &r.content_sha256, prev);
        r
    }

    #[test]
    fn formula_matches_caracals_layout() {
        let r = row("z", 1, "");
        let mut expect = Vec::new();
        for f in ["evt-1", "z", "token.exchange", "req", "allow", "", "", "", "ok", "null", "null", "null"] {
            expect.extend_from_slice(f.as_bytes());
            expect.push(0x1f);
        }
        expect.extend_from_slice(b"1764370000000001000");
        assert_eq!(r.content_sha256, hex::encode(Sha256::digest(&expect)));
    }

    #[test]
    fn a_zone_read_in_runs_is_verified_at_its_seams() {
        // Four rows of one zone; a partitioned table read partition by partition gives 3, 4 (this month) before
        // 1, 2 (the default partition, scanned last).
        let r1 = row("z", 1, "anchor");
        let r2 = row("z", 2, &r1.content_sha256);
        let r3 = row("z", 3, &r2.content_sha256);
        let r4 = row("z", 4, &r3.content_sha256);
        let mut v = Verifier::segmented(Some(b"k".to_vec()));
        assert!([&r3, &r4, &r1, &r2].iter().all(|r| v.feed(r).is_empty()));
        assert!(v.seams().is_empty() && v.in_order(), "a valid chain in two runs has no problem");
        let zones = v.finish();
        assert_eq!((zones[0].first_seq, zones[0].last_seq), (Some(1), Some(4)));
        assert_eq!(
            (zones[0].anchor_prev.as_str(), zones[0].head_content_sha256.as_str()),
            ("anchor", r4.content_sha256.as_str())
        );

        // Row 2 deleted: the seam between the runs shows it where an ordered read would, at row 3.
        let mut v = Verifier::segmented(None);
        for r in [&r3, &r4, &r1] {
            assert!(v.feed(r).is_empty());
        }
        let mut p: Vec<_> = v.seams().into_iter().map(|p| (p.chain_seq, p.check)).collect();
        p.sort();
        assert_eq!(p, [(Some(3), "chain_break"), (Some(3), "seq_gap")]);
        assert!(v.in_order());

        // A chain_seq twice (runs overlap): the runs cannot be placed, the ordered read must verify.
        let mut v = Verifier::segmented(None);
        for r in [&r1, &r2, &r3, &r2] {
            v.feed(r);
        }
        assert!(v.seams().is_empty() && !v.in_order());
    }

    #[test]
    fn a_valid_chain_has_no_problems_and_each_kind_is_caught() {
        let a = row("z", 1, "anchor");
        let b = row("z", 2, &a.content_sha256);
        let c = row("z", 3, &b.content_sha256);
        let mut v = Verifier::new(Some(b"k".to_vec()));
        assert!([&a, &b, &c].iter().all(|r| v.feed(r).is_empty()));
        let zones = v.finish();
        assert_eq!((zones[0].rows, zones[0].anchor_prev.as_str()), (3, "anchor"));

        // Zones interleaved, as a table's physical order has them: the same verdicts, zone by zone.
        let x = row("y", 7, "anchor-y");
        let y = row("y", 8, &x.content_sha256);
        let mut v = Verifier::new(Some(b"k".to_vec()));
        assert!([&a, &x, &b, &y, &c].iter().all(|r| v.feed(r).is_empty()));
        assert!(v.in_order());
        let zones = v.finish();
        assert_eq!(
            zones.iter().map(|z| (z.rows, z.head_content_sha256.as_str())).collect::<Vec<_>>(),
            [(3, c.content_sha256.as_str()), (2, y.content_sha256.as_str())]
        );
        // A zone's rows out of chain order: noted, so its links are checked again in order.
        let mut v = Verifier::new(None);
        v.feed(&a);
        v.feed(&c);
        v.feed(&b);
        assert!(!v.in_order());

        let mut v = Verifier::new(Some(b"k".to_vec()));
        let mut tampered = b.clone();
        tampered.fields[2] = "deny".into();
        let mut forged = c.clone();
        forged.chain_hmac = "00".into();
        assert!(v.feed(&a).is_empty());
        let p = v.feed(&tampered);
        assert_eq!(p.iter().map(|p| p.check).collect::<Vec<_>>(), ["content_mismatch"]);
        let p = v.feed(&forged);
        assert_eq!(p.iter().map(|p| p.check).collect::<Vec<_>>(), ["hmac_mismatch"]);

        let mut v = Verifier::new(None);
        v.feed(&a);
        let p = v.feed(&c); // b deleted
        assert_eq!(p.iter().map(|p| p.check).collect::<Vec<_>>(), ["chain_break", "seq_gap"]);

        // Links only: a changed field goes unnoticed by design, a forged link or HMAC does not.
        let mut v = Verifier::links_only(Some(b"k".to_vec()));
        assert!(v.feed(&a).is_empty());
        assert!(v.feed(&tampered).is_empty());
        let p = v.feed(&forged);
        assert_eq!(p.iter().map(|p| p.check).collect::<Vec<_>>(), ["hmac_mismatch"]);
    }
}

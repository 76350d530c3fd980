//! What `preserve snapshot`, `verify`, `check` and `fingerprint` print when they are done.

use std::{fmt, path::Path};

use crate::{
    bundle::bounds::printable,
    bundle::fingerprints::Checked,
    check,
    seal::{
        custody::Chain,
        verify::{Layer, Verification},
    },
    snapshot::Outcome,
};

/// `preserve snapshot --json`: where the bundle is, its hash and size, and each collector's status and amounts.
pub fn snapshot_json(outcome: &Outcome) -> serde_json::Value {
    let collectors: Vec<_> = outcome
        .manifest
        .collectors
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name, "status": c.status, "error": c.error,
                "bytes": c.artifacts.iter().map(|a| a.bytes).sum::<u64>(),
                "records": c.artifacts.iter().filter_map(|a| a.records).sum::<u64>(),
            })
        })
        .collect();
    serde_json::json!({
        "bundle": outcome.bundle.archive,
        "sha256": outcome.bundle.sha256,
        "bytes": outcome.bundle.bytes,
        "bundle_id": outcome.manifest.bundle_id,
        "status": outcome.manifest.status,
        "collectors": collectors,
        "seal": outcome.seal,
        "seal_findings": outcome.seal.missing().into_iter().map(|(code, why)| serde_json::json!({"code": code, "summary": why})).collect::<Vec<_>>(),
        "upload": outcome.upload,
        "exit_code": outcome.exit_code(),
    })
}

/// `preserve verify`: one line when intact, else every problem with the file at fault; then each seal layer.
pub struct Verified<'a> {
    pub bundle: &'a Path,
    pub verified: &'a Verification,
}

impl fmt::Display for Verified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.verified.bundle;
        if r.intact() && !r.payload_checked {
            writeln!(
                f,
                "ciphertext intact: archive sha256 {}{}; encrypted, the payload was NOT checked (give --identity)",
                r.archive_sha256,
                if r.archive_hash_checked { ", matches .sha256" } else { ", no .sha256 beside it" }
            )?;
        } else if r.intact() {
            writeln!(
                f,
                "intact: {} ({} payload files, {} bytes; archive sha256 {}{})",
                r.bundle_id.as_deref().unwrap_or("?"),
                r.payload_files,
                r.payload_bytes,
                r.archive_sha256,
                if r.archive_hash_checked { ", matches .sha256" } else { ", no .sha256 beside it" }
            )?;
        } else {
            writeln!(f, "NOT INTACT: {}", self.bundle.display())?;
            for p in &r.problems {
                writeln!(f, "  {p}")?;
            }
        }
        let s = &self.verified.seal;
        // A bundle sealed in no way, with no seal asked for, says nothing more than before.
        if [&s.signature, &s.timestamp, &s.custody].iter().all(|l| matches!(l, Layer::Absent))
            && !r.problems.iter().any(|p| p.kind == crate::bundle::verify::ProblemKind::Unsealed)
        {
            return Ok(());
        }
        for (name, layer) in [("signature", &s.signature), ("timestamp", &s.timestamp), ("custody", &s.custody)] {
            writeln!(f, "{}", printable(&format!("{name:<10} {}", layer_line(name, layer))))?;
        }
        Ok(())
    }
}

/// One seal layer (`signature`, `timestamp` or `custody`) as found.
fn layer_line(name: &str, layer: &Layer) -> String {
    let text = |d: &serde_json::Value, k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
    match layer {
        Layer::Absent => "absent".to_string(),
        Layer::Invalid { file, why } => format!("INVALID ({file}): {why}"),
        Layer::Valid { detail, .. } if name == "signature" => {
            let who = match detail.get("principals").and_then(|p| p.as_array()) {
                Some(p) => format!(" = {}", p.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")),
                None => " (signer not checked: give --allowed-signers)".to_string(),
            };
            format!("valid: {} {}{who}", text(detail, "algorithm"), text(detail, "key"))
        }
        Layer::Valid { detail, .. } if name == "timestamp" => format!(
            "valid: {} by {}, digest matches, {}",
            text(detail, "time"),
            text(detail, "tsa"),
            text(detail, "chain")
        ),
        Layer::Valid { detail, .. } => {
            let signers: Vec<String> = detail
                .get("signers")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
                .map(|s| {
                    let key = text(s, "key");
                    match s.get("principals").and_then(|p| p.as_array()) {
                        Some(p) => {
                            format!("{key} = {}", p.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", "))
                        }
                        None => key,
                    }
                })
                .collect();
            let n = detail.get("entries").and_then(|v| v.as_u64()).unwrap_or(0);
            format!(
                "valid: {n} {}, every link holds; signed by {}",
                if n == 1 { "entry" } else { "entries" },
                signers.join("; ")
            )
        }
    }
}

/// `preserve custody show`: each entry on a line, then the first broken link if any.
pub struct Custody<'a> {
    pub path: &'a Path,
    pub chain: &'a Chain,
}

impl fmt::Display for Custody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", printable(&format!("custody record {}", self.path.display())))?;
        for c in &self.chain.entries {
            let e = &c.entry;
            let who = c.principals.as_ref().map(|p| format!(" = {}", p.join(", "))).unwrap_or_default();
            writeln!(
                f,
                "{}",
                printable(&format!(
                    "{:>3} {} {:<11} {} on {} ({}) signed {}{who}",
                    e.seq,
                    e.time,
                    e.action.as_str(),
                    e.actor,
                    e.host,
                    e.tool,
                    e.key
                ))
            )?;
            if !e.note.is_empty() {
                writeln!(f, "      note: {}", printable(&e.note))?;
            }
        }
        match &self.chain.broken {
            Some(b) => writeln!(
                f,
                "{}",
                printable(&format!(
                    "BROKEN at {b}{}",
                    if self.chain.unchecked_after > 0 {
                        format!(" ({} entries after it are not vouched for)", self.chain.unchecked_after)
                    } else {
                        String::new()
                    }
                ))
            ),
            None => writeln!(f, "every link holds ({} entries)", self.chain.entries.len()),
        }
    }
}

/// `preserve fingerprint`: each candidate's line number and marker, and with a bundle where it was recorded.
pub struct Fingerprints<'a>(pub &'a [Checked]);

impl fmt::Display for Fingerprints<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0 {
            match &c.matches {
                None => writeln!(f, "line {}: {}", c.line, c.marker)?,
                Some(m) if m.is_empty() => writeln!(f, "line {}: {}  no match", c.line, c.marker)?,
                Some(m) => {
                    let places: Vec<_> = m.iter().map(ToString::to_string).collect();
                    writeln!(f, "line {}: {}  MATCH: {}", c.line, c.marker, places.join("; "))?;
                }
            }
        }
        Ok(())
    }
}

/// `preserve check`: one line per site fact and per collector, escaped and cut to one line by
/// [`check::Report::lines`] (a detail can quote what a server said).
pub struct Readiness<'a>(pub &'a check::Report);

impl fmt::Display for Readiness<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.0.lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// `preserve list s3://...`: one line per stored bundle.
pub struct StoredBundles<'a>(pub &'a [crate::store::remote::Listed]);

impl fmt::Display for StoredBundles<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "no bundles there");
        }
        for b in self.0 {
            let lock = match (&b.lock.mode, b.lock.legal_hold) {
                (Some(m), hold) => format!(
                    "{m} until {}{}",
                    b.lock.retain_until.as_deref().unwrap_or("?"),
                    if hold { " +hold" } else { "" }
                ),
                (None, true) => "legal hold".to_string(),
                (None, false) => "unlocked".to_string(),
            };
            let mut seal = Vec::new();
            if b.signed {
                seal.push("signed");
            }
            if b.timestamped {
                seal.push("timestamped");
            }
            if b.custody {
                seal.push("custody");
            }
            if b.encrypted {
                seal.push("encrypted");
            }
            let line = format!(
                "{}  {}  {}  {}  {}  {}  {}{}",
                b.bundle_id,
                b.profile.as_deref().unwrap_or("?"),
                b.created_at.as_deref().unwrap_or("?"),
                b.status.as_deref().unwrap_or("?"),
                bytesize::ByteSize::b(b.bytes).display().iec(),
                lock,
                if seal.is_empty() { "unsealed".to_string() } else { seal.join("+") },
                b.note.as_deref().map(|n| format!("  ({n})")).unwrap_or_default()
            );
            writeln!(f, "{}", printable(&line))?;
        }
        Ok(())
    }
}

//! What `preserve snapshot`, `verify`, `check` and `fingerprint` print when they are done.

use std::{fmt, path::Path};

use crate::{
    bundle::{fingerprints::Checked, verify::Report},
    check,
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
    })
}

/// `preserve verify`: one line when intact, else every problem with the file at fault.
pub struct Verified<'a> {
    pub bundle: &'a Path,
    pub report: &'a Report,
}

impl fmt::Display for Verified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        if r.intact() {
            writeln!(
                f,
                "intact: {} ({} payload files, {} bytes; archive sha256 {}{})",
                r.bundle_id.as_deref().unwrap_or("?"),
                r.payload_files,
                r.payload_bytes,
                r.archive_sha256,
                if r.archive_hash_checked { ", matches .sha256" } else { ", no .sha256 beside it" }
            )
        } else {
            writeln!(f, "NOT INTACT: {}", self.bundle.display())?;
            for p in &r.problems {
                writeln!(f, "  {p}")?;
            }
            Ok(())
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

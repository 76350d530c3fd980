//! `preserve inspect`: a bundle's manifest as a person reads it.

use std::fmt;

use super::window_end;
use crate::bundle::{bounds::printable, manifest::Manifest};

/// The summary of a bundle: collectors with status, sizes and records, then findings. The manifest is the bundle
/// author's text: every string from it is shown with its control characters escaped.
pub struct Inspect<'a>(pub &'a Manifest);

impl fmt::Display for Inspect<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        let p = |s: &str| printable(s);
        let host = format!("{}   ", p(&m.host));
        head(f, &m.bundle_id, m.status.as_str(), &m.profile, Some(&host), &m.tool)?;
        writeln!(f, "taken:    {} .. {}", m.created_at, m.finished_at)?;
        writeln!(f, "window:   {} .. {}", window_end(m.window.since), window_end(m.window.until))?;
        writeln!(
            f,
            "trigger:  {}",
            serde_json::to_value(m.trigger.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
        )?;
        for a in &m.trigger.alerts {
            writeln!(f, "  alert {} {:?}", p(a.name().unwrap_or("?")), a.labels)?;
        }
        writeln!(f, "collectors:")?;
        for c in &m.collectors {
            let bytes: u64 = c.artifacts.iter().map(|a| a.bytes).sum();
            let records: u64 = c.artifacts.iter().filter_map(|a| a.records).sum();
            let redacted: u64 = c.redactions.iter().map(|r| r.count).sum();
            writeln!(
                f,
                "  {:<24} {:<8} {:>10} {:>9} records {:>4} files {:>6} ms{}{}",
                p(&c.name),
                c.status.as_str(),
                bytesize::ByteSize::b(bytes).display().iec().to_string(),
                records,
                c.artifacts.len(),
                c.duration_ms,
                if redacted > 0 { format!(", {redacted} redacted") } else { String::new() },
                c.error.as_ref().map(|e| format!("\n      {}", p(e))).unwrap_or_default()
            )?;
        }
        if !m.findings.is_empty() {
            writeln!(f, "findings:")?;
            for finding in &m.findings {
                writeln!(
                    f,
                    "  [{:?}] {} {}: {}",
                    finding.severity,
                    p(&finding.collector),
                    p(&finding.code),
                    p(&finding.summary)
                )?;
            }
        }
        Ok(())
    }
}

/// The lines both manifests begin with; `host` (already escaped) only where the manifest has one.
fn head(
    f: &mut fmt::Formatter<'_>,
    id: &str,
    status: &str,
    profile: &str,
    host: Option<&str>,
    tool: &crate::bundle::manifest::Tool,
) -> fmt::Result {
    writeln!(f, "bundle:   {}", printable(id))?;
    writeln!(f, "status:   {status}")?;
    writeln!(f, "profile:  {}", printable(profile))?;
    match host {
        Some(h) => writeln!(f, "host:     {h}tool: {} {}", printable(&tool.name), printable(&tool.version)),
        None => writeln!(f, "tool:     {} {}", printable(&tool.name), printable(&tool.version)),
    }
}

/// `preserve inspect` of an encrypted bundle: its public manifest, which is all that can be read without its key.
pub struct InspectPublic<'a>(pub &'a crate::bundle::manifest::PublicManifest);

impl fmt::Display for InspectPublic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        head(f, &m.bundle_id, m.status.as_str(), &m.profile, None, &m.tool)?;
        writeln!(f, "taken:    {} .. {}", m.created_at, m.finished_at)?;
        writeln!(
            f,
            "collectors: {} ({} not ok); the rest is inside the encrypted archive ({} bytes): `preserve verify \
             --identity FILE` checks it, `age -d -i FILE` opens it",
            m.collectors, m.collectors_failed, m.archive_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest written by whoever made the bundle: its strings may carry terminal escapes and line breaks.
    fn hostile() -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format": "preserve-bundle/1", "bundle_id": "preserve-full-20261129T024500Z-1a2b3c4d",
            "profile": "full\u{1b}[2J", "profiles": ["full"],
            "created_at": "2026-11-29T02:45:00Z", "finished_at": "2026-11-29T02:46:00Z",
            "tool": {"name": "preserve", "version": "0.1.0"}, "host": "h1",
            "trigger": {"kind": "alert", "alerts": [{"labels": {"alertname": "X\nbundle:   forged"}}]},
            "window": {"since": "2026-11-29T00:45:00Z", "until": null},
            "collectors": [{
                "name": "redis-streams", "kind": "redis", "status": "failed", "error": "refused\nstatus:   complete",
                "started_at": "2026-11-29T02:45:00Z", "duration_ms": 1200, "source": "redis://r",
                "artifacts": [{"path": "data/a", "sha256": "00", "bytes": 2048, "media_type": "x", "records": 7,
                               "truncated": false}],
                "redactions": [],
            }],
            "findings": [{"collector": "audit", "code": "chain_broken", "severity": "critical", "summary": "gap"}],
            "status": "partial",
        }))
        .unwrap()
    }

    #[test]
    fn a_bundle_is_summarized_with_its_own_text_escaped() {
        let shown = Inspect(&hostile()).to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "bundle:   preserve-full-20261129T024500Z-1a2b3c4d");
        assert_eq!(lines[1], "status:   partial");
        assert_eq!(lines[2], r"profile:  full\u{1b}[2J");
        assert_eq!(lines[5], "window:   2026-11-29T00:45:00Z .. open");
        assert_eq!(lines[6], "trigger:  alert");
        assert!(lines[7].starts_with(r"  alert X\nbundle:   forged "), "{}", lines[7]);
        assert_eq!(lines[9], "  redis-streams            failed      2.0 KiB         7 records    1 files   1200 ms");
        assert_eq!(lines[10], r"      refused\nstatus:   complete", "the error on a line of its own, escaped");
        assert_eq!(lines[11..], ["findings:", "  [Critical] audit chain_broken: gap"]);
        assert!(shown.ends_with('\n'));
    }
}

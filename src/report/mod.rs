//! The report: one self-contained HTML page a person opens in a browser to see what a bundle holds (docs/timeline.md
//! "The report"). Every bundle has it as the tag file `report.html`; `preserve report BUNDLE -o FILE` makes it for
//! any bundle.
//!
//! It summarizes (counts, top-N, excerpts with their bundle paths), so it stays small at any scale: the events go
//! through a [`Digest`] one by one, and the few artifacts it quotes (consumer groups, chain problems, policy sets,
//! config diffs) are read up to [`QUOTE_LIMIT`] each. Everything shown is evidence, written by whoever attacked the
//! system: the page is built with `maud`, which escapes every value put into it, and carries a
//! Content-Security-Policy that allows no script, no fetch and no frame, only its own inline style.

pub mod digest;
mod html;
pub mod tap;

use std::{
    collections::BTreeMap,
    io::{self, Read},
    path::Path,
};

pub use digest::{Axis, Digest};

use crate::{
    bundle::manifest::Manifest,
    timeline::{self, Options, extract},
};

/// At most this much of each quoted artifact is read.
pub const QUOTE_LIMIT: u64 = 128 << 10;
/// At most this many artifacts are quoted.
const QUOTES: usize = 64;

/// What the report is made from, besides the manifest.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub digest: Digest,
    /// Quoted artifacts by path in the bag: their first [`QUOTE_LIMIT`] bytes, and whether there was more.
    pub quotes: BTreeMap<String, (Vec<u8>, bool)>,
    /// Why the evidence's part of the report was left out (it held a secret that redaction missed).
    pub withheld: Option<String>,
}

/// The digest a report of this manifest's bundle starts from: its chart's axis, centred on the first triggering
/// alert or, without one, on when the snapshot began.
pub fn empty_digest(
    since: Option<jiff::Timestamp>,
    until: Option<jiff::Timestamp>,
    created_at: jiff::Timestamp,
    alert: Option<jiff::Timestamp>,
) -> Digest {
    Digest::new(Axis::of(since, until, created_at, alert), alert.unwrap_or(created_at), alert.is_some())
}

/// One artifact's part of a bundle's digest, read from `data` on its own, its ids compacted to
/// [`digest::PART_IDS`] while it waits to be merged; and how its reading ended (what was read before a failure is
/// in the part).
pub fn digest_part(
    empty: &Digest,
    shape: &extract::Shape,
    a: &extract::Artifact<'_>,
    data: &mut dyn io::BufRead,
    tally: &mut extract::Tally,
) -> (Digest, io::Result<()>) {
    let mut part = empty.fresh();
    let read = extract::extract(shape, a, data, tally, &mut part);
    part.compact(digest::PART_IDS);
    (part, read)
}

/// A bundle's digest: `empty`, its artifacts' parts merged in path order, then its manifest's events. Made so
/// both while the bundle is staged (`tap::Taps`) and by `preserve report` of it, the summaries (ids seen most,
/// excerpts) come out the same, and so do the pages.
pub fn assemble(mut digest: Digest, parts: BTreeMap<String, Digest>, manifest: &Manifest) -> Digest {
    for part in parts.into_values() {
        digest.merge(part);
    }
    for e in extract::from_manifest(manifest) {
        digest.add(&e);
    }
    digest
}

/// Whether the report quotes the artifact `a` (read whole, up to [`QUOTE_LIMIT`]).
pub fn quotes(a: &extract::Artifact<'_>) -> bool {
    let file = a.path.rsplit('/').next().unwrap_or("");
    match a.kind {
        "redis" => file == "xinfo.json" && a.path.contains("/streams/"),
        "postgres" => {
            (a.path.contains("/analysis/") && file.ends_with("_problems.jsonl"))
                || (a.path.contains("/policy-sets/") && (file.ends_with(".json") || file.ends_with(".diff")))
        }
        "config_diff" | "kubernetes" => file.ends_with(".diff"),
        _ => false,
    }
}

/// Reads what a report of the bundle at `archive` needs, in one pass over the archive.
pub fn gather(
    archive: &Path,
    manifest: &Manifest,
    opts: &Options,
) -> Result<(Inputs, timeline::Walked), timeline::Error> {
    let empty = empty_digest(
        manifest.window.since,
        manifest.window.until,
        manifest.created_at,
        timeline::alert_start(manifest),
    );
    let mut parts: BTreeMap<String, Digest> = BTreeMap::new();
    let mut quotes = BTreeMap::new();
    let mut skipped = extract::Tally::default();
    let walked = timeline::each_artifact(archive, manifest, opts, |a, data| {
        if let Some(shape) = extract::shape(a) {
            let (part, read) = digest_part(&empty, &shape, a, data, &mut skipped);
            parts.insert(a.path.to_string(), part);
            return read.map_err(timeline::Halt::Cut);
        }
        if quotes.len() < QUOTES && self::quotes(a) {
            let (bytes, more) = quote(data).map_err(timeline::Halt::Cut)?;
            quotes.insert(a.path.to_string(), (bytes, more));
        }
        Ok(())
    })?;
    Ok((Inputs { digest: assemble(empty, parts, manifest), quotes, withheld: None }, walked))
}

/// The first [`QUOTE_LIMIT`] bytes of `data`, and whether it held more.
pub fn quote(data: &mut dyn Read) -> io::Result<(Vec<u8>, bool)> {
    let mut bytes = Vec::new();
    data.take(QUOTE_LIMIT + 1).read_to_end(&mut bytes)?;
    let more = bytes.len() as u64 > QUOTE_LIMIT;
    bytes.truncate(QUOTE_LIMIT as usize);
    Ok((bytes, more))
}

/// The page.
pub fn render(manifest: &Manifest, inputs: &Inputs) -> String {
    html::page(manifest, inputs)
}

/// Everything of the evidence the page shows, as it is before escaping.
fn quoted_text(inputs: &Inputs) -> Vec<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    let d = &inputs.digest;
    let mut out: Vec<Cow<'_, str>> = Vec::new();
    for e in &d.excerpts {
        out.push(Cow::Borrowed(&e.message));
        out.extend(e.ids.values().chain(e.details.values()).map(Cow::Borrowed));
        out.push(Cow::Borrowed(&e.instance));
        out.push(Cow::Borrowed(&e.service));
    }
    for (k, values) in &d.near_ids {
        out.push(Cow::Borrowed(k));
        out.extend(values.keys().map(|v| Cow::Borrowed(&**v)));
    }
    for (stream, dl) in &d.dead_letters {
        out.push(Cow::Borrowed(stream));
        for (k, (_, example)) in &dl.reasons {
            out.push(Cow::Borrowed(k));
            out.push(Cow::Borrowed(example));
        }
    }
    for (stream, group) in d.pending.keys() {
        out.push(Cow::Borrowed(stream));
        out.push(Cow::Borrowed(group));
    }
    out.extend(d.series.keys().map(|k| Cow::Borrowed(k.as_str())));
    out.extend(inputs.quotes.values().map(|(b, _)| String::from_utf8_lossy(b)));
    out
}

/// The page of a bundle being written, checked for the run's known secrets as every artifact is: one that holds
/// a secret redaction missed (from an excerpt) is replaced by the page without the evidence's part, saying so.
pub fn render_guarded(
    manifest: &Manifest,
    inputs: Inputs,
    known: Option<std::sync::Arc<crate::redact::Known>>,
) -> String {
    let page = render(manifest, &inputs);
    let Some(known) = known else { return page };
    // The page and, unescaped, what it quotes: a secret holding `&` or `<` is escaped in the page, not in these.
    let mut watch = crate::redact::guard::LeakWatch::new(known.clone());
    watch.scan(page.as_bytes());
    for text in quoted_text(&inputs) {
        watch.scan(b"\n");
        watch.scan(text.as_bytes());
    }
    let Some(found) = watch.found().map(str::to_string) else { return page };
    let bare = Inputs {
        digest: inputs.digest.fresh(),
        quotes: BTreeMap::new(),
        withheld: Some(format!("the report held a known secret ({found}); its counts and excerpts are left out")),
    };
    render(manifest, &bare)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jiff::{SignedDuration, Timestamp};

    use super::*;
    use crate::timeline::{Event, Source, event::Fields};

    fn manifest(at: Timestamp) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format": "preserve-bundle/1", "bundle_id": "preserve-full-20261205T030000Z-00000000", "profile": "full",
            "profiles": ["full"], "created_at": at, "finished_at": at, "tool": {"name": "preserve", "version": "0"},
            "host": "h", "trigger": {"kind": "cli", "alerts": []}, "window": {"since": null, "until": null},
            "collectors": [], "findings": [], "status": "complete"
        }))
        .unwrap()
    }

    /// The digest counts most records from what is cheap to read of them and parses only those it needs whole:
    /// that must give exactly the digest of every event parsed whole.
    #[test]
    fn counting_before_parsing_gives_the_digest_of_every_event_parsed() {
        let at: Timestamp = "2026-12-05T03:00:00Z".parse().unwrap();
        let mut docker = String::new();
        for i in 0..400i64 {
            let t = at.checked_sub(SignedDuration::from_secs(10_800 - i * 29)).unwrap();
            let inner = match i % 4 {
                0 => {
                    serde_json::json!({"level": "error", "service": "audit", "time": t.as_millisecond(), "msg": format!("m{i}"), "request_id": format!("req-{}", i % 9)})
                }
                1 => {
                    serde_json::json!({"level": 40, "service": "control", "time": t.to_string(), "msg": "x \"time\": 1", "reqId": format!("req-{}", i % 5)})
                }
                2 => {
                    serde_json::json!({"level": "info", "ts": t.as_second(), "message": "no service of its own", "zone_id": "zone-alpha"})
                }
                _ => serde_json::json!({"nested": {"time": 5}, "msg": "Docker's time only"}),
            };
            let docker_time = t.checked_add(SignedDuration::from_millis(3)).unwrap();
            docker.push_str(
                &serde_json::json!({"log": format!("{inner}\n"), "stream": "stderr", "time": docker_time.to_string()})
                    .to_string(),
            );
            docker.push('\n');
        }
        let mut dlq = String::new();
        for i in 0..50i64 {
            let ms = at.as_millisecond() - 3_000_000 + i * 90_000;
            dlq.push_str(&serde_json::json!({"id": format!("{ms}-0"), "fields": [["reason", format!("r{}:x", i % 3)], ["src_data", format!("{{\"request_id\":\"req-{i}\"}}")]]}).to_string());
            dlq.push('\n');
        }
        let csv =
            (0..300i64).fold(String::from("id,zone_id,event_type,request_id,decision,occurred_at\n"), |mut c, i| {
                let t = at.checked_sub(SignedDuration::from_secs(7200 - i * 31)).unwrap();
                c.push_str(&format!(
                    "evt-{i},zone-{},tool.invoke,req-{},allow,{}+00\n",
                    i % 3,
                    i % 11,
                    t.strftime("%Y-%m-%d %H:%M:%S%.6f")
                ));
                c
            });
        let inputs = [
            ("audit-logs", "file", "data/audit-logs/audit/caracal-audit-1/x-json.log", docker),
            ("redis-dlq", "redis", "data/redis-dlq/streams/caracal.audit.events.dlq/entries.jsonl", dlq),
            ("postgres-audit", "postgres", "data/postgres-audit/tables/public.audit_events.csv", csv),
        ];
        let mut lazy = empty_digest(None, None, at, Some(at));
        let mut full = lazy.fresh();
        for (collector, kind, path, text) in &inputs {
            let a = extract::Artifact { collector, kind, path, redaction: None, collected_at: Some(at) };
            let shape = extract::shape(&a).unwrap();
            extract::extract(&shape, &a, &mut text.as_bytes(), &mut extract::Tally::default(), &mut lazy).unwrap();
            let mut events = Vec::new();
            extract::extract(&shape, &a, &mut text.as_bytes(), &mut extract::Tally::default(), &mut |e| events.push(e))
                .unwrap();
            for e in &events {
                full.add(e);
            }
        }
        assert!(full.near_events > 50 && full.series.len() >= 3, "{} near, {:?}", full.near_events, full.series.keys());
        assert_eq!(lazy.events, full.events);
        assert_eq!(lazy.series, full.series);
        assert_eq!((lazy.before_axis, lazy.after_axis), (full.before_axis, full.after_axis));
        assert_eq!(lazy.near_ids, full.near_ids);
        assert_eq!(lazy.excerpts, full.excerpts);
        assert_eq!(format!("{:?}", lazy.dead_letters), format!("{:?}", full.dead_letters));
    }

    /// A secret that redaction missed is found in the page even where the page escapes it (`&` becomes `&amp;`):
    /// the evidence's part of the page is then left out.
    #[test]
    fn a_secret_the_page_escapes_is_still_found_and_withheld() {
        let at: Timestamp = "2026-12-05T03:00:00Z".parse().unwrap();
        let secret = "s3cr&t<pass>word-7f2a9c";
        let mut digest = empty_digest(None, None, at, Some(at));
        digest.add(&Event {
            time: at,
            source: Source {
                collector: "api-logs".into(),
                path: "data/api-logs/a/b/x-json.log".into(),
                line: Some(1),
                record: None,
            },
            service: "api".into(),
            instance: "caracal-api-1".into(),
            kind: "log".into(),
            level: Some("error".into()),
            message: format!("login failed for admin with {secret}"),
            ids: Fields::default(),
            details: Fields::default(),
        });
        let inputs = Inputs { digest, quotes: BTreeMap::new(), withheld: None };
        let plain = render(&manifest(at), &inputs);
        assert!(plain.contains("s3cr&amp;t&lt;pass&gt;"), "escaped in the page, so a plain scan of it would miss it");
        let redactor = crate::redact::Redactor::new(
            vec![("credential env:ADMIN_PASSWORD".into(), crate::config::Secret::new(secret.to_string()))],
            crate::redact::FingerprintKey::per_bundle().unwrap(),
        );
        let page = render_guarded(&manifest(at), inputs, redactor.known());
        assert!(page.contains("Withheld:"), "the page says why its evidence is left out");
        assert!(!page.contains("s3cr&amp;t") && !page.contains("login failed"), "and holds none of it");
    }

    /// Whatever the evidence holds, the page stays small: a digest fed the worst a bundle can hold (a thousand
    /// services, a hundred thousand distinct ids near the anchor, thousands of reasons and streams, long
    /// messages) and every quote at its limit renders under 2 MiB.
    #[test]
    fn the_page_is_bounded_whatever_the_evidence_holds() {
        let at: Timestamp = "2026-12-05T03:00:00Z".parse().unwrap();
        let mut digest = empty_digest(None, None, at, Some(at));
        for i in 0..300_000u64 {
            let mut e = Event {
                time: at.checked_sub(SignedDuration::from_secs((i % 1800) as i64)).unwrap(),
                source: Source {
                    collector: format!("c{}", i % 500).into(),
                    path: format!("data/c/{}", "p".repeat(200)).into(),
                    line: Some(i),
                    record: None,
                },
                service: format!("service-{}", i % 1000).into(),
                instance: format!("stream-{}", i % 5000).into(),
                kind: if i % 3 == 0 { "stream.dead_letter".into() } else { "log".into() },
                level: Some("error".into()),
                message: format!("<b>{i}</b>{}", "m".repeat(600)),
                ids: Fields::from([
                    ("request_id", format!("req-{i}").as_str()),
                    ("zone_id", format!("zone-{}", i % 7).as_str()),
                ]),
                details: Fields::from([("reason", format!("reason-{}:{}", i % 20_000, "x".repeat(300)).as_str())]),
            };
            e.ids.insert("jti", format!("jti-{i}"));
            digest.add(&e);
        }
        let big = |n: usize| (("line {}\n".repeat(n)).into_bytes(), true);
        let mut quotes = BTreeMap::new();
        for i in 0..QUOTES {
            quotes.insert(format!("data/postgres-policy/policy-sets/z/p{i}.diff"), big(20_000));
        }
        let page = render(&manifest(at), &Inputs { digest, quotes, withheld: None });
        assert!(page.len() < 2 << 20, "{} bytes", page.len());
        assert!(page.contains("&lt;b&gt;"), "messages are escaped");
    }
}

//! The report's HTML. Every value is put in with `maud`'s `(...)`, which escapes it; nothing from the bundle is
//! ever put in raw (`PreEscaped` holds only the style sheet below). No script, no external reference: the
//! Content-Security-Policy allows only the style sheet, by its hash.

use std::collections::BTreeMap;

use base64::Engine;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{Inputs, digest::NEAR};
use crate::{
    bundle::manifest::{CollectorStatus, Manifest, Severity},
    timeline::Event,
};

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1b1f24;background:#fff}\
header,main,footer{max-width:1180px;margin:0 auto;padding:0 20px}\
header{padding-top:18px;border-bottom:1px solid #d0d7de}\
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #eaeef2;padding-bottom:4px}\
nav a{margin-right:12px}dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0 14px}\
dt{color:#57606a}dd{margin:0;overflow-wrap:anywhere}\
table{border-collapse:collapse;width:100%;margin:6px 0 10px}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}\
th{background:#f6f8fa;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
td.msg{overflow-wrap:anywhere;max-width:560px}code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px}\
pre{background:#f6f8fa;padding:8px;overflow-x:auto;max-height:420px;white-space:pre-wrap;overflow-wrap:anywhere}\
.badge{display:inline-block;padding:0 7px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;background:#57606a}\
.ok,.complete,.info{background:#1a7f37}.partial,.warning,.timeout,.skipped{background:#9a6700}.failed,.critical{background:#cf222e}\
.muted{color:#57606a}svg{display:block;max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#57606a}\
svg .bar{fill:#0969da}svg .alert{stroke:#cf222e;stroke-width:2}svg .alert-label{fill:#cf222e;font-weight:600}svg .grid{stroke:#eaeef2}";

/// The page's Content-Security-Policy: nothing may load or run but the style sheet above.
fn policy() -> String {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'none'; script-src 'none'; connect-src 'none'; \
         base-uri 'none'; form-action 'none'"
    )
}

fn time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

fn age(d: jiff::SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{:.1} h", s as f64 / 3600.0),
        s => format!("{:.1} days", s as f64 / 86_400.0),
    }
}

fn place(e: &Event) -> String {
    match (e.source.line, e.source.record) {
        (Some(l), _) => format!("{}:{l}", e.source.path),
        (None, Some(r)) => format!("{} record {r}", e.source.path),
        _ => e.source.path.to_string(),
    }
}

pub fn page(m: &Manifest, inputs: &Inputs) -> String {
    let d = &inputs.digest;
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(policy());
                meta name="referrer" content="no-referrer";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "preserve report: " (m.bundle_id) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "Evidence report " span.badge.(m.status.as_str()) { (m.status.as_str()) } }
                    dl {
                        dt { "bundle" } dd.mono { (m.bundle_id) }
                        dt { "profile" } dd { (m.profile) }
                        dt { "trigger" } dd { (format!("{:?}", m.trigger.kind).to_lowercase()) }
                        dt { "window" } dd {
                            (m.window.since.map_or("open".into(), time)) " → " (m.window.until.map_or("the snapshot".into(), time))
                        }
                        dt { "collected" } dd { (time(m.created_at)) " to " (time(m.finished_at)) " on " (m.host) }
                        dt { "made by" } dd { (m.tool.name) " " (m.tool.version) }
                    }
                    nav {
                        a href="#alerts" { "alerts" } a href="#findings" { "findings" } a href="#chart" { "activity" }
                        a href="#ids" { "ids" } a href="#excerpts" { "excerpts" } a href="#dead-letters" { "dead letters" }
                        a href="#groups" { "consumer groups" } a href="#changes" { "changes" } a href="#collectors" { "collectors" }
                    }
                }
                main {
                    @if let Some(why) = &inputs.withheld { p.badge.failed { "Withheld: " (why) } }
                    (alerts(m))
                    (findings(m, inputs))
                    (chart(d))
                    (ids(d))
                    (excerpts(d))
                    (dead_letters(m, d))
                    (groups(inputs, d))
                    (changes(inputs))
                    (collectors(m))
                }
                footer.muted {
                    p {
                        "Made by " (m.tool.name) " from the bundle's own artifacts: counts, the most frequent ids and excerpts, each with its path in the bag. "
                        "Every event is in " code { "preserve timeline BUNDLE" } "; the bundle is proven intact by " code { "preserve verify BUNDLE" } "."
                    }
                }
            }
        }
    };
    markup.into_string()
}

fn alerts(m: &Manifest) -> Markup {
    html! {
        section #alerts {
            h2 { "Triggering alerts" }
            @if m.trigger.alerts.is_empty() {
                p.muted { "None: the snapshot was taken by hand (" (format!("{:?}", m.trigger.kind).to_lowercase()) ")." }
            } @else {
                table {
                    tr { th { "alert" } th { "status" } th { "started" } th { "ended" } th { "labels" } th { "summary" } }
                    @for a in &m.trigger.alerts {
                        tr {
                            td { (a.labels.get("alertname").map_or("", String::as_str)) }
                            td { (a.status.as_deref().unwrap_or("")) }
                            td.mono { (a.starts_at.as_deref().unwrap_or("")) }
                            td.mono { (a.ends_at.as_deref().filter(|e| !e.starts_with("0001")).unwrap_or("")) }
                            td.msg.mono {
                                @for (k, v) in a.labels.iter().filter(|(k, _)| *k != "alertname") { (k) "=" (v) " " }
                            }
                            td.msg { (a.annotations.get("summary").or_else(|| a.annotations.get("description")).map_or("", String::as_str)) }
                        }
                    }
                }
            }
        }
    }
}

fn findings(m: &Manifest, inputs: &Inputs) -> Markup {
    let mut ordered: Vec<_> = m.findings.iter().collect();
    let rank = |s: &Severity| match s {
        Severity::Critical => 0,
        Severity::Warning => 1,
        _ => 2,
    };
    ordered.sort_by_key(|f| rank(&f.severity));
    let problems: Vec<(&String, Vec<Value>, bool)> = inputs
        .quotes
        .iter()
        .filter(|(p, _)| p.ends_with("_problems.jsonl"))
        .map(|(p, (b, more))| {
            let rows: Vec<Value> =
                String::from_utf8_lossy(b).lines().take(25).filter_map(|l| serde_json::from_str(l).ok()).collect();
            (p, rows, *more)
        })
        .filter(|(_, rows, _)| !rows.is_empty())
        .collect();
    html! {
        section #findings {
            h2 { "Findings" }
            @if ordered.is_empty() { p.muted { "No analysis findings." } }
            @else {
                table {
                    tr { th { "severity" } th { "collector" } th { "code" } th { "summary" } }
                    @for f in &ordered {
                        tr {
                            td { span.badge.(f.severity.as_str()) { (f.severity.as_str()) } }
                            td { (f.collector) } td.mono { (f.code) } td.msg { (f.summary) }
                        }
                    }
                }
            }
            @for (path, rows, more) in &problems {
                h3 { "Rows at fault in " code { (path) } }
                table {
                    tr { th { "zone" } th.n { "chain_seq" } th { "id" } th { "check" } th { "detail" } }
                    @for r in rows {
                        tr {
                            td { (text(&r["zone_id"])) } td.n { (text(&r["chain_seq"])) } td.mono { (text(&r["id"])) }
                            td { (text(&r["check"])) } td.msg.mono { (text(&r["detail"])) }
                        }
                    }
                }
                @if *more || rows.len() >= 25 { p.muted { "The first rows only; all of them are in " code { (path) } "." } }
            }
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Events per bucket per service, one band each (scaled to its own busiest bucket), the alert's start marked.
fn chart(d: &super::Digest) -> Markup {
    let axis = d.axis;
    let (left, width, band, top) = (150.0f64, 900.0f64, 34.0f64, 18.0f64);
    let bw = width / axis.buckets as f64;
    let rows: Vec<(&String, &Vec<u64>)> = d.series.iter().collect();
    let height = top + band * rows.len().max(1) as f64 + 26.0;
    let x_of =
        |t: jiff::Timestamp| left + (t.as_second() - axis.start.as_second()) as f64 / axis.bucket.as_secs() as f64 * bw;
    let anchor_x = x_of(d.anchor);
    let ticks: Vec<usize> = (0..=6).map(|k| k * (axis.buckets.saturating_sub(1)) / 6).collect();
    let minutes = axis.bucket.as_mins();
    let per = if minutes == 1 { "minute".to_string() } else { format!("{minutes} minutes") };
    html! {
        section {
            h2 { "Activity per service" }
            p.muted {
                "Events per " (per) " from " (time(axis.start)) " to " (time(axis.end)) ", each band scaled to its own busiest "
                (per) " (its count at the right). "
                @if d.before_axis + d.after_axis > 0 {
                    (d.before_axis) " events before and " (d.after_axis) " after this range are not drawn."
                }
            }
            svg #chart xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {} {height}", left + width + 70.0))
                role="img" aria-label=(format!("events per {per} per service")) {
                @for (i, (service, counts)) in rows.iter().enumerate() {
                    @let y = top + band * i as f64;
                    @let max = counts.iter().copied().max().unwrap_or(0).max(1);
                    line.grid x1=(left) x2=(left + width) y1=(y + band - 2.0) y2=(y + band - 2.0) {}
                    text x="4" y=(y + band / 2.0 + 4.0) { (service) }
                    text x=(left + width + 6.0) y=(y + band / 2.0 + 4.0) { (max) }
                    @for (b, c) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
                        @let h = (*c as f64 / max as f64) * (band - 6.0);
                        rect.bar x=(format!("{:.1}", left + b as f64 * bw)) y=(format!("{:.1}", y + band - 2.0 - h))
                            width=(format!("{:.1}", (bw - 0.6).max(0.8))) height=(format!("{:.1}", h.max(0.8))) {
                            title { (service) ": " (c) " at " (time(axis.bucket_start(b))) }
                        }
                    }
                }
                @for t in &ticks {
                    @let x = left + *t as f64 * bw;
                    text x=(format!("{x:.1}")) y=(height - 6.0) { (axis.bucket_start(*t).strftime("%m-%d %H:%M").to_string()) }
                }
                @if anchor_x >= left && anchor_x <= left + width {
                    line.alert x1=(format!("{anchor_x:.1}")) x2=(format!("{anchor_x:.1}")) y1="12" y2=(height - 20.0) {}
                    text.alert-label x=(format!("{:.1}", anchor_x + 3.0)) y="11" {
                        @if d.anchored_on_alert { "alert " (d.anchor.strftime("%H:%M").to_string()) } @else { "snapshot" }
                    }
                }
            }
        }
    }
}

fn ids(d: &super::Digest) -> Markup {
    let top = d.top_ids(25);
    let around = if d.anchored_on_alert { "the alert's start" } else { "the snapshot's start" };
    html! {
        section #ids {
            h2 { "Ids seen most around " (around) }
            p.muted { (d.near_events) " events within " (NEAR.as_mins()) " minutes of " (around) " (" (time(d.anchor)) ")." }
            @if top.is_empty() { p.muted { "No id in them." } }
            @else {
                table {
                    tr { th { "id" } th { "value" } th.n { "events" } }
                    @for (k, v, n) in &top { tr { td { (k) } td.mono { (v) } td.n { (n) } } }
                }
                @if d.ids_shortfall > 0 {
                    p.muted {
                        "More distinct ids were seen than the report counts: each count may be up to "
                        (d.ids_shortfall) " short, and every id carried by more than " (d.ids_shortfall)
                        " events is counted."
                    }
                }
                p.muted { "Every event with one of them: " code { "preserve timeline BUNDLE --id VALUE" } }
            }
        }
    }
}

fn excerpts(d: &super::Digest) -> Markup {
    let events = d.excerpts_in_order();
    html! {
        section #excerpts {
            h2 { "Around " @if d.anchored_on_alert { "the alert" } @else { "the snapshot" } ": errors, warnings, dead letters, changes" }
            @if events.is_empty() { p.muted { "None within " (NEAR.as_mins()) " minutes." } }
            @else {
                table {
                    tr { th { "time" } th { "service" } th { "kind" } th { "level" } th { "message" } th { "where" } }
                    @for e in &events {
                        tr {
                            td.mono { (e.time.strftime("%H:%M:%S%.3f").to_string()) }
                            td { (e.service) br; span.muted { (e.instance) } }
                            td { (e.kind) } td { (e.level.as_deref().unwrap_or("")) }
                            td.msg { (e.message) }
                            td.mono.msg { (place(e)) }
                        }
                    }
                }
            }
        }
    }
}

fn dead_letters(m: &Manifest, d: &super::Digest) -> Markup {
    html! {
        section #dead-letters {
            h2 { "Dead letters" }
            @if d.dead_letters.is_empty() { p.muted { "No dead-letter stream in this bundle holds an entry." } }
            @for (stream, s) in &d.dead_letters {
                h3 { code { (stream) } ": " (s.entries) " entries" }
                p {
                    @if let Some(o) = s.oldest {
                        "Oldest " (time(o)) ", " (age(m.created_at.duration_since(o))) " before the snapshot"
                        @if let Some((p, n)) = &s.oldest_at { " (" code { (p) ":" (n) } ")" }
                        @if let Some(n) = s.newest { "; newest " (time(n)) "." }
                    }
                }
                @let reasons = by_count(&s.reasons);
                table {
                    tr { th { "reason" } th.n { "entries" } th { "for example" } }
                    @for (k, (n, example)) in reasons.iter().take(20) {
                        tr { td.mono { (k) } td.n { (n) } td.msg.mono { (example) } }
                    }
                }
            }
        }
    }
}

/// Reasons, most entries first (ties by name).
fn by_count(reasons: &BTreeMap<String, (u64, String)>) -> Vec<(&String, &(u64, String))> {
    let mut v: Vec<_> = reasons.iter().collect();
    v.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    v
}

fn groups(inputs: &Inputs, d: &super::Digest) -> Markup {
    let mut streams: Vec<(String, Vec<Value>)> = Vec::new();
    for (path, (b, _)) in inputs.quotes.iter().filter(|(p, _)| p.ends_with("/xinfo.json")) {
        let Ok(v) = serde_json::from_slice::<Value>(b) else { continue };
        let name = v["key"].as_str().map(String::from).unwrap_or_else(|| path.clone());
        if let Some(g) = v["groups"].as_array().filter(|g| !g.is_empty()) {
            streams.push((name, g.clone()));
        }
    }
    let pending: BTreeMap<&(String, String), &super::digest::Pending> = d.pending.iter().collect();
    html! {
        section #groups {
            h2 { "Consumer groups" }
            @if streams.is_empty() { p.muted { "No consumer group in this bundle." } }
            @else {
                table {
                    tr {
                        th { "stream" } th { "group" } th.n { "consumers" } th.n { "pending" } th.n { "lag" }
                        th { "last delivered" } th.n { "oldest pending idle" } th.n { "most deliveries" }
                    }
                    @for (stream, gs) in &streams {
                        @for g in gs.iter().take(64) {
                            @let name = text(&g["name"]);
                            @let p = pending.get(&(stream.clone(), name.clone()));
                            tr {
                                td.mono { (stream) } td.mono { (name) }
                                td.n { (g["consumers"].as_array().map_or(0, Vec::len)) }
                                td.n { (text(&g["pending"])) } td.n { (text(&g["lag"])) }
                                td.mono { (text(&g["last-delivered-id"])) }
                                td.n { (p.map_or(String::new(), |p| age(jiff::SignedDuration::from_millis(p.max_idle_ms as i64)))) }
                                td.n { (p.map_or(String::new(), |p| p.max_deliveries.to_string())) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn changes(inputs: &Inputs) -> Markup {
    let sets: Vec<(&String, Value)> = inputs
        .quotes
        .iter()
        .filter(|(p, _)| p.contains("/policy-sets/") && p.ends_with(".json"))
        .filter_map(|(p, (b, _))| Some((p, serde_json::from_slice::<Value>(b).ok()?)))
        .collect();
    let diffs: Vec<(&String, String, bool)> = inputs
        .quotes
        .iter()
        .filter(|(p, _)| p.ends_with(".diff"))
        .map(|(p, (b, more))| {
            let text = String::from_utf8_lossy(b);
            let lines: Vec<&str> = text.lines().collect();
            (p, lines.iter().take(80).copied().collect::<Vec<_>>().join("\n"), *more || lines.len() > 80)
        })
        .collect();
    let version = |v: &Value| {
        let x = &v["version"];
        if x.is_null() {
            "none".to_string()
        } else {
            format!(
                "{} (v{}), {} by {}",
                text(&x["id"]),
                text(&x["version"]),
                text(&x["created_at"]),
                text(&x["created_by"])
            )
        }
    };
    let checked = |v: &Value| {
        let policies = v["policies"].as_array().map_or(0, Vec::len);
        let bad = v["policies"].as_array().map_or(0, |p| p.iter().filter(|p| p["ok"] != true).count());
        let manifest = if v["manifest_sha256"]["ok"] == true { "manifest hash ok" } else { "manifest hash NOT ok" };
        format!("{manifest}; {policies} policies, {bad} not matching their hash")
    };
    html! {
        section #changes {
            h2 { "Changes: policy sets and configuration" }
            @if sets.is_empty() && diffs.is_empty() { p.muted { "No policy set or configuration diff in this bundle." } }
            @if !sets.is_empty() {
                table {
                    tr { th { "zone / policy set" } th { "active" } th { "previous" } th { "activated" } th { "checked" } }
                    @for (path, s) in &sets {
                        tr {
                            td.mono { (text(&s["zone_id"])) " / " (text(&s["policy_set_id"])) br; span.muted { (path) } }
                            td { (version(&s["active"])) } td { (version(&s["previous"])) }
                            td.mono { (text(&s["binding"]["updated_at"])) }
                            td { (checked(&s["active"])) }
                        }
                    }
                }
            }
            @for (path, body, more) in &diffs {
                h3 { code { (path) } }
                pre { (body) }
                @if *more { p.muted { "The beginning only; the whole diff is " code { (path) } "." } }
            }
        }
    }
}

fn collectors(m: &Manifest) -> Markup {
    html! {
        section {
            h2 { "Collectors" }
            table #collectors {
                tr {
                    th { "collector" } th { "kind" } th { "status" } th.n { "bytes" } th.n { "records" } th.n { "duration" } th { "error" }
                }
                @for c in &m.collectors {
                    @let status = c.status.as_str();
                    tr {
                        td { (c.name) } td { (c.kind) }
                        td { span.badge.(status) { (status) } }
                        td.n { (bytes(c.artifacts.iter().map(|a| a.bytes).sum())) }
                        td.n { (c.artifacts.iter().filter_map(|a| a.records).sum::<u64>()) }
                        td.n { (format!("{:.1} s", c.duration_ms as f64 / 1000.0)) }
                        td.msg { (c.error.as_deref().unwrap_or("")) }
                    }
                }
            }
            p.muted {
                (m.collectors.iter().filter(|c| matches!(c.status, CollectorStatus::Ok)).count()) " of " (m.collectors.len()) " collectors ok."
            }
        }
    }
}

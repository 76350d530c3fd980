//! `preserve timeline` on the Caracal sandbox's `full` bundle: one time order across every source, `--id` finding
//! exactly the records that mention an id, and the output formats as their documentation says.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use jiff::Timestamp;
use serde_json::Value;
// The sandbox module finds the server helpers as `super::redis` and `super::postgres`.
use support::{postgres, redis};
#[path = "support/sandbox.rs"]
mod sandbox;
use sandbox::Sandbox;

/// A `full` snapshot of the sandbox, triggered by its tamper alert.
fn full_bundle(sb: &Sandbox) -> PathBuf {
    support::full_snapshot(&sb.root, &sb.config, &sandbox::tamper_alert())
}

fn timeline_text(bundle: &Path, args: &[&str]) -> String {
    let o = support::run(Command::new(env!("CARGO_BIN_EXE_preserve")).arg("timeline").arg(bundle).args(args));
    assert_eq!(o.status.code(), Some(0), "timeline {args:?}: {}", support::stderr(&o));
    support::stdout(&o)
}

fn timeline(bundle: &Path, args: &[&str]) -> Vec<Value> {
    timeline_text(bundle, args).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn time(e: &Value) -> Timestamp {
    e["time"].as_str().unwrap().parse().unwrap()
}

/// Where an event is: its artifact and line or record.
fn place(e: &Value) -> (String, u64) {
    let s = &e["source"];
    (s["path"].as_str().unwrap().to_string(), s["line"].as_u64().or_else(|| s["record"].as_u64()).unwrap())
}

/// Every record of the bag's record-holding artifacts (log lines, CSV rows, stream entries) that mentions
/// `value` anywhere, found by reading the files as they are: the oracle `--id` is held to.
fn records_mentioning(bag: &Path, value: &str) -> BTreeSet<(String, u64)> {
    let mut out = BTreeSet::new();
    for (path, bytes) in support::files_below(&bag.join("data")) {
        let rel = path.strip_prefix(bag).unwrap().to_string_lossy().into_owned();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".csv") && (rel.contains("/tables/") || rel.contains("/queries/")) {
            let mut r = csv::ReaderBuilder::new().from_reader(&bytes[..]);
            for (i, rec) in r.byte_records().enumerate() {
                if rec.unwrap().iter().any(|f| String::from_utf8_lossy(f).contains(value)) {
                    out.insert((rel.clone(), i as u64 + 1));
                }
            }
        } else if name.ends_with("-json.log") || (rel.contains("/streams/") && name.ends_with(".jsonl")) {
            for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
                if line.contains(value) {
                    out.insert((rel.clone(), i as u64 + 1));
                }
            }
        }
    }
    out
}

#[test]
fn the_full_bundle_is_one_time_order_across_logs_ledger_streams_and_the_alert_and_an_id_finds_its_records() {
    let sb = Sandbox::start();
    let bundle = full_bundle(&sb);
    let events = timeline(&bundle, &[]);
    assert!(events.len() > 100, "{} events", events.len());
    for w in events.windows(2) {
        assert!(time(&w[0]) <= time(&w[1]), "out of order: {} then {}", w[0], w[1]);
    }
    let first = |what: &str, f: &dyn Fn(&Value) -> bool| {
        events.iter().position(f).unwrap_or_else(|| panic!("no event from {what} in the timeline"))
    };
    let kind = |e: &Value, k: &str| e["kind"] == k;
    let found = [
        ("a service log", first("a service log", &|e| kind(e, "log") && e["source"]["collector"] == "audit-logs")),
        ("audit_events", first("audit_events", &|e| kind(e, "audit.event"))),
        (
            "the audit DLQ",
            first("the audit DLQ", &|e| kind(e, "stream.dead_letter") && e["instance"] == "caracal.audit.events.dlq"),
        ),
        (
            "the revocation stream",
            first("the revocation stream", &|e| kind(e, "stream.entry") && e["instance"] == "caracal.sessions.revoke"),
        ),
        (
            "the triggering alert",
            first("the alert", &|e| kind(e, "alert.firing") && e["instance"] == "CaracalAuditTamperDetected"),
        ),
    ];
    // Each names where it is in the bundle, and its time is the record's own.
    let bag = support::unpack(&bundle, &sb.root.join("unpacked"));
    for (what, i) in found {
        let e = &events[i];
        let (path, n) = place(e);
        assert!(n >= 1, "{what}: {e}");
        if path != "manifest.json" {
            assert!(bag.join(&path).is_file(), "{what}: {path} is not in the bag");
        }
    }
    let dlq = &events[found[2].1];
    let entry_id = dlq["ids"]["entry_id"].as_str().unwrap();
    let ms: i64 = entry_id.split('-').next().unwrap().parse().unwrap();
    assert_eq!(time(dlq), Timestamp::from_millisecond(ms).unwrap(), "a stream entry is at its id's time");
    let alert = &events[found[4].1];
    assert_eq!(alert["ids"]["request_id"], sandbox::http::INCIDENT_REQUEST, "the alert's labels carry its ids");

    // --id: exactly the records that mention the request, across log, ledger and DLQ, and the alert.
    let req = sandbox::http::INCIDENT_REQUEST;
    let by_id = timeline(&bundle, &["--id", req]);
    assert!(by_id.iter().all(|e| e["ids"].as_object().unwrap().values().any(|v| v == req)), "each carries it");
    let got: BTreeSet<(String, u64)> = by_id.iter().map(place).collect();
    assert_eq!(got.len(), by_id.len(), "one event per record");
    let mut want = records_mentioning(&bag, req);
    want.insert(("manifest.json".into(), 1)); // the trigger's alert, labelled with the request
    assert_eq!(got, want, "--id {req} against the records that mention it");
    for (what, part) in
        [("a log", "-logs/"), ("the ledger", "tables/public.audit_events.csv"), ("the DLQ", "caracal.audit.events.dlq")]
    {
        assert!(got.iter().any(|(p, _)| p.contains(part)), "--id {req} finds nothing in {what}: {got:?}");
    }
}

#[test]
fn formats_and_filters_as_documented() {
    let sb = Sandbox::start();
    let bundle = full_bundle(&sb);
    let all = timeline(&bundle, &[]);

    // Timesketch: every line a JSON object with its three required fields, `datetime` ISO 8601 and equal to
    // the event's time, `timestamp` in microseconds.
    let ts = timeline_text(&bundle, &["--format", "timesketch"]);
    let lines: Vec<Value> = ts.lines().map(|l| serde_json::from_str(l).expect("timesketch: a JSON line")).collect();
    assert_eq!(lines.len(), all.len());
    for (l, e) in lines.iter().zip(&all) {
        for field in ["message", "datetime", "timestamp_desc"] {
            assert!(l[field].as_str().is_some_and(|s| !s.is_empty() || field == "message"), "{field} in {l}");
        }
        let at: Timestamp = l["datetime"].as_str().unwrap().parse().expect("datetime is ISO 8601 with an offset");
        assert_eq!(at.as_microsecond(), time(e).as_microsecond());
        assert_eq!(l["timestamp"].as_i64(), Some(time(e).as_microsecond()));
        assert_eq!(l["message"], e["message"]);
    }
    assert!(
        lines.iter().any(|l| l["request_id"] == sandbox::http::INCIDENT_REQUEST),
        "ids are attributes of their own"
    );

    // CSV: a header, one row per event, parsed by a CSV reader.
    let csv_text = timeline_text(&bundle, &["--format", "csv"]);
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(r.headers().unwrap().iter().take(3).collect::<Vec<_>>(), ["time", "collector", "path"]);
    assert_eq!(r.records().count(), all.len());

    // --around the alert: only events within 15 minutes of its start, and the alert among them.
    let near = timeline(&bundle, &["--around", "alert"]);
    let start = all.iter().find(|e| e["kind"] == "alert.firing").map(time).unwrap();
    assert!(!near.is_empty() && near.len() < all.len());
    let within = |e: &Value| (time(e).as_nanosecond() - start.as_nanosecond()).abs() <= 900 * 1_000_000_000;
    assert!(near.iter().all(within), "within 15 min");
    let in_window = all.iter().filter(|e| within(e)).count();
    assert_eq!(near.len(), in_window);

    // --source: one collector's events only.
    let dlq = timeline(&bundle, &["--source", "redis-dlq"]);
    assert!(!dlq.is_empty() && dlq.iter().all(|e| e["source"]["collector"] == "redis-dlq"));
    assert_eq!(dlq.len(), all.iter().filter(|e| e["source"]["collector"] == "redis-dlq").count());

    // -o writes a new file and never through what is already there.
    let out = sb.root.join("timeline.jsonl");
    std::fs::write(&out, "kept").unwrap();
    let o = support::run(Command::new(env!("CARGO_BIN_EXE_preserve")).arg("timeline").arg(&bundle).arg("-o").arg(&out));
    assert_eq!(o.status.code(), Some(2), "{}", support::stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "kept");
}

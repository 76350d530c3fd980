//! An operator snapshots service logs for one hour of an incident. Only records inside the window may be kept,
//! whatever the log's shape: Go zerolog (Unix-ms `time`), Node pino (ISO `time`), a rotated `.gz` file, plain text
//! with leading timestamps, plain text without any (judged by mtime), and Docker json-file logs of a Compose install.

mod support;

use std::{io::Write, path::Path, process::Command};

use jiff::Timestamp;
use support::*;

const SINCE: &str = "2026-11-29T10:00:00Z";
const UNTIL: &str = "2026-11-29T11:00:00Z";

fn ms(t: &str) -> i64 {
    t.parse::<Timestamp>().unwrap().as_millisecond()
}

fn set_mtime(p: &Path, t: &str) {
    let t: Timestamp = t.parse().unwrap();
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.as_second() as u64)).unwrap();
}

fn gz(content: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(content.as_bytes()).unwrap();
    e.finish().unwrap()
}

fn docker_line(time: &str, inner: &str) -> String {
    serde_json::json!({ "log": format!("{inner}\n"), "stream": "stderr", "time": time }).to_string() + "\n"
}

fn container(ws: &Workspace, id: &str, name: &str, project: &str, service: &str, files: &[(&str, String)]) {
    let config = serde_json::json!({
        "ID": id, "Name": format!("/{name}"),
        "Config": { "Labels": { "com.docker.compose.project": project, "com.docker.compose.service": service } }
    });
    ws.write(&format!("docker/{id}/config.v2.json"), config.to_string());
    for (suffix, content) in files {
        let p = ws.write(&format!("docker/{id}/{id}-json.log{suffix}"), content);
        set_mtime(&p, "2026-11-29T11:30:00Z");
    }
}

/// Builds every log shape with records marked IN-* (inside the window) and OUT-* (outside).
fn fixtures(ws: &Workspace) -> Vec<&'static str> {
    let go = [
        ("2026-11-29T09:59:59.999Z", "OUT-go-1"),
        ("2026-11-29T10:00:00.000Z", "IN-go-1"),
        ("2026-11-29T10:30:00.000Z", "IN-go-2"),
        ("2026-11-29T11:00:00.000Z", "IN-go-3"),
        ("2026-11-29T11:00:00.001Z", "OUT-go-2"),
    ]
    .iter()
    .map(|(t, m)| format!("{{\"level\":\"info\",\"service\":\"sts\",\"time\":{},\"msg\":\"{m}\"}}\n", ms(t)))
    .collect::<String>();
    ws.write("logs/sts.log", go);
    ws.write(
        "logs/api.log",
        "{\"level\":30,\"time\":\"2026-11-29T09:00:00.000Z\",\"service\":\"api\",\"msg\":\"OUT-pino-1\"}\n\
         {\"level\":30,\"time\":\"2026-11-29T10:15:00.000Z\",\"service\":\"api\",\"reqId\":\"req-7\",\"msg\":\"IN-pino-1\"}\n\
         {\"level\":30,\"time\":\"2026-11-29T12:00:00.000Z\",\"service\":\"api\",\"msg\":\"OUT-pino-2\"}\n",
    );
    ws.write(
        "logs/app.log.1.gz",
        gz(&format!(
            "{{\"time\":{},\"msg\":\"OUT-gz-1\"}}\n{{\"time\":{},\"msg\":\"IN-gz-1\"}}\n",
            ms("2026-11-29T09:30:00Z"),
            ms("2026-11-29T10:45:00Z")
        )),
    );
    ws.write(
        "logs/worker.log",
        "2026-11-29 09:59:00 UTC OUT-text-1\n\
         2026-11-29T10:05:00Z IN-text-1 panic: boom\n\
         \tIN-text-cont stack frame\n\
         2026-11-29T11:30:00Z OUT-text-2\n\
         \tOUT-text-cont\n",
    );
    ws.write("logs/notes.txt", "IN-notes no timestamps here\n");
    ws.write("logs/old.txt", "OUT-old no timestamps, last written before the window\n");
    for f in ["sts.log", "api.log", "app.log.1.gz", "worker.log"] {
        set_mtime(&ws.path().join("logs").join(f), "2026-11-29T11:30:00Z");
    }
    set_mtime(&ws.path().join("logs/notes.txt"), "2026-11-29T10:30:00Z");
    set_mtime(&ws.path().join("logs/old.txt"), "2026-11-29T08:00:00Z");

    let audit_id = "a".repeat(64);
    container(
        ws,
        &audit_id,
        "caracal-audit-1",
        "caracal",
        "audit",
        &[
            (
                "",
                docker_line("2026-11-29T09:00:00.123456789Z", r#"{"level":"info","time":1,"msg":"OUT-docker-1"}"#)
                    + &docker_line(
                        "2026-11-29T10:20:00.000000001Z",
                        r#"{"level":"warn","msg":"tamper: chain break (prev hash mismatch)","zone_id":"z1","IN":"IN-docker-1"}"#,
                    )
                    + &docker_line("2026-11-29T11:20:00Z", r#"{"msg":"OUT-docker-2"}"#),
            ),
            (".1", docker_line("2026-11-29T10:01:00Z", r#"{"msg":"IN-docker-0"}"#)),
        ],
    );
    // A container directory whose name is not ASCII must not trip anything up.
    container(
        ws,
        "aéééééééééééé",
        "",
        "caracal",
        "audit",
        &[("", docker_line("2026-11-29T10:30:00Z", "IN-docker-unicode"))],
    );
    container(
        ws,
        &"b".repeat(64),
        "caracal-sts-1",
        "caracal",
        "sts",
        &[("", docker_line("2026-11-29T10:10:00Z", "OTHER-SERVICE"))],
    );
    container(
        ws,
        &"c".repeat(64),
        "someone-else-1",
        "other",
        "audit",
        &[("", docker_line("2026-11-29T10:10:00Z", "FOREIGN-PROJECT"))],
    );

    vec![
        "IN-go-1",
        "IN-go-2",
        "IN-go-3",
        "IN-pino-1",
        "IN-gz-1",
        "IN-text-1",
        "IN-text-cont",
        "IN-notes",
        "IN-docker-1",
        "IN-docker-0",
        "IN-docker-unicode",
    ]
}

#[test]
fn window_keeps_exactly_the_records_inside_it() {
    let ws = Workspace::new();
    let expected_in = fixtures(&ws);
    let dir = collectors_dir(
        &ws,
        "test.toml",
        &format!(
            "[[collector]]\nname = \"test-logs\"\nkind = \"file\"\npaths = [\"{}/logs/*\"]\n",
            ws.path().display()
        ),
    );
    let out = run(ws
        .preserve()
        .args(["snapshot", "--collector", "test-logs", "--collector", "audit-logs"])
        .arg("--collectors")
        .arg(&dir)
        .args(["--since", SINCE, "--until", UNTIL]));
    assert_eq!(out.status.code(), Some(0), "complete snapshot expected");
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let text = collector_text(&bag, "test-logs") + &collector_text(&bag, "audit-logs");

    for m in &expected_in {
        assert!(text.contains(m), "{m} is inside the window but missing");
    }
    for out_marker in ["OUT-", "OTHER-SERVICE", "FOREIGN-PROJECT"] {
        assert!(!text.contains(out_marker), "{out_marker} is outside the window or selection but was kept:\n{text}");
    }
    let kept_lines = text.lines().count();
    assert_eq!(kept_lines, expected_in.len(), "exactly one line per kept record:\n{text}");

    // The rotated .gz file is stored decompressed; Docker logs are named by Compose service and container.
    let m = manifest(&bag);
    let paths: Vec<String> = collector(&m, "test-logs")["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap().to_string())
        .collect();
    assert!(paths.iter().any(|p| p.ends_with("/logs/app.log.1")), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.ends_with("old.txt")),
        "a file last written before the window is skipped: {paths:?}"
    );
    let audit = collector(&m, "audit-logs");
    let apaths: Vec<&str> =
        audit["artifacts"].as_array().unwrap().iter().map(|a| a["path"].as_str().unwrap()).collect();
    let id = "a".repeat(64);
    assert!(apaths.contains(&format!("data/audit-logs/audit/caracal-audit-1/{id}-json.log").as_str()), "{apaths:?}");
    assert!(apaths.contains(&format!("data/audit-logs/audit/caracal-audit-1/{id}-json.log.1").as_str()), "{apaths:?}");
    let records: u64 = audit["artifacts"].as_array().unwrap().iter().map(|a| a["records"].as_u64().unwrap()).sum();
    assert_eq!(records, 3);
}

#[test]
fn a_rotated_file_and_its_compressed_twin_are_both_kept() {
    // logrotate compressing `x.log.1` while the snapshot runs leaves both names for a moment.
    let ws = Workspace::new();
    ws.write("logs/x.log.1", "plain-copy\n");
    ws.write("logs/x.log.1.gz", gz("compressed-copy\n"));
    let dir = collectors_dir(
        &ws,
        "t.toml",
        &format!(
            "[[collector]]\nname = \"rot\"\nkind = \"file\"\nwindow = false\npaths = [\"{}/logs/*\"]\n",
            ws.path().display()
        ),
    );
    let out = run(ws.preserve().args(["snapshot", "-c", "rot", "--collectors"]).arg(&dir));
    assert_eq!(out.status.code(), Some(0));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let text = collector_text(&bag, "rot");
    assert!(text.contains("plain-copy") && text.contains("compressed-copy"), "{text}");
    let m = manifest(&bag);
    let sources: Vec<&str> =
        collector(&m, "rot")["artifacts"].as_array().unwrap().iter().map(|a| a["source"].as_str().unwrap()).collect();
    assert!(
        sources.iter().any(|s| s.ends_with("x.log.1.gz")) && sources.iter().any(|s| s.ends_with("x.log.1")),
        "{sources:?}"
    );
}

#[test]
fn caps_keep_the_newest_data_and_say_so() {
    let ws = Workspace::new();
    let line = |i: usize| {
        format!(
            "{{\"time\":\"2026-11-29T10:{:02}:{:02}Z\",\"msg\":\"line-{i:04}\",\"pad\":\"{}\"}}\n",
            i / 60,
            i % 60,
            "x".repeat(40)
        )
    };
    let big: String = (0..1000).map(line).collect();
    let big_path = ws.write("logs/big.log", &big);
    set_mtime(&big_path, "2026-11-29T10:40:00Z");
    let older = ws.write("logs/older.log", (0..50).map(line).collect::<String>());
    set_mtime(&older, "2026-11-29T09:00:00Z");
    let dir = collectors_dir(
        &ws,
        "caps.toml",
        &format!(
            "[[collector]]\nname = \"capped\"\nkind = \"file\"\npaths = [\"{p}/logs/big.log\"]\nmax_file_bytes = \"10KiB\"\n\n\
             [[collector]]\nname = \"budget\"\nkind = \"file\"\npaths = [\"{p}/logs/*.log\"]\nmax_bytes = \"20KiB\"\n",
            p = ws.path().display()
        ),
    );
    let out = run(ws.preserve().args(["snapshot", "-c", "capped", "-c", "budget"]).arg("--collectors").arg(&dir));
    assert!(matches!(out.status.code(), Some(0) | Some(3)));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);

    let capped = collector(&m, "capped");
    let a = &capped["artifacts"][0];
    assert_eq!(a["truncated"], true);
    assert!(a["bytes"].as_u64().unwrap() <= 10 * 1024);
    let text = collector_text(&bag, "capped");
    assert!(text.contains("line-0999"), "the newest record is kept");
    assert!(!text.contains("line-0000"), "the oldest record is dropped");
    assert!(text.starts_with("{\"time\""), "cut at a record boundary");
    assert_eq!(text.lines().count() as u64, a["records"].as_u64().unwrap());

    // The collector budget goes to the newest file first; the older file gets what is left, or nothing.
    let budget = collector(&m, "budget");
    let total: u64 = budget["artifacts"].as_array().unwrap().iter().map(|a| a["bytes"].as_u64().unwrap()).sum();
    assert!(total <= 20 * 1024, "collector cap honoured: {total}");
    let newest = budget["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"].as_str().unwrap().ends_with("big.log"))
        .unwrap();
    assert_eq!(newest["truncated"], true);
    assert!(collector_text(&bag, "budget").contains("line-0999"));
}

/// Replay files are evidence whatever their age: every one is kept, with its line count and its mtime (how old the
/// backlog is), as the `audit-replay-files` collector does.
#[test]
fn replay_files_are_inventoried_with_mtimes_and_line_counts() {
    let ws = Workspace::new();
    let replay = ws.path().join("audit-replay");
    ws.write(
        "audit-replay/sts-1764370000.ndjson",
        "{\"event_id\":\"e1\"}\n{\"event_id\":\"e2\"}\n{\"event_id\":\"e3\"}\n",
    );
    ws.write("audit-replay/gw-1764370500.ndjson", "{\"event_id\":\"e4\"}\n");
    for (f, when) in
        [("sts-1764370000.ndjson", "2026-11-01 03:00:00Z"), ("gw-1764370500.ndjson", "2026-11-28 09:30:00Z")]
    {
        assert!(Command::new("touch").args(["-d", when]).arg(replay.join(f)).status().unwrap().success());
    }
    let dir = collectors_dir(
        &ws,
        "r.toml",
        &format!(
            "[[collector]]\nname = \"replay\"\nkind = \"file\"\npaths = [\"{}/*.ndjson\"]\nwindow = false\n",
            replay.display()
        ),
    );
    let out = run(ws.snapshot(&dir).args(["-c", "replay", "--since", "1h"]));
    assert_eq!(out.status.code(), Some(0));
    let m = ws.side_manifest();
    let c = collector(&m, "replay");
    let records: Vec<(String, u64)> = c["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string(), a["records"].as_u64().unwrap()))
        .collect();
    assert!(
        records.contains(&("sts-1764370000.ndjson".into(), 3)) && records.contains(&("gw-1764370500.ndjson".into(), 1)),
        "{records:?}"
    );
    let files = c["details"]["files"].as_array().unwrap();
    let mtime =
        |name: &str| files.iter().find(|f| f["path"].as_str().unwrap().ends_with(name)).unwrap()["mtime"].clone();
    assert_eq!(mtime("sts-1764370000.ndjson"), "2026-11-01T03:00:00Z");
    assert_eq!(mtime("gw-1764370500.ndjson"), "2026-11-28T09:30:00Z");
}

/// Whether process `pid` holds `path` open.
fn holds_open(pid: u32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(Result::ok).any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

/// The review's attack: a log another process kept appending to while the snapshot read it produced a 2.3 GiB
/// artifact under a 10 MiB `max_file_bytes`, status `ok`, not marked truncated. Here the test appends
/// `AFTER-OPEN` lines to two logs from the moment preserve holds each open until it exits: a capped log keeps at
/// most its cap, marked truncated, and an uncapped one is read to its size at open, not to where the writer got.
#[test]
fn a_log_growing_during_the_snapshot_is_read_as_it_was_when_opened() {
    let ws = Workspace::new();
    let line = |tag: &str, i: usize| {
        format!("{{\"time\":\"2026-11-29T10:30:00Z\",\"msg\":\"{tag}-{i:07}\",\"pad\":\"{}\"}}\n", "x".repeat(60))
    };
    let initial: String = (0..60_000).map(|i| line("BEFORE-OPEN", i)).collect();
    let logs = [ws.write("logs/capped.log", &initial), ws.write("logs/whole.log", &initial)];
    let logs = logs.map(|p| p.canonicalize().unwrap());
    let dir = collectors_dir(
        &ws,
        "grow.toml",
        &format!(
            "[[collector]]\nname = \"capped\"\nkind = \"file\"\nwindow = false\nmax_file_bytes = \"64KiB\"\npaths = [\"{}\"]\n\n\
             [[collector]]\nname = \"whole\"\nkind = \"file\"\nwindow = false\npaths = [\"{}\"]\n",
            logs[0].display(),
            logs[1].display()
        ),
    );
    let mut child = ws
        .snapshot(&dir)
        .args(["-c", "capped", "-c", "whole"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut writers = logs.clone().map(|p| std::fs::OpenOptions::new().append(true).open(p).unwrap());
    let (mut opened, mut appended) = ([false; 2], [0usize; 2]);
    let mut n = 0;
    // Bounded in bytes: at most 64 MiB appended to each log, however slow the snapshot.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        for i in 0..2 {
            opened[i] |= holds_open(child.id(), &logs[i]);
            if opened[i] && appended[i] < 64 << 20 {
                let burst: String = (0..50).map(|k| line("AFTER-OPEN", n + k)).collect();
                writers[i].write_all(burst.as_bytes()).unwrap();
                appended[i] += burst.len();
            }
        }
        n += 50;
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    assert_eq!(status.code(), Some(0));
    assert!(appended.iter().all(|a| *a > 0), "the writer appended while preserve held each log open: {appended:?}");

    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let capped = collector(&m, "capped");
    assert_eq!(capped["status"], "ok", "{capped}");
    let a = &capped["artifacts"][0];
    assert!(a["bytes"].as_u64().unwrap() <= 64 * 1024, "the cap holds: {a}");
    assert_eq!(a["truncated"], true, "{a}");
    let text = collector_text(&bag, "capped");
    assert!(!text.contains("AFTER-OPEN"), "nothing appended after the open is read");
    assert!(text.trim_end().ends_with(line("BEFORE-OPEN", 59_999).trim_end()), "the newest data at open is kept");

    let whole = collector(&m, "whole");
    let a = &whole["artifacts"][0];
    assert_eq!(a["truncated"], false, "{a}");
    assert_eq!(a["bytes"].as_u64().unwrap(), initial.len() as u64, "read to its size at open: {a}");
    assert!(!collector_text(&bag, "whole").contains("AFTER-OPEN"));
}

/// `/proc/kmsg` is a regular file of size 0 whose read blocks until the kernel logs something: it held a
/// collector until its timeout. Files of procfs, sysfs and the like are refused, named, before any read (the
/// collector's timeout is an hour, so a blocking read would hang this test), and the other files are still read;
/// a collector that asks for them gets their first `max_file_bytes`.
#[test]
fn files_of_pseudo_file_systems_are_refused_unless_the_collector_asks() {
    let ws = Workspace::new();
    let app = ws.write("logs/app.log", "an ordinary log line\n");
    let dir = collectors_dir(
        &ws,
        "proc.toml",
        &format!(
            "[[collector]]\nname = \"kernel\"\nkind = \"file\"\nwindow = false\ntimeout = \"1h\"\n\
             paths = [\"/proc/kmsg\", \"/proc/self/status\", \"{}\"]\n\n\
             [[collector]]\nname = \"asked\"\nkind = \"file\"\nwindow = false\ntimeout = \"1h\"\npseudo_files = true\n\
             max_file_bytes = \"1KiB\"\npaths = [\"/proc/self/status\"]\n",
            app.display()
        ),
    );
    let out = run(ws.snapshot(&dir).args(["-c", "kernel", "-c", "asked"]));
    assert_eq!(out.status.code(), Some(3), "the refusal makes the collector partial, the bundle is still written");
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);

    let kernel = collector(&m, "kernel");
    assert_eq!(kernel["status"], "partial", "{kernel}");
    let refused: Vec<&str> =
        kernel["details"]["refused"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    let status = refused.iter().find(|r| r.starts_with("/proc/self/status")).expect("/proc/self/status refused");
    assert!(status.contains("procfs, a pseudo file system") && status.contains("pseudo_files = true"), "{status}");
    assert!(kernel["error"].as_str().unwrap().contains("procfs"), "{kernel}");
    let sources: Vec<&str> =
        kernel["artifacts"].as_array().unwrap().iter().map(|a| a["source"].as_str().unwrap()).collect();
    assert_eq!(sources, [app.display().to_string()], "only the ordinary log is read");
    assert!(collector_text(&bag, "kernel").contains("an ordinary log line"));

    let asked = collector(&m, "asked");
    let a = &asked["artifacts"][0];
    assert_eq!(a["source"], "/proc/self/status", "{asked}");
    assert!(a["bytes"].as_u64().unwrap() <= 1024 && a["truncated"] == true, "{a}");
    assert!(collector_text(&bag, "asked").starts_with("Name:"), "read from its beginning");
}

/// A container directory whose `config.v2.json` is a FIFO: reading it would wait for a writer forever. It is
/// reported and skipped, and the other containers' logs are still read.
#[test]
fn a_container_config_that_is_a_fifo_does_not_hang_discovery() {
    let ws = Workspace::new();
    let good = "b".repeat(64);
    container(&ws, &good, "caracal-api-1", "caracal", "api", &[("", docker_line("2026-11-29T10:30:00Z", "IN-api"))]);
    let trap = ws.path().join("docker").join("c".repeat(64));
    std::fs::create_dir_all(&trap).unwrap();
    assert!(Command::new("mkfifo").arg(trap.join("config.v2.json")).status().unwrap().success());
    let dir = collectors_dir(
        &ws,
        "d.toml",
        "[[collector]]\nname = \"api-logs\"\nkind = \"file\"\nwindow = false\ntimeout = \"1h\"\ndocker = { services = [\"api\"] }\n",
    );
    let out = run(ws.snapshot(&dir).args(["-c", "api-logs"]));
    assert_eq!(out.status.code(), Some(3));
    let m = ws.side_manifest();
    let c = collector(&m, "api-logs");
    assert!(c["error"].as_str().unwrap().contains("config.v2.json: not read: not a regular file"), "{c}");
    assert_eq!(c["artifacts"].as_array().unwrap().len(), 1, "{c}");
}

//! Something beats nothing: a collector that hangs, fails or is interrupted must not take the bundle down. The
//! rest is written, verifies, and the exit code says the bundle is partial (3).

mod support;

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::{Duration, Instant},
};

use support::*;

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

#[test]
fn hanging_and_failing_collectors_are_recorded_and_the_rest_is_kept() {
    let ws = Workspace::new();
    ws.write("evidence/gateway.log", "{\"msg\":\"revocation snapshot reload failed\"}\n");
    let pidfile = ws.path().join("child.pid");
    let dir = collectors_dir(
        &ws,
        "faults.toml",
        &format!(
            r#"
[[collector]]
name = "good"
kind = "file"
window = false
paths = ["{p}/evidence/*"]

[[collector]]
name = "hang"
kind = "command"
timeout = "1s"
argv = ["sh", "-c", "sleep 300 & echo $! > {pidfile}; echo started; wait"]

[[collector]]
name = "broken"
kind = "command"
argv = ["/nonexistent/collector-program", "--flag"]
"#,
            p = ws.path().display(),
            pidfile = pidfile.display()
        ),
    );
    let started = Instant::now();
    let out =
        run(ws.preserve().args(["snapshot", "-c", "good", "-c", "hang", "-c", "broken"]).arg("--collectors").arg(&dir));
    assert_eq!(out.status.code(), Some(3), "partial bundle");
    assert!(started.elapsed() < Duration::from_secs(60), "the hang was cut off");

    let bundle = ws.only_bundle();
    assert_eq!(run(ws.preserve().arg("verify").arg(&bundle)).status.code(), Some(0), "the partial bundle verifies");
    let bag = unpack(&bundle, &ws.path().join("x"));
    let m = manifest(&bag);
    assert_eq!(m["status"], "partial");
    assert_eq!(collector(&m, "good")["status"], "ok");
    assert!(collector_text(&bag, "good").contains("revocation snapshot reload failed"));

    let hang = collector(&m, "hang");
    assert_eq!(hang["status"], "timeout");
    assert!(hang["error"].as_str().unwrap().contains("timed out after 1s"), "{hang}");
    assert!(collector_text(&bag, "hang").contains("started"), "what the hung collector wrote is kept");
    let stdout_artifact =
        hang["artifacts"].as_array().unwrap().iter().find(|a| a["path"] == "data/hang/stdout.txt").unwrap();
    assert_eq!(stdout_artifact["truncated"], true, "an artifact cut off mid-write says so: {stdout_artifact}");
    assert!(stdout_artifact["error"].as_str().unwrap().starts_with("cut off: timed out"), "{stdout_artifact}");
    assert_eq!(stdout_artifact["records"], 1);

    let broken = collector(&m, "broken");
    assert_eq!(broken["status"], "failed");
    assert!(broken["error"].as_str().unwrap().contains("cannot start `/nonexistent/collector-program`"), "{broken}");

    // The command's whole process group was killed, not just the shell.
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "the command's background child {pid} outlived the timeout");
}

#[test]
fn sigterm_mid_run_writes_a_partial_bundle_that_verifies() {
    let ws = Workspace::new();
    let dir = collectors_dir(
        &ws,
        "slow.toml",
        "[[collector]]\nname = \"slow\"\nkind = \"command\"\ntimeout = \"5m\"\nargv = [\"sh\", \"-c\", \"echo begun; sleep 300\"]\n",
    );
    let mut child = ws
        .preserve()
        .args(["snapshot", "-c", "slow"])
        .arg("--collectors")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("preserve: {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("collector start line");
        if line.contains("collector slow: started") {
            break;
        }
    }
    // Give the command a moment to print before the operator's Ctrl-C / the orchestrator's SIGTERM arrives.
    std::thread::sleep(Duration::from_millis(700));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "interrupted run exits 3");

    let (_, m) = assert_interrupted_bundle(&ws, "interrupted: SIGTERM");
    assert_eq!(collector(&m, "context")["status"], "ok");
    // Nothing that looks like a finished bundle besides the one written, and no staging left behind.
    let leftovers: Vec<_> =
        std::fs::read_dir(ws.out()).unwrap().filter_map(Result::ok).map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 3, "archive, .sha256, .manifest.json only: {leftovers:?}");
}

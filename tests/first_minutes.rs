//! A newcomer's first minutes with preserve, on a host where nothing is where it expects: every problem is said
//! once, on one line, with what to do about it; the first cause of a broken bundle comes without the noise that
//! follows from it; a pipe closed early or a window starting tomorrow get a plain answer, not a panic or silence.

mod support;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
};

use support::*;

/// A port nothing listens on: bound once to learn a free one, then released.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The name of each collector line (`preserve: collector NAME: ...`, `preserve: 3 failed: a, b`) split into
/// words, so `postgres-policy` is not found inside `postgres-policy-admin`.
fn words(line: &str) -> Vec<&str> {
    line.split(|c: char| c.is_whitespace() || c == ':' || c == ',').filter(|w| !w.is_empty()).collect()
}

#[test]
fn a_zero_config_full_run_on_a_host_without_caracal_says_each_problem_once_and_why() {
    let ws = Workspace::new();
    // No config, no CARACAL_HOME: HOME and the Docker directory are the workspace's empty ones. Redis is the only
    // Caracal default that this machine may really serve (its own redis-server on 6379), so it is pointed at a
    // closed port; the services stay at their Caracal defaults on 127.0.0.1, where nothing answers.
    let out = run(ws
        .preserve()
        .args(["snapshot", "--profile", "full"])
        .env("PRESERVE_REDIS_URL", format!("redis://127.0.0.1:{}/0", closed_port())));
    assert_eq!(out.status.code(), Some(3), "a partial bundle is still written");
    let err = stderr(&out);
    let m = ws.side_manifest();

    let caracal_home = ws.path().join("home/.local/share/caracal");
    let hints: Vec<&str> = err.lines().filter(|l| l.contains("CARACAL_HOME not found")).collect();
    assert_eq!(hints.len(), 1, "the overall hint, once: {err}");
    assert!(hints[0].contains(&caracal_home.display().to_string()) && hints[0].contains("--config"), "{}", hints[0]);

    let not_ok: Vec<&serde_json::Value> =
        m["collectors"].as_array().unwrap().iter().filter(|c| c["status"] != "ok").collect();
    assert!(not_ok.len() > 10, "most collectors find nothing on this host: {}", m["collectors"]);
    for c in &not_ok {
        let name = c["name"].as_str().unwrap();
        let error = c["error"].as_str().unwrap_or_default();
        let start: String = error.chars().take(24).collect();
        let said = err.lines().filter(|l| words(l).contains(&name) && l.contains(&start)).count();
        assert_eq!(said, 1, "{name}'s problem `{start}…` is said once: {err}");
    }
    let count = |status: &str| not_ok.iter().filter(|c| c["status"] == status).count();
    let counted: Vec<String> = ["failed", "timeout", "partial", "skipped"]
        .iter()
        .filter(|s| count(s) > 0)
        .map(|s| format!("{} {s}", count(s)))
        .collect();
    let summary = format!("preserve: {}: ", counted.join(", "));
    assert_eq!(err.lines().filter(|l| l.starts_with(&summary)).count(), 1, "one line names them: {err}");
    assert!(err.contains(&format!("preserve inspect {}", ws.only_bundle().display())), "{err}");

    for line in err.lines() {
        assert!(line.chars().count() <= 200, "{} characters: {line}", line.chars().count());
    }
}

#[test]
fn requests_refused_alike_are_one_short_error_and_each_keeps_its_own() {
    let ws = Workspace::new();
    let port = closed_port();
    let dir = collectors_dir(
        &ws,
        "sts.toml",
        &format!(
            "[[collector]]\nname = \"sts\"\nkind = \"http\"\nurls = [\"http://127.0.0.1:{port}\"]\nrequests = [\n  \
             {{ name = \"metrics\", path = \"/metrics\" }},\n  {{ name = \"metrics_json\", path = \"/metrics.json\" }},\n  \
             {{ name = \"ready\", path = \"/ready\" }},\n  {{ name = \"health\", path = \"/health\" }},\n  \
             {{ name = \"jwks\", path = \"/.well-known/jwks.json\" }},\n]\n"
        ),
    );
    let out = run(ws.snapshot(&dir).args(["-c", "sts"]));
    assert_eq!(out.status.code(), Some(3));
    let m = ws.side_manifest();
    let sts = collector(&m, "sts");
    // Every request failed: nothing was collected (tests/statuses.rs), said in one short clause.
    assert_eq!(sts["status"], "failed");
    assert_eq!(sts["error"], format!("every request failed: 5 requests to 127.0.0.1:{port} refused"));
    let requests = sts["details"]["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 5);
    for r in requests {
        assert!(r["error"].as_str().unwrap().contains("Connection refused"), "each request keeps its cause: {r}");
    }
}

/// A bundle of forty payload files, large enough that a cut halfway leaves whole files before it.
fn forty_file_bundle(ws: &Workspace) -> PathBuf {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..40 {
        let mut text = String::new();
        while text.len() < 32 << 10 {
            // Lines that do not compress away, so the archive's bytes are spread over every file.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(&format!("{{\"seq\":{},\"digest\":\"{state:016x}\"}}\n", text.len()));
        }
        ws.write(&format!("evidence/ev-{i:02}.jsonl"), text);
    }
    let dir = collectors_dir(
        ws,
        "ev.toml",
        &format!(
            "[[collector]]\nname = \"ev\"\nkind = \"file\"\nwindow = false\npaths = [\"{}/evidence/*\"]\n",
            ws.path().display()
        ),
    );
    assert_eq!(run(ws.snapshot(&dir).args(["-c", "ev"])).status.code(), Some(0));
    ws.only_bundle()
}

#[test]
fn a_truncated_bundle_is_named_as_truncated_without_what_follows_from_it() {
    let ws = Workspace::new();
    let bundle = forty_file_bundle(&ws);
    let len = std::fs::metadata(&bundle).unwrap().len();
    std::fs::File::options().write(true).open(&bundle).unwrap().set_len(len / 2).unwrap();

    let out = run(ws.preserve().arg("verify").arg(&bundle));
    assert_eq!(out.status.code(), Some(1), "not intact");
    let report = stdout(&out);
    let lines: Vec<&str> = report.lines().skip(1).collect();
    assert!(lines[0].contains("truncated or corrupt"), "the cut comes first: {report}");
    assert!(!report.contains(": unlisted: "), "files read before the cut are not called extra: {report}");
    assert!(!report.contains(": missing: "), "files after the cut are not listed as missing: {report}");
    assert!(lines.len() <= 2, "the cut, and at most the archive hash that differs because of it: {report}");

    let json = run(ws.preserve().args(["verify", "--json"]).arg(&bundle));
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let kinds: Vec<&str> = parsed["problems"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "corrupt", "{kinds:?}");
    assert!(!kinds.contains(&"unlisted") && !kinds.contains(&"missing"), "{kinds:?}");
}

/// `sh` with the environment `ws.preserve()` would run with.
fn shell(ws: &Workspace, script: &str, args: &[&Path]) -> Command {
    let preserve = ws.preserve();
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(script).arg(preserve.get_program());
    sh.args(args);
    for (k, v) in preserve.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let ws = Workspace::new();
    // More JSON than a pipe holds (64 KiB), so preserve is still writing when `head` has its line and leaves.
    let mut many = String::new();
    for i in 0..400 {
        many.push_str(&format!(
            "[[collector]]\nname = \"filler-{i:03}\"\nkind = \"command\"\nargv = [\"true\"]\ndescription = \"{}\"\n",
            "a collector that only makes the listing long ".repeat(6)
        ));
    }
    let dir = collectors_dir(&ws, "many.toml", &many);
    let out =
        shell(&ws, r#"{ "$0" list --json --collectors "$1"; echo "preserve exited $?" >&2; } | head -1"#, &[&dir])
            .output()
            .unwrap();
    let err = stderr(&out);
    assert_eq!(stdout(&out), "{\n", "head took its line");
    assert!(!err.contains("internal error") && !err.contains("panicked"), "no panic message: {err}");
    assert!(err.contains("preserve exited 0"), "a closed pipe is no failure of preserve: {err}");
}

#[test]
fn a_window_starting_in_the_future_is_refused_naming_it() {
    let ws = Workspace::new();
    for since in ["2099-01-01T00:00:00Z", "-2h"] {
        let out = run(ws.preserve().args(["snapshot", "-c", "context"]).arg(format!("--since={since}")));
        assert_eq!(out.status.code(), Some(2), "{since}");
        let err = stderr(&out);
        assert!(err.contains(&format!("--since `{since}` is in the future")), "{err}");
        assert!(ws.bundles().is_empty(), "nothing collected");
    }
}

/// Something that listens where Redis was expected and answers as a web server does.
fn web_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || answer_as_http(&mut conn));
        }
    });
    port
}

fn answer_as_http(conn: &mut TcpStream) {
    let mut request = [0u8; 4096];
    let _ = conn.read(&mut request);
    let body = "<!DOCTYPE html><title>400 Bad Request</title>";
    let _ =
        write!(conn, "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}

#[test]
fn a_redis_url_pointing_at_another_kind_of_server_says_so() {
    let ws = Workspace::new();
    let port = web_server();
    let dir = collectors_dir(
        &ws,
        "r.toml",
        "[[collector]]\nname = \"jti\"\nkind = \"redis\"\nkeys = [{ pattern = \"audit:jti:*\" }]\n\n\
         [[collector]]\nname = \"dlq\"\nkind = \"redis\"\nstreams = [\"*.dlq\"]\n",
    );
    let out = run(ws
        .snapshot(&dir)
        .args(["-c", "jti", "-c", "dlq"])
        .env("PRESERVE_REDIS_URL", format!("redis://127.0.0.1:{port}/0")));
    assert_eq!(out.status.code(), Some(3));
    let m = ws.side_manifest();
    for name in ["jti", "dlq"] {
        let c = collector(&m, name);
        assert_eq!(c["status"], "failed", "{c}");
        assert_eq!(c["error"], format!("127.0.0.1:{port} did not answer as a Redis server (is this Redis's port?)"));
    }
    let err = stderr(&out);
    assert!(!err.contains("Unexpected") && !err.contains("Parse error"), "no parser's words: {err}");
}

#[test]
fn list_columns_fit_the_longest_name() {
    let ws = Workspace::new();
    let dir = collectors_dir(
        &ws,
        "long.toml",
        "[[collector]]\nname = \"a-site-collector-with-a-long-name\"\nkind = \"command\"\nargv = [\"true\"]\n\
         description = \"the long one\"\n",
    );
    let out = run(ws.preserve().arg("list").arg("--collectors").arg(&dir));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let collectors: Vec<&str> = text.lines().skip_while(|l| *l != "Collectors:").skip(1).collect();
    assert!(collectors.iter().any(|l| l.contains("a-site-collector-with-a-long-name")), "{text}");
    // Where the second and third columns start: after the name and its padding, after the kind and its padding.
    let starts = |l: &str| {
        let field = |from: usize| {
            from + l[from..].find(' ').unwrap() + l[from..].split_once(' ').unwrap().1.find(|c| c != ' ').unwrap() + 1
        };
        let kind = field(2);
        (kind, field(kind))
    };
    let first = starts(collectors[0]);
    for l in &collectors {
        assert_eq!(starts(l), first, "columns line up: {text}");
    }
}

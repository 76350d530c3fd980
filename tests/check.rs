//! Issue 15, `preserve check`: against the Caracal sandbox every collector of `full` can run (exit 0); with Redis
//! stopped and `CARACAL_HOME` unset, exactly the collectors that need them are named with the reason (exit 3); no
//! credential's value is ever printed. `snapshot --dry-run` shows where the bundle goes and the site's problems.

mod support;

use std::{collections::BTreeMap, path::Path, process::Command};

use support::{postgres, redis, run, stderr, stdout};

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Sandbox;

/// `preserve check` as an operator runs it on the sandbox's host: its own HOME, no Caracal variables.
fn check(sb: &Sandbox, config: &Path, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_preserve"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PRESERVE_") || k == "CARACAL_HOME" || k == "XDG_DATA_HOME" {
            c.env_remove(k);
        }
    }
    c.env("HOME", sb.root.join("home")).arg("check").arg("--config").arg(config).args(args);
    run(&mut c)
}

/// The collector lines of a report: name -> (mark, the rest of the line).
fn collector_lines(out: &str, names: &[String]) -> BTreeMap<String, (String, String)> {
    let mut found = BTreeMap::new();
    for line in out.lines() {
        let mut words = line.split_whitespace();
        let (Some(mark), Some(name)) = (words.next(), words.next()) else { continue };
        if names.iter().any(|n| n == name) {
            found.insert(name.to_string(), (mark.to_string(), words.collect::<Vec<_>>().join(" ")));
        }
    }
    found
}

/// The collectors of `full`, as `preserve list --json` gives them.
fn full_collectors(sb: &Sandbox) -> Vec<String> {
    let out = run(Command::new(env!("CARGO_BIN_EXE_preserve")).args(["list", "--json", "--config"]).arg(&sb.config));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let full = v["profiles"].as_array().unwrap().iter().find(|p| p["name"] == "full").unwrap();
    full["collectors"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect()
}

fn assert_no_secret(sb: &Sandbox, out: &std::process::Output) {
    let said = format!("{}{}", stdout(out), stderr(out));
    for (name, value) in &sb.secrets {
        assert!(!said.contains(value.as_str()), "the value of {name} was printed:\n{said}");
    }
}

#[test]
fn check_names_exactly_what_cannot_run_and_why() {
    let mut sb = Sandbox::start();
    let names = full_collectors(&sb);
    assert!(names.len() > 20, "{names:?}");

    // The whole sandbox up: every collector of `full` can run.
    let out = check(&sb, &sb.config, &[]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{said}{}", stderr(&out));
    let lines = collector_lines(&said, &names);
    assert_eq!(lines.len(), names.len(), "one line per collector:\n{said}");
    for (name, (mark, rest)) in &lines {
        assert!(mark == "ok" || mark == "skip", "{name} {mark} {rest}\n{said}");
    }
    for c in ["redis-streams", "postgres-audit", "compose-config", "sts-logs", "sts-http", "alertmanager-alerts"] {
        assert_eq!(lines[c].0, "ok", "{c}: {said}");
    }
    assert!(said.lines().all(|l| l.len() <= 200), "{said}");
    assert_no_secret(&sb, &out);

    // Redis crashed, and CARACAL_HOME is not set (nor in the config): the config without its caracal_home line.
    sb.stop_redis();
    let config = std::fs::read_to_string(&sb.config).unwrap();
    let without_home: String =
        config.lines().filter(|l| !l.starts_with("caracal_home")).map(|l| format!("{l}\n")).collect();
    assert_ne!(config, without_home);
    let changed = sb.root.join("preserve-without-home.toml");
    std::fs::write(&changed, without_home).unwrap();
    let out = check(&sb, &changed, &[]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{said}{}", stderr(&out));
    let lines = collector_lines(&said, &names);
    let not_ok: BTreeMap<&str, (&str, &str)> = lines
        .iter()
        .filter(|(_, (mark, _))| mark != "ok")
        .map(|(n, (m, r))| (n.as_str(), (m.as_str(), r.as_str())))
        .collect();
    let cannot: Vec<&str> = not_ok.iter().filter(|(_, (m, _))| *m == "NO").map(|(n, _)| *n).collect();
    assert_eq!(cannot, ["redis-dlq", "redis-keys", "redis-streams"], "{said}");
    for redis in &cannot {
        let why = not_ok[redis].1;
        assert!(why.contains("cannot connect to redis://127.0.0.1:") && why.contains("is Redis running"), "{why}");
    }
    // What reads $CARACAL_HOME has nothing to read, and says where it looked.
    let (mark, why) = not_ok["compose-config"];
    assert_eq!(mark, "skip", "{said}");
    assert!(why.contains("CARACAL_HOME") && why.contains("not found"), "{why}");
    // The rendered Compose file needs compose.yml from there too: skipped as collection would skip it, whether or
    // not `docker compose` is installed here.
    let (mark, why) = not_ok["compose-config-rendered"];
    assert_eq!(mark, "skip", "{said}");
    assert!(why.contains("does not exist") || why.contains("not installed") || why.contains("cannot run"), "{why}");
    let home_line = said.lines().find(|l| l.contains("caracal_home")).unwrap();
    assert!(home_line.starts_with("WARN") && home_line.contains("set CARACAL_HOME"), "{home_line}");
    assert!(said.lines().last().unwrap().starts_with("3 of "), "{said}");
    assert_no_secret(&sb, &out);

    // --dry-run: the plan, where the bundle would go, and the site's problem, touching nothing.
    let mut c = Command::new(env!("CARGO_BIN_EXE_preserve"));
    c.env_remove("CARACAL_HOME").env("HOME", sb.root.join("home"));
    let dry = run(c.args(["snapshot", "--profile", "full", "--dry-run", "--config"]).arg(&changed));
    let plan = stdout(&dry);
    assert_eq!(dry.status.code(), Some(0), "{plan}");
    assert!(plan.contains(&format!("output:  {}/evidence", sb.root.display())), "{plan}");
    assert!(plan.contains("trigger: the command line (no alert)"), "{plan}");
    assert!(plan.lines().any(|l| l.contains("caracal_home:") && l.contains("not found")), "{plan}");
    assert!(!sb.root.join("evidence").exists(), "a dry run writes nothing");
}

/// Whoever answers on Redis's port writes the reason `preserve check` gives: a listener that answers every command
/// with an error of escape sequences and 20,000 characters cannot clear the operator's screen nor flood it. Each
/// line stays one printable line of at most 200 characters; `--json` keeps the reason whole, escaped as JSON.
#[test]
fn what_a_hostile_server_answers_reaches_the_check_printable_and_short() {
    use std::io::{Read, Write};
    let ws = support::Workspace::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let junk = format!("ERR \x1b[2J\x1b]0;owned\x07{}", "A".repeat(20_000));
    let answer = format!("-{junk}\r\n");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(answer.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let config = ws.write("preserve.toml", format!("[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\n"));
    let check = |json: bool| {
        let mut c = ws.preserve();
        c.arg("check").arg("--config").arg(&config).args(["--collector", "redis-dlq"]);
        if json {
            c.arg("--json");
        }
        run(&mut c)
    };
    let out = check(false);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text.lines().find(|l| l.contains("redis-dlq")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("NO"), "{line}");
    assert!(line.contains("\\u{1b}[2J"), "the server's words are shown, escaped: {line}");
    for l in text.lines() {
        assert!(l.chars().count() <= 200, "{} characters: {l}", l.chars().count());
        assert!(!l.chars().any(char::is_control), "{l:?}");
    }
    let json: serde_json::Value = serde_json::from_str(&stdout(&check(true))).unwrap();
    let whole = json.to_string();
    assert!(whole.contains(&"A".repeat(20_000)) && whole.contains("\\u001b[2J"), "--json has the reason whole");
}

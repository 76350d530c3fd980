//! A mistake in the site config or a collector file must stop the run before anything is touched: exit 2, a
//! message that names the file, line and key, and no bundle or staging directory written.

mod support;

use support::*;

/// Runs a snapshot that must be refused; returns stderr.
fn refused(ws: &Workspace, extra: &[&str]) -> String {
    let out = run(ws.preserve().args(["snapshot", "--profile", "host"]).args(extra));
    assert_eq!(out.status.code(), Some(2), "config errors exit 2");
    assert!(!ws.out().exists(), "nothing may be written on a config error");
    stderr(&out)
}

#[test]
fn bad_toml_names_file_and_line() {
    let ws = Workspace::new();
    let cfg = ws.write("site.toml", "organization = \"ACME\"\nout_dir = \n");
    let err = refused(&ws, &["--config", cfg.to_str().unwrap()]);
    assert!(err.contains(&format!("{}:2:", cfg.display())), "{err}");
}

#[test]
fn unknown_key_in_site_config_is_named_with_its_line() {
    let ws = Workspace::new();
    let cfg = ws.write("site.toml", "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\nurll = \"typo\"\n");
    let err = refused(&ws, &["--config", cfg.to_str().unwrap()]);
    assert!(err.contains(&format!("{}:3:1: unknown field `urll`", cfg.display())), "{err}");
}

#[test]
fn config_from_preserve_config_env_is_read_too() {
    let ws = Workspace::new();
    let cfg = ws.write("site.toml", "colectors_dirs = []\n");
    let out = run(ws.preserve().args(["snapshot", "--profile", "host"]).env("PRESERVE_CONFIG", &cfg));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("1:1: unknown field `colectors_dirs`"), "{}", stderr(&out));
}

#[test]
fn unknown_key_in_a_collector_is_named_with_its_line() {
    let ws = Workspace::new();
    let dir = collectors_dir(
        &ws,
        "mine.toml",
        "[[collector]]\nname = \"x\"\nkind = \"file\"\npathz = [\"/var/log/*.log\"]\n",
    );
    let err = refused(&ws, &["--collectors", dir.to_str().unwrap()]);
    assert!(err.contains("mine.toml:4:1: unknown field `pathz`"), "{err}");
}

#[test]
fn unknown_kind_is_named_with_its_line() {
    let ws = Workspace::new();
    let dir = collectors_dir(&ws, "mine.toml", "\n[[collector]]\nname = \"x\"\nkind = \"ftp\"\n");
    let err = refused(&ws, &["--collectors", dir.to_str().unwrap()]);
    assert!(
        err.contains("mine.toml:4:8: kind: unknown source kind `ftp` (known: file, command, http, redis, postgres"),
        "{err}"
    );
}

#[test]
fn duplicate_names_and_missing_profile_members_are_errors() {
    let ws = Workspace::new();
    let dir = collectors_dir(&ws, "a.toml", "[[collector]]\nname = \"dup\"\nkind = \"command\"\nargv = [\"true\"]\n");
    ws.write("collectors.d/b.toml", "[[collector]]\nname = \"dup\"\nkind = \"command\"\nargv = [\"false\"]\n");
    let err = refused(&ws, &["--collectors", dir.to_str().unwrap()]);
    assert!(err.contains("b.toml:1: name: duplicate collector `dup` (first defined at"), "{err}");
    assert!(err.contains("a.toml:1)"), "{err}");

    let ws = Workspace::new();
    let dir =
        collectors_dir(&ws, "p.toml", "[[profile]]\nname = \"mine\"\ncollectors = [\"host-logs\",\n  \"nope\"]\n");
    let err = refused(&ws, &["--collectors", dir.to_str().unwrap()]);
    assert!(
        err.contains("p.toml:4:3: collectors: profile `mine` names collector `nope`, which does not exist"),
        "{err}"
    );
}

#[test]
fn missing_credential_env_var_is_a_config_error() {
    let ws = Workspace::new();
    let cfg =
        ws.write("site.toml", "organization = \"ACME\"\nredact_secrets = [\"env:PRESERVE_TEST_UNSET_PASSWORD\"]\n");
    let err = refused(&ws, &["--config", cfg.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "{}:2:19: redact_secrets[0]: credential env:PRESERVE_TEST_UNSET_PASSWORD: environment variable is not set",
            cfg.display()
        )),
        "{err}"
    );

    // A collector's own credential is needed by definition.
    let ws = Workspace::new();
    let dir = collectors_dir(
        &ws,
        "c.toml",
        "[[collector]]\nname = \"c\"\nkind = \"command\"\nargv = [\"true\"]\nenv_credentials = { T = \"env:PRESERVE_TEST_UNSET_TOKEN\" }\n",
    );
    let out = run(ws.preserve().args(["snapshot", "-c", "c", "--collectors"]).arg(&dir));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("c.toml:5:25: collector `c`: env_credentials.T: credential env:PRESERVE_TEST_UNSET_TOKEN"),
        "{}",
        stderr(&out)
    );
    assert!(!ws.out().exists());
}

#[test]
fn an_unset_credential_no_collector_needs_does_not_block_the_snapshot() {
    // The sidecar's token is not needed to take a snapshot by hand: warn, record, and go on.
    let ws = Workspace::new();
    let cfg = ws.write("site.toml", "[serve]\ntoken = \"env:PRESERVE_TEST_UNSET_SERVE_TOKEN\"\n");
    let out = run(ws.preserve().args(["snapshot", "--profile", "host", "--config"]).arg(&cfg));
    assert!(matches!(out.status.code(), Some(0) | Some(3)), "a bundle is written");
    let m = ws.side_manifest();
    let finding = &m["findings"][0];
    assert_eq!(finding["code"], "config.credential_unavailable");
    assert!(finding["summary"].as_str().unwrap().contains("serve.token"), "{finding}");
}

#[test]
fn an_inline_secret_is_refused_without_being_echoed() {
    let ws = Workspace::new();
    let cfg = ws.write("site.toml", "[postgres]\npassword = \"hunter2-inline\"\n");
    let err = refused(&ws, &["--config", cfg.to_str().unwrap()]);
    assert!(err.contains("site.toml:2:12"), "{err}");
    assert!(err.contains("must be a reference `env:NAME` or `file:PATH`"), "{err}");
    assert!(!err.contains("hunter2-inline"), "the literal must not be echoed: {err}");
}

#[test]
fn unknown_profile_and_bad_window_are_usage_errors() {
    let ws = Workspace::new();
    let out = run(ws.preserve().args(["snapshot", "--profile", "no-such-profile"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown profile `no-such-profile`"));
    let out = run(ws.preserve().args(["snapshot", "--profile", "host", "--since", "last tuesday"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--since: `last tuesday` is neither"), "{}", stderr(&out));
    assert!(!ws.out().exists());
}

/// Each kind's check of a definition, before anything runs: the definition's file and line, the collector, and
/// the setting at fault with what is wrong with it, in the words an operator reads.
#[test]
fn each_kinds_definition_problems_name_the_setting() {
    let cases: &[(&str, &str)] = &[
        ("kind = \"file\"", "a file collector needs `paths` or `docker`"),
        ("kind = \"file\"\npaths = [\"/var/log/[x\"]", "paths: `/var/log/[x` is not a valid glob: "),
        ("kind = \"file\"\npaths = [\"${nope}/x\"]", "paths: "),
        ("kind = \"command\"\nargv = []", "argv: a command needs at least the program"),
        ("kind = \"command\"\nargv = [\"true\"]\nstdout = \"../out\"", "stdout: "),
        ("kind = \"config_diff\"\nfiles = [\"/etc/x\"]\ncommand = [\"cat\"]", "`files` and `command` are both given"),
        ("kind = \"config_diff\"\nfiles = [\"/etc/x\"]\nstdout = \"x.txt\"", "stdout: only applies with `command`"),
        ("kind = \"redis\"\nstreams = [\"a[\"]", "streams/exclude/expect_streams: `a[` is not a valid pattern: "),
        (
            "kind = \"redis\"\nkeys = [{ pattern = \"k:*\" }]\nexpect_streams = [\"x\"]",
            "expect_streams: only applies with `streams`",
        ),
        ("kind = \"redis\"\nstreams = [\"x\"]\npage = 0", "page: must be at least 1"),
        (
            "kind = \"postgres\"\nworkers = 0\nqueries = [{ name = \"q\", sql = \"select 1\" }]",
            "workers: must be at least 1",
        ),
        ("kind = \"http\"\nrequests = []", "an http collector needs `service` or `urls`"),
        ("kind = \"http\"\nrequests = []\nservice = \"billing\"", "service `billing`: expected one of sts, gateway"),
        ("kind = \"http\"\nrequests = []\nurls = [\"ftp://x\"]", "urls: `ftp://x` is not an http(s) URL"),
        (
            "kind = \"http\"\nservice = \"sts\"\nrequests = [{ name = \"a\", path = \"/a\" }, { name = \"a\", path = \"/b\" }]",
            "request `a` appears twice",
        ),
        (
            "kind = \"http\"\nservice = \"sts\"\nrequests = [{ name = \"a\", path = \"a\" }]",
            "request `a`: path must start with `/`",
        ),
        (
            "kind = \"http\"\nservice = \"sts\"\nrequests = [{ name = \"a\", path = \"/x\", method = \"POST\" }]",
            "request `a`: method POST: only GET is ever sent to Caracal",
        ),
    ];
    for (n, (body, says)) in cases.iter().enumerate() {
        let ws = Workspace::new();
        let dir = collectors_dir(&ws, "mine.toml", &format!("[[collector]]\nname = \"c{n}\"\n{body}\n"));
        let err = refused(&ws, &["--collectors", dir.to_str().unwrap()]);
        assert!(err.contains(&format!("mine.toml:1: collector `c{n}`: {says}")), "case {n}: {err}");
    }
}

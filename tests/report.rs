//! The report in a real browser: headless Chromium (Debian's `chromium`) with no network opens the `report.html`
//! of the Caracal sandbox's `full` bundle, takes a screenshot, and its rendered DOM holds the collectors table, the
//! findings and the chart. A log line in the sandbox holds `<script>` and `<img onerror>` that would mark the page
//! if they ran; they show as text and nothing runs. A control page with the same line unescaped proves this
//! browser would have run them. Two logs flooded with distinct ids check that `preserve report` still makes the
//! bundle's own page.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use support::{postgres, redis};
#[path = "support/sandbox.rs"]
mod sandbox;
use sandbox::{HOSTILE_LOG_MESSAGE, Sandbox};

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("the report's browser test needs Chromium (Debian package `chromium`; scripts/test.sh installs it)")
}

/// Chromium headless on `page`, with no network: in a network namespace of its own when this host allows one
/// (root, `unshare`), else with every request sent to a proxy that is not there.
fn browse(work: &Path, page: &Path, args: &[String]) -> std::process::Output {
    let isolated = Command::new("unshare").args(["-n", "true"]).status().is_ok_and(|s| s.success());
    let mut cmd = if isolated {
        let mut c = Command::new("unshare");
        c.arg("-n").arg(chromium());
        c
    } else {
        Command::new(chromium())
    };
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--virtual-time-budget=3000",
    ]);
    cmd.arg(format!("--user-data-dir={}", work.join("chromium-profile").display()));
    cmd.args(args).arg(format!("file://{}", page.display()));
    support::run(&mut cmd)
}

fn dom(work: &Path, page: &Path) -> String {
    let o = browse(work, page, &["--dump-dom".to_string()]);
    let dom = support::stdout(&o);
    assert!(dom.contains("<html"), "chromium rendered nothing ({:?}): {}", o.status.code(), support::stderr(&o));
    dom
}

#[test]
fn the_report_opens_in_a_real_browser_shows_its_sections_and_runs_nothing_from_the_evidence() {
    let sb = Sandbox::start();
    // Two services' logs flooded with more distinct ids than the report counts: the page made while staging and
    // the one `preserve report` makes must still agree on the ids seen most.
    sandbox::flood_of_ids(&sb.root, "gateway", "flood-gw", 60_000);
    sandbox::flood_of_ids(&sb.root, "sts", "flood-sts", 60_000);
    let bundle = support::full_snapshot(&sb.root, &sb.config, &sandbox::tamper_alert());

    // The bundle holds it as a tag file the tag manifest covers, and `preserve report` makes the same page.
    let bag = support::unpack(&bundle, &sb.root.join("unpacked"));
    let page = bag.join("report.html");
    let html = std::fs::read_to_string(&page).expect("report.html in the bag");
    let tagmanifest = std::fs::read_to_string(bag.join("tagmanifest-sha256.txt")).unwrap();
    assert!(tagmanifest.lines().any(|l| l.ends_with("  report.html")), "{tagmanifest}");
    let again = sb.root.join("again.html");
    let o = support::run(Command::new(env!("CARGO_BIN_EXE_preserve")).arg("report").arg(&bundle).arg("-o").arg(&again));
    assert_eq!(o.status.code(), Some(0), "{}", support::stderr(&o));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), html, "preserve report makes the bundle's own page");
    assert!(
        html.contains("More distinct ids were seen than the report counts"),
        "the flood overflowed the ids counted"
    );
    assert!(html.contains("Content-Security-Policy") && html.contains("default-src 'none'"));
    assert!(!html.contains("<script"), "no script element, ours or the evidence's");

    // A screenshot is made.
    let shot = sb.root.join("report.png");
    let o = browse(&sb.root, &page, &[format!("--screenshot={}", shot.display()), "--window-size=1280,2400".into()]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {}", support::stderr(&o)));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000, "a real picture, {} bytes", png.len());

    // The rendered DOM: the collectors table, the findings, the chart.
    let rendered = dom(&sb.root, &page);
    let section = |id: &str| {
        let at = rendered.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the DOM"));
        &rendered[at..]
    };
    let collectors = section("collectors");
    for name in ["audit-logs", "redis-dlq", "postgres-audit"] {
        assert!(collectors.contains(&format!("<td>{name}</td>")), "collector {name} in the table");
    }
    assert!(section("findings").contains("audit.chain.content_mismatch"), "the chain break is a finding");
    assert!(section("findings").contains("evt-beta-0008"), "with the row at fault");
    let chart = section("chart");
    assert!(chart.starts_with("id=\"chart\"") && chart.contains("class=\"bar\""), "the chart has bars");
    assert!(chart.contains("class=\"alert\""), "the alert's start is marked");
    assert!(rendered.contains("hmac_verify_failed"), "dead letters by reason");

    // The attacker's line is text, and ran nothing: the page's title and body are as they were.
    assert!(
        rendered.contains("bad request &lt;script&gt;document.body.setAttribute('data-pwned','script')"),
        "the planted line shows as text"
    );
    assert!(rendered.contains("&lt;img src=x onerror="), "the planted img shows as text");
    assert!(!rendered.contains("data-pwned=\""), "no planted script or handler ran");
    assert!(!rendered.contains("<title>pwned</title>"));

    // Control: the same line put in a page unescaped and without the policy does run here, so the checks
    // above would catch it.
    let control = sb.root.join("control.html");
    std::fs::write(
        &control,
        format!(
            "<!DOCTYPE html><html><head><title>control</title></head><body><p>{HOSTILE_LOG_MESSAGE}</p></body></html>"
        ),
    )
    .unwrap();
    let ran = dom(&sb.root, &control);
    assert!(ran.contains("data-pwned=\""), "this browser runs an unescaped line: {ran}");
}

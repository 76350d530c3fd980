//! The benchmark cannot rot: `bench/run.sh` at a small scale (0.01: 10,000 audit rows, 3,000 DLQ entries, 2 MB of
//! logs), one round, against this build, produces every pair's figures. Timings are not asserted here; they are
//! for docs/performance.md, measured on a quiet machine at scale 1.

use std::process::Command;

const PAIRS: [&str; 9] =
    ["audit-tamper", "postgres", "postgres+chain", "redis", "verify", "timeline", "report", "sealed", "upload"];

#[test]
fn small_scale_benchmark_reports_every_pair() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("figures.json");
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/run.sh"))
        .args(["--scale", "0.01", "--rounds", "1", "--json"])
        .arg(&json)
        .env("PRESERVE_BIN", env!("CARGO_BIN_EXE_preserve"))
        .output()
        .expect("bash runs bench/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench/run.sh failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    let figures: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let figures = figures.as_array().expect("a list of pairs");
    for name in PAIRS {
        let p = figures.iter().find(|p| p["pair"] == name).unwrap_or_else(|| panic!("no figures for {name}"));
        for side in ["preserve", "baseline"] {
            let s = &p[side];
            assert!(s["runs"].as_u64() >= Some(1), "{name} {side}: {s}");
            assert!(s["median_wall_s"].as_f64().is_some_and(|t| t > 0.0), "{name} {side}: no wall time: {s}");
            assert!(s["median_cpu_s"].as_f64().is_some_and(|t| t >= 0.0), "{name} {side}: no CPU time: {s}");
            assert!(s["peak_rss_mib"].as_f64().is_some_and(|m| m > 0.0), "{name} {side}: no peak RSS: {s}");
        }
        assert!(p["ratio"].as_f64().is_some_and(f64::is_finite), "{name}: no ratio: {p}");
        assert!(stdout.lines().any(|l| l.starts_with(&format!("{name} "))), "{name} missing from the table:\n{stdout}");
    }
}

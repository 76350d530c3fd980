//! Memory does not grow with the evidence: snapshotting 1 GiB of service logs keeps peak RSS under 64 MiB, whether
//! they are files on the host or pod logs streamed from the Kubernetes API (the stand-in of tests/support/kube.rs).
//! Ignored by default (each moves 1 GiB); run with:
//!   cargo test --release --test memory -- --ignored --nocapture
//! Each prints the figure it measured.

mod support;

use std::io::{BufWriter, Write};

use support::*;

const TOTAL: u64 = 1 << 30;

#[test]
#[ignore = "writes 1 GiB of logs; run explicitly"]
fn one_gib_of_logs_in_under_64_mib() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path().join("logs")).unwrap();
    // Four services' worth of zerolog-shaped JSON lines, half of them inside the window.
    // Records span roughly the last six hours; the window takes the newer half.
    let base = jiff::Timestamp::now().as_millisecond() - 6 * 3_600_000;
    let since = jiff::Timestamp::from_millisecond(base + 5 * 1_800_000).unwrap().to_string();
    let per_file = TOTAL / 4;
    for svc in ["sts", "gateway", "audit", "api"] {
        let f = std::fs::File::create(ws.path().join(format!("logs/{svc}.log"))).unwrap();
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut written = 0u64;
        let mut i = 0i64;
        while written < per_file {
            let line = format!(
                "{{\"level\":\"info\",\"time\":{},\"service\":\"{svc}\",\"request_id\":\"req-{i}\",\"zone_id\":\"z{}\",\"msg\":\"request handled\",\"latency_ms\":{}}}\n",
                base + i * 10,
                i % 10,
                i % 997
            );
            w.write_all(line.as_bytes()).unwrap();
            written += line.len() as u64;
            i += 1;
        }
        w.flush().unwrap();
    }
    let dir = collectors_dir(
        &ws,
        "big.toml",
        &format!(
            "[[collector]]\nname = \"big-logs\"\nkind = \"file\"\npaths = [\"{}/logs/*.log\"]\n",
            ws.path().display()
        ),
    );
    let started = std::time::Instant::now();
    let out = run(ws
        .preserve()
        .args(["snapshot", "-q", "-c", "big-logs", "--since", since.as_str()])
        .arg("--collectors")
        .arg(&dir));
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0));
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    // ru_maxrss is in KiB on Linux; the largest child so far is preserve itself (the generator ran in-process).
    let peak_mib = usage.max_rss() as f64 / 1024.0;
    let bundle = ws.only_bundle();
    let archive = std::fs::metadata(&bundle).unwrap().len();
    let m = ws.side_manifest();
    let kept: u64 =
        collector(&m, "big-logs")["artifacts"].as_array().unwrap().iter().map(|a| a["bytes"].as_u64().unwrap()).sum();
    println!(
        "snapshot of {} MiB of logs ({} MiB inside the window): peak RSS {peak_mib:.1} MiB, {elapsed:.1?}, archive {} MiB",
        TOTAL >> 20,
        kept >> 20,
        archive >> 20
    );
    assert!(kept > TOTAL / 4, "the window must keep a large share, or this measures nothing");
    assert!(peak_mib < 64.0, "peak RSS {peak_mib:.1} MiB");
}

#[test]
#[ignore = "streams 1 GiB of pod logs; run explicitly"]
fn one_gib_of_pod_logs_in_under_64_mib() {
    use support::kube::{Cluster, Log, NAMESPACE, caracal_pod};
    let ws = Workspace::new();
    let cluster = Cluster::start();
    // Four Gateway pods, each with 256 MiB of zerolog-shaped lines a millisecond apart, made as they are sent.
    let start = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
    let line_len = 256usize;
    // Each line is `line_len` bytes after the kubelet's time (up to 31 bytes with its space) and ends with a newline.
    let count = (TOTAL / 4) / (line_len as u64 + 32);
    for i in 0..4 {
        let pod = format!("caracal-caracal-gateway-{i}");
        cluster.add("v1", "pods", caracal_pod(&pod, "gateway", &format!("10.0.0.{i}"), true, 0));
        let step = jiff::SignedDuration::from_millis(1);
        cluster.log(&pod, "gateway", false, Log::Generated { count, line_len, start, step });
    }
    let site = ws.write(
        "preserve.toml",
        format!(
            "[kubernetes]\nkubeconfig = \"{}\"\nnamespace = \"{NAMESPACE}\"\n",
            cluster.kubeconfig(ws.path()).display()
        ),
    );
    let started = std::time::Instant::now();
    let out = run(ws.preserve().args(["snapshot", "--config"]).arg(&site).args([
        "-q",
        "-c",
        "gateway-logs",
        "--since",
        "3h",
    ]));
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let peak_mib = usage.max_rss() as f64 / 1024.0;
    let m = ws.side_manifest();
    let logs = collector(&m, "gateway-logs");
    let read: u64 = logs["details"]["logs"].as_array().unwrap().iter().map(|l| l["bytes"].as_u64().unwrap()).sum();
    println!("snapshot of {} MiB of pod logs: peak RSS {peak_mib:.1} MiB, {elapsed:.1?}", read >> 20);
    assert!(read > TOTAL * 9 / 10, "the whole gigabyte must go through, or this measures nothing: {read}");
    assert!(peak_mib < 64.0, "peak RSS {peak_mib:.1} MiB");
}

/// A 1 GiB bundle (base64 of random bytes: it compresses to about three quarters) uploaded to Garage while it is
/// written: memory stays flat (a few parts of 5 MiB in flight), the store holds the bundle, and `verify s3://`
/// passes. Run with: cargo test --release --test memory one_gib_bundle -- --ignored --nocapture
#[test]
#[ignore = "writes and uploads a 1 GiB bundle; run explicitly"]
fn one_gib_bundle_uploaded_while_written_in_under_64_mib() {
    use base64::Engine;
    use support::s3::{BUCKET, Garage};
    let ws = Workspace::new();
    let garage = Garage::start(&ws.path().join("garage"));
    std::fs::create_dir_all(ws.path().join("bulk")).unwrap();
    // 1.36 GiB of base64 text in 76-character lines, made from a xorshift stream, written as it is made.
    let f = std::fs::File::create(ws.path().join("bulk/blob.log")).unwrap();
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut raw = vec![0u8; 57 * 1024];
    let mut text = String::new();
    for _ in 0..(TOTAL / raw.len() as u64) {
        for b in raw.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        text.clear();
        for chunk in raw.chunks(57) {
            base64::engine::general_purpose::STANDARD.encode_string(chunk, &mut text);
            text.push('\n');
        }
        w.write_all(text.as_bytes()).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let dir = collectors_dir(
        &ws,
        "bulk.toml",
        &format!(
            "[[collector]]\nname = \"bulk\"\nkind = \"file\"\nwindow = false\npaths = [\"{}/bulk/*\"]\n",
            ws.path().display()
        ),
    );
    let config = ws.write("preserve.toml", garage.store_toml("big", ""));
    let rss = ws.path().join("peak-rss");
    let started = std::time::Instant::now();
    let mut c = std::process::Command::new("/usr/bin/time");
    let inner = {
        let mut i = ws.snapshot(&dir);
        i.args(["-c", "bulk", "--upload", "--json", "--config"]).arg(&config);
        i
    };
    c.arg("-f").arg("%M").arg("-o").arg(&rss).arg(inner.get_program()).args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.env("AWS_ACCESS_KEY_ID", &garage.keys.id)
        .env("AWS_SECRET_ACCESS_KEY", &garage.keys.secret)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let out = run(&mut c);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let peak_mib = std::fs::read_to_string(&rss).unwrap().trim().parse::<f64>().unwrap() / 1024.0;
    let bundle = ws.only_bundle();
    let bytes = std::fs::metadata(&bundle).unwrap().len();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "snapshot --upload of a {} MiB bundle: peak RSS {peak_mib:.1} MiB, {elapsed:.1?}, upload {}",
        bytes >> 20,
        json["upload"]["state"]
    );
    assert!(bytes > 1000 << 20, "the bundle must be about 1 GiB, or this measures nothing: {bytes}");
    assert_eq!(json["upload"]["state"], "confirmed");
    assert_eq!(json["upload"]["streamed"], true);
    assert_eq!(json["upload"]["stored_checksum"], support::s3::expected_checksum(&bundle, 5 << 20).as_str());
    let name = bundle.file_name().unwrap().to_string_lossy().to_string();
    let mut verify = ws.preserve();
    verify
        .args(["verify", "--config"])
        .arg(&config)
        .arg(format!("s3://{BUCKET}/big/{name}"))
        .env("AWS_ACCESS_KEY_ID", &garage.keys.id)
        .env("AWS_SECRET_ACCESS_KEY", &garage.keys.secret)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    assert_eq!(run(&mut verify).status.code(), Some(0));
    assert!(peak_mib < 64.0, "peak RSS {peak_mib:.1} MiB");
}

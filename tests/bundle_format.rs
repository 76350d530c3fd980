//! A bundle must be readable and checkable by someone who has only `tar`, `zstd`, `sha256sum` and the BagIt
//! validator: one top directory, a valid BagIt 1.0 bag, normalized tar headers, and the same payload hashes for the
//! same evidence.

mod support;

use std::process::Command;

use support::*;

fn evidence(ws: &Workspace) -> std::path::PathBuf {
    ws.write(
        "evidence/audit.log",
        "{\"time\":\"2026-11-29T10:00:00Z\",\"msg\":\"tamper: content hash mismatch\",\"zone_id\":\"z1\"}\n",
    );
    ws.write("evidence/notes/100% sure.txt", "file name with a percent sign and spaces\n");
    ws.write("evidence/empty.txt", "");
    collectors_dir(
        ws,
        "t.toml",
        &format!(
            "[[collector]]\nname = \"evidence-files\"\nkind = \"file\"\nwindow = false\npaths = [\"{}/evidence/**/*\"]\n",
            ws.path().display()
        ),
    )
}

fn snapshot(ws: &Workspace, dir: &std::path::Path) -> std::path::PathBuf {
    let out = run(ws.preserve().args(["snapshot", "-c", "evidence-files"]).arg("--collectors").arg(dir));
    assert_eq!(out.status.code(), Some(0));
    let printed = stdout(&out).trim().to_string();
    assert!(printed.ends_with(".tar.zst"), "prints the bundle path: {printed}");
    std::path::PathBuf::from(printed)
}

#[test]
fn standard_tools_open_and_check_the_bag() {
    let ws = Workspace::new();
    let dir = evidence(&ws);
    let bundle = snapshot(&ws, &dir);
    let name = bundle.file_name().unwrap().to_string_lossy().to_string();
    let id = name.trim_end_matches(".tar.zst");
    assert!(regex::Regex::new(r"^preserve-custom-\d{8}T\d{6}Z-[0-9a-f]{8}$").unwrap().is_match(id), "{id}");

    // sha256sum -c on the side file, from the output directory.
    let st = Command::new("sha256sum").arg("-c").arg(format!("{name}.sha256")).current_dir(ws.out()).status().unwrap();
    assert!(st.success(), "sha256sum -c of the archive");
    assert!(ws.out().join(format!("{id}.manifest.json")).exists());

    let bag = unpack(&bundle, &ws.path().join("x"));
    assert_eq!(bag.file_name().unwrap().to_string_lossy(), id, "one top directory named by the bundle id");
    for f in ["bagit.txt", "bag-info.txt", "manifest-sha256.txt", "tagmanifest-sha256.txt", "manifest.json"] {
        assert!(bag.join(f).is_file(), "{f}");
    }
    assert_eq!(
        std::fs::read_to_string(bag.join("bagit.txt")).unwrap(),
        "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    );
    let info = std::fs::read_to_string(bag.join("bag-info.txt")).unwrap();
    assert!(info.contains(&format!("External-Identifier: {id}")), "{info}");
    assert!(info.contains("Payload-Oxum: "), "{info}");

    for m in ["manifest-sha256.txt", "tagmanifest-sha256.txt"] {
        let st = Command::new("sha256sum").args(["-c", "--strict", "--quiet", m]).current_dir(&bag).status().unwrap();
        assert!(st.success(), "sha256sum -c {m}");
    }

    let v = Command::new("bagit.py")
        .arg("--validate")
        .arg(&bag)
        .output()
        .expect("bagit.py (pip install bagit) must be installed");
    assert!(
        v.status.success(),
        "bagit.py --validate: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // Manifest fields the design requires.
    let m = manifest(&bag);
    for k in [
        "format",
        "bundle_id",
        "profile",
        "created_at",
        "finished_at",
        "tool",
        "host",
        "trigger",
        "window",
        "collectors",
        "findings",
        "status",
    ] {
        assert!(m.get(k).is_some(), "manifest.json lacks {k}");
    }
    assert_eq!(m["format"], "preserve-bundle/1");
    assert_eq!(m["trigger"]["kind"], "cli");
    let c = collector(&m, "evidence-files");
    for k in ["name", "kind", "status", "error", "started_at", "duration_ms", "source", "artifacts", "redactions"] {
        assert!(c.get(k).is_some(), "collector record lacks {k}");
    }
    for a in c["artifacts"].as_array().unwrap() {
        for k in ["path", "sha256", "bytes", "media_type", "records", "truncated"] {
            assert!(a.get(k).is_some(), "artifact lacks {k}");
        }
        let on_disk = std::fs::read(bag.join(a["path"].as_str().unwrap())).unwrap();
        assert_eq!(on_disk.len() as u64, a["bytes"].as_u64().unwrap());
    }
    assert!(
        collector(&m, "context")["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["path"] == "data/context/context.json")
    );

    // A name with `%` is stored with `_` (no encoding for tools to disagree on); the original stays in `source`.
    let pct = c["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"].as_str().unwrap().ends_with("notes/100_ sure.txt"))
        .expect("renamed artifact");
    assert!(pct["source"].as_str().unwrap().ends_with("notes/100% sure.txt"));

    let v = run(ws.preserve().arg("verify").arg(&bundle));
    assert_eq!(v.status.code(), Some(0));
    assert!(stdout(&v).starts_with("intact:"));
}

#[test]
fn tar_headers_are_normalized_and_payload_hashes_reproducible() {
    let ws = Workspace::new();
    let dir = evidence(&ws);
    let first = snapshot(&ws, &dir);
    let listing = Command::new("tar").args(["--zstd", "--numeric-owner", "-tvf"]).arg(&first).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    let mut times = std::collections::BTreeSet::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], "0/0", "uid/gid 0: {line}");
        assert!(cols[0] == "-rw-r--r--" || cols[0] == "drwxr-xr-x", "fixed modes: {line}");
        times.insert(format!("{} {}", cols[3], cols[4]));
    }
    assert_eq!(times.len(), 1, "every entry carries the snapshot time: {listing}");
    // The payload streams in as it is finished; the tag files, which cover all of it, come last, each once.
    let names: Vec<&str> = listing.lines().map(|l| l.split_whitespace().nth(5).unwrap()).collect();
    // Without `[run] report` there is no report.html (tests/report.rs has one).
    let tags: Vec<&str> = names[names.len() - 5..].iter().map(|n| n.split_once('/').unwrap().1).collect();
    assert_eq!(
        tags,
        ["bagit.txt", "bag-info.txt", "manifest-sha256.txt", "manifest.json", "tagmanifest-sha256.txt"],
        "{listing}"
    );
    let data = names.iter().filter(|n| n.contains("/data/") && !n.ends_with('/')).count();
    assert_eq!(data + 2 + tags.len(), names.len(), "every other entry is payload (and the two folders): {listing}");

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = snapshot(&ws, &dir);
    assert_ne!(first, second, "every snapshot is a new bundle");
    let hashes = |b: &std::path::Path| {
        let side = b.to_string_lossy().replace(".tar.zst", ".manifest.json");
        let m = manifest(std::path::Path::new(&side));
        collector(&m, "evidence-files")["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["path"].to_string(), a["sha256"].to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(hashes(&first), hashes(&second), "same inputs, same payload hashes");
    assert_eq!(hashes(&first).len(), 3);
}

/// Artifacts whose staged frame is big (appended by the kernel while the archive's hash is read apart) and small
/// ones, side by side: the archive's `.sha256` is the hash of its bytes, standard tools unpack every artifact to
/// exactly what was collected, and `verify` finds it intact.
#[test]
fn big_staged_frames_are_appended_whole_and_hashed_exactly() {
    let ws = Workspace::new();
    // Text that does not compress (a staged frame of several MiB), as base64 of a hash chain.
    let mut text = String::new();
    let mut h = [0u8; 32];
    while text.len() < 6 << 20 {
        h = sha2_like(&h);
        text.push_str(&hex_line(&h));
    }
    ws.write("big/a.log", &text);
    ws.write("big/b.log", &text[..1 << 20]);
    ws.write("big/c.txt", "small\n");
    let dir = collectors_dir(
        &ws,
        "t.toml",
        &format!(
            "[[collector]]\nname = \"evidence-files\"\nkind = \"file\"\nwindow = false\npaths = [\"{}/big/*\"]\n",
            ws.path().display()
        ),
    );
    let bundle = snapshot(&ws, &dir);
    let archive = std::fs::read(&bundle).unwrap();
    let side = std::fs::read_to_string(format!("{}.sha256", bundle.display())).unwrap();
    let sum = Command::new("sha256sum").arg(&bundle).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap().to_string();
    assert!(side.starts_with(&sum), "{side} against {sum} ({} bytes)", archive.len());
    let into = ws.path().join("unpacked");
    let bag = unpack(&bundle, &into);
    let found: Vec<_> = files_below(&bag.join("data/evidence-files")).into_iter().map(|(p, _)| p).collect();
    let find = |suffix: &str| found.iter().find(|p| p.ends_with(suffix)).unwrap().clone();
    assert_eq!(std::fs::read_to_string(find("a.log")).unwrap(), text);
    assert_eq!(std::fs::read_to_string(find("b.log")).unwrap(), text[..1 << 20]);
    assert_eq!(std::fs::read_to_string(find("c.txt")).unwrap(), "small\n");
    let out = run(ws.preserve().arg("verify").arg(&bundle));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// A cheap, deterministic byte mixer for incompressible test text (not a hash anyone relies on).
fn sha2_like(prev: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut x: u64 = prev.iter().fold(0xcbf29ce484222325, |a, b| (a ^ *b as u64).wrapping_mul(0x100000001b3));
    for b in out.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    out
}

fn hex_line(h: &[u8; 32]) -> String {
    let mut s: String = h.iter().map(|b| format!("{b:02x}")).collect();
    s.push('\n');
    s
}

//! Someone hands the responder a crafted bundle. Whatever sizes it declares (a name, the tag files, the number of
//! entries, the side files, the stream's decompressed size), `preserve verify` and `preserve inspect` spend a bounded
//! amount of memory on it, refuse it with one line naming what was over which bound, and exit 1.
//!
//! The bundles are built here, tar header by tar header. Gigabytes of zeros cost almost nothing: one zstd frame of
//! 1 MiB of zeros is compressed once and repeated (concatenated frames decompress as one stream), which is how the
//! security review's 33 KB bundle declared a 1 GiB name.

mod support;

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use support::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Peak resident memory allowed to `preserve` on any of these bundles: far below what each attack took unbounded
/// (1.5 to 9.4 GB), far above what reading within bounds needs.
const PEAK_RSS_MIB: u64 = 256;

/// A zstd-compressed tar stream written header by header.
struct Stream {
    bytes: Vec<u8>,
    zero_frame: Vec<u8>,
}

impl Stream {
    fn new() -> Self {
        Self { bytes: Vec::new(), zero_frame: zstd::bulk::compress(&vec![0u8; MIB as usize], 1).unwrap() }
    }

    fn frame(&mut self, data: &[u8]) {
        self.bytes.extend(zstd::bulk::compress(data, 1).unwrap());
    }

    /// A header declaring `size` bytes of data (which the caller must then supply).
    fn header(&mut self, path: &str, kind: tar::EntryType, size: u64) {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        self.frame(h.as_bytes());
    }

    /// `mib` MiB of zeros: a whole number of tar blocks, so no padding follows.
    fn zeros(&mut self, mib: u64) {
        for _ in 0..mib {
            self.bytes.extend_from_slice(&self.zero_frame);
        }
    }

    fn file(&mut self, path: &str, mib: u64) {
        self.header(path, tar::EntryType::Regular, mib * MIB);
        self.zeros(mib);
    }

    fn finish(mut self, to: &Path) -> u64 {
        self.frame(&[0u8; 1024]);
        std::fs::write(to, &self.bytes).unwrap();
        self.bytes.len() as u64
    }
}

/// Runs the real binary under GNU time: its output and its peak resident memory in MiB.
fn measured(ws: &Workspace, args: &[&str], bundle: &Path) -> (Output, u64) {
    let inner = {
        let mut c = ws.preserve();
        c.args(args).arg(bundle);
        c
    };
    let rss = ws.path().join("peak-rss");
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f").arg("%M").arg("-o").arg(&rss).arg(inner.get_program()).args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = run(&mut c);
    let text =
        std::fs::read_to_string(&rss).expect("GNU time (/usr/bin/time, Debian package `time`) writes its figure");
    let kib: u64 = text.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("{text:?}"));
    eprintln!("peak RSS of preserve {args:?}: {} KiB", kib);
    (out, kib / 1024)
}

/// The refusal: exit 1, nothing on stdout, exactly one line on stderr, which is returned; memory stayed bounded.
fn refused(ws: &Workspace, args: &[&str], bundle: &Path) -> String {
    let (out, peak) = measured(ws, args, bundle);
    assert_eq!(out.status.code(), Some(1), "{args:?} must refuse the bundle");
    assert!(peak < PEAK_RSS_MIB, "{args:?} took {peak} MiB");
    assert_eq!(stdout(&out), "", "a refusal reports nothing about the bundle's content");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line, not a flood: {err}");
    assert!(err.starts_with("preserve: error: refused `"), "{err}");
    err
}

/// A genuine bundle of an evidence file; returns the workspace and the bundle's path.
fn genuine() -> (Workspace, PathBuf) {
    genuine_named("audit.log")
}

fn genuine_named(file: &str) -> (Workspace, PathBuf) {
    let ws = Workspace::new();
    ws.write(&format!("evidence/{file}"), "{\"msg\":\"tamper: chain HMAC mismatch\",\"chain_seq\":42}\n".repeat(50));
    let dir = collectors_dir(
        &ws,
        "t.toml",
        &format!(
            "[[collector]]\nname = \"ev\"\nkind = \"file\"\nwindow = false\npaths = [\"{}/evidence/*\"]\n",
            ws.path().display()
        ),
    );
    let out = run(ws.snapshot(&dir).args(["-c", "ev"]));
    assert_eq!(out.status.code(), Some(0));
    let bundle = ws.only_bundle();
    (ws, bundle)
}

/// The tar stream of a genuine bundle, without its end blocks, so that more entries can follow.
fn entries_of(bundle: &Path) -> Vec<u8> {
    let mut tar = Vec::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(bundle).unwrap()).unwrap().read_to_end(&mut tar).unwrap();
    while tar.len() >= 512 && tar[tar.len() - 512..].iter().all(|b| *b == 0) {
        tar.truncate(tar.len() - 512);
    }
    tar
}

fn side(bundle: &Path, suffix: &str) -> PathBuf {
    let name = bundle.file_name().unwrap().to_string_lossy().replace(".tar.zst", suffix);
    bundle.with_file_name(name)
}

#[test]
fn a_one_gib_gnu_long_name_is_refused_before_it_is_read() {
    for (kind, record) in
        [(tar::EntryType::GNULongName, "GNU long-name record"), (tar::EntryType::XHeader, "PAX extended header")]
    {
        let ws = Workspace::new();
        let bundle = ws.path().join("long-name.tar.zst");
        let mut s = Stream::new();
        s.header("././@LongLink", kind, GIB);
        s.zeros(GIB / MIB);
        s.header("bag/bagit.txt", tar::EntryType::Regular, 0);
        let size = s.finish(&bundle);
        assert!(size < 100 << 10, "the review's bundle was 33 KB; this one is {size} bytes");

        for cmd in ["verify", "inspect"] {
            let line = refused(&ws, &[cmd], &bundle);
            assert!(line.contains(&format!("entry #1 has a {record} of 1.0 GiB, over the")), "{line}");
            assert!(line.contains("bound for one name"), "{line}");
        }
    }
}

#[test]
fn long_names_written_as_pax_records_still_verify() {
    // The names are read by hand now (above); a bundle repacked by GNU tar in POSIX (PAX) format must still verify.
    // A name too long for a ustar header even with its prefix field: GNU tar must write a PAX `path` record.
    let (ws, bundle) = genuine_named(&format!("{}.log", "a".repeat(250)));
    let id = bundle.file_name().unwrap().to_string_lossy().trim_end_matches(".tar.zst").to_string();
    let x = ws.path().join("repack");
    unpack(&bundle, &x);
    std::fs::remove_file(&bundle).unwrap();
    std::fs::remove_file(side(&bundle, ".tar.zst.sha256")).unwrap();
    let st = Command::new("tar")
        .args(["--format=pax", "--zstd", "-cf"])
        .arg(&bundle)
        .arg("-C")
        .arg(&x)
        .arg(&id)
        .status()
        .unwrap();
    assert!(st.success());
    let tar = entries_of(&bundle);
    assert!(tar.windows(6).any(|w| w == b" path="), "GNU tar wrote PAX path records");
    let out = run(ws.preserve().arg("verify").arg(&bundle));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn inspect_escapes_what_the_manifest_says() {
    let (ws, bundle) = genuine();
    let copy = side(&bundle, ".manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&copy).unwrap()).unwrap();
    m["collectors"][0]["error"] = "\x1b]0;pwned\x07\nforged: a line of its own".into();
    std::fs::write(&copy, serde_json::to_vec(&m).unwrap()).unwrap();
    let out = run(ws.preserve().arg("inspect").arg(&bundle));
    assert_eq!(out.status.code(), Some(0));
    let shown = stdout(&out);
    assert!(!shown.contains('\x1b') && !shown.lines().any(|l| l.starts_with("forged")), "{shown}");
    assert!(shown.contains("\\u{1b}]0;pwned\\u{7}\\nforged: a line of its own"), "{shown}");
}

#[test]
fn tag_files_over_the_bound_together_are_refused() {
    // Each of the five is under any bound a single file might have; together they are 250 MiB.
    let ws = Workspace::new();
    let bundle = ws.path().join("tags.tar.zst");
    let mut s = Stream::new();
    for tag in ["bagit.txt", "bag-info.txt", "manifest-sha256.txt", "tagmanifest-sha256.txt", "manifest.json"] {
        s.file(&format!("bag/{tag}"), 50);
    }
    s.finish(&bundle);

    let line = refused(&ws, &["verify"], &bundle);
    assert!(line.contains("the tag files together exceed 64.0 MiB"), "{line}");
    assert!(line.contains("`bag-info.txt` of 50.0 MiB"), "{line}");
    assert!(line.ends_with("--max-entries N raises the bound\n"), "{line}");
    // Room for more entries is room for their tag lines: 640 bytes each.
    let line = refused(&ws, &["verify", "--max-entries", "150000"], &bundle);
    assert!(line.contains("the tag files together exceed 91.6 MiB"), "{line}");
}

#[test]
fn more_entries_than_the_bound_are_refused() {
    let ws = Workspace::new();
    let bundle = ws.path().join("entries.tar.zst");
    let mut tar = Vec::with_capacity(100_001 * 512 + 1024);
    for i in 0..=100_000u32 {
        let mut h = tar::Header::new_gnu();
        h.set_path(format!("bag/data/e{i}")).unwrap();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
    }
    tar.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&bundle, zstd::bulk::compress(&tar, 3).unwrap()).unwrap();

    let line = refused(&ws, &["verify"], &bundle);
    assert!(line.contains("the archive holds more than 100000 entries; --max-entries N raises the bound"), "{line}");
}

#[test]
fn a_sparse_3_gib_sha256_side_file_is_neither_read_nor_echoed() {
    let (ws, bundle) = genuine();
    let sha = side(&bundle, ".tar.zst.sha256");
    let f = std::fs::File::options().write(true).truncate(true).open(&sha).unwrap();
    f.set_len(3 * GIB).unwrap();
    drop(f);

    let (out, peak) = measured(&ws, &["verify"], &bundle);
    assert_eq!(out.status.code(), Some(1), "the archive's hash is not confirmed");
    assert!(peak < PEAK_RSS_MIB, "verify took {peak} MiB");
    let report = stdout(&out);
    assert!(report.len() < 4096, "the side file must not be echoed: {} bytes of output", report.len());
    let problems: Vec<_> = report.lines().skip(1).collect();
    assert_eq!(problems.len(), 1, "{report}");
    assert!(problems[0].contains(".tar.zst.sha256: archive-hash: 3.0 GiB, over the 4.0 KiB"), "{report}");
}

#[test]
fn a_sha256_side_file_of_garbage_is_shown_as_a_short_escaped_excerpt() {
    let (ws, bundle) = genuine();
    let sha = side(&bundle, ".tar.zst.sha256");
    std::fs::write(&sha, format!("\x1b]0;pwned\x07{}\n  forged line\n", "A".repeat(3000))).unwrap();
    let out = run(ws.preserve().arg("verify").arg(&bundle));
    assert_eq!(out.status.code(), Some(1));
    let report = stdout(&out);
    assert_eq!(report.lines().count(), 2, "{report}");
    assert!(report.contains("holds no sha256 (it begins `\\u{1b}]0;pwned\\u{7}AAAA"), "{report}");
    assert!(!report.contains('\x1b') && report.len() < 400, "{report}");
}

#[test]
fn a_sparse_manifest_side_file_is_not_read() {
    let (ws, bundle) = genuine();
    let copy = side(&bundle, ".manifest.json");
    std::fs::File::options().write(true).truncate(true).open(&copy).unwrap().set_len(3 * GIB).unwrap();

    let (out, peak) = measured(&ws, &["verify"], &bundle);
    assert_eq!(out.status.code(), Some(1));
    assert!(peak < PEAK_RSS_MIB, "verify took {peak} MiB");
    let report = stdout(&out);
    assert_eq!(report.lines().count(), 2, "{report}");
    assert!(report.contains(".manifest.json: manifest-mismatch: 3.0 GiB, over the 64.0 MiB"), "{report}");

    let line = refused(&ws, &["inspect"], &bundle);
    assert!(line.contains(".manifest.json` is 3.0 GiB, over the 64.0 MiB"), "{line}");
    assert!(line.ends_with("bound for this file; not read; --max-entries N raises the bound\n"), "{line}");
}

#[test]
fn a_zstd_bomb_appended_to_a_genuine_bundle_is_cut_off_at_its_manifests_figures() {
    // 1024 files of 16 MiB of zeros after the genuine bag: 16 GiB from about half a megabyte. Each file alone is
    // modest; the stream as a whole expands far beyond what the manifest beside it says the bundle holds.
    let (ws, bundle) = genuine();
    let id = bundle.file_name().unwrap().to_string_lossy().trim_end_matches(".tar.zst").to_string();
    let mut s = Stream::new();
    s.frame(&entries_of(&bundle));
    for i in 0..1024 {
        s.file(&format!("{id}/data/ev/bomb-{i}"), 16);
    }
    let size = s.finish(&bundle);
    assert!(size < MIB, "{size} bytes");

    let line = refused(&ws, &["verify"], &bundle);
    assert!(line.contains("decompressed, it exceeds"), "{line}");
    assert!(line.contains("manifest.json` says it holds"), "{line}");
    assert!(line.ends_with("--max-bytes SIZE raises the bound\n"), "{line}");
}

#[test]
fn a_file_declaring_16_gib_is_refused_at_its_header() {
    // The review's bomb: one entry of 16 GiB of zeros in 500 KB, and no manifest beside it to go by.
    let ws = Workspace::new();
    let bundle = ws.path().join("bomb.tar.zst");
    let mut s = Stream::new();
    s.file("bag/data/ev/bomb", 16 * 1024);
    s.finish(&bundle);

    for cmd in ["verify", "inspect"] {
        let line = refused(&ws, &[cmd], &bundle);
        assert!(line.contains("(entry `bag/data/ev/bomb` declares 16.0 GiB)"), "{line}");
        assert!(line.contains("256 times its compressed size"), "{line}");
        assert!(line.contains("--max-bytes SIZE raises the bound"), "{line}");
    }
}

#[test]
fn max_bytes_and_max_entries_set_the_bounds() {
    let (ws, bundle) = genuine();
    let line = refused(&ws, &["verify", "--max-bytes", "1KiB"], &bundle);
    assert!(
        line.contains("exceeds 1.0 KiB: the bound set by --max-bytes; --max-bytes SIZE raises the bound"),
        "{line}"
    );
    let out = run(ws.preserve().args(["verify", "--max-bytes", "1GiB"]).arg(&bundle));
    assert_eq!(out.status.code(), Some(0), "a bound above the bundle's size lets it verify");
    assert!(stdout(&out).starts_with("intact: "));

    let line = refused(&ws, &["verify", "--max-entries", "2"], &bundle);
    assert!(line.contains("more than 2 entries"), "{line}");

    // inspect reads the archive itself when the manifest beside it is gone.
    std::fs::remove_file(side(&bundle, ".manifest.json")).unwrap();
    let line = refused(&ws, &["inspect", "--max-bytes", "1KiB"], &bundle);
    assert!(line.contains("--max-bytes SIZE raises the bound"), "{line}");
    let out = run(ws.preserve().args(["inspect", "--max-bytes", "1GiB"]).arg(&bundle));
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("ev "), "{}", stdout(&out));
}

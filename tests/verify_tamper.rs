//! Someone changes evidence after it was taken. `preserve verify` must notice every kind of change, name the file
//! at fault, exit 1, and refuse archives crafted to write outside the bag.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use support::*;

struct Case {
    ws: Workspace,
    bundle: PathBuf,
    id: String,
}

/// A fresh, intact bundle of a few evidence files.
fn case() -> Case {
    let ws = Workspace::new();
    let dir = evidence_collector(&ws);
    let out = run(ws.preserve().args(["snapshot", "-c", "ev"]).arg("--collectors").arg(&dir));
    assert_eq!(out.status.code(), Some(0));
    let bundle = ws.only_bundle();
    let id = bundle.file_name().unwrap().to_string_lossy().trim_end_matches(".tar.zst").to_string();
    let intact = run(ws.preserve().arg("verify").arg(&bundle));
    assert_eq!(intact.status.code(), Some(0), "fresh bundle verifies");
    Case { ws, bundle, id }
}

impl Case {
    /// Unpacks, lets `change` alter the bag, and packs it back in place (the side files stay as they were).
    fn repack(&self, change: impl FnOnce(&Path)) {
        let x = self.ws.path().join("repack");
        let bag = unpack(&self.bundle, &x);
        change(&bag);
        std::fs::remove_file(&self.bundle).unwrap();
        let st = Command::new("tar")
            .arg("--zstd")
            .arg("-cf")
            .arg(&self.bundle)
            .arg("-C")
            .arg(&x)
            .arg(&self.id)
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn payload(&self, bag: &Path, name: &str) -> PathBuf {
        let rel = self.ws.path().join("evidence").join(name).to_string_lossy().trim_start_matches('/').to_string();
        bag.join("data/ev").join(rel)
    }

    fn verify(&self) -> String {
        let out = run(self.ws.preserve().arg("verify").arg(&self.bundle));
        assert_eq!(out.status.code(), Some(1), "a changed bundle must not verify");
        stdout(&out)
    }
}

#[test]
fn one_flipped_byte_in_a_payload_file_is_named() {
    let c = case();
    c.repack(|bag| {
        let p = c.payload(bag, "audit.log");
        let mut b = std::fs::read(&p).unwrap();
        b[100] ^= 0x01;
        std::fs::write(&p, b).unwrap();
    });
    let report = c.verify();
    assert!(report.lines().any(|l| l.contains("evidence/audit.log: hash-mismatch")), "{report}");
    assert!(report.contains(".tar.zst.sha256: archive-hash"), "{report}");
}

#[test]
fn a_removed_payload_file_is_named() {
    let c = case();
    c.repack(|bag| std::fs::remove_file(c.payload(bag, "dlq.jsonl")).unwrap());
    let report = c.verify();
    assert!(report.lines().any(|l| l.contains("evidence/dlq.jsonl: missing")), "{report}");
}

#[test]
fn an_added_file_is_named() {
    let c = case();
    c.repack(|bag| std::fs::write(bag.join("data/ev/planted.txt"), "not evidence").unwrap());
    let report = c.verify();
    assert!(report.lines().any(|l| l.starts_with("  data/ev/planted.txt: unlisted")), "{report}");
}

#[test]
fn a_changed_manifest_json_is_named() {
    let c = case();
    c.repack(|bag| {
        let p = bag.join("manifest.json");
        let text = std::fs::read_to_string(&p).unwrap().replace("\"status\": \"complete\"", "\"status\": \"partial\"");
        std::fs::write(&p, text).unwrap();
    });
    let report = c.verify();
    assert!(report.lines().any(|l| l.starts_with("  manifest.json: hash-mismatch")), "{report}");
}

#[test]
fn a_truncated_archive_is_refused() {
    let c = case();
    let len = std::fs::metadata(&c.bundle).unwrap().len();
    std::fs::File::options().write(true).open(&c.bundle).unwrap().set_len(len / 2).unwrap();
    let report = c.verify();
    assert!(report.contains("truncated or corrupt"), "{report}");
}

#[test]
fn a_wrong_sha256_side_file_is_named() {
    let c = case();
    let side = PathBuf::from(format!("{}.sha256", c.bundle.display()));
    std::fs::write(&side, format!("{}  {}.tar.zst\n", "0".repeat(64), c.id)).unwrap();
    let report = c.verify();
    assert!(report.lines().any(|l| l.contains(".tar.zst.sha256: archive-hash")), "{report}");
}

#[test]
fn crafted_archive_with_escaping_paths_is_refused() {
    let ws = Workspace::new();
    let tar_path = ws.path().join("evil.tar");
    let script = format!(
        r#"
import io, tarfile
with tarfile.open({tar:?}, "w", format=tarfile.GNU_FORMAT) as t:
    for name, data in [("bag/bagit.txt", b"BagIt-Version: 1.0\n"), ("../escape", b"x"), ("/tmp/preserve-absolute", b"y")]:
        info = tarfile.TarInfo(name); info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    link = tarfile.TarInfo("bag/data/link"); link.type = tarfile.SYMTYPE; link.linkname = "/etc/passwd"
    t.addfile(link)
"#,
        tar = tar_path.display().to_string()
    );
    let st = Command::new("python3").arg("-c").arg(&script).status().unwrap();
    assert!(st.success());
    let bundle = ws.path().join("evil.tar.zst");
    let st = Command::new("zstd").arg("-q").arg(&tar_path).arg("-o").arg(&bundle).status().unwrap();
    assert!(st.success());

    let out = run(ws.preserve().arg("verify").arg(&bundle).current_dir(ws.path()));
    assert_eq!(out.status.code(), Some(1));
    let report = stdout(&out);
    assert!(report.contains("../escape: unsafe-entry"), "{report}");
    assert!(report.contains("/tmp/preserve-absolute: unsafe-entry"), "{report}");
    assert!(report.contains("bag/data/link: unsafe-entry"), "{report}");
    assert!(!ws.path().parent().unwrap().join("escape").exists());
}

//! Bundles encrypted for their recipients (`[seal] recipients`, the age format): Debian's `age` opens them with an
//! X25519 identity or an SSH key and the bag inside checks with standard tools; without the identity `verify` checks
//! the ciphertext and says the payload was not checked; the manifest beside it reveals no host or alert.

mod support;

use std::{path::Path, process::Command};

use support::*;

fn keygen_age(ws: &Workspace) -> (std::path::PathBuf, String) {
    let id = ws.path().join("identity.txt");
    let out = Command::new("age-keygen").arg("-o").arg(&id).output().expect("age-keygen (Debian package age)");
    assert!(out.status.success());
    let text = std::fs::read_to_string(&id).unwrap();
    let recipient = text.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().to_string();
    (id, recipient)
}

fn keygen_ssh(ws: &Workspace) -> (std::path::PathBuf, String) {
    let key = ws.path().join("ssh_ed25519");
    let st = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).status().unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap().trim().to_string();
    (key, public)
}

fn age_decrypt(identity: &Path, bundle: &Path, into: &Path) -> std::path::PathBuf {
    let plain = into.with_extension("tar.zst");
    let out = Command::new("age").arg("-d").arg("-i").arg(identity).arg("-o").arg(&plain).arg(bundle).output().unwrap();
    assert!(out.status.success(), "age -d: {}", String::from_utf8_lossy(&out.stderr));
    unpack(&plain, into)
}

fn sha256sum_checks(bag: &Path) {
    for m in ["manifest-sha256.txt", "tagmanifest-sha256.txt"] {
        let st = Command::new("sha256sum").args(["-c", "--strict", "--quiet", m]).current_dir(bag).status().unwrap();
        assert!(st.success(), "sha256sum -c {m} in {}", bag.display());
    }
}

#[test]
fn an_encrypted_bundle_opens_with_age_and_verify_checks_what_it_can() {
    let ws = Workspace::new();
    let (identity, recipient) = keygen_age(&ws);
    let (ssh_key, ssh_public) = keygen_ssh(&ws);
    let collectors = evidence_collector(&ws);
    let config = ws.write(
        "preserve.toml",
        format!(
            "[seal]\nrecipients = [\"{recipient}\", \"{ssh_public}\"]\nsigning_key = \"file:{}\"\n",
            ssh_key.display()
        ),
    );
    let alert = ws.write(
        "alert.json",
        r#"{"labels":{"alertname":"CaracalAuditTamperDetected","instance":"audit-7.prod.internal"},"annotations":{"summary":"chain break"},"startsAt":"2026-12-04T00:00:00Z"}"#,
    );
    let out = run(ws.snapshot(&collectors).args(["-c", "ev", "--config"]).arg(&config).arg("--alert").arg(&alert));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let names: Vec<String> =
        std::fs::read_dir(ws.out()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let bundle = ws.out().join(names.iter().find(|n| n.ends_with(".tar.zst.age")).expect("a .tar.zst.age"));
    assert!(!names.iter().any(|n| n.ends_with(".tar.zst")), "no plaintext archive: {names:?}");
    let name = bundle.file_name().unwrap().to_string_lossy().to_string();
    assert!(names.contains(&format!("{name}.sha256")), "{names:?}");

    // The hash covers the ciphertext: sha256sum checks it without any key.
    let st = Command::new("sha256sum").args(["-c", &format!("{name}.sha256")]).current_dir(ws.out()).status().unwrap();
    assert!(st.success());

    // Debian's age opens it with either identity, and the bag inside checks.
    let mut payload_files = 0;
    for (i, key) in [&identity, &ssh_key].iter().enumerate() {
        let bag = age_decrypt(key, &bundle, &ws.path().join(format!("opened{i}")));
        sha256sum_checks(&bag);
        payload_files = std::fs::read_to_string(bag.join("manifest-sha256.txt")).unwrap().lines().count();
        assert!(collector_text(&bag, "ev").contains("chain HMAC mismatch"));
        let inner = manifest(&bag);
        assert_eq!(inner["trigger"]["alerts"][0]["labels"]["instance"], "audit-7.prod.internal");
    }

    // The manifest beside it names no host and no alert; the one inside does.
    let side = std::fs::read_to_string(ws.out().join(name.replace(".tar.zst.age", ".manifest.json"))).unwrap();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    for hidden in [host.as_str(), "audit-7.prod.internal", "CaracalAuditTamperDetected", "chain break", "evidence/"] {
        assert!(!side.contains(hidden), "the public manifest shows {hidden}: {side}");
    }
    let public: serde_json::Value = serde_json::from_str(&side).unwrap();
    assert_eq!(public["encrypted"], true);
    assert_eq!(public["status"], "complete");

    // The signature covers the ciphertext: OpenSSH checks it with no key to open the archive.
    assert!(names.contains(&format!("{name}.sig")), "{names:?}");
    let allowed = ws.write("allowed_signers", format!("custodian@example.org {ssh_public}\n"));
    let checked = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(&allowed)
        .args(["-I", "custodian@example.org", "-n", "preserve", "-s"])
        .arg(ws.out().join(format!("{name}.sig")))
        .stdin(std::fs::File::open(&bundle).unwrap())
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));

    // Without the identity: the ciphertext is checked, and verify says what it did not check.
    let v = run(ws.preserve().args(["verify", "--json", "--require-signature"]).arg(&bundle));
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    let r: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(r["archive_hash_checked"], true, "{r:#}");
    assert_eq!(r["payload_checked"], false);
    let v = run(ws.preserve().arg("verify").arg(&bundle));
    assert!(stdout(&v).contains("the payload was NOT checked"), "{}", stdout(&v));
    // With it: everything inside, with either kind of identity.
    for key in [&identity, &ssh_key] {
        let v = run(ws.preserve().args(["verify", "--json", "--identity"]).arg(key).arg(&bundle));
        assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
        let r: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
        assert_eq!(r["payload_checked"], true);
        assert_eq!(r["payload_files"], payload_files);
    }
    // An identity that is not a recipient is named as such.
    let elsewhere = Workspace::new();
    let (other, _) = keygen_age(&elsewhere);
    let v = run(ws.preserve().args(["verify", "--identity"]).arg(&other).arg(&bundle));
    assert_eq!(v.status.code(), Some(1));
    assert!(stderr(&v).contains("none of the identities given is a recipient"), "{}", stderr(&v));
    // inspect shows the public manifest only.
    let i = run(ws.preserve().arg("inspect").arg(&bundle));
    assert_eq!(i.status.code(), Some(0), "{}", stderr(&i));
    assert!(stdout(&i).contains("inside the encrypted archive"), "{}", stdout(&i));

    // Without its .sha256 and without an identity, nothing can be checked: that is not intact.
    let sha_file = ws.out().join(format!("{name}.sha256"));
    let kept = std::fs::read(&sha_file).unwrap();
    std::fs::remove_file(&sha_file).unwrap();
    let v = run(ws.preserve().arg("verify").arg(&bundle));
    assert_eq!(v.status.code(), Some(1), "{}", stdout(&v));
    assert!(stdout(&v).contains("nothing could be checked"), "{}", stdout(&v));
    std::fs::write(&sha_file, kept).unwrap();

    // One byte of the ciphertext changed, its .sha256 rewritten to match and its signature and custody record
    // removed (which would catch it first): the payload check alone catches it.
    std::fs::remove_file(ws.out().join(format!("{name}.sig"))).unwrap();
    std::fs::remove_file(ws.out().join(name.replace(".tar.zst.age", ".custody.jsonl"))).unwrap();
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    std::fs::write(ws.out().join(format!("{name}.sha256")), format!("{sha}  {name}\n")).unwrap();
    let v = run(ws.preserve().arg("verify").arg(&bundle));
    assert_eq!(v.status.code(), Some(0), "without the identity the change cannot be seen: {}", stdout(&v));
    let v = run(ws.preserve().args(["verify", "--identity"]).arg(&identity).arg(&bundle));
    assert_eq!(v.status.code(), Some(1), "{}", stdout(&v));
}

#[test]
fn a_recipient_that_is_not_a_key_is_a_config_error_naming_it() {
    let ws = Workspace::new();
    let collectors = evidence_collector(&ws);
    let config = ws.write("preserve.toml", "[seal]\nrecipients = [\"age1notakey\"]\n");
    let out = run(ws.snapshot(&collectors).args(["-c", "ev", "--config"]).arg(&config));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("age1notakey"), "{}", stderr(&out));
    assert!(ws.bundles().is_empty());
}

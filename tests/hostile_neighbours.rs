//! Another user on the host can write to the evidence directory (the attacker whose traces are being collected,
//! here the `nobody` user) and plants links where preserve, running as root, is about to write. Nothing of theirs
//! may be followed, truncated or left in place of a bundle's files.

mod support;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use support::*;

/// Watches the output directory as `nobody`; as soon as a snapshot's staging directory appears, plants links at
/// every name preserve used to write through (the partial archive, the partial side files, the final side files)
/// and tries to look inside the staging directory. Bounded: gives up after about 20 s.
const ATTACKER: &str = r#"
out="$1"; v="$2"
i=0
while [ $i -lt 2000 ]; do
  for d in "$out"/.preserve-*.staging; do
    [ -d "$d" ] || continue
    id="${d##*/.}"; id="${id%.staging}"; id="${id%.*}"
    ln -s "$v/archive" "$out/.$id.tar.zst.partial"
    ln -s "$v/sha-partial" "$out/.$id.tar.zst.sha256.partial"
    ln -s "$v/manifest-partial" "$out/.$id.manifest.json.partial"
    ln -s "$v/sha" "$out/$id.tar.zst.sha256"
    ln -s "$v/manifest" "$out/$id.manifest.json"
    if ls "$d" >/dev/null 2>&1; then echo "listed the staging directory"; fi
    if ln -s "$v/staged" "$d/planted" 2>/dev/null; then echo "planted inside the staging directory"; fi
    echo "planted $id"
    exit 0
  done
  sleep 0.01
  i=$((i+1))
done
echo "never saw a staging directory"
exit 1
"#;

const VICTIMS: [&str; 6] = ["archive", "sha-partial", "manifest-partial", "sha", "manifest", "staged"];

#[test]
fn links_planted_in_a_shared_output_directory_are_never_followed() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root, to run the attacker as another user");
        return;
    }
    let ws = Workspace::new();
    // The attacker can reach the output directory and write to it, as on a host where it is shared.
    std::fs::set_permissions(ws.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(ws.out()).unwrap();
    std::fs::set_permissions(ws.out(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let victims = ws.path().join("victims");
    for v in VICTIMS {
        ws.write(&format!("victims/{v}"), "precious\n");
    }
    // Collection takes a second and a half, so the staging directory exists well before anything is written.
    let collectors = collectors_dir(
        &ws,
        "slow.toml",
        "[[collector]]\nname = \"slow\"\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"sleep 1.5; echo done\"]\n",
    );

    let attacker = Command::new("runuser")
        .args(["-u", "nobody", "--", "sh", "-c", ATTACKER, "attacker"])
        .arg(ws.out())
        .arg(&victims)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runuser");
    let snapshot = run(ws.preserve().args(["snapshot", "-c", "slow", "--collectors"]).arg(&collectors));
    let attacker = attacker.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&attacker.stdout);
    assert!(attacker.status.success(), "the attacker got its chance: {said}");
    assert_eq!(snapshot.status.code(), Some(0), "{}", stderr(&snapshot));

    for v in VICTIMS {
        assert_eq!(std::fs::read_to_string(victims.join(v)).unwrap(), "precious\n", "{v} was written through a link");
    }
    assert!(!said.contains("listed"), "the staging directory is private: {said}");
    assert!(!said.contains("planted inside"), "{said}");
    let bundle = ws.only_bundle();
    let name = bundle.file_name().unwrap().to_string_lossy().into_owned();
    for side in [name.clone(), format!("{name}.sha256"), name.replace(".tar.zst", ".manifest.json")] {
        let meta = std::fs::symlink_metadata(ws.out().join(&side)).unwrap();
        assert!(meta.is_file(), "{side} is preserve's own file, not the attacker's link");
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0, "{side}");
    }
    let verify = run(ws.preserve().arg("verify").arg(&bundle));
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    let warned = stderr(&snapshot);
    assert!(
        warned.contains("every user") && warned.contains(&ws.out().display().to_string()),
        "an output directory others can write to is named, as ssh does: {warned}"
    );
    assert_no_staging_left(&ws.out());
}

fn assert_no_staging_left(out: &Path) {
    let left: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".staging"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Side files are preserve's own, never links: one planted in their place (pointing at a file the attacker wants
/// shown) is named and not followed.
#[test]
fn side_files_replaced_by_links_are_not_followed() {
    let ws = Workspace::new();
    let collectors = collectors_dir(
        &ws,
        "one.toml",
        "[[collector]]\nname = \"one\"\nkind = \"command\"\nargv = [\"echo\", \"evidence\"]\n",
    );
    let out = run(ws.snapshot(&collectors).args(["-c", "one"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bundle = ws.only_bundle();
    let sha = std::path::PathBuf::from(format!("{}.sha256", bundle.display()));
    let target = ws.write("elsewhere/shadow", "root:$6$the-hash-an-attacker-wants-printed:19000:0:99999:7:::\n");
    std::fs::remove_file(&sha).unwrap();
    std::os::unix::fs::symlink(&target, &sha).unwrap();
    let verify = run(ws.preserve().arg("verify").arg(&bundle));
    let said = format!("{}{}", stdout(&verify), stderr(&verify));
    assert!(said.contains("symbolic link"), "{said}");
    assert!(!said.contains("the-hash-an-attacker-wants-printed"), "{said}");
}

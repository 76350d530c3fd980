//! Sealed evidence (docs/sealing.md): bundles signed in the SSH signature format, stamped by an RFC 3161 TSA and
//! followed by a signed, hash-chained custody record, each checked by tools nobody here wrote (`ssh-keygen -Y
//! verify`, `openssl ts -verify`) and by `preserve verify`, which names every forgery.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use support::{tsa::Behaviour, *};

/// A workspace with evidence files and a collector over them.
struct Site {
    ws: Workspace,
    collectors: PathBuf,
}

fn site() -> Site {
    let ws = Workspace::new();
    let collectors = evidence_collector(&ws);
    Site { ws, collectors }
}

/// `ssh-keygen -t <kind>` into the workspace, no passphrase; returns the private key's path.
fn keygen(ws: &Workspace, name: &str, kind: &[&str]) -> PathBuf {
    let path = ws.path().join(name);
    let st =
        Command::new("ssh-keygen").args(["-q", "-N", "", "-C", name]).args(kind).arg("-f").arg(&path).status().unwrap();
    assert!(st.success());
    path
}

fn public(key: &Path) -> String {
    std::fs::read_to_string(key.with_extension("pub")).unwrap().trim().to_string()
}

/// An allowed_signers file naming `principal` for `key`.
fn allowed(ws: &Workspace, entries: &[(&str, &Path)]) -> PathBuf {
    let text: String = entries.iter().map(|(p, k)| format!("{p} {}\n", public(k))).collect();
    ws.write("allowed_signers", text)
}

impl Site {
    fn config(&self, seal: &str) -> PathBuf {
        self.ws.write("preserve.toml", format!("[seal]\n{seal}"))
    }

    fn snapshot(&self, config: &Path) -> Output {
        run(self.ws.snapshot(&self.collectors).args(["-c", "ev", "--json", "--config"]).arg(config))
    }

    fn verify(&self, bundle: &Path, args: &[&str]) -> Output {
        run(self.ws.preserve().arg("verify").args(args).arg(bundle))
    }
}

/// `preserve custody add BUNDLE --action ACTION --note NOTE --key file:KEY`.
fn custody_add(ws: &Workspace, bundle: &Path, action: &str, note: &str, key: &Path) -> Output {
    run(ws
        .preserve()
        .args(["custody", "add"])
        .arg(bundle)
        .args(["--action", action, "--note", note, "--key"])
        .arg(format!("file:{}", key.display())))
}

fn with_suffix(bundle: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", bundle.display()))
}

/// The `<id>.seal.json` beside a bundle, parsed.
fn seal_record(bundle: &Path) -> serde_json::Value {
    let path = bundle.display().to_string().replace(".tar.zst", ".seal.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn custody_of(bundle: &Path) -> PathBuf {
    PathBuf::from(bundle.display().to_string().replace(".tar.zst", ".custody.jsonl"))
}

fn ssh_keygen_verify(allowed: &Path, principal: &str, bundle: &Path) -> Output {
    Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(allowed)
        .args(["-I", principal, "-n", "preserve", "-s"])
        .arg(with_suffix(bundle, ".sig"))
        .stdin(std::fs::File::open(bundle).unwrap())
        .output()
        .unwrap()
}

#[test]
fn a_signed_bundle_is_accepted_by_openssh_and_by_verify() {
    for (name, kind) in [("ed25519", &["-t", "ed25519"][..]), ("p256", &["-t", "ecdsa", "-b", "256"][..])] {
        let s = site();
        let key = keygen(&s.ws, &format!("seal_{name}"), kind);
        let config = s.config(&format!("signing_key = \"file:{}\"\nactor = \"ir-host-1\"\n", key.display()));
        let out = s.snapshot(&config);
        assert_eq!(out.status.code(), Some(0), "{name}");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["seal"]["signature"]["state"], "written", "{summary}");
        let bundle = s.ws.only_bundle();
        let allowed = allowed(&s.ws, &[("responder@example.org", &key)]);

        let openssh = ssh_keygen_verify(&allowed, "responder@example.org", &bundle);
        assert!(openssh.status.success(), "{name}: ssh-keygen: {}", String::from_utf8_lossy(&openssh.stderr));
        assert!(String::from_utf8_lossy(&openssh.stdout).contains("Good \"preserve\" signature"));

        let v = s.verify(&bundle, &["--allowed-signers", allowed.to_str().unwrap(), "--require-signature", "--json"]);
        assert_eq!(v.status.code(), Some(0), "{name}");
        let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
        assert_eq!(report["seal"]["signature"]["state"], "valid");
        assert_eq!(report["seal"]["signature"]["principals"], serde_json::json!(["responder@example.org"]));
        assert_eq!(report["seal"]["custody"]["state"], "valid");
        assert_eq!(report["seal"]["custody"]["entries"], 1);
        assert_eq!(report["seal"]["custody"]["last"]["action"], "sealed");
        assert_eq!(report["seal"]["custody"]["last"]["actor"], "ir-host-1");
        let human = stdout(&s.verify(&bundle, &["--allowed-signers", allowed.to_str().unwrap()]));
        assert!(human.contains("signature  valid:") && human.contains("= responder@example.org"), "{human}");

        let inspect = stdout(&run(s.ws.preserve().arg("inspect").arg(&bundle)));
        let line = inspect.lines().find(|l| l.starts_with("seal:")).expect("inspect shows the seal");
        assert!(line.contains("signed by SHA256:") && line.contains("custody 1 entry"), "{line}");
    }
}

#[test]
fn an_unsealed_bundle_fails_only_when_a_seal_is_required() {
    let s = site();
    let out = run(s.ws.snapshot(&s.collectors).args(["-c", "ev"]));
    assert_eq!(out.status.code(), Some(0));
    let bundle = s.ws.only_bundle();
    assert!(!with_suffix(&bundle, ".sig").exists());
    assert_eq!(s.verify(&bundle, &[]).status.code(), Some(0));
    let v = s.verify(&bundle, &["--require-signature", "--require-timestamp"]);
    assert_eq!(v.status.code(), Some(1));
    let text = stdout(&v);
    assert!(text.contains("no signature, and --require-signature was given"), "{text}");
    assert!(text.contains("no timestamp, and --require-timestamp was given"), "{text}");
}

#[test]
fn an_agent_held_key_signs_with_its_file_gone() {
    let s = site();
    let key = keygen(&s.ws, "agent_key", &["-t", "ed25519"]);
    let pubkey = key.with_extension("pub");
    let sock = s.ws.path().join("agent.sock");
    let agent = Command::new("ssh-agent").arg("-D").arg("-a").arg(&sock).spawn().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(agent);
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let st = Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &sock).output().unwrap();
    assert!(st.status.success(), "ssh-add: {}", String::from_utf8_lossy(&st.stderr));
    let allowed = allowed(&s.ws, &[("hsm@example.org", &key)]);
    std::fs::remove_file(&key).unwrap();

    let config = s.config(&format!("agent_key = \"{}\"\n", pubkey.display()));
    let out = run(s.ws.snapshot(&s.collectors).args(["-c", "ev", "--config"]).arg(&config).env("SSH_AUTH_SOCK", &sock));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bundle = s.ws.only_bundle();
    let openssh = ssh_keygen_verify(&allowed, "hsm@example.org", &bundle);
    assert!(openssh.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&openssh.stderr));
    let v = s.verify(&bundle, &["--allowed-signers", allowed.to_str().unwrap(), "--require-signature"]);
    assert_eq!(v.status.code(), Some(0));

    // The agent gone: the evidence is still written, unsigned, and the exit code says so.
    drop(_agent);
    let out = run(s
        .ws
        .snapshot(&s.collectors)
        .args(["-c", "ev", "--json", "--config"])
        .arg(&config)
        .env("SSH_AUTH_SOCK", &sock));
    assert_eq!(out.status.code(), Some(4), "a missing signature is exit 4");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["seal"]["signature"]["state"], "missing");
    assert!(summary["seal"]["signature"]["why"].as_str().unwrap().contains("agent"), "{summary}");
    let unsigned = PathBuf::from(summary["bundle"].as_str().unwrap());
    assert_eq!(s.verify(&unsigned, &[]).status.code(), Some(0), "the unsigned bundle is whole");
}

#[test]
fn a_local_tsa_stamps_the_bundle_and_openssl_accepts_the_token() {
    let s = site();
    let tsa = support::tsa::Tsa::start(&s.ws.path().join("tsa"), Behaviour::Honest);
    let key = keygen(&s.ws, "seal_key", &["-t", "ed25519"]);
    let config = s.config(&format!(
        "signing_key = \"file:{}\"\ntsa_url = \"{}\"\ntsa_ca_file = \"{}\"\n",
        key.display(),
        tsa.url,
        tsa.ca().display()
    ));
    let out = s.snapshot(&config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bundle = s.ws.only_bundle();
    let tsr = with_suffix(&bundle, ".tsr");
    let openssl = Command::new("openssl")
        .args(["ts", "-verify", "-in"])
        .arg(&tsr)
        .arg("-data")
        .arg(&bundle)
        .arg("-CAfile")
        .arg(tsa.ca())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&openssl.stdout).contains("Verification: OK"),
        "openssl ts -verify: {}{}",
        String::from_utf8_lossy(&openssl.stdout),
        String::from_utf8_lossy(&openssl.stderr)
    );
    let v = s.verify(&bundle, &["--tsa-ca", tsa.ca().to_str().unwrap(), "--require-timestamp", "--json"]);
    assert_eq!(v.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let t = &report["seal"]["timestamp"];
    assert_eq!(t["state"], "valid", "{t}");
    assert!(t["tsa"].as_str().unwrap().contains("preserve test TSA"), "{t}");
    assert!(t["chain"].as_str().unwrap().contains("preserve test TSA CA"), "{t}");
    let stamped: jiff::Timestamp = t["time"].as_str().unwrap().parse().unwrap();
    assert!(jiff::Timestamp::now().duration_since(stamped).as_secs().abs() < 600);

    // Another CA: the chain does not hold, and that is said.
    let other = s.ws.path().join("other-ca");
    support::tsa::make_pki(&other);
    let v = s.verify(&bundle, &["--tsa-ca", other.join("ca.crt").to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(1));
    assert!(stdout(&v).contains("does not chain to the given CA"), "{}", stdout(&v));
}

#[test]
fn a_tsa_down_hung_or_stamping_another_digest_costs_no_evidence() {
    let s = site();
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/tsr", l.local_addr().unwrap())
    };
    let hung = support::tsa::Tsa::start(&s.ws.path().join("hung"), Behaviour::Hang);
    let liar = support::tsa::Tsa::start(&s.ws.path().join("liar"), Behaviour::OtherDigest);
    for (url, says) in [
        (down.as_str(), "cannot be reached"),
        (hung.url.as_str(), "did not answer within 1s"),
        (liar.url.as_str(), "not this archive's"),
    ] {
        let before = s.ws.bundles();
        let config = s.config(&format!("tsa_url = \"{url}\"\ntsa_timeout = \"1s\"\n"));
        let out = s.snapshot(&config);
        assert_eq!(out.status.code(), Some(4), "{url}: a missing timestamp is exit 4");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let why = summary["seal"]["timestamp"]["why"].as_str().unwrap_or_default();
        assert!(why.contains(says), "{url}: {summary}");
        assert_eq!(summary["seal_findings"][0]["code"], "seal.timestamp_missing");
        let bundle = PathBuf::from(summary["bundle"].as_str().unwrap());
        assert!(!before.contains(&bundle));
        assert!(!with_suffix(&bundle, ".tsr").exists(), "{url}: no token is kept");
        let record = seal_record(&bundle);
        assert_eq!(record["timestamp"]["state"], "missing");
        assert!(record["timestamp"]["why"].as_str().unwrap().contains(says));
        assert_eq!(s.verify(&bundle, &[]).status.code(), Some(0), "{url}: the bundle verifies");
    }
    assert!(hung.requests.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the hung TSA was asked");
}

/// Two sealed bundles (signed, stamped, custody of three entries), the keys and files to check them.
struct Sealed {
    s: Site,
    a: PathBuf,
    b: PathBuf,
    allowed: PathBuf,
    tsa: support::tsa::Tsa,
}

fn sealed() -> Sealed {
    let s = site();
    let tsa = support::tsa::Tsa::start(&s.ws.path().join("tsa"), Behaviour::Honest);
    let key = keygen(&s.ws, "seal_key", &["-t", "ed25519"]);
    let allowed = allowed(&s.ws, &[("responder@example.org", &key)]);
    let config = s.config(&format!("signing_key = \"file:{}\"\ntsa_url = \"{}\"\n", key.display(), tsa.url));
    assert_eq!(s.snapshot(&config).status.code(), Some(0));
    assert_eq!(s.snapshot(&config).status.code(), Some(0));
    let [a, b] = <[PathBuf; 2]>::try_from(s.ws.bundles()).unwrap();
    for (action, note) in [("transferred", "to outside counsel, IR-1234"), ("verified", "checked on receipt")] {
        assert_eq!(custody_add(&s.ws, &a, action, note, &key).status.code(), Some(0));
    }
    let ca = tsa.ca();
    let all = [
        "--allowed-signers",
        allowed.to_str().unwrap(),
        "--tsa-ca",
        ca.to_str().unwrap(),
        "--require-signature",
        "--require-timestamp",
    ];
    assert_eq!(s.verify(&a, &all).status.code(), Some(0), "the sealed bundle verifies whole");
    Sealed { s, a, b, allowed, tsa }
}

impl Sealed {
    /// `verify` with every layer required; asserts exit 1 and that `kind` names `says`.
    fn caught(&self, kind: &str, says: &str) {
        let ca = self.tsa.ca();
        let all = [
            "--allowed-signers",
            self.allowed.to_str().unwrap(),
            "--tsa-ca",
            ca.to_str().unwrap(),
            "--require-signature",
            "--require-timestamp",
            "--json",
        ];
        let v = self.s.verify(&self.a, &all);
        assert_eq!(v.status.code(), Some(1), "{kind}: {says}");
        let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
        let problems = report["problems"].as_array().unwrap();
        assert!(
            problems.iter().any(|p| p["kind"] == kind && p["detail"].as_str().unwrap().contains(says)),
            "expected a {kind} problem saying {says:?}: {problems:?}"
        );
    }

    fn keep(&self, path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }
}

#[test]
fn each_forgery_of_the_archive_signature_or_timestamp_is_named() {
    let f = sealed();
    let (sig, tsr) = (with_suffix(&f.a, ".sig"), with_suffix(&f.a, ".tsr"));

    // One byte of the archive changed (its .sha256 rewritten to match, as an attacker would).
    let original = f.keep(&f.a);
    let mut changed = original.clone();
    let at = changed.len() / 2;
    changed[at] ^= 0x01;
    std::fs::write(&f.a, &changed).unwrap();
    let sum = Command::new("sha256sum").arg(&f.a).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap().to_string();
    let sha_file = with_suffix(&f.a, ".sha256");
    let kept_sha = f.keep(&sha_file);
    std::fs::write(&sha_file, format!("{sum}  {}\n", f.a.file_name().unwrap().to_string_lossy())).unwrap();
    f.caught("signature", "does not match this archive");
    f.caught("timestamp", "not this archive's");
    std::fs::write(&f.a, &original).unwrap();
    std::fs::write(&sha_file, kept_sha).unwrap();

    // A signature by another key, over this very archive.
    let attacker = keygen(&f.s.ws, "attacker", &["-t", "ed25519"]);
    let kept = f.keep(&sig);
    let copy = f.s.ws.path().join("copy.tar.zst");
    std::fs::copy(&f.a, &copy).unwrap();
    let st = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "preserve", "-f"])
        .arg(&attacker)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(st.status.success());
    std::fs::copy(with_suffix(&copy, ".sig"), &sig).unwrap();
    f.caught("signature", "not an allowed signer");
    // The real OpenSSH agrees.
    assert!(!ssh_keygen_verify(&f.allowed, "responder@example.org", &f.a).status.success());

    // A valid signature, of another bundle.
    std::fs::copy(with_suffix(&f.b, ".sig"), &sig).unwrap();
    f.caught("signature", "does not match this archive");
    std::fs::write(&sig, kept).unwrap();

    // A valid timestamp, of another bundle.
    std::fs::copy(with_suffix(&f.b, ".tsr"), &tsr).unwrap();
    f.caught("timestamp", "not this archive's");
}

#[test]
fn each_forgery_of_the_custody_record_is_named() {
    let f = sealed();
    let path = custody_of(&f.a);
    let original = f.keep(&path);
    let lines: Vec<String> = String::from_utf8(original.clone()).unwrap().lines().map(String::from).collect();
    assert_eq!(lines.len(), 3);
    let write = |l: &[String]| std::fs::write(&path, l.iter().map(|x| format!("{x}\n")).collect::<String>()).unwrap();

    // An entry edited: its note changed, the JSON still well formed.
    let mut edited = lines.clone();
    edited[1] = edited[1].replace("outside counsel", "the vendor");
    write(&edited);
    f.caught("custody", "line 2: signature does not match the entry");

    // An entry dropped.
    write(&[lines[0].clone(), lines[2].clone()]);
    f.caught("custody", "line 2: sequence number 3 where 2 belongs");

    // Two entries swapped.
    write(&[lines[0].clone(), lines[2].clone(), lines[1].clone()]);
    f.caught("custody", "line 2: sequence number 3 where 2 belongs");

    // An entry appended by someone whose key is not allowed, correctly chained and signed with that key.
    std::fs::write(&path, &original).unwrap();
    let stranger = keygen(&f.s.ws, "stranger", &["-t", "ed25519"]);
    assert_eq!(custody_add(&f.s.ws, &f.a, "note", "all fine", &stranger).status.code(), Some(0));
    f.caught("custody", "line 4: signed by SHA256:");
    f.caught("custody", "not an allowed signer");

    // An entry appended with no valid signature at all.
    let mut forged = lines.clone();
    let mut entry: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    entry["entry"]["seq"] = 4.into();
    entry["entry"]["note"] = "appended by hand".into();
    forged.push(serde_json::to_string(&entry).unwrap());
    write(&forged);
    f.caught("custody", "line 4:");

    // `custody show` names the same break and exits 1; `custody add` refuses to extend it.
    let show = run(f.s.ws.preserve().args(["custody", "show"]).arg(&f.a));
    assert_eq!(show.status.code(), Some(1));
    assert!(stdout(&show).contains("BROKEN at line 4"), "{}", stdout(&show));
    let add = custody_add(&f.s.ws, &f.a, "note", "", &f.s.ws.path().join("seal_key"));
    assert_eq!(add.status.code(), Some(1));
    assert!(stderr(&add).contains("nothing was appended"), "{}", stderr(&add));
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
}

#[test]
fn custody_show_lists_every_entry_with_its_signer_and_a_changed_archive_gets_no_entry() {
    let f = sealed();
    let show =
        run(f.s.ws.preserve().args(["custody", "show", "--json", "--allowed-signers"]).arg(&f.allowed).arg(&f.a));
    assert_eq!(show.status.code(), Some(0));
    let chain: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let actions: Vec<&str> =
        chain["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["sealed", "transferred", "verified"]);
    assert_eq!(chain["entries"][1]["note"], "to outside counsel, IR-1234");
    assert_eq!(chain["entries"][2]["principals"], serde_json::json!(["responder@example.org"]));
    let seqs: Vec<u64> = chain["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);

    // The archive changed since it was sealed: no custody entry vouches for the changed one.
    let mut bytes = std::fs::read(&f.a).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&f.a, bytes).unwrap();
    let add = custody_add(&f.s.ws, &f.a, "opened", "", &f.s.ws.path().join("seal_key"));
    assert_eq!(add.status.code(), Some(1));
    assert!(stderr(&add).contains("not this one"), "{}", stderr(&add));
}

/// docs/sealing.md's recipe for checking a custody entry without preserve, run as written there.
#[test]
fn the_custody_record_checks_by_hand_with_sed_and_ssh_keygen() {
    let f = sealed();
    let record = custody_of(&f.a);
    let script = format!(
        "set -eu\nR='{}'; n=2\ncd '{}'\n\
         sed -n \"${{n}}p\" $R | sed -E 's/^\\{{\"entry\":(.*),\"signature\":\".*$/\\1/' | head -c -1 > entry\n\
         sed -n \"${{n}}p\" $R | sed -E 's/.*,\"signature\":\"(.*)\"\\}}$/\\1/; s/\\\\n/\\n/g' > entry.sig\n\
         ssh-keygen -Y verify -f '{}' -I responder@example.org -n preserve-custody -s entry.sig < entry\n\
         sed -n \"$((n-1))p\" $R | head -c -1 | sha256sum\n",
        record.display(),
        f.s.ws.path().display(),
        f.allowed.display()
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Good \"preserve-custody\" signature for responder@example.org"), "{text}");
    let line2: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&record).unwrap().lines().nth(1).unwrap()).unwrap();
    let prev = line2["entry"]["prev_sha256"].as_str().unwrap();
    assert!(text.lines().any(|l| l.starts_with(prev)), "the previous line's hash is line 2's link: {text}");
}

/// SIGTERM (an operator's Ctrl-C, the orchestrator's grace running out): the partial bundle is signed at once and the
/// TSA is not asked, so a slow one cannot keep the process past its grace.
#[test]
fn an_interrupted_snapshot_is_signed_and_does_not_wait_for_the_tsa() {
    use std::io::BufRead;
    let s = site();
    let hung = support::tsa::Tsa::start(&s.ws.path().join("hung"), Behaviour::Hang);
    let key = keygen(&s.ws, "seal_key", &["-t", "ed25519"]);
    let config = s.config(&format!(
        "signing_key = \"file:{}\"\ntsa_url = \"{}\"\ntsa_timeout = \"2m\"\n",
        key.display(),
        hung.url
    ));
    let dir = collectors_dir(
        &s.ws,
        "slow.toml",
        "[[collector]]\nname = \"slow\"\nkind = \"command\"\ntimeout = \"5m\"\nargv = [\"sh\", \"-c\", \"echo begun; sleep 300\"]\n",
    );
    let mut child =
        s.ws.preserve()
            .args(["snapshot", "-c", "slow", "--collectors"])
            .arg(&dir)
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(lines.any(|l| l.is_ok_and(|l| l.contains("collector slow: started"))), "the collector started");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let signalled = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(signalled.elapsed() < std::time::Duration::from_secs(60), "it did not wait out the TSA's 2 minutes");
    assert_eq!(out.status.code(), Some(5), "partial, and not timestamped");
    let bundle = s.ws.only_bundle();
    let record = seal_record(&bundle);
    assert_eq!(record["signature"]["state"], "written", "{record}");
    assert!(record["timestamp"]["why"].as_str().unwrap().contains("stopped"), "{record}");
    assert_eq!(hung.requests.load(std::sync::atomic::Ordering::SeqCst), 0, "the TSA was never asked");
    let allowed = allowed(&s.ws, &[("responder@example.org", &key)]);
    let v = s.verify(&bundle, &["--allowed-signers", allowed.to_str().unwrap(), "--require-signature"]);
    assert_eq!(v.status.code(), Some(0), "the partial bundle is whole and signed");
}

/// `preserve check` says at once whether the key can sign, before an incident finds out.
#[test]
fn check_says_whether_the_seal_key_can_sign() {
    let s = site();
    let key = keygen(&s.ws, "seal_key", &["-t", "ed25519"]);
    let good = s.config(&format!("signing_key = \"file:{}\"\ntsa_url = \"http://127.0.0.1:9/tsr\"\n", key.display()));
    let out =
        run(s.ws.preserve().args(["check", "-c", "ev", "--collectors"]).arg(&s.collectors).arg("--config").arg(&good));
    let text = stdout(&out);
    let line = text.lines().find(|l| l.contains("seal")).unwrap_or_else(|| panic!("no seal line: {text}"));
    assert!(line.contains("signs with SHA256:") && line.contains("http://127.0.0.1:9/tsr"), "{line}");

    let rsa = keygen(&s.ws, "rsa_key", &["-t", "rsa", "-b", "2048"]);
    let bad = s.config(&format!("signing_key = \"file:{}\"\n", rsa.display()));
    let out = run(s
        .ws
        .preserve()
        .args(["check", "-c", "ev", "--json", "--collectors"])
        .arg(&s.collectors)
        .arg("--config")
        .arg(&bad));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let item = report["site"].as_array().unwrap().iter().find(|i| i["name"] == "seal").expect("a seal item");
    assert_eq!(item["ok"], false);
    assert!(item["detail"].as_str().unwrap().contains("ssh-rsa keys cannot sign bundles"), "{item}");
}

/// Side files are hostile input like the rest: a link is not followed, a huge file is not read, and what a forged
/// record says is shown cut and escaped.
#[test]
fn hostile_seal_side_files_are_refused_unread_and_never_echoed() {
    let f = sealed();
    let (sig, tsr, custody) = (with_suffix(&f.a, ".sig"), with_suffix(&f.a, ".tsr"), custody_of(&f.a));
    let (kept_sig, kept_tsr) = (f.keep(&sig), f.keep(&tsr));
    std::fs::remove_file(&sig).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &sig).unwrap();
    f.caught("signature", "a symbolic link, which preserve never makes; not followed");
    std::fs::remove_file(&sig).unwrap();
    std::fs::write(&sig, kept_sig).unwrap();

    let big = std::fs::File::create(&tsr).unwrap();
    big.set_len(3 << 30).unwrap();
    f.caught("timestamp", "over the 1.0 MiB bound for this file; not read");
    std::fs::write(&tsr, kept_tsr).unwrap();

    let mut text = std::fs::read_to_string(&custody).unwrap();
    text.push_str(&format!(
        "{{\"entry\":{{\"seq\":\"\\u001b]0;pwned\\u0007{}\"}},\"signature\":\"x\"}}\n",
        "A".repeat(5000)
    ));
    std::fs::write(&custody, text).unwrap();
    let all = ["--allowed-signers", f.allowed.to_str().unwrap()];
    let v = f.s.verify(&f.a, &all);
    assert_eq!(v.status.code(), Some(1));
    let out = stdout(&v);
    assert!(out.contains("line 4: not a custody entry: invalid type: string"), "{out}");
    assert!(!out.contains('\u{1b}') && !out.contains(&"A".repeat(200)), "the forged text is cut and escaped: {out}");
}

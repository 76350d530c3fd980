//! Off-host storage (docs/storage.md): bundles uploaded to real S3 servers while they are written. Uploads,
//! checksums, multipart and faults run against Garage, which checks every part's SHA-256; write-once and Object
//! Lock against moto's S3 server, which enforces them (tests/support/s3.rs says who does what).

mod support;

use std::{path::Path, process::Output};

use support::{
    s3::{self, BUCKET, Garage, Keys, Moto},
    *,
};

/// Base64 of random bytes: compresses to about three quarters, so the archive spans several 5 MiB parts.
fn bulky_evidence(ws: &Workspace, mib: usize) -> std::path::PathBuf {
    use base64::Engine;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut raw = vec![0u8; mib << 20];
    for b in raw.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let text = base64::engine::general_purpose::STANDARD.encode(&raw);
    let lines: Vec<&str> = text.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
    ws.write("bulk/blob.log", lines.join("\n"));
    collectors_dir(
        ws,
        "bulk.toml",
        &format!(
            "[[collector]]\nname = \"bulk\"\nkind = \"file\"\nwindow = false\npaths = [\"{}/bulk/*\"]\n",
            ws.path().display()
        ),
    )
}

fn site(ws: &Workspace, store: &str) -> std::path::PathBuf {
    ws.write("preserve.toml", store)
}

fn with_keys(cmd: &mut std::process::Command, keys: &Keys) {
    cmd.env("AWS_ACCESS_KEY_ID", &keys.id)
        .env("AWS_SECRET_ACCESS_KEY", &keys.secret)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/preserve-test")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/preserve-test");
}

fn snapshot_upload(ws: &Workspace, collectors: &Path, config: &Path, keys: &Keys, extra: &[&str]) -> Output {
    let mut c = ws.snapshot(collectors);
    c.args(["-c", "bulk", "--upload", "--json", "--config"]).arg(config).args(extra);
    with_keys(&mut c, keys);
    run(&mut c)
}

fn upload_record(bundle: &Path) -> serde_json::Value {
    let file = bundle.file_name().unwrap().to_string_lossy().to_string();
    let id = file.trim_end_matches(".age").trim_end_matches(".tar.zst");
    let name = format!("{id}.upload.json");
    let text = std::fs::read(bundle.with_file_name(name)).expect("an upload record beside the bundle");
    serde_json::from_slice(&text).unwrap()
}

#[test]
fn a_bundle_streams_to_garage_in_parts_each_checked_and_read_back() {
    let ws = Workspace::new();
    let garage = Garage::start(&ws.path().join("garage"));
    let collectors = bulky_evidence(&ws, 16);
    let config = site(&ws, &garage.store_toml("caracal/prod", ""));
    let out = snapshot_upload(&ws, &collectors, &config, &garage.keys, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bundle = ws.only_bundle();
    let record = upload_record(&bundle);
    assert_eq!(record["state"], "confirmed", "{record:#}");
    assert_eq!(record["streamed"], true, "{record:#}");
    let expected = s3::expected_checksum(&bundle, 5 << 20);
    assert!(expected.ends_with("-3") || expected.ends_with("-4"), "several parts: {expected}");
    assert_eq!(record["expected_checksum"], expected.as_str());
    assert_eq!(record["stored_checksum"], expected.as_str(), "{record:#}");

    let client = s3::client(&garage.endpoint(), "garage", &garage.keys);
    let name = bundle.file_name().unwrap().to_string_lossy().to_string();
    let key = format!("caracal/prod/{name}");
    assert_eq!(s3::get(&client, BUCKET, &key), std::fs::read(&bundle).unwrap(), "the stored object is the bundle");
    let mut stored = s3::keys(&client, BUCKET, "caracal/prod/");
    stored.sort();
    let id = name.trim_end_matches(".tar.zst");
    let mut want: Vec<String> =
        ["tar.zst", "tar.zst.sha256", "manifest.json"].iter().map(|s| format!("caracal/prod/{id}.{s}")).collect();
    want.sort();
    assert_eq!(stored, want);
    assert!(s3::open_uploads(&client, BUCKET).is_empty());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["upload"]["state"], "confirmed");

    // verify s3:// streams the stored bundle through the same checks as a file.
    let url = format!("s3://{BUCKET}/{key}");
    let mut verify = ws.preserve();
    verify.args(["verify", "--json", "--config"]).arg(&config).arg(&url);
    with_keys(&mut verify, &garage.keys);
    let v = run(&mut verify);
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    let r: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(r["archive_hash_checked"], true);
    assert_eq!(r["archive"], url.as_str());
    assert!(r["payload_files"].as_u64().unwrap() >= 2, "{r:#}");
    // One byte changed in the bucket: caught.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x20;
    s3::block_on(async {
        client.put_object().bucket(BUCKET).key(&key).body(bytes.into()).send().await.unwrap();
    });
    let v = run(&mut verify);
    assert_eq!(v.status.code(), Some(1), "{}", stdout(&v));
    let r: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let problems = r["problems"].to_string();
    assert!(problems.contains("archive-hash"), "{problems}");
}

/// A collector that takes its time, so the archive stays open (its first parts stored) while the store is killed.
fn slow_collector(ws: &Workspace, seconds: u32) {
    ws.write(
        "collectors.d/slow.toml",
        format!("[[collector]]\nname = \"slow\"\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"sleep {seconds}; echo done\"]\n"),
    );
}

#[test]
fn a_store_killed_mid_upload_costs_no_evidence_and_a_rerun_resumes_it() {
    let ws = Workspace::new();
    let mut garage = Garage::start(&ws.path().join("garage"));
    let collectors = bulky_evidence(&ws, 24);
    slow_collector(&ws, 4);
    let config = site(&ws, &garage.store_toml("caracal", "max_attempts = 2\n"));
    let client = s3::client(&garage.endpoint(), "garage", &garage.keys);
    let mut c = ws.snapshot(&collectors);
    c.args(["-c", "bulk", "-c", "slow", "--upload", "--json", "--config"]).arg(&config);
    with_keys(&mut c, &garage.keys);
    let child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // The bulk artifact is archived (and its parts stored) while `slow` still runs: then the store dies.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s3::stored_parts(&client, BUCKET) == 0 {
        assert!(std::time::Instant::now() < deadline, "the upload never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    garage.kill();
    let out = child.wait_with_output().unwrap();
    eprintln!("{}", stderr(&out));
    assert_eq!(out.status.code(), Some(6), "complete, but not stored: {}", stderr(&out));
    let bundle = ws.only_bundle();
    let verified = run(ws.preserve().arg("verify").arg(&bundle));
    assert_eq!(verified.status.code(), Some(0), "the local bundle is intact: {}", stdout(&verified));
    let record = upload_record(&bundle);
    assert_eq!(record["state"], "failed", "{record:#}");
    let stored_parts = record["resume"]["parts"].as_array().map_or(0, Vec::len);
    assert!(stored_parts >= 1, "the parts stored before the kill are kept for the rerun: {record:#}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["upload"]["state"], "failed");
    let why = json["upload"]["error"].as_str().unwrap();
    assert!(why.contains("cannot reach the store") && why.contains("s3://evidence/caracal/"), "{why}");
    assert_eq!(json["exit_code"], 6);

    garage.restart();
    let mut rerun = ws.preserve();
    rerun.args(["upload", "--json", "--config"]).arg(&config).arg(&bundle);
    with_keys(&mut rerun, &garage.keys);
    let again = run(&mut rerun);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let record = upload_record(&bundle);
    assert_eq!(record["state"], "confirmed", "{record:#}");
    assert_eq!(record["attempts"], 2);
    assert_eq!(record["resumed_parts"], stored_parts, "the stored parts were kept, not sent again: {record:#}");
    assert_eq!(record["stored_checksum"], s3::expected_checksum(&bundle, 5 << 20).as_str());
    let name = bundle.file_name().unwrap().to_string_lossy().to_string();
    let archives: Vec<String> =
        s3::keys(&client, BUCKET, "caracal/").into_iter().filter(|k| k.ends_with(".tar.zst")).collect();
    assert_eq!(archives, vec![format!("caracal/{name}")], "one object, no duplicate");
    assert!(s3::open_uploads(&client, BUCKET).is_empty(), "the interrupted upload was completed, none left open");
    assert_eq!(s3::get(&client, BUCKET, &format!("caracal/{name}")), std::fs::read(&bundle).unwrap());
    // Once confirmed, a further rerun changes nothing.
    let third = run(&mut rerun);
    assert_eq!(third.status.code(), Some(0));
    assert_eq!(upload_record(&bundle)["attempts"], 2);
}

#[test]
fn the_server_refuses_a_second_upload_of_a_bundle_id_and_keeps_the_first() {
    let ws = Workspace::new();
    let moto = Moto::start(&ws.path().join("moto"));
    let collectors = bulky_evidence(&ws, 12);
    let config = site(&ws, &moto.store_toml(s3::PLAIN, ""));
    let first = snapshot_upload(&ws, &collectors, &config, &moto.keys, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let bundle = ws.only_bundle();
    let name = bundle.file_name().unwrap().to_string_lossy().to_string();
    let key = format!("caracal/{name}");
    let client = moto.client();
    let original = std::fs::read(&bundle).unwrap();
    assert_eq!(s3::get(&client, s3::PLAIN, &key), original);

    // Another archive under the same id (as an attacker on the host, or a bug, would make one), hashes and all.
    let other = ws.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let forged = other.join(&name);
    let mut bytes = original.clone();
    bytes.extend_from_slice(&[0u8; 512]);
    std::fs::write(&forged, &bytes).unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    std::fs::write(other.join(format!("{name}.sha256")), format!("{sha}  {name}\n")).unwrap();
    let mut again = ws.preserve();
    again.args(["upload", "--json", "--config"]).arg(&config).arg(&forged);
    with_keys(&mut again, &moto.keys);
    let out = run(&mut again);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["state"], "failed");
    let why = record["error"].as_str().unwrap();
    assert!(why.contains("already exists") && why.contains("PreconditionFailed"), "refused by the store: {why}");
    assert_eq!(s3::get(&client, s3::PLAIN, &key), original, "nothing overwritten");
    assert!(s3::open_uploads(&client, s3::PLAIN).is_empty(), "the refused upload was aborted");
}

#[test]
fn object_lock_is_set_on_every_object_and_the_store_refuses_to_delete_it() {
    let ws = Workspace::new();
    let moto = Moto::start(&ws.path().join("moto"));
    // Several parts: the lock is set on the multipart upload, as for every real bundle.
    let collectors = bulky_evidence(&ws, 12);
    let lock = "lock_mode = \"COMPLIANCE\"\nretain_days = 2\nlegal_hold = true\n";
    let config = site(&ws, &moto.store_toml(s3::LOCKED, lock));
    let started = jiff::Timestamp::now();
    let out = snapshot_upload(&ws, &collectors, &config, &moto.keys, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bundle = ws.only_bundle();
    let record = upload_record(&bundle);
    assert_eq!(record["state"], "confirmed", "{record:#}");
    assert_eq!(record["lock"]["mode"], "COMPLIANCE");
    assert_eq!(record["lock"]["legal_hold"], true);
    let until: jiff::Timestamp = record["lock"]["retain_until"].as_str().unwrap().parse().unwrap();
    let days = until.duration_since(started).as_secs_f64() / 86400.0;
    assert!((1.99..2.01).contains(&days), "retained 2 days: {until}");
    let version = record["version_id"].as_str().expect("a version id").to_string();

    let client = moto.client();
    let name = bundle.file_name().unwrap().to_string_lossy().to_string();
    s3::block_on(async {
        for suffix in ["", ".sha256"] {
            let key = format!("caracal/{name}{suffix}");
            let head = client.head_object().bucket(s3::LOCKED).key(&key).send().await.unwrap();
            assert_eq!(head.object_lock_mode().map(|m| m.as_str()), Some("COMPLIANCE"), "{key}");
            assert_eq!(head.object_lock_retain_until_date().map(|d| d.secs()), Some(until.as_second()), "{key}");
        }
        let key = format!("caracal/{name}");
        let refused = client.delete_object().bucket(s3::LOCKED).key(&key).version_id(&version).send().await;
        let e = refused.expect_err("a locked version cannot be deleted");
        use aws_sdk_s3::error::ProvideErrorMetadata;
        assert_eq!(e.code(), Some("AccessDenied"), "{e:?}");
        let still = client.get_object().bucket(s3::LOCKED).key(&key).version_id(&version).send().await.unwrap();
        let body = still.body.collect().await.unwrap().into_bytes();
        assert_eq!(body.as_ref(), std::fs::read(&bundle).unwrap().as_slice());
    });

    // `preserve list` shows it with its profile, status, size and lock.
    let mut list = ws.preserve();
    list.args(["list", "--json", "--config"]).arg(&config).arg(format!("s3://{}/caracal", s3::LOCKED));
    with_keys(&mut list, &moto.keys);
    let l = run(&mut list);
    assert_eq!(l.status.code(), Some(0), "{}", stderr(&l));
    let listed: serde_json::Value = serde_json::from_slice(&l.stdout).unwrap();
    let item = &listed[0];
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(item["bundle_id"], name.trim_end_matches(".tar.zst"));
    assert_eq!(item["profile"], "custom");
    assert_eq!(item["status"], "complete");
    assert_eq!(item["bytes"], std::fs::metadata(&bundle).unwrap().len());
    assert_eq!(item["lock"]["mode"], "COMPLIANCE");
    assert_eq!(item["lock"]["legal_hold"], true);
    assert_eq!(item["signed"], false);
    let mut list = ws.preserve();
    list.args(["list", "--config"]).arg(&config).arg(format!("s3://{}/caracal", s3::LOCKED));
    with_keys(&mut list, &moto.keys);
    let text = stdout(&run(&mut list));
    assert!(text.contains("COMPLIANCE until") && text.contains("+hold") && text.contains("unsealed"), "{text}");
}

#[test]
fn a_lock_asked_of_a_bucket_without_object_lock_is_refused_plainly() {
    let ws = Workspace::new();
    let moto = Moto::start(&ws.path().join("moto"));
    let collectors = bulky_evidence(&ws, 1);
    let config = site(&ws, &moto.store_toml(s3::PLAIN, "lock_mode = \"GOVERNANCE\"\nretain_days = 7\n"));
    let out = snapshot_upload(&ws, &collectors, &config, &moto.keys, &[]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["upload"]["state"], "failed");
    let why = json["upload"]["error"].as_str().unwrap();
    assert!(why.contains("the bucket has no Object Lock"), "{why}");
    assert!(s3::keys(&moto.client(), s3::PLAIN, "").is_empty(), "nothing stored unlocked");
    let verified = run(ws.preserve().arg("verify").arg(ws.only_bundle()));
    assert_eq!(verified.status.code(), Some(0));
}

#[test]
fn wrong_credentials_and_an_unknown_bucket_are_named_and_no_credential_is_shown() {
    let ws = Workspace::new();
    let garage = Garage::start(&ws.path().join("garage"));
    let collectors = bulky_evidence(&ws, 1);
    // A collector that prints the environment's secret key, as a misbehaving script would: redacted.
    ws.write(
        "collectors.d/leaky.toml",
        "[[collector]]\nname = \"leaky\"\nkind = \"command\"\ninherit_env = [\"AWS_SECRET_ACCESS_KEY\"]\n\
         argv = [\"sh\", \"-c\", \"echo key=$AWS_SECRET_ACCESS_KEY\"]\n",
    );
    let wrong = Keys { id: garage.keys.id.clone(), secret: "0a1b2c3d".repeat(8) };
    let config = site(&ws, &garage.store_toml("caracal", ""));
    let out = snapshot_upload(&ws, &collectors, &config, &wrong, &["-c", "leaky"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let why = json["upload"]["error"].as_str().unwrap().to_string();
    assert!(why.contains("secret key is wrong") || why.contains("access denied"), "{why}");
    let bag = unpack(&ws.only_bundle(), &ws.path().join("unpacked"));
    assert!(collector_text(&bag, "leaky").contains("key=[REDACTED:"), "{}", collector_text(&bag, "leaky"));
    assert_no_secret_anywhere(&ws, &bag, &out, &[&wrong.secret, &garage.keys.secret]);

    let unknown = Keys { id: "GK000000000000000000000000".into(), secret: "f".repeat(64) };
    let out = snapshot_upload(&ws, &collectors, &config, &unknown, &[]);
    assert_eq!(out.status.code(), Some(6));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let why = json["upload"]["error"].as_str().unwrap().to_string();
    assert!(why.contains("does not know this access key") || why.contains("access denied"), "{why}");

    let missing = site(&ws, &garage.store_toml("caracal", "").replace("s3://evidence/", "s3://no-such-bucket/"));
    let out = snapshot_upload(&ws, &collectors, &missing, &garage.keys, &[]);
    assert_eq!(out.status.code(), Some(6));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let why = json["upload"]["error"].as_str().unwrap().to_string();
    assert!(why.contains("the bucket does not exist") && why.contains("s3://no-such-bucket/"), "{why}");
    for b in ws.bundles() {
        assert_eq!(run(ws.preserve().arg("verify").arg(&b)).status.code(), Some(0));
    }
}

/// The sidecar with a `[store]` on Garage, keeping one bundle, answering `CaracalAuditTamperDetected` with a small
/// snapshot.
fn sidecar_with_store(ws: &Workspace, garage: &Garage) -> support::serve::Sidecar {
    let collectors = collectors_dir(
        ws,
        "sidecar.toml",
        "[[collector]]\nname = \"quick\"\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"echo evidence\"]\n\n\
         [[profile]]\nname = \"audit-tamper\"\nalerts = [\"CaracalAuditTamperDetected\"]\ncollectors = [\"quick\"]\n",
    );
    let toml = format!(
        "[serve.retention]\nmax_bundles = 1\nmin_age = \"0s\"\n\n{}",
        garage.store_toml("sidecar", "max_attempts = 1\nretry_every = \"1s\"\n")
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", garage.keys.id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", garage.keys.secret.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/preserve-test"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/preserve-test"),
    ];
    support::serve::Sidecar::start_env(ws, &collectors, &toml, &[], &env)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sidecar_keeps_every_bundle_whose_upload_is_not_confirmed_and_deletes_it_once_stored() {
    use std::time::Duration;
    use support::serve::*;
    let ws = Workspace::new();
    let mut garage = Garage::start(&ws.path().join("garage"));
    garage.kill();
    let sidecar = sidecar_with_store(&ws, &garage);
    let c = support::serve::client();
    let mut ids = Vec::new();
    for fp in ["f1", "f2"] {
        let (s, b) =
            post(&c, &sidecar.url, &webhook(serde_json::json!([alert("CaracalAuditTamperDetected", fp, &[])]))).await;
        assert_eq!(s, 202, "{b}");
        let id = b["snapshots"][0].as_str().unwrap().to_string();
        sidecar.wait_for_line(
            &format!("snapshot {id}: upload: upload to s3://evidence/sidecar/{id}.tar.zst FAILED"),
            Duration::from_secs(30),
        );
        ids.push(id);
    }
    // Retention keeps one bundle, but neither is stored anywhere else: both stay.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &ids {
        assert!(ws.out().join(format!("{id}.tar.zst")).is_file(), "{id} is the only copy and must be kept");
        let r = upload_record(&ws.out().join(format!("{id}.tar.zst")));
        assert_ne!(r["state"], "confirmed");
    }
    assert!(!sidecar.log().iter().any(|l| l.contains("retention: deleted")), "nothing deleted while not stored");
    let runs = get_json(&c, &format!("{}/snapshots", sidecar.url)).await;
    let shown = runs.to_string();
    assert!(shown.contains("FAILED"), "/snapshots says the upload failed: {shown}");

    // The store comes back: the sidecar's retry stores both, then retention deletes the older local copy.
    garage.restart();
    sidecar.wait_for_line(&format!("retention: deleted {}", ids[0]), Duration::from_secs(60));
    assert!(!ws.out().join(format!("{}.tar.zst", ids[0])).exists());
    assert!(ws.out().join(format!("{}.tar.zst", ids[1])).is_file());
    let client = s3::client(&garage.endpoint(), "garage", &garage.keys);
    // The helpers run a runtime of their own: off this test's.
    let stored = std::thread::spawn(move || s3::keys(&client, BUCKET, "sidecar/")).join().unwrap();
    for id in &ids {
        assert!(stored.contains(&format!("sidecar/{id}.tar.zst")), "{id} stored: {stored:?}");
    }
    assert_eq!(upload_record(&ws.out().join(format!("{}.tar.zst", ids[1])))["state"], "confirmed");
}

#[test]
fn an_encrypted_bundle_is_uploaded_as_its_ciphertext() {
    let ws = Workspace::new();
    let garage = Garage::start(&ws.path().join("garage"));
    let collectors = bulky_evidence(&ws, 8);
    let id = ws.path().join("identity.txt");
    assert!(std::process::Command::new("age-keygen").arg("-o").arg(&id).status().unwrap().success());
    let text = std::fs::read_to_string(&id).unwrap();
    let recipient = text.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap();
    let config = site(&ws, &format!("{}\n[seal]\nrecipients = [\"{recipient}\"]\n", garage.store_toml("enc", "")));
    let out = snapshot_upload(&ws, &collectors, &config, &garage.keys, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bundle = std::fs::read_dir(ws.out())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.zst.age"))
        .expect("an encrypted bundle");
    let record = upload_record(&bundle);
    assert_eq!(record["state"], "confirmed", "{record:#}");
    assert_eq!(record["stored_checksum"], s3::expected_checksum(&bundle, 5 << 20).as_str());
    let name = bundle.file_name().unwrap().to_string_lossy().to_string();
    let client = s3::client(&garage.endpoint(), "garage", &garage.keys);
    let keys = s3::keys(&client, BUCKET, "enc/");
    assert!(keys.contains(&format!("enc/{name}")) && keys.contains(&format!("enc/{name}.sha256")), "{keys:?}");
    assert_eq!(s3::get(&client, BUCKET, &format!("enc/{name}")), std::fs::read(&bundle).unwrap());
}

#[test]
fn the_custody_record_names_the_stored_object_and_goes_with_it() {
    let ws = Workspace::new();
    let garage = Garage::start(&ws.path().join("garage"));
    let collectors = bulky_evidence(&ws, 1);
    let key = ws.path().join("seal_ed25519");
    let st = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).status();
    assert!(st.unwrap().success());
    let config =
        site(&ws, &format!("{}\n[seal]\nsigning_key = \"file:{}\"\n", garage.store_toml("sealed", ""), key.display()));
    let out = snapshot_upload(&ws, &collectors, &config, &garage.keys, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bundle = ws.only_bundle();
    let record = upload_record(&bundle);
    assert_eq!(record["state"], "confirmed", "{record:#}");
    let shown = run(ws.preserve().args(["custody", "show", "--json"]).arg(&bundle));
    assert_eq!(shown.status.code(), Some(0), "the chain is whole: {}", stdout(&shown));
    let chain: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let entries = chain["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{chain:#}");
    let uploaded = &entries[1];
    assert_eq!(uploaded["action"], "uploaded");
    let note = uploaded["note"].as_str().unwrap();
    let name = bundle.file_name().unwrap().to_string_lossy().to_string();
    assert!(note.contains(&format!("s3://{BUCKET}/sealed/{name}")), "{note}");
    assert!(note.contains(record["stored_checksum"].as_str().unwrap()), "{note}");
    // The stored record is the one with the upload's entry in it, and the signature went too.
    let client = s3::client(&garage.endpoint(), "garage", &garage.keys);
    let id = name.trim_end_matches(".tar.zst");
    let stored = s3::get(&client, BUCKET, &format!("sealed/{id}.custody.jsonl"));
    assert_eq!(stored, std::fs::read(bundle.with_file_name(format!("{id}.custody.jsonl"))).unwrap());
    assert!(s3::keys(&client, BUCKET, "sealed/").contains(&format!("sealed/{name}.sig")));
}

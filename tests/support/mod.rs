//! Shared helpers for integration tests: run the real `preserve` binary in an isolated environment, unpack
//! bundles with GNU tar + zstd, and validate them with tools nobody here wrote (sha256sum, bagit.py).
#![allow(dead_code)]

pub mod kube;
pub mod postgres;
pub mod redis;
pub mod s3;
pub mod serve;
pub mod tsa;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// A scratch workspace: HOME, output directory and fixtures live below it, so nothing on the machine is read
/// by accident (no real $CARACAL_HOME, no real Docker directory).
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        std::fs::write(dir.path().join("home").join("fingerprint.key"), format!("{FINGERPRINT_KEY}\n")).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn out(&self) -> PathBuf {
        self.path().join("out")
    }

    /// Writes `content` to `relative` below the workspace, creating directories.
    pub fn write(&self, relative: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path().join(relative);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// A `preserve` command with an environment that points only into this workspace.
    pub fn preserve(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_preserve"));
        for (k, _) in std::env::vars() {
            if k.starts_with("PRESERVE_")
                || ["CARACAL_HOME", "AUDIT_HMAC_KEY", "XDG_DATA_HOME", "KUBECONFIG", "KUBERNETES_SERVICE_HOST"]
                    .contains(&k.as_str())
            {
                c.env_remove(k);
            }
        }
        c.env("HOME", self.path().join("home"));
        c.env("PRESERVE_DOCKER_DIR", self.path().join("docker"));
        c.env("PRESERVE_OUT", self.out());
        c.env("PRESERVE_FINGERPRINT_KEY", self.fingerprint_key_ref());
        c
    }

    /// `file:<path>` of the workspace's copy of [`FINGERPRINT_KEY`], the site key its snapshots run with.
    pub fn fingerprint_key_ref(&self) -> String {
        format!("file:{}", self.path().join("home").join("fingerprint.key").display())
    }

    /// `preserve snapshot -q --collectors DIR`: a quiet snapshot with the test's own collectors; the caller adds
    /// which collectors (`-c`) and anything else.
    pub fn snapshot(&self, collectors: &Path) -> Command {
        let mut c = self.preserve();
        c.args(["snapshot", "-q", "--collectors"]).arg(collectors);
        c
    }

    /// The bundles (`.tar.zst`) in the output directory.
    pub fn bundles(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(self.out()) else { return Vec::new() };
        let mut v: Vec<_> =
            rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".tar.zst")).collect();
        v.sort();
        v
    }

    /// Waits, while `child` (a running snapshot) collects, until the staged artifact `data/<relative>` has grown
    /// past `bytes`: the moment to inject a fault mid-export.
    /// Waits until the staged artifact (a zstd frame, growing as its compressor emits blocks) exceeds `bytes`.
    pub fn wait_for_staged(&self, relative: &str, bytes: u64, child: &mut std::process::Child) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            assert!(child.try_wait().unwrap().is_none(), "preserve ended before the fault could be injected");
            let staged = std::fs::read_dir(self.out()).ok().and_then(|rd| {
                rd.filter_map(Result::ok)
                    .find(|e| e.file_name().to_string_lossy().ends_with(".staging"))
                    .map(|e| e.path())
            });
            if let Some(s) = staged
                && std::fs::metadata(s.join("data").join(relative)).is_ok_and(|m| m.len() > bytes)
            {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the export never got going");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// The parsed `.manifest.json` beside the only bundle.
    pub fn side_manifest(&self) -> serde_json::Value {
        let name = self.only_bundle().file_name().unwrap().to_string_lossy().replace(".tar.zst", ".manifest.json");
        manifest(&self.out().join(name))
    }

    pub fn only_bundle(&self) -> PathBuf {
        let b = self.bundles();
        assert_eq!(b.len(), 1, "expected exactly one bundle in {}: {b:?}", self.out().display());
        b[0].clone()
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run preserve");
    eprintln!(
        "--- {:?} exit {:?}\nstdout:\n{}\nstderr:\n{}",
        cmd.get_args().collect::<Vec<_>>(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Unpacks a bundle with GNU tar and zstd into `into`; returns the bag directory.
pub fn unpack(bundle: &Path, into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    let st = Command::new("tar").arg("--zstd").arg("-xf").arg(bundle).arg("-C").arg(into).status().expect("GNU tar");
    assert!(st.success(), "tar --zstd -xf failed");
    let dirs: Vec<_> = std::fs::read_dir(into).unwrap().filter_map(Result::ok).map(|e| e.path()).collect();
    assert_eq!(dirs.len(), 1, "one top directory expected: {dirs:?}");
    dirs[0].clone()
}

/// Every file below `dir`, recursively, with its content.
pub fn files_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Asserts that no secret is anywhere a run left something: the unpacked bag, every file of the output directory
/// (the archive decompressed too: compressed bytes would hide a secret from a plain search), the run's stdout and
/// stderr.
pub fn assert_no_secret_anywhere(ws: &Workspace, bag: &Path, run: &Output, secrets: &[&str]) {
    let mut everything = files_below(bag);
    everything.extend(files_below(&ws.out()));
    for bundle in ws.bundles() {
        let raw = Command::new("zstd").arg("-dc").arg(&bundle).output().expect("zstd must be installed");
        everything.push((bundle.with_extension("decompressed"), raw.stdout));
    }
    everything.push(("stdout".into(), run.stdout.clone()));
    everything.push(("stderr".into(), run.stderr.clone()));
    for secret in secrets {
        for (path, content) in &everything {
            assert!(!String::from_utf8_lossy(content).contains(secret), "{secret} leaked into {}", path.display());
        }
    }
}

/// All payload text of a bag's collector folder, concatenated.
pub fn collector_text(bag: &Path, collector: &str) -> String {
    files_below(&bag.join("data").join(collector))
        .into_iter()
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .collect::<Vec<_>>()
        .join("")
}

pub fn manifest(bag_or_side: &Path) -> serde_json::Value {
    let p = if bag_or_side.is_dir() { bag_or_side.join("manifest.json") } else { bag_or_side.to_path_buf() };
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The one bundle of a run stopped by a signal while its `slow` collector was writing: it verifies, is partial,
/// the collector is partial with `says` in its error, and what it wrote before the signal (`begun`) is kept.
/// Returns the bag and its manifest.
pub fn assert_interrupted_bundle(ws: &Workspace, says: &str) -> (PathBuf, serde_json::Value) {
    let bundle = ws.only_bundle();
    assert_eq!(run(ws.preserve().arg("verify").arg(&bundle)).status.code(), Some(0), "the partial bundle verifies");
    let bag = unpack(&bundle, &ws.path().join("x"));
    let m = manifest(&bag);
    assert_eq!(m["status"], "partial");
    let slow = collector(&m, "slow");
    assert_eq!(slow["status"], "partial");
    assert!(slow["error"].as_str().unwrap().contains(says), "{slow}");
    assert!(collector_text(&bag, "slow").contains("begun"), "what was collected before the signal is kept");
    (bag, m)
}

/// The site fingerprint key test snapshots run with (`Workspace::preserve` sets `PRESERVE_FINGERPRINT_KEY`), so a
/// test, as the key's holder, can tell which marker a secret got.
pub const FINGERPRINT_KEY: &str = "test-site-fingerprint-key-5f0c2a9e71d84b36";

/// The marker that replaces `secret` in the bundle whose manifest is `m`: `[REDACTED:<fingerprint>]`, the
/// fingerprint computed here with the site key, as its holder would. The bundle must say it was keyed by it.
pub fn marker(m: &serde_json::Value, secret: &str) -> String {
    use hmac::{KeyInit, Mac};
    let key = preserve::redact::FingerprintKey::site(&preserve::config::Secret::new(FINGERPRINT_KEY)).unwrap();
    assert_eq!(m["redaction"]["key"], "site", "a marker can be computed only with the site key: {}", m["redaction"]);
    assert_eq!(m["redaction"]["key_id"].as_str(), key.id().as_deref(), "keyed by the test's site key");
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(FINGERPRINT_KEY.as_bytes()).unwrap();
    mac.update(secret.as_bytes());
    format!("[REDACTED:{}]", hex::encode(&mac.finalize().into_bytes()[..8]))
}

pub fn collector<'a>(manifest: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    manifest["collectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("collector {name} not in manifest"))
}

/// Two small evidence files (an Audit log line repeated, a DLQ entry) and a `file` collector `ev` over them;
/// returns the collectors directory.
pub fn evidence_collector(ws: &Workspace) -> PathBuf {
    ws.write("evidence/audit.log", "{\"msg\":\"tamper: chain HMAC mismatch\",\"chain_seq\":42}\n".repeat(50));
    ws.write("evidence/dlq.jsonl", "{\"id\":\"1732-0\",\"reason\":\"parse\"}\n");
    collectors_dir(
        ws,
        "t.toml",
        &format!(
            "[[collector]]\nname = \"ev\"\nkind = \"file\"\nwindow = false\npaths = [\"{}/evidence/*\"]\n",
            ws.path().display()
        ),
    )
}

/// Writes a collectors directory file and returns the directory.
pub fn collectors_dir(ws: &Workspace, name: &str, toml: &str) -> PathBuf {
    ws.write(&format!("collectors.d/{name}"), toml);
    ws.path().join("collectors.d")
}

/// A CA and a server certificate for `names`, signed by it: (CA PEM, certificate PEM, key PEM).
pub fn certificates(names: &[&str]) -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("preserve test CA for {}", names[0]));
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A TLS acceptor for a PEM certificate and key (from [`certificates`]), with the ring provider.
pub fn tls_acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

/// Serves `router` over TLS on `listener`, each connection on a task of its own, for as long as the runtime runs.
/// A client that refuses the certificate ends its handshake: nothing to serve.
pub async fn serve_tls_on(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

/// A `full` snapshot of the Caracal sandbox at `root` (its `preserve.toml` is `config`), triggered by `alert`, with
/// no site setting inherited from this environment; the bundle's path.
#[allow(dead_code)]
pub fn full_snapshot(root: &Path, config: &Path, alert: &serde_json::Value) -> PathBuf {
    let file = root.join("alert.json");
    std::fs::write(&file, alert.to_string()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_preserve"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PRESERVE_") || k == "CARACAL_HOME" || k == "AUDIT_HMAC_KEY" {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", root.join("home")).args(["snapshot", "-q", "--profile", "full", "--config"]).arg(config);
    cmd.arg("--out").arg(root.join("evidence")).arg("--alert").arg(&file);
    let o = run(&mut cmd);
    let bundle = PathBuf::from(stdout(&o).trim());
    assert!(bundle.is_file(), "no bundle: {}", stderr(&o));
    bundle
}

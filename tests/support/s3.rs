//! Real S3 servers for the storage tests, each started in its own temporary directory on free ports, and an SDK
//! client to look at what they hold. No single server this machine can run enforces everything S3 does, so two:
//! - Garage (`cargo install garage --locked`; scripts/test.sh installs it): checks `x-amz-checksum-sha256` on every
//!   part and object and refuses a wrong one; ignores `If-None-Match` and has no Object Lock.
//! - moto's S3 server (PyPI `moto[server]`): enforces Object Lock retention and legal hold and `If-None-Match`;
//!   checks no checksum.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aws_sdk_s3::Client;

pub const BUCKET: &str = "evidence";

/// Credentials of a store.
#[derive(Clone)]
pub struct Keys {
    pub id: String,
    pub secret: String,
}

fn free_port() -> u16 {
    super::redis::free_port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finds a program: `$VAR`, then PATH, then cargo's bin directory.
fn program(var: &str, name: &str, install: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")))
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| panic!("`{name}` is not installed: {install} (scripts/test.sh does), or set {var}"))
}

/// A single-node Garage: one zone, one bucket (`evidence`), one key allowed to read and write it.
pub struct Garage {
    pub dir: PathBuf,
    pub port: u16,
    pub keys: Keys,
    bin: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl Garage {
    pub fn start(dir: &Path) -> Self {
        let bin = program("GARAGE_BIN", "garage", "cargo install garage --locked");
        std::fs::create_dir_all(dir).unwrap();
        let (port, rpc, admin) = (free_port(), free_port(), free_port());
        let secret: String = (0..32).map(|i| format!("{:02x}", (i * 37 + port as usize) % 256)).collect();
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{port}\"\nroot_domain = \".s3.garage\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"test-admin-token\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let mut g = Self {
            dir: dir.to_path_buf(),
            port,
            keys: Keys { id: String::new(), secret: String::new() },
            bin,
            config,
            child: None,
        };
        g.run_server();
        let status = g.cli(&["status"]);
        let node = status
            .lines()
            .find_map(|l| {
                let id = l.split_whitespace().next()?;
                (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
            })
            .unwrap_or_else(|| panic!("no node id in `garage status`:\n{status}"));
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "10G", &node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&["bucket", "create", BUCKET]);
        let key = g.cli(&["key", "create", "preserve-test"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_string()))
                .unwrap_or_else(|| panic!("no `{name}` in `garage key create`:\n{key}"))
        };
        g.keys = Keys { id: field("Key ID"), secret: field("Secret key") };
        g.cli(&["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "preserve-test"]);
        g
    }

    fn run_server(&mut self) {
        let log = std::fs::File::create(self.dir.join("garage.log")).unwrap();
        let mut child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("garage server");
        wait_for_port(self.port, &mut child, "garage");
        self.child = Some(child);
    }

    /// Runs the garage CLI against this node; panics with its output when it fails (retried while the node starts).
    pub fn cli(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&self.bin).arg("-c").arg(&self.config).args(args).output().expect("garage");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            if out.status.success() {
                return text;
            }
            assert!(Instant::now() < deadline, "garage {args:?} failed:\n{text}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.run_server();
        // The node is ready when the CLI can list its buckets.
        self.cli(&["bucket", "list"]);
    }

    /// `[store]` for this server.
    pub fn store_toml(&self, prefix: &str, extra: &str) -> String {
        format!(
            "[store]\nurl = \"s3://{BUCKET}/{prefix}\"\nendpoint = \"{}\"\nregion = \"garage\"\npart_size = \"5MiB\"\n{extra}",
            self.endpoint()
        )
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
    }
}

/// moto's S3 server, with one bucket with Object Lock (`evidence-locked`) and one without (`evidence-plain`).
pub struct Moto {
    pub port: u16,
    pub keys: Keys,
    child: Child,
}

pub const LOCKED: &str = "evidence-locked";
pub const PLAIN: &str = "evidence-plain";

impl Moto {
    pub fn start(dir: &Path) -> Self {
        let bin = program("MOTO_SERVER_BIN", "moto_server", "pip install 'moto[server]'");
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("moto.log")).unwrap();
        let mut child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("moto_server");
        wait_for_port(port, &mut child, "moto_server");
        let m = Self {
            port,
            keys: Keys { id: "moto-test-key".into(), secret: "moto-test-secret-0123456789".into() },
            child,
        };
        let c = m.client();
        block_on(async {
            c.create_bucket().bucket(LOCKED).object_lock_enabled_for_bucket(true).send().await.unwrap();
            c.create_bucket().bucket(PLAIN).send().await.unwrap();
        });
        m
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> Client {
        client(&self.endpoint(), "us-east-1", &self.keys)
    }

    pub fn store_toml(&self, bucket: &str, extra: &str) -> String {
        format!(
            "[store]\nurl = \"s3://{bucket}/caracal\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\npart_size = \"5MiB\"\n{extra}",
            self.endpoint()
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SDK client for a test server, path-style, with static keys.
pub fn client(endpoint: &str, region: &str, keys: &Keys) -> Client {
    let creds = aws_sdk_s3::config::Credentials::new(&keys.id, &keys.secret, None, None, "test");
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .http_client(http)
        .credentials_provider(creds)
        .region(aws_sdk_s3::config::Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Every key in `bucket` under `prefix`.
pub fn keys(c: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    block_on(async {
        let out = c.list_objects_v2().bucket(bucket).prefix(prefix).send().await.unwrap();
        out.contents().iter().filter_map(|o| o.key().map(String::from)).collect()
    })
}

/// The multipart uploads `bucket` holds that were never completed or aborted.
pub fn open_uploads(c: &Client, bucket: &str) -> Vec<String> {
    block_on(async {
        let out = c.list_multipart_uploads().bucket(bucket).send().await.unwrap();
        out.uploads().iter().filter_map(|u| u.key().map(String::from)).collect()
    })
}

/// How many parts the open multipart uploads of `bucket` hold.
pub fn stored_parts(c: &Client, bucket: &str) -> usize {
    block_on(async {
        let out = c.list_multipart_uploads().bucket(bucket).send().await.unwrap();
        let mut n = 0;
        for u in out.uploads() {
            let (Some(key), Some(id)) = (u.key(), u.upload_id()) else { continue };
            if let Ok(parts) = c.list_parts().bucket(bucket).key(key).upload_id(id).send().await {
                n += parts.parts().len();
            }
        }
        n
    })
}

/// An object's bytes.
pub fn get(c: &Client, bucket: &str, key: &str) -> Vec<u8> {
    block_on(async {
        let out = c.get_object().bucket(bucket).key(key).send().await.unwrap();
        out.body.collect().await.unwrap().into_bytes().to_vec()
    })
}

/// S3's SHA-256 checksum of a file uploaded in parts of `part_size`, computed here from the file: the SHA-256
/// itself (base64) for one part, else the SHA-256 of the parts' SHA-256s with `-<parts>`.
pub fn expected_checksum(file: &Path, part_size: usize) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(file).unwrap();
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    if bytes.len() <= part_size {
        return b64(&Sha256::digest(&bytes));
    }
    let mut all = Sha256::new();
    let mut n = 0;
    for chunk in bytes.chunks(part_size) {
        all.update(Sha256::digest(chunk));
        n += 1;
    }
    format!("{}-{n}", b64(&all.finalize()))
}

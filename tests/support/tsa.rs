//! A local RFC 3161 time-stamp authority for tests: a test CA and a TSA certificate made with `openssl`, and a
//! small HTTP handler in front of the real `openssl ts -reply`. It can also misbehave: hang past the client's
//! timeout, or answer with a token for another digest.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers with a real token over the digest asked for.
    Honest,
    /// Reads the request and never answers.
    Hang,
    /// Answers with a real, well-signed token, for another digest.
    OtherDigest,
}

pub struct Tsa {
    pub dir: PathBuf,
    pub url: String,
    pub requests: Arc<AtomicUsize>,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Makes `ca.crt`/`ca.key`, `tsa.crt`/`tsa.key` (extended key usage timeStamping, signed by the CA) and the
/// `openssl ts` configuration in `dir`.
pub fn make_pki(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=preserve test TSA CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "tsa.key",
            "-out",
            "tsa.csr",
            "-subj",
            "/CN=preserve test TSA",
        ],
        dir,
    );
    std::fs::write(
        dir.join("tsa.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=critical,timeStamping\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "tsa.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "tsa.crt",
            "-days",
            "30",
            "-extfile",
            "tsa.ext",
        ],
        dir,
    );
    std::fs::write(dir.join("tsaserial"), "01\n").unwrap();
    std::fs::write(
        dir.join("ts.cnf"),
        format!(
            "[ tsa ]\ndefault_tsa = tsa_config1\n[ tsa_config1 ]\ndir = {}\nserial = $dir/tsaserial\n\
             crypto_device = builtin\nsigner_cert = $dir/tsa.crt\ncerts = $dir/ca.crt\nsigner_key = $dir/tsa.key\n\
             signer_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256, sha384, sha512\n\
             accuracy = secs:1\nclock_precision_digits = 0\nordering = no\ntsa_name = yes\n\
             ess_cert_id_chain = no\ness_cert_id_alg = sha256\n",
            dir.display()
        ),
    )
    .unwrap();
}

impl Tsa {
    /// Starts the TSA on a free loopback port, its PKI in `dir`.
    pub fn start(dir: &Path, behaviour: Behaviour) -> Self {
        make_pki(dir);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/tsr", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let (d, r) = (dir.to_path_buf(), requests.clone());
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                r.fetch_add(1, Ordering::SeqCst);
                let d = d.clone();
                std::thread::spawn(move || answer(stream, &d, behaviour, n));
            }
        });
        Self { dir: dir.to_path_buf(), url, requests }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

fn answer(mut stream: TcpStream, dir: &Path, behaviour: Behaviour, n: usize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut query = vec![0u8; length];
    if reader.read_exact(&mut query).is_err() {
        return;
    }
    if behaviour == Behaviour::Hang {
        std::thread::sleep(std::time::Duration::from_secs(120));
        return;
    }
    let (q, r) = (dir.join(format!("q{n}.tsq")), dir.join(format!("r{n}.tsr")));
    if behaviour == Behaviour::OtherDigest {
        let other = "ab".repeat(32);
        openssl(&["ts", "-query", "-digest", &other, "-sha256", "-cert", "-out", q.to_str().unwrap()], dir);
    } else {
        std::fs::write(&q, &query).unwrap();
    }
    openssl(
        &["ts", "-reply", "-config", "ts.cnf", "-queryfile", q.to_str().unwrap(), "-out", r.to_str().unwrap()],
        dir,
    );
    let body = std::fs::read(&r).unwrap();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/timestamp-reply\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
}

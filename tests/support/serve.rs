//! `preserve serve` under test, and a real Alertmanager (Debian's `prometheus-alertmanager`) to post to it.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::Workspace;

pub const TOKEN: &str = "t0ken-for-the-sidecar-under-test";

/// A running `preserve serve`, listening on a port of its own choosing; killed when dropped.
pub struct Sidecar {
    pub child: Child,
    pub url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sidecar {
    /// Starts `preserve serve` with `serve_toml` as the body of its site config's `[serve]` (the token is added,
    /// as a `file:` reference) and the test's collectors directory.
    pub fn start(ws: &Workspace, collectors: &Path, serve_toml: &str) -> Self {
        Self::start_with(ws, collectors, serve_toml, &[])
    }

    /// [`Sidecar::start`] with more arguments to `preserve serve`.
    pub fn start_with(ws: &Workspace, collectors: &Path, serve_toml: &str, args: &[&str]) -> Self {
        Self::start_env(ws, collectors, serve_toml, args, &[])
    }

    /// [`Sidecar::start_with`] with more environment variables.
    pub fn start_env(ws: &Workspace, collectors: &Path, serve_toml: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let token = ws.write("secrets/serve-token", format!("{TOKEN}\n"));
        let config =
            ws.write("preserve.toml", format!("[serve]\ntoken = \"file:{}\"\n{serve_toml}\n", token.display()));
        let mut child = ws
            .preserve()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--collectors")
            .arg(collectors)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start preserve serve");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("serve| {line}");
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(30)).expect("preserve serve says where it listens");
        Self { child, url, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/<pid>/status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_line(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "no log line with `{needle}` within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for tests (plain HTTP; rustls needs its provider chosen all the same).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap()
}

/// JSON bodies without reqwest's `json` feature (preserve itself never sends JSON).
pub trait JsonBody {
    fn json_body(self, v: &serde_json::Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &serde_json::Value) -> Self {
        self.header("content-type", "application/json").body(v.to_string())
    }
}

/// The JSON body of a response (`null` when it is not JSON).
pub async fn json_of(r: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or_default()
}

/// A webhook payload of version 4 carrying `alerts`.
pub fn webhook(alerts: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"test\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "preserve",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts,
    })
}

/// One firing alert as Alertmanager sends it.
pub fn alert(name: &str, fingerprint: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut labels = serde_json::json!({ "alertname": name, "severity": "critical" });
    for (k, v) in extra {
        labels[*k] = (*v).into();
    }
    serde_json::json!({
        "status": "firing",
        "labels": labels,
        "annotations": { "summary": format!("{name} fired") },
        "startsAt": "2026-11-29T01:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": fingerprint,
    })
}

/// Posts a payload to the sidecar with the right token; returns status and body.
pub async fn post(c: &reqwest::Client, sidecar_url: &str, payload: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = c
        .post(format!("{sidecar_url}/alertmanager"))
        .bearer_auth(TOKEN)
        .json_body(payload)
        .send()
        .await
        .expect("webhook answered");
    let status = r.status().as_u16();
    (status, json_of(r).await)
}

pub async fn get_json(c: &reqwest::Client, url: &str) -> serde_json::Value {
    json_of(c.get(url).send().await.unwrap()).await
}

/// The value of an unlabelled metric (or the sum over its labels) in the sidecar's `/metrics`.
pub async fn metric(c: &reqwest::Client, sidecar_url: &str, name: &str) -> f64 {
    let text = c.get(format!("{sidecar_url}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A free TCP port on 127.0.0.1 (for servers that cannot be told to choose their own).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real Alertmanager whose only receiver is the webhook at `webhook_url`, with the bearer token from a file.
pub struct Alertmanager {
    child: Child,
    pub url: String,
}

impl Alertmanager {
    pub fn start(ws: &Workspace, webhook_url: &str) -> Self {
        let token = ws.path().join("secrets/serve-token");
        let config = ws.write(
            "alertmanager.yml",
            format!(
                "route:\n  receiver: preserve\n  group_by: ['alertname']\n  group_wait: 200ms\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: preserve\n    webhook_configs:\n      - url: {webhook_url}/alertmanager\n        send_resolved: true\n\
                 \x20       http_config:\n          authorization:\n            type: Bearer\n            credentials_file: {}\n",
                token.display()
            ),
        );
        let port = free_port();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", ws.path().join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian package prometheus-alertmanager) must be installed");
        let am = Self { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "alertmanager did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        am
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! `preserve serve` as an attacker without the token meets it (issue 14, item 1 and the `/readyz` part of item 2):
//! slow clients dribbling headers or bodies and idle kept-alive connections are cut off while real webhooks and
//! probes are still answered; the memory of answered alerts stays within its cap; a refused alert is taken when
//! sent again; the unauthenticated `GET /snapshots` is bounded and redacted; `/readyz` writes through no planted
//! link. Every client here connects to 127.0.0.1, and every loop ends by itself.

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use support::{serve::*, *};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The longest any hostile client of these tests keeps trying: past it, it gives up and reports it was never cut.
const CLIENT_CAP: Duration = Duration::from_secs(30);

/// Profiles for the alerts these tests send: `fast-<n>` takes a snapshot of one quick command, `slow` one that
/// takes `secs`.
fn profiles(ws: &Workspace, secs: u32) -> std::path::PathBuf {
    let mut toml = format!(
        r#"
[[collector]]
name = "quick"
kind = "command"
argv = ["sh", "-c", "echo collected"]

[[collector]]
name = "slow"
kind = "command"
timeout = "5m"
argv = ["sh", "-c", "sleep {secs}; echo done"]

[[profile]]
name = "slow"
alerts = ["SlowAlert"]
collectors = ["slow"]
"#
    );
    for n in 1..=5 {
        toml.push_str(&format!(
            "\n[[profile]]\nname = \"fast-{n}\"\nalerts = [\"FastAlert{n}\"]\ncollectors = [\"quick\"]\n"
        ));
    }
    collectors_dir(ws, "hostile.toml", &toml)
}

/// How a hostile client behaves once connected.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Slow {
    /// Sends a header line that never ends, a byte at a time.
    Headers,
    /// Sends complete headers announcing a large body (no token), then the body a byte at a time.
    Body,
    /// Sends one complete request, reads the answer, then keeps the connection open and says nothing.
    Idle,
}

/// Connects and behaves as `how` until the server closes the connection; `true` when it did, `false` when the
/// client gave up at [`CLIENT_CAP`].
async fn slow_client(addr: String, how: Slow) -> bool {
    let Ok(mut s) = TcpStream::connect(&addr).await else { return true };
    let head = match how {
        Slow::Headers => "POST /alertmanager HTTP/1.1\r\nHost: preserve\r\nX-Dribble: ".to_string(),
        Slow::Body => "POST /alertmanager HTTP/1.1\r\nHost: preserve\r\nContent-Type: application/json\r\n\
                       Content-Length: 1000000\r\n\r\n"
            .to_string(),
        Slow::Idle => "GET /healthz HTTP/1.1\r\nHost: preserve\r\n\r\n".to_string(),
    };
    if s.write_all(head.as_bytes()).await.is_err() {
        return true;
    }
    let deadline = tokio::time::Instant::now() + CLIENT_CAP;
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return false,
            read = s.read(&mut buf) => match read {
                // An answer (the idle client's 200, a 401 or 408) may come first; the close is what counts.
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(250)), if how != Slow::Idle => {
                if s.write_all(b"a").await.is_err() {
                    return true;
                }
            }
        }
    }
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_and_real_webhooks_are_still_answered() {
    let ws = Workspace::new();
    let dir = profiles(&ws, 0);
    // All from one address here, the real clients too: the share of one address is the whole.
    let sidecar = Sidecar::start(
        &ws,
        &dir,
        "max_connections = 20\nmax_connections_per_client = 20\nheader_timeout = \"1s\"\nbody_timeout = \"2s\"\n",
    );
    let addr = sidecar.url.trim_start_matches("http://").to_string();
    let c = client();
    assert_eq!(c.get(format!("{}/healthz", sidecar.url)).send().await.unwrap().status(), 200);
    let baseline = open_fds(sidecar.pid());

    // Five times as many hostile connections as the sidecar serves at once, of the three kinds.
    let kinds = [Slow::Headers, Slow::Body, Slow::Idle];
    let attackers: Vec<_> =
        (0..100).map(|i| (kinds[i % 3], tokio::spawn(slow_client(addr.clone(), kinds[i % 3])))).collect();
    let mut most_fds = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        most_fds = most_fds.max(open_fds(sidecar.pid()));
    }
    assert!(
        most_fds <= baseline + 20,
        "the sidecar held {most_fds} descriptors with 100 slow clients; {baseline} before, and 20 connections at most"
    );

    // While they are held: the real Alertmanager and the kubelet are answered (after the slow ones ahead of them
    // in the backlog are cut off).
    let patient = reqwest::Client::builder().timeout(Duration::from_secs(25)).build().unwrap();
    let payload = webhook(serde_json::json!([alert("FastAlert1", "w1", &[])]));
    let r = patient
        .post(format!("{}/alertmanager", sidecar.url))
        .bearer_auth(TOKEN)
        .json_body(&payload)
        .send()
        .await
        .expect("the webhook is answered while slow clients hold connections");
    assert_eq!(r.status().as_u16(), 202);
    let r = patient.get(format!("{}/healthz", sidecar.url)).send().await.expect("/healthz is answered");
    assert_eq!(r.status().as_u16(), 200);
    let open = metric(&patient, &sidecar.url, "preserve_http_connections_open").await;
    assert!((1.0..=20.0).contains(&open), "open connections {open}, at most 20");

    for (how, a) in attackers {
        assert!(a.await.unwrap(), "a {how:?} client was never cut off by the server");
    }
}

/// One host opening connections and saying nothing holds only its share of the places: another is answered at
/// once, not after the idle ones time out (`header_timeout` is 20 s here, the patience of the real client 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_place() {
    let ws = Workspace::new();
    let dir = profiles(&ws, 0);
    let sidecar =
        Sidecar::start(&ws, &dir, "max_connections = 20\nmax_connections_per_client = 5\nheader_timeout = \"20s\"\n");
    let addr: std::net::SocketAddr = sidecar.url.trim_start_matches("http://").parse().unwrap();
    // The hostile host: 40 connections from 127.0.0.3 that never send a byte.
    let mut held = Vec::new();
    for _ in 0..40 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        held.push(socket.connect(addr).await.unwrap());
    }
    // Those past its share are closed at once, told why.
    let mut closed = 0;
    let mut told = 0;
    for s in &mut held {
        let mut buf = [0u8; 128];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            closed += 1;
            told += usize::from(buf[..n].starts_with(b"HTTP/1.1 503"));
        }
    }
    assert_eq!(closed, 35, "five kept, the rest closed");
    assert!(told > 0, "those closed are answered 503");
    let c = client();
    let r = tokio::time::timeout(Duration::from_secs(5), c.get(format!("{}/healthz", sidecar.url)).send())
        .await
        .expect("another client is answered at once")
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let open = metric(&c, &sidecar.url, "preserve_http_connections_open").await;
    assert!(open <= 7.0, "the hostile host holds five places: {open} open");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_cut_off() {
    let ws = Workspace::new();
    let dir = profiles(&ws, 0);
    let sidecar = Sidecar::start(&ws, &dir, "write_timeout = \"1s\"\n");
    let addr: std::net::SocketAddr = sidecar.url.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let (mut from_server, mut to_server) = socket.connect(addr).await.unwrap().into_split();
    // Thousands of requests pipelined in one go, far more answers than the socket buffers hold, none read.
    let asked = 3000;
    let asking = tokio::spawn(async move {
        let _ = to_server.write_all("GET /metrics HTTP/1.1\r\nHost: preserve\r\n\r\n".repeat(asked).as_bytes()).await;
        to_server
    });

    // The sidecar gives up on it: only the connection asking this is left open.
    let c = client();
    let deadline = Instant::now() + CLIENT_CAP;
    while metric(&c, &sidecar.url, "preserve_http_connections_open").await > 1.0 {
        assert!(Instant::now() < deadline, "a client that never reads held its connection for {CLIENT_CAP:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answers = Vec::new();
    let _ = tokio::time::timeout(CLIENT_CAP, from_server.read_to_end(&mut answers)).await;
    let got = answers.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
    assert!(got < asked, "all {asked} answers were kept for a client that did not read them");
    drop(asking);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_remembered_for_deduplication_stay_within_the_cap() {
    let ws = Workspace::new();
    let dir = profiles(&ws, 10);
    let sidecar = Sidecar::start(&ws, &dir, "remembered_alerts = 5\n");
    let c = client();
    // An alert storm: twelve distinct alerts, one at a time, each joining the one slow snapshot.
    for i in 0..12 {
        let (s, b) =
            post(&c, &sidecar.url, &webhook(serde_json::json!([alert("SlowAlert", &format!("a{i}"), &[])]))).await;
        assert_eq!(s, 202, "{b}");
        let remembered = metric(&c, &sidecar.url, "preserve_alerts_remembered").await;
        assert_eq!(remembered, f64::from(i + 1).min(5.0), "after {} distinct alerts", i + 1);
    }
    // The newest are still answered; the oldest was forgotten and is taken again (it joins the running snapshot).
    let (_, b) = post(&c, &sidecar.url, &webhook(serde_json::json!([alert("SlowAlert", "a11", &[])]))).await;
    assert_eq!(b["alerts"][0]["disposition"], "deduplicated", "{b}");
    let (_, b) = post(&c, &sidecar.url, &webhook(serde_json::json!([alert("SlowAlert", "a0", &[])]))).await;
    let again = b["alerts"][0]["disposition"].as_str();
    assert!(matches!(again, Some("attached" | "queued")), "{b}");
    assert_eq!(metric(&c, &sidecar.url, "preserve_alerts_remembered").await, 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_refused_for_a_full_queue_is_taken_when_sent_again() {
    let ws = Workspace::new();
    let dir = profiles(&ws, 2);
    let sidecar = Sidecar::start(&ws, &dir, "queue = 1\n");
    let c = client();
    let send = |name: &str, fp: &str| webhook(serde_json::json!([alert(name, fp, &[])]));
    assert_eq!(post(&c, &sidecar.url, &send("SlowAlert", "s1")).await.0, 202);
    sidecar.wait_for_line("collector slow: started", Duration::from_secs(10));
    assert_eq!(post(&c, &sidecar.url, &send("FastAlert1", "f1")).await.0, 202, "waits in the one place");
    let (s, b) = post(&c, &sidecar.url, &send("FastAlert2", "f2")).await;
    assert_eq!((s, b["alerts"][0]["disposition"].as_str()), (503, Some("rejected")), "{b}");

    // Alertmanager retries; once the queue has room, the same alert takes its snapshot.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&c, &sidecar.url, "preserve_queue_depth").await > 0.0 {
        assert!(Instant::now() < deadline, "the queue never emptied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, b) = post(&c, &sidecar.url, &send("FastAlert2", "f2")).await;
    assert_eq!((s, b["alerts"][0]["disposition"].as_str()), (202, Some("queued")), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_lists_few_runs_and_shows_labels_redacted() {
    let ws = Workspace::new();
    // A secret of Caracal's Compose install, which every bundle redacts.
    let redis_password = "Zq7-redis-pa55word-of-the-site";
    ws.write("home/.local/share/caracal/secrets/redisPassword", redis_password);
    let dir = profiles(&ws, 0);
    let sidecar = Sidecar::start(&ws, &dir, "listed_snapshots = 3\nlisted_alerts = 2\n");
    let c = client();

    // Four runs of other profiles, then the newest: four alerts, the first with secrets in its labels.
    for n in 2..=5 {
        let (s, _) =
            post(&c, &sidecar.url, &webhook(serde_json::json!([alert(&format!("FastAlert{n}"), "f", &[])]))).await;
        assert_eq!(s, 202);
    }
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg";
    let bearer = "b7f3c1d9e5a2468f0b7f3c1d9e5a2468";
    let leaky = alert(
        "FastAlert1",
        "leaky",
        &[
            ("detail", &format!("redis AUTH failed with {redis_password}")),
            ("request", &format!("curl -H 'Authorization: Bearer {bearer}' http://api:3000/v1/zones")),
            ("session", jwt),
        ],
    );
    let alerts: Vec<_> =
        std::iter::once(leaky).chain((0..3).map(|i| alert("FastAlert1", &format!("more{i}"), &[]))).collect();
    let (s, b) = post(&c, &sidecar.url, &webhook(serde_json::Value::Array(alerts))).await;
    assert_eq!(s, 202, "{b}");
    let id = b["snapshots"][0].as_str().unwrap().to_string();

    let text = c.get(format!("{}/snapshots", sidecar.url)).send().await.unwrap().text().await.unwrap();
    for secret in [redis_password, bearer, jwt] {
        assert!(!text.contains(secret), "GET /snapshots shows a secret: {text}");
    }
    let listed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let runs = listed["snapshots"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "five runs, three listed: {text}");
    assert_eq!(runs[0]["id"], id.as_str(), "newest first");
    assert_eq!(runs[0]["alerts"].as_array().unwrap().len(), 2, "{}", runs[0]);
    assert_eq!(runs[0]["alerts_total"], 4);
    let labels = &runs[0]["alerts"][0]["labels"];
    assert!(labels["detail"].as_str().unwrap().contains("[REDACTED:"), "{labels}");
    assert!(labels["request"].as_str().unwrap().contains("[REDACTED:"), "{labels}");
    assert!(labels["session"].as_str().unwrap().starts_with("[REDACTED:"), "{labels}");
    assert_eq!(labels["alertname"], "FastAlert1", "evidence that is no secret stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_cuts_what_one_alert_shows() {
    let ws = Workspace::new();
    let dir = profiles(&ws, 0);
    let sidecar = Sidecar::start(&ws, &dir, "");
    let c = client();
    let mut big = alert("FastAlert1", "big", &[("huge", &"x".repeat(10_000))]);
    for n in 0..40 {
        big["labels"][format!("extra_{n:02}")] = "v".into();
    }
    let (_, b) = post(&c, &sidecar.url, &webhook(serde_json::json!([big]))).await;
    let id = b["snapshots"][0].as_str().unwrap().to_string();
    let listed = get_json(&c, &format!("{}/snapshots", sidecar.url)).await;
    let run = listed["snapshots"].as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).unwrap();
    let shown = &run["alerts"][0];
    assert_eq!(shown["labels"].as_object().unwrap().len(), 32, "{shown}");
    assert_eq!(shown["labels_omitted"], 43 - 32);
    assert!(run.to_string().len() < 32 * 2 * 300, "one alert shows a few KiB at most: {}", run.to_string().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_writes_through_no_link_planted_in_the_output_directory() {
    let ws = Workspace::new();
    let dir = profiles(&ws, 0);
    let victim = ws.write("elsewhere/victim.conf", "root's file, not preserve's\n");
    let sidecar = Sidecar::start(&ws, &dir, "");
    // The attacker can write to the output directory and knows the sidecar's pid (the old probe's name).
    std::fs::create_dir_all(ws.out()).unwrap();
    let planted = ws.out().join(format!(".preserve-ready-{}", sidecar.pid()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let c = client();
    for _ in 0..3 {
        let r = c.get(format!("{}/readyz", sidecar.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file, not preserve's\n", "the victim is untouched");
    assert!(planted.symlink_metadata().unwrap().file_type().is_symlink(), "the planted link is left as it was");
    let left: Vec<_> = std::fs::read_dir(ws.out()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "the probe leaves no file behind: {left:?}");
}

/// A queued snapshot's id is public (the webhook's answer, `GET /snapshots`), so a neighbour can take the names it
/// will use before it starts: the old staging directory's name and the bundle's own name, as a directory a rename
/// cannot replace. The snapshot still runs, and its finished archive is kept and named, never deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_taken_in_advance_neither_stop_a_snapshot_nor_cost_its_archive() {
    let ws = Workspace::new();
    let dir = profiles(&ws, 2);
    let sidecar = Sidecar::start(&ws, &dir, "");
    let c = client();
    let send = |name: &str, fp: &str| webhook(serde_json::json!([alert(name, fp, &[])]));
    assert_eq!(post(&c, &sidecar.url, &send("SlowAlert", "s1")).await.0, 202);
    sidecar.wait_for_line("collector slow: started", Duration::from_secs(10));
    let (s, b) = post(&c, &sidecar.url, &send("FastAlert1", "f1")).await;
    assert_eq!(s, 202, "{b}");
    let id = b["snapshots"][0].as_str().unwrap().to_string();
    std::fs::create_dir(ws.out().join(format!(".{id}.staging"))).unwrap();
    let squatted = ws.out().join(format!("{id}.tar.zst"));
    std::fs::create_dir(&squatted).unwrap();
    std::fs::write(squatted.join("mine"), "the neighbour's").unwrap();

    let line = sidecar.wait_for_line(&format!("snapshot {id} failed"), Duration::from_secs(30));
    assert!(line.contains("complete and kept at"), "{line}");
    let kept = std::path::PathBuf::from(line.split("complete and kept at ").nth(1).unwrap().split(';').next().unwrap());
    assert!(kept.starts_with(ws.out()) && kept.is_file(), "{line}");
    let staging = kept.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
    assert_ne!(staging, format!(".{id}.staging"), "the run made its own staging directory");
    // The kept archive is the whole bundle: it decompresses and holds the bag with its tag files.
    let listed = Command::new("sh").arg("-c").arg(format!("zstd -dc '{}' | tar -t", kept.display())).output().unwrap();
    let names = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success() && names.contains(&format!("{id}/tagmanifest-sha256.txt")), "{names}");
    assert_eq!(
        std::fs::read_to_string(squatted.join("mine")).unwrap(),
        "the neighbour's",
        "nothing of theirs is touched"
    );
}

/// The sidecar checks at start what its rules' profiles will need (`preserve check`) and shows it on `/readyz`
/// without ever making itself unready for it: here a collector whose program is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_shows_what_the_check_at_start_found() {
    let ws = Workspace::new();
    let dir = collectors_dir(
        &ws,
        "missing.toml",
        "[[collector]]\nname = \"absent-tool\"\nkind = \"command\"\nargv = [\"no-such-program-anywhere\"]\n\n\
         [[collector]]\nname = \"present-tool\"\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"true\"]\n\n\
         [[profile]]\nname = \"needs-tools\"\nalerts = [\"ToolAlert\"]\ncollectors = [\"absent-tool\", \"present-tool\"]\n",
    );
    let sidecar = Sidecar::start(&ws, &dir, "");
    let logged = sidecar.wait_for_line("check: collector absent-tool cannot run", Duration::from_secs(20));
    assert!(logged.contains("no-such-program-anywhere` is not installed"), "{logged}");
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let r = c.get(format!("{}/readyz", sidecar.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "a collector that cannot run never makes the sidecar unready");
        let body = r.text().await.unwrap();
        if !body.contains("still running") {
            break body;
        }
        assert!(Instant::now() < deadline, "the check never finished: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(body.lines().any(|l| l.starts_with("check: NO") && l.contains("absent-tool")), "{body}");
    assert!(body.lines().any(|l| l.starts_with("check: ok") && l.contains("present-tool")), "{body}");
}

//! Caracal on Kubernetes may run Redis as a cluster: streams and keys live on different masters. A snapshot must
//! find and export all of them, each read from the master that owns it.

mod support;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{redis::RedisServer, *};

#[test]
fn a_three_master_cluster_is_exported_completely() {
    let ws = Workspace::new();
    let nodes: Vec<RedisServer> =
        (0..3).map(|i| RedisServer::start_cluster_node(&ws.path().join(format!("node{i}")))).collect();
    let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let st = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "redis-cli --cluster create");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().all(|n| n.cli(&["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok"))) {
        assert!(Instant::now() < deadline, "cluster did not become ok");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Streams and keys spread over the slots (and so over the masters), written through cluster redirects.
    let mut script = String::new();
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for s in 0..12 {
        let key = format!("caracal.cluster.s{s}");
        for e in 0..=s {
            script.push_str(&format!("XADD {key} * n {e}\n"));
        }
        want.insert(key, s + 1);
    }
    for k in 0..30 {
        script.push_str(&format!("SET audit:jti:k{k} app-{k} EX 900\n"));
    }
    let mut child = Command::new("redis-cli")
        .args(["-c", "-p", &nodes[0].port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let owners: std::collections::BTreeSet<u16> = want
        .keys()
        .filter_map(|k| {
            nodes.iter().find(|n| n.cli(&["EXISTS", k]).is_ok_and(|o| o.trim() == "(integer) 1")).map(|n| n.port)
        })
        .collect();
    assert!(owners.len() > 1, "the streams must live on more than one master for this test to mean anything");

    let dir = collectors_dir(
        &ws,
        "r.toml",
        "[[collector]]\nname = \"rc\"\nkind = \"redis\"\nstreams = [\"caracal.*\"]\nkeys = [{ pattern = \"audit:jti:*\" }]\n",
    );
    let out = run(ws.snapshot(&dir).args(["-c", "rc"]).env("PRESERVE_REDIS_URL", format!("redis://{}/0", addrs[1])));
    assert_eq!(out.status.code(), Some(0));
    let bag = unpack(&ws.only_bundle(), &ws.path().join("x"));
    let m = manifest(&bag);
    let c = collector(&m, "rc");
    assert_eq!(c["details"]["cluster"], true);
    assert_eq!(c["details"]["nodes"].as_array().unwrap().len(), 3);
    let mut got = BTreeMap::new();
    for s in c["details"]["streams"].as_array().unwrap() {
        got.insert(s["key"].as_str().unwrap().to_string(), s["exported"].as_u64().unwrap() as usize);
        let lines =
            std::fs::read_to_string(bag.join(format!("data/rc/streams/{}/entries.jsonl", s["key"].as_str().unwrap())))
                .unwrap();
        assert_eq!(lines.lines().count(), s["exported"].as_u64().unwrap() as usize);
    }
    assert_eq!(got, want, "every stream, from its own master, completely");
    // The family's file is named after its pattern (made safe): the only .jsonl in keys/.
    let family = std::fs::read_dir(bag.join("data/rc/keys"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let keys = std::fs::read_to_string(family).unwrap();
    assert_eq!(keys.lines().count(), 30, "keys from every master");
    for n in &nodes {
        assert!(bag.join(format!("data/rc/server/127.0.0.1:{}/info.txt", n.port)).exists(), "INFO of every master");
    }
}

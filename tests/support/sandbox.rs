//! The Caracal sandbox: a small Caracal Compose host in a temporary directory, for the profile tests and the README's
//! quickstart. A real `redis-server` with Caracal's streams, groups, pending entries, DLQ and short-lived keys
//! (caracal.md §1); a real PostgreSQL with Caracal's tables and a tampered audit chain (§2, §6.1, `caracal.sql`); HTTP
//! stand-ins for STS, Gateway (two replicas), Audit, API, Coordinator, Web and Alertmanager (`caracal_http.rs`); a
//! `$CARACAL_HOME` with `compose.yml`, `caracal.env`, `secrets/`, `runtime.json`; Docker json-file logs of every
//! service; replay files. `preserve.toml` points preserve at all of it. Everything is on free ports and stops on drop.
#![allow(dead_code)]

#[path = "caracal_http.rs"]
pub mod http;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use super::{postgres::PgServer, redis::RedisServer};
use http::{CANARY_BEARER, INCIDENT_REQUEST, ZONE};

/// Caracal's generated secrets (caracal.md §5.3), plus the two admin tokens Helm adds and preserve's collectors use.
const SECRET_NAMES: &[&str] = &[
    "postgresPassword",
    "redisPassword",
    "caracalAdminToken",
    "caracalCoordinatorToken",
    "caracalAuthSecret",
    "metricsBearer",
    "secretStoreKek",
    "auditHmacKey",
    "streamsHmacKey",
    "idempotencyHmacKey",
    "gatewayStsHmacKey",
    "apiDbPassword",
    "stsDbPassword",
    "gatewayDbPassword",
    "auditDbPassword",
    "coordinatorDbPassword",
    "authDbPassword",
    "auditAdminToken",
    "stsAdminToken",
];
/// Secrets a Compose install holds only inline, in `compose.yml` (caracal.md §5.3): no file in `secrets/` names
/// them, so preserve is not told of them and must find them by their key.
const INLINE_ONLY: &[&str] = &["stsAdminToken"];

/// Gateway pods, as their revocation consumer groups and `/ready` bodies name them.
pub const GATEWAY_PODS: [&str; 2] = ["caracal-gateway-7d9f-0", "caracal-gateway-7d9f-1"];
/// `caracal:sts:gw-nonce:*` keys the sandbox holds.
pub const GW_NONCES: usize = 37;

pub struct Sandbox {
    /// `preserve.toml` for this sandbox.
    pub config: PathBuf,
    pub caracal_home: PathBuf,
    pub root: PathBuf,
    /// Secret file name -> value (hex), as in `$CARACAL_HOME/secrets/`.
    pub secrets: BTreeMap<&'static str, String>,
    /// Service -> base URLs, one per instance.
    pub services: BTreeMap<&'static str, Vec<String>>,
    /// Values the fixtures chose (stream entry ids, hashes, names) that evidence must hold, by name.
    pub facts: BTreeMap<&'static str, String>,
    redis: RedisServer,
    pg: PgServer,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// An Alertmanager webhook payload (version 4) for `CaracalAuditTamperDetected` in the incident's zone and request.
/// A log message an attacker chose: if a page that shows it runs either part, the page's title changes and its
/// body gets a `data-pwned` attribute (what the report's browser test looks for).
pub const HOSTILE_LOG_MESSAGE: &str = "bad request <script>document.body.setAttribute('data-pwned','script');document.title='pwned'</script><img src=x onerror=\"document.body.setAttribute('data-pwned','img');document.title='pwned'\">";

pub fn tamper_alert() -> Json {
    webhook(json!({
        "status": "firing",
        "labels": { "alertname": "CaracalAuditTamperDetected", "severity": "critical", "component": "audit",
                    "pod": "caracal-audit-1", "zone_id": ZONE, "request_id": INCIDENT_REQUEST },
        "annotations": { "summary": "Audit tamper sweep found a content hash mismatch" },
        "startsAt": (Timestamp::now() - SignedDuration::from_mins(4)).to_string(),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=increase(caracal_audit_tamper_mismatch_total[5m])>0",
        "fingerprint": "5be1a2c3d4e5f607"
    }))
}

/// A webhook payload with one firing alert named `name` and `labels`.
pub fn alert(name: &str, labels: &[(&str, &str)]) -> Json {
    let mut l = serde_json::Map::new();
    l.insert("alertname".into(), json!(name));
    for (k, v) in labels {
        l.insert(k.to_string(), json!(v));
    }
    webhook(json!({ "status": "firing", "labels": l, "annotations": {}, "startsAt": Timestamp::now().to_string(),
                    "fingerprint": format!("{:016x}", name.len() * 7919) }))
}

fn webhook(alert: Json) -> Json {
    json!({ "version": "4", "status": "firing", "receiver": "preserve", "groupKey": "{}:{alertname=\"x\"}",
            "groupLabels": { "alertname": alert["labels"]["alertname"] }, "commonLabels": alert["labels"],
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": [alert] })
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("random bytes");
    hex::encode(b)
}

fn write(path: &Path, content: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create directory");
    std::fs::write(path, content).expect("write sandbox file");
}

/// A value quoted for `redis-cli`.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Sandbox {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("caracal-sandbox-").tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let home = root.join("caracal");
        let secrets: BTreeMap<&'static str, String> = SECRET_NAMES.iter().map(|n| (*n, random_hex())).collect();
        let mut facts = BTreeMap::new();

        let redis = RedisServer::start(&root.join("redis"), &[]);
        load_redis(&redis, &secrets["redisPassword"], &mut facts);

        let pg = PgServer::start(&root.join("pg"));
        pg.psql("postgres", "CREATE DATABASE caracal");
        // preserve reads as the least-privileged role the design asks for; RLS needs its caracal.zone_id setting.
        pg.psql("postgres", "CREATE ROLE preserve LOGIN; GRANT pg_read_all_data TO preserve");
        pg.psql("caracal", include_str!("audit_chain.sql"));
        pg.psql("caracal", include_str!("audit_ledger.sql"));
        pg.psql("caracal", &include_str!("caracal.sql").replace("{{AUDIT_HMAC_KEY}}", &secrets["auditHmacKey"]));
        let partition = |ago: &str| {
            pg.psql(
                "caracal",
                &format!("SELECT 'audit_events_y' || to_char(now() - interval '{ago}', 'YYYY') || 'm' || to_char(now() - interval '{ago}', 'MM')"),
            )
            .trim()
            .to_string()
        };
        facts.insert("partition_old", partition("45 days"));
        facts.insert("partition_now", partition("0 days"));
        facts.insert("tampered_event", "evt-beta-0008".into());
        facts.insert("incident_request", INCIDENT_REQUEST.into());
        let pv = "package caracal.authz\n\ndefault allow := false\n\n# widened for the billing migration\nallow if startswith(input.scope, \"billing:\")\n";
        facts.insert("pv_allow_2_sha256", hex::encode(Sha256::digest(pv.as_bytes())));

        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime");
        let tokens = http::Tokens {
            metrics: secrets["metricsBearer"].clone(),
            admin: secrets["caracalAdminToken"].clone(),
            audit_admin: secrets["auditAdminToken"].clone(),
            coordinator: secrets["caracalCoordinatorToken"].clone(),
        };
        let dlq_ids: Vec<String> =
            (0..4).map(|i| facts[["dlq_id_0", "dlq_id_1", "dlq_id_2", "dlq_id_3"][i]].clone()).collect();
        let serve = |router: axum::Router| serve(&runtime, router);
        let mut services = BTreeMap::new();
        services.insert("sts", vec![serve(http::sts(&tokens, "caracal-sts-1"))]);
        services.insert("gateway", GATEWAY_PODS.iter().map(|p| serve(http::gateway(&tokens, p))).collect());
        services.insert("audit", vec![serve(http::audit(&tokens, "caracal-audit-1", dlq_ids))]);
        services.insert("api", vec![serve(http::api(&tokens))]);
        services.insert("coordinator", vec![serve(http::coordinator(&tokens))]);
        services.insert("web", vec![serve(http::web())]);
        let firing = tamper_alert()["alerts"].clone();
        services.insert("alertmanager", vec![serve(http::alertmanager(firing))]);

        write_caracal_home(&home, &secrets, redis.port, pg.port);
        write_docker_logs(&root.join("docker"));
        write_replay_files(&root.join("audit-replay"));
        let config = root.join("preserve.toml");
        write(&config, site_config(&root, &home, redis.port, pg.port, &services));
        Self { config, caracal_home: home, root, secrets, services, facts, redis, pg, runtime, _dir: dir }
    }

    /// `{name}` in `text` replaced by the fact of that name.
    pub fn expand(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (k, v) in &self.facts {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    }

    /// Runs SQL against the sandbox's Caracal database as the superuser.
    pub fn psql(&self, sql: &str) -> String {
        self.pg.psql("caracal", sql)
    }

    /// Kills the sandbox's `redis-server`, as a crash would.
    #[allow(dead_code)] // each test binary uses its own part of the sandbox
    pub fn stop_redis(&mut self) {
        self.redis.kill();
    }
}

/// Serves `router` on a free local port on the sandbox's runtime; returns the base URL.
fn serve(runtime: &tokio::runtime::Runtime, router: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.set_nonblocking(true).expect("non-blocking listener");
    let addr = listener.local_addr().expect("local address");
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// Caracal's Redis (caracal.md §1.2–1.5): streams with their groups and pending entries, the audit DLQ with each
/// reason, `.dead` streams from STS and Gateway, and the short-lived key families. Then `requirepass`, as Caracal's
/// entrypoint sets it. Entry ids are from the last hour, so every profile's window holds them.
fn load_redis(r: &RedisServer, password: &str, facts: &mut BTreeMap<&'static str, String>) {
    let t0 = Timestamp::now().as_millisecond() as u64 - 3_600_000;
    let id = |ms: u64| format!("{}-0", t0 + ms);
    let mut s = String::new();
    let xadd = |s: &mut String, stream: &str, id: &str, fields: &[(&str, String)]| {
        s.push_str(&format!("XADD {stream} {id}"));
        for (f, v) in fields {
            s.push_str(&format!(" {f} {}", q(v)));
        }
        s.push('\n');
    };

    for i in 0..30u64 {
        let data = json!({ "id": format!("evt-stream-{i:03}"), "zone_id": ZONE, "event_type": "token.exchange",
                           "request_id": format!("req-stream-{i:03}"), "decision": "allow", "occurred_at": Timestamp::now().to_string() });
        xadd(
            &mut s,
            "caracal.audit.events",
            &id(i * 1000),
            &[("id", format!("evt-stream-{i:03}")), ("data", data.to_string()), ("sig", format!("{:064x}", i * 7919))],
        );
    }
    let reasons = [
        "hmac_verify_failed",
        "json_parse_error:unexpected EOF",
        "transient_exceeded_max_deliveries:pg: deadlock detected (40P01)",
        "tamper_on_replay",
    ];
    for (i, reason) in reasons.iter().enumerate() {
        let dlq = id(100_000 + i as u64);
        xadd(
            &mut s,
            "caracal.audit.events.dlq",
            &dlq,
            &[
                ("reason", reason.to_string()),
                ("src_id", format!("evt-dlq-{i:02}")),
                ("received_at", (t0 + 100_000 + i as u64).to_string()),
                (
                    "src_data",
                    format!("{{\"id\":\"evt-dlq-{i:02}\",\"zone_id\":\"{ZONE}\",\"event_type\":\"token.exchange\"}}"),
                ),
                ("src_sig", format!("{:064x}", i + 1)),
            ],
        );
        facts.insert(["dlq_id_0", "dlq_id_1", "dlq_id_2", "dlq_id_3"][i], dlq);
    }
    // The incident request's own audit event, refused by Postgres and dead-lettered (caracal.md §1.4): the
    // timeline finds it by its request id in the original event.
    let incident_dlq = id(100_010);
    xadd(
        &mut s,
        "caracal.audit.events.dlq",
        &incident_dlq,
        &[
            ("reason", "pg_permanent_error:value too long for type character varying(128)".into()),
            ("src_id", "evt-alpha-0044".into()),
            ("received_at", (t0 + 100_010).to_string()),
            (
                "src_data",
                format!(
                    "{{\"id\":\"evt-alpha-0044\",\"zone_id\":\"{ZONE}\",\"event_type\":\"tool.invoke\",\"request_id\":\"{INCIDENT_REQUEST}\"}}"
                ),
            ),
            ("src_sig", format!("{:064x}", 44)),
        ],
    );
    facts.insert("incident_dlq_id", incident_dlq);
    for i in 0..10u64 {
        xadd(
            &mut s,
            "caracal.sessions.revoke",
            &id(200_000 + i),
            &[
                ("zone_id", ZONE.into()),
                ("session_id", format!("ar-revoked-{:02}", i + 1)),
                ("agent_session_id", format!("as-terminated-{:02}", i + 1)),
                ("delegation_edge_id", format!("de-revoked-{:02}", i + 1)),
                ("reason", "operator_revoke".into()),
                ("outbox_id", format!("ob-revoke-{:02}", i + 1)),
                ("dedupe_key", format!("revoke:ar-revoked-{:02}", i + 1)),
                ("_sig", format!("{:064x}", i + 100)),
            ],
        );
    }
    facts.insert("revoke_pending_id", id(200_000));
    let dead = id(300_000);
    xadd(
        &mut s,
        "caracal.sessions.revoke.dead",
        &dead,
        &[
            ("original_id", id(200_003)),
            ("error", "apply revocation: context deadline exceeded".into()),
            ("values", "{\"zone_id\":\"zone-alpha\",\"session_id\":\"ar-revoked-04\"}".into()),
            ("_sig", format!("{:064x}", 300)),
        ],
    );
    facts.insert("revoke_dead_id", dead);
    for i in 0..2u64 {
        xadd(
            &mut s,
            "caracal.policy.invalidate",
            &id(400_000 + i),
            &[
                ("zone_id", ZONE.into()),
                ("policy_set_id", "ps-main".into()),
                ("policy_set_version_id", format!("psv-main-{}", i + 1)),
                ("outbox_id", format!("ob-policy-{i:02}")),
                ("_sig", format!("{:064x}", i + 400)),
            ],
        );
    }
    let policy_dead = id(410_000);
    xadd(
        &mut s,
        "caracal.policy.invalidate.dead",
        &policy_dead,
        &[
            ("original_id", id(400_000)),
            ("error", "load policy set: rego_parse_error".into()),
            ("values", "{\"zone_id\":\"zone-alpha\",\"policy_set_version_id\":\"psv-main-1\"}".into()),
            ("_sig", format!("{:064x}", 410)),
        ],
    );
    facts.insert("policy_dead_id", policy_dead);
    xadd(
        &mut s,
        "caracal.agents.lifecycle",
        &id(500_000),
        &[("event", "terminate".into()), ("zone_id", ZONE.into()), ("agent_session_id", "as-terminated-01".into())],
    );
    xadd(
        &mut s,
        "caracal.delegations.invalidate",
        &id(500_001),
        &[
            ("event", "edge_revoke".into()),
            ("zone_id", ZONE.into()),
            ("edge_id", "de-revoked-01".into()),
            ("epoch", "7".into()),
        ],
    );
    xadd(
        &mut s,
        "caracal.invocations.lifecycle",
        &id(500_002),
        &[("event", "deadline_exceeded".into()), ("zone_id", ZONE.into())],
    );
    xadd(&mut s, "caracal.providers.ratelimit", &id(500_003), &[("init", "1".into())]);

    // Groups as the provisioner creates them, and consumers that read (leaving pending entries) as services do.
    let [gw0, gw1] = GATEWAY_PODS;
    s.push_str(&format!(
        "XGROUP CREATE caracal.audit.events audit-ingestor 0\n\
         XGROUP CREATE caracal.audit.events siem-export $\n\
         XGROUP CREATE caracal.audit.events.dlq audit-dlq-observer $\n\
         XGROUP CREATE caracal.policy.invalidate opa-engine 0\n\
         XGROUP CREATE caracal.sessions.revoke sts-revocation 0\n\
         XGROUP CREATE caracal.sessions.revoke gateway-revocation:{gw0} 0\n\
         XGROUP CREATE caracal.sessions.revoke gateway-revocation:{gw1} 0\n\
         XGROUP CREATE caracal.sessions.revoke gateway-revocation:caracal-gateway-5c2a-0 0\n\
         XGROUP CREATE caracal.keys.invalidate sts-keys $ MKSTREAM\n\
         XGROUP CREATE caracal.agents.lifecycle coordinator-relay 0\n\
         XGROUP CREATE caracal.invocations.lifecycle invocations-observer $\n\
         XGROUP CREATE caracal.delegations.invalidate delegations-observer $\n\
         XREADGROUP GROUP audit-ingestor audit-worker-0 COUNT 8 STREAMS caracal.audit.events >\n\
         XACK caracal.audit.events audit-ingestor {} {} {}\n\
         XREADGROUP GROUP opa-engine sts-caracal-sts-1-1-policy COUNT 2 STREAMS caracal.policy.invalidate >\n\
         XACK caracal.policy.invalidate opa-engine {} {}\n\
         XREADGROUP GROUP sts-revocation sts-caracal-sts-1-1 COUNT 10 STREAMS caracal.sessions.revoke >\n\
         XREADGROUP GROUP gateway-revocation:{gw0} gateway-{gw0}-1 COUNT 4 STREAMS caracal.sessions.revoke >\n\
         XREADGROUP GROUP gateway-revocation:{gw1} gateway-{gw1}-1 COUNT 2 STREAMS caracal.sessions.revoke >\n",
        id(0),
        id(1000),
        id(2000),
        id(400_000),
        id(400_001)
    ));
    facts.insert("audit_pending_id", id(3000));

    // Short-lived keys (§1.5). TTLs are an hour here (Caracal's are shorter) so a slow run still finds them.
    let jti = "7c1e9a04-5b7d-4e2f-9c55-1f2a3b4c5d6e";
    s.push_str(&format!(
        "SET audit:jti:{jti} \"app-billing|{}\" EX 3600\n\
         SET audit:jti:0b2d4f60-aaaa-4bbb-8ccc-000000000001 \"app-reports|{}\" EX 3600\n\
         SET seen:jti:{jti} {INCIDENT_REQUEST} EX 3600\n\
         SET api:admin_auth_fail:203.0.113.9:{} 12 EX 3600\n\
         SET api:admin_token_touched:adm-tok-ci 1 EX 3600\n\
         SET stream-failure:caracal.sessions.revoke:gateway-revocation:{gw0}:{} 4 EX 3600\n\
         SET caracal:control:jti:9f8e7d6c 1 PX 3600000\n\
         SET provider-refresh-circuit:prov-github open EX 3600\n\
         SET provider-refresh-failures:prov-github 5 EX 3600\n\
         SET rl:{ZONE}:resource://billing:app-billing 41 EX 3600\n",
        t0 / 1000,
        t0 / 1000,
        t0 / 60_000,
        id(200_003)
    ));
    for i in 0..GW_NONCES {
        s.push_str(&format!("SET caracal:sts:gw-nonce:{:032x} 1 EX 3600\n", i * 104_729 + 1));
    }
    r.script(&s);
    r.cli(&["CONFIG", "SET", "requirepass", password]).expect("set requirepass");
    facts.insert("jti", jti.into());
    facts.insert("admin_auth_fail_key", format!("api:admin_auth_fail:203.0.113.9:{}", t0 / 60_000));
}

/// `$CARACAL_HOME` as Caracal's engine installs it (caracal.md §5.2–5.3).
fn write_caracal_home(home: &Path, secrets: &BTreeMap<&'static str, String>, redis_port: u16, pg_port: u16) {
    for (name, value) in secrets.iter().filter(|(n, _)| !INLINE_ONLY.contains(n)) {
        write(&home.join("secrets").join(name), value);
    }
    let pg_url = |user: &str, pw: &str| format!("postgres://{user}:{}@127.0.0.1:{pg_port}/caracal", secrets[pw]);
    write(&home.join("secrets/databaseUrl"), pg_url("caracal", "postgresPassword"));
    for svc in ["api", "sts", "gateway", "audit", "coordinator"] {
        let pw = SECRET_NAMES.iter().find(|n| **n == format!("{svc}DbPassword")).expect("db password name");
        write(&home.join(format!("secrets/{svc}DatabaseUrl")), pg_url(&format!("caracal{svc}"), pw));
    }
    write(&home.join("secrets/redisUrl"), format!("redis://:{}@127.0.0.1:{redis_port}/0", secrets["redisPassword"]));
    let mut compose = String::from("name: caracal\nservices:\n");
    for (svc, image, port) in [
        ("sts", "caracal-go", 8080),
        ("gateway", "caracal-go", 8081),
        ("audit", "caracal-go", 9090),
        ("api", "caracal-node", 3000),
        ("coordinator", "caracal-node", 4000),
        ("web", "caracal-web", 3002),
    ] {
        compose.push_str(&format!(
            "  {svc}:\n    image: ghcr.io/garudex-labs/{image}:v1.0.0\n    ports: [\"127.0.0.1:{port}:{port}\"]\n    env_file: caracal.env\n    \
             environment:\n      METRICS_BEARER_FILE: /run/secrets/metricsBearer\n      AUDIT_HMAC_KEY_FILE: /run/secrets/auditHmacKey\n"
        ));
    }
    // Compose inlines these (caracal.md §5.3): `docker compose config` and the file show them.
    compose.push_str(&format!(
        "  audit-admin:\n    image: ghcr.io/garudex-labs/caracal-go:v1.0.0\n    environment:\n      AUDIT_ADMIN_TOKEN: \"{}\"\n      STS_ADMIN_TOKEN: \"{}\"\n",
        secrets["auditAdminToken"], secrets["stsAdminToken"]
    ));
    compose.push_str("volumes:\n  postgresData: {}\n  redisData: {}\n  stsReplay: {}\n  gatewayReplay: {}\n");
    write(&home.join("compose.yml"), compose);
    write(
        &home.join("caracal.env"),
        format!(
            "CARACAL_MODE=stable\nCARACAL_LOG_LEVEL=info\nAUDIT_ADMIN_TOKEN={}\nREDIS_MAXMEMORY=512mb\n",
            secrets["auditAdminToken"]
        ),
    );
    write(
        &home.join("runtime.json"),
        json!({ "version": "1.0.0", "tag": "v1.0.0", "composeProject": "caracal", "installedAt": (Timestamp::now() - SignedDuration::from_hours(24 * 80)).to_string() }).to_string(),
    );
    write(&home.join("upgrade.log"), "caracal up v1.0.0: ok\n");
}

/// One line of a Go service's zerolog output (Unix-ms `time`).
fn zerolog(service: &str, level: &str, message: &str, fields: Json) -> String {
    let mut j =
        json!({ "level": level, "service": service, "time": Timestamp::now().as_millisecond(), "message": message });
    if let (Some(o), Json::Object(f)) = (j.as_object_mut(), fields) {
        o.extend(f);
    }
    j.to_string()
}

/// One line of a TypeScript service's pino output (numeric level, ISO `time`).
fn pino(service: &str, level: u8, msg: &str, fields: Json) -> String {
    let mut j = json!({ "level": level, "time": Timestamp::now().to_string(), "pid": 1, "hostname": format!("caracal-{service}-1"), "msg": msg });
    if let (Some(o), Json::Object(f)) = (j.as_object_mut(), fields) {
        o.extend(f);
    }
    j.to_string()
}

/// Appends `lines` Docker json-file lines to the log of Compose service `service` in the sandbox at `root`, each a
/// zerolog record carrying a request id of its own (`<prefix>-<n>`), two minutes ago: a flood of distinct ids.
#[allow(dead_code)]
pub fn flood_of_ids(root: &Path, service: &str, prefix: &str, lines: usize) {
    use std::io::Write;
    let id = hex::encode(Sha256::digest(format!("caracal-{service}-1").as_bytes()));
    let path = root.join("docker").join(&id).join(format!("{id}-json.log"));
    let at = (Timestamp::now() - SignedDuration::from_mins(2)).to_string();
    let mut out = std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(&path).expect("the log"));
    for n in 0..lines {
        let inner = json!({ "level": "info", "time": at, "request_id": format!("{prefix}-{n}"), "message": "noise" });
        writeln!(out, "{}", json!({ "log": format!("{inner}\n"), "stream": "stdout", "time": at })).unwrap();
    }
    out.flush().unwrap();
}

/// Docker json-file logs of every Compose service of project `caracal`: `<id>/config.v2.json` and `<id>-json.log`.
fn write_docker_logs(dir: &Path) {
    let (z, p) = (zerolog, pino);
    let logs: Vec<(&str, Vec<String>)> = vec![
        (
            "sts",
            vec![
                z(
                    "sts",
                    "info",
                    "opa policy set loaded",
                    json!({ "zone_id": ZONE, "policy_set_version_id": "psv-main-2", "manifest_sha": "manifest-sha-v2" }),
                ),
                z(
                    "sts",
                    "warn",
                    "gateway exchange rejected: nonce replay",
                    json!({ "request_id": "req-gw-0193", "nonce_count": GW_NONCES }),
                ),
                z(
                    "sts",
                    "warn",
                    "exchange request refused",
                    json!({ "authorization": format!("Bearer {CANARY_BEARER}"), "session_id": "ar-revoked-01" }),
                ),
                z(
                    "sts",
                    "info",
                    "token exchange",
                    json!({ "request_id": INCIDENT_REQUEST, "zone_id": ZONE, "decision": "allow" }),
                ),
            ],
        ),
        (
            "gateway",
            vec![
                z(
                    "gateway",
                    "error",
                    "revocation snapshot reload failed",
                    json!({ "error": "pq: canceling statement due to statement timeout" }),
                ),
                z("gateway", "warn", "sts circuit open", json!({ "state": "open", "consecutive_failures": 5 })),
                z(
                    "gateway",
                    "warn",
                    &format!("sts exchange failed for Authorization: Bearer {CANARY_BEARER}"),
                    json!({ "agent_session_id": "as-incident-01" }),
                ),
                z(
                    "gateway",
                    "warn",
                    "dropping revocation message with invalid origin signature",
                    json!({ "stream": "caracal.sessions.revoke" }),
                ),
            ],
        ),
        (
            "audit",
            vec![
                z(
                    "audit",
                    "error",
                    "tamper: content hash mismatch",
                    json!({ "event_id": "evt-beta-0008", "zone_id": "zone-beta", "chain_seq": 8 }),
                ),
                z(
                    "audit",
                    "info",
                    "tamper sweep complete",
                    json!({ "full": false, "window": "4h", "checked": 69, "mismatches": 1, "chain_breaks": 0, "hmac_failures": 1 }),
                ),
                z("audit", "warn", "event sent to DLQ", json!({ "id": "evt-dlq-00", "reason": "hmac_verify_failed" })),
                z(
                    "audit",
                    "warn",
                    "event sent to DLQ",
                    json!({ "id": "evt-dlq-02", "reason": "transient_exceeded_max_deliveries:pg: deadlock detected (40P01)" }),
                ),
            ],
        ),
        (
            "api",
            vec![
                p(
                    "api",
                    40,
                    "admin auth failed",
                    json!({ "ip": "203.0.113.9", "path": "/v1/admin-tokens", "reqId": "req-authfail-01" }),
                ),
                p(
                    "api",
                    50,
                    "outbox event abandoned after max attempts",
                    json!({ "outbox_id": "ob-audit-dead-01", "attempts": 100 }),
                ),
                p("control", 30, "control invoke", json!({ "tool": "explain", "request_id": INCIDENT_REQUEST })),
                // Written by whoever sent the request: evidence is hostile input, and the report shows it as text.
                p(
                    "api",
                    40,
                    HOSTILE_LOG_MESSAGE,
                    json!({ "path": "/v1/zones/<svg onload=alert(1)>", "reqId": "req-hostile-01" }),
                ),
            ],
        ),
        (
            "coordinator",
            vec![p(
                "coordinator",
                40,
                "outbox_rows_dead",
                json!({ "count": 1, "topic": "caracal.delegations.invalidate" }),
            )],
        ),
        (
            "web",
            vec![p(
                "caracal-auth",
                30,
                "request",
                json!({ "id": "req-web-01", "method": "GET", "path": "/api/console/v1/zones", "status": 200, "durationMs": 12 }),
            )],
        ),
        (
            "postgres",
            vec![format!(
                "{} UTC [61] LOG:  duration: 812.331 ms  statement: SELECT ... FROM audit_events",
                Timestamp::now().strftime("%Y-%m-%d %H:%M:%S%.3f")
            )],
        ),
        ("redis", vec!["1:M 29 Nov 2026 06:00:00.000 * Background saving terminated with success".to_string()]),
    ];
    for (service, lines) in logs {
        let container = format!("caracal-{service}-1");
        let id = hex::encode(Sha256::digest(container.as_bytes()));
        let cdir = dir.join(&id);
        write(
            &cdir.join("config.v2.json"),
            json!({ "ID": id, "Name": format!("/{container}"), "Config": { "Labels": {
                "com.docker.compose.project": "caracal", "com.docker.compose.service": service } } })
            .to_string(),
        );
        let n = lines.len() as i64;
        let text: String = lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let at = Timestamp::now() - SignedDuration::from_secs(60 * (n - i as i64));
                format!("{}\n", json!({ "log": format!("{l}\n"), "stream": "stderr", "time": at.to_string() }))
            })
            .collect();
        write(&cdir.join(format!("{id}-json.log")), text);
    }
}

/// What STS and Gateway persisted when Redis refused their audit batches: raw event JSON, unsigned (§6.2).
fn write_replay_files(dir: &Path) {
    let nanos = Timestamp::now().as_nanosecond();
    let lines: String = (0..3)
        .map(|i| format!("{}\n", json!({ "id": format!("evt-replay-{i:02}"), "zone_id": ZONE, "event_type": "token.exchange", "request_id": format!("req-replay-{i:02}"), "decision": "allow" })))
        .collect();
    write(&dir.join(format!("pending-4127-{nanos}.ndjson")), lines);
    write(
        &dir.join(format!("pending-5310-{}.ndjson", nanos + 1)),
        format!("{}\n", json!({ "id": "evt-replay-gw-00", "zone_id": ZONE, "event_type": "resource.access" })),
    );
}

/// The site config: every system of the sandbox, credentials by reference to `$CARACAL_HOME/secrets/`.
fn site_config(
    root: &Path,
    home: &Path,
    redis_port: u16,
    pg_port: u16,
    services: &BTreeMap<&'static str, Vec<String>>,
) -> String {
    let list = |urls: &Vec<String>| urls.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
    let svc: String = services.iter().map(|(k, v)| format!("{k} = [{}]\n", list(v))).collect();
    format!(
        "# The Caracal sandbox (tests/support/sandbox.rs).\norganization = \"Caracal sandbox\"\nout_dir = \"{root}/evidence\"\n\
         caracal_home = \"{home}\"\ndocker_dir = \"{root}/docker\"\n\n[run]\nreport = true\n\n[vars]\nreplay_dir = \"{root}/audit-replay\"\n\n\
         [redis]\nurl = \"redis://127.0.0.1:{redis_port}/0\"\npassword = \"file:{home}/secrets/redisPassword\"\n\n\
         [postgres]\nurl = \"postgres://preserve@127.0.0.1:{pg_port}/caracal\"\n\n[services]\n{svc}\n\
         [audit]\nhmac_key = \"file:{home}/secrets/auditHmacKey\"\n",
        root = root.display(),
        home = home.display(),
    )
}

#!/usr/bin/env python3
"""The benchmark's Caracal-shaped Redis and log data (caracal.md §1.2, §1.4, §4.2).

  dataset.py dlq N            RESP commands (for `redis-cli --pipe`): N caracal.audit.events.dlq entries
  dataset.py revoke N         RESP commands: N caracal.sessions.revoke entries
  dataset.py logs DIR BYTES   Docker json-file logs of the Compose service `audit` under DIR (a containers
                              directory), about BYTES in all: `<id>-json.log` and its rotations .1 .. .3, the
                              last 23 hours, zerolog JSON lines as Caracal's Audit service writes them.
"""
import hashlib
import json
import os
import sys
import time


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def dlq(n, w):
    reasons = ["transient_exceeded_max_deliveries:pg timeout", "pg_permanent_error:23505 duplicate key",
               "hmac_verify_failed", "json_parse_error:unexpected end of JSON input", "tamper_on_replay"]
    for i in range(n):
        data = json.dumps({"id": "evt-%010d" % i, "zone_id": "zone-%02d" % (i % 10), "event_type": "token.exchange",
                           "request_id": "req-%d" % i, "decision": "allow", "evaluation_status": "evaluated",
                           "determining_policies_json": ["pv-%d" % (i % 37)], "occurred_at": "2026-11-29T02:00:00Z",
                           "metadata_json": {"agent_session_id": "as_%d" % (i % 977), "session_id": "ar_%d" % (i % 331),
                                             "resource": "resource://billing/%d" % (i % 23), "pad": "m" * 200}},
                          separators=(",", ":"))
        w(resp("XADD", "caracal.audit.events.dlq", "*", "reason", reasons[i % 5], "src_id", "evt-%010d" % i,
               "received_at", str(1764370000000 + i), "src_data", data,
               "src_sig", hashlib.sha256(b"%d" % i).hexdigest(), "src_outbox_id", str(900000 + i)))


def revoke(n, w):
    for i in range(n):
        w(resp("XADD", "caracal.sessions.revoke", "*", "zone_id", "zone-%02d" % (i % 10),
               "session_id", "ar_%d" % i, "agent_session_id", "as_%d" % (i % 977),
               "delegation_edge_id", "de_%d" % (i % 113), "reason", "grant_revoked", "grant_id", "gr_%d" % (i % 5000),
               "outbox_id", str(500000 + i), "dedupe_key", "revoke:ar_%d" % i,
               "_sig", hashlib.sha256(b"r%d" % i).hexdigest()))


MESSAGES = [
    ("info", "event ingested", '"request_id":"req-{h}","zone_id":"zone-{z}","event_id":"evt-{i:010d}","chain_seq":{s},"stream":"caracal.audit.events","id":"{ms}-0"'),
    ("info", "event ingested", '"request_id":"req-{h}","zone_id":"zone-{z}","event_id":"evt-{i:010d}","chain_seq":{s},"stream":"caracal.audit.events","id":"{ms}-1"'),
    ("debug", "consumer poll", '"stream":"caracal.audit.events","consumer_lag":{z},"pel_oldest_ms":{s}'),
    ("warn", "event sent to DLQ", '"id":"evt-{i:010d}","reason":"transient_exceeded_max_deliveries:pg timeout","zone_id":"zone-{z}"'),
    ("info", "tamper sweep complete", '"full":false,"window":"4h","checked":{s},"mismatches":0,"chain_breaks":0,"hmac_failures":0'),
    ("info", "http request", '"method":"GET","path":"/api/audit/search?zone_id=zone-{z}&limit=1000","status":200,"authorization":"Bearer ***","duration_ms":{z}'),
    ("info", "redis connected", '"addr":"redis://redis:6379/0","db":0'),
]


def logs(root, total):
    cid = hashlib.sha256(b"caracal-audit-1").hexdigest()
    cdir = os.path.join(root, cid)
    os.makedirs(cdir, exist_ok=True)
    with open(os.path.join(cdir, "config.v2.json"), "w") as f:
        json.dump({"ID": cid, "Name": "/caracal-audit-1", "Config": {"Labels": {
            "com.docker.compose.project": "caracal", "com.docker.compose.service": "audit"}}}, f, separators=(",", ":"))
    files = 4
    now_ms = int(time.time() * 1000)
    span_ms = 23 * 3600 * 1000
    per_file = total // files
    # Lines are numbered over all files so times rise from the oldest rotation (.3) to the current file.
    i = 0
    approx = 390
    lines = max(files, total // approx)
    for k in range(files - 1, -1, -1):
        name = os.path.join(cdir, cid + "-json.log" + ("" if k == 0 else ".%d" % k))
        with open(name, "w", buffering=1 << 20) as f:
            written = 0
            while written < per_file:
                ms = now_ms - span_ms + span_ms * min(i, lines) // lines
                level, msg, fields = MESSAGES[i % len(MESSAGES)]
                inner = ('{"level":"%s","service":"audit","hostname":"caracal-audit-1","pid":1,"version":"2026.11.2",'
                         '"env":"production","time":%d,"message":"%s",%s}' % (level, ms, msg, fields.format(
                             h="%08x" % (i * 2654435761 % (1 << 32)), z="%02d" % (i % 10), i=i, s=i // 10 + 1, ms=ms)))
                secs, frac = divmod(ms, 1000)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + ".%03d000000Z" % frac
                line = '{"log":%s,"stream":"stderr","time":"%s"}\n' % (json.dumps(inner + "\n"), stamp)
                f.write(line)
                written += len(line)
                i += 1


def main():
    what = sys.argv[1]
    if what in ("dlq", "revoke"):
        out = sys.stdout.buffer
        buf = []

        def w(b):
            buf.append(b)
            if len(buf) >= 4096:
                out.write(b"".join(buf))
                buf.clear()
        (dlq if what == "dlq" else revoke)(int(sys.argv[2]), w)
        out.write(b"".join(buf))
    elif what == "logs":
        logs(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Redis stream export, side by side: `preserve snapshot` of a Caracal-shaped DLQ against
# `redis-cli --raw XRANGE key - + > file`, alternating A/B, reporting median wall time, the ratio and peak RSS.
# Usage: bench/redis-dlq.sh [entries (default 300000)] [rounds (default 5)]
# Starts its own redis-server on a free port in a temporary directory; needs redis-server, redis-cli, python3,
# /usr/bin/time. Builds preserve in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
entries=${1:-300000}
rounds=${2:-5}
cargo build --release --quiet
bin=$PWD/target/release/preserve
work=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --daemonize yes \
  --logfile "$work/redis.log" >/dev/null
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done

# ~600-byte entries shaped like caracal.audit.events.dlq (reason, src_id, received_at, src_data, src_sig).
python3 - "$entries" > "$work/load.resp" <<'PY'
import sys, json
n = int(sys.argv[1]); out = sys.stdout
def cmd(*a):
    parts = ["*%d\r\n" % len(a)]
    for x in a:
        b = x.encode()
        parts.append("$%d\r\n%s\r\n" % (len(b), x))
    return "".join(parts)
for i in range(n):
    data = json.dumps({"id": "evt-%08d" % i, "zone_id": "z%d" % (i % 10), "event_type": "token.exchange",
                       "request_id": "req-%d" % i, "decision": "allow", "occurred_at": "2026-11-29T02:00:00Z",
                       "metadata_json": {"agent_session_id": "as_%d" % (i % 977), "pad": "m" * 220}})
    out.write(cmd("XADD", "caracal.audit.events.dlq", "*", "reason", "transient_exceeded_max_deliveries:pg timeout",
                  "src_id", "evt-%08d" % i, "received_at", str(1764370000000 + i), "src_data", data,
                  "src_sig", "%064x" % (i * 2654435761 % (1 << 256))))
PY
redis-cli -p "$port" --pipe < "$work/load.resp" >/dev/null
bytes=$(redis-cli -p "$port" memory usage caracal.audit.events.dlq)
mkdir -p "$work/c"
printf '[[collector]]\nname = "dlq"\nkind = "redis"\nstreams = ["*.dlq"]\nserver_info = false\n' > "$work/c/dlq.toml"

measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "$label %e %M" "$@" 2>>"$work/times" >/dev/null
}
for r in $(seq "$rounds"); do
  measure preserve env PRESERVE_REDIS_URL="redis://127.0.0.1:$port/0" "$bin" snapshot -q -c dlq --collectors "$work/c" --out "$work/out"
  measure redis-cli sh -c "redis-cli -p $port --raw XRANGE caracal.audit.events.dlq - + > $work/xrange.txt"
  rm -rf "$work/out"
done
python3 - "$work/times" "$entries" "$bytes" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 3 and parts[0] in ("preserve", "redis-cli"):
        rows.setdefault(parts[0], []).append((float(parts[1]), int(parts[2])))
p = statistics.median(t for t, _ in rows["preserve"]); b = statistics.median(t for t, _ in rows["redis-cli"])
print(f"redis stream export: {sys.argv[2]} entries, {int(sys.argv[3]) >> 20} MiB in Redis, {len(rows['preserve'])} rounds")
print(f"  preserve  median {p:.2f} s  peak RSS {max(m for _, m in rows['preserve']) / 1024:.0f} MiB (hashing, redaction, zstd, bundle, fsync)")
print(f"  redis-cli median {b:.2f} s  peak RSS {max(m for _, m in rows['redis-cli']) / 1024:.0f} MiB (raw text to a file)")
print(f"  ratio preserve/redis-cli {p / b:.2f}")
PY

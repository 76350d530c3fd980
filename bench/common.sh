# The preamble every benchmark shares (sourced, not run): the preserve binary, a work directory removed on exit,
# throwaway PostgreSQL and Redis servers on free ports (as the tests start them: initdb into the work directory, run as
# the `postgres` user when we are root), a throwaway Garage S3 server for the upload pair, and `measure`, which
# records wall time, CPU time and peak RSS of one command with GNU time into "$work/times" for `report` to summarise.
# shellcheck shell=bash

bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is missing ($2)" >&2; exit 2; }; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (Debian package: time)" >&2; exit 2; }
need python3 python3
need zstd zstd

# The binary under test: $PRESERVE_BIN when set (the smoke test passes its debug build), else a release build.
preserve_bin() {
  if [ -n "${PRESERVE_BIN:-}" ]; then
    bin=$PRESERVE_BIN
  else
    (cd "$bench_root" && cargo build --release --quiet)
    bin=${CARGO_TARGET_DIR:-$bench_root/target}/release/preserve
  fi
  [ -x "$bin" ] || { echo "bench: no preserve binary at $bin" >&2; exit 2; }
}

# Cleanups run in reverse order of registration when the script exits, however it exits.
cleanups=()
on_exit() { cleanups=("$1" "${cleanups[@]}"); }
run_cleanups() { for c in "${cleanups[@]}"; do eval "$c" >/dev/null 2>&1 || true; done; }
trap run_cleanups EXIT
trap 'exit 130' INT TERM

# A work directory the postgres user can traverse (its data directory inside is its own).
work_dir() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/preserve-bench.XXXXXX")
  chmod 711 "$work"
  if [ -z "${BENCH_KEEP:-}" ]; then on_exit "rm -rf '$work'"; else echo "bench: keeping $work" >&2; fi
  : > "$work/times"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# PostgreSQL in $work/pg on a free port, fsync off like the tests; sets pgbin, pg_port, pg_url and psql().
start_postgres() {
  need psql postgresql-client
  pgbin=$(pg_config --bindir 2>/dev/null || true)
  [ -x "$pgbin/initdb" ] || pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir "$work/pg"
  [ "$(id -u)" != 0 ] || chown postgres:postgres "$work/pg"
  pg_port=$(free_port)
  as_pg "$pgbin/initdb" -A trust -U postgres -E UTF8 --locale C -D "$work/pg/data" >/dev/null
  as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w start \
    -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off -c max_connections=40" >/dev/null
  on_exit "as_pg '$pgbin/pg_ctl' -D '$work/pg/data' -m immediate stop"
  pg_url="postgres://postgres@127.0.0.1:$pg_port/caracal"
}
psql() { command psql -h 127.0.0.1 -p "$pg_port" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }

# redis-server in $work/redis on a free port, no persistence; sets redis_port and redis_url.
start_redis() {
  need redis-server redis-server
  need redis-cli redis-tools
  mkdir "$work/redis"
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/redis" \
    --daemonize yes --logfile "$work/redis/log" --pidfile "$work/redis/pid" >/dev/null
  # By pid: once the dataset sets requirepass, an unauthenticated SHUTDOWN is refused.
  on_exit "kill \$(cat '$work/redis/pid')"
  until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
  redis_url="redis://127.0.0.1:$redis_port/0"
}

# Garage (an S3 server) in $work/garage on free ports: one node, a bucket `evidence`, a key `bench` that may read and
# write it; sets garage_port, garage_url, garage_key_id and garage_secret.
start_garage() {
  need garage "an S3 server: cargo install garage --locked"
  local dir=$work/garage node="" rpc admin i
  mkdir "$dir"
  garage_port=$(free_port) rpc=$(free_port) admin=$(free_port)
  cat > "$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$garage_port"
root_domain = ".s3.garage"
[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "bench-admin-token"
EOF
  garage -c "$dir/garage.toml" server > "$dir/log" 2>&1 &
  echo $! > "$dir/pid"
  on_exit "kill \$(cat '$dir/pid')"
  garage_url="http://127.0.0.1:$garage_port"
  garage_failed() { echo "bench: garage did not start ($1); its log:" >&2; tail -20 "$work/garage/log" >&2; exit 2; }
  for i in $(seq 300); do
    curl -s -o /dev/null "$garage_url/" && break
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || garage_failed "the server exited"
    [ "$i" -lt 300 ] || garage_failed "nothing listens on port $garage_port after 30 s"
    sleep 0.1
  done
  # The node answers its CLI a moment after it listens; its id is the first 16-hex-digit word of a line of `status`.
  for i in $(seq 300); do
    node=$(garage -c "$dir/garage.toml" status 2>/dev/null | grep -oE '^[0-9a-f]{16}\b' | head -1) || true
    [ -z "$node" ] || break
    sleep 0.1
  done
  [ -n "$node" ] || garage_failed "no node in \`garage status\` after 30 s"
  {
    garage -c "$dir/garage.toml" layout assign -z dc1 -c 10G "$node"
    garage -c "$dir/garage.toml" layout apply --version 1
    garage -c "$dir/garage.toml" bucket create evidence
    garage -c "$dir/garage.toml" key create bench > "$dir/key"
    garage -c "$dir/garage.toml" bucket allow --read --write --owner evidence --key bench
  } >> "$dir/setup.log" 2>&1 || garage_failed "its setup failed: $(tail -3 "$dir/setup.log")"
  garage_key_id=$(awk '/^Key ID:/ {print $3}' "$dir/key")
  garage_secret=$(awk '/^Secret key:/ {print $3}' "$dir/key")
  if [ -z "$garage_key_id" ] || [ -z "$garage_secret" ]; then garage_failed "no key in the output of \`garage key create\`"; fi
}

# measure LABEL COMMAND...: one run, its stdout discarded, appended to $work/times as
# "LABEL wall_s peak_rss_kib user_s sys_s exit". A failed command stops the benchmark: its figures would mean nothing.
measure() {
  local label=$1 status=0; shift
  /usr/bin/time -o "$work/time.one" -f "$label %e %M %U %S %x" "$@" >/dev/null 2>"$work/stderr.one" || status=$?
  cat "$work/time.one" >> "$work/times"
  if [ "$status" != 0 ] && [ "$status" != "${MEASURE_OK_STATUS:-0}" ]; then
    echo "bench: $label failed (exit $status):" >&2
    tail -20 "$work/stderr.one" >&2
    exit 1
  fi
}

# report PAIRS_FILE [JSON_OUT]: per pair (lines "name preserve_label baseline_label" in PAIRS_FILE), the median wall
# time, median user+sys CPU and peak RSS of each side, and the ratio of the medians; as a table and, with JSON_OUT,
# as JSON.
report() {
  python3 - "$work/times" "$1" "${2:-}" <<'PY'
import json, statistics, sys
times, pairs_file, json_out = sys.argv[1:4]
runs = {}
for line in open(times):
    p = line.split()
    if len(p) >= 5 and not line.startswith("Command"):
        runs.setdefault(p[0], []).append({"wall": float(p[1]), "rss_kib": int(p[2]), "cpu": float(p[3]) + float(p[4])})
def side(label):
    r = runs.get(label, [])
    if not r:
        return None
    return {"label": label, "runs": len(r), "median_wall_s": statistics.median(x["wall"] for x in r),
            "median_cpu_s": statistics.median(x["cpu"] for x in r), "peak_rss_mib": max(x["rss_kib"] for x in r) / 1024,
            "walls_s": [x["wall"] for x in r]}
out = []
for line in open(pairs_file):
    name, a, b = line.split()
    pa, pb = side(a), side(b)
    if pa and pb:
        out.append({"pair": name, "preserve": pa, "baseline": pb, "ratio": pa["median_wall_s"] / pb["median_wall_s"],
                    "cpu_ratio": pa["median_cpu_s"] / pb["median_cpu_s"] if pb["median_cpu_s"] else None})
print(f"{'pair':<22}{'side':<22}{'runs':>5}{'median wall':>13}{'median CPU':>12}{'peak RSS':>11}{'ratio':>8}")
for p in out:
    for k in ("preserve", "baseline"):
        s = p[k]
        ratio = f"{p['ratio']:.2f}" if k == "preserve" else ""
        print(f"{p['pair'] if k == 'preserve' else '':<22}{s['label']:<22}{s['runs']:>5}{s['median_wall_s']:>11.2f} s"
              f"{s['median_cpu_s']:>10.2f} s{s['peak_rss_mib']:>7.0f} MiB{ratio:>8}")
if json_out:
    json.dump(out, open(json_out, "w"), indent=1)
PY
}

#!/usr/bin/env bash
# preserve against what an operator would use instead, side by side in one run (docs/performance.md).
#
# Starts a throwaway PostgreSQL and Redis, generates a Caracal-shaped dataset of the chosen scale, then, alternating
# preserve and the baseline (and which of them goes first) for several rounds, measures these pairs:
#   audit-tamper    `preserve snapshot --profile audit-tamper` (chain verification included) vs bench/baseline.sh
#   postgres        preserve's export of audit_events vs `pg_dump --data-only -t 'public.audit_events*' | zstd -T2 -3`
#   postgres+chain  the same export with verify_audit_chain = true vs the same pg_dump
#   redis           preserve's export of the DLQ vs `redis-cli --raw XRANGE caracal.audit.events.dlq - + > file`
#   verify          `preserve verify` of the audit-tamper bundle vs `zstd -d | tar -x` then `sha256sum -c`
#   timeline        `preserve timeline` of the audit-tamper bundle (JSON Lines to /dev/null) vs `preserve verify` of it:
#                   both read the whole archive
#   report          `preserve snapshot --profile audit-tamper` with `[run] report = true` (report.html made while it
#                   runs) vs the same snapshot without
#   sealed          `preserve snapshot --profile audit-tamper` signed (Ed25519 key file) and timestamped (a local
#                   TSA: `openssl ts -reply` behind bench/tsa.py) vs the same snapshot unsealed
#   upload          `preserve snapshot --profile audit-tamper --upload` to a local S3 store (Garage), the bundle
#                   uploaded while it is written and the copy confirmed, vs the same snapshot without upload followed
#                   by `rclone copy` of the bundle and its side files to the same bucket (needs garage and rclone)
# and prints per pair the median wall time, median CPU (user+sys), peak RSS (GNU time) and the ratio preserve/baseline.
#
# Scale 1: 1,000,000 audit_events rows with a valid chain over 10 zones; 300,000 caracal.audit.events.dlq entries;
# 100,000 caracal.sessions.revoke entries in 3 groups with 10,000 pending; 200 MB of Audit's Docker json-file logs.
#
# Usage: bench/run.sh [--scale S] [--rounds N] [--pairs a,b,...] [--json FILE]
#   --scale S    dataset scale (default 1; the smoke test uses 0.01)
#   --rounds N   rounds of each pair (default 5)
#   --pairs      which pairs (default all): audit-tamper,postgres,postgres+chain,redis,verify,timeline,report,sealed,upload
#   --json FILE  also write the figures as JSON
# Environment: PRESERVE_BIN (binary to measure; default a release build), BENCH_KEEP=1 (keep the work directory),
#   BENCH_ZSTD_LEVEL (preserve's zstd level for the run, instead of the site default), BENCH_HOLD=1 (no rounds:
#   once the dataset is ready, write $work/env.sh, which sets what the rounds use (snap, baseline, ...), and wait
#   until interrupted, to profile one side by hand: `. $work/env.sh; perf record -g -- $bin snapshot ...`).
set -euo pipefail
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"

scale=1 rounds=5 pairs=audit-tamper,postgres,postgres+chain,redis,verify,timeline,report,sealed,upload json=
while [ $# -gt 0 ]; do
  case $1 in
    --scale) scale=$2 ;; --rounds) rounds=$2 ;; --pairs) pairs=$2 ;; --json) json=$2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift 2
done
want() { [[ ",$pairs," == *",$1,"* ]]; }
n() { python3 -c "import sys; print(max(1, round(float(sys.argv[1]) * float(sys.argv[2]))))" "$1" "$scale"; }
rows=$(n 1000000) dlq=$(n 300000) revoke=$(n 100000) pending=$(n 10000) log_bytes=$(n 200000000)
need pg_dump postgresql-client
need curl curl
need tar tar
if want sealed; then need ssh-keygen openssh-client; need openssl openssl; fi
if want upload; then need garage "an S3 server: cargo install garage --locked"; need rclone rclone; fi

preserve_bin
work_dir
start_postgres
start_redis
if want upload; then start_garage; fi
t0=$(date +%s)

# --- The dataset ------------------------------------------------------------------------------------------------
echo "bench: dataset at scale $scale: $rows audit_events rows, $dlq DLQ entries, $revoke revoke entries ($pending pending), $log_bytes bytes of logs" >&2
home=$work/caracal
mkdir -p "$home/secrets" "$work/docker" "$work/http/api/v2" "$work/c"
hmac_key=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
redis_password=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
printf %s "$hmac_key" > "$home/secrets/auditHmacKey"
printf %s "$redis_password" > "$home/secrets/redisPassword"
python3 -c 'import secrets; print(secrets.token_hex(32), end="")' > "$home/secrets/metricsBearer"

psql -d postgres -c "CREATE DATABASE caracal"
psql -d caracal -v rows="$rows" -v hmac_key="$hmac_key" -f "$bench_root/bench/dataset.sql" >/dev/null &
pg_load=$!

python3 "$bench_root/bench/dataset.py" dlq "$dlq" | redis-cli -p "$redis_port" --pipe >/dev/null
python3 "$bench_root/bench/dataset.py" revoke "$revoke" | redis-cli -p "$redis_port" --pipe >/dev/null
# Three groups as Caracal has them: STS's and one per Gateway pod; the pending entries delivered and never acked.
for g in sts-revocation gateway-revocation:caracal-gateway-7d9f-0 gateway-revocation:caracal-gateway-7d9f-1; do
  redis-cli -p "$redis_port" XGROUP CREATE caracal.sessions.revoke "$g" 0 >/dev/null
done
left=$pending
for g in sts-revocation gateway-revocation:caracal-gateway-7d9f-0 gateway-revocation:caracal-gateway-7d9f-1; do
  take=$(( (pending + 2) / 3 )); [ "$take" -le "$left" ] || take=$left
  [ "$take" = 0 ] || redis-cli -p "$redis_port" XREADGROUP GROUP "$g" "consumer-$g" COUNT "$take" STREAMS caracal.sessions.revoke '>' >/dev/null
  left=$((left - take))
done
redis-cli -p "$redis_port" CONFIG SET requirepass "$redis_password" >/dev/null

python3 "$bench_root/bench/dataset.py" logs "$work/docker" "$log_bytes"

# Audit's and Alertmanager's HTTP endpoints: static stand-ins (the audit-tamper profile reads them).
printf '# HELP caracal_audit_tamper_mismatch_total Content hash mismatches.\ncaracal_audit_tamper_mismatch_total 0\n' > "$work/http/metrics"
echo '{"tamper_mismatch_total":0}' > "$work/http/metrics.json"
echo '{"status":"ready"}' > "$work/http/ready"
echo '{"status":"ok"}' > "$work/http/health"
echo '[]' > "$work/http/api/v2/alerts"; echo '[]' > "$work/http/api/v2/silences"; echo '{"cluster":{}}' > "$work/http/api/v2/status"
http_port=$(free_port)
python3 -m http.server "$http_port" --bind 127.0.0.1 --directory "$work/http" >/dev/null 2>&1 &
on_exit "kill $!"
http_url="http://127.0.0.1:$http_port"
until curl -sf "$http_url/health" >/dev/null; do sleep 0.05; done

wait "$pg_load"
echo "bench: dataset ready in $(( $(date +%s) - t0 )) s" >&2

cat > "$work/preserve.toml" <<EOF
# The benchmark's site: throwaway servers, Docker logs and HTTP stand-ins (bench/run.sh).
organization = "preserve benchmark"
out_dir = "$work/out"
caracal_home = "$home"
docker_dir = "$work/docker"

[redis]
url = "$redis_url"
password = "file:$home/secrets/redisPassword"

[postgres]
url = "$pg_url"

[services]
audit = ["$http_url"]
alertmanager = ["$http_url"]

[audit]
hmac_key = "file:$home/secrets/auditHmacKey"
EOF
if [ -n "${BENCH_ZSTD_LEVEL:-}" ]; then printf '\n[run]\nzstd_level = %s\n' "$BENCH_ZSTD_LEVEL" >> "$work/preserve.toml"; fi
# The same site with report.html made in every bundle.
if grep -q '^\[run\]' "$work/preserve.toml"; then sed 's/^\[run\]$/[run]\nreport = true/' "$work/preserve.toml" > "$work/report.toml"
else cp "$work/preserve.toml" "$work/report.toml"; printf '\n[run]\nreport = true\n' >> "$work/report.toml"; fi
cat > "$work/c/bench.toml" <<'EOF'
[[collector]]
name = "bench-postgres"
kind = "postgres"
tables = [{ table = "public.audit_events" }]

[[collector]]
name = "bench-postgres-chain"
kind = "postgres"
verify_audit_chain = true
tables = [{ table = "public.audit_events" }]

[[collector]]
name = "bench-redis-dlq"
kind = "redis"
streams = ["caracal.audit.events.dlq"]
server_info = false
window = false
EOF

# The sealed site: the same, with a signing key and a local TSA (openssl ts -reply) to stamp every bundle.
if want sealed; then
  pki=$work/tsa && mkdir -p "$pki" && (
    cd "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
      -subj "/CN=bench TSA CA" -days 2 -addext basicConstraints=critical,CA:TRUE 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tsa.key -out tsa.csr \
      -subj "/CN=bench TSA" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=critical,timeStamping\n' > tsa.ext
    openssl x509 -req -in tsa.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tsa.crt -days 2 -extfile tsa.ext 2>/dev/null
    echo 01 > tsaserial
    printf '[ tsa ]\ndefault_tsa = t\n[ t ]\nserial = %s/tsaserial\nsigner_cert = %s/tsa.crt\nsigner_key = %s/tsa.key\nsigner_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256\ness_cert_id_alg = sha256\n' \
      "$pki" "$pki" "$pki" > ts.cnf
  )
  tsa_port=$(free_port)
  python3 "$bench_root/bench/tsa.py" "$tsa_port" "$pki" &
  on_exit "kill $!"
  ssh-keygen -q -t ed25519 -N '' -f "$work/seal_key"
  cp "$work/preserve.toml" "$work/sealed.toml"
  printf '\n[seal]\nsigning_key = "file:%s"\ntsa_url = "http://127.0.0.1:%s/tsr"\ntsa_ca_file = "%s"\n' \
    "$work/seal_key" "$tsa_port" "$pki/ca.crt" >> "$work/sealed.toml"
fi

# The upload site: the same, with a [store] in the Garage bucket; the credentials from the environment (AWS's chain).
# The baseline's rclone is configured by its environment alone (no config file).
if want upload; then
  cp "$work/preserve.toml" "$work/upload.toml"
  printf '\n[store]\nurl = "s3://evidence/preserve"\nendpoint = "%s"\nregion = "garage"\n' "$garage_url" >> "$work/upload.toml"
  export AWS_ACCESS_KEY_ID=$garage_key_id AWS_SECRET_ACCESS_KEY=$garage_secret AWS_EC2_METADATA_DISABLED=true
  export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_GARAGE_TYPE=s3 RCLONE_CONFIG_GARAGE_PROVIDER=Other \
    RCLONE_CONFIG_GARAGE_ENDPOINT=$garage_url RCLONE_CONFIG_GARAGE_REGION=garage RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE=true \
    RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID=$garage_key_id RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY=$garage_secret
fi

# --- The rounds ---------------------------------------------------------------------------------------------------
snap() { "$bin" snapshot -q --config "$work/preserve.toml" --out "$work/out" "$@"; }
report_snap() { "$bin" snapshot -q --config "$work/report.toml" --out "$work/out" "$@"; }
# Exit 0 only when complete and sealed as asked (4 would say the timestamp or signature is missing).
sealed_snap() { "$bin" snapshot -q --config "$work/sealed.toml" --out "$work/out" "$@"; }
# Exit 0 only when complete and the copy in the store confirmed (6 would say it is not).
upload_snap() { "$bin" snapshot -q --config "$work/upload.toml" --out "$work/out" "$@"; }
# The same snapshot without upload, into a directory of its own, then the bundle and its side files (everything there)
# copied to s3://evidence/rclone-ROUND/. rclone's AWS SDK refuses an AWS_CA_BUNDLE (plain http here anyway).
snap_rclone() {
  "$bin" snapshot -q --config "$work/preserve.toml" --out "$work/rclone" --profile audit-tamper &&
    env -u AWS_CA_BUNDLE rclone copy -q "$work/rclone" "garage:evidence/rclone-$1/"
}
export PGCONNECT_TIMEOUT=10
pg_dump_zstd() {
  "$pgbin/pg_dump" -h 127.0.0.1 -p "$pg_port" -U postgres --data-only -t 'public.audit_events*' caracal \
    | zstd -q -T2 -3 > "$work/dump.sql.zst"
}
xrange() { REDISCLI_AUTH=$redis_password redis-cli -p "$redis_port" --raw XRANGE caracal.audit.events.dlq - + > "$work/xrange.txt"; }
baseline() {
  rm -rf "$work/baseline"
  REDISCLI_AUTH=$redis_password "$bench_root/bench/baseline.sh" --postgres "$pg_url" --redis "$redis_url" \
    --docker-dir "$work/docker" --out "$work/baseline" --audit-url "$http_url" --alertmanager-url "$http_url"
}
unpack_check() {
  rm -rf "$work/unpacked" && mkdir "$work/unpacked"
  zstd -q -d -c "$bundle" | tar -x -C "$work/unpacked"
  (cd "$work/unpacked"/*/ && sha256sum -c --quiet manifest-sha256.txt)
}
# Each pair is a preserve label, a preserve command, a baseline label, a baseline command.
: > "$work/pairs.all"
pair() {
  local name=$1 a=$2 acmd=$3 b=$4 bcmd=$5 r=$6
  echo "$name $a $b" >> "$work/pairs.all"
  if [ $((r % 2)) = 1 ]; then measure "$a" bash -c "$acmd"; measure "$b" bash -c "$bcmd"
  else measure "$b" bash -c "$bcmd"; measure "$a" bash -c "$acmd"; fi
  rm -rf "$work/out" "$work/rclone"
}
export -f snap report_snap sealed_snap upload_snap snap_rclone pg_dump_zstd xrange baseline unpack_check
export bin work pgbin pg_port pg_url redis_port redis_url redis_password bench_root http_url
if [ -n "${BENCH_HOLD:-}" ]; then
  held=(bin work pgbin pg_port pg_url redis_port redis_url redis_password bench_root http_url)
  if want upload; then
    held+=(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_EC2_METADATA_DISABLED)
    mapfile -t -O "${#held[@]}" held < <(compgen -e RCLONE_)
  fi
  { declare -f snap report_snap upload_snap snap_rclone pg_dump_zstd xrange baseline unpack_check
    echo 'export -f snap report_snap upload_snap snap_rclone pg_dump_zstd xrange baseline unpack_check'
    for v in "${held[@]}"; do
      printf 'export %s=%q\n' "$v" "${!v}"; done; } > "$work/env.sh"
  echo "bench: holding the servers and dataset; in another shell: . $work/env.sh; snap --profile audit-tamper" >&2
  sleep infinity & wait $!
fi
read -r _ u0 n0 s0 i0 _ < /proc/stat
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$rounds"); do
  echo "bench: round $r of $rounds" >&2
  if want audit-tamper || want verify || want timeline; then
    pair audit-tamper preserve:audit-tamper "snap --profile audit-tamper && mkdir -p '$work/keep' && mv '$work/out'/* '$work/keep/'" \
      baseline.sh baseline "$r"
    bundle=$(ls "$work"/keep/*.tar.zst | tail -1)
    export bundle
    if want verify; then
      pair verify preserve:verify '"$bin" verify "$bundle"' 'zstd-d|tar-x+sha256sum' unpack_check "$r"
    fi
    if want timeline; then
      pair timeline preserve:timeline '"$bin" timeline "$bundle" > /dev/null' preserve:verify '"$bin" verify "$bundle"' "$r"
    fi
    for f in "$work"/keep/*; do [[ $f == "${bundle%.tar.zst}"* ]] || rm -f "$f"; done
  fi
  want postgres && pair postgres preserve:postgres "snap -c bench-postgres --collectors '$work/c'" 'pg_dump|zstd' pg_dump_zstd "$r"
  want postgres+chain && pair postgres+chain preserve:postgres+chain "snap -c bench-postgres-chain --collectors '$work/c'" \
    'pg_dump|zstd' pg_dump_zstd "$r"
  want redis && pair redis preserve:redis-dlq "snap -c bench-redis-dlq --collectors '$work/c'" redis-cli:XRANGE xrange "$r"
  want report && pair report preserve:audit-tamper+report \
    "report_snap --profile audit-tamper && rm -rf '$work/keep-report' && mkdir -p '$work/keep-report' && mv '$work/out'/* '$work/keep-report/'" \
    preserve:audit-tamper "snap --profile audit-tamper" "$r"
  want sealed && pair sealed preserve:audit-tamper+seal "sealed_snap --profile audit-tamper" \
    preserve:unsealed "snap --profile audit-tamper" "$r"
  want upload && pair upload preserve:snapshot+upload "upload_snap --profile audit-tamper --upload" \
    snapshot+rclone-copy "snap_rclone $r" "$r"
done
read -r _ u1 n1 s1 i1 _ < /proc/stat
load1=$(cut -d' ' -f1-3 /proc/loadavg)
sort -u "$work/pairs.all" | sort -k1,1 -s > "$work/pairs"

# The audit-tamper bundle is what it should be: complete, the chain verified with no problem, every record there.
[ -z "${bundle:-}" ] || python3 - "$bundle" "$rows" "$dlq" <<'PY'
import json, sys, re
m = json.load(open(re.sub(r"\.tar\.zst$", ".manifest.json", sys.argv[1])))
rows, dlq = int(sys.argv[2]), int(sys.argv[3])
assert m["status"] == "complete", [(c["name"], c["status"], c.get("error")) for c in m["collectors"]]
codes = [f["code"] for f in m["findings"]]
assert "audit.chain.ok" in codes, codes
records = {a["path"]: a.get("records") for c in m["collectors"] for a in c["artifacts"]}
assert any(p.endswith("audit_events.csv") and r == rows for p, r in records.items()), records
assert any("audit.events.dlq" in p and r == dlq for p, r in records.items()), records
PY

# The upload pair stored what it says: one bundle a round from each side.
if want upload; then
  stored=$(env -u AWS_CA_BUNDLE rclone lsf -R --files-only garage:evidence)
  for prefix in preserve/ rclone-; do
    count=$(grep -c "^$prefix.*\.tar\.zst$" <<< "$stored" || true)
    [ "$count" = "$rounds" ] || { echo "bench: $count bundles stored under evidence/$prefix, not $rounds:" >&2; echo "$stored" >&2; exit 1; }
  done
fi

# The report made in a bundle: its size (it summarizes, so it stays small at any scale: at most 2 MiB).
if want report; then
  report_bytes=$(tar --zstd -xOf "$(ls "$work"/keep-report/*.tar.zst | tail -1)" --wildcards '*/report.html' | wc -c)
  [ "$report_bytes" -gt 0 ] && [ "$report_bytes" -lt $((2 << 20)) ] || { echo "bench: report.html is $report_bytes bytes" >&2; exit 1; }
fi

echo
echo "preserve benchmark: scale $scale ($rows audit_events rows, $dlq DLQ entries, $revoke revoke entries, $((log_bytes / 1000000)) MB of logs), $rounds rounds, $(nproc) cores"
python3 - "$u0" "$n0" "$s0" "$i0" "$u1" "$n1" "$s1" "$i1" "$load0" "$load1" <<'PY'
import sys
u0, n0, s0, i0, u1, n1, s1, i1 = map(int, sys.argv[1:9])
busy = (u1 + n1 + s1) - (u0 + n0 + s0); idle = i1 - i0
print(f"machine: load average {sys.argv[9]} before, {sys.argv[10]} after; CPU busy {100 * busy / max(1, busy + idle):.0f}% during the rounds (both sides and anything else running)")
PY
[ -z "${report_bytes:-}" ] || echo "report.html of the audit-tamper bundle: $report_bytes bytes"
report "$work/pairs" "$json"

#!/usr/bin/env bash
# The sidecar under an alert storm while it snapshots: `preserve serve` answers Alertmanager webhooks at a fixed
# rate (hey: 10 workers x 20 req/s = 200 req/s) while a snapshot collects, redacts, hashes and compresses a stream of
# log lines (the two cores are busy with it). Prints hey's latency distribution (the figure is p99 webhook -> 202),
# whether the snapshot was still running when the load ended, and the sidecar's peak RSS.
# Usage: bench/serve-webhook.sh [seconds (default 20)]
# Needs hey (Debian package `hey`) and curl. Builds preserve in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/preserve
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/c" "$work/home"
cat > "$work/c/bench.toml" <<'TOML'
[[collector]]
name = "busy-logs"
kind = "command"
timeout = "10m"
argv = ["sh", "-c", "yes '{\"level\":\"info\",\"time\":\"2026-11-29T02:00:00Z\",\"service\":\"audit\",\"msg\":\"event ingested\",\"request_id\":\"req-8f3a\",\"zone_id\":\"z1\"}' | head -c 8G"]

[[profile]]
name = "audit-tamper"
alerts = ["CaracalAuditTamperDetected"]
collectors = ["busy-logs"]
TOML
printf 'bench-token' > "$work/token"
cat > "$work/alert.json" <<'JSON'
{"version":"4","groupKey":"{}:{alertname=\"CaracalAuditTamperDetected\"}","truncatedAlerts":0,"status":"firing",
 "receiver":"preserve","groupLabels":{"alertname":"CaracalAuditTamperDetected"},"commonLabels":{},"commonAnnotations":{},
 "externalURL":"http://alertmanager:9093","alerts":[{"status":"firing","labels":{"alertname":"CaracalAuditTamperDetected",
 "severity":"critical","component":"audit"},"annotations":{"summary":"Audit tamper detected"},
 "startsAt":"2026-11-29T02:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph",
 "fingerprint":"5d1c0ffee0ddba11"}]}
JSON
HOME=$work/home PRESERVE_SERVE_TOKEN=file:$work/token "$bin" serve --listen 127.0.0.1:0 --out "$work/out" \
  --collectors "$work/c" 2> "$work/serve.log" &
pid=$!
until grep -q "listening on" "$work/serve.log"; do sleep 0.05; done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -1)
post() { curl -sf -o /dev/null -X POST -H 'Authorization: Bearer bench-token' -H 'Content-Type: application/json' \
  --data @"$work/alert.json" "$url/alertmanager"; }
post
until grep -q "collector busy-logs: started" "$work/serve.log"; do sleep 0.05; done
hey -z "${secs}s" -c 10 -q 20 -m POST -H 'Authorization: Bearer bench-token' -T application/json \
  -D "$work/alert.json" "$url/alertmanager"
echo "snapshot still running at the end of the load: $(curl -sf "$url/metrics" | awk '$1=="preserve_snapshots_running"{print ($2>0?"yes":"NO")}')"
echo "sidecar peak RSS: $(awk '/VmHWM/{print $2, $3}' "/proc/$pid/status")"

#!/usr/bin/env bash
# Starts the Caracal sandbox (a real redis-server and PostgreSQL with Caracal's streams, DLQ, keys and tables, HTTP
# stand-ins for its services, a $CARACAL_HOME and Docker logs: tests/support/sandbox.rs), runs the `full` profile
# against it so every collector works, verifies the bundle and prints its summary, then stops the sandbox.
# Installs redis-server and PostgreSQL when missing. Bundles go to ./evidence (or $PRESERVE_OUT).
# Usage: scripts/quickstart.sh [extra `preserve snapshot` arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
have() { command -v "$1" >/dev/null 2>&1; }

missing=()
have redis-server || missing+=(redis-server)
have redis-cli || missing+=(redis-tools)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || have initdb || missing+=(postgresql)
have psql || missing+=(postgresql-client)
have runuser || missing+=(util-linux)
have zstd || missing+=(zstd)
if [ ${#missing[@]} -gt 0 ]; then
  echo "quickstart: installing ${missing[*]}" >&2
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

cargo build --release --quiet --bin preserve --example caracal-sandbox
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/preserve
out=${PRESERVE_OUT:-./evidence}

log=$(mktemp)
"$target/release/examples/caracal-sandbox" >"$log" 2>&1 &
sandbox=$!
trap 'kill "$sandbox" 2>/dev/null; wait "$sandbox" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
  grep -q '^SANDBOX_ALERT=' "$log" && break
  kill -0 "$sandbox" 2>/dev/null || { cat "$log" >&2; echo "quickstart: the sandbox did not start" >&2; exit 1; }
  sleep 0.2
done
config=$(sed -n 's/^PRESERVE_CONFIG=//p' "$log")
alert=$(sed -n 's/^SANDBOX_ALERT=//p' "$log")
[ -n "$config" ] || { cat "$log" >&2; echo "quickstart: the sandbox did not start in time" >&2; exit 1; }
sed -n '/^Caracal sandbox/,/CARACAL_HOME/p' "$log"
echo

set +e
# With the sandbox's CaracalAuditTamperDetected alert, whose labels (zone, request) feed the request filters.
bundle=$("$bin" snapshot --profile full --config "$config" --alert "$alert" --out "$out" "$@")
code=$?
set -e
# 0: complete; 3: partial (some collector could not read everything; the bundle is still whole and verifiable).
if [ "$code" != 0 ] && [ "$code" != 3 ]; then
  echo "quickstart: snapshot failed with exit code $code" >&2
  exit "$code"
fi
echo "bundle: $bundle"
"$bin" verify "$bundle"
"$bin" inspect "$bundle"
echo
echo "Check it with standard tools too:"
echo "  (cd $(dirname "$bundle") && sha256sum -c $(basename "$bundle").sha256)"
echo "  tar --zstd -xf $bundle && (cd $(basename "$bundle" .tar.zst) && sha256sum -c manifest-sha256.txt)"

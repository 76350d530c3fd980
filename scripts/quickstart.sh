#!/usr/bin/env bash
# Builds preserve, takes a real snapshot of this machine (its /var/log logs, processes and disks: the `host`
# profile), verifies the bundle and prints its summary. Bundles go to ./evidence (or $PRESERVE_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/preserve
out=${PRESERVE_OUT:-./evidence}

set +e
bundle=$("$bin" snapshot --profile host --out "$out" "$@")
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

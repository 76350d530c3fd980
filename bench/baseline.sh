#!/usr/bin/env bash
# The collection an operator would script instead of `preserve snapshot --profile audit-tamper`, one step after the
# other with the standard tools: the audit tables with `pg_dump --data-only | zstd -T2`, every dead-letter stream with
# `redis-cli --raw XRANGE`, the Audit service's Docker logs with `tar --zstd`, the Audit and Alertmanager endpoints
# with curl, and `sha256sum` of everything written. No redaction, no chain verification, no manifest.
# Usage: bench/baseline.sh --postgres URL --redis URL --docker-dir DIR --out DIR [--audit-url URL] [--alertmanager-url URL]
set -euo pipefail
while [ $# -gt 0 ]; do
  case $1 in
    --postgres) pg=$2 ;; --redis) redis=$2 ;; --docker-dir) docker=$2 ;; --out) out=$2 ;;
    --audit-url) audit=$2 ;; --alertmanager-url) am=$2 ;;
    *) echo "baseline.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift 2
done
: "${pg:?--postgres}" "${redis:?--redis}" "${docker:?--docker-dir}" "${out:?--out}"
mkdir -p "$out/redis"

pg_dump --data-only -t 'public.audit_events*' -t public.audit_ingest_alerts -t public.audit_chain_rehash \
  -t public.audit_retention -t public.audit_export_watermark -t public.admin_audit_events "$pg" \
  | zstd -q -T2 -3 > "$out/postgres-audit.sql.zst"

for pattern in '*.dlq' '*.dead'; do
  redis-cli -u "$redis" --scan --pattern "$pattern" | while read -r stream; do
    [ "$(redis-cli -u "$redis" TYPE "$stream")" = stream ] || continue
    redis-cli -u "$redis" --raw XRANGE "$stream" - + > "$out/redis/$stream.txt"
  done
done

containers=$(cd "$docker" && grep -lE '"com.docker.compose.service": ?"audit"' ./*/config.v2.json | xargs -n1 dirname)
# shellcheck disable=SC2086 # one word per container directory
tar --zstd -cf "$out/audit-logs.tar.zst" -C "$docker" $containers

if [ -n "${audit:-}" ]; then
  for p in metrics metrics.json ready health; do curl -sf "$audit/$p" -o "$out/audit-$p"; done
fi
if [ -n "${am:-}" ]; then
  for p in alerts silences status; do curl -sf "$am/api/v2/$p" -o "$out/alertmanager-$p.json"; done
fi

(cd "$out" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS)

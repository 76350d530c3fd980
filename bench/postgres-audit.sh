#!/usr/bin/env bash
# Postgres export, side by side: `preserve snapshot` of a Caracal-shaped, partitioned `audit_events` (with and
# without audit-chain verification) against `pg_dump --data-only -t 'public.audit_events*' | zstd -T2 -3 > file`,
# alternating, reporting median wall time, ratios and peak RSS.
# Usage: bench/postgres-audit.sh [rows (default 1000000)] [rounds (default 3)]
# Starts its own PostgreSQL (initdb in a temporary directory; as root it runs as the postgres user).
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
rounds=${2:-3}
cargo build --release --quiet
bin=$PWD/target/release/preserve
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d)
chmod 711 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir "$work/pg" && { [ "$(id -u)" = 0 ] && chown postgres:postgres "$work/pg" || true; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$pgbin/initdb" -A trust -U postgres -E UTF8 --locale C -D "$work/pg/data" >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off" -w start >/dev/null
trap 'as_pg "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
psql() { command psql -h 127.0.0.1 -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c "CREATE DATABASE caracal"
psql -d caracal <<SQL
CREATE TABLE audit_events (
  id text NOT NULL, zone_id text NOT NULL, event_type text NOT NULL, request_id text, decision text, policy_set_id text,
  policy_set_version_id text, manifest_sha text, evaluation_status text, determining_policies_json jsonb,
  diagnostics_json jsonb, metadata_json jsonb, occurred_at timestamptz NOT NULL, ingested_at timestamptz DEFAULT now(),
  content_sha256 text, prev_content_sha256 text, chain_hmac text, chain_seq bigint, ingest_signature text,
  PRIMARY KEY (id, occurred_at)) PARTITION BY RANGE (occurred_at);
CREATE TABLE audit_events_y2026m10 PARTITION OF audit_events FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE audit_events_y2026m11 PARTITION OF audit_events FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;
INSERT INTO audit_events (id, zone_id, event_type, request_id, decision, policy_set_version_id, manifest_sha,
  evaluation_status, determining_policies_json, diagnostics_json, metadata_json, occurred_at, chain_seq, ingest_signature)
SELECT '0193a0c4-' || lpad(i::text, 12, '0'), 'z' || (i % 10), 'token.exchange', 'req-' || i,
  CASE WHEN i % 9 = 0 THEN 'deny' ELSE 'allow' END, '0193a0c4-psv-0002', md5(i::text), 'evaluated',
  jsonb_build_array('0193a0c4-pv-0001'), jsonb_build_object('rule', 'r' || (i % 50)),
  jsonb_build_object('agent_session_id', 'as_' || (i % 977), 'session_id', 'ar_' || (i % 331), 'client_ip', '10.0.0.' || (i % 250)),
  timestamptz '2026-10-15 00:00:00+00' + (i * 2 || ' seconds')::interval, i / 10 + 1, md5('sig' || i)
FROM generate_series(1, $rows) i;
UPDATE audit_events SET content_sha256 = encode(sha256(convert_to(id || chr(31) || zone_id || chr(31) || event_type || chr(31) ||
  coalesce(request_id, '') || chr(31) || coalesce(decision, '') || chr(31) || coalesce(policy_set_id, '') || chr(31) ||
  coalesce(policy_set_version_id, '') || chr(31) || coalesce(manifest_sha, '') || chr(31) || coalesce(evaluation_status, '') || chr(31) ||
  coalesce(determining_policies_json::text, 'null') || chr(31) || coalesce(diagnostics_json::text, 'null') || chr(31) ||
  coalesce(metadata_json::text, 'null') || chr(31) || ((extract(epoch FROM occurred_at) * 1000000)::bigint * 1000)::text, 'UTF8')), 'hex');
-- A valid chain per zone, and the index Caracal's Audit service keeps for its head lookups.
UPDATE audit_events a SET prev_content_sha256 = p.prev FROM (SELECT id, occurred_at,
  lag(content_sha256) OVER (PARTITION BY zone_id ORDER BY chain_seq) AS prev FROM audit_events) p
  WHERE p.id = a.id AND p.occurred_at = a.occurred_at;
CREATE INDEX audit_events_zone_chain ON audit_events (zone_id, chain_seq DESC);
VACUUM ANALYZE audit_events;
SQL
mkdir -p "$work/c"
printf '[[collector]]\nname = "audit"\nkind = "postgres"\ntables = [{ table = "public.audit_events" }]\n' > "$work/c/a.toml"
printf '[[collector]]\nname = "audit-chain"\nkind = "postgres"\nverify_audit_chain = true\ntables = [{ table = "public.audit_events" }]\n' > "$work/c/b.toml"
url="postgres://postgres@127.0.0.1:$port/caracal"
measure() { local label=$1; shift; /usr/bin/time -f "$label %e %M" "$@" 2>>"$work/times" >/dev/null; }
for r in $(seq "$rounds"); do
  measure preserve env PRESERVE_POSTGRES_URL="$url" "$bin" snapshot -q -c audit --collectors "$work/c" --out "$work/out"
  measure pg_dump sh -c "'$pgbin/pg_dump' -h 127.0.0.1 -p $port -U postgres --data-only -t 'public.audit_events*' caracal | zstd -q -T2 -3 > '$work/dump.zst'"
  measure preserve+chain env PRESERVE_POSTGRES_URL="$url" "$bin" snapshot -q -c audit-chain --collectors "$work/c" --out "$work/out"
  rm -rf "$work/out"
done
csv_mb=$(psql -d caracal -At -c "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits WHERE inhparent = 'audit_events'::regclass")
python3 - "$work/times" "$rows" "$csv_mb" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 3 and p[0] in ("preserve", "pg_dump", "preserve+chain"):
        rows.setdefault(p[0], []).append((float(p[1]), int(p[2])))
med = {k: statistics.median(t for t, _ in v) for k, v in rows.items()}
rss = {k: max(m for _, m in v) / 1024 for k, v in rows.items()}
print(f"postgres export: {sys.argv[2]} audit_events rows ({sys.argv[3]} on disk), {len(rows['preserve'])} rounds")
for k in ("preserve", "preserve+chain", "pg_dump"):
    print(f"  {k:<15} median {med[k]:.2f} s  peak RSS {rss[k]:.0f} MiB")
print(f"  ratio preserve/pg_dump|zstd {med['preserve'] / med['pg_dump']:.2f}")
print(f"  chain verification adds {100 * (med['preserve+chain'] / med['preserve'] - 1):.0f}%")
PY

-- The benchmark's Caracal audit ledger (caracal.md §2.3, §6.1), loaded with
--   psql -v rows=N -v hmac_key=HEX -f bench/dataset.sql
-- `audit_events` partitioned by month around now, N rows over 10 zones, interleaved in time as Audit inserts them
-- (row i is zone i % 10, chain_seq i / 10 + 1), every content hash by Caracal's formula, a valid chain per zone and
-- chain_hmac with the key; Caracal's indexes; the small audit tables the audit-tamper profile also reads.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

\ir ../tests/support/audit_ledger.sql

-- One statement: the rows, their content hashes, the links (lag over each zone's chain) and the HMACs, inserted in
-- time order so each partition's heap interleaves the zones as Caracal's does.
INSERT INTO audit_events (id, zone_id, event_type, request_id, decision, policy_set_id, policy_set_version_id,
  manifest_sha, evaluation_status, determining_policies_json, diagnostics_json, metadata_json, occurred_at, ingested_at,
  content_sha256, prev_content_sha256, chain_hmac, chain_seq, ingest_signature)
SELECT id, zone_id, event_type, request_id, decision, policy_set_id, policy_set_version_id, manifest_sha,
  evaluation_status, det, diag, meta, occurred_at, occurred_at + interval '40 milliseconds', content, prev,
  encode(hmac(convert_to(content || '|' || coalesce(prev, ''), 'UTF8'), decode(:'hmac_key', 'hex'), 'sha256'), 'hex'),
  chain_seq, sig
FROM (
  SELECT *, lag(content) OVER (PARTITION BY zone_id ORDER BY chain_seq) AS prev
  FROM (
    SELECT *, encode(sha256(convert_to(id || chr(31) || zone_id || chr(31) || event_type || chr(31) ||
      coalesce(request_id, '') || chr(31) || coalesce(decision, '') || chr(31) || coalesce(policy_set_id, '') || chr(31) ||
      coalesce(policy_set_version_id, '') || chr(31) || coalesce(manifest_sha, '') || chr(31) ||
      coalesce(evaluation_status, '') || chr(31) || coalesce(det::text, 'null') || chr(31) ||
      coalesce(diag::text, 'null') || chr(31) || coalesce(meta::text, 'null') || chr(31) ||
      ((extract(epoch FROM occurred_at) * 1000000)::bigint * 1000)::text, 'UTF8')), 'hex') AS content
    FROM (
      SELECT i, 'evt-' || lpad(i::text, 10, '0') || '-' || left(md5(i::text), 12) AS id,
        'zone-' || lpad((i % 10)::text, 2, '0') AS zone_id,
        (ARRAY['token.exchange', 'token.exchange', 'token.exchange', 'resource.access', 'mandate.issued', 'policy.evaluated'])[1 + i % 6] AS event_type,
        'req-' || md5('r' || i) AS request_id,
        CASE WHEN i % 9 = 0 THEN 'deny' ELSE 'allow' END AS decision,
        'ps-' || (i % 10) AS policy_set_id, 'psv-' || (i % 10) || '-' || (1 + i / 250000) AS policy_set_version_id,
        md5('manifest' || (i % 10) || (i / 250000)) AS manifest_sha, 'evaluated' AS evaluation_status,
        jsonb_build_array('pv-' || (i % 37), 'pv-base-1') AS det,
        CASE WHEN i % 3 = 0 THEN NULL ELSE jsonb_build_object('rule', 'r' || (i % 50), 'eval_ms', i % 17) END AS diag,
        jsonb_build_object('agent_session_id', 'as_' || (i % 977), 'session_id', 'ar_' || (i % 331),
          'delegation_edge_id', 'de_' || (i % 113), 'client_ip', '10.0.' || (i % 7) || '.' || (i % 250),
          'resource', 'resource://billing/' || (i % 23)) AS meta,
        now() - interval '55 days' + (i::float8 / :rows) * interval '55 days' AS occurred_at,
        i / 10 + 1 AS chain_seq, md5('sig' || i) || md5('sig2' || i) AS sig
      FROM generate_series(0, :rows - 1) i
    ) base
  ) hashed
) linked
ORDER BY i;
CREATE INDEX audit_events_zone_seq ON audit_events (zone_id, chain_seq DESC);
CREATE INDEX audit_events_request ON audit_events (request_id);
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY zone_isolation ON audit_events
  USING (current_setting('caracal.zone_id', true) = '*' OR zone_id = current_setting('caracal.zone_id', true));

INSERT INTO audit_ingest_alerts (event_id, zone_id, kind, detail, observed_at)
  SELECT 'evt-' || i, 'zone-0' || (i % 10), 'content_mismatch_on_replay', 'stored=' || md5('a' || i) || md5('b' || i) ||
    ' incoming=' || md5('c' || i) || md5('d' || i), now() - i * interval '1 minute' FROM generate_series(1, 20) i;
INSERT INTO audit_chain_rehash VALUES (1, now() - interval '80 days');
INSERT INTO audit_retention VALUES (true, 365, 'admin-oncall', now() - interval '2 hours');
INSERT INTO audit_export_watermark VALUES ('parquet-hourly', date_trunc('hour', now()) - interval '1 hour');

-- Admin audit: one chain per zone and a global one (zone NULL), a row per thousand audit events.
INSERT INTO admin_audit_events (id, request_id, actor_id, actor_name, actor_scope, action, method, path, zone_id,
  entity_type, entity_id, status_code, payload_json, occurred_at, chain_seq, content_sha256)
SELECT 'adm-' || i, 'req-adm-' || i, 'admin-oncall', 'On-call', 'zone', 'policy_set.activate', 'POST',
  '/v1/zones/zone-0' || (i % 11) || '/policy-sets/ps-main/activate', CASE WHEN i % 11 = 10 THEN NULL ELSE 'zone-0' || (i % 11) END,
  'policy_set', 'ps-main', 200, '{"change_kind": "activate", "changed_fields": ["active_version_id"]}',
  now() - interval '55 days' + i * interval '1 minute', i / 11 + 1, encode(sha256(convert_to('adm-' || i, 'UTF8')), 'hex')
FROM generate_series(0, greatest(10, :rows / 1000)) i;
UPDATE admin_audit_events a SET prev_content_sha256 = p.prev
  FROM (SELECT id, lag(content_sha256) OVER (PARTITION BY zone_id ORDER BY chain_seq) AS prev FROM admin_audit_events) p WHERE p.id = a.id;
UPDATE admin_audit_events SET chain_hmac = encode(hmac(convert_to(content_sha256 || '|' || coalesce(prev_content_sha256, ''), 'UTF8'),
  decode(:'hmac_key', 'hex'), 'sha256'), 'hex');
VACUUM ANALYZE;

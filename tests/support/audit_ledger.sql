-- Caracal's audit ledger (caracal.md §2.3): `audit_events` partitioned by month from two months ago to next month,
-- and the default partition for the rest; the tables around it (ingest alerts, rehash, retention, export watermark)
-- and the admin ledger. Tables only, no rows: one definition for the test fixtures (loaded before caracal.sql) and
-- the benchmark (bench/dataset.sql includes it).
CREATE TABLE audit_events (
  id text NOT NULL, zone_id text NOT NULL, event_type text NOT NULL, request_id text, decision text, policy_set_id text,
  policy_set_version_id text, manifest_sha text, evaluation_status text, determining_policies_json jsonb,
  diagnostics_json jsonb, metadata_json jsonb, occurred_at timestamptz NOT NULL, ingested_at timestamptz NOT NULL DEFAULT now(),
  content_sha256 text, prev_content_sha256 text, chain_hmac text, chain_seq bigint, ingest_signature text,
  PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;
DO $$
DECLARE m date;
BEGIN
  FOR m IN SELECT generate_series(date_trunc('month', now() - interval '60 days'), date_trunc('month', now() + interval '31 days'), interval '1 month')::date LOOP
    EXECUTE format('CREATE TABLE audit_events_y%sm%s PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
      to_char(m, 'YYYY'), to_char(m, 'MM'), m, (m + interval '1 month')::date);
  END LOOP;
END $$;

CREATE TABLE audit_ingest_alerts (id bigserial PRIMARY KEY, event_id text NOT NULL, zone_id text NOT NULL, kind text NOT NULL,
  detail text, observed_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE audit_chain_rehash (id int PRIMARY KEY CHECK (id = 1), completed_at timestamptz NOT NULL);
CREATE TABLE audit_retention (singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), retention_days int NOT NULL,
  updated_by text, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE audit_export_watermark (name text PRIMARY KEY, last_exported_hour timestamptz);
CREATE TABLE admin_audit_events (
  id text PRIMARY KEY, request_id text, actor_id text, actor_name text, actor_scope text, action text, method text, path text,
  zone_id text, entity_type text, entity_id text, status_code int, payload_json jsonb, occurred_at timestamptz NOT NULL,
  content_sha256 text, prev_content_sha256 text, chain_hmac text, chain_seq bigint
);

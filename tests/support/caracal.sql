-- A Caracal-shaped database (caracal.md §2.3) for the sandbox: every table the collectors in
-- collectors/caracal-postgres.toml read, row-level security keyed on `caracal.zone_id`, a partitioned audit ledger
-- whose hash chain is built with Caracal's formula (§6.1) and then tampered with once, and the rows each incident
-- profile looks for. Times are relative to now(), so every profile's window holds them. `{{AUDIT_HMAC_KEY}}` is
-- replaced by the sandbox's key (hex) before loading.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE zones (id text PRIMARY KEY, name text NOT NULL, slug text UNIQUE NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO zones VALUES ('zone-alpha', 'Alpha', 'alpha', now() - interval '90 days'),
  ('zone-beta', 'Beta', 'beta', now() - interval '90 days'),
  ('caracal-sys-00', 'caracal.sys/system', 'caracal-sys-00', now() - interval '90 days');

CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO schema_migrations (version) VALUES ('0001_baseline'), ('0002_approval_hardening'), ('0003_operator_run_token_usage');

-- The audit ledger (audit_ledger.sql, loaded before this file): Caracal's indexes on it.
CREATE INDEX audit_events_zone_seq ON audit_events (zone_id, chain_seq DESC);
CREATE INDEX audit_events_request ON audit_events (request_id);

-- Ordinary traffic: the first five events of each zone 45 days ago (an older partition), the rest in the last hours.
INSERT INTO audit_events (id, zone_id, event_type, request_id, decision, policy_set_version_id, manifest_sha,
  evaluation_status, determining_policies_json, diagnostics_json, metadata_json, occurred_at, chain_seq)
SELECT 'evt-' || z.short || '-' || lpad(s::text, 4, '0'), z.id,
  CASE WHEN s % 9 = 0 THEN 'mandate.issued' ELSE 'token.exchange' END,
  'req-' || z.short || '-' || lpad(s::text, 4, '0'),
  CASE WHEN s % 4 = 0 THEN 'deny' ELSE 'allow' END, 'psv-main-1', 'manifest-sha-v1', 'evaluated',
  '["pv-base-1"]', CASE WHEN s % 3 = 0 THEN NULL ELSE jsonb_build_object('rule', 'billing_read', 'n', s) END,
  jsonb_build_object('agent_session_id', 'as-' || z.short || '-' || s, 'session_id', 'ar-' || z.short || '-' || s,
                     'delegation_edge_id', 'de-' || z.short || '-' || s, 'resource', 'resource://billing'),
  CASE WHEN s <= 5 THEN now() - interval '45 days' + s * interval '1 minute'
       ELSE now() - interval '3 hours' + s * interval '1 minute' END,
  s
FROM (VALUES ('zone-alpha', 'alpha', 40), ('zone-beta', 'beta', 20), ('caracal-sys-00', 'sys', 6)) z(id, short, n),
     generate_series(1, z.n) s;
-- The incident: a request the widened policy set version 2 allowed, then a revealed client secret.
INSERT INTO audit_events (id, zone_id, event_type, request_id, decision, policy_set_version_id, manifest_sha,
  evaluation_status, determining_policies_json, diagnostics_json, metadata_json, occurred_at, chain_seq)
VALUES
  ('evt-alpha-0041', 'zone-alpha', 'token.exchange', 'req-incident-7f3a', 'allow', 'psv-main-2', 'manifest-sha-v2', 'evaluated',
   '["pv-allow-2"]', '{"matched": "allow_billing_prefix"}', '{"agent_session_id": "as-incident-01", "session_id": "ar-revoked-01", "resource": "resource://billing/export"}',
   now() - interval '20 minutes', 41),
  ('evt-alpha-0042', 'zone-alpha', 'resource.access', 'req-incident-7f3a', 'allow', 'psv-main-2', 'manifest-sha-v2', 'evaluated',
   '["pv-allow-2"]', NULL, '{"agent_session_id": "as-incident-01", "delegation_edge_id": "de-revoked-01", "resource": "resource://billing/export"}',
   now() - interval '19 minutes', 42),
  ('evt-alpha-0043', 'zone-alpha', 'credential_revealed', 'req-reveal-55c1', NULL, NULL, NULL, NULL,
   NULL, NULL, '{"application_id": "app-billing", "actor_id": "admin-oncall"}',
   now() - interval '10 minutes', 43);

-- The chain, with Caracal's formula (audit_chain.sql), keyed by the audit HMAC key; producers sign each event.
SELECT fixture_audit_content();
SELECT fixture_chain_links('audit_events', '{{AUDIT_HMAC_KEY}}');
UPDATE audit_events SET ingest_signature = encode(hmac(convert_to(id, 'UTF8'), 'producer-sig', 'sha256'), 'hex');
-- The tampering CaracalAuditTamperDetected fires for: a denied request rewritten to allow.
UPDATE audit_events SET decision = 'allow' WHERE id = 'evt-beta-0008';

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY zone_isolation ON audit_events
  USING (current_setting('caracal.zone_id', true) = '*' OR zone_id = current_setting('caracal.zone_id', true));

INSERT INTO audit_ingest_alerts (event_id, zone_id, kind, detail, observed_at)
  VALUES ('evt-beta-0008', 'zone-beta', 'content_mismatch_on_replay', 'stored=' || md5('a') || md5('b') || ' incoming=' || md5('c') || md5('d'), now() - interval '15 minutes');
INSERT INTO audit_chain_rehash VALUES (1, now() - interval '80 days');
INSERT INTO audit_retention VALUES (true, 365, 'admin-oncall', now() - interval '2 hours');
INSERT INTO audit_export_watermark VALUES ('parquet-hourly', date_trunc('hour', now()) - interval '1 hour');

-- Admin audit: a chain per zone and a global one (zone NULL); the content hashes stand in for the JavaScript ones.
INSERT INTO admin_audit_events (id, request_id, actor_id, actor_name, actor_scope, action, method, path, zone_id,
  entity_type, entity_id, status_code, payload_json, occurred_at, chain_seq)
VALUES
  ('adm-alpha-1', 'req-adm-ps-create', 'admin-oncall', 'On-call', 'zone', 'policy_set_version.create', 'POST',
   '/v1/zones/zone-alpha/policy-sets/ps-main/versions', 'zone-alpha', 'policy_set_version', 'psv-main-2', 201,
   '{"change_kind": "create", "changed_fields": ["manifest"]}', now() - interval '50 minutes', 1),
  ('adm-alpha-2', 'req-adm-activate-01', 'admin-oncall', 'On-call', 'zone', 'policy_set.activate', 'POST',
   '/v1/zones/zone-alpha/policy-sets/ps-main/activate', 'zone-alpha', 'policy_set', 'ps-main', 200,
   '{"change_kind": "activate", "changed_fields": ["active_version_id"]}', now() - interval '45 minutes', 2),
  ('adm-alpha-3', 'req-adm-rotate-01', 'admin-oncall', 'On-call', 'zone', 'application.rotate_secret', 'POST',
   '/v1/zones/zone-alpha/applications/app-billing/rotate-secret', 'zone-alpha', 'application', 'app-billing', 200,
   '{"change_kind": "secret_rotation", "secret_rotated": true}', now() - interval '5 minutes', 3),
  ('adm-alpha-4', 'req-adm-policy-01', 'admin-oncall', 'On-call', 'zone', 'policy_version.create', 'POST',
   '/v1/zones/zone-alpha/policies/pol-allow/versions', 'zone-alpha', 'policy_version', 'pv-allow-2', 201,
   '{"change_kind": "create", "changed_fields": ["content"]}', now() - interval '55 minutes', 4),
  ('adm-global-1', 'req-adm-retention-01', 'admin-root', 'Root', 'global', 'audit_retention.update', 'PUT',
   '/v1/audit-retention', NULL, 'audit_retention', 'singleton', 200,
   '{"change_kind": "update", "changed_fields": ["retention_days"]}', now() - interval '2 hours', 1),
  ('adm-global-2', 'req-adm-token-01', 'admin-root', 'Root', 'global', 'admin_token.create', 'POST',
   '/v1/admin-tokens', NULL, 'admin_token', 'adm-tok-ci', 201,
   '{"change_kind": "create", "changed_fields": ["name", "scope"]}', now() - interval '90 minutes', 2);
UPDATE admin_audit_events SET content_sha256 = encode(sha256(convert_to(id || chr(31) || coalesce(request_id, '') || chr(31) || path, 'UTF8')), 'hex');
SELECT fixture_chain_links('admin_audit_events', '{{AUDIT_HMAC_KEY}}');

-- Policy: immutable versions, a manifest per set version naming policy versions, one active set per zone.
CREATE TABLE policies (id text PRIMARY KEY, zone_id text NOT NULL, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE policy_versions (id text PRIMARY KEY, policy_id text NOT NULL REFERENCES policies(id), version int NOT NULL,
  content text NOT NULL, content_sha256 text NOT NULL, schema_version int NOT NULL DEFAULT 1, created_by text,
  created_at timestamptz NOT NULL DEFAULT now(), archived_at timestamptz, created_via_operator boolean NOT NULL DEFAULT false);
CREATE FUNCTION reject_policy_version_mutation() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'policy versions are immutable'; END $$;
CREATE TABLE policy_sets (id text PRIMARY KEY, zone_id text NOT NULL, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE policy_set_versions (id text PRIMARY KEY, policy_set_id text NOT NULL REFERENCES policy_sets(id), version int NOT NULL,
  manifest_json jsonb NOT NULL, manifest_sha256 text NOT NULL, schema_version int NOT NULL DEFAULT 1, created_by text,
  created_at timestamptz NOT NULL DEFAULT now(), archived_at timestamptz);
CREATE TABLE policy_set_bindings (zone_id text NOT NULL, policy_set_id text NOT NULL REFERENCES policy_sets(id),
  active_version_id text REFERENCES policy_set_versions(id), updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (zone_id, policy_set_id));
INSERT INTO policies VALUES ('pol-base', 'zone-alpha', 'billing-read', now() - interval '30 days'),
  ('pol-allow', 'zone-alpha', 'billing-prefix', now() - interval '1 hour');
INSERT INTO policy_versions (id, policy_id, version, content, content_sha256, created_by, created_at)
SELECT id, policy_id, version, content, encode(sha256(convert_to(content, 'UTF8')), 'hex'), 'admin-oncall', created_at
FROM (VALUES
  ('pv-base-1', 'pol-base', 1, E'package caracal.authz\n\ndefault allow := false\n\nallow if input.scope == "billing:read"\n', now() - interval '30 days'),
  ('pv-allow-2', 'pol-allow', 2, E'package caracal.authz\n\ndefault allow := false\n\n# widened for the billing migration\nallow if startswith(input.scope, "billing:")\n', now() - interval '55 minutes')
) v(id, policy_id, version, content, created_at);
CREATE TRIGGER policy_versions_immutable BEFORE UPDATE OR DELETE ON policy_versions
  FOR EACH ROW EXECUTE FUNCTION reject_policy_version_mutation();
INSERT INTO policy_sets VALUES ('ps-main', 'zone-alpha', 'main', now() - interval '30 days'),
  ('ps-beta', 'zone-beta', 'main', now() - interval '30 days');
INSERT INTO policy_set_versions (id, policy_set_id, version, manifest_json, manifest_sha256, created_by, created_at)
SELECT id, ps, version, manifest::jsonb, encode(sha256(convert_to(manifest::jsonb::text, 'UTF8')), 'hex'), 'admin-oncall', created_at
FROM (VALUES
  ('psv-main-1', 'ps-main', 1, '{"policies": [{"policy_id": "pol-base", "policy_version_id": "pv-base-1"}]}', now() - interval '30 days'),
  ('psv-main-2', 'ps-main', 2, '{"policies": [{"policy_id": "pol-base", "policy_version_id": "pv-base-1"}, {"policy_id": "pol-allow", "policy_version_id": "pv-allow-2"}]}', now() - interval '50 minutes'),
  ('psv-beta-1', 'ps-beta', 1, '{"policies": [{"policy_id": "pol-base", "policy_version_id": "pv-base-1"}]}', now() - interval '30 days')
) v(id, ps, version, manifest, created_at);
INSERT INTO policy_set_bindings VALUES ('zone-alpha', 'ps-main', 'psv-main-2', now() - interval '45 minutes'),
  ('zone-beta', 'ps-beta', 'psv-beta-1', now() - interval '30 days');

-- Outboxes: dispatched, pending and dead rows; policy invalidations carry the activated version.
CREATE TABLE event_outbox (id text PRIMARY KEY, stream_name text NOT NULL, payload_json jsonb NOT NULL, attempts int NOT NULL DEFAULT 0,
  available_at timestamptz NOT NULL DEFAULT now(), locked_until timestamptz, locked_by text, last_error text,
  dispatched_at timestamptz, request_id text, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO event_outbox VALUES
  ('ob-policy-00', 'caracal.policy.invalidate', '{"zone_id": "zone-alpha", "policy_set_id": "ps-main", "policy_set_version_id": "psv-main-1"}',
   1, now() - interval '30 days', NULL, NULL, NULL, now() - interval '30 days', 'req-adm-activate-00', now() - interval '30 days'),
  ('ob-policy-01', 'caracal.policy.invalidate', '{"zone_id": "zone-alpha", "policy_set_id": "ps-main", "policy_set_version_id": "psv-main-2"}',
   1, now() - interval '45 minutes', NULL, NULL, NULL, now() - interval '45 minutes', 'req-adm-activate-01', now() - interval '45 minutes'),
  ('ob-revoke-01', 'caracal.sessions.revoke', '{"zone_id": "zone-alpha", "session_id": "ar-revoked-01", "reason": "operator_revoke"}',
   1, now() - interval '40 minutes', NULL, NULL, NULL, now() - interval '40 minutes', 'req-revoke-01', now() - interval '40 minutes'),
  ('ob-audit-dead-01', 'caracal.audit.events', '{"id": "evt-lost-01", "zone_id": "zone-alpha", "request_id": "req-incident-7f3a"}',
   100, 'infinity', NULL, NULL, 'XADD caracal.audit.events: OOM command not allowed', NULL, 'req-incident-7f3a', now() - interval '18 minutes'),
  ('ob-pending-01', 'caracal.agents.lifecycle', '{"event": "suspend", "zone_id": "zone-beta"}',
   3, now() + interval '5 seconds', NULL, NULL, 'connection reset', NULL, 'req-suspend-01', now() - interval '2 minutes');
CREATE TABLE caracal_outbox (id text PRIMARY KEY, producer text NOT NULL, topic text NOT NULL, dedupe_key text, payload_json jsonb NOT NULL,
  status text NOT NULL, attempts int NOT NULL DEFAULT 0, available_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz);
INSERT INTO caracal_outbox VALUES
  ('cob-published-01', 'coordinator', 'caracal.sessions.revoke', 'revoke:as-terminated-01', '{"agent_session_id": "as-terminated-01"}', 'published', 1, now() - interval '35 minutes', now() - interval '35 minutes'),
  ('cob-dead-01', 'coordinator', 'caracal.delegations.invalidate', 'edge:de-revoked-01', '{"edge_id": "de-revoked-01"}', 'dead', 10, now() - interval '25 minutes', NULL);

-- Authority, sessions, delegations: recent revocations the Gateway snapshot loads, and rows it must not.
CREATE TABLE authority_records (id text PRIMARY KEY, zone_id text NOT NULL, session_type text NOT NULL, subject_id text, parent_id text,
  status text NOT NULL, expires_at timestamptz NOT NULL, authenticated_at timestamptz, claims_json jsonb, created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz, revoked_reason text);
INSERT INTO authority_records VALUES
  ('ar-revoked-01', 'zone-alpha', 'application', 'app-billing', NULL, 'revoked', now() + interval '30 minutes', now() - interval '2 hours', '{"scope": "billing:export"}', now() - interval '2 hours', now() - interval '40 minutes', 'operator_revoke'),
  ('ar-revoked-old', 'zone-alpha', 'user', 'user-17', NULL, 'revoked', now() - interval '3 days', now() - interval '10 days', '{}', now() - interval '10 days', now() - interval '9 days', 'expired_grant'),
  ('ar-active-01', 'zone-alpha', 'application', 'app-billing', NULL, 'active', now() + interval '1 hour', now() - interval '3 minutes', '{"scope": "billing:read"}', now() - interval '3 minutes', NULL, NULL);
CREATE TABLE sessions (id text PRIMARY KEY, zone_id text NOT NULL, application_id text, parent_id text, subject_authority_record_id text,
  status text NOT NULL, depth int NOT NULL DEFAULT 0, labels text[], lifecycle text, ttl_seconds int, last_heartbeat_at timestamptz,
  heartbeat_deadline_at timestamptz, lease_generation int NOT NULL DEFAULT 0, started_at timestamptz, last_active_at timestamptz,
  terminated_at timestamptz, termination_reason text, metadata_json jsonb, updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO sessions VALUES
  ('as-terminated-01', 'zone-alpha', 'app-billing', NULL, 'ar-revoked-01', 'terminated', 0, '{billing}', 'task', 900, now() - interval '36 minutes', NULL, 2,
   now() - interval '2 hours', now() - interval '36 minutes', now() - interval '35 minutes', 'revoked', '{}', now() - interval '35 minutes'),
  ('as-terminated-old', 'zone-beta', 'app-reports', NULL, NULL, 'terminated', 0, '{}', 'task', 900, NULL, NULL, 1,
   now() - interval '4 days', now() - interval '3 days', now() - interval '3 days', 'ttl', '{}', now() - interval '3 days'),
  ('as-active-01', 'zone-alpha', 'app-billing', NULL, 'ar-active-01', 'active', 0, '{billing}', 'service', 3600, now(), now() + interval '1 minute', 1,
   now() - interval '3 minutes', now(), NULL, NULL, '{}', now());
CREATE TABLE delegation_edges (id text PRIMARY KEY, zone_id text NOT NULL, source_session_id text, target_session_id text,
  issuer_application_id text, receiver_application_id text, resource_id text, scopes text[], constraints_json jsonb, status text NOT NULL,
  expires_at timestamptz, edge_version int NOT NULL DEFAULT 1, revoked_at timestamptz, parent_edge_id text,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO delegation_edges VALUES
  ('de-revoked-01', 'zone-alpha', 'as-terminated-01', 'as-incident-01', 'app-billing', 'app-export', 'res-billing', '{billing:export}', '{}', 'revoked',
   now() + interval '1 hour', 2, now() - interval '30 minutes', NULL, now() - interval '2 hours', now() - interval '30 minutes'),
  ('de-revoked-old', 'zone-beta', 'as-terminated-old', NULL, 'app-reports', 'app-reports', 'res-reports', '{reports:read}', '{}', 'revoked',
   now() - interval '2 days', 1, now() - interval '2 days', NULL, now() - interval '4 days', now() - interval '2 days'),
  ('de-active-01', 'zone-alpha', 'as-active-01', NULL, 'app-billing', 'app-export', 'res-billing', '{billing:read}', '{}', 'active',
   now() + interval '1 hour', 1, NULL, NULL, now() - interval '3 minutes', now() - interval '3 minutes');
CREATE TABLE delegation_graph_epochs (zone_id text PRIMARY KEY, epoch bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO delegation_graph_epochs VALUES ('zone-alpha', 7, now() - interval '30 minutes');

-- Admin tokens: the hash columns must never reach a bundle.
CREATE TABLE admin_tokens (id text PRIMARY KEY, name text NOT NULL, token_sha256 bytea, token_hash text, scope text NOT NULL,
  zone_id text, capability text NOT NULL, created_by text, created_at timestamptz NOT NULL DEFAULT now(), last_used_at timestamptz,
  revoked_at timestamptz);
INSERT INTO admin_tokens VALUES
  ('adm-tok-ci', 'ci-deploy', sha256('ci-token'), 'argon2id$v=19$m=65536,t=3,p=4$c2FuZGJveHNhbHQ$sandboxhashvalue', 'global', NULL, 'write',
   'admin-root', now() - interval '90 minutes', now() - interval '4 minutes', NULL),
  ('adm-tok-oncall', 'oncall-laptop', sha256('oncall-token'), 'argon2id$v=19$m=65536,t=3,p=4$b25jYWxsc2FsdA$oncallhashvalue', 'zone', 'zone-alpha', 'approve',
   'admin-root', now() - interval '20 days', now() - interval '6 minutes', now() - interval '2 minutes');

-- Row-level security as Caracal's baseline has it (no FORCE: the owner bypasses it, service roles set caracal.zone_id).
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['policies', 'policy_sets', 'policy_set_bindings', 'authority_records', 'sessions', 'delegation_edges'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY zone_isolation ON %I USING (current_setting(''caracal.zone_id'', true) = ''*'' OR zone_id = current_setting(''caracal.zone_id'', true))', t);
  END LOOP;
END $$;

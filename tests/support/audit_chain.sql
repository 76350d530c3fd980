-- Fixture helpers: Caracal's hash chains (caracal.md §6.1), built in SQL over rows already inserted, so each
-- fixture states its rows and calls these instead of restating the formula.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- content_sha256 of every audit_events row: 12 fields each ended by 0x1F, then occurred_at in Unix nanoseconds.
CREATE FUNCTION fixture_audit_content() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  UPDATE audit_events SET content_sha256 = encode(sha256(convert_to(
    id || chr(31) || zone_id || chr(31) || event_type || chr(31) || coalesce(request_id, '') || chr(31) ||
    coalesce(decision, '') || chr(31) || coalesce(policy_set_id, '') || chr(31) || coalesce(policy_set_version_id, '') || chr(31) ||
    coalesce(manifest_sha, '') || chr(31) || coalesce(evaluation_status, '') || chr(31) ||
    coalesce(determining_policies_json::text, 'null') || chr(31) || coalesce(diagnostics_json::text, 'null') || chr(31) ||
    coalesce(metadata_json::text, 'null') || chr(31) || ((extract(epoch FROM occurred_at) * 1000000)::bigint * 1000)::text,
    'UTF8')), 'hex');
END $$;

-- The links of a ledger (audit_events or admin_audit_events): prev_content_sha256 is the previous row's content in
-- its zone's chain (zone NULL: the global chain), chain_hmac = HMAC-SHA256(key, "content|prev").
CREATE FUNCTION fixture_chain_links(ledger regclass, hex_key text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('UPDATE %s a SET prev_content_sha256 = p.prev FROM (SELECT id, lag(content_sha256) OVER '
    '(PARTITION BY zone_id ORDER BY chain_seq) AS prev FROM %s) p WHERE p.id = a.id', ledger, ledger);
  EXECUTE format('UPDATE %s SET chain_hmac = encode(hmac(convert_to(content_sha256 || ''|'' || '
    'coalesce(prev_content_sha256, ''''), ''UTF8''), decode(%L, ''hex''), ''sha256''), ''hex'')', ledger, hex_key);
END $$;

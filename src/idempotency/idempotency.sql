-- ===================================================================================================
-- Idempotency keys
-- ===================================================================================================

-- One row per key: scope 'user' for idempotency_begin/finish; conveyor's own callers (upsert's
-- operation_id, charge's idempotency_key) use scopes of their own. Expired keys count as absent and
-- conveyor.maintain() deletes them.
CREATE DOMAIN conveyor.idempotency_state AS text CHECK (VALUE IN ('in_progress', 'completed'));
CREATE TABLE conveyor.idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    request      jsonb,
    state        conveyor.idempotency_state NOT NULL,
    result       jsonb,
    created_at   timestamptz NOT NULL,
    completed_at timestamptz,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expiry ON conveyor.idempotency_keys (expires_at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.idempotency_keys', '');

CREATE FUNCTION conveyor.idempotency_begin(key text, request jsonb DEFAULT NULL, ttl_seconds int DEFAULT 86400)
    RETURNS TABLE(acquired boolean, state text, result jsonb)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_idempotency_begin';
COMMENT ON FUNCTION conveyor.idempotency_begin(text,jsonb,integer) IS 'Claims an idempotency key, or returns its state and result when another caller has claimed it.';
CREATE FUNCTION conveyor.idempotency_finish(key text, result jsonb) RETURNS void
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_idempotency_finish';
COMMENT ON FUNCTION conveyor.idempotency_finish(text,jsonb) IS 'Completes a claimed idempotency key and stores the result later callers receive.';
CREATE FUNCTION conveyor.idempotency_release(key text) RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_idempotency_release';
COMMENT ON FUNCTION conveyor.idempotency_release(text) IS 'Deletes an idempotency key still in progress, so that a retry may claim it; false if there was none.';

-- ---- roles of idempotency keys ----
GRANT EXECUTE ON FUNCTION
    conveyor.idempotency_begin(text, jsonb, int), conveyor.idempotency_finish(text, jsonb),
    conveyor.idempotency_release(text)
    TO conveyor_worker;

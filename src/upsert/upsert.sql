-- ===================================================================================================
-- Upserts that write only what changed
-- ===================================================================================================

-- One row per real change an upsert with the option audit made (inserted or updated rows; unchanged
-- rows leave no trace). Written as the extension's owner: callers cannot write it directly.
-- conveyor_admin reads it. Old rows are the user's to delete (e.g. from a pg_cron job).
CREATE TABLE conveyor.change_log (
    change_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL,
    target       text NOT NULL,          -- schema.table
    key          jsonb NOT NULL,         -- {"key column": value, ...}
    action       text NOT NULL CHECK (action IN ('inserted', 'updated')),
    changed      jsonb,                  -- updated: {"column": {"old": ..., "new": ...}}
    operation_id text,
    changed_by   text NOT NULL           -- the calling role (current_user)
);
CREATE INDEX change_log_target ON conveyor.change_log (target, at);
CREATE INDEX change_log_at ON conveyor.change_log (at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.change_log', '');
SELECT pg_catalog.pg_extension_config_dump('conveyor.change_log_change_id_seq', '');

-- SECURITY INVOKER: the statements on the target run as the caller, so the caller's privileges and
-- the target's row-level security policies apply as to the caller's own SQL. The kept plans are
-- generic (one per target, column set and options); the scan settings keep them on the key's index.
CREATE FUNCTION conveyor.upsert(target regclass, rows jsonb, key_columns text[], options jsonb DEFAULT '{}')
    RETURNS TABLE(ord int, key jsonb, action text, changed jsonb, "row" jsonb)
    LANGUAGE C VOLATILE @PINNED@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_upsert';
COMMENT ON FUNCTION conveyor.upsert(regclass,jsonb,text[],jsonb) IS 'Inserts or updates JSON rows in a table by a unique key, writing only real changes; reports each row.';
CREATE FUNCTION conveyor.upsert_counts(target regclass, rows jsonb, key_columns text[], options jsonb DEFAULT '{}')
    RETURNS TABLE(inserted bigint, updated bigint, unchanged bigint, skipped bigint,
                  duplicates bigint, existing bigint, missing bigint, errors bigint)
    LANGUAGE C VOLATILE @PINNED@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_upsert_counts';
COMMENT ON FUNCTION conveyor.upsert_counts(regclass,jsonb,text[],jsonb) IS 'Same as upsert, but returns only the counts of each action.';

-- ---- roles of upserts ----
GRANT EXECUTE ON FUNCTION conveyor.upsert(regclass, jsonb, text[], jsonb), conveyor.upsert_counts(regclass, jsonb, text[], jsonb)
    TO conveyor_worker;

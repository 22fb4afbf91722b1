-- ===================================================================================================
-- Retention: applications' own tables purged by conveyor.maintain() (src/retention/)
-- ===================================================================================================

-- One rule per table: rows whose time_column is older than keep are deleted, at most batch per
-- maintain() run, as the table's owner (never as conveyor's owner). table_owner is the role that owned
-- the table when the rule was defined (by that owner): if the table changes hands, maintain() skips
-- the rule until its new owner defines it again. last_error says why the last run deleted nothing.
CREATE TABLE conveyor.retention_rules (
    target       regclass PRIMARY KEY,
    time_column  text NOT NULL,
    keep         interval NOT NULL,
    batch        integer NOT NULL CHECK (batch > 0),
    table_owner  text NOT NULL,
    created_at   timestamptz NOT NULL,
    created_by   text NOT NULL,
    last_run_at  timestamptz,
    last_deleted bigint,
    last_error   text
);
SELECT pg_catalog.pg_extension_config_dump('conveyor.retention_rules', '');

-- Invoker functions: the caller's own rights decide whether it owns the table; the rule is written as
-- the extension's owner inside them.
CREATE FUNCTION conveyor.retention_define(target regclass, time_column text, keep interval, batch integer DEFAULT 10000)
    RETURNS boolean
    LANGUAGE C VOLATILE @PINNED@ AS 'MODULE_PATHNAME', 'conveyor_retention_define';
COMMENT ON FUNCTION conveyor.retention_define(regclass,text,interval,integer) IS 'Has maintain() delete a table''s rows older than keep, batch rows per run; true if new, false if replaced.';
CREATE FUNCTION conveyor.retention_drop(target regclass) RETURNS boolean
    LANGUAGE C VOLATILE @PINNED@ AS 'MODULE_PATHNAME', 'conveyor_retention_drop';
COMMENT ON FUNCTION conveyor.retention_drop(regclass) IS 'Removes a table''s retention rule; false if it had none.';
CREATE FUNCTION conveyor.retention_rules()
    RETURNS TABLE(target regclass, time_column text, keep interval, batch integer, table_owner text,
                  current_owner text, created_at timestamptz, created_by text, last_run_at timestamptz,
                  last_deleted bigint, last_error text)
    LANGUAGE C STABLE @DEFINER@ AS 'MODULE_PATHNAME', 'conveyor_retention_rules';
COMMENT ON FUNCTION conveyor.retention_rules() IS 'Lists the retention rules with their table''s owner, the last run and the rows it deleted.';

-- ---- roles of retention ----
GRANT EXECUTE ON FUNCTION conveyor.retention_rules() TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.retention_define(regclass, text, interval, integer),
    conveyor.retention_drop(regclass) TO conveyor_admin;

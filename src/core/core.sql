-- conveyor install script. Built from src/*.sql by the Makefile; edit those, not the built file.
\echo Use "CREATE EXTENSION conveyor" to load this file. \quit

CREATE SCHEMA conveyor;
COMMENT ON SCHEMA conveyor IS 'conveyor: job queue, leases, upserts, costs and monitoring';

-- Roles are cluster-wide: create them once, whichever database installs conveyor first.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_reader') THEN
        CREATE ROLE conveyor_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_worker') THEN
        CREATE ROLE conveyor_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_admin') THEN
        CREATE ROLE conveyor_admin NOLOGIN;
    END IF;
END
$roles$;
GRANT conveyor_reader TO conveyor_worker;
GRANT conveyor_worker TO conveyor_admin;

GRANT USAGE ON SCHEMA conveyor TO conveyor_reader;

-- Time-ordered UUIDs (RFC 9562 version 7), the ids of jobs and events.
CREATE FUNCTION conveyor.uuid_v7() RETURNS uuid
    LANGUAGE C VOLATILE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'conveyor_uuid_v7';
COMMENT ON FUNCTION conveyor.uuid_v7() IS 'Returns a new time-ordered UUID version 7; ids from one session increase strictly.';
CREATE FUNCTION conveyor.uuid_v7_time(id uuid) RETURNS timestamptz
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'conveyor_uuid_v7_time';
COMMENT ON FUNCTION conveyor.uuid_v7_time(uuid) IS 'Returns the creation time (millisecond precision) encoded in a version 7 UUID.';

-- The shard number a version 7 id carries in bytes 9 and 10 (setting shard.number of the server that
-- made it; 0 on a standalone server, whose ids are random there).
CREATE FUNCTION conveyor.uuid_shard(id uuid) RETURNS int
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'conveyor_uuid_shard';
COMMENT ON FUNCTION conveyor.uuid_shard(uuid) IS 'Returns the shard number carried in bytes 9-10 of a version 7 UUID made on a shard (shard.number).';

-- ---- roles of the ids ----
GRANT EXECUTE ON FUNCTION conveyor.uuid_v7(), conveyor.uuid_v7_time(uuid), conveyor.uuid_shard(uuid) TO conveyor_reader;

\echo Use "CREATE EXTENSION conveyor_selftest" to load this file. \quit

-- Exercises the C++/PostgreSQL boundary in both directions (used by the regression suite).
-- mode: 'sql' runs `sql` through conveyor's SPI layer (under conveyor's pinned search_path, as the
-- caller); 'error' / 'bad_alloc' / 'std' / 'unknown' throw from C++; 'destructors' reports how many
-- guarded-scope destructors have run in this backend. Granted to no one.
CREATE FUNCTION boundary_selftest(mode text, sql text DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_test_boundary_selftest';
REVOKE ALL ON FUNCTION boundary_selftest(text, text) FROM PUBLIC;

-- The C++/PostgreSQL boundary, in both directions: a PostgreSQL error raised inside SPI and a C++
-- exception each reach the client with SQLSTATE, message, detail and hint intact; C++ destructors
-- run on the way out; and the same backend keeps serving.
\set SHOW_CONTEXT never
CREATE EXTENSION conveyor_selftest;
SELECT pg_backend_pid() AS pid \gset
SELECT conveyor_test.boundary_selftest('destructors') AS destructors_before \gset

-- PostgreSQL -> C++ -> PostgreSQL: an error raised by SQL run through SPI.
CREATE FUNCTION raise_custom() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'custom failure' USING ERRCODE = 'P0099', DETAIL = 'detail from SQL', HINT = 'hint from SQL';
END
$$;
SELECT conveyor_test.boundary_selftest('sql', 'SELECT public.raise_custom()');
\echo :LAST_ERROR_SQLSTATE

-- Callers branch on unique_violation, serialization_failure and deadlock_detected: they survive.
CREATE TABLE boundary_t (id int PRIMARY KEY);
INSERT INTO boundary_t VALUES (1);
SELECT conveyor_test.boundary_selftest('sql', 'INSERT INTO public.boundary_t VALUES (1)');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor_test.boundary_selftest('sql', $q$DO $d$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'simulated serialization failure'; END $d$$q$);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor_test.boundary_selftest('sql', $q$DO $d$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01', MESSAGE = 'simulated deadlock'; END $d$$q$);
\echo :LAST_ERROR_SQLSTATE

-- Transaction control cannot run inside a function: the caller's mistake (2D000), not an internal error.
SELECT conveyor_test.boundary_selftest('sql', 'COMMIT');
\echo :LAST_ERROR_SQLSTATE

-- A statement that succeeds returns normally.
SELECT conveyor_test.boundary_selftest('sql', 'SELECT g FROM generate_series(1, 3) g') AS rows;

-- C++ -> PostgreSQL: exceptions thrown by C++ code.
SELECT conveyor_test.boundary_selftest('error');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor_test.boundary_selftest('std');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor_test.boundary_selftest('bad_alloc');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor_test.boundary_selftest('unknown');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor_test.boundary_selftest(NULL);
\echo :LAST_ERROR_SQLSTATE

-- A C++ exception thrown inside a guard leaves PostgreSQL's error stack as it was: the division by
-- zero raised afterwards reaches the client.
SELECT conveyor_test.boundary_selftest('throw_in_guard');
\echo :LAST_ERROR_SQLSTATE

-- Inside a transaction the error aborts it as usual, and a savepoint recovers.
BEGIN;
SAVEPOINT s;
SELECT conveyor_test.boundary_selftest('sql', 'SELECT 1/0');
ROLLBACK TO SAVEPOINT s;
SELECT conveyor_test.boundary_selftest('sql', 'SELECT 1') AS after_savepoint;
COMMIT;

-- Every call above ran the destructors of its C++ objects: one witness per call, plus one per
-- SPI-mode call for the object alive across the failing SPI statement.
--   1 (destructors) + 5 x 2 (sql errors) + 2 (sql ok) + 1 (throw_in_guard) + 4 (C++ throws) + 0
--   (NULL mode is rejected before the witness exists) + 2 + 2 (savepoint test) = 22
SELECT conveyor_test.boundary_selftest('destructors') - :destructors_before AS destructors_run;

-- Same backend: nothing crashed.
SELECT pg_backend_pid() = :pid AS same_backend;
DROP TABLE boundary_t;
DROP FUNCTION raise_custom();
DROP EXTENSION conveyor_selftest;

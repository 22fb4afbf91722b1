-- wait_for and stop_waiting: bad input gets a clear error with a precise SQLSTATE, and a call that
-- fails waits on no queue (it checks every queue before it takes any wake lock).
\set SHOW_CONTEXT never
SELECT conveyor.create_queue('wait_ok');
SELECT conveyor.create_queue('wait_silent', '{"notify": false}');
CREATE TEMP VIEW wake_locks AS
    SELECT count(*) AS wake_locks FROM pg_locks
    WHERE locktype = 'advisory' AND objsubid = 6 AND pid = pg_backend_pid();

SELECT conveyor.wait_for(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.wait_for('{}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.wait_for(ARRAY['wait_ok', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.wait_for(ARRAY['wait_ok', '']);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.wait_for(ARRAY['wait_ok', 'no such queue']);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.wait_for(ARRAY['wait_ok', 'wait_silent']);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.wait_for(array_fill('wait_ok'::text, ARRAY[1001]));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.wait_for(ARRAY[repeat('q', 300)]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM wake_locks;

-- 1000 names are accepted (here one queue, named 1000 times: it counts once).
SELECT conveyor.wait_for(array_fill('wait_ok'::text, ARRAY[1000]));
SELECT * FROM wake_locks;

SELECT conveyor.stop_waiting('{}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.stop_waiting(ARRAY[NULL::text]);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.stop_waiting(ARRAY['wait_ok', 'no such queue']);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.stop_waiting(array_fill('wait_ok'::text, ARRAY[1001]));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM wake_locks;
SELECT conveyor.stop_waiting();
SELECT * FROM wake_locks;

UNLISTEN *;
DROP VIEW wake_locks;
SELECT conveyor.drop_queue('wait_ok');
SELECT conveyor.drop_queue('wait_silent');

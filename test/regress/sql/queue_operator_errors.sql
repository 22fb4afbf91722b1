-- What operators see when an operator action or a dead-letter call is refused: each new message of
-- requeue, requeue_stuck, reschedule, retry, dead_jobs, resolve_dead and the dead_retention_days option.
\set VERBOSITY default
SELECT conveyor.create_queue('ops');
SELECT conveyor.create_queue('ops_bad', '{"dead_retention_days": -1}');
SELECT conveyor.create_queue('ops_bad', '{"dead_retention_days": "x"}');
SELECT conveyor.alter_queue('ops', '{"dead_retention_days": 3651}');
SELECT conveyor.alter_queue('ops', '{"dead_retentions": 3}');

CREATE FUNCTION show_error(sql text, id uuid) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || replace(SQLERRM, id::text, '<job>');
END
$$;
SELECT job_id AS pending_id FROM conveyor.enqueue('ops', '{"n": 1}') \gset
SELECT job_id AS dead_id FROM conveyor.enqueue('ops', '{"n": 2}') \gset
SELECT conveyor.dead_letter(:'dead_id', 'poison', '{"why": "test"}');

-- requeue
SELECT conveyor.requeue('00000000-0000-7000-8000-000000000000');
SELECT show_error(format('SELECT conveyor.requeue(%L, -5)', :'pending_id'), :'pending_id');
SELECT show_error(format('SELECT conveyor.requeue(%L, NULL)', :'pending_id'), :'pending_id');
SELECT conveyor.requeue(:'pending_id') AS requeued_pending;
-- requeue_stuck
SELECT * FROM conveyor.requeue_stuck('ops_nope', '1 hour');
SELECT * FROM conveyor.requeue_stuck('ops', '-1 hour');
SELECT * FROM conveyor.requeue_stuck('ops', '1 day -1 hour');
SELECT * FROM conveyor.requeue_stuck('ops', '2 months');
SELECT * FROM conveyor.requeue_stuck('ops', '3651 days');
SELECT * FROM conveyor.requeue_stuck('ops', NULL);
-- reschedule
SELECT conveyor.reschedule('00000000-0000-7000-8000-000000000000', now());
SELECT show_error(format('SELECT conveyor.reschedule(%L, %L)', :'pending_id', 'infinity'), :'pending_id');
SELECT show_error(format('SELECT conveyor.reschedule(%L, NULL)', :'pending_id'), :'pending_id');
-- retry
SELECT show_error(format('SELECT conveyor.retry(%L)', :'pending_id'), :'pending_id');
-- dead_jobs
SELECT * FROM conveyor.dead_jobs('ops_nope');
SELECT * FROM conveyor.dead_jobs('ops', lim => 0);
SELECT * FROM conveyor.dead_jobs('ops', lim => 1001);
SELECT show_error(format('SELECT * FROM conveyor.dead_jobs(%L, after => %L)', 'ops', :'pending_id'), :'pending_id');
SELECT reason, details, resolution FROM conveyor.dead_jobs('ops');
-- resolve_dead
SELECT conveyor.resolve_dead('00000000-0000-7000-8000-000000000000', 'x');
SELECT show_error(format('SELECT conveyor.resolve_dead(%L, %L)', :'dead_id', ''), :'dead_id');
SELECT show_error(format('SELECT conveyor.resolve_dead(%L, NULL)', :'dead_id'), :'dead_id');
SELECT show_error(format('SELECT conveyor.resolve_dead(%L, repeat(%L, 1025))', :'dead_id', 'x'), :'dead_id');
SELECT conveyor.resolve_dead(:'pending_id', 'not dead') AS resolved_pending;

SELECT conveyor.drop_queue('ops', force => true);
DROP FUNCTION show_error(text, uuid);

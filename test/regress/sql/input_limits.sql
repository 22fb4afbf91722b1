-- Input limits (README, "Limits"): values the rest of conveyor could not carry are refused at input
-- with 22023 naming the argument and the value; keys are at most 1024 bytes; a long value quoted in a
-- message is clipped at a character boundary with "...".
\set SHOW_CONTEXT never
SELECT conveyor.create_queue('lim');
SELECT conveyor.account_create('lim_acct', 100);
SELECT conveyor.quota_define('lim_quota', 1000);

-- ---- times: finite, from 1900-01-01 to 9999-12-31 UTC ---------------------------------------------
SELECT job_id IS NOT NULL AS enqueued FROM conveyor.enqueue('lim', run_at => 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT job_id IS NOT NULL AS enqueued FROM conveyor.enqueue('lim', run_at => '-infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT job_id IS NOT NULL AS enqueued FROM conveyor.enqueue('lim', run_at => '1899-12-31 23:59:59.999999+00');
\echo :LAST_ERROR_SQLSTATE
SELECT job_id IS NOT NULL AS enqueued FROM conveyor.enqueue('lim', run_at => '10000-01-01 00:00:00+00');
\echo :LAST_ERROR_SQLSTATE
-- the bounds themselves are accepted
SELECT job_id IS NOT NULL AS enqueued FROM conveyor.enqueue('lim', run_at => '1900-01-01 00:00:00+00');
SELECT job_id IS NOT NULL AS enqueued FROM conveyor.enqueue('lim', run_at => '9999-12-31 23:59:59.999999+00');
SELECT ord FROM conveyor.enqueue_batch('lim', '[{"payload": {}}, {"run_at": "infinity"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT ord FROM conveyor.enqueue_batch('lim', '[{"run_at": "-infinity"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT ord FROM conveyor.enqueue_batch('lim', '[{"run_at": "0044-03-15 12:00:00+00 BC"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT snapshot_id IS NOT NULL FROM conveyor.snapshot('lim_s', 'e1', '{"n": 1}', 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT snapshot_id IS NOT NULL FROM conveyor.snapshot('lim_s', 'e1', '{"n": 1}', '-infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT ord FROM conveyor.snapshot_batch('lim_s', '[{"entity_id": "e1", "metrics": {}, "captured_at": "infinity"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.quota_window('day', 'UTC', 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.quota_window('day', 'UTC', '-infinity');
\echo :LAST_ERROR_SQLSTATE
-- A period quotas do not have gives no window, so it is refused too.
SELECT * FROM conveyor.quota_window('week', 'UTC', '2026-01-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.quota_projection(1, 10, '2026-06-01 00:00+00', '2026-06-02 00:00+00', 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.quota_projection(1, 10, '-infinity', '2026-06-02 00:00+00', '2026-06-01 12:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.quota_projection(1, 10, '2026-06-01 00:00+00', 'infinity', '2026-06-01 12:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.quota_projection(1, 10, '2026-06-02 00:00+00', '2026-06-01 00:00+00', '2026-06-01 12:00+00');
\echo :LAST_ERROR_SQLSTATE
-- filter bounds: an infinite bound leaves that side open, without an error
SELECT count(*) AS rows FROM conveyor.cost_report('lim_acct', '-infinity', 'infinity');
SELECT count(*) AS rows FROM conveyor.cost_report('lim_acct', 'infinity', 'infinity');
SELECT count(*) AS rows FROM conveyor.snapshot_series('lim_s', 'e1', '-infinity', 'infinity');
SELECT count(*) AS queued FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = 'lim';

-- ---- amounts, units and limits whose sums would overflow ----------------------------------------
SELECT conveyor.quota_define('lim_big', 9223372036854775807);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.quota_define('lim_big', 1000000000000001);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.quota_define('lim_big', 1000000000000000);
SELECT quota_limit, risk_level FROM conveyor.quota_status('lim_big');
SELECT * FROM conveyor.charge('lim_acct', 'svc', 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.charge('lim_acct', 'svc', 'Infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.charge('lim_acct', 'svc', 1e18);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.charge('lim_acct', 'svc', ('1' || repeat('0', 400))::numeric);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.reserve('lim_acct', '-Infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.account_create('lim_acct2', 'Infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.charge('lim_acct', 'svc', 1, items => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.rate_limit('lim_rl', 1, 31622400, 2);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.rate_limit('lim_rl', 1, 1, 2147483647);
\echo :LAST_ERROR_SQLSTATE
SELECT allowed FROM conveyor.rate_limit('lim_rl', 2147483647, 1, 2147483647);
SELECT allowed FROM conveyor.rate_limit('lim_rl2', 1, 31622400, 1);
SELECT conveyor.idempotency_begin('lim_k', ttl_seconds => 2147483647);
\echo :LAST_ERROR_SQLSTATE
SELECT job_id FROM conveyor.enqueue('lim', priority => 32767);
\echo :LAST_ERROR_SQLSTATE
SELECT job_id FROM conveyor.dequeue('lim', 'w', 2147483647);
\echo :LAST_ERROR_SQLSTATE
SELECT job_id FROM conveyor.dequeue('lim', 'w', 1, 2147483647);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_acquire('lim_lock', 'me', 2147483647);
\echo :LAST_ERROR_SQLSTATE

-- ---- keys: at most 1024 bytes ------------------------------------------------------------------
SELECT count(*) AS enqueued FROM conveyor.enqueue('lim', dedup_key => repeat('d', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS enqueued FROM conveyor.enqueue('lim', group_key => repeat('g', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS enqueued FROM conveyor.enqueue('lim', job_type => repeat('t', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS enqueued FROM conveyor.enqueue('lim', dedup_key => repeat('é', 513));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS enqueued FROM conveyor.enqueue_batch('lim', pg_catalog.jsonb_build_array('{}'::jsonb,
    pg_catalog.jsonb_build_object('dedup_key', repeat('d', 1025))));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS enqueued FROM conveyor.enqueue_batch('lim', pg_catalog.jsonb_build_array(
    pg_catalog.jsonb_build_object('group_key', repeat('g', 5000))));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('lim_types', pg_catalog.jsonb_build_object('job_types', pg_catalog.jsonb_build_array('a', repeat('t', 1025))));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM conveyor.dequeue('lim', repeat('w', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.idempotency_begin(repeat('k', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.idempotency_finish(repeat('k', 3000), '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.account_create(repeat('a', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.charge('lim_acct', repeat('s', 1025), 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.charge('lim_acct', 'svc', 1, idempotency_key => repeat('k', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.reserve('lim_acct', 1, idempotency_key => repeat('k', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.quota_define(repeat('q', 1025), 10);
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.quota_define('lim_quota', 10, costs => pg_catalog.jsonb_build_object(repeat('o', 1025), 1));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.quota_consume('lim_quota', operation => repeat('o', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.quota_consume('lim_quota', idempotency_key => repeat('k', 1025));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.rate_limit(repeat('r', 1025), 10);
\echo :LAST_ERROR_SQLSTATE
SELECT snapshot_id FROM conveyor.snapshot(repeat('s', 1025), 'e1', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT snapshot_id FROM conveyor.snapshot('lim_s', repeat('e', 1025), '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT ord FROM conveyor.snapshot_batch('lim_s', pg_catalog.jsonb_build_array(
    '{"entity_id": "e1", "metrics": {}}'::jsonb, pg_catalog.jsonb_build_object('entity_id', repeat('e', 1025), 'metrics', '{}'::jsonb)));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.lock_acquire(repeat('k', 1025), 'me');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_acquire('artist', repeat('e', 1025));
\echo :LAST_ERROR_SQLSTATE
-- nothing above was written
SELECT count(*) AS queued FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = 'lim';
SELECT count(*) AS long_keys FROM conveyor.idempotency_keys WHERE octet_length(key) > 1024;
SELECT count(*) AS ledger_rows FROM conveyor.ledger WHERE account = 'lim_acct';
SELECT count(*) AS snapshots FROM conveyor.snapshots WHERE series = 'lim_s' OR octet_length(series) > 1024;

-- ---- long values quoted in messages: clipped at a character boundary, with "..." --------------
SELECT * FROM conveyor.queue_metrics(repeat('é', 700));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.charge(repeat('日本', 150), 'svc', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.quota_status(repeat('ü', 700));
\echo :LAST_ERROR_SQLSTATE
SELECT job_id FROM conveyor.enqueue(repeat('q', 5000));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.entity_complete(repeat('ß', 500), repeat('ø', 500));
\echo :LAST_ERROR_SQLSTATE
-- a LATIN1 client gets the real error (42704), not 22P05 or 22021 from converting a broken message
-- (only the SQLSTATE is shown here, so that this file stays UTF-8)
\set VERBOSITY sqlstate
SET client_encoding = 'LATIN1';
SELECT * FROM conveyor.queue_metrics(repeat(chr(233), 700));
-- 'queue "x' is 8 bytes: unclipped, byte 2047 of this message would be the first half of an é
SELECT * FROM conveyor.queue_metrics('x' || repeat(chr(233), 1100));
SELECT * FROM conveyor.idempotency_finish(repeat(chr(233), 500), '{}');
RESET client_encoding;
\set VERBOSITY default

-- Leave nothing behind for the files that follow.
SELECT conveyor.drop_queue('lim', force => true);
DELETE FROM conveyor.quotas WHERE name IN ('lim_quota', 'lim_big');
DELETE FROM conveyor.rate_limits WHERE key IN ('lim_rl', 'lim_rl2');
DELETE FROM conveyor.accounts WHERE account = 'lim_acct';

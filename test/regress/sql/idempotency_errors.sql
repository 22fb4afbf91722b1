-- What callers see when an idempotency key is misused.
\set VERBOSITY default
SELECT acquired, state FROM conveyor.idempotency_begin('reg_idem', '{"amount": 5}');
-- the same key for another request
SELECT * FROM conveyor.idempotency_begin('reg_idem', '{"amount": 6}');
SELECT conveyor.idempotency_finish('reg_idem', '{"id": 1}');
-- finished twice
SELECT conveyor.idempotency_finish('reg_idem', '{"id": 2}');
-- never begun
SELECT conveyor.idempotency_finish('reg_idem_unknown', '{}');
-- bad arguments
SELECT * FROM conveyor.idempotency_begin(NULL);
SELECT * FROM conveyor.idempotency_begin('');
SELECT * FROM conveyor.idempotency_begin('reg_idem_ttl', ttl_seconds => -5);
SELECT * FROM conveyor.idempotency_begin('reg_idem_ttl', ttl_seconds => 40000000);
SELECT count(*) FROM conveyor.idempotency_keys WHERE key LIKE 'reg_idem%';

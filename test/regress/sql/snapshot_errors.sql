-- What callers see when a capture is refused. Nothing is written by a refused call.
\set VERBOSITY default
SELECT is_new_period, delta FROM conveyor.snapshot('reg_ch', 'UC1', '{"subscribers": 10}', '2026-03-01 10:00+00');
SELECT is_new_period, delta FROM conveyor.snapshot('reg_ch', 'UC1', '{"subscribers": 12}', '2026-03-02 10:00+00');
-- arguments
SELECT * FROM conveyor.snapshot(NULL, 'UC1', '{"subscribers": 1}');
SELECT * FROM conveyor.snapshot('', 'UC1', '{"subscribers": 1}');
SELECT * FROM conveyor.snapshot('reg_ch', '', '{"subscribers": 1}');
SELECT * FROM conveyor.snapshot('reg_ch', 'UC1', NULL);
SELECT * FROM conveyor.snapshot('reg_ch', 'UC1', '42');
SELECT * FROM conveyor.snapshot('reg_ch', 'UC1', '{"subscribers": 1}', NULL);
SELECT * FROM conveyor.snapshot('reg_ch', 'UC1', '{"subscribers": 1}', now(), 'month');
SELECT * FROM conveyor.snapshot('reg_ch', 'UC1', '{"subscribers": 1}', now(), 'day', 'Europe/Atlantis');
-- batches
SELECT * FROM conveyor.snapshot_batch('reg_ch', '{"entity_id": "UC1"}');
SELECT * FROM conveyor.snapshot_batch('reg_ch', '[{"entity_id": "UC1", "metrics": {"a": 1}}, "UC2"]');
SELECT * FROM conveyor.snapshot_batch('reg_ch', '[{"entity_id": 7, "metrics": {"a": 1}}]');
SELECT * FROM conveyor.snapshot_batch('reg_ch', '[{"entity_id": "UC1"}]');
SELECT * FROM conveyor.snapshot_batch('reg_ch', '[{"entity_id": "UC1", "metrics": [1]}]');
SELECT * FROM conveyor.snapshot_batch('reg_ch', '[{"entity_id": "UC1", "metrics": {"a": 1}, "captured_at": 1700000000}]');
SELECT * FROM conveyor.snapshot_batch('reg_ch', '[{"entity_id": "UC1", "metrics": {"a": 1}, "captured_at": "tomorrowish"}]');
SELECT * FROM conveyor.snapshot_batch('reg_ch', '[{"entity_id": "UC1", "metrics": {"a": 1}, "source": "api"}]');
SELECT * FROM conveyor.snapshot_batch('reg_ch',
    (SELECT jsonb_agg(jsonb_build_object('entity_id', 'e' || g, 'metrics', jsonb_build_object('n', g))) FROM generate_series(1, 10001) g));
SELECT * FROM conveyor.snapshot_series('reg_ch', NULL);
SELECT * FROM conveyor.snapshot('reg_ch', 'UC1', '{"subscribers": 1}', now(), 'day', 'UTC', NULL);
SELECT * FROM conveyor.snapshot_batch('reg_ch', '[]', 'day', 'UTC', NULL);
-- the series is as it was
SELECT period_start, metrics, delta, captures FROM conveyor.snapshot_series('reg_ch', 'UC1');

-- n.: snapshot_batch of 100 captures of entities seen for the first time (each opens its period).
\set base random(1, 1000000000)
SELECT count(*) FROM conveyor.snapshot_batch('bench_snap', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
    'entity_id', 'n' || :client_id || '-' || :base || '-' || i, 'metrics', pg_catalog.jsonb_build_object(
    'views', i * 1000, 'likes', i * 10, 'comments', i))) FROM pg_catalog.generate_series(1, 100) i));

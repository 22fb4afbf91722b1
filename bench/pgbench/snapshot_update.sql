-- n.: snapshot_batch of 100 captures of entities that have today's row (each updates it with new metrics).
\set base random(0, 9900)
SELECT count(*) FROM conveyor.snapshot_batch('bench_snap', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
    'entity_id', 'v' || (:base + i), 'metrics', pg_catalog.jsonb_build_object('views', (random() * 1e6)::int,
    'likes', (random() * 1e4)::int, 'comments', (random() * 1e3)::int))) FROM pg_catalog.generate_series(1, 100) i));

-- The messages of job_stats, the stats_retention_days option and snapshot_top.
\set VERBOSITY default
SELECT conveyor.create_queue('reg_stats');
SELECT conveyor.alter_queue('reg_stats', '{"stats_retention_days": 4000}');
SELECT conveyor.alter_queue('reg_stats', '{"stats_retention_days": "long"}');
SELECT * FROM conveyor.job_stats('reg_stats', now(), now(), 'year');
SELECT * FROM conveyor.job_stats('reg_nope', now(), now());
SELECT * FROM conveyor.job_stats('reg_stats', NULL, now());
SELECT * FROM conveyor.job_stats('reg_stats', '2026-01-01', '2026-01-02', 'day', 'g1');
SELECT * FROM conveyor.snapshot_top('reg_series', '2026-01-01', 'views', 10, 'views');
SELECT * FROM conveyor.snapshot_top('reg_series', '2026-01-01', 'views', 0);
SELECT * FROM conveyor.snapshot_top('reg_series', '2026-01-01', 'views', 10001);
SELECT * FROM conveyor.snapshot_top('reg_series', '2026-01-01', NULL);
SELECT conveyor.drop_queue('reg_stats');

-- j. floor: what health() must not do, count a large table.
SELECT count(*) FROM conveyor.job_history;

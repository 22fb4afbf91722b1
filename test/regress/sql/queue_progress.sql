-- Progress, custom trail events and list_jobs: what a worker and a reader see, and the messages of
-- bad input.
SELECT conveyor.create_queue('pr', '{"status_notify": true}');
SELECT job_id AS j FROM conveyor.enqueue('pr', '{"n": 1}', 'fetch', 'g1') \gset
SELECT count(*) FROM conveyor.dequeue('pr', 'w1');

SELECT conveyor.progress(:'j', 'w1', 25, 'download', '{"url": "u"}');
SELECT conveyor.progress(:'j', 'w2', 50);
SELECT conveyor.job_log(:'j', 'w1', 'download.done', '{"bytes": 10}');
SELECT event, worker_id, details FROM conveyor.job_events(:'j') WHERE event NOT IN ('enqueued', 'started') ORDER BY at;
SELECT status, attempt, percent, step, job_type, group_key FROM conveyor.list_jobs('pr');

-- Bad input.
SELECT conveyor.progress(:'j', 'w1', 100.5);
SELECT conveyor.progress(:'j', 'w1', 'NaN');
SELECT conveyor.progress('00000000-0000-7000-8000-000000000000', 'w1', 10);
SELECT conveyor.job_log(:'j', 'w1', 'log:started');
SELECT conveyor.job_log(:'j', 'w1', 'two words');
SELECT count(*) FROM conveyor.list_jobs(status => ARRAY['finished']);
SELECT count(*) FROM conveyor.list_jobs(status => ARRAY[NULL]::text[]);
SELECT count(*) FROM conveyor.list_jobs(lim => 1001);
SELECT count(*) FROM conveyor.list_jobs('no_such_queue');

SELECT conveyor.drop_queue('pr', force => true);

-- graphile-worker: one job per call through its SQL API, graphile_worker.add_job.
\set n random(1, 1000000)
SELECT (graphile_worker.add_job('bench', json_build_object('channel_id', 'UC' || :n::int, 'n', :n::int))).id;

-- Shards behind PL/Proxy (bench/proxy.sh): one job per call in one of 1,000 groups. -D queue=<name>
\set n random(1, 1000000)
SELECT job_id FROM conveyor.enqueue(:queue::text, jsonb_build_object('n', :n::int), group_key => 'g' || (:n::int % 1000));

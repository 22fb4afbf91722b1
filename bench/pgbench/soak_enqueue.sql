-- bench/soak.sh's producers: 8 jobs in 10 to soak_crawl, the rest to one of 20 groups of soak_groups;
-- the channel (one of 5,000) names the lease and the entity a worker may take for the job.
\set channel random(1, 5000)
\set g random(1, 20)
\set k random(1, 10)
\if :k <= 8
SELECT conveyor.enqueue('soak_crawl', jsonb_build_object('channel', :channel::int));
\else
SELECT conveyor.enqueue('soak_groups', jsonb_build_object('channel', :channel::int), group_key => 'group-' || :g::int);
\endif

-- m. One page of list_jobs: the newest 100 jobs of one group (of 10,000) of a queue.
\set g random(0, 9999)
SELECT count(*) FROM conveyor.list_jobs('listing', group_key => 'g' || :g, lim => 100);

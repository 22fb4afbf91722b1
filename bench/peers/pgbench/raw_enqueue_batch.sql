-- raw floor: 100 jobs per INSERT ... SELECT from the batch parameter (-D batch=<jsonb array of {"payload": ...}>).
INSERT INTO raw.jobs (payload) SELECT e -> 'payload' FROM jsonb_array_elements(:batch::jsonb) AS e;

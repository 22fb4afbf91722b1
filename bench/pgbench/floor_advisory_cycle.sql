-- g. the floor: a session advisory lock, tried and (when taken) released, in two transactions.
\set k (1 - :hot) * (:client_id + 1)
SELECT pg_try_advisory_lock(:k)::int AS got \gset
SELECT pg_advisory_unlock(:k) WHERE :got::int = 1;

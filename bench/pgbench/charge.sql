-- i. conveyor.charge: one call. -D accounts=<n>: client c charges account c % n.
\set a :client_id % :accounts
SELECT total FROM conveyor.charge('bench_' || :a::text, 'google_maps', 0.032, 1);

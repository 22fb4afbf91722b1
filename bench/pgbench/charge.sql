-- i. conveyor.charge: one call. -D accounts=<n> -D prefix=<p>: client c charges account <p><c % n>.
\set a :client_id % :accounts
SELECT total FROM conveyor.charge((:prefix || :a::text), 'google_maps', 0.032, 1);

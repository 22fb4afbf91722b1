-- i. floor: one atomic UPDATE ... RETURNING and one INSERT, READ COMMITTED. -D accounts=<n>
\set a :client_id % :accounts
BEGIN;
UPDATE floor.accounts SET total = total + 0.032 WHERE account = 'bench_' || :a::text RETURNING total;
INSERT INTO floor.ledger (account, service, amount, items) VALUES ('bench_' || :a::text, 'google_maps', 0.032, 1);
COMMIT;

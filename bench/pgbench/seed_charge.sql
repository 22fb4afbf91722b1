-- i. the seed's recipe for "the MOST CRITICAL function": SERIALIZABLE, SELECT ... FOR UPDATE, INSERT,
-- UPDATE. pgbench retries 40001 (--max-tries), as the client must. -D accounts=<n>
\set a :client_id % :accounts
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT total FROM seed.accounts WHERE account = 'bench_' || :a::text FOR UPDATE;
INSERT INTO seed.ledger (account, service, amount, items) VALUES ('bench_' || :a::text, 'google_maps', 0.032, 1);
UPDATE seed.accounts SET total = total + 0.032 WHERE account = 'bench_' || :a::text RETURNING total;
COMMIT;

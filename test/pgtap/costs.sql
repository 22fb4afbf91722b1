-- Costs: accounts, charge, refunds, idempotency keys, hard and soft budgets, ledger_verify,
-- account_status, cost_report, and bad input that writes nothing.
BEGIN;
SELECT plan(73);

-- ---- accounts ------------------------------------------------------------------------------------

SELECT lives_ok($$ SELECT conveyor.account_create('tap_c', 10) $$, 'account_create with a budget');
SELECT results_eq(
    $$ SELECT budget, currency, hard_limit, total, reserved, entries FROM conveyor.accounts WHERE account = 'tap_c' $$,
    $$ VALUES (10::numeric, 'USD', true, 0::numeric, 0::numeric, 0::bigint) $$,
    'defaults: USD, hard limit, nothing spent');
SELECT throws_ok($$ SELECT conveyor.account_create('tap_c') $$, '42710', 'account "tap_c" already exists',
    'creating an account twice raises 42710');
SELECT lives_ok($$ SELECT conveyor.account_create('tap_open', metadata => '{"owner": "ops"}') $$,
    'an account without a budget');
SELECT throws_ok($$ SELECT conveyor.account_create('tap_bad', currency => 'usd') $$, '22023',
    'currency "usd" is not a three-letter code', 'a currency must be three capital letters');
SELECT throws_ok($$ SELECT conveyor.account_create('tap_bad', -1) $$, '22023', 'budget -1 is negative',
    'a negative budget is refused');
SELECT throws_ok($$ SELECT conveyor.account_create(NULL) $$, '22004', 'account must not be NULL',
    'a NULL account name is refused');
SELECT is((SELECT count(*)::int FROM conveyor.accounts WHERE account = 'tap_bad'), 0, 'refused creations wrote nothing');

-- ---- charge -------------------------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT total, available FROM conveyor.charge('tap_c', 'google_maps', 0.032, 1) $$,
    $$ VALUES (0.032::numeric, 9.968::numeric) $$,
    'a charge returns the new total and what is left of the budget');
SELECT results_eq(
    $$ SELECT total, available FROM conveyor.charge('tap_c', 'bouncer', 0.000001, 3, '{"batch": 7}') $$,
    $$ VALUES (0.032001::numeric, 9.967999::numeric) $$,
    'six decimal places are exact');
SELECT results_eq(
    $$ SELECT service, amount, items, metadata FROM conveyor.ledger WHERE account = 'tap_c' ORDER BY entry_id $$,
    $$ VALUES ('google_maps', 0.032::numeric, 1, NULL::jsonb), ('bouncer', 0.000001::numeric, 3, '{"batch": 7}'::jsonb) $$,
    'each charge appends one ledger entry');
SELECT results_eq(
    $$ SELECT total, entries FROM conveyor.accounts WHERE account = 'tap_c' $$,
    $$ VALUES (0.032001::numeric, 2::bigint) $$,
    'the running total and entry count follow the ledger');
SELECT entry_id AS free_entry FROM conveyor.charge('tap_c', 'maps', 0) \gset
SELECT is((SELECT amount FROM conveyor.ledger WHERE entry_id = :'free_entry'), 0::numeric,
    'a free call is recorded too, under the entry id returned');
SELECT results_eq(
    $$ SELECT total FROM conveyor.charge('tap_open', 'maps', 123456789.123456) $$,
    $$ VALUES (123456789.123456::numeric) $$,
    'an account without a budget takes any charge');
SELECT is((SELECT available FROM conveyor.charge('tap_open', 'maps', 1)), NULL::numeric,
    'and has no available amount');

-- ---- refunds ------------------------------------------------------------------------------------

SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_c', 'maps', -0.01) $$, '22023', 'amount -0.01 is negative',
    'a negative amount is refused unless the caller says it is a refund');
SELECT results_eq(
    $$ SELECT total FROM conveyor.charge('tap_c', 'maps', -0.002, refund => true) $$,
    $$ VALUES (0.030001::numeric) $$,
    'refund => true records a negative amount');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_c', 'maps', 0.5, refund => true) $$, '22023',
    'a refund must have a negative amount, not 0.5', 'a refund with a positive amount is refused');

-- ---- bad amounts ---------------------------------------------------------------------------------

SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_c', 'maps', NULL) $$, '22004', 'amount must not be NULL',
    'a NULL amount raises 22004');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_c', 'maps', 'NaN') $$, '22023', 'amount NaN is not a finite number',
    'NaN is refused');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_c', 'maps', 'Infinity') $$, '22023',
    'amount Infinity is not a finite number', 'infinity is refused');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_c', 'maps', 0.0000001) $$, '22023',
    'amount 0.0000001 has more than 6 decimal places', 'a seventh decimal place is refused, not rounded');
SELECT lives_ok($$ SELECT * FROM conveyor.charge('tap_c', 'maps', 0.10000000) $$,
    'trailing zeros beyond the sixth place are the same amount');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_c', 'maps', 1e18) $$, '22023',
    'amount 1000000000000000000 is out of range', 'an amount of 10^18 or more is refused');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_c', 'maps', 1, items => -1) $$, '22023',
    'items must not be negative, not -1', 'negative items are refused');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_c', NULL, 1) $$, '22004', 'service must not be NULL',
    'a NULL service is refused');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_nobody', 'maps', 1) $$, '42704', 'account "tap_nobody" does not exist',
    'an unknown account raises 42704');
SELECT results_eq(
    $$ SELECT total, entries FROM conveyor.accounts WHERE account = 'tap_c' $$,
    $$ VALUES (0.130001::numeric, 5::bigint) $$,
    'refused charges changed nothing');

-- ---- hard and soft budgets -----------------------------------------------------------------------

SELECT lives_ok($$ SELECT conveyor.account_create('tap_hard', 1) $$, 'a hard budget of 1');
SELECT lives_ok($$ SELECT * FROM conveyor.charge('tap_hard', 'maps', 0.6) $$, 'a charge within the budget');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_hard', 'maps', 0.400001) $$, 'CV001',
    'charge of 0.400001 would pass the budget of account "tap_hard"', 'a charge past a hard budget raises CV001');
SELECT results_eq(
    $$ SELECT total, (SELECT count(*) FROM conveyor.ledger WHERE account = 'tap_hard') FROM conveyor.accounts
       WHERE account = 'tap_hard' $$,
    $$ VALUES (0.6::numeric, 1::bigint) $$,
    'the refused charge wrote no ledger entry and left the total');
SELECT results_eq(
    $$ SELECT total, available FROM conveyor.charge('tap_hard', 'maps', 0.4) $$,
    $$ VALUES (1::numeric, 0::numeric) $$,
    'a charge that reaches the budget exactly passes');
SELECT lives_ok($$ SELECT * FROM conveyor.charge('tap_hard', 'maps', -0.1, refund => true) $$,
    'a refund always passes');
SELECT lives_ok($$ SELECT conveyor.account_update('tap_hard', hard_limit => false) $$, 'account_update to a soft limit');
SELECT results_eq(
    $$ SELECT total, available FROM conveyor.charge('tap_hard', 'maps', 5) $$,
    $$ VALUES (5.9::numeric, -4.9::numeric) $$,
    'a soft-limited account is charged past its budget and shows it');
SELECT lives_ok($$ SELECT conveyor.account_update('tap_hard', remove_budget => true) $$, 'remove_budget');
SELECT is((SELECT budget FROM conveyor.accounts WHERE account = 'tap_hard'), NULL::numeric, 'the budget is gone');
SELECT lives_ok($$ SELECT conveyor.account_update('tap_hard', 20, 'EUR', true, '{"k": 1}') $$, 'account_update of everything');
SELECT results_eq(
    $$ SELECT budget, currency, hard_limit, metadata FROM conveyor.accounts WHERE account = 'tap_hard' $$,
    $$ VALUES (20::numeric, 'EUR', true, '{"k": 1}'::jsonb) $$,
    'the new values are stored');
SELECT throws_ok($$ SELECT conveyor.account_update('tap_nobody', 1) $$, '42704', 'account "tap_nobody" does not exist',
    'account_update of an unknown account raises 42704');
SELECT throws_ok($$ SELECT conveyor.account_update('tap_hard', 1, remove_budget => true) $$, '22023', NULL,
    'a budget and remove_budget together are refused');

-- ---- accounts without a hard budget: charges on slot rows --------------------------------------

SELECT conveyor.account_create('tap_slots');
SELECT lives_ok($$ SELECT * FROM conveyor.charge('tap_slots', 'maps', 1.5) $$, 'a charge to an account without a budget');
SELECT results_eq(
    $$ SELECT (SELECT total FROM conveyor.accounts WHERE account = 'tap_slots'),
              (SELECT sum(total) FROM conveyor.account_slots WHERE account = 'tap_slots'),
              (SELECT sum(entries) FROM conveyor.account_slots WHERE account = 'tap_slots')::int $$,
    $$ VALUES (0::numeric, 1.5::numeric, 1) $$,
    'goes to a slot row, not to the account row');
SELECT results_eq(
    $$ SELECT total FROM conveyor.charge('tap_slots', 'maps', 2.25) $$,
    $$ VALUES (3.75::numeric) $$,
    'the returned total adds the account row and the slots');
SELECT results_eq(
    $$ SELECT total, entries, ok FROM conveyor.account_status('tap_slots') JOIN conveyor.ledger_verify('tap_slots') USING (account, total) $$,
    $$ VALUES (3.75::numeric, 2::bigint, true) $$,
    'account_status and ledger_verify count the slots');
SELECT lives_ok($$ SELECT conveyor.account_update('tap_slots', 4) $$, 'a hard budget is set');
SELECT results_eq(
    $$ SELECT total, entries, (SELECT count(*) FROM conveyor.account_slots WHERE account = 'tap_slots')
       FROM conveyor.accounts WHERE account = 'tap_slots' $$,
    $$ VALUES (3.75::numeric, 2::bigint, 0::bigint) $$,
    'account_update folds the slots into the account row');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_slots', 'maps', 0.250001) $$, 'CV001', NULL,
    'and the budget counts what the slots held');
SELECT results_eq(
    $$ SELECT total, available FROM conveyor.charge('tap_slots', 'maps', 0.25) $$,
    $$ VALUES (4::numeric, 0::numeric) $$,
    'up to the budget exactly');
SELECT is((SELECT count(*)::int FROM conveyor.account_slots WHERE account = 'tap_slots'), 0,
    'a hard-limited account takes no slot rows');
SELECT lives_ok($$ SELECT conveyor.account_update('tap_slots', hard_limit => false) $$, 'a soft limit');
SELECT results_eq(
    $$ SELECT total, available FROM conveyor.charge('tap_slots', 'maps', 1) $$,
    $$ VALUES (5::numeric, -1::numeric) $$,
    'a soft-limited account is charged on a slot row past its budget');
SELECT is((SELECT ok FROM conveyor.ledger_verify('tap_slots')), true, 'ledger_verify agrees');

-- ---- idempotency keys ----------------------------------------------------------------------------

SELECT conveyor.account_create('tap_idem', 100);
CREATE TEMP TABLE first_charge AS SELECT * FROM conveyor.charge('tap_idem', 'bouncer', 0.008, 2, idempotency_key => 'k1');
SELECT results_eq(
    $$ SELECT entry_id, total, available FROM conveyor.charge('tap_idem', 'bouncer', 0.008, 2, idempotency_key => 'k1') $$,
    $$ SELECT entry_id, total, available FROM first_charge $$,
    'a repeated key returns the first charge');
SELECT results_eq(
    $$ SELECT total, entries, (SELECT count(*) FROM conveyor.ledger WHERE account = 'tap_idem')
       FROM conveyor.accounts WHERE account = 'tap_idem' $$,
    $$ VALUES (0.008::numeric, 1::bigint, 1::bigint) $$,
    'and charges nothing');
SELECT is((SELECT state FROM conveyor.idempotency_keys WHERE scope = 'charge:tap_idem' AND key = 'k1'), 'completed',
    'charge keys live in the idempotency mechanism, scope charge:<account>');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_idem', 'bouncer', 0.009, 2, idempotency_key => 'k1') $$, 'CV004',
    'idempotency key "k1" was already used with a different request', 'the same key for another amount raises CV004');
SELECT results_eq(
    $$ SELECT total FROM conveyor.charge('tap_c', 'bouncer', 0.008, 2, idempotency_key => 'k1') $$,
    $$ VALUES (0.138001::numeric) $$,
    'the same key on another account is another charge');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_idem', 'x', 1000, idempotency_key => 'k2') $$, 'CV001', NULL,
    'a refused charge with a key ...');
SELECT is((SELECT count(*)::int FROM conveyor.idempotency_keys WHERE scope = 'charge:tap_idem' AND key = 'k2'), 0,
    '... leaves no key behind');
SELECT lives_ok($$ SELECT * FROM conveyor.charge('tap_idem', 'x', 10, idempotency_key => 'k2') $$,
    'so the key may be used again for a charge that passes');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_idem', 'x', 1, idempotency_key => '') $$, '22023',
    'idempotency_key must not be empty', 'an empty key is refused');

-- ---- ledger_verify, account_status, cost_report -------------------------------------------------

SELECT is((SELECT bool_and(ok) FROM conveyor.ledger_verify()), true, 'ledger_verify: every account agrees with its ledger');
SELECT results_eq(
    $$ SELECT account, total, ledger_sum, ok FROM conveyor.ledger_verify('tap_hard') $$,
    $$ VALUES ('tap_hard', 5.9::numeric, 5.9::numeric, true) $$,
    'ledger_verify of one account');
UPDATE conveyor.accounts SET total = total + 0.000001 WHERE account = 'tap_hard';
SELECT is((SELECT ok FROM conveyor.ledger_verify('tap_hard')), false, 'ledger_verify notices a total that drifted');
UPDATE conveyor.accounts SET total = total - 0.000001 WHERE account = 'tap_hard';
SELECT throws_ok($$ SELECT * FROM conveyor.ledger_verify('tap_nobody') $$, '42704', NULL,
    'ledger_verify of an unknown account raises 42704');

SELECT results_eq(
    $$ SELECT account, total, reserved, budget, available, entries, by_service FROM conveyor.account_status('tap_idem') $$,
    $$ VALUES ('tap_idem', 10.008::numeric, 0::numeric, 100::numeric, 89.992::numeric, 2::bigint,
               '{"bouncer": {"amount": 0.008, "items": 2, "entries": 1}, "x": {"amount": 10, "items": 1, "entries": 1}}'::jsonb) $$,
    'account_status: totals and the per-service breakdown');
SELECT ok((SELECT count(*) FROM conveyor.account_status()) >= 5, 'account_status() lists every account');
SELECT throws_ok($$ SELECT * FROM conveyor.account_status('tap_nobody') $$, '42704', NULL,
    'account_status of an unknown account raises 42704');

-- Entries at known instants (the ledger is the caller's table to fill for this report test).
INSERT INTO conveyor.ledger (entry_id, account, service, amount, items, created_at) VALUES
    (gen_random_uuid(), 'tap_open', 'email', 0.5, 10, '2026-01-01 10:00+00'),
    (gen_random_uuid(), 'tap_open', 'email', 0.25, 5, '2026-01-01 23:00+00'),
    (gen_random_uuid(), 'tap_open', 'maps', 1, 1, '2026-01-02 01:00+00');
SET LOCAL TimeZone = 'UTC';
SELECT results_eq(
    $$ SELECT * FROM conveyor.cost_report('tap_open', '2026-01-01', '2026-01-03') $$,
    $$ VALUES ('2026-01-01 00:00+00'::timestamptz, 'email', 15::bigint, 0.75::numeric),
              ('2026-01-02 00:00+00'::timestamptz, 'maps', 1::bigint, 1::numeric) $$,
    'cost_report: daily buckets per service');
SELECT results_eq(
    $$ SELECT bucket_start, service, amount FROM conveyor.cost_report('tap_open', '2026-01-01', '2026-01-02', 'hour') $$,
    $$ VALUES ('2026-01-01 10:00+00'::timestamptz, 'email', 0.5::numeric),
              ('2026-01-01 23:00+00'::timestamptz, 'email', 0.25::numeric) $$,
    'hourly buckets, until excluded');
SELECT throws_ok($$ SELECT * FROM conveyor.cost_report('tap_open', bucket => 'fortnight') $$, '22023',
    'bucket "fortnight" is not one of hour, day, week, month', 'an unknown bucket is refused');

SELECT * FROM finish();
ROLLBACK;

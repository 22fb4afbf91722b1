-- Reservations: reserve holds budget, settle charges the actual amount and frees the rest,
-- release_reservation frees it, a lapsed reservation expires (at the account's next charge or
-- reserve, and in maintain()), each resolves once. Lapse is simulated by moving expires_at back.
BEGIN;
SELECT plan(45);

CREATE TEMP TABLE rids (name text PRIMARY KEY, id uuid NOT NULL);
CREATE FUNCTION pg_temp.rid(text) RETURNS uuid LANGUAGE sql AS $$ SELECT id FROM rids WHERE name = $1 $$;
SELECT conveyor.account_create('tap_r', 10);

-- ---- reserve ------------------------------------------------------------------------------------

SELECT conveyor.reserve('tap_r', 4) AS r1 \gset
INSERT INTO rids VALUES ('r1', :'r1');
SELECT results_eq(
    $$ SELECT account, amount, state, expires_at - created_at FROM conveyor.reservations WHERE reservation_id = pg_temp.rid('r1') $$,
    $$ VALUES ('tap_r', 4::numeric, 'open', interval '10 minutes') $$,
    'reserve holds the amount for ttl_seconds (default 600)');
SELECT results_eq(
    $$ SELECT total, reserved, available FROM conveyor.account_status('tap_r') $$,
    $$ VALUES (0::numeric, 4::numeric, 6::numeric) $$,
    'the reservation counts against the budget');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_r', 'maps', 6.000001) $$, 'CV001',
    'charge of 6.000001 would pass the budget of account "tap_r"', 'a charge into the reserved part is refused');
SELECT lives_ok($$ SELECT * FROM conveyor.charge('tap_r', 'maps', 6) $$, 'a charge up to the unreserved part passes');
SELECT throws_ok($$ SELECT conveyor.reserve('tap_r', 0.000001) $$, 'CV001',
    'reservation of 0.000001 would pass the budget of account "tap_r"', 'a reservation past the budget raises CV001');
SELECT is((SELECT count(*)::int FROM conveyor.reservations WHERE account = 'tap_r'), 1, 'and writes nothing');

-- ---- settle -------------------------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT total, available FROM conveyor.settle(pg_temp.rid('r1'), 2.5, 'google_maps', 50, '{"zip": "94103"}') $$,
    $$ VALUES (8.5::numeric, 1.5::numeric) $$,
    'settle charges the actual amount and frees the rest');
SELECT results_eq(
    $$ SELECT state, entry_id IS NOT NULL FROM conveyor.reservations WHERE reservation_id = pg_temp.rid('r1') $$,
    $$ VALUES ('settled', true) $$,
    'the reservation is settled and points at its ledger entry');
SELECT results_eq(
    $$ SELECT service, amount, items, reservation_id FROM conveyor.ledger l
       WHERE l.entry_id = (SELECT entry_id FROM conveyor.reservations WHERE reservation_id = pg_temp.rid('r1')) $$,
    $$ VALUES ('google_maps', 2.5::numeric, 50, pg_temp.rid('r1')) $$,
    'the ledger entry names the service, items and reservation');
SELECT throws_ok(format($$ SELECT * FROM conveyor.settle(%L, 1, 'maps') $$, :'r1'), '55000',
    format('reservation %s is settled', :'r1'), 'settling twice raises 55000');
SELECT throws_ok(format($$ SELECT conveyor.release_reservation(%L) $$, :'r1'), '55000',
    format('reservation %s is settled', :'r1'), 'releasing a settled reservation raises 55000');
SELECT results_eq(
    $$ SELECT total, reserved FROM conveyor.accounts WHERE account = 'tap_r' $$,
    $$ VALUES (8.5::numeric, 0::numeric) $$,
    'the refused second settlement changed nothing');

-- settle of more than was reserved: the difference must fit the budget.
SELECT conveyor.reserve('tap_r', 1) AS r2 \gset
INSERT INTO rids VALUES ('r2', :'r2');
SELECT throws_ok(format($$ SELECT * FROM conveyor.settle(%L, 1.500001, 'maps') $$, :'r2'), 'CV001',
    'settlement of 1.500001 would pass the budget of account "tap_r"', 'settling past a hard budget raises CV001');
SELECT is((SELECT state FROM conveyor.reservations WHERE reservation_id = :'r2'), 'open',
    'and the reservation stays open');
SELECT results_eq(
    $$ SELECT total, available FROM conveyor.settle(pg_temp.rid('r2'), 1.5, 'maps') $$,
    $$ VALUES (10::numeric, 0::numeric) $$,
    'settling more than reserved, within the budget, passes');

-- ---- release ------------------------------------------------------------------------------------

SELECT conveyor.account_update('tap_r', 20);
SELECT conveyor.reserve('tap_r', 3) AS r3 \gset
INSERT INTO rids VALUES ('r3', :'r3');
SELECT is(conveyor.release_reservation(:'r3'), true, 'release_reservation frees an open reservation');
SELECT results_eq(
    $$ SELECT state, (SELECT reserved FROM conveyor.accounts WHERE account = 'tap_r')
       FROM conveyor.reservations WHERE reservation_id = pg_temp.rid('r3') $$,
    $$ VALUES ('released', 0::numeric) $$,
    'it is released and holds nothing');
SELECT is(conveyor.release_reservation(:'r3'), false, 'releasing it again returns false');
SELECT throws_ok(format($$ SELECT * FROM conveyor.settle(%L, 1, 'maps') $$, :'r3'), '55000',
    format('reservation %s is released', :'r3'), 'settling a released reservation raises 55000');
SELECT throws_ok($$ SELECT conveyor.release_reservation('00000000-0000-0000-0000-000000000000') $$, '42704',
    'reservation 00000000-0000-0000-0000-000000000000 does not exist', 'an unknown reservation raises 42704');
SELECT throws_ok($$ SELECT * FROM conveyor.settle('00000000-0000-0000-0000-000000000000', 1, 'maps') $$, '42704',
    NULL, 'settle of an unknown reservation raises 42704');

-- ---- expiry -------------------------------------------------------------------------------------

SELECT conveyor.reserve('tap_r', 6, ttl_seconds => 60) AS r4 \gset
INSERT INTO rids VALUES ('r4', :'r4');
SELECT conveyor.reserve('tap_r', 2) AS r5 \gset
INSERT INTO rids VALUES ('r5', :'r5');
UPDATE conveyor.reservations SET expires_at = now() - interval '1 second' WHERE reservation_id = :'r4';
SELECT results_eq(
    $$ SELECT reserved, available FROM conveyor.account_status('tap_r') $$,
    $$ VALUES (2::numeric, 8::numeric) $$,
    'account_status does not count a lapsed reservation');
SELECT throws_ok(format($$ SELECT * FROM conveyor.settle(%L, 1, 'maps') $$, :'r4'), '55000',
    format('reservation %s is expired', :'r4'), 'settling a lapsed reservation raises 55000');
SELECT results_eq(
    $$ SELECT total, available FROM conveyor.charge('tap_r', 'maps', 8) $$,
    $$ VALUES (18::numeric, 0::numeric) $$,
    'the next charge expires the lapsed reservation and may use what it held');
SELECT results_eq(
    $$ SELECT state, resolved_at IS NOT NULL FROM conveyor.reservations WHERE reservation_id = pg_temp.rid('r4') $$,
    $$ VALUES ('expired', true) $$,
    'the lapsed reservation is expired');
SELECT is((SELECT reserved FROM conveyor.accounts WHERE account = 'tap_r'), 2::numeric,
    'and its amount left reserved; the open one still holds');
SELECT is(conveyor.release_reservation(:'r4'), false, 'releasing an expired reservation returns false');
SELECT is((SELECT bool_and(ok) FROM conveyor.ledger_verify('tap_r')), true, 'ledger_verify agrees');

-- A refused charge that would have expired a reservation rolls the expiry back with it.
SELECT conveyor.account_update('tap_r', 30);
SELECT conveyor.reserve('tap_r', 5) AS r6 \gset
INSERT INTO rids VALUES ('r6', :'r6');
UPDATE conveyor.reservations SET expires_at = now() - interval '1 second' WHERE reservation_id = :'r6';
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_r', 'maps', 10.000001) $$, 'CV001', NULL,
    'a charge past the budget, even with the lapsed reservation freed, is refused');
SELECT is((SELECT state FROM conveyor.reservations WHERE reservation_id = :'r6'), 'open',
    'the refused charge expired nothing');
SELECT results_eq(
    $$ SELECT conveyor.reserve('tap_r', 10) IS NOT NULL, (SELECT state FROM conveyor.reservations WHERE reservation_id = pg_temp.rid('r6')) $$,
    $$ VALUES (true, 'open') $$,
    'reserve expires lapsed reservations too (the state shown is the snapshot before it)');
SELECT results_eq(
    $$ SELECT state, (SELECT reserved FROM conveyor.accounts WHERE account = 'tap_r')
       FROM conveyor.reservations WHERE reservation_id = pg_temp.rid('r6') $$,
    $$ VALUES ('expired', 12::numeric) $$,
    'after it: expired, and reserved holds the other two');

-- maintain() expires lapsed reservations of every account.
SELECT conveyor.account_create('tap_r2', 100);
SELECT conveyor.reserve('tap_r2', 7) AS r7 \gset
INSERT INTO rids VALUES ('r7', :'r7');
SELECT conveyor.reserve('tap_r2', 8) AS r8 \gset
INSERT INTO rids VALUES ('r8', :'r8');
UPDATE conveyor.reservations SET expires_at = now() - interval '1 second' WHERE reservation_id IN (:'r7', :'r8', :'r5');
SELECT is((conveyor.maintain() ->> 'reservations_expired')::int, 3, 'maintain() expires lapsed reservations');
SELECT results_eq(
    $$ SELECT account, reserved FROM conveyor.accounts WHERE account IN ('tap_r', 'tap_r2') ORDER BY 1 $$,
    $$ VALUES ('tap_r', 10::numeric), ('tap_r2', 0::numeric) $$,
    'and frees what they held');
SELECT is((conveyor.maintain() ->> 'reservations_expired')::int, 0, 'a second maintain() finds nothing to expire');
SELECT is((SELECT bool_and(ok) FROM conveyor.ledger_verify()), true, 'ledger_verify agrees on every account');

-- ---- idempotency key ----------------------------------------------------------------------------

SELECT conveyor.reserve('tap_r2', 5, idempotency_key => 'job-1') AS r9 \gset
INSERT INTO rids VALUES ('r9', :'r9');
SELECT is(conveyor.reserve('tap_r2', 5, idempotency_key => 'job-1'), :'r9'::uuid,
    'a repeated key returns the first reservation');
SELECT is((SELECT reserved FROM conveyor.accounts WHERE account = 'tap_r2'), 5::numeric, 'and reserves nothing more');
SELECT throws_ok($$ SELECT conveyor.reserve('tap_r2', 6, idempotency_key => 'job-1') $$, 'CV004', NULL,
    'the same key for another amount raises CV004');

-- ---- bad input ----------------------------------------------------------------------------------

SELECT throws_ok($$ SELECT conveyor.reserve('tap_r2', 0) $$, '22023', 'amount must be positive, not 0',
    'a reservation must be positive');
SELECT throws_ok($$ SELECT conveyor.reserve('tap_r2', NULL) $$, '22004', 'amount must not be NULL',
    'a NULL reservation amount raises 22004');
SELECT throws_ok($$ SELECT conveyor.reserve('tap_r2', 1, ttl_seconds => 0) $$, '22023',
    'ttl_seconds must be between 1 and 604800, not 0', 'ttl_seconds must be positive');
SELECT throws_ok($$ SELECT conveyor.reserve('tap_nobody', 1) $$, '42704', 'account "tap_nobody" does not exist',
    'reserve on an unknown account raises 42704');
SELECT throws_ok(format($$ SELECT * FROM conveyor.settle(%L, -1, 'maps') $$, :'r9'), '22023', 'actual -1 is negative',
    'a negative actual amount is refused');
SELECT throws_ok(format($$ SELECT * FROM conveyor.settle(%L, 'NaN', 'maps') $$, :'r9'), '22023',
    'actual NaN is not a finite number', 'a NaN actual amount is refused');

SELECT * FROM finish();
ROLLBACK;

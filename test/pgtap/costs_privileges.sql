-- Who may do what with accounts, charges and quotas: readers read, workers charge and consume,
-- admins define accounts and quotas. Nothing to PUBLIC.
BEGIN;
SELECT plan(14);

CREATE ROLE tap_cp_nobody NOLOGIN;
CREATE ROLE tap_cp_reader NOLOGIN IN ROLE conveyor_reader;
CREATE ROLE tap_cp_worker NOLOGIN IN ROLE conveyor_worker;
CREATE ROLE tap_cp_admin NOLOGIN IN ROLE conveyor_admin;

SET ROLE tap_cp_admin;
SELECT lives_ok($$ SELECT conveyor.account_create('tap_cp', 100) $$, 'an admin creates accounts');
SELECT lives_ok($$ SELECT conveyor.quota_define('tap_cp_q', 10) $$, 'and defines quotas');
RESET ROLE;

SET ROLE tap_cp_worker;
SELECT lives_ok($$ SELECT * FROM conveyor.charge('tap_cp', 'maps', 1) $$, 'a worker charges');
SELECT lives_ok($$ SELECT conveyor.release_reservation(conveyor.reserve('tap_cp', 1)) $$, 'reserves and releases');
SELECT lives_ok($$ SELECT * FROM conveyor.quota_consume('tap_cp_q') $$, 'consumes quota');
SELECT lives_ok($$ SELECT * FROM conveyor.rate_limit('tap_cp', 10) $$, 'asks the rate limiter');
SELECT throws_ok($$ SELECT conveyor.account_create('tap_cp2') $$, '42501', NULL, 'but cannot create accounts');
SELECT throws_ok($$ SELECT conveyor.quota_define('tap_cp_q', 20) $$, '42501', NULL, 'nor define quotas');
SELECT throws_ok($$ SELECT * FROM conveyor.ledger $$, '42501', NULL, 'nor read the ledger table directly');
RESET ROLE;

SET ROLE tap_cp_reader;
SELECT lives_ok($$ SELECT * FROM conveyor.account_status('tap_cp') $$, 'a reader reads account_status');
SELECT lives_ok($$ SELECT * FROM conveyor.quota_status() $$, 'and quota_status');
SELECT throws_ok($$ SELECT * FROM conveyor.charge('tap_cp', 'maps', 1) $$, '42501', NULL, 'but cannot charge');
RESET ROLE;

SET ROLE tap_cp_nobody;
SELECT throws_ok($$ SELECT * FROM conveyor.account_status() $$, '42501', NULL, 'PUBLIC cannot read accounts');
SELECT throws_ok($$ SELECT * FROM conveyor.quota_consume('tap_cp_q') $$, '42501', NULL, 'nor consume quota');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

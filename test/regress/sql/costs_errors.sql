-- What callers see when a charge, reservation, quota or rate limit is refused or misused.
\set VERBOSITY default
SELECT conveyor.account_create('reg_cost', 10, hard_limit => true);
SELECT total, available FROM conveyor.charge('reg_cost', 'google_maps', 9.5);
-- past a hard budget
SELECT * FROM conveyor.charge('reg_cost', 'google_maps', 0.6);
SELECT conveyor.reserve('reg_cost', 1);
-- bad amounts
SELECT * FROM conveyor.charge('reg_cost', 'bouncer', NULL);
SELECT * FROM conveyor.charge('reg_cost', 'bouncer', 'NaN');
SELECT * FROM conveyor.charge('reg_cost', 'bouncer', '-Infinity', refund => true);
SELECT * FROM conveyor.charge('reg_cost', 'bouncer', 0.0080001);
SELECT * FROM conveyor.charge('reg_cost', 'bouncer', 123456789012345678901);
SELECT * FROM conveyor.charge('reg_cost', 'bouncer', -0.5);
SELECT * FROM conveyor.charge('reg_cost', 'bouncer', 0.5, refund => true);
SELECT * FROM conveyor.charge('reg_cost', 'bouncer', 0.1, items => -2);
-- unknown things
SELECT * FROM conveyor.charge('reg_nobody', 'bouncer', 0.1);
SELECT * FROM conveyor.settle('00000000-0000-0000-0000-000000000000', 1, 'maps');
SELECT conveyor.account_create('reg_cost');
SELECT conveyor.account_create('reg_cost2', currency => 'dollars');
-- a key reused for another charge
SELECT total FROM conveyor.charge('reg_cost', 'bouncer', 0.008, idempotency_key => 'reg-1');
SELECT total FROM conveyor.charge('reg_cost', 'bouncer', 0.009, idempotency_key => 'reg-1');
-- nothing was written by the refusals
SELECT account, total, ledger_sum, reserved, ok FROM conveyor.ledger_verify('reg_cost');
-- quotas
SELECT conveyor.quota_define('reg_quota', 10000, 'day', 'America/Los_Angeles', '{"search.list": 100}');
SELECT conveyor.quota_define('reg_quota_bad', 10, 'fortnight');
SELECT conveyor.quota_define('reg_quota_bad', 10, 'day', 'Pacific/Atlantis');
SELECT conveyor.quota_define('reg_quota_bad', 10, costs => '{"search.list": "many"}');
SELECT * FROM conveyor.quota_consume('reg_quota', operation => 'videos.insert');
SELECT * FROM conveyor.quota_consume('reg_quota', -5);
SELECT * FROM conveyor.quota_consume('reg_unknown');
SELECT allowed, used, remaining FROM conveyor.quota_consume('reg_quota', 10001);
-- rate limits
SELECT * FROM conveyor.rate_limit('reg_rl', 0);
SELECT * FROM conveyor.rate_limit('reg_rl', 5, burst => -1);

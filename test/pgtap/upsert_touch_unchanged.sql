-- upsert and upsert_counts with the option touch_unchanged: unchanged rows get their touch columns
-- set to now() and nothing else, and are still reported unchanged; with operation_id, fence,
-- returning, audit, on_error, mode 'update', row-level security and a partitioned target; what is
-- refused.
BEGIN;
SELECT plan(29);

CREATE TABLE tap_tu (channel_id text PRIMARY KEY, title text NOT NULL, country text,
                     created_at timestamptz NOT NULL DEFAULT '2020-01-01', last_refreshed_at timestamptz);
SELECT conveyor.upsert('tap_tu', '[{"channel_id": "UC1", "title": "One"}, {"channel_id": "UC2", "title": "Two"}]', '{channel_id}',
                       '{"touch_columns": ["last_refreshed_at"]}');
UPDATE tap_tu SET last_refreshed_at = '2020-01-01';

-- ---- without the option, unchanged rows are left alone ------------------------------------------------

SELECT is((SELECT action FROM conveyor.upsert('tap_tu', '[{"channel_id": "UC1", "title": "One"}]', '{channel_id}',
                                              '{"touch_columns": ["last_refreshed_at"]}')), 'unchanged', 'an equal row is unchanged ...');
SELECT is((SELECT last_refreshed_at FROM tap_tu WHERE channel_id = 'UC1'), '2020-01-01'::timestamptz,
          '... and, without touch_unchanged, its touch column is not set');

-- ---- with it ---------------------------------------------------------------------------------------------------

SELECT xmin::text AS x_uc2 FROM tap_tu WHERE channel_id = 'UC2' \gset
SELECT results_eq(
    $$ SELECT ord, action, changed, "row" FROM conveyor.upsert('tap_tu',
         '[{"channel_id": "UC1", "title": "One"}, {"channel_id": "UC2", "title": "Two!"}, {"channel_id": "UC3", "title": "Three"}]',
         '{channel_id}', '{"touch_columns": ["last_refreshed_at"], "touch_unchanged": true, "returning": ["title", "last_refreshed_at"]}') $$,
    $$ VALUES (0, 'unchanged', NULL::jsonb, jsonb_build_object('title', 'One', 'last_refreshed_at', now())),
              (1, 'updated', '{"title": {"old": "Two", "new": "Two!"}}', jsonb_build_object('title', 'Two!', 'last_refreshed_at', now())),
              (2, 'inserted', NULL, jsonb_build_object('title', 'Three', 'last_refreshed_at', now())) $$,
    'touch_unchanged: the equal row is still unchanged (changed NULL); returning shows its new touch value');
SELECT results_eq($$ SELECT channel_id, title, last_refreshed_at, created_at FROM tap_tu ORDER BY channel_id $$,
                  $$ VALUES ('UC1'::text, 'One'::text, now(), '2020-01-01'::timestamptz), ('UC2', 'Two!', now(), '2020-01-01'),
                            ('UC3', 'Three', now(), '2020-01-01') $$,
                  'every row''s touch column is now(); nothing else of the unchanged row was written');

UPDATE tap_tu SET last_refreshed_at = '2020-01-01';
SELECT results_eq(
    $$ SELECT inserted, updated, unchanged FROM conveyor.upsert_counts('tap_tu',
         '[{"channel_id": "UC1", "title": "One"}, {"channel_id": "UC2", "title": "Two!"}]', '{channel_id}',
         '{"touch_columns": ["last_refreshed_at"], "touch_unchanged": true}') $$,
    $$ VALUES (0::bigint, 0::bigint, 2::bigint) $$, 'upsert_counts: both unchanged ...');
SELECT is((SELECT count(*)::int FROM tap_tu WHERE last_refreshed_at = now()), 2, '... and both touched');

-- the next batch of the shape starts with Classify (the last found every row): touched as well
UPDATE tap_tu SET last_refreshed_at = '2020-01-01';
SELECT is((SELECT string_agg(action, ',') FROM conveyor.upsert('tap_tu', '[{"channel_id": "UC1", "title": "One"}, {"channel_id": "UC2", "title": "Two!"}]',
                                                              '{channel_id}', '{"touch_columns": ["last_refreshed_at"], "touch_unchanged": true}')),
          'unchanged,unchanged', 'a batch classified without writing ...');
SELECT is((SELECT count(*)::int FROM tap_tu WHERE last_refreshed_at = now()), 2, '... has its unchanged rows touched');

-- audit: a touch is not a change
UPDATE tap_tu SET last_refreshed_at = '2020-01-01';
SELECT conveyor.upsert('tap_tu', '[{"channel_id": "UC1", "title": "One"}]', '{channel_id}',
                       '{"touch_columns": ["last_refreshed_at"], "touch_unchanged": true, "audit": true}');
SELECT is((SELECT count(*)::int FROM conveyor.change_log WHERE target = 'public.tap_tu'), 0, 'audit: a touched unchanged row leaves no change_log row');
SELECT is((SELECT last_refreshed_at FROM tap_tu WHERE channel_id = 'UC1'), now(), '... though it was touched');

-- mode 'update'
UPDATE tap_tu SET last_refreshed_at = '2020-01-01';
SELECT results_eq(
    $$ SELECT action FROM conveyor.upsert('tap_tu', '[{"channel_id": "UC1", "title": "One"}, {"channel_id": "UC9", "title": "Nine"}]',
                                          '{channel_id}', '{"touch_columns": ["last_refreshed_at"], "touch_unchanged": true, "mode": "update"}') $$,
    $$ VALUES ('unchanged'), ('missing') $$, 'mode update: unchanged and missing ...');
SELECT results_eq($$ SELECT channel_id, last_refreshed_at FROM tap_tu ORDER BY channel_id $$,
                  $$ VALUES ('UC1'::text, now()), ('UC2', '2020-01-01'::timestamptz), ('UC3', '2020-01-01') $$,
                  '... the unchanged row touched, no row inserted');

-- on_error skip: the failing element is set aside, the unchanged one touched
UPDATE tap_tu SET last_refreshed_at = '2020-01-01';
SELECT results_eq(
    $$ SELECT action FROM conveyor.upsert('tap_tu', '[{"channel_id": "UC2", "title": "Two!"}, {"channel_id": "UC4", "title": null}]',
                                          '{channel_id}', '{"touch_columns": ["last_refreshed_at"], "touch_unchanged": true, "on_error": "skip"}') $$,
    $$ VALUES ('unchanged'), ('error') $$, 'on_error skip: the bad element is an error ...');
SELECT is((SELECT last_refreshed_at FROM tap_tu WHERE channel_id = 'UC2'), now(), '... and the unchanged one is touched');

-- operation_id: a repeat returns the stored result and writes nothing
UPDATE tap_tu SET last_refreshed_at = '2020-01-01';
SELECT conveyor.upsert('tap_tu', '[{"channel_id": "UC3", "title": "Three"}]', '{channel_id}',
                       '{"touch_columns": ["last_refreshed_at"], "touch_unchanged": true, "operation_id": "tap-tu-1", "returning": ["last_refreshed_at"]}');
UPDATE tap_tu SET last_refreshed_at = '2021-01-01' WHERE channel_id = 'UC3';
SELECT results_eq(
    $$ SELECT action, "row" FROM conveyor.upsert('tap_tu', '[{"channel_id": "UC3", "title": "Three"}]', '{channel_id}',
           '{"touch_columns": ["last_refreshed_at"], "touch_unchanged": true, "operation_id": "tap-tu-1", "returning": ["last_refreshed_at"]}') $$,
    $$ VALUES ('unchanged', jsonb_build_object('last_refreshed_at', now())) $$,
    'operation_id: the repeat returns the first call''s result ...');
SELECT is((SELECT last_refreshed_at FROM tap_tu WHERE channel_id = 'UC3'), '2021-01-01'::timestamptz, '... and touches nothing again');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_tu', '[{"channel_id": "UC3", "title": "Three"}]', '{channel_id}',
           '{"touch_columns": ["last_refreshed_at"], "operation_id": "tap-tu-1", "returning": ["last_refreshed_at"]}') $$,
    'CV004', NULL, 'touch_unchanged is part of the request an operation_id stands for');

-- fence
SELECT conveyor.lock_acquire('tap_tu:UC1', 'worker-a', 60) AS tok \gset
UPDATE tap_tu SET last_refreshed_at = '2020-01-01';
SELECT throws_ok(
    format($$ SELECT * FROM conveyor.upsert('tap_tu', '[{"channel_id": "UC1", "title": "One"}]', '{channel_id}',
                  '{"touch_columns": ["last_refreshed_at"], "touch_unchanged": true, "fence": {"key": "tap_tu:UC1", "token": %s}}') $$, :tok - 1),
    'CV003', NULL, 'fence: a superseded token is refused ...');
SELECT is((SELECT last_refreshed_at FROM tap_tu WHERE channel_id = 'UC1'), '2020-01-01'::timestamptz, '... and touches nothing');
SELECT is((SELECT action FROM conveyor.upsert('tap_tu', '[{"channel_id": "UC1", "title": "One"}]', '{channel_id}',
              jsonb_build_object('touch_columns', '["last_refreshed_at"]'::jsonb, 'touch_unchanged', true,
                                 'fence', jsonb_build_object('key', 'tap_tu:UC1', 'token', :tok)))),
          'unchanged', 'fence: with the live token ...');
SELECT is((SELECT last_refreshed_at FROM tap_tu WHERE channel_id = 'UC1'), now(), '... the unchanged row is touched');

-- ---- a partitioned target ------------------------------------------------------------------------------------------

CREATE TABLE tap_tu_daily (day date, video_id text, views bigint, seen_at timestamptz, PRIMARY KEY (day, video_id)) PARTITION BY RANGE (day);
CREATE TABLE tap_tu_daily_01 PARTITION OF tap_tu_daily FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE tap_tu_daily_02 PARTITION OF tap_tu_daily FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
INSERT INTO tap_tu_daily VALUES ('2026-01-05', 'v1', 10, '2020-01-01'), ('2026-02-05', 'v1', 20, '2020-01-01');
SELECT results_eq(
    $$ SELECT action FROM conveyor.upsert('tap_tu_daily', '[{"day": "2026-01-05", "video_id": "v1", "views": 10},
                                                            {"day": "2026-02-05", "video_id": "v1", "views": 21}]',
                                          '{day,video_id}', '{"touch_columns": ["seen_at"], "touch_unchanged": true}') $$,
    $$ VALUES ('unchanged'), ('updated') $$, 'partitioned: unchanged and updated ...');
SELECT is((SELECT count(*)::int FROM tap_tu_daily WHERE seen_at = now()), 2, '... both rows touched, in their partitions');

-- ---- row-level security, with UPDATE on the touch column only -------------------------------------------------------

CREATE TABLE tap_tu_seen (item text PRIMARY KEY, owner text NOT NULL DEFAULT current_user, last_seen_at timestamptz);
ALTER TABLE tap_tu_seen ENABLE ROW LEVEL SECURITY;
CREATE ROLE tap_tu_crawler NOLOGIN IN ROLE conveyor_worker;
GRANT SELECT, INSERT (item, last_seen_at), UPDATE (last_seen_at) ON tap_tu_seen TO tap_tu_crawler;
CREATE POLICY tap_tu_read ON tap_tu_seen FOR SELECT USING (true);
CREATE POLICY tap_tu_add ON tap_tu_seen FOR INSERT WITH CHECK (true);
CREATE POLICY tap_tu_touch ON tap_tu_seen FOR UPDATE USING (owner = current_user);
INSERT INTO tap_tu_seen VALUES ('i1', 'tap_tu_crawler', '2020-01-01'), ('i2', 'someone_else', '2020-01-01');
SET ROLE tap_tu_crawler;
SELECT results_eq(
    $$ SELECT action FROM conveyor.upsert('tap_tu_seen', '[{"item": "i1"}, {"item": "i3"}]', '{item}',
                                          '{"touch_columns": ["last_seen_at"], "touch_unchanged": true}') $$,
    $$ VALUES ('unchanged'), ('inserted') $$, 'RLS: a role with UPDATE on the touch column alone touches its row ...');
SELECT throws_ok($$ SELECT * FROM conveyor.upsert('tap_tu_seen', '[{"item": "i2"}]', '{item}',
                                                 '{"touch_columns": ["last_seen_at"], "touch_unchanged": true}') $$,
                 '42501', 'rows[0]: row-level security does not let you update the row of public.tap_tu_seen with key (item=i2)',
                 '... but not one its UPDATE policy hides (42501)');
RESET ROLE;
SELECT results_eq($$ SELECT item, last_seen_at FROM tap_tu_seen ORDER BY item $$,
                  $$ VALUES ('i1'::text, now()), ('i2', '2020-01-01'::timestamptz), ('i3', now()) $$, '... the stored rows');

-- ---- refused --------------------------------------------------------------------------------------------------------

SELECT throws_ok($$ SELECT * FROM conveyor.upsert('tap_tu', '[{"channel_id": "UC1", "title": "One"}]', '{channel_id}',
                                                 '{"touch_unchanged": true}') $$,
                 '22023', 'option touch_unchanged needs touch_columns', 'touch_unchanged without touch_columns');
SELECT throws_ok($$ SELECT * FROM conveyor.upsert('tap_tu', '[{"channel_id": "UC1", "title": "One"}]', '{channel_id}',
                                                 '{"touch_columns": ["last_refreshed_at"], "touch_unchanged": "yes"}') $$,
                 '22023', 'option touch_unchanged must be true or false, not string', 'touch_unchanged not a boolean');
SELECT throws_ok($$ SELECT * FROM conveyor.upsert_counts('tap_tu', '[{"channel_id": "UC1", "title": "One"}]', '{channel_id}',
                                                        '{"touch_columns": ["last_refreshed_at"], "touch_unchanged": true, "mode": "insert"}') $$,
                 '22023', 'option touch_unchanged does not go with mode ''insert''', 'touch_unchanged with mode insert');

SELECT * FROM finish();
ROLLBACK;

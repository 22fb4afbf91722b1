-- conveyor.upsert and upsert_counts: what is inserted, updated and left alone, and the options.
BEGIN;
SELECT plan(65);

CREATE TABLE tap_up_channels (
    channel_id       text PRIMARY KEY,
    title            text NOT NULL,
    country          text DEFAULT 'ZZ',
    subscriber_count bigint,
    topics           jsonb,
    tags             text[],
    location         point,           -- no equality operator: compared as text
    raw              json,            -- no equality operator either
    rating           numeric,
    published_at     timestamptz,
    first_seen_by    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz
);

-- ---- insert, update, unchanged ---------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT ord, key, action, changed FROM conveyor.upsert('tap_up_channels', '[
           {"channel_id": "UC1", "title": "One", "subscriber_count": 10, "topics": ["Music"], "tags": ["a", "b"],
            "location": "(1,2)", "raw": {"b": 1, "a": 2}, "rating": 4.5, "published_at": "2020-01-01T00:00:00Z"},
           {"channel_id": "UC2", "title": "Two"}
       ]', '{channel_id}') $$,
    $$ VALUES (0, '{"channel_id": "UC1"}'::jsonb, 'inserted', NULL::jsonb), (1, '{"channel_id": "UC2"}', 'inserted', NULL) $$,
    'new keys are inserted, one row per element in input order');
SELECT results_eq(
    $$ SELECT title, country, subscriber_count, topics, tags, location::text, raw::text, rating, published_at
       FROM tap_up_channels ORDER BY channel_id $$,
    $$ VALUES ('One', 'ZZ', 10::bigint, '["Music"]'::jsonb, '{a,b}'::text[], '(1,2)', '{"a": 2, "b": 1}', 4.5, '2020-01-01T00:00:00Z'::timestamptz),
              ('Two', 'ZZ', NULL, NULL, NULL, NULL, NULL, NULL, NULL) $$,
    'values are converted as jsonb_populate_record does (a json column gets jsonb''s text); absent columns get their defaults');

CREATE TEMP TABLE tap_up_before AS SELECT channel_id, xmin::text AS row_xmin, ctid AS row_ctid FROM tap_up_channels;
SELECT pg_stat_get_xact_tuples_updated('tap_up_channels'::regclass) AS upd0 \gset

SELECT results_eq(
    $$ SELECT ord, action, changed FROM conveyor.upsert('tap_up_channels', '[
           {"channel_id": "UC2", "title": "Two"},
           {"channel_id": "UC1", "title": "One", "subscriber_count": 10, "topics": ["Music"], "tags": ["a", "b"],
            "location": "(1,2)", "raw": {"b": 1, "a": 2}, "rating": 4.50, "published_at": "2020-01-01T01:00:00+01:00"}
       ]', '{channel_id}') $$,
    $$ VALUES (0, 'unchanged', NULL::jsonb), (1, 'unchanged', NULL) $$,
    'the same data again is unchanged (equal by each type''s equality: 4.50 = 4.5, the same instant in another zone)');
SELECT is(pg_stat_get_xact_tuples_updated('tap_up_channels'::regclass) - :upd0, 0::bigint,
          'unchanged rows are not updated (n_tup_upd of this transaction did not move)');
SELECT is((SELECT count(*)::int FROM tap_up_channels c JOIN tap_up_before b USING (channel_id)
           WHERE c.xmin::text = b.row_xmin AND c.ctid = b.row_ctid), 2,
          'unchanged rows keep their row version (same xmin, same ctid): no new version, no dead tuple');

SELECT results_eq(
    $$ SELECT ord, action, changed FROM conveyor.upsert('tap_up_channels', '[
           {"channel_id": "UC1", "title": "One", "subscriber_count": 11, "location": "(1,3)", "raw": {"a": 3, "b": 1}},
           {"channel_id": "UC2", "title": "Two", "topics": null}
       ]', '{channel_id}') $$,
    $$ VALUES (0, 'updated', '{"subscriber_count": {"old": 10, "new": 11}, "location": {"old": "(1,2)", "new": "(1,3)"},
                              "raw": {"old": {"a": 2, "b": 1}, "new": {"a": 3, "b": 1}}}'::jsonb),
              (1, 'unchanged', NULL) $$,
    'changed columns are reported old and new; json and point (no equality operator) are compared as text; null = null');
SELECT is(pg_stat_get_xact_tuples_updated('tap_up_channels'::regclass) - :upd0, 1::bigint, 'exactly one row was updated');
SELECT results_eq(
    $$ SELECT subscriber_count, topics, tags, rating FROM tap_up_channels WHERE channel_id = 'UC1' $$,
    $$ VALUES (11::bigint, '["Music"]'::jsonb, '{a,b}'::text[], 4.5) $$,
    'columns absent from an element are left as they were');
SELECT is((SELECT xmin::text FROM tap_up_channels WHERE channel_id = 'UC2'), (SELECT row_xmin FROM tap_up_before WHERE channel_id = 'UC2'),
          'the unchanged row of a batch that updated another keeps its version');

-- ---- touch_columns, immutable_columns, created_at ----------------------------------------------------

UPDATE tap_up_channels SET updated_at = '2000-01-01', created_at = '2000-01-01';
SELECT results_eq(
    $$ SELECT action FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "One", "subscriber_count": 11},
                                                              {"channel_id": "UC3", "title": "Three"}]',
                                          '{channel_id}', '{"touch_columns": ["updated_at"]}') ORDER BY ord $$,
    $$ VALUES ('unchanged'), ('inserted') $$, 'a batch with touch_columns');
SELECT is((SELECT updated_at FROM tap_up_channels WHERE channel_id = 'UC1'), '2000-01-01'::timestamptz,
          'a touch column is not set on an unchanged row');
SELECT is((SELECT updated_at FROM tap_up_channels WHERE channel_id = 'UC3'), now(), 'it is set to now() on insert');
SELECT is((SELECT action FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "One!"}]',
                                              '{channel_id}', '{"touch_columns": ["updated_at"]}')), 'updated', 'an update ...');
SELECT is((SELECT updated_at FROM tap_up_channels WHERE channel_id = 'UC1'), now(), '... sets it to now()');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "One", "updated_at": "2001-01-01"}]',
                                     '{channel_id}', '{"touch_columns": ["updated_at"]}') $$,
    '22023', 'rows[0]: "updated_at" is a touch column; upsert sets it', 'a value for a touch column is an error when strict ...');
SELECT is((SELECT action FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "One!", "updated_at": "2001-01-01"}]',
                                              '{channel_id}', '{"touch_columns": ["updated_at"], "strict": false}')),
          'unchanged', '... and ignored when not');

SELECT is((SELECT changed FROM conveyor.upsert('tap_up_channels',
              '[{"channel_id": "UC1", "title": "One", "first_seen_by": "w2", "created_at": "2030-01-01"}]',
              '{channel_id}', '{"immutable_columns": ["first_seen_by"]}')),
          '{"title": {"old": "One!", "new": "One"}}'::jsonb,
          'immutable columns and created_at are neither compared nor written on update');
SELECT results_eq(
    $$ SELECT first_seen_by, created_at FROM tap_up_channels WHERE channel_id = 'UC1' $$,
    $$ VALUES (NULL::text, '2000-01-01'::timestamptz) $$, 'they keep their values');
SELECT is((SELECT action FROM conveyor.upsert('tap_up_channels',
              '[{"channel_id": "UC4", "title": "Four", "first_seen_by": "w2", "created_at": "2030-01-01"}]',
              '{channel_id}', '{"immutable_columns": ["first_seen_by"]}')), 'inserted', 'a new row ...');
SELECT results_eq(
    $$ SELECT first_seen_by, created_at FROM tap_up_channels WHERE channel_id = 'UC4' $$,
    $$ VALUES ('w2', '2030-01-01'::timestamptz) $$, '... gets its immutable columns and created_at as given');
SELECT is((SELECT action FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC4", "first_seen_by": "w3"}]',
                                              '{channel_id}', '{"immutable_columns": ["first_seen_by"]}')),
          'unchanged', 'an element with only key and immutable columns leaves an existing row unchanged');

-- ---- strict ---------------------------------------------------------------------------------------------

SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "One", "etag": "x"}]', '{channel_id}') $$,
    '22023', 'rows[0]: table public.tap_up_channels has no column "etag"', 'unknown keys are an error by default');
SELECT is((SELECT action FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "One", "etag": "x", "kind": "y"}]',
                                              '{channel_id}', '{"strict": false}')),
          'unchanged', 'strict false ignores them');

-- ---- several shapes in one batch, composite keys ----------------------------------------------------------

SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_up_channels', '[
           {"channel_id": "UC5", "title": "Five", "country": "FR"},
           {"channel_id": "UC1", "title": "One", "subscriber_count": 12},
           {"channel_id": "UC6", "title": "Six"},
           {"channel_id": "UC4", "title": "Four", "country": "ZZ"}
       ]', '{channel_id}') $$,
    $$ VALUES (0, 'inserted'), (1, 'updated'), (2, 'inserted'), (3, 'unchanged') $$,
    'elements with different columns in one batch');
SELECT results_eq(
    $$ SELECT channel_id, country, subscriber_count FROM tap_up_channels WHERE channel_id IN ('UC1', 'UC5', 'UC6') ORDER BY 1 $$,
    $$ VALUES ('UC1', 'ZZ', 12::bigint), ('UC5', 'FR', NULL), ('UC6', 'ZZ', NULL) $$, 'each written with its own columns');

CREATE TABLE tap_up_stats (channel_id text, day date, views bigint, note text, UNIQUE (day, channel_id));
SELECT results_eq(
    $$ SELECT key, action FROM conveyor.upsert('tap_up_stats', '[{"channel_id": "UC1", "day": "2026-01-01", "views": 5},
                                                                {"channel_id": "UC1", "day": "2026-01-02", "views": 6}]',
                                               '{channel_id, day}') ORDER BY ord $$,
    $$ VALUES ('{"channel_id": "UC1", "day": "2026-01-01"}'::jsonb, 'inserted'), ('{"channel_id": "UC1", "day": "2026-01-02"}', 'inserted') $$,
    'a composite key, in any order, matching a unique constraint');
SELECT results_eq(
    $$ SELECT key, action, changed FROM conveyor.upsert('tap_up_stats', '[{"day": "2026-01-02", "channel_id": "UC1", "views": 7}]',
                                                        '{day, channel_id}') $$,
    $$ VALUES ('{"channel_id": "UC1", "day": "2026-01-02"}'::jsonb, 'updated', '{"views": {"old": 6, "new": 7}}'::jsonb) $$,
    'updates by the composite key');
SELECT is((SELECT count(*)::int FROM tap_up_stats), 2, 'no duplicate row');

CREATE TABLE tap_up_daily (day date, video_id text, views bigint, PRIMARY KEY (day, video_id)) PARTITION BY RANGE (day);
CREATE TABLE tap_up_daily_01 PARTITION OF tap_up_daily FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE tap_up_daily_02 PARTITION OF tap_up_daily FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
SELECT is((SELECT count(*)::int FROM conveyor.upsert('tap_up_daily', '[{"day": "2026-01-05", "video_id": "v1", "views": 1},
                                                                       {"day": "2026-02-05", "video_id": "v1", "views": 2}]',
                                                     '{day, video_id}') WHERE action = 'inserted'), 2,
          'a partitioned table: rows go to their partitions');
SELECT results_eq(
    $$ SELECT action, changed FROM conveyor.upsert('tap_up_daily', '[{"day": "2026-01-05", "video_id": "v1", "views": 1},
                                                                    {"day": "2026-02-05", "video_id": "v1", "views": 3}]',
                                                   '{day, video_id}') ORDER BY ord $$,
    $$ VALUES ('unchanged', NULL::jsonb), ('updated', '{"views": {"old": 2, "new": 3}}') $$,
    'and are compared and updated there');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_daily', '[{"day": "2026-03-05", "video_id": "v1", "views": 1}]', '{day, video_id}') $$,
    '23514', 'rows[0]: no partition of relation "tap_up_daily" found for row', 'a row no partition takes names its element');

-- ---- upsert_counts ---------------------------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT inserted, updated, unchanged, skipped FROM conveyor.upsert_counts('tap_up_channels', '[{"channel_id": "UC1", "title": "One", "subscriber_count": 13},
                                                                {"channel_id": "UC2", "title": "Two"},
                                                                {"channel_id": "UC7", "title": "Seven"}]', '{channel_id}') $$,
    $$ VALUES (1::bigint, 1::bigint, 1::bigint, 0::bigint) $$, 'upsert_counts returns inserted, updated, unchanged, skipped');
SELECT results_eq(
    $$ SELECT inserted, updated, unchanged, skipped FROM conveyor.upsert_counts('tap_up_channels', '[]', '{channel_id}') $$,
    $$ VALUES (0::bigint, 0::bigint, 0::bigint, 0::bigint) $$, 'an empty batch does nothing');

-- ---- operation_id ------------------------------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT ord, action, changed FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "One op"},
                                                                           {"channel_id": "UC8", "title": "Eight"}]',
                                                        '{channel_id}', '{"operation_id": "crawl-42"}') $$,
    $$ VALUES (0, 'updated', '{"title": {"old": "One", "new": "One op"}}'::jsonb), (1, 'inserted', NULL) $$,
    'the first call with an operation_id does the work');
UPDATE tap_up_channels SET title = 'edited meanwhile' WHERE channel_id IN ('UC1', 'UC8');
SELECT pg_stat_get_xact_tuples_updated('tap_up_channels'::regclass) AS upd1, pg_stat_get_xact_tuples_inserted('tap_up_channels'::regclass) AS ins1 \gset
SELECT results_eq(
    $$ SELECT ord, key, action, changed FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "One op"},
                                                                                {"channel_id": "UC8", "title": "Eight"}]',
                                                             '{channel_id}', '{"operation_id": "crawl-42"}') $$,
    $$ VALUES (0, '{"channel_id": "UC1"}'::jsonb, 'updated', '{"title": {"old": "One", "new": "One op"}}'::jsonb),
              (1, '{"channel_id": "UC8"}', 'inserted', NULL) $$,
    'a repeat returns the first call''s result ...');
SELECT is((SELECT string_agg(title, ',' ORDER BY channel_id) FROM tap_up_channels WHERE channel_id IN ('UC1', 'UC8')),
          'edited meanwhile,edited meanwhile', '... and writes nothing');
SELECT is(pg_stat_get_xact_tuples_updated('tap_up_channels'::regclass) + pg_stat_get_xact_tuples_inserted('tap_up_channels'::regclass),
          (:upd1 + :ins1)::bigint, 'not a single row version');
SELECT results_eq(
    $$ SELECT inserted, updated, unchanged, skipped FROM conveyor.upsert_counts('tap_up_channels', '[{"channel_id": "UC9", "title": "Nine"}]', '{channel_id}',
                                            '{"operation_id": "crawl-43"}') $$,
    $$ VALUES (1::bigint, 0::bigint, 0::bigint, 0::bigint) $$, 'upsert_counts with an operation_id');
SELECT results_eq(
    $$ SELECT inserted, updated, unchanged, skipped FROM conveyor.upsert_counts('tap_up_channels', '[{"channel_id": "UC9", "title": "Nine"}]', '{channel_id}',
                                            '{"operation_id": "crawl-43"}') $$,
    $$ VALUES (1::bigint, 0::bigint, 0::bigint, 0::bigint) $$, 'repeats its counts');
SELECT results_eq(
    $$ SELECT inserted, updated, unchanged, skipped FROM conveyor.upsert_counts('tap_up_channels', '[{"channel_id": "UC9", "title": "Nine!"}]', '{channel_id}',
                                            '{"operation_id": "crawl-45"}') $$,
    $$ VALUES (0::bigint, 1::bigint, 0::bigint, 0::bigint) $$, 'upsert_counts with an operation_id that updates');
SELECT results_eq(
    $$ SELECT inserted, updated, unchanged, skipped FROM conveyor.upsert_counts('tap_up_channels', '[{"channel_id": "UC9", "title": "Nine!"}]', '{channel_id}',
                                            '{"operation_id": "crawl-45"}') $$,
    $$ VALUES (0::bigint, 1::bigint, 0::bigint, 0::bigint) $$, 'repeats its counts too');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "Other"}]', '{channel_id}',
                                     '{"operation_id": "crawl-42"}') $$,
    'CV004', 'operation_id "crawl-42" was already used with a different request',
    'the same operation_id with other rows is CV004');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC9", "title": "Nine"}]', '{channel_id}',
                                     '{"operation_id": "crawl-43"}') $$,
    'CV004', NULL, 'as is an operation_id of upsert_counts reused by upsert');
SELECT is((SELECT count(*)::int FROM conveyor.idempotency_keys WHERE scope = 'upsert' AND key LIKE '%:crawl-4_'), 3,
          'operation ids are idempotency keys in scope upsert');
SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_up_stats', '[{"channel_id": "UC1", "day": "2026-01-03", "views": 1}]',
                                               '{channel_id, day}', '{"operation_id": "crawl-42"}') $$,
    $$ VALUES (0, 'inserted') $$, 'an operation id belongs to one table: another table may use the same');

-- ---- fence ---------------------------------------------------------------------------------------------------

SELECT conveyor.lock_acquire('tap_up:UC1', 'worker-a', 60) AS tok \gset
SELECT is((SELECT action FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "fenced"}]', '{channel_id}',
                                              jsonb_build_object('fence', jsonb_build_object('key', 'tap_up:UC1', 'token', :tok)))),
          'updated', 'a fenced upsert with the live token writes');
SELECT throws_ok(
    format($$ SELECT * FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "stale"}]', '{channel_id}',
                                            '{"fence": {"key": "tap_up:UC1", "token": %s}}') $$, :tok - 1),
    'CV003', format('lease "tap_up:UC1" is no longer held with token %s', :tok - 1), 'a superseded token is refused with CV003');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "stale"}]', '{channel_id}',
                                     '{"fence": {"key": "tap_up:nobody", "token": 1}}') $$,
    'CV003', NULL, 'so is a lease nobody holds');
SELECT is((SELECT title FROM tap_up_channels WHERE channel_id = 'UC1'), 'fenced', 'a refused batch writes nothing');

-- ---- audit -------------------------------------------------------------------------------------------------------

SELECT current_user AS me \gset
SELECT results_eq(
    $$ SELECT action FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "audited"},
                                                              {"channel_id": "UC2", "title": "Two"},
                                                              {"channel_id": "UC10", "title": "Ten"}]',
                                          '{channel_id}', '{"audit": true, "operation_id": "crawl-44"}') ORDER BY ord $$,
    $$ VALUES ('updated'), ('unchanged'), ('inserted') $$, 'an audited batch');
SELECT results_eq(
    $$ SELECT target, key, action, changed, operation_id, changed_by FROM conveyor.change_log
       WHERE target = 'public.tap_up_channels' ORDER BY change_id $$,
    format($$ VALUES ('public.tap_up_channels', '{"channel_id": "UC1"}'::jsonb, 'updated', '{"title": {"old": "fenced", "new": "audited"}}'::jsonb,
               'crawl-44', %1$L),
              ('public.tap_up_channels', '{"channel_id": "UC10"}', 'inserted', NULL, 'crawl-44', %1$L) $$, :'me'),
    'change_log holds one row per real change, with its operation_id and role; none for unchanged rows');
SELECT is((SELECT count(*)::int FROM conveyor.change_log WHERE target = 'public.tap_up_channels' AND at IS NOT NULL), 2,
          'and its time');
SELECT is((SELECT count(*)::int FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "not audited"}]', '{channel_id}')), 1,
          'without audit ...');
SELECT is((SELECT count(*)::int FROM conveyor.change_log WHERE target = 'public.tap_up_channels'), 2, '... nothing is logged');

-- ---- the catalog changes under a kept plan ----------------------------------------------------------------

ALTER TABLE tap_up_channels ADD COLUMN handle text;
SELECT is((SELECT changed FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "not audited", "handle": "@one"}]', '{channel_id}')),
          '{"handle": {"old": null, "new": "@one"}}'::jsonb, 'a column added after a call is known at the next');
ALTER TABLE tap_up_channels RENAME COLUMN handle TO custom_url;
SELECT is((SELECT changed FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "not audited", "custom_url": "@uno"}]', '{channel_id}')),
          '{"custom_url": {"old": "@one", "new": "@uno"}}'::jsonb, 'a renamed column too');
ALTER TABLE tap_up_channels DROP COLUMN custom_url;
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_channels', '[{"channel_id": "UC1", "title": "x", "custom_url": "@uno"}]', '{channel_id}') $$,
    '22023', 'rows[0]: table public.tap_up_channels has no column "custom_url"', 'a dropped column is gone');

-- ---- errors name the element ---------------------------------------------------------------------------

CREATE TABLE tap_up_videos (video_id text PRIMARY KEY, channel_id text NOT NULL REFERENCES tap_up_channels,
                            title text NOT NULL, views bigint CHECK (views >= 0), published_at timestamptz);
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_videos', '[{"video_id": "v1", "channel_id": "UC1", "title": "a"},
                                                        {"video_id": "v2", "channel_id": "UC404", "title": "b"}]', '{video_id}') $$,
    '23503', 'rows[1]: insert or update on table "tap_up_videos" violates foreign key constraint "tap_up_videos_channel_id_fkey"',
    'a foreign key error names the element and keeps its SQLSTATE');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_videos', '[{"video_id": "v1", "channel_id": "UC1", "title": "a"},
                                                        {"video_id": "v2", "channel_id": "UC1"}]', '{video_id}') $$,
    '23502', 'rows[1]: null value in column "title" of relation "tap_up_videos" violates not-null constraint',
    'a NOT NULL column without default missing from a new row names the element');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_videos', '[{"video_id": "v1", "channel_id": "UC1", "title": "a", "views": 5},
                                                        {"video_id": "v2", "channel_id": "UC1", "title": "b", "views": -1}]', '{video_id}') $$,
    '23514', NULL, 'a check constraint names the element');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_videos', '[{"video_id": "v1", "channel_id": "UC1", "title": "a", "views": 5},
                                                        {"video_id": "v2", "channel_id": "UC1", "title": "b", "views": "many"}]', '{video_id}') $$,
    '22023', 'rows[1].views: not a valid bigint', 'a value that does not convert names the element and the column');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_videos', '[{"video_id": "v1", "channel_id": "UC1", "title": "a", "published_at": "yesterday-ish"}]',
                                     '{video_id}') $$,
    '22023', 'rows[0].published_at: not a valid timestamp with time zone', 'a bad timestamp too');
SELECT is((SELECT count(*)::int FROM tap_up_videos), 0, 'a failed batch writes nothing, not even its good elements');
SELECT results_eq(
    $$ SELECT ord, action FROM conveyor.upsert('tap_up_videos', '[{"video_id": "v1", "channel_id": "UC1", "title": "a"}]', '{video_id}') $$,
    $$ VALUES (0, 'inserted') $$, 'the session is fine after an error');
SELECT throws_ok(
    $$ SELECT * FROM conveyor.upsert('tap_up_videos', '[{"video_id": "v1", "channel_id": "UC404"}]', '{video_id}') $$,
    '23503', NULL, 'an update that breaks a foreign key names the element too');

SELECT * FROM finish();
ROLLBACK;

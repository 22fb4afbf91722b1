-- The shape of a real pipeline: a crawl of YouTube channels and their videos (videos reference
-- channels by foreign key), upserted as the API returned it (test/fixtures/youtube.json, crawl_1),
-- then a re-crawl a day later (crawl_2) in which one channel's counters changed, one video was
-- retitled, one gained views and one is new. The second run must report exactly those changes and
-- write nothing else: every other row keeps its row version.
\set fixture `cat test/fixtures/youtube.json`
BEGIN;
SELECT plan(13);

CREATE TEMP TABLE tap_pipe_fixture AS SELECT :'fixture'::jsonb AS doc;

CREATE TABLE tap_pipe_channels (
    channel_id       text PRIMARY KEY,
    title            text NOT NULL,
    description      text,
    custom_url       text,
    country          text,
    published_at     timestamptz,
    subscriber_count bigint,
    video_count      integer,
    view_count       bigint,
    thumbnail        text,
    topics           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_refreshed_at timestamptz
);
CREATE TABLE tap_pipe_videos (
    video_id      text PRIMARY KEY,
    channel_id    text NOT NULL REFERENCES tap_pipe_channels,
    title         text NOT NULL,
    published_at  timestamptz NOT NULL,
    duration_s    integer,
    view_count    bigint,
    like_count    bigint,
    comment_count bigint,
    tags          text[],
    privacy       text,
    made_for_kids boolean,
    thumbnail     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz
);
CREATE INDEX ON tap_pipe_videos (channel_id, published_at);

-- ---- crawl 1: everything is new ----------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT inserted, updated, unchanged, skipped FROM conveyor.upsert_counts('tap_pipe_channels', (SELECT doc #> '{crawl_1,channels}' FROM tap_pipe_fixture),
                                            '{channel_id}', '{"touch_columns": ["last_refreshed_at"]}') $$,
    $$ VALUES (3::bigint, 0::bigint, 0::bigint, 0::bigint) $$, 'crawl 1: three channels inserted');
SELECT results_eq(
    $$ SELECT inserted, updated, unchanged, skipped FROM conveyor.upsert_counts('tap_pipe_videos', (SELECT doc #> '{crawl_1,videos}' FROM tap_pipe_fixture),
                                            '{video_id}', '{"touch_columns": ["updated_at"], "audit": true, "operation_id": "crawl-1"}') $$,
    $$ VALUES (12::bigint, 0::bigint, 0::bigint, 0::bigint) $$, 'crawl 1: twelve videos inserted');
SELECT is((SELECT count(*)::int FROM tap_pipe_videos v JOIN tap_pipe_channels c USING (channel_id)), 12,
          'every video belongs to its channel');

-- Row versions after crawl 1, and this transaction's update counter.
CREATE TEMP TABLE tap_pipe_versions AS
    SELECT 'channel' AS kind, channel_id AS id, xmin::text AS row_xmin, ctid AS row_ctid FROM tap_pipe_channels
    UNION ALL SELECT 'video', video_id, xmin::text, ctid FROM tap_pipe_videos;
SELECT pg_stat_get_xact_tuples_updated('tap_pipe_channels'::regclass) AS ch_upd,
       pg_stat_get_xact_tuples_updated('tap_pipe_videos'::regclass) AS vid_upd,
       pg_stat_get_xact_tuples_inserted('tap_pipe_videos'::regclass) AS vid_ins \gset
-- Rows written from here on carry another transaction id: a subtransaction's.
SAVEPOINT crawl_2;

-- ---- crawl 2: the same data with a few changes --------------------------------------------------------

SELECT results_eq(
    $$ SELECT key, action, changed FROM conveyor.upsert('tap_pipe_channels', (SELECT doc #> '{crawl_2,channels}' FROM tap_pipe_fixture),
                                                        '{channel_id}', '{"touch_columns": ["last_refreshed_at"]}')
       WHERE action <> 'unchanged' $$,
    $$ VALUES ('{"channel_id": "UCb2Prod"}'::jsonb, 'updated',
               '{"subscriber_count": {"old": 240457, "new": 241957}, "video_count": {"old": 4, "new": 5}}'::jsonb) $$,
    'crawl 2, channels: exactly the one channel whose counters moved is updated, with what changed');
SELECT is((SELECT count(*)::int FROM conveyor.upsert('tap_pipe_channels', (SELECT doc #> '{crawl_2,channels}' FROM tap_pipe_fixture),
                                                     '{channel_id}') WHERE action = 'unchanged'), 3,
          'run again, all three are unchanged');
SELECT results_eq(
    $$ SELECT key, action, changed FROM conveyor.upsert('tap_pipe_videos', (SELECT doc #> '{crawl_2,videos}' FROM tap_pipe_fixture),
                                                        '{video_id}', '{"touch_columns": ["updated_at"], "audit": true, "operation_id": "crawl-2"}')
       WHERE action <> 'unchanged' ORDER BY key->>'video_id' $$,
    $$ VALUES ('{"video_id": "vid05xb2P"}'::jsonb, 'updated',
               '{"title": {"old": "Producer Breakdowns #1", "new": "Producer Breakdowns #1 (remastered)"}}'::jsonb),
              ('{"video_id": "vid07xb2P"}', 'updated', '{"view_count": {"old": 49007, "new": 53328}}'),
              ('{"video_id": "vid13xb2P"}', 'inserted', NULL) $$,
    'crawl 2, videos: the retitled one, the one with more views and the new one, nothing else');
SELECT is((SELECT count(*)::int FROM conveyor.upsert('tap_pipe_videos', (SELECT doc #> '{crawl_2,videos}' FROM tap_pipe_fixture),
                                                     '{video_id}', '{"operation_id": "crawl-2b"}') WHERE action = 'unchanged'), 13,
          'all thirteen are unchanged when the same crawl comes again');

SELECT is(pg_stat_get_xact_tuples_updated('tap_pipe_channels'::regclass) - :ch_upd, 1::bigint,
          'one channel row was updated in crawl 2');
SELECT is(pg_stat_get_xact_tuples_updated('tap_pipe_videos'::regclass) - :vid_upd, 2::bigint,
          'two video rows were updated ...');
SELECT is(pg_stat_get_xact_tuples_inserted('tap_pipe_videos'::regclass) - :vid_ins, 1::bigint, '... and one inserted');
SELECT results_eq(
    $$ SELECT v.kind, v.id FROM tap_pipe_versions v
       LEFT JOIN tap_pipe_channels c ON v.kind = 'channel' AND c.channel_id = v.id
       LEFT JOIN tap_pipe_videos d ON v.kind = 'video' AND d.video_id = v.id
       WHERE coalesce(c.xmin, d.xmin)::text <> v.row_xmin OR coalesce(c.ctid, d.ctid) <> v.row_ctid
       ORDER BY 1, 2 $$,
    $$ VALUES ('channel', 'UCb2Prod'), ('video', 'vid05xb2P'), ('video', 'vid07xb2P') $$,
    'only the changed rows have a new row version; the other twelve keep theirs');
SELECT results_eq(
    $$ SELECT video_id FROM tap_pipe_videos WHERE updated_at IS DISTINCT FROM created_at ORDER BY 1 $$,
    $$ SELECT video_id FROM tap_pipe_videos WHERE false $$,
    'touched rows carry the transaction''s now() (as created_at does): nothing stale');
SELECT results_eq(
    $$ SELECT operation_id, action, count(*)::int FROM conveyor.change_log WHERE target = 'public.tap_pipe_videos'
       GROUP BY 1, 2 ORDER BY 1, 2 $$,
    $$ VALUES ('crawl-1', 'inserted', 12), ('crawl-2', 'inserted', 1), ('crawl-2', 'updated', 2) $$,
    'the audit trail holds the twelve first inserts and the three changes of crawl 2');

SELECT * FROM finish();
ROLLBACK;

-- Data RPCs: upsert_channel, upsert_videos, capture_channel_stats, capture_video_stats.
BEGIN;
SELECT plan(36);

CREATE TEMP TABLE ch AS SELECT '{"id": "UCaaaaaaaaaaaaaaaaaaaaaa", "etag": "e1",
    "snippet": {"title": "Lo-Fi Beats", "publishedAt": "2015-01-02T00:00:00Z", "country": "US"},
    "contentDetails": {"relatedPlaylists": {"uploads": "UUaaaaaaaaaaaaaaaaaaaaaa"}},
    "statistics": {"viewCount": "100"}}'::jsonb AS d;
CREATE FUNCTION pg_temp.video(id text, privacy text, title text DEFAULT 'Rainy night') RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('id', id, 'snippet', jsonb_build_object('channelId', 'UCaaaaaaaaaaaaaaaaaaaaaa', 'title', title,
        'tags', '["lofi"]'::jsonb, 'publishedAt', '2024-01-01T00:00:00Z'), 'contentDetails', '{"duration": "PT3M33S"}'::jsonb,
        'status', jsonb_build_object('privacyStatus', privacy)) $$;

-- upsert_channel
SELECT results_eq($$SELECT * FROM youtube.upsert_channel((SELECT d FROM ch))$$,
                  $$VALUES ('UCaaaaaaaaaaaaaaaaaaaaaa'::text, true, false)$$, 'upsert_channel: created');
UPDATE youtube.channels SET created_at = '2020-01-01', last_refreshed_at = '2020-01-01';
SELECT results_eq($$SELECT * FROM youtube.upsert_channel((SELECT d || '{"etag": "e2", "statistics": {"viewCount": "200"}}' FROM ch))$$,
                  $$VALUES ('UCaaaaaaaaaaaaaaaaaaaaaa'::text, false, false)$$, 'upsert_channel: new statistics and etag alone are no change');
SELECT is((SELECT last_refreshed_at FROM youtube.channels), now(), 'upsert_channel: last_refreshed_at moves though nothing changed');
SELECT is((SELECT count(*)::int FROM conveyor.change_log WHERE target = 'youtube.channels' AND action = 'updated'), 0,
          'upsert_channel: ... and it is no change (no change_log row; conveyor.upsert''s touch_unchanged)');
SELECT results_eq($$SELECT * FROM youtube.upsert_channel(jsonb_set((SELECT d FROM ch), '{snippet,title}', '"Lo-Fi Beats 24/7"'))$$,
                  $$VALUES ('UCaaaaaaaaaaaaaaaaaaaaaa'::text, false, true)$$, 'upsert_channel: a new title is an update');
SELECT is((SELECT created_at FROM youtube.channels), '2020-01-01'::timestamptz, 'upsert_channel: created_at kept');
SELECT is((SELECT changed FROM conveyor.change_log WHERE target = 'youtube.channels' AND action = 'updated'),
          '{"title": {"new": "Lo-Fi Beats 24/7", "old": "Lo-Fi Beats"}, "raw": {"new": {"id": "UCaaaaaaaaaaaaaaaaaaaaaa", "snippet": {"title": "Lo-Fi Beats 24/7", "country": "US", "publishedAt": "2015-01-02T00:00:00Z"}, "contentDetails": {"relatedPlaylists": {"uploads": "UUaaaaaaaaaaaaaaaaaaaaaa"}}}, "old": {"id": "UCaaaaaaaaaaaaaaaaaaaaaa", "snippet": {"title": "Lo-Fi Beats", "country": "US", "publishedAt": "2015-01-02T00:00:00Z"}, "contentDetails": {"relatedPlaylists": {"uploads": "UUaaaaaaaaaaaaaaaaaaaaaa"}}}}}'::jsonb,
          'upsert_channel: only the changed fields were written (change_log)');
SELECT throws_ok($$SELECT * FROM youtube.upsert_channel('{"id": "UC1", "snippet": {"title": "x"}}')$$, '22023', NULL, 'upsert_channel: a bad id');
SELECT throws_ok($$SELECT * FROM youtube.upsert_channel('{"id": "UCaaaaaaaaaaaaaaaaaaaaaa"}')$$, '22023', NULL, 'upsert_channel: no snippet.title');
SELECT throws_ok($$SELECT * FROM youtube.upsert_channel('[]')$$, '22023', NULL, 'upsert_channel: not an object');
SELECT throws_ok($$SELECT * FROM youtube.upsert_channel(NULL)$$, '22004', NULL, 'upsert_channel: NULL');

-- upsert_videos
SELECT results_eq($$SELECT video_id, was_created, was_updated, change_summary FROM youtube.upsert_videos(ARRAY[pg_temp.video('vid_0000001', 'public'), pg_temp.video('vid_0000002', 'public')])$$,
                  $$VALUES ('vid_0000001'::text, true, false, '{"action": "inserted", "privacy_status": "public"}'::jsonb),
                           ('vid_0000002', true, false, '{"action": "inserted", "privacy_status": "public"}')$$, 'upsert_videos: two created');
SELECT results_eq($$SELECT video_id, was_created, was_updated, change_summary FROM youtube.upsert_videos(ARRAY[pg_temp.video('vid_0000001', 'private'), pg_temp.video('vid_0000002', 'public', 'Sunny day')])$$,
                  $$VALUES ('vid_0000001'::text, false, true, '{"action": "updated", "fields": ["privacy_status"], "changes": {"privacy_status": {"new": "private", "old": "public"}}, "privacy_change": "public -> private"}'::jsonb),
                           ('vid_0000002', false, true, '{"action": "updated", "fields": ["title"], "changes": {"title": {"new": "Sunny day", "old": "Rainy night"}}}')$$,
                  'upsert_videos: public -> private reported, a title change summarized');
SELECT is((SELECT privacy_changed_at FROM youtube.videos WHERE video_id = 'vid_0000001'), now(), 'upsert_videos: the privacy change is stamped');
SELECT is((SELECT change_summary FROM youtube.upsert_videos(ARRAY[pg_temp.video('vid_0000001', 'unlisted')])) ->> 'privacy_change',
          'private -> unlisted', 'upsert_videos: any privacy change is reported');
SELECT is((SELECT change_summary FROM youtube.upsert_videos(ARRAY[pg_temp.video('vid_0000001', 'unlisted')])), '{"action": "unchanged"}',
          'upsert_videos: unchanged');
SELECT throws_ok($$SELECT * FROM youtube.upsert_videos(ARRAY[pg_temp.video('vid_0000003', 'public'),
                      jsonb_set(pg_temp.video('vid_0000004', 'public'), '{snippet,channelId}', '"UCzzzzzzzzzzzzzzzzzzzzzz"')])$$, '23503',
                 'video_data_array[1]: video vid_0000004 belongs to channel UCzzzzzzzzzzzzzzzzzzzzzz, which is not known',
                 'upsert_videos: a video of an unknown channel is rejected, by index');
SELECT is((SELECT count(*) FROM youtube.videos WHERE video_id = 'vid_0000003'), 0::bigint, 'upsert_videos: ... and nothing was written');
SELECT throws_ok($$SELECT * FROM youtube.upsert_videos(ARRAY[pg_temp.video('vid_0000003', 'secret')])$$, '22023', NULL, 'upsert_videos: unknown privacy status');
SELECT throws_ok($$SELECT * FROM youtube.upsert_videos(ARRAY[]::jsonb[])$$, '22023', NULL, 'upsert_videos: empty array');

-- capture_channel_stats: one row per Pacific day
SELECT is((SELECT is_new_day FROM youtube.capture_channel_stats('UCaaaaaaaaaaaaaaaaaaaaaa',
          '{"viewCount": "1000", "subscriberCount": "10", "videoCount": "2", "capturedAt": "2024-05-01T07:30:00Z"}')), true,
          'capture_channel_stats: first capture of the Pacific day May 1 (00:30 PDT)');
SELECT is((SELECT is_new_day FROM youtube.capture_channel_stats('UCaaaaaaaaaaaaaaaaaaaaaa',
          '{"viewCount": "1100", "subscriberCount": "11", "videoCount": "2", "capturedAt": "2024-05-02T06:30:00Z"}')), false,
          'capture_channel_stats: 06:30 UTC on May 2 is still May 1 in Pacific time');
SELECT is((SELECT is_new_day FROM youtube.capture_channel_stats('UCaaaaaaaaaaaaaaaaaaaaaa',
          '{"statistics": {"viewCount": "1500", "subscriberCount": "15", "videoCount": "3"}, "capturedAt": "2024-05-02T08:00:00Z"}')), true,
          'capture_channel_stats: a new Pacific day (a whole channel resource is accepted too)');
SELECT is((SELECT count(*) FROM conveyor.snapshot_series('youtube.channel_stats', 'UCaaaaaaaaaaaaaaaaaaaaaa')), 2::bigint,
          'capture_channel_stats: two days, two rows');
SELECT results_eq($$SELECT view_count, subscriber_count, views_gained, subscribers_gained FROM youtube.channels$$,
                  $$VALUES (1500::bigint, 15::bigint, 400::bigint, 4::bigint)$$, 'capture_channel_stats: the summary and the daily deltas');
SELECT throws_ok($$SELECT * FROM youtube.capture_channel_stats('UCbbbbbbbbbbbbbbbbbbbbbb', '{"viewCount": "1"}')$$, '23503', NULL,
                 'capture_channel_stats: an unknown channel');
SELECT throws_ok($$SELECT * FROM youtube.capture_channel_stats('UCaaaaaaaaaaaaaaaaaaaaaa', '{"viewCount": "-1"}')$$, '22023', NULL,
                 'capture_channel_stats: a negative count');
SELECT throws_ok($$SELECT * FROM youtube.capture_channel_stats('UCaaaaaaaaaaaaaaaaaaaaaa', jsonb_build_object('viewCount', 1, 'capturedAt', now() + interval '1 day'))$$,
                 '22023', NULL, 'capture_channel_stats: a capture in the future');

-- capture_video_stats: hourly and daily change, unchanged captures not stored, viral
SELECT results_eq($$SELECT video_id, hourly_change, daily_change FROM youtube.capture_video_stats(ARRAY[
        '{"id": "vid_0000002", "statistics": {"viewCount": "1000"}, "capturedAt": "2024-05-01T10:00:00Z"}'::jsonb,
        '{"id": "vid_0000002", "statistics": {"viewCount": "1000"}, "capturedAt": "2024-05-01T10:20:00Z"}',
        '{"id": "vid_0000002", "statistics": {"viewCount": "1600"}, "capturedAt": "2024-05-01T11:05:00Z"}',
        '{"id": "vid_0000002", "statistics": {"viewCount": "90000"}, "capturedAt": "2024-05-02T11:05:00Z"}'])$$,
                  $$VALUES ('vid_0000002'::text, NULL::integer, NULL::integer), ('vid_0000002', NULL, NULL),
                           ('vid_0000002', 600, NULL), ('vid_0000002', 88400, 88400)$$,
                  'capture_video_stats: hourly_change since the previous captured hour, daily_change over 24 hours');
SELECT is((SELECT sum(captures) FROM conveyor.snapshot_series('youtube.video_stats', 'vid_0000002')), 3::bigint,
          'capture_video_stats: a capture equal to its hour''s stored one is not stored again');
SELECT results_eq($$SELECT view_count, is_viral, viral_since FROM youtube.videos WHERE video_id = 'vid_0000002'$$,
                  $$VALUES (90000::bigint, true, '2024-05-02 11:05:00+00'::timestamptz)$$,
                  'capture_video_stats: 88,400 views in a day is viral (at least 50,000)');
SELECT snapshot_id AS last_stats FROM conveyor.snapshot_series('youtube.video_stats', 'vid_0000002') ORDER BY period_start DESC LIMIT 1 \gset
SELECT results_eq($$SELECT stats_id::text, hourly_change, daily_change FROM youtube.capture_video_stats(ARRAY[
        '{"id": "vid_0000002", "statistics": {"viewCount": "90000"}, "capturedAt": "2024-05-02T12:05:00Z"}'::jsonb])$$,
                  format($$VALUES (%L, 0, 88400)$$, :'last_stats'),
                  'capture_video_stats: an hour later with equal metrics: the stored snapshot, hourly_change 0, daily_change over 24 hours');
SELECT is((SELECT count(*)::int FROM conveyor.snapshot_series('youtube.video_stats', 'vid_0000002')), 3,
          'capture_video_stats: ... and no new snapshot row (unchanged metrics are not stored again)');
SELECT results_eq($$SELECT hourly_change, stats_captured_at FROM youtube.videos WHERE video_id = 'vid_0000002'$$,
                  $$VALUES (0::bigint, '2024-05-02 12:05:00+00'::timestamptz)$$,
                  'capture_video_stats: the video''s summary follows the capture');
SELECT results_eq($$SELECT hourly_change FROM youtube.capture_video_stats(ARRAY[
        '{"id": "vid_0000002", "statistics": {"viewCount": "90700"}, "capturedAt": "2024-05-02T14:05:00Z"}'::jsonb])$$,
                  $$VALUES (700)$$, 'capture_video_stats: the next change is against the latest stored capture');
SELECT throws_ok($$SELECT * FROM youtube.capture_video_stats(ARRAY['{"id": "vid_0000009", "statistics": {"viewCount": "1"}}'::jsonb])$$,
                 '23503', NULL, 'capture_video_stats: an unknown video');
SELECT * FROM finish();
ROLLBACK;

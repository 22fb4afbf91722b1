-- Queue RPCs: enqueue_job, dequeue_jobs, ack_job, retry_job, dead_letter_job.
BEGIN;
SELECT plan(35);

CREATE TEMP TABLE ids AS SELECT 'UC' || repeat('a', 22) AS a, 'UC' || repeat('b', 22) AS b, 'UC' || repeat('c', 22) AS c;

-- enqueue_job: new, duplicate, defaults
CREATE TEMP TABLE j1 AS SELECT * FROM youtube.enqueue_job('REFRESH_CHANNEL_STATS', (SELECT a FROM ids), dedup_key => 'stats:a');
SELECT is((SELECT was_duplicate FROM j1), false, 'enqueue_job: a new job');
SELECT is((SELECT job_id FROM youtube.enqueue_job('REFRESH_CHANNEL_STATS', (SELECT a FROM ids), dedup_key => 'stats:a')),
          (SELECT job_id FROM j1), 'enqueue_job: the same dedup_key while pending returns the same job');
SELECT is((SELECT was_duplicate FROM youtube.enqueue_job('REFRESH_CHANNEL_STATS', (SELECT a FROM ids), dedup_key => 'stats:a')),
          true, 'enqueue_job: ... with was_duplicate');
SELECT is((SELECT conveyor.get_job(job_id) ->> 'group_key' FROM j1), (SELECT a FROM ids), 'enqueue_job: the channel is the group key');
SELECT is((SELECT (conveyor.get_job(job_id) ->> 'priority')::int FROM j1), 5, 'enqueue_job: priority defaults to 5');
SELECT is((SELECT (conveyor.get_job(job_id) ->> 'priority')::int FROM youtube.enqueue_job('SYNC_CHANNEL_VIDEOS', (SELECT c FROM ids), NULL, NULL, NULL)),
          5, 'enqueue_job: NULL priority and scheduled_at take the defaults');
SELECT is((SELECT conveyor.get_job(job_id) -> 'payload' FROM youtube.enqueue_job('DISCOVER_CHANNELS')), '{}'::jsonb,
          'enqueue_job: a system job without a channel');

-- enqueue_job: invalid input
SELECT throws_ok($$SELECT * FROM youtube.enqueue_job(NULL, 'UCaaaaaaaaaaaaaaaaaaaaaa')$$, '22004', NULL, 'enqueue_job: NULL job_type');
SELECT throws_ok($$SELECT * FROM youtube.enqueue_job('REFRESH_EVERYTHING', 'UCaaaaaaaaaaaaaaaaaaaaaa')$$, '22023',
                 'job_type: unknown job type ''REFRESH_EVERYTHING''', 'enqueue_job: a job type outside the enum');
SELECT throws_ok($$SELECT * FROM youtube.enqueue_job('BACKFILL_CHANNEL')$$, '22004', NULL, 'enqueue_job: a channel job without channel');
SELECT throws_ok($$SELECT * FROM youtube.enqueue_job('BACKFILL_CHANNEL', 'UC123')$$, '22023', NULL, 'enqueue_job: a malformed channel id');
SELECT throws_ok($$SELECT * FROM youtube.enqueue_job('REFRESH_VIDEO_STATS', 'UCaaaaaaaaaaaaaaaaaaaaaa')$$, '22023', NULL,
                 'enqueue_job: REFRESH_VIDEO_STATS needs video_ids');
SELECT throws_ok($$SELECT * FROM youtube.enqueue_job('REFRESH_VIDEO_STATS', 'UCaaaaaaaaaaaaaaaaaaaaaa', ARRAY['dQw4w9WgXcQ', 'short'])$$, '22023',
                 'video_ids[2]: ''short'' is not a YouTube video id', 'enqueue_job: a malformed video id, named by position');
SELECT throws_ok($$SELECT * FROM youtube.enqueue_job('BACKFILL_CHANNEL', 'UCaaaaaaaaaaaaaaaaaaaaaa', ARRAY['dQw4w9WgXcQ'])$$, '22023', NULL,
                 'enqueue_job: video_ids only for REFRESH_VIDEO_STATS');
SELECT throws_ok($$SELECT * FROM youtube.enqueue_job('BACKFILL_CHANNEL', 'UCaaaaaaaaaaaaaaaaaaaaaa', priority => 11)$$, '22023', NULL, 'enqueue_job: priority 11');
SELECT throws_ok($$SELECT * FROM youtube.enqueue_job('BACKFILL_CHANNEL', 'UCaaaaaaaaaaaaaaaaaaaaaa', dedup_key => '')$$, '22023', NULL, 'enqueue_job: empty dedup_key');
SELECT throws_ok($$SELECT * FROM youtube.enqueue_job('BACKFILL_CHANNEL', 'UCaaaaaaaaaaaaaaaaaaaaaa', scheduled_at => 'infinity')$$, '22023', NULL, 'enqueue_job: infinite scheduled_at');

-- dequeue_jobs: priority order and one job per channel at a time
CREATE TEMP TABLE j2 AS SELECT * FROM youtube.enqueue_job('BACKFILL_CHANNEL', (SELECT a FROM ids), priority => 9);
CREATE TEMP TABLE j3 AS SELECT * FROM youtube.enqueue_job('REFRESH_VIDEO_STATS', (SELECT b FROM ids), ARRAY['dQw4w9WgXcQ'], priority => 8);
CREATE TEMP TABLE got AS SELECT * FROM youtube.dequeue_jobs('w1', 10, interval '10 minutes');
SELECT is((SELECT count(*) FROM got WHERE channel_id = (SELECT a FROM ids)), 1::bigint,
          'dequeue_jobs: one job of a channel at a time though two are due');
SELECT is((SELECT job_id FROM got WHERE channel_id = (SELECT a FROM ids)), (SELECT job_id FROM j2),
          'dequeue_jobs: the channel''s higher priority job first');
SELECT is((SELECT video_ids FROM got WHERE channel_id = (SELECT b FROM ids)), ARRAY['dQw4w9WgXcQ'], 'dequeue_jobs: video_ids of the job');
SELECT is((SELECT attempt_count FROM got WHERE job_id = (SELECT job_id FROM j2)), 1, 'dequeue_jobs: attempt_count counts this attempt');
SELECT ok((SELECT (conveyor.get_job(job_id) ->> 'lease_until')::timestamptz - now() BETWEEN interval '599 s' AND interval '601 s' FROM j2),
          'dequeue_jobs: channel_lock_timeout is the lease');
SELECT is((SELECT count(*) FROM youtube.dequeue_jobs('w2', 10) WHERE channel_id = (SELECT a FROM ids)), 0::bigint,
          'dequeue_jobs: another worker gets nothing of the held channel');
SELECT throws_ok($$SELECT * FROM youtube.dequeue_jobs('w1', 0)$$, '22023', NULL, 'dequeue_jobs: max_count 0');
SELECT throws_ok($$SELECT * FROM youtube.dequeue_jobs('w1', 1, interval '8 days')$$, '22023', NULL, 'dequeue_jobs: a lease over 7 days');
SELECT throws_ok($$SELECT * FROM youtube.dequeue_jobs(NULL)$$, '22004', NULL, 'dequeue_jobs: NULL worker_id');

-- ack_job: success completes and frees the channel; failure is retried later
SELECT is(youtube.ack_job((SELECT job_id FROM j2), true, NULL, '{"videos": 12}'), true, 'ack_job: success');
SELECT is((SELECT conveyor.get_job(job_id) ->> 'status' FROM j2), 'completed', 'ack_job: the job is completed');
SELECT is((SELECT count(*) FROM youtube.dequeue_jobs('w2', 10) WHERE channel_id = (SELECT a FROM ids)), 1::bigint,
          'ack_job: the channel''s next job can run now');
SELECT is(youtube.ack_job((SELECT job_id FROM j3), false, 'HTTP 503'), true, 'ack_job: failure');
SELECT is((SELECT conveyor.get_job(job_id) ->> 'state' FROM j3), 'scheduled', 'ack_job: a failed attempt waits out its backoff');
SELECT throws_ok($$SELECT youtube.ack_job(conveyor.uuid_v7(), true)$$, '42704', NULL, 'ack_job: an unknown job');

-- dead_letter_job, then retry_job
SELECT is(youtube.dead_letter_job((SELECT job_id FROM j3), 'channel_not_found: test'), true, 'dead_letter_job');
SELECT is((SELECT reason FROM conveyor.dead_jobs('youtube') WHERE job_id = (SELECT job_id FROM j3)), 'channel_not_found: test',
          'dead_letter_job: the reason is kept');
SELECT is(youtube.retry_job((SELECT job_id FROM j3), 0), true, 'retry_job: a dead job runs again');
SELECT * FROM finish();
ROLLBACK;

-- Leases with fencing tokens: acquire, refresh, takeover, heartbeat, release, force release,
-- cleanup, lock_check, locks_view, the event trail, and the fenced-write pattern.
-- A lease "stalls past its ttl" here by moving its last heartbeat back in time.
BEGIN;
SELECT plan(75);

SELECT has_function('conveyor', 'lock_acquire', ARRAY['text', 'text', 'integer', 'text', 'jsonb'], 'lock_acquire exists');
SELECT has_function('conveyor', 'lock_heartbeat', ARRAY['text', 'text', 'bigint'], 'lock_heartbeat exists');
SELECT has_function('conveyor', 'lock_release', ARRAY['text', 'text', 'bigint'], 'lock_release exists');
SELECT has_function('conveyor', 'lock_force_release', ARRAY['text'], 'lock_force_release exists');
SELECT has_function('conveyor', 'lock_check', ARRAY['text', 'bigint'], 'lock_check exists');
SELECT has_function('conveyor', 'locks_cleanup', ARRAY['integer'], 'locks_cleanup exists');
SELECT has_view('conveyor', 'locks_view', 'locks_view exists');

-- Moves a lease's last heartbeat back by `secs` seconds: it has "stalled" that long.
CREATE FUNCTION pg_temp.stall(k text, secs int) RETURNS void LANGUAGE sql AS
    $$ UPDATE conveyor.locks SET heartbeat_at = heartbeat_at - make_interval(secs => secs) WHERE key = k $$;
CREATE FUNCTION pg_temp.lease(k text) RETURNS conveyor.locks LANGUAGE sql AS
    $$ SELECT * FROM conveyor.locks WHERE key = k $$;

-- ---- acquire and refresh -----------------------------------------------------------------------------

SELECT conveyor.lock_acquire('tap:a', 'w1', 60, 'corr-1', '{"page": 1}') AS t1 \gset
SELECT ok(:t1 > 0, 'a new lease gets a positive token');
SELECT is((pg_temp.lease('tap:a')).owner, 'w1', 'the lease belongs to its owner');
SELECT is((pg_temp.lease('tap:a')).ttl_seconds, 60, 'with its ttl');
SELECT is((pg_temp.lease('tap:a')).correlation_id, 'corr-1', 'its correlation id');
SELECT is((pg_temp.lease('tap:a')).metadata, '{"page": 1}'::jsonb, 'and its metadata');
SELECT (pg_temp.lease('tap:a')).heartbeat_at AS hb1, (pg_temp.lease('tap:a')).acquired_at AS acq1 \gset

SELECT is(conveyor.lock_acquire('tap:a', 'w1', 120), :t1::bigint, 'the same owner acquiring again keeps its token');
SELECT ok((pg_temp.lease('tap:a')).heartbeat_at > :'hb1'::timestamptz, 'and refreshes the heartbeat');
SELECT is((pg_temp.lease('tap:a')).acquired_at, :'acq1'::timestamptz, 'acquired_at stays');
SELECT is((pg_temp.lease('tap:a')).ttl_seconds, 120, 'the ttl is the new one');
SELECT is((pg_temp.lease('tap:a')).correlation_id, 'corr-1', 'a NULL correlation id keeps the old one');

SELECT is(conveyor.lock_acquire('tap:a', 'w2', 60), NULL::bigint, 'another owner gets NULL while the lease is live');
SELECT is((pg_temp.lease('tap:a')).owner, 'w1', 'and the lease is unchanged');
SELECT is((pg_temp.lease('tap:a')).token, :t1::bigint, 'token unchanged');

-- A stale lease still belongs to its owner until someone takes it over.
SELECT pg_temp.stall('tap:a', 500) \gset
SELECT is(conveyor.lock_acquire('tap:a', 'w1', 120), :t1::bigint, 'its owner may still refresh a stale lease, keeping the token');

-- ---- takeover ----------------------------------------------------------------------------------------

SELECT pg_temp.stall('tap:a', 500) \gset
SELECT conveyor.lock_acquire('tap:a', 'w2', 60, 'corr-2') AS t2 \gset
SELECT ok(:t2 > :t1, format('a stale lease is taken over with a greater token (%s > %s)', :t2, :t1));
SELECT is((pg_temp.lease('tap:a')).owner, 'w2', 'the new holder owns it');
SELECT is((pg_temp.lease('tap:a')).correlation_id, 'corr-2', 'with its own correlation id');
SELECT is((pg_temp.lease('tap:a')).metadata, NULL, 'and its own (no) metadata');
SELECT is(ROW((pg_temp.lease('tap:a')).taken_from_owner, (pg_temp.lease('tap:a')).taken_from_token)::text,
          ROW('w1'::text, :t1::bigint)::text, 'the lease remembers whom it was taken from');
SELECT is((SELECT array_agg(ARRAY[event, old_owner, old_token::text, new_owner, new_token::text]) FROM conveyor.lock_events WHERE key = 'tap:a'),
          ARRAY[ARRAY['takeover', 'w1', :'t1', 'w2', :'t2']], 'the takeover is recorded with the old and new holder');

-- ---- heartbeat and release by a non-holder: false, nothing changes ------------------------------------

SELECT (pg_temp.lease('tap:a')).heartbeat_at AS hb2 \gset
SELECT is(conveyor.lock_heartbeat('tap:a', 'w1'), false, 'the old holder''s heartbeat is refused');
SELECT is(conveyor.lock_heartbeat('tap:a', 'w1', :t1), false, 'also with its old token');
SELECT is(conveyor.lock_heartbeat('tap:a', 'w2', :t1), false, 'the holder with a wrong token is refused');
SELECT is((pg_temp.lease('tap:a')).heartbeat_at, :'hb2'::timestamptz, 'the refused heartbeats changed nothing');
SELECT is(conveyor.lock_release('tap:a', 'w1'), false, 'the old holder cannot release');
SELECT is(conveyor.lock_release('tap:a', 'w2', :t1), false, 'nor the holder with a wrong token');
SELECT is((pg_temp.lease('tap:a')).token, :t2::bigint, 'the lease is still there, unchanged');
SELECT is(conveyor.lock_heartbeat('tap:unknown', 'w2'), false, 'a heartbeat of an unknown key is false');

SELECT is(conveyor.lock_heartbeat('tap:a', 'w2', :t2), true, 'the holder''s heartbeat succeeds');
SELECT ok((pg_temp.lease('tap:a')).heartbeat_at > :'hb2'::timestamptz, 'and moves the heartbeat');
SELECT is(conveyor.lock_heartbeat('tap:a', 'w2'), true, 'without a token too');

SELECT is(conveyor.lock_release('tap:a', 'w2', :t2), true, 'the holder releases');
SELECT is(pg_temp.lease('tap:a') IS NULL, true, 'the lease is gone');
SELECT is(conveyor.lock_release('tap:a', 'w2', :t2), false, 'releasing again is false');

-- Tokens keep growing after the row is gone: they never go back or repeat.
SELECT conveyor.lock_acquire('tap:a', 'w1', 60) AS t3 \gset
SELECT ok(:t3 > :t2, format('after a release the key''s next token is still greater (%s > %s)', :t3, :t2));
SELECT is((SELECT seqcycle FROM pg_sequence WHERE seqrelid = 'conveyor.lock_token_seq'::regclass), false,
          'the token sequence never wraps');
SELECT is((SELECT seqtypid::regtype FROM pg_sequence WHERE seqrelid = 'conveyor.lock_token_seq'::regclass), 'bigint'::regtype,
          'tokens are bigint');
SELECT ok((SELECT 'conveyor.lock_token_seq'::regclass::oid = ANY (extconfig) FROM pg_extension WHERE extname = 'conveyor'),
          'pg_dump keeps the token high-water mark (the sequence is configuration)');

-- ---- lock_check ----------------------------------------------------------------------------------------

SELECT is(conveyor.lock_check('tap:a', :t3), true, 'lock_check: the live holder''s token is live');
SELECT is(conveyor.lock_check('tap:a', :t2), false, 'an earlier token of the key is not');
SELECT is(conveyor.lock_check('tap:nope', :t3), false, 'a token under another key is not');
SELECT pg_temp.stall('tap:a', 61) \gset
SELECT is(conveyor.lock_check('tap:a', :t3), false, 'a stale lease''s token is not live');
SELECT is(conveyor.lock_heartbeat('tap:a', 'w1', :t3), true, 'until its holder heartbeats it back to life (nobody took it)');
SELECT is(conveyor.lock_check('tap:a', :t3), true, 'then it is live again');

-- ---- locks_view ----------------------------------------------------------------------------------------

SELECT columns_are('conveyor', 'locks_view', ARRAY['key', 'owner', 'token', 'correlation_id', 'metadata', 'ttl_seconds',
    'acquired_at', 'last_heartbeat', 'age_seconds', 'heartbeat_age_seconds', 'expires_at', 'is_stale',
    'taken_from_owner', 'taken_from_token'], 'locks_view has its columns');
SELECT pg_temp.stall('tap:a', 30) \gset
SELECT is((SELECT ROW(owner, token, is_stale)::text FROM conveyor.locks_view WHERE key = 'tap:a'), ROW('w1'::text, :t3::bigint, false)::text,
          'locks_view: holder, token, not stale 30 s into a 60 s lease');
SELECT ok((SELECT heartbeat_age_seconds BETWEEN 30 AND 40 FROM conveyor.locks_view WHERE key = 'tap:a'),
          'heartbeat_age_seconds counts from the last heartbeat');
UPDATE conveyor.locks SET acquired_at = acquired_at - interval '100 seconds' WHERE key = 'tap:a';
SELECT ok((SELECT age_seconds BETWEEN 100 AND 110 FROM conveyor.locks_view WHERE key = 'tap:a'),
          'age_seconds counts from acquisition');
SELECT is((SELECT expires_at = last_heartbeat + interval '60 seconds' FROM conveyor.locks_view WHERE key = 'tap:a'), true,
          'expires_at is the last heartbeat plus the ttl');
SELECT pg_temp.stall('tap:a', 31) \gset
SELECT is((SELECT is_stale FROM conveyor.locks_view WHERE key = 'tap:a'), true, 'past its ttl the lease is stale');

-- ---- force release -------------------------------------------------------------------------------------

SELECT conveyor.lock_acquire('tap:f', 'w9', 60) AS tf \gset
SELECT is(conveyor.lock_force_release('tap:f'), true, 'force release of a live lease');
SELECT is(pg_temp.lease('tap:f') IS NULL, true, 'removes it');
SELECT is((SELECT ROW(event, old_owner, old_token, new_owner, details->>'by')::text FROM conveyor.lock_events WHERE key = 'tap:f'),
          ROW('force_release'::text, 'w9'::text, :tf::bigint, NULL::text, session_user::text)::text,
          'and is recorded with the old holder and who forced it');
SELECT is(conveyor.lock_force_release('tap:f'), false, 'force release of no lease is false');
SELECT is(conveyor.lock_release('tap:f', 'w9', :tf), false, 'the former holder''s release is false');

-- ---- cleanup -------------------------------------------------------------------------------------------

DELETE FROM conveyor.locks WHERE key LIKE 'tap:%';
SELECT conveyor.lock_acquire('tap:c-live', 'w1', 600) AS tc1 \gset
SELECT conveyor.lock_acquire('tap:c-stale', 'w2', 10) AS tc2 \gset
SELECT conveyor.lock_acquire('tap:c-quiet', 'w3', 1000) AS tc3 \gset
SELECT pg_temp.stall('tap:c-stale', 20) \gset
SELECT pg_temp.stall('tap:c-quiet', 100) \gset
UPDATE conveyor.locks SET acquired_at = acquired_at - interval '200 seconds' WHERE key = 'tap:c-stale';
SELECT results_eq(
    $$ SELECT key, owner, token, held_seconds >= 200 FROM conveyor.locks_cleanup() WHERE key LIKE 'tap:%' $$,
    format($$ VALUES ('tap:c-stale'::text, 'w2'::text, %s::bigint, true) $$, :tc2),
    'locks_cleanup() removes leases past their own ttl and reports key, owner, token, held_seconds');
SELECT is((SELECT array_agg(key ORDER BY key) FROM conveyor.locks WHERE key LIKE 'tap:%'), ARRAY['tap:c-live', 'tap:c-quiet'],
          'the live leases stay');
SELECT results_eq(
    $$ SELECT key, owner, token FROM conveyor.locks_cleanup(50) WHERE key LIKE 'tap:%' $$,
    format($$ VALUES ('tap:c-quiet'::text, 'w3'::text, %s::bigint) $$, :tc3),
    'locks_cleanup(50) also removes a lease without a heartbeat for 50 s, whatever its ttl');
SELECT is((SELECT array_agg(ARRAY[key, old_owner, old_token::text] ORDER BY key) FROM conveyor.lock_events
           WHERE event = 'cleanup' AND key LIKE 'tap:c-%'),
          ARRAY[ARRAY['tap:c-quiet', 'w3', :'tc3'], ARRAY['tap:c-stale', 'w2', :'tc2']], 'each cleanup is recorded with the old holder');
SELECT is((SELECT count(*)::int FROM conveyor.locks_cleanup() WHERE key LIKE 'tap:%'), 0, 'nothing left to clean');

-- ---- the event trail is purged by maintain() -----------------------------------------------------------

INSERT INTO conveyor.lock_events (at, key, event, old_owner, old_token)
VALUES (clock_timestamp() - interval '8 days', 'tap:old', 'cleanup', 'w0', 1),
       (clock_timestamp() - interval '6 days', 'tap:recent', 'cleanup', 'w0', 2);
SELECT is(jsonb_typeof(conveyor.maintain()), 'object', 'maintain runs');
SELECT is((SELECT array_agg(key ORDER BY key) FROM conveyor.lock_events WHERE key IN ('tap:old', 'tap:recent')),
          ARRAY['tap:recent'], 'maintain deletes lock events older than 7 days and keeps the rest');

-- ---- the fenced write --------------------------------------------------------------------------------
-- A worker writes only while its token is the live holder's, checked in the writing transaction.

CREATE TABLE pg_temp.artist_data (artist text PRIMARY KEY, followers int, written_by text, token bigint);
INSERT INTO pg_temp.artist_data VALUES ('artist:42', 0, NULL, NULL);
CREATE FUNCTION pg_temp.fenced_write(k text, tok bigint, worker text, n int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT conveyor.lock_check(k, tok) THEN
        RETURN false;
    END IF;
    UPDATE pg_temp.artist_data SET followers = n, written_by = worker, token = tok WHERE artist = k;
    RETURN true;
END
$$;

SELECT conveyor.lock_acquire('artist:42', 'worker-A', 1) AS ta \gset
SELECT is(pg_temp.fenced_write('artist:42', :ta, 'worker-A', 100), true, 'fenced: A holds the lease and writes');
-- A stalls past its 1-second ttl (a long API call).
SELECT pg_temp.stall('artist:42', 5) \gset
SELECT conveyor.lock_acquire('artist:42', 'worker-B', 1) AS tb \gset
SELECT ok(:tb > :ta, 'fenced: B takes the expired lease over with a greater token');
SELECT is(pg_temp.fenced_write('artist:42', :ta, 'worker-A', 111), false, 'fenced: A''s late write is refused');
SELECT is(pg_temp.fenced_write('artist:42', :tb, 'worker-B', 222), true, 'fenced: B''s write is accepted');
SELECT is((SELECT ROW(followers, written_by, token)::text FROM pg_temp.artist_data),
          ROW(222, 'worker-B'::text, :tb::bigint)::text, 'fenced: the data holds B''s write, not A''s');
SELECT is(conveyor.lock_heartbeat('artist:42', 'worker-A', :ta), false, 'fenced: A''s heartbeat tells it that it lost the lease');

SELECT * FROM finish();
ROLLBACK;

-- Recurring jobs without pg_cron's database: schedule_enqueue's argument checks (they come before any
-- look at pg_cron), its refusal outside the cron database, and run_schedule's tick (what pg_cron runs)
-- on a schedule row made by hand. One transaction: now(), and so the tick, is the same for every run.
-- test/shell/schedule_enqueue.sh covers the rest against the real pg_cron.
BEGIN;
SELECT plan(15);

SELECT conveyor.create_queue('tap_se', '{"required_keys": ["site"]}');

-- ---- argument checks, before pg_cron is consulted ----
SELECT throws_ok($$SELECT conveyor.schedule_enqueue(NULL, '* * * * *', 'tap_se')$$, '22004', 'name must not be NULL',
                 'a NULL name is 22004');
SELECT throws_ok($$SELECT conveyor.schedule_enqueue('', '* * * * *', 'tap_se')$$, '22023', NULL, 'an empty name is 22023');
SELECT throws_ok($$SELECT conveyor.schedule_enqueue('n', NULL, 'tap_se')$$, '22004', 'schedule must not be NULL',
                 'a NULL schedule is 22004');
SELECT throws_ok($$SELECT conveyor.schedule_enqueue('n', '* * * * *', 'tap_se', NULL)$$, '22004', 'payload must not be NULL',
                 'a NULL payload is 22004');
SELECT throws_like(format('SELECT conveyor.schedule_enqueue(%L, %L, %L)', repeat('x', 60), '* * * * *', 'tap_se'), '%is too long for a schedule%',
                   'a name too long for pg_cron''s job name is refused');
SELECT throws_ok($$SELECT conveyor.unschedule_enqueue(NULL)$$, '22004', 'name must not be NULL', 'unschedule_enqueue too');
-- This database is not cron.database_name (the suite's cluster schedules from postgres).
SELECT throws_like($$SELECT conveyor.schedule_enqueue('n', '* * * * *', 'tap_se', '{"site": "a"}')$$,
                   'pg_cron schedules jobs from database %', 'outside pg_cron''s database, 55000');

-- ---- run_schedule: one job per tick ----
INSERT INTO conveyor.schedules (name, queue, payload, job_type, group_key, priority, max_attempts, created_at, updated_at)
VALUES ('tap_se_every', 'tap_se', '{"site": "a"}', 'POLL', 'g', 7, 2, now(), now());
SELECT isnt(conveyor.run_schedule('tap_se_every'), NULL, 'the first run of a tick enqueues');
SELECT is(conveyor.run_schedule('tap_se_every'), NULL, 'a second run of the same tick enqueues nothing');
SELECT is((SELECT row(j.job_type, j.group_key, j.priority, j.payload, j.max_attempts, s.last_job_id = j.job_id,
                      date_trunc('minute', s.last_tick) = s.last_tick AND s.last_tick = date_trunc('minute', now()))::text
           FROM conveyor.jobs j JOIN conveyor.schedules s ON s.name = 'tap_se_every'),
          row('POLL', 'g', 7, '{"site": "a"}'::jsonb, 2, true, true)::text,
          'one job, as the schedule says; without a pg_cron job the tick is the minute');
SELECT is((SELECT dedup_key FROM conveyor.jobs),
          'schedule:tap_se_every@' || to_char(date_trunc('minute', now()) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
          'its dedup key names the schedule and the tick in UTC');
SELECT is((SELECT row(name, schedule, active, queue, cron_job_id)::text FROM conveyor.list_schedules()),
          row('tap_se_every', NULL::text, NULL::boolean, 'tap_se', NULL::bigint)::text,
          'list_schedules shows it, without a pg_cron job here');
SELECT throws_ok($$SELECT conveyor.run_schedule('tap_se_none')$$, '42704', 'schedule "tap_se_none" does not exist',
                 'an unknown schedule is 42704');
-- A schedule whose queue is gone fails its run and claims no tick.
INSERT INTO conveyor.schedules (name, queue, payload, priority, created_at, updated_at)
VALUES ('tap_se_gone', 'tap_se_gone', '{}', 5, now(), now());
SELECT throws_ok($$SELECT conveyor.run_schedule('tap_se_gone')$$, '42704', 'queue "tap_se_gone" does not exist',
                 'a run into a dropped queue fails');
SELECT is((SELECT last_tick FROM conveyor.schedules WHERE name = 'tap_se_gone'), NULL, 'its failed run left the tick unclaimed');

SELECT * FROM finish();
ROLLBACK;

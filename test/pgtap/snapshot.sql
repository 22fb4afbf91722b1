-- Period snapshots: one row per entity and period, deltas against the previous period and the day
-- before, equal captures writing nothing, batches, series reads, and what is refused.
BEGIN;
SELECT plan(36);

-- ---- one row per day; a capture inside the day updates it -----------------------------------------

SELECT snapshot_id AS s1, is_new_period AS new1, delta IS NULL AND delta_day IS NULL AS no_delta1
FROM conveyor.snapshot('tap_ch', 'UC1', '{"subscribers": 100, "views": 1000, "title": "Beats"}', '2026-03-01 10:00+00') \gset
SELECT ok(:'new1'::boolean, 'the first capture of an entity starts a period');
SELECT ok(:'no_delta1'::boolean, 'with no delta and no delta_day: there is nothing before it');
SELECT results_eq(
    $$ SELECT snapshot_id::text, is_new_period, delta FROM conveyor.snapshot('tap_ch', 'UC1', '{"subscribers": 110, "views": 1500, "title": "Beats"}',
                                                                     '2026-03-01 18:00+00') $$,
    format($$ VALUES (%L, false, NULL::jsonb) $$, :'s1'),
    'a capture later the same day updates the day''s row (same snapshot_id, not a new period)');
SELECT results_eq(
    $$ SELECT period_start, captured_at, metrics, captures FROM conveyor.snapshots WHERE series = 'tap_ch' AND entity_id = 'UC1' $$,
    $$ VALUES ('2026-03-01 00:00+00'::timestamptz, '2026-03-01 18:00+00'::timestamptz,
               '{"subscribers": 110, "views": 1500, "title": "Beats"}'::jsonb, 2) $$,
    'the row holds the latest capture''s metrics and time');

SELECT xmin::text AS v1 FROM conveyor.snapshots WHERE series = 'tap_ch' AND entity_id = 'UC1' \gset
SELECT results_eq(
    $$ SELECT snapshot_id::text, is_new_period FROM conveyor.snapshot('tap_ch', 'UC1', '{"views": 1500, "subscribers": 110, "title": "Beats"}',
                                                              '2026-03-01 20:00+00') $$,
    format($$ VALUES (%L, false) $$, :'s1'), 'a capture with the same metrics returns the stored snapshot ...');
SELECT is((SELECT xmin::text FROM conveyor.snapshots WHERE series = 'tap_ch' AND entity_id = 'UC1'), :'v1',
          '... and writes nothing (same row version)');
SELECT is((SELECT captured_at FROM conveyor.snapshots WHERE series = 'tap_ch' AND entity_id = 'UC1'), '2026-03-01 18:00+00'::timestamptz,
          'not even the capture time');
SELECT is((SELECT count(*)::int FROM conveyor.snapshot('tap_ch', 'UC1', '{"subscribers": 90}', '2026-03-01 12:00+00')), 1,
          'a late capture, older than the period''s latest ...');
SELECT is((SELECT metrics->>'subscribers' FROM conveyor.snapshots WHERE series = 'tap_ch' AND entity_id = 'UC1'), '110',
          '... does not overwrite it');

-- ---- the next periods: delta and delta_day ------------------------------------------------------------

SELECT results_eq(
    $$ SELECT is_new_period, delta, delta_day FROM conveyor.snapshot('tap_ch', 'UC1', '{"subscribers": 130, "views": 2500, "title": "Beats!"}',
                                                                     '2026-03-02 09:00+00') $$,
    $$ VALUES (true, '{"subscribers": 20, "views": 1000}'::jsonb, NULL::jsonb) $$,
    'the next day is a new period; delta is against the previous period''s last values (text metrics are skipped)');
SELECT results_eq(
    $$ SELECT is_new_period, delta, delta_day FROM conveyor.snapshot('tap_ch', 'UC1', '{"subscribers": 135, "views": 2600, "likes": 7}',
                                                                     '2026-03-02 19:00+00') $$,
    $$ VALUES (false, '{"subscribers": 25, "views": 1100}'::jsonb, '{"subscribers": 25, "views": 1100}'::jsonb) $$,
    'a later capture the same day: delta recomputed; delta_day against the latest snapshot 24 h older (captured 03-01 18:00)');
SELECT results_eq(
    $$ SELECT is_new_period, delta, delta_day FROM conveyor.snapshot('tap_ch', 'UC1', '{"subscribers": 150, "views": 4100.5, "likes": 9}',
                                                                     '2026-03-04 20:00+00') $$,
    $$ VALUES (true, '{"subscribers": 15, "views": 1500.5, "likes": 2}'::jsonb, '{"subscribers": 15, "views": 1500.5, "likes": 2}'::jsonb) $$,
    'after a gap, delta is against the last period there is; metrics missing on one side are skipped');

SELECT results_eq(
    $$ SELECT period_start, metrics->>'subscribers', delta->>'subscribers', captures FROM conveyor.snapshot_series('tap_ch', 'UC1') $$,
    $$ VALUES ('2026-03-01 00:00+00'::timestamptz, '110', NULL, 2), ('2026-03-02 00:00+00', '135', '25', 2),
              ('2026-03-04 00:00+00', '150', '15', 1) $$,
    'snapshot_series reads the series back in period order');
SELECT results_eq(
    $$ SELECT period_start FROM conveyor.snapshot_series('tap_ch', 'UC1', since => '2026-03-02', until => '2026-03-04') $$,
    $$ VALUES ('2026-03-02 00:00+00'::timestamptz) $$, 'since is inclusive, until exclusive');
SELECT is((SELECT count(*)::int FROM conveyor.snapshot_series('tap_ch', 'UC404')), 0, 'an unknown entity has no snapshots');
SELECT is((SELECT count(*)::int FROM conveyor.snapshot_series('tap_other', 'UC1')), 0, 'series are apart');

-- ---- hours, time zones, every capture ---------------------------------------------------------------------

SELECT is((SELECT is_new_period FROM conveyor.snapshot('tap_hr', 'v1', '{"views": 5}', '2026-03-01 10:05+00', 'hour')), true, 'hourly: a new hour');
SELECT is((SELECT is_new_period FROM conveyor.snapshot('tap_hr', 'v1', '{"views": 8}', '2026-03-01 10:55+00', 'hour')), false, 'the same hour');
SELECT is((SELECT delta FROM conveyor.snapshot('tap_hr', 'v1', '{"views": 20}', '2026-03-01 11:00+00', 'hour')), '{"views": 12}'::jsonb,
          'the next hour: delta against the last capture of the hour before');
SELECT results_eq(
    $$ SELECT period_start FROM conveyor.snapshot_series('tap_hr', 'v1') $$,
    $$ VALUES ('2026-03-01 10:00+00'::timestamptz), ('2026-03-01 11:00+00') $$, 'hour rows start on the hour');

SELECT conveyor.snapshot('tap_tz', 'UC1', '{"subs": 1}', '2026-03-01 23:30+00', 'day', 'America/New_York');
SELECT is((SELECT is_new_period FROM conveyor.snapshot('tap_tz', 'UC1', '{"subs": 2}', '2026-03-02 04:30+00', 'day', 'America/New_York')), false,
          'days follow the time zone: 04:30 UTC on 03-02 is still 03-01 in New York');
SELECT is((SELECT is_new_period FROM conveyor.snapshot('tap_tz', 'UC1', '{"subs": 3}', '2026-03-02 05:30+00', 'day', 'America/New_York')), true,
          'and 05:30 UTC is the next New York day');
SELECT results_eq(
    $$ SELECT period_start FROM conveyor.snapshot_series('tap_tz', 'UC1') $$,
    $$ VALUES ('2026-03-01 05:00+00'::timestamptz), ('2026-03-02 05:00+00') $$, 'periods start at local midnight');

SELECT conveyor.snapshot('tap_none', 'v1', '{"views": 1}', '2026-03-01 10:00+00', 'none');
SELECT conveyor.snapshot('tap_none', 'v1', '{"views": 3}', '2026-03-01 10:01+00', 'none');
SELECT results_eq(
    $$ SELECT period_start, delta FROM conveyor.snapshot_series('tap_none', 'v1') $$,
    $$ VALUES ('2026-03-01 10:00+00'::timestamptz, NULL::jsonb), ('2026-03-01 10:01+00', '{"views": 2}') $$,
    'period none keeps every capture, each with its delta');

-- ---- batches --------------------------------------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT ord, entity_id, is_new_period, delta FROM conveyor.snapshot_batch('tap_vid', '[
           {"entity_id": "v2", "metrics": {"views": 50}, "captured_at": "2026-03-02T10:00:00Z"},
           {"entity_id": "v1", "metrics": {"views": 10}, "captured_at": "2026-03-01T10:00:00Z"},
           {"entity_id": "v1", "metrics": {"views": 25}, "captured_at": "2026-03-02T10:00:00Z"},
           {"entity_id": "v3", "metrics": {"views": 1}}
       ]') $$,
    $$ VALUES (0, 'v2', true, NULL::jsonb), (1, 'v1', true, NULL), (2, 'v1', true, '{"views": 15}'), (3, 'v3', true, NULL) $$,
    'a batch of many entities, one of them twice: each capture applied in time order, results in input order');
SELECT is((SELECT captured_at FROM conveyor.snapshots WHERE series = 'tap_vid' AND entity_id = 'v3'), now(),
          'captured_at defaults to now()');
SELECT results_eq(
    $$ SELECT ord, is_new_period, delta FROM conveyor.snapshot_batch('tap_vid', '[
           {"entity_id": "v1", "metrics": {"views": 25}, "captured_at": "2026-03-02T12:00:00Z"},
           {"entity_id": "v2", "metrics": {"views": 70}, "captured_at": "2026-03-02T12:00:00Z"}]') $$,
    $$ VALUES (0, false, '{"views": 15}'::jsonb), (1, false, NULL) $$,
    'the next batch: an unchanged capture returns what is stored; a changed one updates its day');

-- ---- refused ----------------------------------------------------------------------------------------------------

SELECT throws_ok($$ SELECT * FROM conveyor.snapshot('tap_ch', 'UC1', '{"a": 1}', now(), 'week') $$, '22023',
                 'period must be ''hour'', ''day'' or ''none'', not "week"', 'an unknown period');
SELECT throws_ok($$ SELECT * FROM conveyor.snapshot('tap_ch', 'UC1', '{"a": 1}', now(), 'day', 'Mars/Olympus') $$, '22023',
                 'tz: unknown time zone "Mars/Olympus"', 'an unknown time zone');
SELECT throws_ok($$ SELECT * FROM conveyor.snapshot('tap_ch', 'UC1', '[1, 2]') $$, '22023',
                 'metrics must be a JSON object of metrics', 'metrics that are not an object');
SELECT throws_ok($$ SELECT * FROM conveyor.snapshot('tap_ch', NULL, '{"a": 1}') $$, '22004',
                 'entity_id must not be NULL', 'a NULL entity');
SELECT throws_ok($$ SELECT * FROM conveyor.snapshot_batch('tap_vid', '[{"entity_id": "v1", "metrics": {"a": 1}}, {"metrics": {"a": 1}}]') $$,
                 '22023', 'captures[1]: entity_id is missing', 'a batch element without entity');
SELECT throws_ok($$ SELECT * FROM conveyor.snapshot_batch('tap_vid', '[{"entity_id": "v1", "metrics": {"a": 1}, "captured": "now"}]') $$,
                 '22023', 'captures[0]: unknown field "captured"', 'an unknown field');
SELECT throws_ok($$ SELECT * FROM conveyor.snapshot_batch('tap_vid', '[{"entity_id": "v1", "metrics": {"a": 1}, "captured_at": "soon"}]') $$,
                 '22023', 'captures[0].captured_at is not a timestamp: "soon"', 'a bad time');

-- ---- privileges ---------------------------------------------------------------------------------------------------

CREATE ROLE tap_snap_reader NOLOGIN IN ROLE conveyor_reader;
SET ROLE tap_snap_reader;
SELECT is((SELECT count(*)::int FROM conveyor.snapshot_series('tap_ch', 'UC1')), 3, 'a reader reads series ...');
SELECT throws_ok($$ SELECT * FROM conveyor.snapshot('tap_ch', 'UC1', '{"a": 1}') $$, '42501', NULL, '... but cannot capture');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

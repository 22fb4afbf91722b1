-- snapshot and snapshot_batch with skip_unchanged: a capture that would start a period with the
-- metrics of the entity's latest earlier snapshot writes nothing and reports that snapshot; later
-- deltas are against it; snapshot_series, snapshot_metrics and snapshot_top agree.
BEGIN;
SELECT plan(23);

-- ---- the first capture is stored; an equal one an hour later is not ----------------------------------

SELECT snapshot_id AS s10, is_new_period AS new10
FROM conveyor.snapshot('tap_sk', 'v1', '{"views": 100, "likes": 5, "title": "Rain"}', '2026-03-01 10:05+00', 'hour', 'UTC', true) \gset
SELECT ok(:'new10'::boolean, 'the first capture of an entity is stored, skip_unchanged or not');
SELECT xmin::text AS x10 FROM conveyor.snapshots WHERE series = 'tap_sk' AND entity_id = 'v1' \gset

SELECT results_eq(
    $$ SELECT snapshot_id::text, is_new_period, delta, delta_day
       FROM conveyor.snapshot('tap_sk', 'v1', '{"title": "Rain", "likes": 5, "views": 100}', '2026-03-01 11:05+00', 'hour', 'UTC', true) $$,
    format($$ VALUES (%L, false, '{"views": 0, "likes": 0}'::jsonb, NULL::jsonb) $$, :'s10'),
    'an hour later with equal metrics: the 10:00 snapshot, not a new period, delta 0 for every numeric metric');
SELECT is((SELECT count(*)::int FROM conveyor.snapshots WHERE series = 'tap_sk' AND entity_id = 'v1'), 1, '... and no new row');
SELECT is((SELECT xmin::text FROM conveyor.snapshots WHERE series = 'tap_sk' AND entity_id = 'v1'), :'x10',
          '... nor any write to the stored one (same row version)');
SELECT is((SELECT count(*)::int FROM conveyor.snapshot_metrics WHERE series = 'tap_sk' AND period_start = '2026-03-01 11:00+00'), 0,
          '... nor metric rows for the skipped hour');

SELECT results_eq(
    $$ SELECT is_new_period, delta, delta_day
       FROM conveyor.snapshot('tap_sk', 'v1', '{"views": 100, "likes": 5, "title": "Rain"}', '2026-03-02 12:00+00', 'hour', 'UTC', true) $$,
    $$ VALUES (false, '{"views": 0, "likes": 0}'::jsonb, '{"views": 0, "likes": 0}'::jsonb) $$,
    'a day later, still equal: skipped; delta_day is computed against the snapshot 24 hours older');

SELECT is((SELECT count(*)::int FROM conveyor.snapshot('tap_sk', 'v1', '{"views": 100, "likes": 5, "title": "Rain"}', '2026-03-02 13:00+00', 'hour')),
          1, 'without skip_unchanged (the default) an equal capture still starts its period ...');
SELECT is((SELECT count(*)::int FROM conveyor.snapshots WHERE series = 'tap_sk' AND entity_id = 'v1'), 2, '... with a row of its own');

SELECT results_eq(
    $$ SELECT is_new_period, delta FROM conveyor.snapshot('tap_sk', 'v1', '{"views": 100, "likes": 5, "title": "Snow"}',
                                                          '2026-03-02 14:00+00', 'hour', 'UTC', true) $$,
    $$ VALUES (true, '{"views": 0, "likes": 0}'::jsonb) $$,
    'a changed text metric is a change: stored');
SELECT results_eq(
    $$ SELECT is_new_period, delta FROM conveyor.snapshot('tap_sk', 'v1', '{"views": 180, "likes": 6, "title": "Snow"}',
                                                          '2026-03-02 16:30+00', 'hour', 'UTC', true) $$,
    $$ VALUES (true, '{"views": 80, "likes": 1}'::jsonb) $$,
    'a change after skipped hours: delta against the latest stored row');
SELECT results_eq(
    $$ SELECT period_start, metrics->>'views', delta->>'views' FROM conveyor.snapshot_series('tap_sk', 'v1') $$,
    $$ VALUES ('2026-03-01 10:00+00'::timestamptz, '100', NULL), ('2026-03-02 13:00+00', '100', '0'),
              ('2026-03-02 14:00+00', '100', '0'), ('2026-03-02 16:00+00', '180', '80') $$,
    'snapshot_series: only the stored rows');
SELECT results_eq(
    $$ SELECT entity_id, value, delta FROM conveyor.snapshot_top('tap_sk', '2026-03-02 16:00+00', 'views') $$,
    $$ VALUES ('v1'::text, 180::numeric, 80::numeric) $$, 'snapshot_top of the stored hour');
SELECT is((SELECT count(*)::int FROM conveyor.snapshot_top('tap_sk', '2026-03-02 12:00+00', 'views', by => 'value')), 0,
          'snapshot_top of a skipped hour: the entity is not there');

-- ---- a period that has its row: updated as always -------------------------------------------------------

SELECT results_eq(
    $$ SELECT is_new_period, delta FROM conveyor.snapshot('tap_sk', 'v1', '{"views": 100, "likes": 5, "title": "Snow"}',
                                                          '2026-03-02 16:50+00', 'hour', 'UTC', true) $$,
    $$ VALUES (false, '{"views": 0, "likes": 0}'::jsonb) $$,
    'equal to the previous hour, but its own hour has a row: that row is updated (back to the previous values)');
SELECT results_eq(
    $$ SELECT metrics->>'views', captures FROM conveyor.snapshots WHERE series = 'tap_sk' AND entity_id = 'v1'
       AND period_start = '2026-03-02 16:00+00' $$,
    $$ VALUES ('100', 2) $$, '... the hour''s row holds the latest capture');
SELECT is((SELECT value FROM conveyor.snapshot_metrics WHERE series = 'tap_sk' AND entity_id = 'v1'
           AND period_start = '2026-03-02 16:00+00' AND metric = 'views'), 100::numeric, '... and so do its metric rows');

-- ---- days, and periods 'none' -------------------------------------------------------------------------------------

SELECT conveyor.snapshot('tap_sk_day', 'UC1', '{"subs": 7}', '2026-03-01 10:00+00', 'day', 'UTC', true);
SELECT is((SELECT is_new_period FROM conveyor.snapshot('tap_sk_day', 'UC1', '{"subs": 7}', '2026-03-02 10:00+00', 'day', 'UTC', true)), false,
          'days: an equal next day is skipped');
SELECT conveyor.snapshot('tap_sk_none', 'v1', '{"views": 1}', '2026-03-01 10:00+00', 'none', 'UTC', true);
SELECT conveyor.snapshot('tap_sk_none', 'v1', '{"views": 1}', '2026-03-01 10:01+00', 'none', 'UTC', true);
SELECT conveyor.snapshot('tap_sk_none', 'v1', '{"views": 2}', '2026-03-01 10:02+00', 'none', 'UTC', true);
SELECT results_eq(
    $$ SELECT period_start, delta FROM conveyor.snapshot_series('tap_sk_none', 'v1') $$,
    $$ VALUES ('2026-03-01 10:00+00'::timestamptz, NULL::jsonb), ('2026-03-01 10:02+00', '{"views": 1}') $$,
    'period none: only captures that change something are kept');

-- ---- batches -----------------------------------------------------------------------------------------------------

SELECT conveyor.snapshot_batch('tap_sk_b', '[{"entity_id": "a", "metrics": {"views": 10}, "captured_at": "2026-03-01T10:00:00Z"},
                                             {"entity_id": "b", "metrics": {"views": 20}, "captured_at": "2026-03-01T10:00:00Z"}]', 'hour');
SELECT results_eq(
    $$ SELECT ord, entity_id, is_new_period, delta FROM conveyor.snapshot_batch('tap_sk_b', '[
           {"entity_id": "a", "metrics": {"views": 10}, "captured_at": "2026-03-01T11:00:00Z"},
           {"entity_id": "b", "metrics": {"views": 25}, "captured_at": "2026-03-01T11:00:00Z"},
           {"entity_id": "a", "metrics": {"views": 10}, "captured_at": "2026-03-01T12:00:00Z"},
           {"entity_id": "a", "metrics": {"views": 14}, "captured_at": "2026-03-01T13:00:00Z"},
           {"entity_id": "c", "metrics": {"views": 1}, "captured_at": "2026-03-01T13:00:00Z"}
       ]', 'hour', 'UTC', skip_unchanged => true) $$,
    $$ VALUES (0, 'a', false, '{"views": 0}'::jsonb), (1, 'b', true, '{"views": 5}'), (2, 'a', false, '{"views": 0}'),
              (3, 'a', true, '{"views": 4}'), (4, 'c', true, NULL) $$,
    'a batch: equal captures skipped, changed ones stored, an entity several times in time order');
SELECT results_eq(
    $$ SELECT entity_id, period_start FROM conveyor.snapshots WHERE series = 'tap_sk_b' ORDER BY entity_id, period_start $$,
    $$ VALUES ('a'::text, '2026-03-01 10:00+00'::timestamptz), ('a', '2026-03-01 13:00+00'), ('b', '2026-03-01 10:00+00'),
              ('b', '2026-03-01 11:00+00'), ('c', '2026-03-01 13:00+00') $$,
    '... the rows stored');
SELECT is((SELECT count(*)::int FROM conveyor.snapshot_metrics WHERE series = 'tap_sk_b'), 5,
          '... one metric row per stored snapshot, none for the skipped ones');

-- ---- refused ------------------------------------------------------------------------------------------------------

SELECT throws_ok($$ SELECT * FROM conveyor.snapshot('tap_sk', 'v1', '{"a": 1}', now(), 'hour', 'UTC', NULL) $$, '22004',
                 'skip_unchanged must not be NULL', 'snapshot: skip_unchanged NULL');
SELECT throws_ok($$ SELECT * FROM conveyor.snapshot_batch('tap_sk', '[]', 'hour', 'UTC', NULL) $$, '22004',
                 'skip_unchanged must not be NULL', 'snapshot_batch: skip_unchanged NULL');

SELECT * FROM finish();
ROLLBACK;

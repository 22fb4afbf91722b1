-- snapshot_top: the entities with the largest delta, delta_day or value of a metric in one period,
-- read from snapshot_metrics (kept in step by snapshot and snapshot_batch), its refusals and roles.
BEGIN;
SELECT plan(10);

SELECT count(*) FROM conveyor.snapshot_batch('tap_top', '[
    {"entity_id": "v1", "metrics": {"views": 100, "title": "a"}, "captured_at": "2026-03-01T10:00:00Z"},
    {"entity_id": "v2", "metrics": {"views": 500}, "captured_at": "2026-03-01T10:00:00Z"},
    {"entity_id": "v3", "metrics": {"views": 50, "likes": 5}, "captured_at": "2026-03-01T10:00:00Z"}]');
SELECT count(*) FROM conveyor.snapshot_batch('tap_top', '[
    {"entity_id": "v1", "metrics": {"views": 900, "title": "a"}, "captured_at": "2026-03-02T11:00:00Z"},
    {"entity_id": "v2", "metrics": {"views": 600}, "captured_at": "2026-03-02T11:00:00Z"},
    {"entity_id": "v3", "metrics": {"views": 350, "likes": 9}, "captured_at": "2026-03-02T11:00:00Z"}]');

SELECT results_eq(
    $$ SELECT entity_id, value, delta, delta_day FROM conveyor.snapshot_top('tap_top', '2026-03-02', 'views') $$,
    $$ VALUES ('v1', 900::numeric, 800::numeric, 800::numeric), ('v3', 350, 300, 300), ('v2', 600, 100, 100) $$,
    'the most-viewed of the day by delta, largest first');
SELECT results_eq(
    $$ SELECT entity_id FROM conveyor.snapshot_top('tap_top', '2026-03-02', 'views', 2, 'value') $$,
    $$ VALUES ('v1'), ('v2') $$, 'by value, at most lim rows');
SELECT results_eq(
    $$ SELECT entity_id, delta_day FROM conveyor.snapshot_top('tap_top', '2026-03-02', 'likes', 10, 'delta_day') $$,
    $$ VALUES ('v3', 4::numeric) $$, 'by delta_day, of a metric only some entities have');
SELECT is((SELECT count(*)::int FROM conveyor.snapshot_top('tap_top', '2026-03-01', 'views')), 0,
          'the first period has no deltas: nothing ranks by delta');
SELECT is((SELECT count(*)::int FROM conveyor.snapshot_top('tap_top', '2026-03-02', 'title', 10, 'value')), 0,
          'a metric that is not a number is not ranked');

-- A capture later in the period moves the entity, and a metric it no longer has leaves the ranking.
SELECT count(*) FROM conveyor.snapshot('tap_top', 'v3', '{"views": 2000}', '2026-03-02T20:00:00Z');
SELECT results_eq(
    $$ SELECT entity_id, delta FROM conveyor.snapshot_top('tap_top', '2026-03-02', 'views', 1) $$,
    $$ VALUES ('v3', 1950::numeric) $$, 'an update in the period re-ranks the entity');
SELECT is((SELECT count(*)::int FROM conveyor.snapshot_top('tap_top', '2026-03-02', 'likes', 10, 'value')), 0,
          'a metric dropped by the update leaves the ranking');

SELECT throws_ok($$ SELECT * FROM conveyor.snapshot_top('tap_top', '2026-03-02', 'views', 10, 'views') $$, '22023',
                 'by must be ''delta'', ''delta_day'' or ''value'', not "views"', 'an unknown by is refused');
SELECT throws_ok($$ SELECT * FROM conveyor.snapshot_top('tap_top', '2026-03-02', 'views', 0) $$, '22023',
                 'lim must be between 1 and 10000, not 0', 'lim must be positive');
SELECT ok(has_function_privilege('conveyor_reader', 'conveyor.snapshot_top(text, timestamptz, text, int, text)', 'EXECUTE'),
          'conveyor_reader may call snapshot_top');

SELECT * FROM finish();
ROLLBACK;

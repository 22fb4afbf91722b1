-- docs/reference.md and the catalog say the same: every function of the extension has a reference
-- entry, and its COMMENT ON FUNCTION (what \df+ shows) is that entry's one-line summary.
BEGIN;
SELECT plan(5);

\set reference `cat docs/reference.md`
CREATE TEMP TABLE tap_ref AS
SELECT m[1] AS name, m[2] AS summary
FROM regexp_matches(:'reference', E'\n### conveyor\\.(\\w+)\\([^\n]*\n\n([^\n]+)', 'g') AS m;

CREATE TEMP VIEW tap_ref_functions AS
SELECT p.oid, p.proname::text AS name, obj_description(p.oid, 'pg_proc') AS comment
FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'conveyor';

SELECT cmp_ok((SELECT count(*)::int FROM tap_ref), '>=', 60, 'the reference has an entry per function');
SELECT is((SELECT array_agg(name ORDER BY name) FROM tap_ref_functions WHERE name NOT IN (SELECT name FROM tap_ref)), NULL,
          'every function of the extension has a reference entry');
SELECT is((SELECT array_agg(name ORDER BY name) FROM tap_ref WHERE name NOT IN (SELECT name FROM tap_ref_functions)), NULL,
          'every reference entry is a function of the extension');
SELECT is((SELECT array_agg(f.name ORDER BY f.name) FROM tap_ref_functions f JOIN tap_ref r USING (name)
           WHERE f.comment IS DISTINCT FROM r.summary), NULL,
          'each function''s COMMENT is its reference summary');
SELECT is((SELECT array_agg(name ORDER BY name) FROM tap_ref WHERE length(summary) > 120 OR summary NOT LIKE '%.'), NULL,
          'each summary is one sentence of at most 120 characters');

SELECT * FROM finish();
ROLLBACK;

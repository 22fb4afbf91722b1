-- Every function of the extension has a decided role (test/fixtures/decided_roles.sql) and its grants
-- match it. A function added without a decision fails here.
BEGIN;
SELECT plan(5);

\i test/fixtures/decided_roles.sql

CREATE TEMP VIEW tap_pm_actual AS
SELECT p.proname::text AS name, p.oid::regprocedure::text AS signature,
       CASE WHEN has_function_privilege('conveyor_reader', p.oid, 'EXECUTE') THEN 'conveyor_reader'
            WHEN has_function_privilege('conveyor_worker', p.oid, 'EXECUTE') THEN 'conveyor_worker'
            WHEN has_function_privilege('conveyor_admin', p.oid, 'EXECUTE') THEN 'conveyor_admin'
            ELSE 'none' END AS least_role
FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'conveyor';

SELECT is((SELECT array_agg(name ORDER BY name) FROM tap_pm_actual WHERE name NOT IN (SELECT name FROM tap_decided_roles)), NULL,
          'every function of the extension has a decided role');
SELECT is((SELECT array_agg(name ORDER BY name) FROM tap_decided_roles WHERE name NOT IN (SELECT name FROM tap_pm_actual)), NULL,
          'every decided function exists');
SELECT is((SELECT array_agg(a.signature || ': ' || a.least_role || ', decided ' || d.least_role ORDER BY a.signature)
           FROM tap_pm_actual a JOIN tap_decided_roles d USING (name) WHERE a.least_role <> d.least_role), NULL,
          'each function is executable from its decided role up, and not below');
SELECT is((SELECT array_agg(signature ORDER BY signature) FROM tap_pm_actual
           WHERE has_function_privilege('public', signature::regprocedure, 'EXECUTE')), NULL,
          'none is executable by PUBLIC');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p WHERE p.proname = 'boundary_selftest'), NULL,
          'the test-only boundary_selftest is not part of the installed extension');

SELECT * FROM finish();
ROLLBACK;

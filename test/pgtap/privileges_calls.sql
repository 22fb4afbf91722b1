-- Every function of the extension, called by a login member of each role: below its decided role
-- (test/fixtures/decided_roles.sql) the call fails with 42501, from it up it never does. The functions
-- come from the catalog, so one added later is called here without editing this file.
BEGIN;
\i test/fixtures/decided_roles.sql

CREATE TEMP VIEW tap_pc_functions AS
SELECT p.oid::regprocedure::text AS signature, d.least_role,
       CASE d.least_role WHEN 'conveyor_reader' THEN 1 WHEN 'conveyor_worker' THEN 2 WHEN 'conveyor_admin' THEN 3 ELSE 4 END
           AS least_rank,
       -- A trigger function runs only as a trigger: creating one is the call a role can make.
       CASE WHEN p.prorettype = 'trigger'::regtype
            THEN format('CREATE TRIGGER tap_pc_trigger AFTER INSERT ON public.tap_pc_target FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                        p.oid::regproc)
            ELSE format('SELECT * FROM %s(%s)', p.oid::regproc,
                        (SELECT string_agg(
                                    -- NULL does no harm; but the planner folds a STRICT function of a NULL
                                    -- constant without checking EXECUTE, so those get a harmless value.
                                    CASE WHEN NOT p.proisstrict THEN format('NULL::%s', t::regtype)
                                         WHEN t = 'uuid'::regtype THEN quote_literal(gen_random_uuid()) || '::uuid'
                                         WHEN t IN ('text'::regtype, 'jsonb'::regtype) THEN format('''{}''::%s', t::regtype)
                                         ELSE format('0::%s', t::regtype) END, ', ' ORDER BY i)
                         FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, i))) END AS call
FROM pg_proc p
JOIN pg_depend dep ON dep.classid = 'pg_proc'::regclass AND dep.objid = p.oid AND dep.deptype = 'e'
JOIN pg_extension e ON e.oid = dep.refobjid AND e.extname = 'conveyor'
LEFT JOIN tap_decided_roles d ON d.name = p.proname;

-- Login roles, one per level; 'none' (rank 4) is above them all: only a superuser may.
CREATE TEMP TABLE tap_pc_logins (login text PRIMARY KEY, rank int NOT NULL);
INSERT INTO tap_pc_logins VALUES ('tap_pc_nobody', 0), ('tap_pc_reader', 1), ('tap_pc_worker', 2), ('tap_pc_admin', 3);
CREATE ROLE tap_pc_nobody LOGIN;
CREATE ROLE tap_pc_reader LOGIN IN ROLE conveyor_reader;
CREATE ROLE tap_pc_worker LOGIN IN ROLE conveyor_worker;
CREATE ROLE tap_pc_admin LOGIN IN ROLE conveyor_admin;
-- Everyone may put triggers on this table: a 42501 from CREATE TRIGGER can then only be the function's.
CREATE TABLE public.tap_pc_target (id int);
GRANT TRIGGER ON public.tap_pc_target TO PUBLIC;

-- Each call as each login, in its own subtransaction, always rolled back; returns the SQLSTATE
-- ('00000' when the call succeeded). The session authorization goes back with the subtransaction.
CREATE FUNCTION pg_temp.tap_pc_run() RETURNS TABLE (signature text, login text, expect_denied boolean, state text)
LANGUAGE plpgsql AS $$
DECLARE
    f record;
    l record;
BEGIN
    FOR f IN SELECT * FROM tap_pc_functions ORDER BY 1 LOOP
        FOR l IN SELECT * FROM tap_pc_logins ORDER BY rank LOOP
            signature := f.signature; login := l.login; expect_denied := l.rank < f.least_rank;
            BEGIN
                EXECUTE format('SET SESSION AUTHORIZATION %I', l.login);
                EXECUTE f.call;
                RAISE SQLSTATE 'TAP00';
            EXCEPTION WHEN OTHERS THEN
                state := CASE SQLSTATE WHEN 'TAP00' THEN '00000' ELSE SQLSTATE END;
            END;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END $$;

-- What disagrees with the decided roles, one line per function and login.
CREATE FUNCTION pg_temp.tap_pc_wrong() RETURNS TABLE (signature text, wrong text)
LANGUAGE sql AS $$
    SELECT signature, login || CASE WHEN expect_denied THEN ' was not denied (' || state || ')' ELSE ' was denied' END
    FROM pg_temp.tap_pc_run()
    WHERE expect_denied <> (state = '42501')
$$;

-- One assertion per function of the catalog, and three more.
SELECT plan((SELECT count(*)::int + 3 FROM tap_pc_functions));

SELECT is((SELECT array_agg(signature ORDER BY 1) FROM tap_pc_functions WHERE least_role IS NULL), NULL,
          'every function has a decided role');

CREATE TEMP TABLE tap_pc_wrong AS SELECT * FROM pg_temp.tap_pc_wrong();
SELECT is((SELECT array_agg(w.wrong ORDER BY w.wrong) FROM tap_pc_wrong w WHERE w.signature = f.signature), NULL,
          format('%s: 42501 below %s, never from it up', f.signature, f.least_role))
FROM tap_pc_functions f ORDER BY f.signature;

-- The check can fail: an admin function granted to readers, a reader function taken from them.
GRANT EXECUTE ON FUNCTION conveyor.maintain() TO conveyor_reader;
REVOKE EXECUTE ON FUNCTION conveyor.get_job(uuid) FROM conveyor_reader;
SELECT is((SELECT array_agg(signature || ': ' || wrong ORDER BY signature, wrong) FROM pg_temp.tap_pc_wrong()),
          ARRAY['conveyor.get_job(uuid): tap_pc_admin was denied', 'conveyor.get_job(uuid): tap_pc_reader was denied',
                'conveyor.get_job(uuid): tap_pc_worker was denied',
                'conveyor.maintain(): tap_pc_reader was not denied (00000)', 'conveyor.maintain(): tap_pc_worker was not denied (00000)'],
          'a wrong grant and a missing one are both reported, for the role and its members');
REVOKE EXECUTE ON FUNCTION conveyor.maintain() FROM conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.get_job(uuid) TO conveyor_reader;
SELECT is((SELECT count(*)::int FROM pg_temp.tap_pc_wrong()), 0, 'and nothing once they are put back');

SELECT * FROM finish();
ROLLBACK;

-- Jobs per tenant, as README "Tenants and row-level security" shows: the application's security_barrier
-- view over conveyor.jobs and conveyor.job_history, owned by a role granted only SELECT on them, shows a
-- tenant role the jobs whose payload names its tenant, and nothing else by any query.
BEGIN;
SELECT plan(13);

-- ---- the application's side (a superuser or the extension's owner grants) ----------------------------
CREATE ROLE tap_tn_app NOLOGIN;   -- owns the view: a view reads its tables with its owner's rights
GRANT USAGE ON SCHEMA conveyor TO tap_tn_app;
GRANT SELECT ON conveyor.jobs, conveyor.job_history, conveyor.queues TO tap_tn_app;
CREATE SCHEMA tap_tn AUTHORIZATION tap_tn_app;
CREATE ROLE tap_tn_acme LOGIN;
CREATE ROLE tap_tn_globex LOGIN;

SET ROLE tap_tn_app;
CREATE TABLE tap_tn.tenant_roles (role_name name PRIMARY KEY, tenant text NOT NULL);
INSERT INTO tap_tn.tenant_roles VALUES ('tap_tn_acme', 'acme'), ('tap_tn_globex', 'globex');
CREATE VIEW tap_tn.jobs WITH (security_barrier) AS
SELECT a.* FROM (
    SELECT j.job_id, q.name AS queue, j.job_type, j.state::text AS status, j.payload, j.attempt, j.last_error, j.created_at
    FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id)
    UNION ALL
    SELECT h.job_id, q.name, h.job_type, h.status::text, h.payload, h.attempt, h.last_error, h.created_at
    FROM conveyor.job_history h JOIN conveyor.queues q USING (queue_id)) a
WHERE a.payload->>'tenant' = (SELECT t.tenant FROM tap_tn.tenant_roles t WHERE t.role_name = current_user);
GRANT USAGE ON SCHEMA tap_tn TO tap_tn_acme, tap_tn_globex;
GRANT SELECT ON tap_tn.jobs TO tap_tn_acme, tap_tn_globex;
-- The same query without security_barrier, to show what the barrier stops.
SELECT format('CREATE VIEW tap_tn.jobs_leaky AS %s', pg_get_viewdef('tap_tn.jobs')) \gexec
GRANT SELECT ON tap_tn.jobs_leaky TO tap_tn_acme;
RESET ROLE;

\o /dev/null
SELECT conveyor.create_queue('tap_tn');
SELECT job_id AS acme_1 FROM conveyor.enqueue('tap_tn', '{"tenant": "acme", "url": "a1"}') \gset
SELECT conveyor.enqueue('tap_tn', '{"tenant": "globex", "url": "g1"}');
SELECT conveyor.enqueue('tap_tn', '{"tenant": "acme", "url": "a2"}', run_at => now() + interval '1 hour');
SELECT conveyor.enqueue('tap_tn', '{"url": "no tenant"}');
-- acme's first job finishes: it moves to conveyor.job_history and must stay visible there.
SELECT conveyor.ack(job_id, true) FROM conveyor.dequeue('tap_tn', 'w1');
SELECT conveyor.enqueue('tap_tn', '{"tenant": "globex", "url": "g2"}');
\o
SELECT is((SELECT count(*)::int FROM conveyor.job_history WHERE job_id = :'acme_1'), 1, 'acme''s first job is in the history');

-- ---- what a tenant sees ---------------------------------------------------------------------------------
SET SESSION AUTHORIZATION tap_tn_acme;
SELECT results_eq($$ SELECT payload->>'url', status FROM tap_tn.jobs ORDER BY 1 $$,
                  $$ VALUES ('a1', 'completed'), ('a2', 'scheduled') $$, 'acme sees its own jobs, live and finished, and only those');
SELECT is((SELECT count(*)::int FROM tap_tn.jobs WHERE payload->>'tenant' = 'globex' OR payload->>'tenant' IS NULL), 0,
          'asking for globex''s jobs (or jobs of no tenant) finds none');
SELECT is((SELECT count(*)::int FROM tap_tn.jobs WHERE job_id <> :'acme_1'), 1, 'nor does a filter on ids');
-- A function of acme's own, cheaper than the view's filter, that fails on any row not acme's: the
-- barrier evaluates it only on the rows the view lets through.
CREATE FUNCTION pg_temp.peek(p jsonb) RETURNS boolean LANGUAGE plpgsql IMMUTABLE COST 0.0000001 AS $$
BEGIN
    IF p->>'tenant' IS DISTINCT FROM 'acme' THEN RAISE EXCEPTION 'peeked at %', p; END IF;
    RETURN true;
END $$;
SELECT lives_ok($$ SELECT * FROM tap_tn.jobs WHERE pg_temp.peek(payload) $$,
                'a leaky function in WHERE sees only acme''s rows through the security_barrier view');
SELECT throws_like($$ SELECT * FROM tap_tn.jobs_leaky WHERE pg_temp.peek(payload) $$, 'peeked at %',
                   'without the barrier it sees another tenant''s payload (so the check above can fail)');
SELECT throws_ok($$ SELECT * FROM conveyor.jobs $$, '42501', NULL, 'acme cannot read conveyor.jobs');
SELECT throws_ok($$ SELECT * FROM conveyor.job_history $$, '42501', NULL, 'nor conveyor.job_history');
SELECT throws_ok(format('SELECT conveyor.get_job(%L)', :'acme_1'), '42501', NULL,
                 'nor call conveyor''s readers: get_job serves any job id, so tenants get no conveyor role');
SELECT throws_ok($$ SELECT * FROM tap_tn.tenant_roles $$, '42501', NULL, 'nor read or change the tenant map');
SELECT throws_ok($$ UPDATE tap_tn.jobs SET payload = '{}' $$, '55000', NULL, 'nor write through the view (a UNION is not updatable)');
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION tap_tn_globex;
SELECT results_eq($$ SELECT payload->>'url' FROM tap_tn.jobs ORDER BY 1 $$, $$ VALUES ('g1'), ('g2') $$,
                  'globex sees its own two jobs');
RESET SESSION AUTHORIZATION;

SELECT ok(NOT pg_has_role('tap_tn_app', 'conveyor_reader', 'MEMBER'),
          'the view''s owner needs no conveyor role, only SELECT on the tables it reads');

SELECT * FROM finish();
ROLLBACK;

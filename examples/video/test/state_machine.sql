-- update_job_status: every one of the 36 (from, to) pairs, allowed or refused as status_transitions says.
BEGIN;
SELECT plan(6);

-- A job brought to status s along allowed transitions.
CREATE FUNCTION pg_temp.job_in(s text) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    j uuid := (video.create_job(p_client_ip => '192.0.2.1') ->> 'job_id')::uuid;
BEGIN
    IF s IN ('processing', 'uploading', 'completed') THEN PERFORM video.update_job_status(j, 'processing'); END IF;
    IF s = 'uploading' THEN PERFORM video.update_job_status(j, 'uploading'); END IF;
    IF s = 'completed' THEN PERFORM video.update_job_status(j, 'completed'); END IF;
    IF s = 'failed' THEN PERFORM video.update_job_status(j, 'failed', 'bad request', 'INVALID_REQUEST'); END IF;
    IF s = 'cancelled' THEN PERFORM video.update_job_status(j, 'cancelled'); END IF;
    RETURN j;
END $$;
-- 'ok' or the SQLSTATE of update_job_status(from -> to).
CREATE FUNCTION pg_temp.try(f text, t text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    j uuid := pg_temp.job_in(f);
BEGIN
    IF (SELECT status FROM video.jobs WHERE id = j) <> f THEN
        RETURN 'setup reached ' || (SELECT status FROM video.jobs WHERE id = j);
    END IF;
    PERFORM video.update_job_status(j, t, CASE WHEN t IN ('failed', 'pending') THEN 'why' END, CASE WHEN t = 'failed' THEN 'TEST' END);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
CREATE TEMP TABLE outcome AS
SELECT f, t, pg_temp.try(f, t) AS result
FROM unnest('{pending,processing,uploading,completed,failed,cancelled}'::text[]) f,
     unnest('{pending,processing,uploading,completed,failed,cancelled}'::text[]) t;

SELECT is(count(*), 36::bigint, '36 pairs tried') FROM outcome;
SELECT results_eq($$SELECT f, t FROM outcome WHERE result = 'ok' ORDER BY 1, 2$$,
                  $$SELECT from_status, to_status FROM video.status_transitions ORDER BY 1, 2$$,
                  'exactly the 11 transitions of status_transitions are allowed');
SELECT is(count(*), 25::bigint, 'the 25 others, same-status ones and every way out of a final status included, are refused with 55000')
FROM outcome WHERE result = '55000';
SELECT is(count(*), 0::bigint, 'no other outcome') FROM outcome WHERE result NOT IN ('ok', '55000');
SELECT throws_ok($$SELECT video.update_job_status(pg_temp.job_in('completed'), 'processing')$$, '55000',
    NULL, 'completed -> processing: refused');
SELECT is((SELECT array_agg(DISTINCT to_status ORDER BY to_status) FROM video.status_transitions WHERE from_status = 'processing'),
          '{cancelled,completed,failed,pending,uploading}', 'from processing: cancelled, completed, failed, pending (retry), uploading');

SELECT * FROM finish();
ROLLBACK;

-- Every function of the extension has a decided role: the least of conveyor_reader < conveyor_worker
-- < conveyor_admin that may call it (README, "Roles and privileges", lists the same). A function added
-- without a decision fails here.
BEGIN;
SELECT plan(5);

CREATE TEMP TABLE tap_pm_decided (name text PRIMARY KEY, least_role text NOT NULL);
INSERT INTO tap_pm_decided VALUES
    -- readers: ids, metrics, job and entity views, cost and quota reports, snapshot series
    ('uuid_v7', 'conveyor_reader'), ('uuid_v7_time', 'conveyor_reader'), ('metrics_delta', 'conveyor_reader'),
    ('get_job', 'conveyor_reader'), ('job_events', 'conveyor_reader'), ('queue_metrics', 'conveyor_reader'),
    ('list_queues', 'conveyor_reader'), ('entity_state', 'conveyor_reader'), ('entity_stats', 'conveyor_reader'),
    ('account_status', 'conveyor_reader'), ('ledger_verify', 'conveyor_reader'), ('cost_report', 'conveyor_reader'),
    ('quota_status', 'conveyor_reader'), ('quota_window', 'conveyor_reader'), ('quota_projection', 'conveyor_reader'),
    ('snapshot_series', 'conveyor_reader'),
    -- readers of the monitor: settings, events, worker issues, metrics, health
    ('settings', 'conveyor_reader'), ('get_setting', 'conveyor_reader'), ('events', 'conveyor_reader'),
    ('worker_issues', 'conveyor_reader'), ('worker_issue_stats', 'conveyor_reader'), ('metrics', 'conveyor_reader'),
    ('health', 'conveyor_reader'),
    -- workers: the queue, idempotency, leases and entity states, advisory locks, upserts, snapshots, costs
    ('enqueue', 'conveyor_worker'), ('enqueue_batch', 'conveyor_worker'), ('dequeue', 'conveyor_worker'),
    ('ack', 'conveyor_worker'), ('ack_many', 'conveyor_worker'), ('heartbeat', 'conveyor_worker'),
    ('release', 'conveyor_worker'), ('idempotency_begin', 'conveyor_worker'), ('idempotency_finish', 'conveyor_worker'),
    ('idempotency_release', 'conveyor_worker'), ('lock_acquire', 'conveyor_worker'), ('lock_heartbeat', 'conveyor_worker'),
    ('lock_release', 'conveyor_worker'), ('lock_check', 'conveyor_worker'), ('locks_cleanup', 'conveyor_worker'),
    ('entity_acquire', 'conveyor_worker'), ('entity_complete', 'conveyor_worker'), ('entity_fail', 'conveyor_worker'),
    ('entity_reset', 'conveyor_worker'), ('entity_inconsistencies', 'conveyor_worker'), ('advisory_key', 'conveyor_worker'),
    ('try_advisory_lock', 'conveyor_worker'), ('advisory_lock', 'conveyor_worker'), ('advisory_unlock', 'conveyor_worker'),
    ('advisory_unlock_all', 'conveyor_worker'), ('advisory_lock_held', 'conveyor_worker'),
    ('try_advisory_xact_lock', 'conveyor_worker'), ('advisory_xact_lock', 'conveyor_worker'),
    ('upsert', 'conveyor_worker'), ('upsert_counts', 'conveyor_worker'), ('snapshot', 'conveyor_worker'),
    ('snapshot_batch', 'conveyor_worker'), ('charge', 'conveyor_worker'), ('reserve', 'conveyor_worker'),
    ('settle', 'conveyor_worker'), ('release_reservation', 'conveyor_worker'), ('quota_consume', 'conveyor_worker'),
    ('rate_limit', 'conveyor_worker'),
    -- workers report issues and record metrics
    ('report_issue', 'conveyor_worker'), ('resolve_issue', 'conveyor_worker'), ('record_metric', 'conveyor_worker'),
    ('record_metrics', 'conveyor_worker'),
    -- admins: queue management and operator actions, maintenance, forced releases, accounts and quotas
    ('create_queue', 'conveyor_admin'), ('alter_queue', 'conveyor_admin'), ('drop_queue', 'conveyor_admin'),
    ('pause_queue', 'conveyor_admin'), ('resume_queue', 'conveyor_admin'), ('retry', 'conveyor_admin'),
    ('dead_letter', 'conveyor_admin'), ('cancel', 'conveyor_admin'), ('reap', 'conveyor_admin'), ('maintain', 'conveyor_admin'),
    ('lock_force_release', 'conveyor_admin'), ('account_create', 'conveyor_admin'), ('account_update', 'conveyor_admin'),
    ('quota_define', 'conveyor_admin'), ('set_setting', 'conveyor_admin'), ('aggregate_metrics', 'conveyor_admin'),
    -- the audit trail is for admins only (it shows every caller's arguments)
    ('audit', 'conveyor_admin'),
    -- no role: the trigger functions that tell backends their cached queue rows or settings changed
    ('queues_changed', 'none'), ('settings_changed', 'none');

CREATE TEMP VIEW tap_pm_actual AS
SELECT p.proname::text AS name, p.oid::regprocedure::text AS signature,
       CASE WHEN has_function_privilege('conveyor_reader', p.oid, 'EXECUTE') THEN 'conveyor_reader'
            WHEN has_function_privilege('conveyor_worker', p.oid, 'EXECUTE') THEN 'conveyor_worker'
            WHEN has_function_privilege('conveyor_admin', p.oid, 'EXECUTE') THEN 'conveyor_admin'
            ELSE 'none' END AS least_role
FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'conveyor';

SELECT is((SELECT array_agg(name ORDER BY name) FROM tap_pm_actual WHERE name NOT IN (SELECT name FROM tap_pm_decided)), NULL,
          'every function of the extension has a decided role');
SELECT is((SELECT array_agg(name ORDER BY name) FROM tap_pm_decided WHERE name NOT IN (SELECT name FROM tap_pm_actual)), NULL,
          'every decided function exists');
SELECT is((SELECT array_agg(a.signature || ': ' || a.least_role || ', decided ' || d.least_role ORDER BY a.signature)
           FROM tap_pm_actual a JOIN tap_pm_decided d USING (name) WHERE a.least_role <> d.least_role), NULL,
          'each function is executable from its decided role up, and not below');
SELECT is((SELECT array_agg(signature ORDER BY signature) FROM tap_pm_actual
           WHERE has_function_privilege('public', signature::regprocedure, 'EXECUTE')), NULL,
          'none is executable by PUBLIC');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p WHERE p.proname = 'boundary_selftest'), NULL,
          'the test-only boundary_selftest is not part of the installed extension');

SELECT * FROM finish();
ROLLBACK;

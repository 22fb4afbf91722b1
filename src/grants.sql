-- ---- privileges: nothing to PUBLIC; reader < worker < admin ---------------------------------------
DO $grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'conveyor'::regnamespace LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$grants$;

GRANT EXECUTE ON FUNCTION conveyor.uuid_v7(), conveyor.uuid_v7_time(uuid),
    conveyor.get_job(uuid), conveyor.job_events(uuid), conveyor.queue_metrics(text), conveyor.list_queues()
    TO conveyor_reader;
GRANT SELECT ON conveyor.queues TO conveyor_reader;
GRANT EXECUTE ON FUNCTION conveyor.entity_stats(), conveyor.entity_state(text, text) TO conveyor_reader;
GRANT SELECT ON conveyor.locks_view, conveyor.lock_events TO conveyor_reader;
GRANT EXECUTE ON FUNCTION
    conveyor.account_status(text), conveyor.ledger_verify(text),
    conveyor.cost_report(text, timestamptz, timestamptz, text),
    conveyor.quota_status(text), conveyor.quota_window(text, text, timestamptz),
    conveyor.quota_projection(bigint, bigint, timestamptz, timestamptz, timestamptz),
    conveyor.snapshot_series(text, text, timestamptz, timestamptz), conveyor.metrics_delta(jsonb, jsonb)
    TO conveyor_reader;

GRANT EXECUTE ON FUNCTION
    conveyor.enqueue(text, jsonb, text, text, int, timestamptz, text, int),
    conveyor.enqueue_batch(text, jsonb),
    conveyor.dequeue(text, text, int, int),
    conveyor.ack(uuid, boolean, text, jsonb, text),
    conveyor.ack_many(uuid[], boolean, text, text),
    conveyor.heartbeat(uuid, text, int),
    conveyor.release(uuid, text, int),
    conveyor.idempotency_begin(text, jsonb, int), conveyor.idempotency_finish(text, jsonb),
    conveyor.idempotency_release(text),
    conveyor.charge(text, text, numeric, int, jsonb, text, boolean),
    conveyor.reserve(text, numeric, int, text),
    conveyor.settle(uuid, numeric, text, int, jsonb),
    conveyor.release_reservation(uuid),
    conveyor.quota_consume(text, int, text, text),
    conveyor.rate_limit(text, int, int, int),
    conveyor.upsert(regclass, jsonb, text[], jsonb), conveyor.upsert_counts(regclass, jsonb, text[], jsonb),
    conveyor.snapshot(text, text, jsonb, timestamptz, text, text), conveyor.snapshot_batch(text, jsonb, text, text)
    TO conveyor_worker;

GRANT EXECUTE ON FUNCTION
    conveyor.lock_acquire(text, text, int, text, jsonb),
    conveyor.lock_heartbeat(text, text, bigint),
    conveyor.lock_release(text, text, bigint),
    conveyor.lock_check(text, bigint),
    conveyor.locks_cleanup(int),
    conveyor.entity_acquire(text, text, int, text, int),
    conveyor.entity_complete(text, text, jsonb),
    conveyor.entity_fail(text, text, text, boolean),
    conveyor.entity_reset(text, int),
    conveyor.entity_inconsistencies(),
    conveyor.advisory_key(text),
    conveyor.try_advisory_lock(text), conveyor.advisory_lock(text, int),
    conveyor.advisory_unlock(text), conveyor.advisory_unlock_all(text), conveyor.advisory_lock_held(text),
    conveyor.try_advisory_xact_lock(text), conveyor.advisory_xact_lock(text, int)
    TO conveyor_worker;

GRANT EXECUTE ON FUNCTION
    conveyor.create_queue(text, jsonb), conveyor.alter_queue(text, jsonb), conveyor.drop_queue(text, boolean),
    conveyor.pause_queue(text), conveyor.resume_queue(text),
    conveyor.retry(uuid, int), conveyor.dead_letter(uuid, text), conveyor.cancel(uuid, text),
    conveyor.reap(text), conveyor.maintain(),
    conveyor.lock_force_release(text),
    conveyor.account_create(text, numeric, text, boolean, jsonb),
    conveyor.account_update(text, numeric, text, boolean, jsonb, boolean),
    conveyor.quota_define(text, bigint, text, text, jsonb)
    TO conveyor_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA conveyor TO conveyor_admin;

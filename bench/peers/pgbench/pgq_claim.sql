-- PgQ: one consumer takes the next batch (the events between two ticks), reads its events and
-- finishes it, in one transaction. PgQ has no lease: the consumer's position moves at finish_batch.
-- The fill ticks after every event (queue pgq_single) or every 100 (pgq_many), so a batch is 1 or 100 events.
BEGIN;
SELECT coalesce(pgq.next_batch(:queue::text, 'bench'), 0) AS bid \gset
\if :bid > 0
SELECT ev_id, ev_data FROM pgq.get_batch_events(:bid::bigint);
SELECT pgq.finish_batch(:bid::bigint);
\endif
COMMIT;

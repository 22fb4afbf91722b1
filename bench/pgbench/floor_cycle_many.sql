-- d. floor: claim up to 100 pending jobs with FOR UPDATE SKIP LOCKED, then delete them.
WITH c AS (SELECT id FROM floor.jobs WHERE queue = :queue::text AND status = 'pending'
           ORDER BY priority DESC, run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED),
     u AS (UPDATE floor.jobs f SET status = 'running', worker_id = 'bench-' || :client_id::text,
                  attempt = f.attempt + 1, lease_until = now() + interval '5 minutes'
           FROM c WHERE f.id = c.id RETURNING f.id)
SELECT array_agg(id)::text AS ids FROM u \gset
DELETE FROM floor.jobs WHERE id = ANY(:ids::bigint[]);

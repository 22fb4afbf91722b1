-- c. floor: claim the first pending job with FOR UPDATE SKIP LOCKED, then delete it.
UPDATE floor.jobs SET status = 'running', worker_id = 'bench-' || :client_id::text, attempt = attempt + 1,
       lease_until = now() + interval '5 minutes'
 WHERE id = (SELECT id FROM floor.jobs WHERE queue = :queue::text AND status = 'pending'
             ORDER BY priority DESC, run_at, id FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING id AS jid \gset
DELETE FROM floor.jobs WHERE id = :jid::bigint;

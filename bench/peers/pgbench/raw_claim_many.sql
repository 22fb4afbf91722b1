-- raw floor: take up to 100 jobs and remove them in one statement, one transaction (no lease).
DELETE FROM raw.jobs WHERE id = ANY (ARRAY(SELECT id FROM raw.jobs ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED))
RETURNING id, payload;

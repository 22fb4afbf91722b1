-- raw floor: take one job and remove it in one statement, one transaction (no lease).
DELETE FROM raw.jobs WHERE id = (SELECT id FROM raw.jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, payload;

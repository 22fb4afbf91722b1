-- g. plain SQL: the same lease cycle against a minimal table: one upsert that inserts, refreshes the
-- owner's lease or takes over a stale one (token from a sequence), then a delete by key and owner.
INSERT INTO floor.locks AS l (key, owner, token, ttl_seconds, acquired_at, heartbeat_at)
VALUES (CASE WHEN :hot::int = 1 THEN 'bench-hot' ELSE 'bench-key-' || :client_id::text END, 'bench-' || :client_id::text,
        nextval('floor.lock_token_seq'), 30, clock_timestamp(), clock_timestamp())
ON CONFLICT (key) DO UPDATE SET
    token = CASE WHEN l.owner = excluded.owner THEN l.token ELSE excluded.token END,
    acquired_at = CASE WHEN l.owner = excluded.owner THEN l.acquired_at ELSE excluded.acquired_at END,
    owner = excluded.owner, ttl_seconds = excluded.ttl_seconds, heartbeat_at = excluded.heartbeat_at
WHERE l.owner = excluded.owner OR l.heartbeat_at + make_interval(secs => l.ttl_seconds) < clock_timestamp()
RETURNING token;
DELETE FROM floor.locks WHERE key = CASE WHEN :hot::int = 1 THEN 'bench-hot' ELSE 'bench-key-' || :client_id::text END
                          AND owner = 'bench-' || :client_id::text;

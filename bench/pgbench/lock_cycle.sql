-- g. One lease cycle: acquire, then release (two transactions, as a worker does). hot = 1: every
-- client contends for one key (most acquisitions find it held and return NULL; their release is a
-- no-op false); hot = 0: each client has its own key.
SELECT conveyor.lock_acquire(CASE WHEN :hot::int = 1 THEN 'bench-hot' ELSE 'bench-key-' || :client_id::text END, 'bench-' || :client_id::text, 30);
SELECT conveyor.lock_release(CASE WHEN :hot::int = 1 THEN 'bench-hot' ELSE 'bench-key-' || :client_id::text END, 'bench-' || :client_id::text);

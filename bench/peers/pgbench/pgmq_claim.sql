-- pgmq: read one message with a 30 s visibility timeout, then delete it (two transactions).
SELECT coalesce(min(msg_id), 0) AS id FROM pgmq.read(:queue::text, 30, 1) \gset
SELECT pgmq.delete(:queue::text, :id::bigint);

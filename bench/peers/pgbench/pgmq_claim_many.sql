-- pgmq: read up to 100 messages with a 30 s visibility timeout, then delete them (two transactions).
SELECT coalesce(array_agg(msg_id), '{}')::text AS ids FROM pgmq.read(:queue::text, 30, 100) \gset
SELECT count(*) FROM pgmq.delete(:queue::text, :ids::bigint[]);

-- pgmq: 100 messages per call, pgmq.send_batch (-D batch=<jsonb array of {"payload": ...}>).
SELECT count(*) FROM pgmq.send_batch(:queue::text, ARRAY(SELECT e -> 'payload' FROM jsonb_array_elements(:batch::jsonb) AS e));

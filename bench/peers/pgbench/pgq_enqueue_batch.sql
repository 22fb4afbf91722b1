-- PgQ: 100 events in one statement and transaction (PgQ has no batch insert: one insert_event each).
SELECT count(pgq.insert_event(:queue::text, 'job', (e -> 'payload')::text)) FROM jsonb_array_elements(:batch::jsonb) AS e;

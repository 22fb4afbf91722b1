-- b. floor: INSERT ... SELECT from jsonb_array_elements of the same batch parameter.
INSERT INTO floor.jobs (queue, payload)
SELECT :queue::text, e -> 'payload' FROM jsonb_array_elements(:batch::jsonb) AS e;

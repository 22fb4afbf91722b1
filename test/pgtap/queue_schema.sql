-- Payload schemas and queue metadata: the options payload_schema, display_name, description and
-- metadata of create_queue and alter_queue, the check at enqueue and enqueue_batch, validate_payload
-- and who may call it.
BEGIN;
SELECT plan(64);

SELECT conveyor.create_queue('tap_qs', '{"payload_schema": {"type": "object", "required": ["url"],
    "properties": {"url": {"type": "string", "pattern": "^https?://"}, "depth": {"type": "integer", "minimum": 0},
                   "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}},
                   "a/b~c": {"$ref": "#/definitions/short"}},
    "definitions": {"short": {"type": "string", "maxLength": 2}}},
    "display_name": "Pages", "description": "Pages to fetch.", "metadata": {"owner": "crawler", "tier": 2}}') \gset

-- ---- the options as list_queues shows them ---------------------------------------------------------

SELECT is((SELECT options->'payload_schema'->'required' FROM conveyor.list_queues() WHERE queue = 'tap_qs'),
    '["url"]'::jsonb, 'list_queues shows payload_schema');
SELECT is((SELECT options->>'display_name' FROM conveyor.list_queues() WHERE queue = 'tap_qs'), 'Pages',
    'list_queues shows display_name');
SELECT is((SELECT options->>'description' FROM conveyor.list_queues() WHERE queue = 'tap_qs'), 'Pages to fetch.',
    'list_queues shows description');
SELECT is((SELECT options->'metadata' FROM conveyor.list_queues() WHERE queue = 'tap_qs'),
    '{"owner": "crawler", "tier": 2}'::jsonb, 'list_queues shows metadata');

-- ---- enqueue checks payloads -------------------------------------------------------------------------

SELECT lives_ok($$ SELECT conveyor.enqueue('tap_qs', '{"url": "https://a.example", "depth": 2, "tags": ["x"]}') $$,
    'a payload that matches the schema is enqueued');
SELECT lives_ok($$ SELECT conveyor.enqueue('tap_qs', '{"url": "http://b.example", "depth": 1.0}') $$,
    '1.0 is an integer, as JSON Schema counts');
SELECT throws_ok($$ SELECT conveyor.enqueue('tap_qs', '{"url": "ftp://c.example"}') $$,
    '22023', 'payload does not match the payload_schema of queue "tap_qs" at "/url"',
    'a payload that fails a pattern raises 22023 naming the pointer');
SELECT throws_ok($$ SELECT conveyor.enqueue('tap_qs', '{"depth": 1}') $$,
    '22023', 'payload does not match the payload_schema of queue "tap_qs" at ""',
    'a missing required property is a violation at the root');
SELECT throws_ok($$ SELECT conveyor.enqueue('tap_qs', '{"url": "http://d", "a/b~c": "long"}') $$,
    '22023', 'payload does not match the payload_schema of queue "tap_qs" at "/a~1b~0c"',
    'the pointer escapes / and ~ (RFC 6901), and $ref into definitions is followed');
SELECT throws_ok($$ SELECT conveyor.enqueue_batch('tap_qs', '[{"payload": {"url": "http://e"}},
                                                             {"payload": {"url": "http://f", "tags": ["ok", "long"]}}]') $$,
    '22023', 'jobs[1]: payload does not match the payload_schema of queue "tap_qs" at "/tags/1"',
    'enqueue_batch names the element and the pointer');
SELECT is((SELECT count(*)::int FROM conveyor.jobs WHERE payload->>'url' = 'http://e'), 0,
    'a batch with a failing element enqueues none of its jobs');
SELECT lives_ok($$ SELECT conveyor.enqueue_batch('tap_qs', '[{"payload": {"url": "http://g"}}, {"payload": {"url": "https://h", "depth": 0}}]') $$,
    'enqueue_batch accepts payloads that match');
SELECT throws_ok($$ SELECT conveyor.enqueue('tap_qs', jsonb_build_object('url', 'http://' || repeat('x', 1001))) $$,
    '22023', 'payload does not match the payload_schema of queue "tap_qs" at "/url"',
    'under a schema with patterns a string over 1000 bytes is refused');

SELECT throws_ok($$ SELECT conveyor.enqueue('tap_qs', jsonb_build_object('url', 'http://k', 'x', (repeat('[', 128) || repeat(']', 128))::jsonb)) $$,
    '22023', NULL, 'a payload nested deeper than 128 levels is refused under a schema');
SELECT lives_ok($$ SELECT conveyor.enqueue('tap_qs', jsonb_build_object('url', 'http://k', 'x', (repeat('[', 127) || repeat(']', 127))::jsonb)) $$,
    'one nested 128 levels is checked');

-- ---- alter_queue changes and keeps the schema ------------------------------------------------------

SELECT conveyor.alter_queue('tap_qs', '{"lease_seconds": 60}') \gset
SELECT throws_ok($$ SELECT conveyor.enqueue('tap_qs', '{"url": "ftp://i"}') $$, '22023', NULL,
    'alter_queue of another option keeps the schema');
SELECT is((SELECT options->>'display_name' FROM conveyor.list_queues() WHERE queue = 'tap_qs'), 'Pages',
    'and keeps display_name');
SELECT conveyor.alter_queue('tap_qs', '{"payload_schema": {"type": "object", "properties": {"url": {"type": "string"}}}}') \gset
SELECT lives_ok($$ SELECT conveyor.enqueue('tap_qs', '{"url": "ftp://j"}') $$,
    'after alter_queue the new schema applies at once in the session');
SELECT throws_ok($$ SELECT conveyor.enqueue('tap_qs', '{"url": 5}') $$, '22023', NULL,
    'and refuses what the new schema refuses');
SELECT conveyor.alter_queue('tap_qs', '{"payload_schema": null, "display_name": null, "metadata": null}') \gset
SELECT lives_ok($$ SELECT conveyor.enqueue('tap_qs', '{"url": 5}') $$, 'payload_schema null removes the schema');
SELECT is((SELECT options - 'lease_seconds' - 'max_attempts' - 'backoff_base_seconds' - 'backoff_max_seconds'
                  - 'job_types' - 'required_keys' - 'retention_days' - 'notify' - 'event_trail' - 'dead_retention_days' - 'status_notify' - 'stats_retention_days'
           FROM conveyor.list_queues() WHERE queue = 'tap_qs'),
    '{"payload_schema": null, "display_name": null, "description": "Pages to fetch.", "metadata": null}'::jsonb,
    'null clears display_name and metadata; description stays');

-- ---- schemas that are not valid draft 7 are refused ---------------------------------------------------

SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"payload_schema": {"type": "strin"}}') $$,
    '22023', 'option payload_schema is not a valid JSON Schema (draft 7) at "/type"', 'an unknown type name raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"payload_schema": {"properties": {"a": {"minLength": -1}}}}') $$,
    '22023', 'option payload_schema is not a valid JSON Schema (draft 7) at "/properties/a/minLength"',
    'a negative minLength raises 22023 naming where');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"payload_schema": {"enum": []}}') $$,
    '22023', NULL, 'an empty enum raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"payload_schema": {"pattern": "(("}}') $$,
    '22023', 'option payload_schema holds an invalid regular expression "((" at "/pattern"', 'a bad pattern raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"payload_schema": {"$ref": "http://example.com/s.json"}}') $$,
    '22023', 'option payload_schema is not a usable JSON Schema (draft 7)', 'a remote $ref raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"payload_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema"}}') $$,
    '22023', NULL, 'a $schema of another draft raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"payload_schema": "object"}') $$,
    '22023', NULL, 'a schema that is not an object raises 22023');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_qs', '{"payload_schema": {"required": "url"}}') $$,
    '22023', NULL, 'alter_queue refuses a bad schema too');

-- ---- patterns run on PostgreSQL's regular expression engine: hostile ones end in errors, not crashes ----

SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', jsonb_build_object('payload_schema', jsonb_build_object('pattern', repeat('a', 60000)))) $$,
    '22023', NULL, 'a pattern too long to compile raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', jsonb_build_object('payload_schema',
                     jsonb_build_object('pattern', repeat('(', 15000) || 'a' || repeat(')', 15000)))) $$,
    '22023', NULL, 'a pattern nested 15000 groups deep raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"payload_schema": {"pattern": "(a{1000}){1000}"}}') $$,
    '22023', NULL, 'a huge repetition count raises 22023');
SELECT conveyor.create_queue('tap_qs_re', jsonb_build_object('payload_schema', jsonb_build_object('properties', jsonb_build_object(
    'nested', jsonb_build_object('pattern', '^' || repeat('(', 3000) || 'a' || repeat(')', 3000) || '*$'),
    'ambiguous', jsonb_build_object('pattern', '^(a|a)*$'))))) \gset
SELECT lives_ok($$ SELECT conveyor.enqueue('tap_qs_re', jsonb_build_object('nested', repeat('a', 1000))) $$,
    'a pattern of 3000 nested groups matches a 1000-byte string');
SELECT throws_ok($$ SELECT conveyor.enqueue('tap_qs_re', jsonb_build_object('ambiguous', repeat('a', 999) || 'b')) $$,
    '22023', 'payload does not match the payload_schema of queue "tap_qs_re" at "/ambiguous"',
    'an ambiguous pattern fails on a long non-matching string without backtracking forever');
SELECT conveyor.create_queue('tap_qs_pp', '{"payload_schema": {"properties": {"id": {"type": "integer"}},
    "patternProperties": {"^x-": {"type": "string"}, "^x-n": {"maxLength": 2}}, "additionalProperties": false,
    "propertyNames": {"pattern": "^[a-z-]+$"}}}') \gset
SELECT is((SELECT valid FROM conveyor.validate_payload('tap_qs_pp', '{"id": 1, "x-a": "s", "x-n": "ab"}')), true,
    'keys matched by patternProperties are not additional properties');
SELECT is((SELECT errors FROM conveyor.validate_payload('tap_qs_pp', '{"x-n": "abc"}')),
    '[{"pointer": "/x-n", "message": "String should be no more than 2 characters in length."}]'::jsonb,
    'each matching pattern''s subschema checks the value');
SELECT is((SELECT valid FROM conveyor.validate_payload('tap_qs_pp', '{"Id": 1}')), false,
    'propertyNames applies its pattern to the keys');

SELECT conveyor.create_queue('tap_qs_names', '{"payload_schema": {"propertyNames": {"maxLength": 3},
    "properties": {"at": {"format": "date-time"}}}}') \gset
SELECT throws_ok($$ SELECT conveyor.enqueue('tap_qs_names', '{"abcd": 1}') $$,
    '22023', 'payload does not match the payload_schema of queue "tap_qs_names" at ""',
    'a failing propertyNames refuses the payload though valijson gives no message');
SELECT lives_ok($$ SELECT conveyor.enqueue('tap_qs_names', '{"at": 5}') $$, 'format constrains strings only');
SELECT is((SELECT valid FROM conveyor.validate_payload('tap_qs_names', '{"at": "2024-01-02T03:04:05Z", "abc": 1}')), true,
    'a date-time string and short keys pass');

-- ---- schemas that reach themselves without descending are refused; a long check can be cancelled ----

SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"payload_schema": {"$ref": "#"}}') $$,
    '22023', 'option payload_schema refers to itself at "" without descending into the payload', 'a $ref to itself raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"payload_schema": {"definitions": {"a": {"$ref": "#/definitions/b"},
                     "b": {"$ref": "#/definitions/a"}}, "allOf": [{"$ref": "#/definitions/a"}]}}') $$,
    '22023', 'option payload_schema refers to itself at "/definitions/a" without descending into the payload',
    'a cycle of $refs raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"payload_schema": {"anyOf": [{"type": "string"}, {"not": {"$ref": "#"}}]}}') $$,
    '22023', 'option payload_schema refers to itself at "" without descending into the payload',
    'a cycle through anyOf and not raises 22023');
SELECT conveyor.create_queue('tap_qs_tree', '{"payload_schema": {"required": ["v"], "properties": {"child": {"$ref": "#"}}}}') \gset
SELECT is((SELECT valid FROM conveyor.validate_payload('tap_qs_tree', '{"v": 1, "child": {"v": 2, "child": {"v": 3}}}')), true,
    'a schema may reach itself through properties');
SELECT conveyor.create_queue('tap_qs_slow', jsonb_build_object('payload_schema', jsonb_build_object('$ref', '#/definitions/d0',
    'definitions', (SELECT jsonb_object_agg('d' || i, jsonb_build_object('allOf', jsonb_build_array(
        jsonb_build_object('$ref', '#/definitions/d' || (i + 1)), jsonb_build_object('$ref', '#/definitions/d' || (i + 1)))))
     FROM generate_series(0, 39) i) || '{"d40": {"type": "object"}}'))) \gset
-- throws_ok cannot catch 57014 (plpgsql's OTHERS leaves it out): a handler names it.
CREATE TEMP TABLE tap_qs_slow_outcome (sqlstate text);
SET LOCAL statement_timeout = '300ms';
DO $$
BEGIN
    PERFORM conveyor.enqueue('tap_qs_slow', '{}');
    INSERT INTO tap_qs_slow_outcome VALUES ('finished');
EXCEPTION WHEN query_canceled THEN
    INSERT INTO tap_qs_slow_outcome VALUES (SQLSTATE);
END $$;
RESET statement_timeout;
SELECT is((SELECT sqlstate FROM tap_qs_slow_outcome), '57014', 'a check that would take 2^40 steps stops at statement_timeout');

-- ---- metadata options are checked ----------------------------------------------------------------

SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"display_name": ""}') $$,
    '22023', 'option display_name must be 1 to 200 characters, not 0', 'an empty display_name raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', jsonb_build_object('display_name', repeat('é', 201))) $$,
    '22023', 'option display_name must be 1 to 200 characters, not 201', 'display_name counts characters, at most 200');
SELECT lives_ok($$ SELECT conveyor.create_queue('tap_qs_long', jsonb_build_object('display_name', repeat('é', 200),
                                                                               'description', repeat('d', 4000))) $$,
    'display_name of 200 characters and description of 4000 are accepted');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', jsonb_build_object('description', repeat('d', 4001))) $$,
    '22023', 'option description must be 1 to 4000 characters, not 4001', 'a longer description raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"description": 5}') $$,
    '22023', 'option description must be a string or null, not number', 'a description that is not a string raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', '{"metadata": ["a"]}') $$,
    '22023', 'option metadata must be a JSON object or null, not array', 'metadata that is not an object raises 22023');
SELECT throws_ok($$ SELECT conveyor.create_queue('tap_qs_bad', jsonb_build_object('metadata', jsonb_build_object('k', repeat('m', 17000)))) $$,
    '22023', NULL, 'metadata over 16384 bytes raises 22023');
SELECT is((SELECT count(*)::int FROM conveyor.queues WHERE name = 'tap_qs_bad'), 0, 'no refused create_queue left a queue');

-- ---- validate_payload ----------------------------------------------------------------------------------

SELECT conveyor.create_queue('tap_qs_v', '{"required_keys": ["id"], "payload_schema": {"type": "object",
    "properties": {"id": {"type": "integer"}, "name": {"type": "string", "maxLength": 3}}, "additionalProperties": false}}') \gset
SELECT is((SELECT row(valid, errors)::text FROM conveyor.validate_payload('tap_qs_v', '{"id": 1, "name": "abc"}')),
    row(true, '[]'::jsonb)::text, 'a matching payload is valid with no errors');
SELECT is((SELECT errors FROM conveyor.validate_payload('tap_qs_v', '{"id": "1", "name": "abcd"}')),
    '[{"pointer": "/id", "message": "Value type not permitted by ''type'' constraint."},
      {"pointer": "/name", "message": "String should be no more than 3 characters in length."}]'::jsonb,
    'validate_payload lists every violation with its pointer');
SELECT is((SELECT row(valid, jsonb_array_length(errors))::text FROM conveyor.validate_payload('tap_qs_v', '{"x": 1}')),
    row(false, 2)::text, 'a missing required key and an extra property are both reported');
SELECT is((SELECT errors FROM conveyor.validate_payload('tap_qs_v', '[1]')),
    '[{"pointer": "", "message": "The payload must be a JSON object."}]'::jsonb, 'a payload that is not an object');
SELECT is((SELECT count(*)::int FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = 'tap_qs_v'), 0,
    'validate_payload enqueues nothing');
SELECT is((SELECT valid FROM conveyor.validate_payload('tap_qs_long', '{"anything": [1, 2]}')), true,
    'a queue without a schema accepts any object');
SELECT throws_ok($$ SELECT * FROM conveyor.validate_payload('tap_qs_none', '{}') $$, '42704', NULL,
    'an unknown queue raises 42704');

-- ---- who may call validate_payload: readers and up ------------------------------------------------------

CREATE ROLE tap_qs_nobody NOLOGIN;
CREATE ROLE tap_qs_reader NOLOGIN IN ROLE conveyor_reader;
CREATE ROLE tap_qs_worker NOLOGIN IN ROLE conveyor_worker;
SET ROLE tap_qs_nobody;
SELECT throws_ok($$ SELECT * FROM conveyor.validate_payload('tap_qs_v', '{"id": 1}') $$, '42501', NULL,
    'a role without conveyor''s roles may not call validate_payload');
SET ROLE tap_qs_reader;
SELECT is((SELECT valid FROM conveyor.validate_payload('tap_qs_v', '{"id": 1}')), true, 'a reader may call validate_payload');
SELECT throws_ok($$ SELECT conveyor.alter_queue('tap_qs_v', '{"payload_schema": null}') $$, '42501', NULL,
    'a reader may not change a payload_schema');
SET ROLE tap_qs_worker;
SELECT is((SELECT valid FROM conveyor.validate_payload('tap_qs_v', '{"id": "x"}')), false, 'a worker may call validate_payload');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

-- Payload schemas and queue metadata: every message, with its SQLSTATE.
\set SHOW_CONTEXT never
SELECT conveyor.create_queue('schema_errs', '{"payload_schema": {"type": "object", "required": ["url"],
    "properties": {"url": {"type": "string", "pattern": "^https?://"}, "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}}}}}');

-- Schemas that are not valid JSON Schema draft 7
SELECT conveyor.create_queue('bad', '{"payload_schema": {"type": "strin"}}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"payload_schema": {"properties": {"a": {"maxLength": "3"}}}}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"payload_schema": {"patternProperties": {"[": {}}}}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"payload_schema": {"$ref": "#/definitions/missing"}}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"payload_schema": {"$schema": "http://json-schema.org/draft-04/schema#"}}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"payload_schema": [{"type": "object"}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"payload_schema": true}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', jsonb_build_object('payload_schema', jsonb_build_object('description', repeat('x', 70000))));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', jsonb_build_object('payload_schema', (repeat('{"not": ', 130) || '{}' || repeat('}', 130))::jsonb));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', jsonb_build_object('payload_schema', jsonb_build_object('pattern', repeat('(', 15000) || 'a' || repeat(')', 15000))));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"payload_schema": {"pattern": "a{99999}"}}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"payload_schema": {"definitions": {"a": {"allOf": [{"$ref": "#/definitions/b"}]}, "b": {"not": {"$ref": "#/definitions/a"}}}}}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.alter_queue('schema_errs', '{"payload_schema": {"minimum": "0"}}');
\echo :LAST_ERROR_SQLSTATE

-- Metadata options
SELECT conveyor.create_queue('bad', '{"display_name": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', jsonb_build_object('display_name', repeat('n', 201)));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"description": ""}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', '{"metadata": "team a"}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('bad', jsonb_build_object('metadata', jsonb_build_object('notes', repeat('m', 20000))));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS queues_named_bad FROM conveyor.list_queues() WHERE queue = 'bad';

-- Payloads that do not match
SELECT count(*) FROM conveyor.enqueue('schema_errs', '{"url": "ftp://example.com"}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM conveyor.enqueue('schema_errs', '{"tags": []}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM conveyor.enqueue_batch('schema_errs', '[{"payload": {"url": "http://a"}}, {"payload": {"url": "http://b"}},
    {"payload": {"url": "http://c", "tags": ["abc", "abcd"]}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM conveyor.enqueue('schema_errs', jsonb_build_object('url', 'https://' || repeat('p', 1000)));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM conveyor.enqueue('schema_errs', jsonb_build_object('url', 'https://a', 'deep',
    (repeat('[', 130) || repeat(']', 130))::jsonb));
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('schema_names', '{"payload_schema": {"propertyNames": {"pattern": "^[a-z]+$"}}}');
SELECT count(*) FROM conveyor.enqueue('schema_names', '{"URL": "http://a"}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.validate_payload('schema_names', '{"URL": "http://a"}');
SELECT conveyor.drop_queue('schema_names');
SELECT count(*) AS jobs_enqueued FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE q.name = 'schema_errs';

-- validate_payload
SELECT * FROM conveyor.validate_payload('schema_errs', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.validate_payload('no_such_queue', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM conveyor.validate_payload('schema_errs', '{"url": 1, "tags": ["abcd", 2]}');

SELECT conveyor.drop_queue('schema_errs');

-- A database still at 0.2, served by this library until ALTER EXTENSION conveyor UPDATE: its queues
-- table lacks the new columns, so the new options are refused and the old ones work.
CREATE DATABASE conveyor_regress_at_02;
\c conveyor_regress_at_02
\set SHOW_CONTEXT never
CREATE EXTENSION conveyor VERSION '0.2';
SELECT conveyor.create_queue('at_02', '{"metadata": {"team": "a"}}');
\echo :LAST_ERROR_SQLSTATE
SELECT conveyor.create_queue('at_02', '{"lease_seconds": 60}');
SELECT count(*) FROM conveyor.enqueue('at_02', '{"n": 1}');
SELECT options ? 'metadata' AS shows_metadata FROM conveyor.list_queues();
ALTER EXTENSION conveyor UPDATE;
SELECT conveyor.alter_queue('at_02', '{"metadata": {"team": "a"}, "payload_schema": {"required": ["m"]}}');
SELECT count(*) FROM conveyor.enqueue('at_02', '{"n": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT options->'metadata' AS metadata FROM conveyor.list_queues();
\c conveyor_regress
DROP DATABASE conveyor_regress_at_02;

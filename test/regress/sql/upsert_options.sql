-- The options batch writers use: on_duplicate, returning, mode, on_error; what a caller sees of each,
-- and the messages for their bad values.
\set VERBOSITY default
CREATE TABLE reg_tracks (track_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, isrc text NOT NULL UNIQUE,
                         title text NOT NULL, plays bigint CHECK (plays >= 0), added_on date NOT NULL DEFAULT '2026-01-01');
-- bad option values: 22023 naming the option and what it allows
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"on_duplicate": "newest"}');
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"on_duplicate": true}');
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"mode": "merge"}');
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"mode": null}');
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"on_error": "ignore"}');
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"returning": "track_id"}');
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"returning": ["track_id", 7]}');
-- an unknown returning column: 42703, as PostgreSQL says it
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"returning": ["id"]}');
SELECT * FROM conveyor.upsert_counts('reg_tracks', '[]', '{isrc}', '{"returning": ["track_id"]}');
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"retrun": ["track_id"]}');
-- a repeated key without on_duplicate: the message says how to choose
SELECT * FROM conveyor.upsert('reg_tracks', '[{"isrc": "A1", "title": "a"}, {"isrc": "A1", "title": "b"}]', '{isrc}');
-- on_duplicate: the element kept is inserted, the other reported duplicate; returning gives the
-- generated id and the default
SELECT * FROM conveyor.upsert('reg_tracks', '[{"isrc": "A1", "title": "first"}, {"isrc": "B2", "title": "bee"},
                                              {"isrc": "A1", "title": "last"}]', '{isrc}',
                              '{"on_duplicate": "last", "returning": ["track_id", "title", "added_on"]}');
SELECT * FROM conveyor.upsert('reg_tracks', '[{"isrc": "C3", "title": "first"}, {"isrc": "C3", "title": "last"}]', '{isrc}',
                              '{"on_duplicate": "first", "returning": ["title"]}');
-- mode insert: existing rows untouched (exists), their stored row returned
SELECT * FROM conveyor.upsert('reg_tracks', '[{"isrc": "A1", "title": "changed"}, {"isrc": "D4", "title": "dee"}]', '{isrc}',
                              '{"mode": "insert", "returning": ["track_id", "title"]}');
-- mode update: missing rows not inserted
SELECT * FROM conveyor.upsert('reg_tracks', '[{"isrc": "A1", "plays": 5}, {"isrc": "Z9", "title": "zed"}]', '{isrc}',
                              '{"mode": "update"}');
-- on_error skip: each failing element reported with its SQLSTATE and message, the rest written
SELECT * FROM conveyor.upsert('reg_tracks', '[{"isrc": "A1", "plays": 6}, {"isrc": "B2", "plays": -1},
                                              {"isrc": "C3", "plays": "many"}, {"title": "no isrc"}, {"isrc": "E5"},
                                              {"isrc": "F6", "title": "eff", "genre": "x"}, "G7", {"isrc": "H8", "title": "aitch"}]',
                              '{isrc}', '{"on_error": "skip", "returning": ["track_id"]}');
SELECT * FROM conveyor.upsert_counts('reg_tracks', '[{"isrc": "A1", "plays": 7}, {"isrc": "B2", "plays": -1}, {"isrc": "Q0", "plays": 1},
                                                     {"isrc": "A1", "plays": 8}]', '{isrc}',
                                     '{"on_error": "skip", "mode": "update", "on_duplicate": "first"}');
SELECT track_id, isrc, title, plays, added_on FROM reg_tracks ORDER BY isrc;
-- touch_unchanged: a boolean, with touch_columns, not with mode 'insert'
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"touch_unchanged": "true", "touch_columns": ["added_on"]}');
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"touch_unchanged": true}');
SELECT * FROM conveyor.upsert('reg_tracks', '[]', '{isrc}', '{"touch_unchanged": true, "touch_columns": ["added_on"], "mode": "insert"}');
DROP TABLE reg_tracks;

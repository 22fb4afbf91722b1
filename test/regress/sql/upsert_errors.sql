-- What callers see when an upsert is refused. Nothing is ever written by a refused batch.
\set VERBOSITY default
CREATE TABLE reg_channels (channel_id text PRIMARY KEY, title text NOT NULL, subscribers bigint, country text,
                           created_at timestamptz NOT NULL DEFAULT '2026-01-01', updated_at timestamptz);
CREATE UNIQUE INDEX reg_channels_lower_title ON reg_channels (lower(title));
CREATE UNIQUE INDEX reg_channels_country_partial ON reg_channels (country) WHERE country IS NOT NULL;
CREATE TABLE reg_videos (video_id text PRIMARY KEY, channel_id text NOT NULL REFERENCES reg_channels, title text NOT NULL,
                         views bigint CHECK (views >= 0), published_at timestamptz);
CREATE VIEW reg_view AS SELECT * FROM reg_channels;
SELECT ord, key, action FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC1", "title": "One"}]', '{channel_id}');
-- rows: an array of objects, at most 10000
SELECT * FROM conveyor.upsert('reg_channels', '{"channel_id": "UC1"}', '{channel_id}');
SELECT * FROM conveyor.upsert('reg_channels', '"UC1"', '{channel_id}');
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC2", "title": "Two"}, ["UC3"]]', '{channel_id}');
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC2", "title": "Two"}, 42]', '{channel_id}');
SELECT * FROM conveyor.upsert_counts('reg_channels',
    (SELECT jsonb_agg(jsonb_build_object('channel_id', 'UC' || g, 'title', 't' || g)) FROM generate_series(1, 10001) g), '{channel_id}');
SELECT * FROM conveyor.upsert('reg_channels', NULL, '{channel_id}');
-- the target
SELECT * FROM conveyor.upsert('reg_nowhere', '[]', '{id}');
SELECT * FROM conveyor.upsert(0, '[]', '{id}');
SELECT * FROM conveyor.upsert('reg_view', '[]', '{channel_id}');
SELECT * FROM conveyor.upsert(NULL, '[]', '{id}');
-- key_columns
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{title}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{country}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id, title}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{handle}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id, channel_id}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', NULL);
-- keys in the elements
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC2", "title": "Two"}, {"title": "Three"}]', '{channel_id}');
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": null, "title": "Two"}]', '{channel_id}');
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC2", "title": "Two"}, {"channel_id": "UC3", "title": "Three"},
                                                {"channel_id": "UC2", "title": "Two again"}]', '{channel_id}');
SELECT * FROM conveyor.upsert('reg_videos', '[{"video_id": 7, "channel_id": "UC1", "title": "a"},
                                              {"video_id": "7", "channel_id": "UC1", "title": "b"}]', '{video_id}');
-- columns and values
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC2", "title": "Two", "handle": "@two"}]', '{channel_id}');
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC2", "title": "Two"}, {"channel_id": "UC3", "title": "Three", "subscribers": "1.2k"}]', '{channel_id}');
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC2", "title": "Two", "subscribers": 99999999999999999999}]', '{channel_id}');
SELECT * FROM conveyor.upsert('reg_videos', '[{"video_id": "v1", "channel_id": "UC1", "title": "a", "published_at": {"when": "today"}}]', '{video_id}');
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC2", "subscribers": 5}]', '{channel_id}');
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC2", "title": "ONE"}]', '{channel_id}');
SELECT * FROM conveyor.upsert('reg_videos', '[{"video_id": "v1", "channel_id": "UC1", "title": "a"},
                                              {"video_id": "v2", "channel_id": "UC9", "title": "b"}]', '{video_id}');
SELECT * FROM conveyor.upsert('reg_videos', '[{"video_id": "v1", "channel_id": "UC1", "title": "a", "views": -5}]', '{video_id}');
-- options
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"touch": ["updated_at"]}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '[]');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"touch_columns": ["refreshed_at"]}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"touch_columns": "updated_at"}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"touch_columns": ["channel_id"]}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"touch_columns": ["created_at"]}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"strict": "yes"}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"audit": 1}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"operation_id": ""}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"fence": "lease:UC1"}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"fence": {"key": "lease:UC1"}}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"fence": {"key": "lease:UC1", "token": 1.5}}');
SELECT * FROM conveyor.upsert('reg_channels', '[]', '{channel_id}', '{"fence": {"key": "lease:UC1", "token": 1, "owner": "w"}}');
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC1", "title": "fenced"}]', '{channel_id}',
                              '{"fence": {"key": "lease:UC1", "token": 1}}');
-- operation_id reused for other data
SELECT ord, action FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC1", "title": "One"}]', '{channel_id}', '{"operation_id": "op-1"}');
SELECT * FROM conveyor.upsert('reg_channels', '[{"channel_id": "UC1", "title": "Uno"}]', '{channel_id}', '{"operation_id": "op-1"}');
-- nothing was written by any of the refused calls
SELECT channel_id, title, subscribers, country FROM reg_channels ORDER BY 1;
SELECT count(*) FROM reg_videos;
DROP VIEW reg_view;
DROP TABLE reg_videos, reg_channels;

-- Music producer discovery on conveyor: schemas music, music_monitoring and music_queue_mgmt, their
-- tables and views, the pipeline's RPCs, roles, RLS and conveyor queues.
-- Run with psql -v ON_ERROR_STOP=1 -f install.sql in a database where CREATE EXTENSION conveyor was done,
-- as a role holding conveyor_admin (its views read conveyor's entity and lease tables).
\set ON_ERROR_STOP on
SET client_min_messages = warning;

-- Roles are cluster-wide: create them only where missing. reader < worker < admin.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['music_reader', 'music_worker', 'music_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;
GRANT music_reader TO music_worker;
GRANT music_worker TO music_admin;

-- The specification's public, monitoring and queue_mgmt schemas, named for this application.
CREATE SCHEMA music;
CREATE SCHEMA music_monitoring;
CREATE SCHEMA music_queue_mgmt;
REVOKE ALL ON SCHEMA music, music_monitoring, music_queue_mgmt FROM PUBLIC;
GRANT USAGE ON SCHEMA music, music_monitoring, music_queue_mgmt TO music_reader;

-- ---- catalog ------------------------------------------------------------------------------------
CREATE TABLE music.artists (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL,
    spotify_id TEXT UNIQUE,
    followers INTEGER,
    popularity INTEGER,
    image_url TEXT,
    metadata JSONB,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE TABLE music.albums (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    artist_id UUID NOT NULL REFERENCES music.artists(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    spotify_id TEXT UNIQUE,
    release_date DATE,
    cover_url TEXT,
    metadata JSONB,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX albums_artist ON music.albums (artist_id);
CREATE TABLE music.tracks (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    album_id UUID NOT NULL REFERENCES music.albums(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    spotify_id TEXT UNIQUE,
    duration_ms INTEGER,
    popularity INTEGER,
    spotify_preview_url TEXT,
    metadata JSONB,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX tracks_album ON music.tracks (album_id);
CREATE TABLE music.normalized_tracks (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    artist_id UUID NOT NULL REFERENCES music.artists(id) ON DELETE CASCADE,
    normalized_name TEXT NOT NULL,
    representative_track_id UUID REFERENCES music.tracks(id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE(artist_id, normalized_name)
);
CREATE TABLE music.producers (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL,
    normalized_name TEXT NOT NULL UNIQUE,
    email TEXT,
    image_url TEXT,
    instagram_handle TEXT,
    instagram_bio TEXT,
    metadata JSONB,
    enriched_at TIMESTAMPTZ,
    enrichment_failed BOOLEAN DEFAULT FALSE,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE TABLE music.track_producers (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    track_id UUID NOT NULL REFERENCES music.tracks(id) ON DELETE CASCADE,
    producer_id UUID NOT NULL REFERENCES music.producers(id) ON DELETE CASCADE,
    confidence NUMERIC NOT NULL,
    source TEXT NOT NULL,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE(track_id, producer_id)
);
CREATE INDEX track_producers_producer ON music.track_producers (producer_id);

-- ---- queues, monitoring, settings -------------------------------------------------------------------
-- One row per queue of the pipeline; each is a conveyor queue of the same name. queue_name is unique
-- here (register_queue upserts by it).
CREATE TABLE music.queue_registry (
    id SERIAL PRIMARY KEY,
    queue_name TEXT NOT NULL UNIQUE,
    display_name TEXT,
    description TEXT,
    active BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
-- Runs of the queue processors, written by the workers.
CREATE TABLE music.queue_metrics (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    queue_name TEXT NOT NULL,
    operation TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    processed_count INTEGER,
    success_count INTEGER,
    error_count INTEGER,
    details JSONB,
    created_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE TABLE music.monitoring_events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    event_type TEXT NOT NULL,
    details JSONB DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ DEFAULT now()
);
CREATE INDEX monitoring_events_type_time ON music.monitoring_events (event_type, created_at);
CREATE TABLE music.settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
INSERT INTO music.settings (key, value) VALUES
    ('default_visibility_timeout_seconds', '60'),
    ('stale_lock_ttl_seconds', '1800');
CREATE TABLE music_queue_mgmt.problematic_messages (
    id SERIAL PRIMARY KEY,
    queue_name TEXT NOT NULL,
    message_id TEXT NOT NULL,
    message_body JSONB,
    error_type TEXT NOT NULL,
    error_details TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now(),
    resolved BOOLEAN DEFAULT FALSE,
    resolution_details JSONB
);
-- pgmq's numeric message ids: conveyor's jobs have uuid ids; msg_id numbers them in enqueue order.
CREATE TABLE music.messages (
    msg_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      uuid NOT NULL UNIQUE,
    queue_name  text NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);

-- RLS: readers see the catalog; the other tables are the admin's to read. Every write goes through the
-- RPCs, except the rows the specification's workers write themselves (queue_metrics, monitoring_events).
DO $$
DECLARE
    t regclass;
BEGIN
    FOREACH t IN ARRAY ARRAY['music.artists', 'music.albums', 'music.tracks', 'music.normalized_tracks',
                             'music.producers', 'music.track_producers', 'music.queue_registry', 'music.queue_metrics',
                             'music.monitoring_events', 'music.settings', 'music.messages',
                             'music_queue_mgmt.problematic_messages']::regclass[] LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', t);
        EXECUTE pg_catalog.format('GRANT SELECT ON %s TO music_admin', t);
        EXECUTE pg_catalog.format('CREATE POLICY admin_reads ON %s FOR SELECT TO music_admin USING (true)', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['music.artists', 'music.albums', 'music.tracks', 'music.normalized_tracks',
                             'music.producers', 'music.track_producers']::regclass[] LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON %s TO music_reader', t);
        EXECUTE pg_catalog.format('CREATE POLICY reader_reads ON %s FOR SELECT TO music_reader USING (true)', t);
    END LOOP;
END $$;
GRANT INSERT ON music.queue_metrics, music.monitoring_events TO music_worker;
CREATE POLICY worker_writes ON music.queue_metrics FOR INSERT TO music_worker WITH CHECK (true);
CREATE POLICY worker_writes ON music.monitoring_events FOR INSERT TO music_worker
    WITH CHECK (event_type NOT IN ('queue_monitor', 'message_moved_to_dlq'));   -- those the RPCs write
GRANT ALL ON music.settings, music_queue_mgmt.problematic_messages TO music_admin;
GRANT USAGE ON SEQUENCE music_queue_mgmt.problematic_messages_id_seq TO music_admin;
CREATE POLICY admin_writes ON music.settings FOR ALL TO music_admin USING (true) WITH CHECK (true);
CREATE POLICY admin_writes ON music_queue_mgmt.problematic_messages FOR ALL TO music_admin USING (true) WITH CHECK (true);

CREATE VIEW music.producer_popularity AS
SELECT
    p.id,
    p.name,
    COUNT(DISTINCT tp.track_id) AS track_count,
    COUNT(DISTINCT a.id) AS artist_count,
    AVG(t.popularity) AS avg_track_popularity
FROM
    music.producers p
    JOIN music.track_producers tp ON p.id = tp.producer_id
    JOIN music.tracks t ON tp.track_id = t.id
    JOIN music.albums al ON t.album_id = al.id
    JOIN music.artists a ON al.artist_id = a.id
GROUP BY
    p.id, p.name;
GRANT SELECT ON music.producer_popularity TO music_reader;

-- The queue monitor's events (music.monitor_queues writes them); queue_name is in the details.
CREATE VIEW music.queue_monitoring_view AS
SELECT
  details->>'queue_name' AS queue_name,
  MAX(details->>'totalMessagesInQueues')::INTEGER AS total_messages,
  MAX(details->>'totalStuckMessages')::INTEGER AS stuck_messages,
  MAX(details->>'messagesFixed')::INTEGER AS messages_fixed,
  MAX(created_at) AS last_check_time
FROM
  music.monitoring_events
WHERE
  event_type = 'queue_monitor'
  AND created_at > NOW() - INTERVAL '24 hours'
GROUP BY
  details->>'queue_name';
GRANT SELECT ON music.queue_monitoring_view TO music_admin;

-- The pipeline's queues: pgmq's visibility timeout is the lease; an expired lease makes the message
-- visible at once (backoff 0); pgmq never drops a message, so attempts are conveyor's maximum.
CREATE FUNCTION music.queue_options(display_name text, description text) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('lease_seconds', 60, 'backoff_base_seconds', 0, 'backoff_max_seconds', 0,
                              'max_attempts', 1000, 'display_name', display_name, 'description', description)
$$;
REVOKE ALL ON FUNCTION music.queue_options(text, text) FROM PUBLIC;

\ir sql/queue.sql
\ir sql/state.sql
\ir sql/pipeline.sql
\ir sql/monitoring.sql
\ir sql/cron.sql

SELECT music.register_queue(q, d, c, true) FROM (VALUES
    ('artist_discovery', 'Artist discovery', 'Artists to find on Spotify by name or genre'),
    ('album_discovery', 'Album discovery', 'Albums of a stored artist, a page at a time'),
    ('track_discovery', 'Track discovery', 'Tracks of a stored album'),
    ('producer_identification', 'Producer identification', 'Credits of a stored track'),
    ('social_enrichment', 'Social enrichment', 'Social profiles of a stored producer'),
    ('music_processor_ticks', 'Processor ticks', 'What the scheduled queue processors would run')) AS v(q, d, c);

-- YouTube channel analytics on conveyor: schema youtube, its tables, RPCs, roles, queue and quota.
-- Run with psql -v ON_ERROR_STOP=1 -f install.sql in a database where CREATE EXTENSION conveyor was done.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

-- Roles are cluster-wide: create them only where missing (a second database of the cluster reuses them).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'youtube_worker') THEN
        CREATE ROLE youtube_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'youtube_admin') THEN
        CREATE ROLE youtube_admin NOLOGIN;
    END IF;
END $$;
-- The worker program leases and acknowledges the queue's jobs through conveyor's own client.
GRANT conveyor_worker TO youtube_worker;
GRANT youtube_worker TO youtube_admin;

CREATE SCHEMA youtube;
REVOKE ALL ON SCHEMA youtube FROM PUBLIC;
GRANT USAGE ON SCHEMA youtube TO youtube_worker, youtube_admin;

-- The pipeline's jobs (README: "Job types").
CREATE TYPE youtube.job_type AS ENUM (
    'DISCOVER_CHANNELS', 'BACKFILL_CHANNEL', 'REFRESH_CHANNEL_METADATA', 'REFRESH_CHANNEL_STATS',
    'SYNC_CHANNEL_VIDEOS', 'REFRESH_VIDEO_STATS');

CREATE DOMAIN youtube.channel_id AS text CHECK (VALUE ~ '^UC[A-Za-z0-9_-]{22}$');
CREATE DOMAIN youtube.video_id AS text CHECK (VALUE ~ '^[A-Za-z0-9_-]{11}$');

CREATE TABLE youtube.channels (
    channel_id          youtube.channel_id PRIMARY KEY,
    title               text NOT NULL,
    description         text,
    custom_url          text,
    country             text,
    published_at        timestamptz,
    uploads_playlist_id text,
    raw                 jsonb NOT NULL,          -- the API resource, without statistics and etag
    -- summary kept by capture_channel_stats
    subscriber_count    bigint,
    view_count          bigint,
    video_count         bigint,
    subscribers_gained  bigint,                  -- over the channel's last day (Pacific)
    views_gained        bigint,
    stats_captured_at   timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_refreshed_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE youtube.videos (
    video_id            youtube.video_id PRIMARY KEY,
    channel_id          youtube.channel_id NOT NULL REFERENCES youtube.channels,
    title               text NOT NULL,
    description         text,
    published_at        timestamptz,
    duration            interval,
    category_id         text,
    tags                text[],
    privacy_status      text NOT NULL CHECK (privacy_status IN ('public', 'unlisted', 'private')),
    upload_status       text,
    raw                 jsonb NOT NULL,
    privacy_changed_at  timestamptz,
    -- summary kept by capture_video_stats
    view_count          bigint,
    like_count          bigint,
    comment_count       bigint,
    hourly_change       bigint,
    daily_change        bigint,
    is_viral            boolean NOT NULL DEFAULT false,
    viral_since         timestamptz,
    stats_captured_at   timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_refreshed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX videos_channel ON youtube.videos (channel_id);

-- Tunables of the RPCs (the README lists them).
CREATE TABLE youtube.config (
    key   text PRIMARY KEY,
    value numeric NOT NULL
);
INSERT INTO youtube.config VALUES
    ('admin_calls_per_minute', 120),    -- rate limit of each admin function per session user
    ('viral_daily_views', 50000),       -- viral: views gained over 24 hours at least this ...
    ('viral_hourly_views', 5000);       -- ... or over the last captured hour at least this

-- Only administrators read the tables directly; every write goes through the RPCs.
ALTER TABLE youtube.channels ENABLE ROW LEVEL SECURITY;
ALTER TABLE youtube.videos ENABLE ROW LEVEL SECURITY;
ALTER TABLE youtube.config ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON youtube.channels, youtube.videos, youtube.config FROM PUBLIC;
GRANT SELECT ON youtube.channels, youtube.videos, youtube.config TO youtube_admin;
CREATE POLICY admin_reads ON youtube.channels FOR SELECT TO youtube_admin USING (true);
CREATE POLICY admin_reads ON youtube.videos FOR SELECT TO youtube_admin USING (true);
CREATE POLICY admin_reads ON youtube.config FOR SELECT TO youtube_admin USING (true);

-- The queue: per-channel serialization through group_key, only the enum's job types, payloads of one shape.
SELECT conveyor.create_queue('youtube', jsonb_build_object(
    'lease_seconds', 3600,
    'max_attempts', 5,
    'backoff_base_seconds', 30,
    'job_types', to_jsonb(enum_range(NULL::youtube.job_type)::text[]),
    'display_name', 'YouTube channel analytics',
    'payload_schema', '{"type": "object", "additionalProperties": false,
        "properties": {
            "channel_id": {"type": ["string", "null"], "pattern": "^UC[A-Za-z0-9_-]{22}$"},
            "video_ids": {"type": ["array", "null"], "maxItems": 1000,
                          "items": {"type": "string", "pattern": "^[A-Za-z0-9_-]{11}$"}}}}'::jsonb));

-- YouTube Data API v3: 10,000 units a day, reset at midnight Pacific time.
SELECT conveyor.quota_define('youtube_data_api', 10000, 'day', 'America/Los_Angeles',
    '{"channels.list": 1, "videos.list": 1, "playlistItems.list": 1, "playlists.list": 1,
      "search.list": 100, "commentThreads.list": 1, "subscriptions.list": 1, "activities.list": 1}');

-- ---------------------------------------------------------------------------------------------------
-- Helpers (not callable by anyone but the owner, whose RPCs use them)

-- Refuses an admin call past admin_calls_per_minute of this function for this session user.
CREATE FUNCTION youtube.admin_gate(fn text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    per_minute integer := (SELECT c.value FROM youtube.config c WHERE c.key = 'admin_calls_per_minute');
    r record;
BEGIN
    SELECT * INTO r FROM conveyor.rate_limit('youtube:' || fn || ':' || session_user, per_minute, 60);
    IF NOT r.allowed THEN
        RAISE EXCEPTION '%: rate limit of % calls a minute reached for %', fn, per_minute, session_user
            USING ERRCODE = '54000', HINT = format('Try again in %s ms.', r.retry_after_ms);
    END IF;
END $$;

-- A YouTube count ("123" or 123) as bigint; NULL when absent; 22023 naming the path otherwise.
CREATE FUNCTION youtube.count_value(v jsonb, path text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN NULL;
    END IF;
    IF (jsonb_typeof(v) = 'string' AND (v #>> '{}') ~ '^[0-9]{1,18}$')
       OR (jsonb_typeof(v) = 'number' AND (v #>> '{}') ~ '^[0-9]{1,18}$') THEN
        RETURN (v #>> '{}')::bigint;
    END IF;
    RAISE EXCEPTION '%: % is not a count', path, left(v::text, 200)
        USING ERRCODE = '22023', DETAIL = 'Counts are whole numbers from 0, as a number or a string of digits.';
END $$;

-- A timestamp string of the API ("2024-05-01T12:00:00Z"), finite and from 1900 to 9999; NULL when absent.
CREATE FUNCTION youtube.time_value(v jsonb, path text) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t timestamptz;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN NULL;
    END IF;
    BEGIN
        t := (v #>> '{}')::timestamptz;
    EXCEPTION WHEN data_exception THEN
        t := NULL;
    END;
    IF jsonb_typeof(v) <> 'string' OR t IS NULL OR NOT isfinite(t)
       OR t < '1900-01-01 00:00+00' OR t >= '10000-01-01 00:00+00' THEN
        RAISE EXCEPTION '%: % is not a time', path, left(v::text, 200)
            USING ERRCODE = '22023', DETAIL = 'Times are ISO 8601 strings from 1900 to 9999, e.g. "2024-05-01T12:00:00Z".';
    END IF;
    RETURN t;
END $$;

-- The capture time of a stats object: its "capturedAt" (the pipeline's clock; never in the future), or now().
CREATE FUNCTION youtube.capture_time(v jsonb, path text) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t timestamptz := coalesce(youtube.time_value(v, path), now());
BEGIN
    IF t > now() + interval '5 minutes' THEN
        RAISE EXCEPTION '%: % is in the future', path, v #>> '{}' USING ERRCODE = '22023';
    END IF;
    RETURN t;
END $$;

REVOKE ALL ON FUNCTION youtube.admin_gate(text), youtube.count_value(jsonb, text),
    youtube.time_value(jsonb, text), youtube.capture_time(jsonb, text) FROM PUBLIC;

\ir sql/queue.sql
\ir sql/data.sql
\ir sql/analytics.sql

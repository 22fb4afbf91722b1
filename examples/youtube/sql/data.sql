-- Data management RPCs: channels and videos through conveyor.upsert, statistics through conveyor.snapshot.

-- A channel resource of channels.list (snippet, contentDetails): only changed fields are written.
CREATE FUNCTION youtube.upsert_channel(channel_data jsonb)
RETURNS TABLE(channel_id text, was_created boolean, was_updated boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    id text;
    row_data jsonb;
    r record;
BEGIN
    IF channel_data IS NULL THEN
        RAISE EXCEPTION 'channel_data must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF jsonb_typeof(channel_data) <> 'object' THEN
        RAISE EXCEPTION 'channel_data must be a JSON object (a channels.list item)' USING ERRCODE = '22023';
    END IF;
    id := channel_data ->> 'id';
    IF id IS NULL OR id !~ '^UC[A-Za-z0-9_-]{22}$' THEN
        RAISE EXCEPTION 'channel_data.id: % is not a YouTube channel id', coalesce(left(channel_data ->> 'id', 200), 'missing')
            USING ERRCODE = '22023', DETAIL = 'A channel id is "UC" and 22 letters, digits, "-" or "_".';
    END IF;
    IF jsonb_typeof(channel_data -> 'snippet') IS DISTINCT FROM 'object'
       OR coalesce(btrim(channel_data #>> '{snippet,title}'), '') = '' THEN
        RAISE EXCEPTION 'channel_data.snippet.title is required' USING ERRCODE = '22023',
            HINT = 'Request part=snippet,contentDetails.';
    END IF;
    row_data := jsonb_build_object(
        'channel_id', id,
        'title', channel_data #>> '{snippet,title}',
        'description', channel_data #>> '{snippet,description}',
        'custom_url', channel_data #>> '{snippet,customUrl}',
        'country', channel_data #>> '{snippet,country}',
        'published_at', youtube.time_value(channel_data #> '{snippet,publishedAt}', 'channel_data.snippet.publishedAt'),
        'uploads_playlist_id', channel_data #>> '{contentDetails,relatedPlaylists,uploads}',
        -- statistics change all the time and belong to capture_channel_stats; the etag follows them
        'raw', channel_data - 'statistics' - 'etag');
    -- the refresh time moves on every successful refresh, changed or not (touch_unchanged)
    SELECT u.action, u.changed INTO r
    FROM conveyor.upsert('youtube.channels', jsonb_build_array(row_data), '{channel_id}',
                         '{"audit": true, "touch_columns": ["last_refreshed_at"], "touch_unchanged": true}') AS u;
    channel_id := id;
    was_created := r.action = 'inserted';
    was_updated := r.action = 'updated';
    PERFORM conveyor.audit_record('youtube.upsert_channel', jsonb_build_object('channel_data', channel_data),
        jsonb_build_object('channel_id', id, 'was_created', was_created, 'was_updated', was_updated,
                           'changed', r.changed));
    RETURN NEXT;
END $$;

-- Video resources of videos.list (snippet, contentDetails, status), all or none.
CREATE FUNCTION youtube.upsert_videos(video_data_array jsonb[])
RETURNS TABLE(video_id text, was_created boolean, was_updated boolean, change_summary jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    rows_data jsonb;
    results jsonb;
    bad record;
    n integer;
BEGIN
    IF video_data_array IS NULL THEN
        RAISE EXCEPTION 'video_data_array must not be NULL' USING ERRCODE = '22004';
    END IF;
    n := coalesce(cardinality(video_data_array), 0);
    IF n = 0 OR n > 1000 THEN
        RAISE EXCEPTION 'video_data_array must hold 1 to 1000 videos, not %', n USING ERRCODE = '22023';
    END IF;
    -- shape first, element by element, so the message names the first bad one (0-based, as conveyor's)
    SELECT v.ord - 1 AS i, CASE
        WHEN v.e IS NULL OR jsonb_typeof(v.e) <> 'object' THEN 'is not a JSON object (a videos.list item)'
        WHEN coalesce(v.e ->> 'id', '') !~ '^[A-Za-z0-9_-]{11}$' THEN 'id: ' || coalesce(left(v.e ->> 'id', 200), 'missing') || ' is not a YouTube video id'
        WHEN coalesce(v.e #>> '{snippet,channelId}', '') !~ '^UC[A-Za-z0-9_-]{22}$' THEN 'snippet.channelId: ' || coalesce(left(v.e #>> '{snippet,channelId}', 200), 'missing') || ' is not a YouTube channel id'
        WHEN coalesce(btrim(v.e #>> '{snippet,title}'), '') = '' THEN 'snippet.title is required'
        WHEN coalesce(v.e #>> '{status,privacyStatus}', '') NOT IN ('public', 'unlisted', 'private') THEN 'status.privacyStatus: ' || coalesce(left(v.e #>> '{status,privacyStatus}', 200), 'missing') || ' is not public, unlisted or private'
        WHEN v.e #> '{snippet,tags}' IS NOT NULL AND jsonb_typeof(v.e #> '{snippet,tags}') <> 'array' THEN 'snippet.tags must be an array'
        WHEN (v.e #>> '{contentDetails,duration}') IS NOT NULL AND (v.e #>> '{contentDetails,duration}') !~ '^P(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$' THEN 'contentDetails.duration is not an ISO 8601 duration'
        END AS why
    INTO bad
    FROM unnest(video_data_array) WITH ORDINALITY AS v(e, ord)
    WHERE v.e IS NULL OR jsonb_typeof(v.e) <> 'object'
       OR coalesce(v.e ->> 'id', '') !~ '^[A-Za-z0-9_-]{11}$'
       OR coalesce(v.e #>> '{snippet,channelId}', '') !~ '^UC[A-Za-z0-9_-]{22}$'
       OR coalesce(btrim(v.e #>> '{snippet,title}'), '') = ''
       OR coalesce(v.e #>> '{status,privacyStatus}', '') NOT IN ('public', 'unlisted', 'private')
       OR (v.e #> '{snippet,tags}' IS NOT NULL AND jsonb_typeof(v.e #> '{snippet,tags}') <> 'array')
       OR ((v.e #>> '{contentDetails,duration}') IS NOT NULL AND (v.e #>> '{contentDetails,duration}') !~ '^P(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$')
    ORDER BY v.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'video_data_array[%]: %', bad.i, bad.why USING ERRCODE = '22023';
    END IF;
    SELECT v.ord - 1 AS i, v.e ->> 'id' AS vid, v.e #>> '{snippet,channelId}' AS ch INTO bad
    FROM unnest(video_data_array) WITH ORDINALITY AS v(e, ord)
    WHERE NOT EXISTS (SELECT FROM youtube.channels c WHERE c.channel_id = v.e #>> '{snippet,channelId}')
    ORDER BY v.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'video_data_array[%]: video % belongs to channel %, which is not known', bad.i, bad.vid, bad.ch
            USING ERRCODE = '23503', HINT = 'Store the channel with youtube.upsert_channel first; nothing was written.';
    END IF;

    SELECT jsonb_agg(jsonb_build_object(
        'video_id', v.e ->> 'id',
        'channel_id', v.e #>> '{snippet,channelId}',
        'title', v.e #>> '{snippet,title}',
        'description', v.e #>> '{snippet,description}',
        'published_at', youtube.time_value(v.e #> '{snippet,publishedAt}', format('video_data_array[%s].snippet.publishedAt', v.ord - 1)),
        'duration', v.e #>> '{contentDetails,duration}',
        'category_id', v.e #>> '{snippet,categoryId}',
        'tags', v.e #> '{snippet,tags}',
        'privacy_status', v.e #>> '{status,privacyStatus}',
        'upload_status', v.e #>> '{status,uploadStatus}',
        'raw', v.e - 'statistics' - 'etag') ORDER BY v.ord)
    INTO rows_data
    FROM unnest(video_data_array) WITH ORDINALITY AS v(e, ord);

    -- the results are kept in a variable: no temporary table a caller could have prepared with triggers
    SELECT jsonb_agg(jsonb_build_object('ord', u.ord, 'video_id', u.key ->> 'video_id', 'action', u.action,
                                        'changed', u.changed) ORDER BY u.ord)
    INTO results
    FROM conveyor.upsert('youtube.videos', rows_data, '{video_id}', '{"audit": true}') AS u;

    -- a privacy change is stamped; every refresh moves last_refreshed_at
    UPDATE youtube.videos v
    SET last_refreshed_at = now(),
        privacy_changed_at = CASE WHEN u.changed ? 'privacy_status' THEN now() ELSE v.privacy_changed_at END
    FROM jsonb_to_recordset(results) AS u(ord integer, video_id text, action text, changed jsonb)
    WHERE v.video_id = u.video_id AND u.action <> 'inserted';

    RETURN QUERY
    SELECT u.video_id, u.action = 'inserted', u.action = 'updated',
           CASE u.action
               WHEN 'inserted' THEN jsonb_build_object('action', 'inserted',
                   'privacy_status', rows_data -> u.ord ->> 'privacy_status')
               WHEN 'updated' THEN jsonb_build_object('action', 'updated',
                   'fields', (SELECT jsonb_agg(k ORDER BY k) FROM jsonb_object_keys(u.changed - 'raw') k),
                   'changes', u.changed - 'raw')
                   || CASE WHEN u.changed ? 'privacy_status' THEN jsonb_build_object('privacy_change',
                          (u.changed #>> '{privacy_status,old}') || ' -> ' || (u.changed #>> '{privacy_status,new}'))
                      ELSE '{}' END
               ELSE jsonb_build_object('action', 'unchanged')
           END
    FROM jsonb_to_recordset(results) AS u(ord integer, video_id text, action text, changed jsonb) ORDER BY u.ord;

    PERFORM conveyor.audit_record('youtube.upsert_videos', jsonb_build_object('video_data_array', to_jsonb(video_data_array)),
        (SELECT jsonb_build_object('rows', count(*),
                                   'inserted', count(*) FILTER (WHERE u.action = 'inserted'),
                                   'updated', count(*) FILTER (WHERE u.action = 'updated'),
                                   'privacy_changes', count(*) FILTER (WHERE u.changed ? 'privacy_status'))
         FROM jsonb_to_recordset(results) AS u(ord integer, video_id text, action text, changed jsonb)));
END $$;

-- One row per channel per Pacific day in conveyor's snapshots, series 'youtube.channel_stats'.
CREATE FUNCTION youtube.capture_channel_stats(channel_id text, stats_data jsonb)
RETURNS TABLE(stats_id uuid, is_new_day boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    ch text := capture_channel_stats.channel_id;
    stats jsonb;
    metrics jsonb;
    at timestamptz;
    s record;
BEGIN
    IF ch IS NULL OR stats_data IS NULL THEN
        RAISE EXCEPTION 'channel_id and stats_data must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF ch !~ '^UC[A-Za-z0-9_-]{22}$' THEN
        RAISE EXCEPTION 'channel_id: % is not a YouTube channel id', quote_literal(left(ch, 200)) USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(stats_data) <> 'object' THEN
        RAISE EXCEPTION 'stats_data must be a JSON object (a channel''s statistics)' USING ERRCODE = '22023';
    END IF;
    -- a whole channel resource, or its statistics object
    stats := CASE WHEN jsonb_typeof(stats_data -> 'statistics') = 'object' THEN stats_data -> 'statistics' ELSE stats_data END;
    metrics := jsonb_strip_nulls(jsonb_build_object(
        'views', youtube.count_value(stats -> 'viewCount', 'stats_data.viewCount'),
        'subscribers', CASE WHEN (stats ->> 'hiddenSubscriberCount')::boolean IS TRUE THEN NULL
                            ELSE youtube.count_value(stats -> 'subscriberCount', 'stats_data.subscriberCount') END,
        'videos', youtube.count_value(stats -> 'videoCount', 'stats_data.videoCount')));
    IF NOT metrics ? 'views' THEN
        RAISE EXCEPTION 'stats_data.viewCount is required' USING ERRCODE = '22023', HINT = 'Request part=statistics.';
    END IF;
    at := youtube.capture_time(stats_data -> 'capturedAt', 'stats_data.capturedAt');
    IF NOT EXISTS (SELECT FROM youtube.channels c WHERE c.channel_id = ch) THEN
        RAISE EXCEPTION 'channel % is not known', ch USING ERRCODE = '23503',
            HINT = 'Store the channel with youtube.upsert_channel first.';
    END IF;

    SELECT * INTO s FROM conveyor.snapshot('youtube.channel_stats', ch, metrics, at, 'day', 'America/Los_Angeles');
    -- the summary follows the latest capture only (a late, older capture does not roll it back)
    UPDATE youtube.channels c
    SET view_count = (metrics ->> 'views')::bigint,
        subscriber_count = (metrics ->> 'subscribers')::bigint,
        video_count = (metrics ->> 'videos')::bigint,
        views_gained = (s.delta ->> 'views')::bigint,
        subscribers_gained = (s.delta ->> 'subscribers')::bigint,
        stats_captured_at = at,
        last_refreshed_at = now()
    WHERE c.channel_id = ch AND (c.stats_captured_at IS NULL OR c.stats_captured_at <= at);

    stats_id := s.snapshot_id;
    is_new_day := s.is_new_period;
    PERFORM conveyor.audit_record('youtube.capture_channel_stats',
        jsonb_build_object('channel_id', ch, 'stats_data', stats_data),
        jsonb_build_object('stats_id', stats_id, 'is_new_day', is_new_day, 'delta', s.delta));
    RETURN NEXT;
END $$;

-- Hourly periods (Pacific) in conveyor's snapshots, series 'youtube.video_stats': several captures a day;
-- a capture equal to the video's latest stored one (its hour's or an earlier hour's) writes nothing
-- (skip_unchanged). Changes are in views.
CREATE FUNCTION youtube.capture_video_stats(video_stats_array jsonb[])
RETURNS TABLE(video_id text, stats_id uuid, hourly_change integer, daily_change integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    captures jsonb;
    results jsonb;
    bad record;
    n integer;
    viral_day numeric := (SELECT c.value FROM youtube.config c WHERE c.key = 'viral_daily_views');
    viral_hour numeric := (SELECT c.value FROM youtube.config c WHERE c.key = 'viral_hourly_views');
BEGIN
    IF video_stats_array IS NULL THEN
        RAISE EXCEPTION 'video_stats_array must not be NULL' USING ERRCODE = '22004';
    END IF;
    n := coalesce(cardinality(video_stats_array), 0);
    IF n = 0 OR n > 1000 THEN
        RAISE EXCEPTION 'video_stats_array must hold 1 to 1000 captures, not %', n USING ERRCODE = '22023';
    END IF;
    SELECT v.ord - 1 AS i, CASE
        WHEN v.e IS NULL OR jsonb_typeof(v.e) <> 'object' THEN 'is not a JSON object'
        WHEN coalesce(v.e ->> 'id', '') !~ '^[A-Za-z0-9_-]{11}$' THEN 'id: ' || coalesce(left(v.e ->> 'id', 200), 'missing') || ' is not a YouTube video id'
        ELSE 'statistics.viewCount is required' END AS why
    INTO bad
    FROM unnest(video_stats_array) WITH ORDINALITY AS v(e, ord)
    WHERE v.e IS NULL OR jsonb_typeof(v.e) <> 'object' OR coalesce(v.e ->> 'id', '') !~ '^[A-Za-z0-9_-]{11}$'
       OR v.e #> '{statistics,viewCount}' IS NULL
    ORDER BY v.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'video_stats_array[%]: %', bad.i, bad.why USING ERRCODE = '22023';
    END IF;
    SELECT v.ord - 1 AS i, v.e ->> 'id' AS vid INTO bad
    FROM unnest(video_stats_array) WITH ORDINALITY AS v(e, ord)
    WHERE NOT EXISTS (SELECT FROM youtube.videos x WHERE x.video_id = v.e ->> 'id')
    ORDER BY v.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'video_stats_array[%]: video % is not known', bad.i, bad.vid USING ERRCODE = '23503',
            HINT = 'Store the video with youtube.upsert_videos first; nothing was written.';
    END IF;

    SELECT jsonb_agg(jsonb_build_object(
        'entity_id', v.e ->> 'id',
        'captured_at', youtube.capture_time(v.e -> 'capturedAt', format('video_stats_array[%s].capturedAt', v.ord - 1)),
        'metrics', jsonb_strip_nulls(jsonb_build_object(
            'views', youtube.count_value(v.e #> '{statistics,viewCount}', format('video_stats_array[%s].statistics.viewCount', v.ord - 1)),
            'likes', youtube.count_value(v.e #> '{statistics,likeCount}', format('video_stats_array[%s].statistics.likeCount', v.ord - 1)),
            'comments', youtube.count_value(v.e #> '{statistics,commentCount}', format('video_stats_array[%s].statistics.commentCount', v.ord - 1)))))
        ORDER BY v.ord)
    INTO captures
    FROM unnest(video_stats_array) WITH ORDINALITY AS v(e, ord);

    SELECT jsonb_agg(jsonb_build_object('ord', s.ord, 'video_id', s.entity_id, 'stats_id', s.snapshot_id,
                                        'captured_at', captures -> s.ord -> 'captured_at', 'metrics', captures -> s.ord -> 'metrics',
                                        'hourly', s.delta -> 'views', 'daily', s.delta_day -> 'views') ORDER BY s.ord)
    INTO results
    FROM conveyor.snapshot_batch('youtube.video_stats', captures, 'hour', 'America/Los_Angeles', skip_unchanged => true) AS s;

    -- the summary follows each video's latest capture of the batch, if newer than the stored one
    UPDATE youtube.videos x
    SET view_count = (c.metrics ->> 'views')::bigint,
        like_count = (c.metrics ->> 'likes')::bigint,
        comment_count = (c.metrics ->> 'comments')::bigint,
        hourly_change = c.hourly,
        daily_change = c.daily,
        is_viral = coalesce(c.daily >= viral_day OR c.hourly >= viral_hour, false),
        viral_since = CASE WHEN coalesce(c.daily >= viral_day OR c.hourly >= viral_hour, false)
                           THEN coalesce(x.viral_since, c.captured_at) END,
        stats_captured_at = c.captured_at,
        last_refreshed_at = now()
    FROM (SELECT DISTINCT ON (c0.video_id) * FROM jsonb_to_recordset(results) AS c0(ord integer, video_id text, stats_id uuid, captured_at timestamptz, metrics jsonb, hourly numeric, daily numeric) ORDER BY c0.video_id, c0.captured_at DESC, c0.ord DESC) c
    WHERE x.video_id = c.video_id AND (x.stats_captured_at IS NULL OR x.stats_captured_at <= c.captured_at);

    RETURN QUERY
    SELECT c.video_id, c.stats_id,
           -- clamped into integer (NULL, not clamped, when there is no earlier figure)
           CASE WHEN c.hourly IS NOT NULL THEN greatest(least(c.hourly, 2147483647), -2147483648)::integer END,
           CASE WHEN c.daily IS NOT NULL THEN greatest(least(c.daily, 2147483647), -2147483648)::integer END
    FROM jsonb_to_recordset(results) AS c(ord integer, video_id text, stats_id uuid, captured_at timestamptz, metrics jsonb, hourly numeric, daily numeric) ORDER BY c.ord;

    PERFORM conveyor.audit_record('youtube.capture_video_stats', jsonb_build_object('video_stats_array', to_jsonb(video_stats_array)),
        jsonb_build_object('rows', jsonb_array_length(results)));
END $$;

-- The worker's bookkeeping of YouTube's quota: one call of an operation (or several) against today's units.
CREATE FUNCTION youtube.consume_api_quota(operation text, calls integer DEFAULT 1)
RETURNS TABLE(allowed boolean, used bigint, remaining bigint, reset_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    r record;
BEGIN
    IF operation IS NULL OR calls IS NULL THEN
        RAISE EXCEPTION 'operation and calls must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF calls NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'calls must be 1 to 1000, not %', calls USING ERRCODE = '22023';
    END IF;
    SELECT * INTO r FROM conveyor.quota_consume('youtube_data_api', calls, consume_api_quota.operation);
    allowed := r.allowed; used := r.used; remaining := r.remaining; reset_at := r.reset_at;
    PERFORM conveyor.audit_record('youtube.consume_api_quota',
        jsonb_build_object('operation', consume_api_quota.operation, 'calls', calls),
        jsonb_build_object('allowed', allowed, 'used', used, 'remaining', remaining));
    RETURN NEXT;
END $$;

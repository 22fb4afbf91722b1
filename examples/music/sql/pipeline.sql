-- Discovery starters, the atomic processors (idempotent by operation id) and the search API.

CREATE FUNCTION music.start_artist_discovery(artist_name TEXT) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF artist_name IS NULL THEN
        RAISE EXCEPTION 'artist_name must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF btrim(artist_name) = '' OR length(artist_name) > 200 THEN
        RAISE EXCEPTION 'artist_name must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    RETURN music.send_message('artist_discovery', jsonb_build_object('artistName', btrim(artist_name)),
                              'artist:' || lower(btrim(artist_name)));
END $$;

-- One genre search; the worker enqueues the discovery of each artist it finds. Returns the message.
CREATE FUNCTION music.start_bulk_artist_discovery(genre TEXT, min_popularity INT DEFAULT 0, limit_count INT DEFAULT 10)
RETURNS TABLE(msg_id bigint, message jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF genre IS NULL OR btrim(genre) = '' OR length(genre) > 100 THEN
        RAISE EXCEPTION 'genre must be 1 to 100 characters' USING ERRCODE = '22023';
    END IF;
    IF min_popularity IS NULL OR min_popularity NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'min_popularity must be between 0 and 100' USING ERRCODE = '22023';
    END IF;
    IF limit_count IS NULL OR limit_count NOT BETWEEN 1 AND 50 THEN
        RAISE EXCEPTION 'limit_count must be between 1 and 50 (a Spotify search page)' USING ERRCODE = '22023';
    END IF;
    message := jsonb_build_object('genre', lower(btrim(genre)), 'minPopularity', min_popularity, 'limit', limit_count);
    msg_id := music.send_message('artist_discovery', message,
                                 format('genre:%s:%s:%s', lower(btrim(genre)), min_popularity, limit_count));
    RETURN NEXT;
END $$;

CREATE FUNCTION music.start_album_discovery(artist_id UUID, offset_val INT DEFAULT 0) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sid text;
BEGIN
    IF artist_id IS NULL OR offset_val IS NULL THEN
        RAISE EXCEPTION 'artist_id and offset_val must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF offset_val < 0 THEN
        RAISE EXCEPTION 'offset_val must be 0 or more, not %', offset_val USING ERRCODE = '22023';
    END IF;
    SELECT a.spotify_id INTO sid FROM music.artists a WHERE a.id = start_album_discovery.artist_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'artist % does not exist', artist_id USING ERRCODE = '42704';
    END IF;
    RETURN music.send_message('album_discovery',
        jsonb_build_object('artistId', artist_id, 'artistSpotifyId', sid, 'offset', offset_val),
        format('albums:%s:%s', artist_id, offset_val));
END $$;

-- The operation runs once per p_operation_id: a repeat returns the first result ("replayed": true); the
-- same id with other data is CV004. kind names the processor, request what a repeat must match.
CREATE FUNCTION music.begin_operation(kind text, operation_id text, request jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
BEGIN
    IF operation_id IS NULL OR btrim(operation_id) = '' OR octet_length(operation_id) > 512 THEN
        RAISE EXCEPTION 'p_operation_id must be 1 to 512 bytes' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO b FROM conveyor.idempotency_begin('music:' || kind || ':' || operation_id, request);
    IF b.acquired THEN RETURN NULL; END IF;
    IF b.state = 'completed' THEN RETURN b.result || '{"replayed": true}'; END IF;
    RAISE EXCEPTION 'operation % is in progress', operation_id USING ERRCODE = '55000';
END $$;

CREATE FUNCTION music.finish_operation(kind text, operation_id text, result jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM conveyor.idempotency_finish('music:' || kind || ':' || operation_id, result);
    RETURN result || '{"replayed": false}';
END $$;

CREATE FUNCTION music.require_object(v jsonb, what text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF v IS NULL OR jsonb_typeof(v) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object', what USING ERRCODE = '22023';
    END IF;
    IF coalesce(btrim(v ->> 'name'), '') = '' THEN
        RAISE EXCEPTION '%.name must not be empty', what USING ERRCODE = '22023';
    END IF;
    RETURN v;
END $$;

CREATE FUNCTION music.require_key(v text, what text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF v IS NULL OR btrim(v) = '' OR octet_length(v) > 512 THEN
        RAISE EXCEPTION '% must be 1 to 512 bytes', what USING ERRCODE = '22023';
    END IF;
    RETURN v;
END $$;

-- Spotify release dates are "2019", "2019-05" or "2019-05-17"; stored as the first day they name.
CREATE FUNCTION music.release_date(v text) RETURNS date
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF v IS NULL THEN RETURN NULL; END IF;
    IF v ~ '^\d{4}$' THEN RETURN (v || '-01-01')::date; END IF;
    IF v ~ '^\d{4}-\d{2}$' THEN RETURN (v || '-01')::date; END IF;
    IF v ~ '^\d{4}-\d{2}-\d{2}$' THEN RETURN v::date; END IF;
    RAISE EXCEPTION 'release_date "%" is not YYYY, YYYY-MM or YYYY-MM-DD', left(v, 50) USING ERRCODE = '22023';
END $$;

-- One upserted row: its id and what the upsert did.
CREATE FUNCTION music.upsert_one(target regclass, r jsonb, key text[]) RETURNS jsonb
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('id', u.row ->> 'id', 'action', u.action, 'changed', u.changed)
    FROM conveyor.upsert(target, jsonb_build_array(r), key,
                         '{"touch_columns": ["updated_at"], "returning": ["id"]}') u
$$;

CREATE FUNCTION music.process_artist_atomic(p_artist_data JSONB, p_operation_id TEXT, p_spotify_id TEXT) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d jsonb := music.require_object(p_artist_data, 'p_artist_data');
    done jsonb := music.begin_operation('artist', p_operation_id,
                                        jsonb_build_object('spotify_id', music.require_key(p_spotify_id, 'p_spotify_id'), 'data', d));
    u jsonb;
BEGIN
    IF done IS NOT NULL THEN RETURN done; END IF;
    u := music.upsert_one('music.artists', jsonb_strip_nulls(jsonb_build_object('spotify_id', p_spotify_id,
             'name', d ->> 'name', 'followers', d -> 'followers', 'popularity', d -> 'popularity',
             'image_url', d ->> 'image_url', 'metadata', d -> 'metadata')), '{spotify_id}');
    RETURN music.finish_operation('artist', p_operation_id,
        jsonb_build_object('artist_id', u ->> 'id', 'action', u ->> 'action', 'spotify_id', p_spotify_id));
END $$;

-- p_album_data names its artist by artist_id (uuid) or artist_spotify_id.
CREATE FUNCTION music.process_album_atomic(p_album_data JSONB, p_operation_id TEXT, p_spotify_id TEXT) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d jsonb := music.require_object(p_album_data, 'p_album_data');
    done jsonb := music.begin_operation('album', p_operation_id,
                                        jsonb_build_object('spotify_id', music.require_key(p_spotify_id, 'p_spotify_id'), 'data', d));
    artist uuid;
    u jsonb;
BEGIN
    IF done IS NOT NULL THEN RETURN done; END IF;
    SELECT a.id INTO artist FROM music.artists a
    WHERE a.id::text = d ->> 'artist_id' OR a.spotify_id = d ->> 'artist_spotify_id';
    IF artist IS NULL THEN
        RAISE EXCEPTION 'p_album_data: artist % does not exist', coalesce(d ->> 'artist_id', d ->> 'artist_spotify_id', 'NULL')
            USING ERRCODE = '42704', HINT = 'Store the artist first (process_artist_atomic).';
    END IF;
    u := music.upsert_one('music.albums', jsonb_strip_nulls(jsonb_build_object('spotify_id', p_spotify_id, 'artist_id', artist,
             'name', d ->> 'name', 'release_date', music.release_date(d ->> 'release_date'), 'cover_url', d ->> 'cover_url',
             'metadata', d -> 'metadata')), '{spotify_id}');
    RETURN music.finish_operation('album', p_operation_id,
        jsonb_build_object('album_id', u ->> 'id', 'artist_id', artist, 'action', u ->> 'action', 'spotify_id', p_spotify_id));
END $$;

-- Seed 001's normalisation (letters and digits, lower case); a name without any keeps its lower case.
CREATE FUNCTION music.normalize_track_name(name text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(lower(regexp_replace(name, '[^a-zA-Z0-9]', '', 'g')), ''), lower(btrim(name)))
$$;

-- Tracks of one album of one artist, all or none; returns seed 001's document, its errors included.
CREATE FUNCTION music.process_track_batch(p_track_data JSONB[], p_album_id UUID, p_artist_id UUID) RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rows jsonb;
    v_results jsonb;
BEGIN
    IF p_track_data IS NULL OR p_album_id IS NULL OR p_artist_id IS NULL THEN
        RAISE EXCEPTION 'p_track_data, p_album_id and p_artist_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT FROM music.albums al WHERE al.id = p_album_id AND al.artist_id = p_artist_id) THEN
        RAISE EXCEPTION 'album % of artist % does not exist', p_album_id, p_artist_id USING ERRCODE = '42704';
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object('album_id', p_album_id,
               'spotify_id', music.require_key(t ->> 'spotify_id', format('p_track_data[%s].spotify_id', o)),
               'name', music.require_object(t, format('p_track_data[%s]', o)) ->> 'name',
               'duration_ms', t -> 'duration_ms', 'popularity', t -> 'popularity',
               'spotify_preview_url', t ->> 'spotify_preview_url', 'metadata', t -> 'metadata')) ORDER BY o), '[]')
    INTO v_rows FROM unnest(p_track_data) WITH ORDINALITY AS x(t, o);
    SELECT coalesce(jsonb_agg(jsonb_build_object('track_id', u.row ->> 'id', 'name', v_rows -> u.ord ->> 'name',
                                                 'spotify_id', v_rows -> u.ord ->> 'spotify_id', 'action', u.action) ORDER BY u.ord), '[]')
    INTO v_results
    FROM conveyor.upsert('music.tracks', v_rows, '{spotify_id}',
                         '{"touch_columns": ["updated_at"], "returning": ["id"], "on_duplicate": "last"}') u
    WHERE u.action <> 'duplicate';
    -- the first track of a name is its artist's representative (later ones leave it)
    PERFORM conveyor.upsert_counts('music.normalized_tracks',
        (SELECT coalesce(jsonb_agg(jsonb_build_object('artist_id', p_artist_id,
                                   'normalized_name', music.normalize_track_name(r ->> 'name'),
                                   'representative_track_id', (r ->> 'track_id')::uuid) ORDER BY o), '[]')
         FROM jsonb_array_elements(v_results) WITH ORDINALITY AS y(r, o)),
        '{artist_id, normalized_name}', '{"mode": "insert", "on_duplicate": "first"}');
    RETURN jsonb_build_object('processed', jsonb_array_length(v_results), 'results', v_results);
EXCEPTION WHEN OTHERS THEN
    RETURN jsonb_build_object('error', SQLERRM, 'detail', SQLSTATE);
END $$;

-- One track; p_track_data names its album by album_id (uuid) or album_spotify_id.
CREATE FUNCTION music.process_track_atomic(p_track_data JSONB, p_operation_id TEXT, p_spotify_id TEXT) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d jsonb := music.require_object(p_track_data, 'p_track_data');
    done jsonb := music.begin_operation('track', p_operation_id,
                                        jsonb_build_object('spotify_id', music.require_key(p_spotify_id, 'p_spotify_id'), 'data', d));
    al record;
    r jsonb;
BEGIN
    IF done IS NOT NULL THEN RETURN done; END IF;
    SELECT a.id, a.artist_id INTO al FROM music.albums a
    WHERE a.id::text = d ->> 'album_id' OR a.spotify_id = d ->> 'album_spotify_id';
    IF al.id IS NULL THEN
        RAISE EXCEPTION 'p_track_data: album % does not exist', coalesce(d ->> 'album_id', d ->> 'album_spotify_id', 'NULL')
            USING ERRCODE = '42704', HINT = 'Store the album first (process_album_atomic).';
    END IF;
    r := music.process_track_batch(ARRAY[d || jsonb_build_object('spotify_id', p_spotify_id)], al.id, al.artist_id);
    IF r ? 'error' THEN
        RAISE EXCEPTION '%', r ->> 'error' USING ERRCODE = r ->> 'detail';
    END IF;
    RETURN music.finish_operation('track', p_operation_id,
        jsonb_build_object('track_id', r -> 'results' -> 0 ->> 'track_id', 'album_id', al.id, 'artist_id', al.artist_id,
                           'action', r -> 'results' -> 0 ->> 'action', 'spotify_id', p_spotify_id));
END $$;

-- A producer by normalized name (only the fields given are written); with track_id (and confidence,
-- source) it is credited on that track.
CREATE FUNCTION music.process_producer_atomic(p_producer_data JSONB, p_operation_id TEXT, p_normalized_name TEXT) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d jsonb;
    done jsonb;
    u jsonb;
    link jsonb;
BEGIN
    IF p_producer_data IS NULL OR jsonb_typeof(p_producer_data) <> 'object' THEN
        RAISE EXCEPTION 'p_producer_data must be a JSON object' USING ERRCODE = '22023';
    END IF;
    d := p_producer_data;
    done := music.begin_operation('producer', p_operation_id,
        jsonb_build_object('normalized_name', music.require_key(p_normalized_name, 'p_normalized_name'), 'data', d));
    IF done IS NOT NULL THEN RETURN done; END IF;
    IF d ? 'track_id' AND NOT EXISTS (SELECT FROM music.tracks t WHERE t.id::text = d ->> 'track_id') THEN
        RAISE EXCEPTION 'p_producer_data: track % does not exist', d ->> 'track_id' USING ERRCODE = '42704';
    END IF;
    u := music.upsert_one('music.producers',
        (SELECT jsonb_object_agg(k, v) FROM jsonb_each(d) e(k, v)
         WHERE k IN ('name', 'email', 'image_url', 'instagram_handle', 'instagram_bio', 'metadata', 'enriched_at',
                     'enrichment_failed')) || jsonb_build_object('normalized_name', p_normalized_name),
        '{normalized_name}');
    IF d ? 'track_id' THEN
        SELECT jsonb_build_object('action', x.action) INTO link
        FROM conveyor.upsert('music.track_producers', jsonb_build_array(jsonb_build_object('track_id', d ->> 'track_id',
                 'producer_id', u ->> 'id', 'confidence', coalesce(d -> 'confidence', '1'),
                 'source', coalesce(d ->> 'source', 'spotify_credits'))), '{track_id, producer_id}') x;
    END IF;
    RETURN music.finish_operation('producer', p_operation_id,
        jsonb_build_object('producer_id', u ->> 'id', 'action', u ->> 'action', 'normalized_name', p_normalized_name,
                           'track_link', link -> 'action'));
END $$;

-- Producers whose name contains the term (case and accents of the term aside), with their credited
-- tracks and the artists of those tracks; most tracks first.
CREATE FUNCTION music.search_producers(search_term TEXT)
RETURNS TABLE(id uuid, name text, normalized_name text, image_url text, instagram_handle text,
              enrichment_failed boolean, track_count bigint, artist_count bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pattern text;
BEGIN
    IF search_term IS NULL THEN
        RAISE EXCEPTION 'search_term must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF btrim(search_term) = '' OR length(search_term) > 200 THEN
        RAISE EXCEPTION 'search_term must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    pattern := '%' || replace(replace(replace(lower(btrim(search_term)), '\', '\\'), '%', '\%'), '_', '\_') || '%';
    RETURN QUERY
    SELECT p.id, p.name, p.normalized_name, p.image_url, p.instagram_handle, p.enrichment_failed,
           count(DISTINCT tp.track_id), count(DISTINCT al.artist_id)
    FROM music.producers p
    LEFT JOIN music.track_producers tp ON tp.producer_id = p.id
    LEFT JOIN music.tracks t ON t.id = tp.track_id
    LEFT JOIN music.albums al ON al.id = t.album_id
    WHERE lower(p.name) LIKE pattern OR p.normalized_name LIKE pattern
    GROUP BY p.id
    ORDER BY count(DISTINCT tp.track_id) DESC, p.name, p.id;
END $$;

CREATE FUNCTION music.get_producer_collaborations(producer_id UUID)
RETURNS TABLE(artist_id uuid, artist_name text, track_count bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF producer_id IS NULL THEN
        RAISE EXCEPTION 'producer_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT FROM music.producers p WHERE p.id = get_producer_collaborations.producer_id) THEN
        RAISE EXCEPTION 'producer % does not exist', producer_id USING ERRCODE = '42704';
    END IF;
    RETURN QUERY
    SELECT a.id, a.name, count(DISTINCT tp.track_id)
    FROM music.track_producers tp
    JOIN music.tracks t ON t.id = tp.track_id
    JOIN music.albums al ON al.id = t.album_id
    JOIN music.artists a ON a.id = al.artist_id
    WHERE tp.producer_id = get_producer_collaborations.producer_id
    GROUP BY a.id, a.name
    ORDER BY count(DISTINCT tp.track_id) DESC, a.name;
END $$;

REVOKE ALL ON FUNCTION music.begin_operation(text, text, jsonb), music.finish_operation(text, text, jsonb),
    music.require_object(jsonb, text), music.require_key(text, text), music.release_date(text),
    music.upsert_one(regclass, jsonb, text[]), music.normalize_track_name(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION music.start_artist_discovery(text), music.start_bulk_artist_discovery(text, int, int),
    music.start_album_discovery(uuid, int), music.process_artist_atomic(jsonb, text, text),
    music.process_album_atomic(jsonb, text, text), music.process_track_atomic(jsonb, text, text),
    music.process_track_batch(jsonb[], uuid, uuid), music.process_producer_atomic(jsonb, text, text),
    music.search_producers(text), music.get_producer_collaborations(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION music.search_producers(text), music.get_producer_collaborations(uuid) TO music_reader;
GRANT EXECUTE ON FUNCTION music.start_artist_discovery(text), music.start_bulk_artist_discovery(text, int, int),
    music.start_album_discovery(uuid, int), music.process_artist_atomic(jsonb, text, text),
    music.process_album_atomic(jsonb, text, text), music.process_track_atomic(jsonb, text, text),
    music.process_track_batch(jsonb[], uuid, uuid), music.process_producer_atomic(jsonb, text, text) TO music_worker;

-- campaigns: lead-generation campaigns (Google Maps scraping by ZIP code, Facebook and LinkedIn
-- enrichment, Bouncer email verification) on top of conveyor. Run in a database that has
-- CREATE EXTENSION conveyor, as a role that owns what it creates and holds conveyor_admin.
\set ON_ERROR_STOP on

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'campaigns_worker') THEN
        CREATE ROLE campaigns_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'campaigns_admin') THEN
        CREATE ROLE campaigns_admin NOLOGIN;
    END IF;
END $$;
-- Workers lease and ack pipeline jobs; admins also read the tables and create campaigns.
GRANT conveyor_worker TO campaigns_worker;
GRANT campaigns_worker TO campaigns_admin;

CREATE SCHEMA campaigns;
GRANT USAGE ON SCHEMA campaigns TO campaigns_worker;

CREATE TABLE campaigns.gmaps_campaigns (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                    text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description             text,
    keywords                text[] NOT NULL DEFAULT '{}',
    location                text,
    status                  text NOT NULL DEFAULT 'running'
                            CHECK (status IN ('draft', 'running', 'paused', 'completed')),
    budget                  numeric(24, 6) CHECK (budget >= 0),
    settings                jsonb NOT NULL DEFAULT '{}',
    total_zips              integer NOT NULL DEFAULT 0,
    zips_scraped            integer NOT NULL DEFAULT 0,
    total_businesses        integer NOT NULL DEFAULT 0,
    total_emails            integer NOT NULL DEFAULT 0,
    total_verified_emails   integer NOT NULL DEFAULT 0,
    total_facebook_pages    integer NOT NULL DEFAULT 0,
    total_linkedin_profiles integer NOT NULL DEFAULT 0,
    total_cost              numeric(24, 6) NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    statistics_updated_at   timestamptz,
    completed_at            timestamptz
);

CREATE TABLE campaigns.gmaps_campaign_coverage (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id      uuid NOT NULL REFERENCES campaigns.gmaps_campaigns ON DELETE CASCADE,
    zip_code         varchar(10) NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'scraped')),
    estimated_cost   numeric(24, 6),
    businesses_found integer,
    emails_found     integer,
    actual_cost      numeric(24, 6),
    scraped_at       timestamptz,
    UNIQUE (campaign_id, zip_code)
);
CREATE INDEX idx_campaign_coverage_campaign_id ON campaigns.gmaps_campaign_coverage (campaign_id);

CREATE TABLE campaigns.gmaps_businesses (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    campaign_id          uuid NOT NULL REFERENCES campaigns.gmaps_campaigns ON DELETE CASCADE,
    zip_code             varchar(10) NOT NULL,
    place_id             text NOT NULL,
    name                 text NOT NULL,
    address              text,
    phone                text,
    website              text,
    category             text,
    rating               numeric(2, 1) CHECK (rating BETWEEN 0 AND 5),
    reviews_count        integer CHECK (reviews_count >= 0),
    latitude             double precision,
    longitude            double precision,
    email                text,
    email_source         text CHECK (email_source IN ('google_maps', 'facebook', 'linkedin')),
    email_status         text CHECK (email_status IN ('deliverable', 'undeliverable', 'risky', 'unknown')),
    email_verification   jsonb,
    email_verified_at    timestamptz,
    facebook_status      text NOT NULL DEFAULT 'pending'
                         CHECK (facebook_status IN ('pending', 'found', 'not_found', 'failed')),
    facebook_url         text,
    facebook_data        jsonb,
    facebook_enriched_at timestamptz,
    linkedin_status      text NOT NULL DEFAULT 'pending'
                         CHECK (linkedin_status IN ('pending', 'found', 'not_found', 'failed')),
    linkedin_url         text,
    linkedin_data        jsonb,
    linkedin_enriched_at timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_businesses_campaign_id ON campaigns.gmaps_businesses (campaign_id);
CREATE UNIQUE INDEX idx_businesses_place_id ON campaigns.gmaps_businesses (place_id);
-- What get_businesses_for_enrichment looks for: small partial indexes of the work still to do.
CREATE INDEX idx_businesses_facebook_pending ON campaigns.gmaps_businesses (campaign_id, created_at, id)
    WHERE facebook_status = 'pending';
CREATE INDEX idx_businesses_linkedin_pending ON campaigns.gmaps_businesses (campaign_id, created_at, id)
    WHERE linkedin_status = 'pending';
CREATE INDEX idx_businesses_email_unverified ON campaigns.gmaps_businesses (campaign_id, created_at, id)
    WHERE email IS NOT NULL AND email_status IS NULL;

-- One row per charge; id is conveyor's ledger entry, so a repeated (idempotent) charge adds no row.
CREATE TABLE campaigns.gmaps_api_costs (
    id              uuid PRIMARY KEY,
    campaign_id     uuid NOT NULL REFERENCES campaigns.gmaps_campaigns ON DELETE CASCADE,
    service         varchar(64) NOT NULL,
    items_processed integer NOT NULL CHECK (items_processed >= 0),
    cost_usd        numeric(24, 6) NOT NULL CHECK (cost_usd >= 0),
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_api_costs_campaign_id ON campaigns.gmaps_api_costs (campaign_id);

-- Roles reach the tables only through the functions below; admins may also read them.
ALTER TABLE campaigns.gmaps_campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaigns.gmaps_campaign_coverage ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaigns.gmaps_businesses ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaigns.gmaps_api_costs ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON ALL TABLES IN SCHEMA campaigns FROM PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA campaigns TO campaigns_admin;
CREATE POLICY admin_reads ON campaigns.gmaps_campaigns FOR SELECT TO campaigns_admin USING (true);
CREATE POLICY admin_reads ON campaigns.gmaps_campaign_coverage FOR SELECT TO campaigns_admin USING (true);
CREATE POLICY admin_reads ON campaigns.gmaps_businesses FOR SELECT TO campaigns_admin USING (true);
CREATE POLICY admin_reads ON campaigns.gmaps_api_costs FOR SELECT TO campaigns_admin USING (true);

-- The pipeline's jobs (see worker/pipeline.py); backoff short: the simulated API's outages are brief.
SELECT conveyor.create_queue('campaigns', '{
    "lease_seconds": 120, "max_attempts": 3, "backoff_base_seconds": 1, "backoff_max_seconds": 4,
    "job_types": ["SCRAPE_ZIP", "ENRICH_FACEBOOK", "ENRICH_LINKEDIN", "VERIFY_EMAILS", "UPDATE_STATISTICS"],
    "required_keys": ["campaign_id"],
    "description": "lead-generation campaigns: scrape ZIPs, enrich, verify emails, statistics"}');

------------------------------------------------------------------------------------------------------
-- The envelope every function returns: {success, error, error_code, retry_recommended, ...fields}.

-- Success: the standard fields, then the function's own.
CREATE FUNCTION campaigns.ok(fields jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT '{"success": true, "error": null, "error_code": null, "retry_recommended": false}'::jsonb || fields $$;

-- Failure: the error's message and SQLSTATE; only conflicts that a new attempt may not meet are retried.
CREATE FUNCTION campaigns.failure(sqlstate text, message text) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'success', false, 'error', message, 'error_code', sqlstate,
        'retry_recommended', sqlstate IN ('40001', '40P01', '55P03'),
        'user_message', CASE sqlstate
            WHEN '23505' THEN 'Duplicate record detected'
            WHEN '23503' THEN 'Referenced record not found'
            WHEN '40P01' THEN 'Operation conflict, please retry'
            WHEN '40001' THEN 'Concurrent modification, please retry'
            WHEN '55P03' THEN 'Resource busy, please retry'
            WHEN 'CV001' THEN 'Campaign budget exceeded'
            WHEN '22023' THEN 'Invalid input'
            WHEN '22004' THEN 'Missing input'
            ELSE 'Database error' END)
$$;

-- Raises 22004 when value is NULL, naming the parameter.
CREATE FUNCTION campaigns.require(value anyelement, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', name USING ERRCODE = '22004';
    END IF;
END $$;

-- Raises 22023 with message when ok is false.
CREATE FUNCTION campaigns.check_arg(ok boolean, message text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT coalesce(ok, false) THEN
        RAISE EXCEPTION '%', message USING ERRCODE = '22023';
    END IF;
END $$;

-- Locks a campaign row (FOR UPDATE) or raises 23503 when there is none.
CREATE FUNCTION campaigns.lock_campaign(campaign_id uuid) RETURNS campaigns.gmaps_campaigns
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row campaigns.gmaps_campaigns;
BEGIN
    SELECT * INTO v_row FROM campaigns.gmaps_campaigns c
    WHERE c.id OPERATOR(pg_catalog.=) campaign_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', campaign_id USING ERRCODE = '23503';
    END IF;
    RETURN v_row;
END $$;

-- The conveyor cost account of a campaign.
CREATE FUNCTION campaigns.account_name(campaign_id uuid) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'campaigns:' || campaign_id::text $$;

------------------------------------------------------------------------------------------------------
-- 1. A campaign and all its ZIP codes, with its cost account (budget = hard limit), in one transaction.
CREATE FUNCTION campaigns.create_campaign_with_coverage(p_campaign_data jsonb, p_zip_codes jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id uuid;
    v_budget numeric;
    v_bad text;
    v_given integer;
    v_zips integer;
BEGIN
    PERFORM campaigns.require(p_campaign_data, 'p_campaign_data');
    PERFORM campaigns.require(p_zip_codes, 'p_zip_codes');
    PERFORM campaigns.check_arg(jsonb_typeof(p_campaign_data) = 'object', 'p_campaign_data must be a JSON object');
    SELECT string_agg(k, ', ') INTO v_bad FROM jsonb_object_keys(p_campaign_data) k
    WHERE k NOT IN ('id', 'name', 'description', 'keywords', 'location', 'status', 'budget', 'settings');
    PERFORM campaigns.check_arg(v_bad IS NULL, 'p_campaign_data has unknown fields: ' || v_bad);
    PERFORM campaigns.check_arg(jsonb_typeof(p_campaign_data -> 'name') = 'string'
                                AND length(p_campaign_data ->> 'name') BETWEEN 1 AND 200,
                                'p_campaign_data.name must be a string of 1 to 200 characters');
    PERFORM campaigns.check_arg(coalesce(jsonb_typeof(p_campaign_data -> 'keywords'), 'array') = 'array'
                                AND NOT EXISTS (SELECT FROM jsonb_array_elements(coalesce(p_campaign_data -> 'keywords', '[]')) e
                                                WHERE jsonb_typeof(e) <> 'string'),
                                'p_campaign_data.keywords must be an array of strings');
    PERFORM campaigns.check_arg(coalesce(jsonb_typeof(p_campaign_data -> 'budget'), 'number') IN ('number', 'null')
                                AND coalesce((p_campaign_data ->> 'budget')::numeric, 0) >= 0,
                                'p_campaign_data.budget must be a number, 0 or more');
    PERFORM campaigns.check_arg(coalesce(p_campaign_data ->> 'status', 'running') IN ('draft', 'running', 'paused'),
                                'p_campaign_data.status must be draft, running or paused');
    PERFORM campaigns.check_arg(coalesce(jsonb_typeof(p_campaign_data -> 'settings'), 'object') = 'object',
                                'p_campaign_data.settings must be a JSON object');
    PERFORM campaigns.check_arg(coalesce(p_campaign_data ->> 'id', '00000000-0000-0000-0000-000000000000')
                                ~ '^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$',
                                'p_campaign_data.id must be a UUID');
    PERFORM campaigns.check_arg(jsonb_typeof(p_zip_codes) = 'array', 'p_zip_codes must be a JSON array');
    v_given := jsonb_array_length(p_zip_codes);
    PERFORM campaigns.check_arg(v_given BETWEEN 1 AND 100000, 'p_zip_codes must hold 1 to 100000 ZIP codes');
    -- Each element: "94103" or {"zip_code": "94103", "estimated_cost": 0.05}.
    SELECT min(format('p_zip_codes[%s]', i - 1)) INTO v_bad
    FROM jsonb_array_elements(p_zip_codes) WITH ORDINALITY AS z(e, i)
    WHERE NOT coalesce(CASE jsonb_typeof(e)
        WHEN 'string' THEN e #>> '{}' ~ '^[0-9]{5}(-[0-9]{4})?$'
        WHEN 'object' THEN e ->> 'zip_code' ~ '^[0-9]{5}(-[0-9]{4})?$'
                           AND (SELECT count(*) FROM jsonb_object_keys(e) k WHERE k NOT IN ('zip_code', 'estimated_cost')) = 0
                           AND coalesce(jsonb_typeof(e -> 'estimated_cost'), 'number') = 'number'
                           AND coalesce((e ->> 'estimated_cost')::numeric, 0) >= 0
        END, false);
    PERFORM campaigns.check_arg(v_bad IS NULL, v_bad || ' must be a ZIP code ("12345" or "12345-6789"), or {"zip_code", "estimated_cost"}');

    v_id := coalesce((p_campaign_data ->> 'id')::uuid, gen_random_uuid());
    v_budget := (p_campaign_data ->> 'budget')::numeric;
    INSERT INTO campaigns.gmaps_campaigns (id, name, description, keywords, location, status, budget, settings)
    VALUES (v_id, p_campaign_data ->> 'name', p_campaign_data ->> 'description',
            ARRAY(SELECT jsonb_array_elements_text(coalesce(p_campaign_data -> 'keywords', '[]'))),
            p_campaign_data ->> 'location', coalesce(p_campaign_data ->> 'status', 'running'), v_budget,
            coalesce(p_campaign_data -> 'settings', '{}'));
    -- A ZIP listed twice is covered once (its first estimate counts).
    INSERT INTO campaigns.gmaps_campaign_coverage (campaign_id, zip_code, estimated_cost)
    SELECT DISTINCT ON (zip) v_id, zip, cost
    FROM (SELECT coalesce(e ->> 'zip_code', e #>> '{}') AS zip, (e ->> 'estimated_cost')::numeric AS cost, i
          FROM jsonb_array_elements(p_zip_codes) WITH ORDINALITY AS z(e, i)) s
    ORDER BY zip, i;
    GET DIAGNOSTICS v_zips = ROW_COUNT;
    UPDATE campaigns.gmaps_campaigns SET total_zips = v_zips WHERE id OPERATOR(pg_catalog.=) v_id;
    PERFORM conveyor.account_create(campaigns.account_name(v_id), budget => v_budget, hard_limit => true,
                                    metadata => jsonb_build_object('campaign_name', p_campaign_data ->> 'name'));
    RETURN campaigns.ok(jsonb_build_object('campaign_id', v_id, 'zip_count', v_zips,
                                           'duplicate_zips', v_given - v_zips, 'budget', v_budget));
EXCEPTION WHEN OTHERS THEN
    RETURN campaigns.failure(SQLSTATE, SQLERRM);
END $$;

------------------------------------------------------------------------------------------------------
-- 2. Businesses found in one ZIP, deduplicated by place_id through conveyor.upsert_counts.
CREATE FUNCTION campaigns.insert_businesses_batch(p_campaign_id uuid, p_zip_code varchar, p_businesses jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_bad text;
    v_rows jsonb;
    r record;
BEGIN
    PERFORM campaigns.require(p_campaign_id, 'p_campaign_id');
    PERFORM campaigns.require(p_zip_code, 'p_zip_code');
    PERFORM campaigns.require(p_businesses, 'p_businesses');
    PERFORM campaigns.check_arg(p_zip_code ~ '^[0-9]{5}(-[0-9]{4})?$', format('p_zip_code %L is not a ZIP code', left(p_zip_code, 20)));
    PERFORM campaigns.check_arg(jsonb_typeof(p_businesses) = 'array' AND jsonb_array_length(p_businesses) <= 10000,
                                'p_businesses must be a JSON array of at most 10000 businesses');
    IF NOT EXISTS (SELECT FROM campaigns.gmaps_campaigns WHERE id OPERATOR(pg_catalog.=) p_campaign_id) THEN
        RAISE EXCEPTION 'campaign % does not exist', p_campaign_id USING ERRCODE = '23503';
    END IF;
    IF jsonb_array_length(p_businesses) = 0 THEN
        RETURN campaigns.ok('{"inserted": 0, "updated": 0, "skipped": 0, "unchanged": 0, "duplicates": 0, "total": 0}');
    END IF;
    SELECT min(format('p_businesses[%s]: %s', i - 1, why)) INTO v_bad FROM (
        SELECT i, CASE
            WHEN jsonb_typeof(e) <> 'object' THEN 'not a JSON object'
            WHEN coalesce(length(e ->> 'place_id'), 0) NOT BETWEEN 1 AND 300 THEN 'place_id must be a string of 1 to 300 characters'
            WHEN coalesce(length(e ->> 'name'), 0) = 0 THEN 'name is required'
            WHEN EXISTS (SELECT FROM jsonb_object_keys(e) k WHERE k NOT IN
                 ('place_id', 'name', 'address', 'phone', 'website', 'category', 'rating', 'reviews_count',
                  'latitude', 'longitude', 'email')) THEN
                 'unknown fields (allowed: place_id, name, address, phone, website, category, rating, reviews_count, latitude, longitude, email)'
            END AS why
        FROM jsonb_array_elements(p_businesses) WITH ORDINALITY AS b(e, i)) s
    WHERE why IS NOT NULL;
    PERFORM campaigns.check_arg(v_bad IS NULL, v_bad);
    -- campaign_id and zip_code stay those of the campaign that found the place first.
    SELECT jsonb_agg(e || jsonb_build_object('campaign_id', p_campaign_id, 'zip_code', p_zip_code)
                       || CASE WHEN e ->> 'email' IS NOT NULL THEN '{"email_source": "google_maps"}'::jsonb ELSE '{}'::jsonb END
                     ORDER BY i)
    INTO v_rows FROM jsonb_array_elements(jsonb_strip_nulls(p_businesses)) WITH ORDINALITY AS b(e, i);
    SELECT * INTO r FROM conveyor.upsert_counts('campaigns.gmaps_businesses', v_rows, '{place_id}',
        '{"touch_columns": ["updated_at"], "immutable_columns": ["campaign_id", "zip_code", "email_source"],
          "on_duplicate": "last"}');
    RETURN campaigns.ok(jsonb_build_object('inserted', r.inserted, 'updated', r.updated,
        'skipped', r.unchanged + r.duplicates, 'unchanged', r.unchanged, 'duplicates', r.duplicates,
        'total', jsonb_array_length(p_businesses)));
EXCEPTION WHEN OTHERS THEN
    RETURN campaigns.failure(SQLSTATE, SQLERRM);
END $$;

------------------------------------------------------------------------------------------------------
-- 3. Recounts a campaign's totals under its row lock (concurrent recounts wait, then recount).
CREATE FUNCTION campaigns.update_campaign_statistics(p_campaign_id uuid)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c campaigns.gmaps_campaigns;
    b record;
    z record;
    v_cost numeric;
    v_status text;
BEGIN
    PERFORM campaigns.require(p_campaign_id, 'p_campaign_id');
    c := campaigns.lock_campaign(p_campaign_id);
    SELECT count(*) AS businesses,
           count(*) FILTER (WHERE email IS NOT NULL) AS emails,
           count(*) FILTER (WHERE email_status = 'deliverable') AS verified,
           count(*) FILTER (WHERE facebook_status = 'found') AS facebook,
           count(*) FILTER (WHERE linkedin_status = 'found') AS linkedin,
           count(*) FILTER (WHERE facebook_status = 'pending' OR linkedin_status = 'pending'
                            OR (email IS NOT NULL AND email_status IS NULL)) AS unfinished
    INTO b FROM campaigns.gmaps_businesses WHERE campaign_id OPERATOR(pg_catalog.=) p_campaign_id;
    SELECT count(*) AS zips, count(*) FILTER (WHERE status = 'scraped') AS scraped
    INTO z FROM campaigns.gmaps_campaign_coverage WHERE campaign_id OPERATOR(pg_catalog.=) p_campaign_id;
    SELECT coalesce(sum(cost_usd), 0) INTO v_cost FROM campaigns.gmaps_api_costs
    WHERE campaign_id OPERATOR(pg_catalog.=) p_campaign_id;
    v_status := CASE WHEN c.status = 'running' AND z.scraped = z.zips AND b.unfinished = 0 THEN 'completed' ELSE c.status END;
    UPDATE campaigns.gmaps_campaigns SET
        total_zips = z.zips, zips_scraped = z.scraped, total_businesses = b.businesses, total_emails = b.emails,
        total_verified_emails = b.verified, total_facebook_pages = b.facebook, total_linkedin_profiles = b.linkedin,
        total_cost = v_cost, status = v_status,
        completed_at = CASE WHEN v_status = 'completed' THEN coalesce(completed_at, now()) END,
        statistics_updated_at = now(), updated_at = now()
    WHERE id OPERATOR(pg_catalog.=) p_campaign_id;
    RETURN campaigns.ok(jsonb_build_object('campaign_id', p_campaign_id, 'status', v_status,
        'total_zips', z.zips, 'zips_scraped', z.scraped, 'total_businesses', b.businesses,
        'total_emails', b.emails, 'total_verified_emails', b.verified, 'total_facebook_pages', b.facebook,
        'total_linkedin_profiles', b.linkedin, 'total_cost', v_cost));
EXCEPTION WHEN OTHERS THEN
    RETURN campaigns.failure(SQLSTATE, SQLERRM);
END $$;

------------------------------------------------------------------------------------------------------
-- 4. One API cost: a charge in conveyor's ledger (refused past the budget), its cost row, the new total.
-- p_metadata.idempotency_key makes a repeated call return the first charge and charge nothing.
CREATE FUNCTION campaigns.track_campaign_cost(p_campaign_id uuid, p_service varchar, p_items_processed int,
                                              p_cost_usd numeric, p_metadata jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key text;
    v_charge record;
    v_new boolean;
BEGIN
    PERFORM campaigns.require(p_campaign_id, 'p_campaign_id');
    PERFORM campaigns.require(p_service, 'p_service');
    PERFORM campaigns.require(p_items_processed, 'p_items_processed');
    PERFORM campaigns.require(p_cost_usd, 'p_cost_usd');
    PERFORM campaigns.check_arg(p_service ~ '^[a-z][a-z0-9_]{0,63}$', format('p_service %L must be 1 to 64 lower-case letters, digits or _', left(p_service, 70)));
    PERFORM campaigns.check_arg(p_items_processed >= 0, 'p_items_processed must be 0 or more');
    PERFORM campaigns.check_arg(p_cost_usd >= 0 AND p_cost_usd < 1e12 AND scale(p_cost_usd) <= 6,
                                'p_cost_usd must be 0 or more, below 10^12, with at most 6 decimals');
    PERFORM campaigns.check_arg(coalesce(jsonb_typeof(p_metadata), 'object') = 'object', 'p_metadata must be a JSON object or NULL');
    PERFORM campaigns.check_arg(coalesce(jsonb_typeof(p_metadata -> 'idempotency_key'), 'string') = 'string',
                                'p_metadata.idempotency_key must be a string');
    v_key := p_metadata ->> 'idempotency_key';
    -- The campaign's row lock orders every cost of the campaign; the ledger's running total is the truth.
    PERFORM campaigns.lock_campaign(p_campaign_id);
    SELECT * INTO v_charge FROM conveyor.charge(campaigns.account_name(p_campaign_id), p_service, p_cost_usd,
        items => p_items_processed, metadata => p_metadata, idempotency_key => v_key);
    INSERT INTO campaigns.gmaps_api_costs (id, campaign_id, service, items_processed, cost_usd, metadata)
    VALUES (v_charge.entry_id, p_campaign_id, p_service, p_items_processed, p_cost_usd, coalesce(p_metadata, '{}'))
    ON CONFLICT (id) DO NOTHING;
    v_new := FOUND;
    UPDATE campaigns.gmaps_campaigns SET total_cost = v_charge.total, updated_at = now()
    WHERE id OPERATOR(pg_catalog.=) p_campaign_id;
    RETURN campaigns.ok(jsonb_build_object('cost_id', v_charge.entry_id, 'new_total_cost', v_charge.total,
        'budget_remaining', v_charge.available, 'duplicate', NOT v_new));
EXCEPTION WHEN OTHERS THEN
    RETURN campaigns.failure(SQLSTATE, SQLERRM);
END $$;

------------------------------------------------------------------------------------------------------
-- 5. Marks one ZIP scraped with its results; reports how many ZIPs of the campaign are still pending.
CREATE FUNCTION campaigns.update_coverage_status(p_campaign_id uuid, p_zip_code varchar, p_businesses_found int,
                                                 p_emails_found int, p_actual_cost numeric)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_pending integer;
BEGIN
    PERFORM campaigns.require(p_campaign_id, 'p_campaign_id');
    PERFORM campaigns.require(p_zip_code, 'p_zip_code');
    PERFORM campaigns.require(p_businesses_found, 'p_businesses_found');
    PERFORM campaigns.require(p_emails_found, 'p_emails_found');
    PERFORM campaigns.require(p_actual_cost, 'p_actual_cost');
    PERFORM campaigns.check_arg(p_businesses_found >= 0 AND p_emails_found >= 0, 'p_businesses_found and p_emails_found must be 0 or more');
    PERFORM campaigns.check_arg(p_emails_found <= p_businesses_found, 'p_emails_found cannot exceed p_businesses_found');
    PERFORM campaigns.check_arg(p_actual_cost >= 0 AND p_actual_cost < 1e12, 'p_actual_cost must be 0 or more, below 10^12');
    -- The campaign's lock makes the pending count exact: of two last ZIPs finishing at once, the
    -- second sees the first's row and reports 0, so exactly one caller starts the next stage.
    PERFORM campaigns.lock_campaign(p_campaign_id);
    UPDATE campaigns.gmaps_campaign_coverage SET status = 'scraped', businesses_found = p_businesses_found,
        emails_found = p_emails_found, actual_cost = p_actual_cost, scraped_at = now()
    WHERE campaign_id OPERATOR(pg_catalog.=) p_campaign_id AND zip_code OPERATOR(pg_catalog.=) p_zip_code::text;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ZIP code % is not covered by campaign %', p_zip_code, p_campaign_id USING ERRCODE = '23503';
    END IF;
    SELECT count(*) INTO v_pending FROM campaigns.gmaps_campaign_coverage
    WHERE campaign_id OPERATOR(pg_catalog.=) p_campaign_id AND status = 'pending';
    UPDATE campaigns.gmaps_campaigns SET zips_scraped = total_zips - v_pending, updated_at = now()
    WHERE id OPERATOR(pg_catalog.=) p_campaign_id;
    RETURN campaigns.ok(jsonb_build_object('campaign_id', p_campaign_id, 'zip_code', p_zip_code,
        'status', 'scraped', 'zips_pending', v_pending));
EXCEPTION WHEN OTHERS THEN
    RETURN campaigns.failure(SQLSTATE, SQLERRM);
END $$;

------------------------------------------------------------------------------------------------------
-- 6. Facebook or LinkedIn results for many businesses; each element stands alone (bad ones are listed).
-- Element: {"business_id", "status": found|not_found|failed, "url", "email", "data": {...}}.
-- A found email fills the business's email when it has none.
CREATE FUNCTION campaigns.update_enrichment_batch(p_enrichment_type varchar, p_enrichments jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_updated integer;
    v_failures jsonb;
BEGIN
    PERFORM campaigns.require(p_enrichment_type, 'p_enrichment_type');
    PERFORM campaigns.require(p_enrichments, 'p_enrichments');
    PERFORM campaigns.check_arg(p_enrichment_type IN ('facebook', 'linkedin'),
                                format('p_enrichment_type %L must be facebook or linkedin', left(p_enrichment_type, 20)));
    PERFORM campaigns.check_arg(jsonb_typeof(p_enrichments) = 'array' AND jsonb_array_length(p_enrichments) <= 10000,
                                'p_enrichments must be a JSON array of at most 10000 elements');
    -- One statement: check each element, update the good ones, list the rest with why.
    WITH parsed AS (
        SELECT i, e, CASE
            WHEN jsonb_typeof(e) <> 'object' THEN 'not a JSON object'
            WHEN coalesce(e ->> 'business_id', '') !~ '^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$' THEN 'business_id must be a UUID'
            WHEN coalesce(e ->> 'status', '') NOT IN ('found', 'not_found', 'failed') THEN 'status must be found, not_found or failed'
            WHEN coalesce(jsonb_typeof(e -> 'data'), 'object') NOT IN ('object', 'null') THEN 'data must be a JSON object'
            WHEN coalesce(jsonb_typeof(e -> 'url'), 'string') NOT IN ('string', 'null') THEN 'url must be a string'
            WHEN coalesce(jsonb_typeof(e -> 'email'), 'string') NOT IN ('string', 'null')
                 OR coalesce(e ->> 'email', 'a@b') !~ '^[^@\s]+@[^@\s]+$' THEN 'email must be an email address'
            WHEN EXISTS (SELECT FROM jsonb_object_keys(e) k WHERE k NOT IN ('business_id', 'status', 'url', 'email', 'data'))
                 THEN 'unknown fields (allowed: business_id, status, url, email, data)'
            END AS why
        FROM jsonb_array_elements(p_enrichments) WITH ORDINALITY AS x(e, i)),
    valid AS (
        SELECT i, e, business_id, row_number() OVER (PARTITION BY business_id ORDER BY i) AS rn
        FROM (SELECT i, e, (e ->> 'business_id')::uuid AS business_id FROM parsed WHERE why IS NULL) v),
    changed AS (
        UPDATE campaigns.gmaps_businesses b SET
            facebook_status = CASE WHEN p_enrichment_type = 'facebook' THEN x.e ->> 'status' ELSE b.facebook_status END,
            facebook_url = CASE WHEN p_enrichment_type = 'facebook' THEN x.e ->> 'url' ELSE b.facebook_url END,
            facebook_data = CASE WHEN p_enrichment_type = 'facebook' THEN x.e -> 'data' ELSE b.facebook_data END,
            facebook_enriched_at = CASE WHEN p_enrichment_type = 'facebook' THEN now() ELSE b.facebook_enriched_at END,
            linkedin_status = CASE WHEN p_enrichment_type = 'linkedin' THEN x.e ->> 'status' ELSE b.linkedin_status END,
            linkedin_url = CASE WHEN p_enrichment_type = 'linkedin' THEN x.e ->> 'url' ELSE b.linkedin_url END,
            linkedin_data = CASE WHEN p_enrichment_type = 'linkedin' THEN x.e -> 'data' ELSE b.linkedin_data END,
            linkedin_enriched_at = CASE WHEN p_enrichment_type = 'linkedin' THEN now() ELSE b.linkedin_enriched_at END,
            email = coalesce(b.email, x.e ->> 'email'),
            email_source = CASE WHEN b.email IS NULL AND x.e ->> 'email' IS NOT NULL THEN p_enrichment_type ELSE b.email_source END,
            updated_at = now()
        FROM valid x
        WHERE x.rn = 1 AND b.id OPERATOR(pg_catalog.=) x.business_id
        RETURNING b.id)
    SELECT (SELECT count(*) FROM changed),
           coalesce(jsonb_agg(jsonb_build_object('index', f.i - 1, 'business_id', f.e -> 'business_id', 'error', f.why) ORDER BY f.i), '[]')
    INTO v_updated, v_failures
    FROM (SELECT i, e, why FROM parsed WHERE why IS NOT NULL
          UNION ALL SELECT i, e, 'business_id repeated in the batch' FROM valid WHERE rn > 1
          UNION ALL SELECT i, e, 'business not found' FROM valid
                    WHERE rn = 1 AND business_id NOT IN (SELECT id FROM changed)) f;
    RETURN campaigns.ok(jsonb_build_object('enrichment_type', p_enrichment_type, 'updated', v_updated,
        'failed', jsonb_array_length(v_failures), 'failures', v_failures));
EXCEPTION WHEN OTHERS THEN
    RETURN campaigns.failure(SQLSTATE, SQLERRM);
END $$;

------------------------------------------------------------------------------------------------------
-- 7. One Bouncer result: {"status": deliverable|undeliverable|risky|unknown, "score", "reason", ...}.
CREATE FUNCTION campaigns.update_email_verification(p_business_id uuid, p_email varchar, p_verification_data jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_email text;
    v_status text;
BEGIN
    PERFORM campaigns.require(p_business_id, 'p_business_id');
    PERFORM campaigns.require(p_email, 'p_email');
    PERFORM campaigns.require(p_verification_data, 'p_verification_data');
    PERFORM campaigns.check_arg(jsonb_typeof(p_verification_data) = 'object', 'p_verification_data must be a JSON object');
    v_status := p_verification_data ->> 'status';
    PERFORM campaigns.check_arg(v_status IN ('deliverable', 'undeliverable', 'risky', 'unknown'),
        format('p_verification_data.status %L must be deliverable, undeliverable, risky or unknown', left(v_status, 40)));
    SELECT email INTO v_email FROM campaigns.gmaps_businesses WHERE id OPERATOR(pg_catalog.=) p_business_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'business % does not exist', p_business_id USING ERRCODE = '23503';
    END IF;
    -- A result for another address than the business's is stale (its email changed): refuse it.
    PERFORM campaigns.check_arg(lower(v_email) = lower(p_email::text),
        format('p_email %L is not the email of business %s', left(p_email, 100), p_business_id));
    UPDATE campaigns.gmaps_businesses SET email_status = v_status, email_verification = p_verification_data,
        email_verified_at = now(), updated_at = now()
    WHERE id OPERATOR(pg_catalog.=) p_business_id;
    RETURN campaigns.ok(jsonb_build_object('business_id', p_business_id, 'email', v_email,
        'email_status', v_status, 'is_deliverable', v_status = 'deliverable'));
EXCEPTION WHEN OTHERS THEN
    RETURN campaigns.failure(SQLSTATE, SQLERRM);
END $$;

------------------------------------------------------------------------------------------------------
-- 8. A page of a campaign's businesses that still need facebook, linkedin or email (verification).
CREATE FUNCTION campaigns.get_businesses_for_enrichment(p_campaign_id uuid, p_enrichment_type varchar,
                                                        p_limit int, p_offset int)
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_page jsonb;
    v_count integer;
BEGIN
    PERFORM campaigns.require(p_campaign_id, 'p_campaign_id');
    PERFORM campaigns.require(p_enrichment_type, 'p_enrichment_type');
    PERFORM campaigns.require(p_limit, 'p_limit');
    PERFORM campaigns.require(p_offset, 'p_offset');
    PERFORM campaigns.check_arg(p_enrichment_type IN ('facebook', 'linkedin', 'email'),
        format('p_enrichment_type %L must be facebook, linkedin or email', left(p_enrichment_type, 20)));
    PERFORM campaigns.check_arg(p_limit BETWEEN 1 AND 1000, 'p_limit must be 1 to 1000');
    PERFORM campaigns.check_arg(p_offset >= 0, 'p_offset must be 0 or more');
    IF NOT EXISTS (SELECT FROM campaigns.gmaps_campaigns WHERE id OPERATOR(pg_catalog.=) p_campaign_id) THEN
        RAISE EXCEPTION 'campaign % does not exist', p_campaign_id USING ERRCODE = '23503';
    END IF;
    -- One row more than asked tells whether another page follows.
    SELECT coalesce(jsonb_agg(to_jsonb(p) - 'n' ORDER BY n), '[]') INTO v_page FROM (
        SELECT row_number() OVER (ORDER BY b.created_at, b.id) AS n, b.id, b.place_id, b.name, b.zip_code,
               b.address, b.phone, b.website, b.category, b.email
        FROM campaigns.gmaps_businesses b
        WHERE b.campaign_id OPERATOR(pg_catalog.=) p_campaign_id
          AND CASE p_enrichment_type
                WHEN 'facebook' THEN b.facebook_status = 'pending'
                WHEN 'linkedin' THEN b.linkedin_status = 'pending'
                ELSE b.email IS NOT NULL AND b.email_status IS NULL END
        ORDER BY b.created_at, b.id
        OFFSET p_offset LIMIT p_limit::bigint + 1) p;
    v_count := least(jsonb_array_length(v_page), p_limit);
    RETURN campaigns.ok(jsonb_build_object('campaign_id', p_campaign_id, 'enrichment_type', p_enrichment_type,
        'businesses', CASE WHEN jsonb_array_length(v_page) > p_limit THEN v_page - p_limit ELSE v_page END,
        'count', v_count, 'limit', p_limit, 'offset', p_offset,
        'has_more', jsonb_array_length(v_page) > p_limit,
        'next_offset', CASE WHEN jsonb_array_length(v_page) > p_limit THEN p_offset + p_limit END));
EXCEPTION WHEN OTHERS THEN
    RETURN campaigns.failure(SQLSTATE, SQLERRM);
END $$;

------------------------------------------------------------------------------------------------------
-- Only the roles call; helpers are internal.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA campaigns FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    campaigns.insert_businesses_batch(uuid, varchar, jsonb),
    campaigns.update_campaign_statistics(uuid),
    campaigns.track_campaign_cost(uuid, varchar, int, numeric, jsonb),
    campaigns.update_coverage_status(uuid, varchar, int, int, numeric),
    campaigns.update_enrichment_batch(varchar, jsonb),
    campaigns.update_email_verification(uuid, varchar, jsonb),
    campaigns.get_businesses_for_enrichment(uuid, varchar, int, int)
TO campaigns_worker;
GRANT EXECUTE ON FUNCTION campaigns.create_campaign_with_coverage(jsonb, jsonb) TO campaigns_admin;

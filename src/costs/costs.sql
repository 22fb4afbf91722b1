-- ===================================================================================================
-- Costs, budgets and quotas
-- ===================================================================================================

-- An account pays for calls (a campaign, a customer, a pipeline). Its running total is the sum of its
-- ledger; reserved the running sum of its open reservations. Both change only together with the
-- ledger or reservation rows they sum, in one statement (ledger_verify checks it).
-- An account with a hard budget keeps its whole running total in total, so that one row decides
-- every charge. Any other account (no budget, or a soft one) takes charges on account_slots rows,
-- one per backend slot, so that concurrent charges to one hot account do not queue on one row; its
-- running total is total plus the sum of its slots. account_update folds the slots back into total.
CREATE TABLE conveyor.accounts (
    account    text PRIMARY KEY,
    budget     numeric(24, 6) CHECK (budget >= 0),
    currency   text NOT NULL,
    hard_limit boolean NOT NULL,
    metadata   jsonb,
    total      numeric(30, 6) NOT NULL DEFAULT 0,
    reserved   numeric(30, 6) NOT NULL DEFAULT 0,
    entries    bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
) WITH (fillfactor = 50);
SELECT pg_catalog.pg_extension_config_dump('conveyor.accounts', '');

CREATE TABLE conveyor.account_slots (
    account text NOT NULL,
    slot    integer NOT NULL,
    total   numeric(30, 6) NOT NULL,
    entries bigint NOT NULL,
    PRIMARY KEY (account, slot)
) WITH (fillfactor = 50);
SELECT pg_catalog.pg_extension_config_dump('conveyor.account_slots', '');

-- The ledger: one immutable row per charge, refund or settlement.
CREATE TABLE conveyor.ledger (
    entry_id       uuid PRIMARY KEY,
    account        text NOT NULL,
    service        text NOT NULL,
    amount         numeric(24, 6) NOT NULL,
    items          integer NOT NULL,
    metadata       jsonb,
    reservation_id uuid,
    created_at     timestamptz NOT NULL
);
CREATE INDEX ledger_account ON conveyor.ledger (account, created_at);
SELECT pg_catalog.pg_extension_config_dump('conveyor.ledger', '');

-- Budget held for work of unknown cost. state: 'open' until it resolves, exactly once, as
-- 'settled' (charged through the ledger), 'released' or 'expired'.
CREATE TABLE conveyor.reservations (
    reservation_id uuid PRIMARY KEY,
    account        text NOT NULL,
    amount         numeric(24, 6) NOT NULL,
    state          text NOT NULL CHECK (state IN ('open', 'settled', 'released', 'expired')),
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    resolved_at    timestamptz,
    entry_id       uuid
);
CREATE INDEX reservations_open ON conveyor.reservations (account, expires_at) WHERE state = 'open';
CREATE INDEX reservations_expiry ON conveyor.reservations (expires_at) WHERE state = 'open';
SELECT pg_catalog.pg_extension_config_dump('conveyor.reservations', '');

-- A quota: quota_limit units per calendar window ('hour', 'day', 'month') in the time zone reset_tz.
-- used counts the window [window_start, window_end); the first consume after window_end starts the
-- next window.
CREATE TABLE conveyor.quotas (
    name         text PRIMARY KEY,
    quota_limit  bigint NOT NULL CHECK (quota_limit > 0),
    period       text NOT NULL CHECK (period IN ('hour', 'day', 'month')),
    reset_tz     text NOT NULL,
    costs        jsonb,
    used         bigint NOT NULL DEFAULT 0,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL
) WITH (fillfactor = 50);
SELECT pg_catalog.pg_extension_config_dump('conveyor.quotas', '');

-- GCRA rate limiters: one row per key holding its theoretical arrival time (microseconds since
-- 2000-01-01, PostgreSQL's timestamp origin). A row whose tat has passed is as good as absent;
-- conveyor.maintain() deletes those.
CREATE TABLE conveyor.rate_limits (
    key text PRIMARY KEY,
    tat bigint NOT NULL
) WITH (fillfactor = 50);

-- The calendar window of `period` in time zone `reset_tz` that contains `instant`:
-- date_trunc in that zone for the start; the end is the start of the next window, found by truncating
-- an instant safely inside it (local days last 23 to 25 hours, months 28 to 31 days), so a window
-- always ends at the local midnight (or hour, or first of the month) whatever the offset change.
-- instant must be a time conveyor can compute with (README, "Limits"): finite, from 1900-01-01 to
-- 9999-12-31 UTC; anything else is 22023 naming it.
CREATE FUNCTION conveyor.quota_window(period text, reset_tz text, instant timestamptz DEFAULT pg_catalog.now(),
                                      OUT window_start timestamptz, OUT window_end timestamptz)
    LANGUAGE plpgsql STABLE @PINNED@
    AS $body$
BEGIN
    IF period IS NULL OR period NOT IN ('hour', 'day', 'month') THEN
        RAISE EXCEPTION 'period "%" is not one of hour, day, month', period
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF instant OPERATOR(pg_catalog.<) '1900-01-01 00:00:00+00'::timestamptz
       OR instant OPERATOR(pg_catalog.>=) '10000-01-01 00:00:00+00'::timestamptz THEN
        RAISE EXCEPTION 'instant must be between 1900-01-01 00:00:00+00 and 9999-12-31 23:59:59+00, not "%"', instant
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'conveyor stores only finite times it can compute with (subtract, add leases and backoffs, truncate to periods).';
    END IF;
    SELECT s.start, pg_catalog.date_trunc(period, s.start OPERATOR(pg_catalog.+) CASE period
               WHEN 'hour' THEN interval '90 minutes' WHEN 'day' THEN interval '26 hours'
               WHEN 'month' THEN interval '768 hours' END, reset_tz)
    INTO window_start, window_end
    FROM (SELECT pg_catalog.date_trunc(period, instant, reset_tz) AS start) s;
END
$body$;
COMMENT ON FUNCTION conveyor.quota_window(text,text,timestamp with time zone) IS 'Returns the calendar window (hour, day or month in a time zone) that contains an instant.';

-- The projection and risk level of quota_status (README, "Risk levels"), for any instant:
-- projected = used extrapolated to the end of the window at the rate so far, the rate measured over
-- at least the first 1/24 of the window (one hour of a day); risk_level
--   'exhausted' when used >= quota_limit,
--   'high'      when projected >= quota_limit or used >= 90% of it,
--   'medium'    when projected >= 75% of quota_limit,
--   'low'       otherwise.
-- Computed in numeric and the projection clamped to bigint, so that no stored quota (not one defined
-- before limits were checked, with the largest bigint as its limit) can make quota_status fail. The
-- times must be ones conveyor can compute with (README, "Limits") and the window must not be empty:
-- 22023 otherwise.
CREATE FUNCTION conveyor.quota_projection(used bigint, quota_limit bigint, window_start timestamptz,
                                          window_end timestamptz, instant timestamptz DEFAULT pg_catalog.now(),
                                          OUT projected_usage bigint, OUT risk_level text)
    LANGUAGE plpgsql IMMUTABLE @PINNED@
    AS $body$
DECLARE
    arg text;
    val timestamptz;
    span numeric;
    projected numeric;
BEGIN
    FOR arg, val IN VALUES ('window_start', window_start), ('window_end', window_end), ('instant', instant) LOOP
        IF val OPERATOR(pg_catalog.<) '1900-01-01 00:00:00+00'::timestamptz
           OR val OPERATOR(pg_catalog.>=) '10000-01-01 00:00:00+00'::timestamptz THEN
            RAISE EXCEPTION '% must be between 1900-01-01 00:00:00+00 and 9999-12-31 23:59:59+00, not "%"', arg, val
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'conveyor stores only finite times it can compute with (subtract, add leases and backoffs, truncate to periods).';
        END IF;
    END LOOP;
    IF window_end OPERATOR(pg_catalog.<=) window_start THEN
        RAISE EXCEPTION 'window_end (%) must be after window_start (%)', window_end, window_start
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    span := extract(epoch FROM window_end OPERATOR(pg_catalog.-) window_start);
    projected := pg_catalog.ceil((used::numeric OPERATOR(pg_catalog.*) span) OPERATOR(pg_catalog./)
                 GREATEST(extract(epoch FROM LEAST(instant, window_end) OPERATOR(pg_catalog.-) window_start),
                          span OPERATOR(pg_catalog./) 24));
    projected_usage := LEAST(GREATEST(projected, -9223372036854775808::numeric),
                                        9223372036854775807::numeric)::bigint;
    risk_level := CASE
        WHEN used OPERATOR(pg_catalog.>=) quota_limit THEN 'exhausted'
        WHEN projected OPERATOR(pg_catalog.>=) quota_limit::numeric
             OR (used::numeric OPERATOR(pg_catalog.*) 10) OPERATOR(pg_catalog.>=) (quota_limit::numeric OPERATOR(pg_catalog.*) 9)
             THEN 'high'
        WHEN (projected OPERATOR(pg_catalog.*) 4) OPERATOR(pg_catalog.>=) (quota_limit::numeric OPERATOR(pg_catalog.*) 3)
             THEN 'medium'
        ELSE 'low' END;
END
$body$;
COMMENT ON FUNCTION conveyor.quota_projection(bigint,bigint,timestamp with time zone,timestamp with time zone,timestamp with time zone) IS 'Projects a window''s use to its end at the rate so far and classifies the risk: low, medium, high, exhausted.';

CREATE FUNCTION conveyor.account_create(account text, budget numeric DEFAULT NULL, currency text DEFAULT 'USD',
                                        hard_limit boolean DEFAULT true, metadata jsonb DEFAULT NULL)
    RETURNS void
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_account_create';
COMMENT ON FUNCTION conveyor.account_create(text,numeric,text,boolean,jsonb) IS 'Creates an account with an optional budget, its currency and whether the budget is a hard limit.';
CREATE FUNCTION conveyor.account_update(account text, budget numeric DEFAULT NULL, currency text DEFAULT NULL,
                                        hard_limit boolean DEFAULT NULL, metadata jsonb DEFAULT NULL,
                                        remove_budget boolean DEFAULT false)
    RETURNS void
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_account_update';
COMMENT ON FUNCTION conveyor.account_update(text,numeric,text,boolean,jsonb,boolean) IS 'Changes the given settings of an account (budget, currency, hard limit, metadata) and leaves the rest.';
CREATE FUNCTION conveyor.account_status(account text DEFAULT NULL)
    RETURNS TABLE(account text, total numeric, reserved numeric, budget numeric, available numeric,
                  entries bigint, by_service jsonb)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_account_status';
COMMENT ON FUNCTION conveyor.account_status(text) IS 'Returns each account''s (or one account''s) total, reserved amount, budget, what is available and spend by service.';
CREATE FUNCTION conveyor.charge(account text, service text, amount numeric, items int DEFAULT 1,
                                metadata jsonb DEFAULT NULL, idempotency_key text DEFAULT NULL,
                                refund boolean DEFAULT false)
    RETURNS TABLE(entry_id uuid, total numeric, available numeric)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_charge';
COMMENT ON FUNCTION conveyor.charge(text,text,numeric,integer,jsonb,text,boolean) IS 'Records a charge (or with refund, a negative amount) to an account; a hard budget refuses it with CV001.';
CREATE FUNCTION conveyor.reserve(account text, amount numeric, ttl_seconds int DEFAULT 600,
                                 idempotency_key text DEFAULT NULL)
    RETURNS uuid
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_reserve';
COMMENT ON FUNCTION conveyor.reserve(text,numeric,integer,text) IS 'Holds part of an account''s budget for work of unknown cost until settled, released or expired.';
CREATE FUNCTION conveyor.settle(reservation_id uuid, actual numeric, service text, items int DEFAULT 1,
                                metadata jsonb DEFAULT NULL)
    RETURNS TABLE(entry_id uuid, total numeric, available numeric)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_settle';
COMMENT ON FUNCTION conveyor.settle(uuid,numeric,text,integer,jsonb) IS 'Charges the actual cost of an open reservation through the ledger and frees the rest of what it held.';
CREATE FUNCTION conveyor.release_reservation(reservation_id uuid)
    RETURNS boolean
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_release_reservation';
COMMENT ON FUNCTION conveyor.release_reservation(uuid) IS 'Releases an open reservation without charging; false when it was already released or expired.';
CREATE FUNCTION conveyor.ledger_verify(account text DEFAULT NULL)
    RETURNS TABLE(account text, total numeric, ledger_sum numeric, reserved numeric,
                  open_reservations_sum numeric, ok boolean)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_ledger_verify';
COMMENT ON FUNCTION conveyor.ledger_verify(text) IS 'Checks each account''s running totals and reserved amount against its ledger rows and open reservations.';
CREATE FUNCTION conveyor.cost_report(account text, since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL,
                                     bucket text DEFAULT 'day')
    RETURNS TABLE(bucket_start timestamptz, service text, items bigint, amount numeric)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_cost_report';
COMMENT ON FUNCTION conveyor.cost_report(text,timestamp with time zone,timestamp with time zone,text) IS 'Sums an account''s ledger by time bucket and service over [since, until), in the session''s time zone.';

CREATE FUNCTION conveyor.quota_define(name text, quota_limit bigint, period text DEFAULT 'day',
                                      reset_tz text DEFAULT 'UTC', costs jsonb DEFAULT NULL)
    RETURNS void
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_quota_define';
COMMENT ON FUNCTION conveyor.quota_define(text,bigint,text,text,jsonb) IS 'Creates or redefines a quota: a limit of units per calendar window in a time zone, with costs per operation.';
CREATE FUNCTION conveyor.quota_consume(name text, units int DEFAULT NULL, operation text DEFAULT NULL,
                                       idempotency_key text DEFAULT NULL)
    RETURNS TABLE(allowed boolean, used bigint, remaining bigint, reset_at timestamptz)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_quota_consume';
COMMENT ON FUNCTION conveyor.quota_consume(text,integer,text,text) IS 'Consumes units of a quota atomically if they fit in the current window; otherwise consumes nothing.';
CREATE FUNCTION conveyor.quota_status(name text DEFAULT NULL)
    RETURNS TABLE(name text, current_quota_used bigint, quota_limit bigint, quota_remaining bigint,
                  reset_time timestamptz, projected_daily_usage bigint, risk_level text)
    LANGUAGE C STABLE @DEFINER@ @NO_JIT@ AS 'MODULE_PATHNAME', 'conveyor_quota_status';
COMMENT ON FUNCTION conveyor.quota_status(text) IS 'Returns each quota''s (or one quota''s) use in the current window, its reset time, projection and risk level.';
CREATE FUNCTION conveyor.rate_limit(key text, rate int, per_seconds int DEFAULT 1, burst int DEFAULT NULL)
    RETURNS TABLE(allowed boolean, retry_after_ms int)
    LANGUAGE C VOLATILE @DEFINER@ @INDEX_SCANS@ AS 'MODULE_PATHNAME', 'conveyor_rate_limit';
COMMENT ON FUNCTION conveyor.rate_limit(text,integer,integer,integer) IS 'GCRA rate limiter per key: allows burst requests at once, then one every per_seconds / rate.';

-- ---- roles of costs, quotas and rate limits ----
GRANT EXECUTE ON FUNCTION
    conveyor.account_status(text), conveyor.ledger_verify(text),
    conveyor.cost_report(text, timestamptz, timestamptz, text),
    conveyor.quota_status(text), conveyor.quota_window(text, text, timestamptz),
    conveyor.quota_projection(bigint, bigint, timestamptz, timestamptz, timestamptz)
    TO conveyor_reader;
GRANT EXECUTE ON FUNCTION
    conveyor.charge(text, text, numeric, int, jsonb, text, boolean),
    conveyor.reserve(text, numeric, int, text),
    conveyor.settle(uuid, numeric, text, int, jsonb),
    conveyor.release_reservation(uuid),
    conveyor.quota_consume(text, int, text, text),
    conveyor.rate_limit(text, int, int, int)
    TO conveyor_worker;
GRANT EXECUTE ON FUNCTION
    conveyor.account_create(text, numeric, text, boolean, jsonb),
    conveyor.account_update(text, numeric, text, boolean, jsonb, boolean),
    conveyor.quota_define(text, bigint, text, text, jsonb)
    TO conveyor_admin;

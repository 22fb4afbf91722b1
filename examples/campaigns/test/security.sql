-- The SQLSTATE -> retry table, and who may do what.
BEGIN;
SELECT plan(17);

SELECT is(jsonb_build_array(r -> 'success', r ->> 'error_code', r -> 'retry_recommended', r ->> 'user_message'),
          jsonb_build_array(false, code, retry, msg), 'envelope for ' || code)
FROM (VALUES ('23505', false, 'Duplicate record detected'), ('23503', false, 'Referenced record not found'),
             ('40P01', true, 'Operation conflict, please retry'), ('40001', true, 'Concurrent modification, please retry'),
             ('55P03', true, 'Resource busy, please retry'), ('CV001', false, 'Campaign budget exceeded'),
             ('22023', false, 'Invalid input')) t(code, retry, msg),
     LATERAL (SELECT campaigns.failure(code, 'boom') AS r) f;

SELECT is(array_agg(p.proname::text ORDER BY p.proname), '{create_campaign_with_coverage,get_businesses_for_enrichment,insert_businesses_batch,track_campaign_cost,update_campaign_statistics,update_coverage_status,update_email_verification,update_enrichment_batch}',
          'the eight functions are SECURITY DEFINER with search_path pinned')
FROM pg_proc p WHERE p.pronamespace = 'campaigns'::regnamespace AND p.prosecdef
  AND p.proconfig = '{"search_path=pg_catalog, pg_temp"}';
SELECT is(count(*), 0::bigint, 'no function of the schema is executable by PUBLIC')
FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
WHERE p.pronamespace = 'campaigns'::regnamespace AND a.grantee = 0;
SELECT is(count(*), 4::bigint, 'row-level security on every table') FROM pg_class
WHERE relnamespace = 'campaigns'::regnamespace AND relkind = 'r' AND relrowsecurity;
SELECT ok(has_function_privilege('campaigns_worker', 'campaigns.track_campaign_cost(uuid,varchar,int,numeric,jsonb)', 'EXECUTE'), 'worker may track costs');
SELECT ok(NOT has_function_privilege('campaigns_worker', 'campaigns.create_campaign_with_coverage(jsonb,jsonb)', 'EXECUTE'), 'worker may not create campaigns');
SELECT ok(has_function_privilege('campaigns_admin', 'campaigns.create_campaign_with_coverage(jsonb,jsonb)', 'EXECUTE'), 'admin may create campaigns');
SELECT ok(NOT has_function_privilege('campaigns_worker', 'campaigns.failure(text,text)', 'EXECUTE'), 'helpers are not granted');

SELECT campaigns.create_campaign_with_coverage('{"id": "c0000000-0000-0000-0000-000000000009", "name": "Sec"}', '["94103"]') IS NOT NULL AS made \gset
SET LOCAL ROLE campaigns_worker;
SELECT throws_ok('SELECT count(*) FROM campaigns.gmaps_campaigns', '42501', NULL, 'worker cannot read the tables');
SELECT is(campaigns.track_campaign_cost('c0000000-0000-0000-0000-000000000009', 'google_maps', 1, 0.5, NULL) ->> 'new_total_cost', '0.500000',
          'worker tracks a cost through the function');
RESET ROLE;
SET LOCAL ROLE campaigns_admin;
SELECT is((SELECT total_cost FROM campaigns.gmaps_campaigns WHERE id = 'c0000000-0000-0000-0000-000000000009'), 0.5, 'admin reads the tables');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

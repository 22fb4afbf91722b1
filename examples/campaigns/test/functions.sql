-- Each of the eight functions: valid calls, invalid input, edge cases, every envelope field.
BEGIN;
SELECT plan(70);

-- The envelope's four standard fields, for a success.
CREATE FUNCTION pg_temp.is_ok(r jsonb, what text) RETURNS text LANGUAGE sql AS $$
    SELECT is(jsonb_build_array(r -> 'success', r -> 'error', r -> 'error_code', r -> 'retry_recommended'),
              '[true, null, null, false]'::jsonb, what || ': success envelope') $$;
-- ... and for a failure with this SQLSTATE (never retried for these).
CREATE FUNCTION pg_temp.is_err(r jsonb, code text, pattern text, what text) RETURNS text LANGUAGE sql AS $$
    SELECT is(jsonb_build_array(r -> 'success', r ->> 'error_code', r -> 'retry_recommended', r ->> 'error' ~ pattern),
              jsonb_build_array(false, code, false, true), what || ': ' || code) $$;

-- 1. create_campaign_with_coverage
SELECT campaigns.create_campaign_with_coverage(
    '{"id": "c0000000-0000-0000-0000-000000000001", "name": "Dentists SF", "keywords": ["dentist"], "budget": 5}',
    '["94103", "94110", {"zip_code": "94103"}, {"zip_code": "94117-1234", "estimated_cost": 0.25}]') AS r \gset
SELECT pg_temp.is_ok(:'r', 'create');
SELECT is((:'r'::jsonb) - '{success,error,error_code,retry_recommended}'::text[],
          '{"campaign_id": "c0000000-0000-0000-0000-000000000001", "zip_count": 3, "duplicate_zips": 1, "budget": 5}',
          'create: its fields (a ZIP listed twice is covered once)');
SELECT is(array_agg(zip_code::text ORDER BY zip_code), '{94103,94110,94117-1234}', 'create: coverage rows')
FROM campaigns.gmaps_campaign_coverage WHERE campaign_id = 'c0000000-0000-0000-0000-000000000001';
SELECT is((SELECT (budget, total, available)::text FROM conveyor.account_status('campaigns:c0000000-0000-0000-0000-000000000001')),
          '(5.000000,0.000000,5.000000)', 'create: a conveyor account with the budget');
SELECT pg_temp.is_err(campaigns.create_campaign_with_coverage('{"id": "c0000000-0000-0000-0000-000000000001", "name": "x"}', '["94103"]'),
                      '23505', 'duplicate key', 'create: same id again');
SELECT is((SELECT user_message FROM jsonb_to_record(campaigns.create_campaign_with_coverage(
          '{"id": "c0000000-0000-0000-0000-000000000001", "name": "x"}', '["94103"]')) AS x(user_message text)),
          'Duplicate record detected', 'create: 23505 user message');
SELECT pg_temp.is_err(campaigns.create_campaign_with_coverage('{"name": "x"}', '[]'), '22023', 'p_zip_codes must hold 1', 'create: empty ZIP list');
SELECT pg_temp.is_err(campaigns.create_campaign_with_coverage('{"name": "x"}', '["9410"]'), '22023', '^p_zip_codes\[0\] must be a ZIP', 'create: bad ZIP');
SELECT pg_temp.is_err(campaigns.create_campaign_with_coverage('{"name": "x"}', '["94103", {"zip": "94103"}]'), '22023', '^p_zip_codes\[1\]', 'create: bad ZIP object, by index');
SELECT pg_temp.is_err(campaigns.create_campaign_with_coverage(NULL, '["94103"]'), '22004', 'p_campaign_data must not be NULL', 'create: NULL data');
SELECT pg_temp.is_err(campaigns.create_campaign_with_coverage('{"name": "x"}', NULL), '22004', 'p_zip_codes must not be NULL', 'create: NULL ZIPs');
SELECT pg_temp.is_err(campaigns.create_campaign_with_coverage('{}', '["94103"]'), '22023', 'name must be a string', 'create: no name');
SELECT pg_temp.is_err(campaigns.create_campaign_with_coverage('{"name": "x", "budget": -1}', '["94103"]'), '22023', 'budget', 'create: negative budget');
SELECT pg_temp.is_err(campaigns.create_campaign_with_coverage('{"name": "x", "colour": 1}', '["94103"]'), '22023', 'unknown fields: colour', 'create: unknown field');
SELECT is(count(*), 1::bigint, 'create: failed calls wrote nothing') FROM campaigns.gmaps_campaigns;
SELECT campaigns.create_campaign_with_coverage('{"id": "c0000000-0000-0000-0000-000000000002", "name": "No budget"}', '["10001"]') ->> 'budget' IS NULL
       AS no_budget \gset
SELECT ok(:'no_budget', 'create: without a budget');

-- 2. insert_businesses_batch
SELECT campaigns.insert_businesses_batch('c0000000-0000-0000-0000-000000000001', '94103', '[
    {"place_id": "p1", "name": "Smile Co", "email": "hi@smile.example", "rating": 4.5},
    {"place_id": "p2", "name": "Tooth Inc"},
    {"place_id": "p1", "name": "Smile Co.", "email": "hi@smile.example", "rating": 4.5}]') AS r \gset
SELECT pg_temp.is_ok(:'r', 'insert');
SELECT is((:'r'::jsonb) - '{success,error,error_code,retry_recommended}'::text[],
          '{"inserted": 2, "updated": 0, "skipped": 1, "unchanged": 0, "duplicates": 1, "total": 3}', 'insert: counts (a place twice in a batch: the last wins)');
SELECT is((SELECT name || '/' || email_source FROM campaigns.gmaps_businesses WHERE place_id = 'p1'), 'Smile Co./google_maps', 'insert: stored');
SELECT is(campaigns.insert_businesses_batch('c0000000-0000-0000-0000-000000000001', '94103', '[
    {"place_id": "p1", "name": "Smile Co.", "email": "hi@smile.example", "rating": 4.5},
    {"place_id": "p2", "name": "Tooth Inc", "phone": "+1 415 555 0100"}, {"place_id": "p3", "name": "Gum Ltd"}]')
    - '{success,error,error_code,retry_recommended}'::text[],
    '{"inserted": 1, "updated": 1, "skipped": 1, "unchanged": 1, "duplicates": 0, "total": 3}', 'insert: again: unchanged, updated, new');
SELECT is(campaigns.insert_businesses_batch('c0000000-0000-0000-0000-000000000002', '10001', '[{"place_id": "p3", "name": "Gum Ltd"}]') ->> 'skipped',
          '1', 'insert: a place another campaign found is not taken over');
SELECT is((SELECT campaign_id::text FROM campaigns.gmaps_businesses WHERE place_id = 'p3'), 'c0000000-0000-0000-0000-000000000001', 'insert: it stays with the first campaign');
SELECT is(campaigns.insert_businesses_batch('c0000000-0000-0000-0000-000000000001', '94103', '[]') - '{success,error,error_code,retry_recommended}'::text[],
          '{"inserted": 0, "updated": 0, "skipped": 0, "unchanged": 0, "duplicates": 0, "total": 0}', 'insert: empty array');
SELECT pg_temp.is_err(campaigns.insert_businesses_batch('c0000000-0000-0000-0000-00000000ffff', '94103', '[]'), '23503', 'does not exist', 'insert: unknown campaign');
SELECT pg_temp.is_err(campaigns.insert_businesses_batch('c0000000-0000-0000-0000-000000000001', '94103', '[{"place_id": "p9", "name": "ok"}, {"name": "no id"}]'),
                      '22023', '^p_businesses\[1\]: place_id', 'insert: missing place_id, by index');
SELECT pg_temp.is_err(campaigns.insert_businesses_batch('c0000000-0000-0000-0000-000000000001', '94103', '[{"place_id": "p9", "name": "x", "owner": "me"}]'),
                      '22023', 'unknown fields', 'insert: unknown field');
SELECT pg_temp.is_err(campaigns.insert_businesses_batch('c0000000-0000-0000-0000-000000000001', 'abc', '[]'), '22023', 'not a ZIP', 'insert: bad ZIP');
SELECT pg_temp.is_err(campaigns.insert_businesses_batch('c0000000-0000-0000-0000-000000000001', '94103', NULL), '22004', 'p_businesses', 'insert: NULL businesses');
SELECT pg_temp.is_err(campaigns.insert_businesses_batch('c0000000-0000-0000-0000-000000000001', '94103', '[{"place_id": "p9", "name": "x", "rating": 9}]'),
                      '23514', 'rating', 'insert: a CHECK refuses a rating of 9');
SELECT is(count(*), 3::bigint, 'insert: refused batches wrote nothing') FROM campaigns.gmaps_businesses;

-- 4. track_campaign_cost
SELECT campaigns.track_campaign_cost('c0000000-0000-0000-0000-000000000001', 'google_maps', 3, 1.25, '{"idempotency_key": "maps:94103"}') AS r \gset
SELECT pg_temp.is_ok(:'r', 'cost');
SELECT is(jsonb_build_array(:'r'::jsonb -> 'new_total_cost', :'r'::jsonb -> 'budget_remaining', :'r'::jsonb -> 'duplicate'),
          '[1.25, 3.75, false]', 'cost: new total, what remains of the budget');
SELECT is(campaigns.track_campaign_cost('c0000000-0000-0000-0000-000000000001', 'google_maps', 3, 1.25, '{"idempotency_key": "maps:94103"}') -> 'duplicate',
          'true', 'cost: a repeated idempotency key charges nothing');
SELECT campaigns.track_campaign_cost('c0000000-0000-0000-0000-000000000001', 'bouncer', 10, 0.08, NULL) ->> 'cost_id' AS cost_id \gset
SELECT is((SELECT (service, items_processed, cost_usd)::text FROM campaigns.gmaps_api_costs WHERE id = :'cost_id'), '(bouncer,10,0.080000)',
          'cost: the cost row is the ledger entry');
SELECT is(campaigns.track_campaign_cost('c0000000-0000-0000-0000-000000000001', 'facebook', 0, 0, '{}') -> 'new_total_cost', '1.33', 'cost: zero cost, zero items');
SELECT pg_temp.is_err(campaigns.track_campaign_cost('c0000000-0000-0000-0000-000000000001', 'google_maps', 100, 4, NULL), 'CV001', 'would pass the budget', 'cost: past the budget');
SELECT pg_temp.is_err(campaigns.track_campaign_cost('c0000000-0000-0000-0000-00000000ffff', 'google_maps', 1, 0.1, NULL), '23503', 'does not exist', 'cost: unknown campaign');
SELECT pg_temp.is_err(campaigns.track_campaign_cost('c0000000-0000-0000-0000-000000000001', 'google_maps', 1, -0.1, NULL), '22023', 'p_cost_usd', 'cost: negative cost');
SELECT pg_temp.is_err(campaigns.track_campaign_cost('c0000000-0000-0000-0000-000000000001', 'google_maps', -1, 0.1, NULL), '22023', 'p_items_processed', 'cost: negative items');
SELECT pg_temp.is_err(campaigns.track_campaign_cost('c0000000-0000-0000-0000-000000000001', 'Google Maps', 1, 0.1, NULL), '22023', 'p_service', 'cost: bad service name');
SELECT pg_temp.is_err(campaigns.track_campaign_cost('c0000000-0000-0000-0000-000000000001', 'google_maps', 1, NULL, NULL), '22004', 'p_cost_usd', 'cost: NULL cost');
SELECT pg_temp.is_err(campaigns.track_campaign_cost('c0000000-0000-0000-0000-000000000001', 'google_maps', 1, 0.1, '[1]'), '22023', 'p_metadata', 'cost: metadata not an object');
SELECT is((SELECT (c.total_cost, (SELECT sum(cost_usd) FROM campaigns.gmaps_api_costs WHERE campaign_id = c.id), l.total, l.ok)::text
           FROM campaigns.gmaps_campaigns c, conveyor.ledger_verify(campaigns.account_name(c.id)) l
           WHERE c.id = 'c0000000-0000-0000-0000-000000000001'),
          '(1.330000,1.330000,1.330000,t)', 'cost: campaign total = cost rows = ledger, verified');

-- 5. update_coverage_status
SELECT campaigns.update_coverage_status('c0000000-0000-0000-0000-000000000001', '94103', 3, 1, 1.25) AS r \gset
SELECT pg_temp.is_ok(:'r', 'coverage');
SELECT is((:'r'::jsonb) ->> 'zips_pending', '2', 'coverage: ZIPs still pending');
SELECT is((SELECT (status, businesses_found, emails_found, actual_cost, scraped_at IS NOT NULL)::text FROM campaigns.gmaps_campaign_coverage
           WHERE campaign_id = 'c0000000-0000-0000-0000-000000000001' AND zip_code = '94103'), '(scraped,3,1,1.250000,t)', 'coverage: stored');
SELECT pg_temp.is_err(campaigns.update_coverage_status('c0000000-0000-0000-0000-000000000001', '99999', 0, 0, 0), '23503', 'not covered', 'coverage: ZIP not in the campaign');
SELECT pg_temp.is_err(campaigns.update_coverage_status('c0000000-0000-0000-0000-000000000001', '94110', 1, 2, 0), '22023', 'cannot exceed', 'coverage: more emails than businesses');
SELECT pg_temp.is_err(campaigns.update_coverage_status('c0000000-0000-0000-0000-000000000001', '94110', NULL, 0, 0), '22004', 'p_businesses_found', 'coverage: NULL count');

-- 8. get_businesses_for_enrichment, 6. update_enrichment_batch, 7. update_email_verification
SELECT campaigns.get_businesses_for_enrichment('c0000000-0000-0000-0000-000000000001', 'facebook', 2, 0) AS r \gset
SELECT pg_temp.is_ok(:'r', 'get');
SELECT is(jsonb_build_array(:'r'::jsonb -> 'count', :'r'::jsonb -> 'has_more', :'r'::jsonb -> 'next_offset', jsonb_path_query_first(:'r'::jsonb, '$.businesses.size()')),
          '[2, true, 2, 2]', 'get: first page');
SELECT is((SELECT jsonb_agg(p ORDER BY p) FROM jsonb_array_elements(jsonb_path_query_array(:'r'::jsonb, '$.businesses[*].place_id')
           || jsonb_path_query_array(campaigns.get_businesses_for_enrichment('c0000000-0000-0000-0000-000000000001', 'facebook', 2, 2), '$.businesses[*].place_id')) p),
          '["p1", "p2", "p3"]', 'get: the next page has the rest');
SELECT is(campaigns.get_businesses_for_enrichment('c0000000-0000-0000-0000-000000000001', 'facebook', 2, 10) - '{success,error,error_code,retry_recommended,campaign_id}'::text[],
          '{"enrichment_type": "facebook", "businesses": [], "count": 0, "limit": 2, "offset": 10, "has_more": false, "next_offset": null}', 'get: past the end');
SELECT pg_temp.is_err(campaigns.get_businesses_for_enrichment('c0000000-0000-0000-0000-000000000001', 'twitter', 2, 0), '22023', 'facebook, linkedin or email', 'get: bad type');
SELECT pg_temp.is_err(campaigns.get_businesses_for_enrichment('c0000000-0000-0000-0000-000000000001', 'email', 0, 0), '22023', 'p_limit', 'get: limit 0');
SELECT pg_temp.is_err(campaigns.get_businesses_for_enrichment('c0000000-0000-0000-0000-00000000ffff', 'email', 10, 0), '23503', 'does not exist', 'get: unknown campaign');

SELECT id AS p2 FROM campaigns.gmaps_businesses WHERE place_id = 'p2' \gset
SELECT id AS p3 FROM campaigns.gmaps_businesses WHERE place_id = 'p3' \gset
SELECT campaigns.update_enrichment_batch('facebook', jsonb_build_array(
    jsonb_build_object('business_id', :'p2', 'status', 'found', 'url', 'https://facebook.com/tooth', 'email', 'desk@tooth.example', 'data', '{"likes": 12}'::jsonb),
    jsonb_build_object('business_id', :'p3', 'status', 'not_found'),
    jsonb_build_object('business_id', :'p3', 'status', 'found'),
    jsonb_build_object('business_id', 'c0000000-0000-0000-0000-00000000ffff', 'status', 'found'),
    jsonb_build_object('business_id', :'p2', 'status', 'maybe'))) AS r \gset
SELECT pg_temp.is_ok(:'r', 'enrich');
SELECT is(jsonb_build_array(:'r'::jsonb -> 'updated', :'r'::jsonb -> 'failed', jsonb_path_query_array(:'r'::jsonb, '$.failures[*].index'), :'r'::jsonb #>> '{failures,1,error}'),
          '[2, 3, [2, 3, 4], "business not found"]', 'enrich: updated and failed, each failure by index');
SELECT is((SELECT (facebook_status, facebook_url, email, email_source)::text FROM campaigns.gmaps_businesses WHERE id = :'p2'),
          '(found,https://facebook.com/tooth,desk@tooth.example,facebook)', 'enrich: stored, email found on the page');
SELECT is(campaigns.update_enrichment_batch('linkedin', '[]') - '{success,error,error_code,retry_recommended}'::text[],
          '{"enrichment_type": "linkedin", "updated": 0, "failed": 0, "failures": []}', 'enrich: empty array');
SELECT pg_temp.is_err(campaigns.update_enrichment_batch('twitter', '[]'), '22023', 'facebook or linkedin', 'enrich: bad type');
SELECT pg_temp.is_err(campaigns.update_enrichment_batch('linkedin', NULL), '22004', 'p_enrichments', 'enrich: NULL');

SELECT campaigns.update_email_verification(:'p2', 'Desk@Tooth.example', '{"status": "deliverable", "score": 97}') AS r \gset
SELECT pg_temp.is_ok(:'r', 'verify');
SELECT is(jsonb_build_array(:'r'::jsonb -> 'email_status', :'r'::jsonb -> 'is_deliverable'), '["deliverable", true]', 'verify: status');
SELECT pg_temp.is_err(campaigns.update_email_verification(:'p2', 'other@tooth.example', '{"status": "deliverable"}'), '22023', 'is not the email', 'verify: another address');
SELECT pg_temp.is_err(campaigns.update_email_verification(:'p2', 'desk@tooth.example', '{"status": "great"}'), '22023', 'status', 'verify: bad status');
SELECT pg_temp.is_err(campaigns.update_email_verification('c0000000-0000-0000-0000-00000000ffff', 'a@b.example', '{"status": "risky"}'), '23503', 'does not exist', 'verify: unknown business');

-- 3. update_campaign_statistics
SELECT campaigns.update_campaign_statistics('c0000000-0000-0000-0000-000000000001') AS r \gset
SELECT pg_temp.is_ok(:'r', 'statistics');
SELECT is((:'r'::jsonb) - '{success,error,error_code,retry_recommended}'::text[],
          '{"campaign_id": "c0000000-0000-0000-0000-000000000001", "status": "running", "total_zips": 3, "zips_scraped": 1,
            "total_businesses": 3, "total_emails": 2, "total_verified_emails": 1, "total_facebook_pages": 1,
            "total_linkedin_profiles": 0, "total_cost": 1.33}', 'statistics: recounted');
SELECT pg_temp.is_err(campaigns.update_campaign_statistics(NULL), '22004', 'p_campaign_id', 'statistics: NULL');

SELECT * FROM finish();
ROLLBACK;

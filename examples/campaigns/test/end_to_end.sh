#!/usr/bin/env bash
# The whole pipeline: 30 campaigns (about 780 ZIPs, 3,500 businesses) worked by four worker processes
# whose calls go through pgbouncer in transaction pooling mode, against the simulated APIs with
# their transient failures, rejected ZIPs and one campaign without enough budget. Then: every job
# completed or dead for the documented reason, costs exact everywhere, no duplicate place_id. The
# campaigns are created as the installing role; the workers log in as a role that holds only
# campaigns_worker.
source "$(dirname "$0")/../../../test/shell/lib/tap.bash"

DB=conveyor_example_campaigns_e2e
HERE=$(cd "$(dirname "$0")" && pwd)
PIPELINE=$HERE/../worker/pipeline.py
TMP=$(mktemp -d /tmp/campaigns-e2e.XXXXXX)
chmod 755 "$TMP"
chown postgres:postgres "$TMP"
BPORT=$((PGPORT + 1100))
WORKER_ROLE=campaigns_e2e_scraper
cleanup() {
    stop_pgbouncer
    drop_test_dbs
    psql -X -q -d postgres -c "DROP ROLE IF EXISTS $WORKER_ROLE" >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT
create_db "$DB" || bail "could not create database $DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$HERE/../install.sql" >/dev/null 2>&1 || bail "install.sql failed"
q postgres "DROP ROLE IF EXISTS $WORKER_ROLE" "CREATE ROLE $WORKER_ROLE LOGIN IN ROLE campaigns_worker" >/dev/null ||
    bail "could not create the workers' login role"
start_pgbouncer "$DB" 8 "$WORKER_ROLE"
DIRECT="host=$PGHOST port=$PGPORT user=$WORKER_ROLE dbname=$DB"
POOL="host=$TMP port=$BPORT user=$WORKER_ROLE dbname=$DB"
ADMIN_POOL="host=$TMP port=$BPORT user=$PGUSER dbname=$DB"

campaigns=$(/usr/bin/python3 "$PIPELINE" create --dsn "$ADMIN_POOL" --campaigns 30 --seed 4 | wc -l)
is "$campaigns" 30 "30 campaigns created through pgbouncer"
pids=()
for i in 1 2 3 4; do
    /usr/bin/python3 "$PIPELINE" work --direct "$DIRECT" --pool "$POOL" --concurrency 4 --seed 4 \
        --retry-base 0.05 --until-idle >"$TMP/worker$i.log" 2>&1 &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
is "$rc" 0 "four workers, logged in as a campaigns_worker, ran until the queue was idle"
grep -h "retried" "$TMP"/worker*.log | sed 's/^/# /'

is "$(q "$DB" "SELECT count(*) FROM conveyor.list_jobs('campaigns', status => '{pending,running}', lim => 1000)")" 0 "no job left pending or running"
# The dead jobs are exactly the SCRAPE_ZIPs of the ZIPs the API rejects (009xx), each at its first
# attempt: the worker knows the rejection is final (PermanentError: ack with retry => false).
is "$(q "$DB" "SELECT string_agg(payload->>'zip_code' || ':' || (last_error LIKE '%INVALID_REQUEST%') || ':' || attempt || ':' || reason,
                                 ',' ORDER BY payload->>'zip_code')
               FROM conveyor.dead_jobs('campaigns')")" "00903:true:1:not retryable,00913:true:1:not retryable,00923:true:1:not retryable" \
   "dead: only the three rejected ZIPs, each at its first attempt, not retried, with the API's error"
is "$(q "$DB" "SELECT (SELECT count(*) FROM conveyor.list_jobs('campaigns', status => '{completed}', job_type => 'SCRAPE_ZIP', lim => 1000))
               + (SELECT count(*) FROM conveyor.dead_jobs('campaigns', lim => 1000))")" \
   "$(q "$DB" "SELECT count(*) FROM campaigns.gmaps_campaign_coverage")" "one SCRAPE_ZIP job per covered ZIP, completed or dead"
is "$(q "$DB" "SELECT count(*) FROM conveyor.list_jobs('campaigns', status => '{completed}', job_type => 'UPDATE_STATISTICS', lim => 1000)")" 26 \
   "statistics ran once for each of the 26 campaigns that finished scraping"
is "$(q "$DB" "SELECT string_agg(name || ':' || status, ',' ORDER BY name) FROM campaigns.gmaps_campaigns WHERE status <> 'completed'")" \
   "campaign 1:running,campaign 13:running,campaign 23:running,campaign 3:running" \
   "every campaign completed but the over-budget one and the three with a rejected ZIP"
is "$(q "$DB" "SELECT count(*) FROM campaigns.gmaps_campaign_coverage cv JOIN campaigns.gmaps_campaigns c ON c.id = cv.campaign_id
               WHERE cv.status = 'pending' AND c.name IN ('campaign 3', 'campaign 13', 'campaign 23')")" 3 \
   "the rejected ZIPs are the only pending ones of their campaigns"
is "$(q "$DB" "SELECT count(*) > 0 FROM campaigns.gmaps_campaign_coverage cv JOIN campaigns.gmaps_campaigns c ON c.id = cv.campaign_id
               WHERE cv.status = 'pending' AND c.name = 'campaign 1'")" t \
   "the small budget refused charges: ZIPs of campaign 1 left unscraped though their jobs completed"
is "$(q "$DB" "SELECT total_cost <= budget FROM campaigns.gmaps_campaigns WHERE name = 'campaign 1'")" t "the over-budget campaign spent no more than its budget"

is "$(q "$DB" "SELECT count(*) FROM campaigns.gmaps_campaigns c
               WHERE c.total_cost <> (SELECT coalesce(sum(cost_usd), 0) FROM campaigns.gmaps_api_costs WHERE campaign_id = c.id)
                  OR c.total_cost <> (SELECT total FROM conveyor.account_status(campaigns.account_name(c.id)))")" 0 \
   "every campaign: total_cost = sum of its cost rows = its ledger total"
is "$(q "$DB" "SELECT bool_and(ok) AND count(*) = 30 FROM conveyor.ledger_verify()")" t "ledger_verify: all 30 accounts consistent"
is "$(q "$DB" "SELECT count(*) FROM campaigns.gmaps_api_costs WHERE service = 'google_maps'")" \
   "$(q "$DB" "SELECT count(*) FROM campaigns.gmaps_campaign_coverage WHERE status = 'scraped'")" \
   "one google_maps charge per scraped ZIP, even with retried jobs"
is "$(q "$DB" "SELECT count(*) - count(DISTINCT place_id) FROM campaigns.gmaps_businesses")" 0 "no duplicate place_id"
businesses=$(q "$DB" "SELECT count(*) FROM campaigns.gmaps_businesses")
check "thousands of businesses ($businesses)" test "$businesses" -ge 2000
is "$(q "$DB" "SELECT count(*) FROM campaigns.gmaps_businesses b JOIN campaigns.gmaps_campaigns c ON c.id = b.campaign_id
               WHERE c.status = 'completed' AND (b.facebook_status = 'pending' OR b.linkedin_status = 'pending'
                     OR (b.email IS NOT NULL AND b.email_status IS NULL))")" 0 \
   "completed campaigns: every business enriched, every email verified"
is "$(q "$DB" "SELECT count(*) FROM campaigns.gmaps_campaigns c WHERE c.status = 'completed' AND c.total_businesses <>
               (SELECT count(*) FROM campaigns.gmaps_businesses WHERE campaign_id = c.id)")" 0 "completed campaigns: statistics match their rows"
finish

#!/usr/bin/env bash
# The whole pipeline through pgbouncer in transaction mode: four days of a simulated YouTube (200 channels,
# about 3,000 videos), three worker processes per day logged in as a member of youtube_worker, then checks
# of what they left: every job completed or dead-lettered because its channel is gone, one channel stats row
# per live channel per Pacific day, no duplicate videos or snapshots, privacy changes found, viral videos
# flagged, and the quota's units equal to the units of the calls the workers made.
source "$(dirname "$0")/../../../test/shell/lib/tap.bash"

DB=conveyor_example_youtube_e2e
HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=/usr/bin/python3
WORKERS=3
CHANNELS=200
use_scratch youtube-e2e
chmod 755 "$TMP"
chown postgres:postgres "$TMP"
BPORT=$((PGPORT + 1100))
trap 'stop_pgbouncer; scratch_cleanup; psql -X -q -d postgres -c "DROP ROLE IF EXISTS youtube_worker_login" >/dev/null 2>&1' EXIT

create_db "$DB" || bail "could not create database $DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$HERE/install.sql" >"$TMP/install.log" 2>&1 || { cat "$TMP/install.log"; bail "install.sql failed"; }
q "$DB" "SET client_min_messages = warning" "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'youtube_worker_login') THEN
           CREATE ROLE youtube_worker_login LOGIN; END IF; END \$\$" "GRANT youtube_worker TO youtube_worker_login" >/dev/null
# Retries at once: the fake API's transient failures clear by the third attempt.
q "$DB" "SELECT conveyor.alter_queue('youtube', '{\"backoff_base_seconds\": 0}')" >/dev/null

start_pgbouncer "$DB" 6 youtube_worker_login
POOL="host=$TMP port=$BPORT dbname=$DB user=youtube_worker_login"
DIRECT="host=$PGHOST port=$PGPORT dbname=$DB user=youtube_worker_login"

# Midnight Pacific, 3, 2, 1 and 0 days ago: the simulated days' capture times (never in the future).
mapfile -t DAYS < <(q "$DB" "SELECT to_char((date_trunc('day', now() AT TIME ZONE 'America/Los_Angeles') - d * interval '1 day')
                                   AT TIME ZONE 'America/Los_Angeles' AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                            FROM generate_series(3, 0, -1) d")

run_workers() {  # run_workers DAY HOUR LABEL: WORKERS processes until the queue is empty
    local day=$1 hour=$2 label=$3 i
    for i in $(seq 1 $WORKERS); do
        $PYTHON "$HERE/worker/youtube_worker.py" --pool "$POOL" --direct "$DIRECT" --as-of "${DAYS[$day]}" \
            --day "$day" --hour "$hour" --channels $CHANNELS --concurrency 4 --exit-when-idle \
            --report "$TMP/report-$label-$i.json" 2>>"$TMP/workers.log" &
        PIDS+=($!)
    done
    wait_sessions_bounded "$DB" 120 "day $day workers"
}

# Day 0: discovery (search.list), which enqueues a backfill per channel found.
q "$DB" "SELECT was_duplicate FROM youtube.enqueue_job('DISCOVER_CHANNELS', dedup_key => 'discover:music')" >/dev/null
run_workers 0 0 d0
# Days 1 to 3: stats and video sync of every stored channel; on day 2, hot videos again three hours later.
for day in 1 2 3; do
    q "$DB" "SELECT count(*) FROM youtube.channels c,
               LATERAL youtube.enqueue_job('REFRESH_CHANNEL_STATS', c.channel_id, dedup_key => 'stats:' || c.channel_id || ':$day') e1,
               LATERAL youtube.enqueue_job('SYNC_CHANNEL_VIDEOS', c.channel_id, dedup_key => 'sync:' || c.channel_id || ':$day') e2" >/dev/null
    run_workers "$day" 0 "d$day"
    if [ "$day" = 2 ]; then
        q "$DB" "SELECT count(*) FROM (SELECT channel_id, array_agg(video_id ORDER BY video_id) v FROM youtube.videos GROUP BY channel_id) x,
                   LATERAL youtube.enqueue_job('REFRESH_VIDEO_STATS', x.channel_id, x.v)" >/dev/null
        run_workers 2 3 d2h3
    fi
done

# report_sum EXPR: the sum of a Python expression over the workers' reports (r: one report)
report_sum() {
    $PYTHON -c "import glob, json, sys; print(sum($1 for r in (json.load(open(f)) for f in glob.glob(sys.argv[1] + '/report-*.json'))))" "$TMP"
}

# What the fake API says should be there.
read -r LIVE GONE VIDEOS PRIVATE VIRAL < <(cd "$HERE/worker" && $PYTHON -c "
from fake_youtube import FakeYouTube
api = FakeYouTube(1, $CHANNELS)
live = [c for c in api.channel_ids if not api.is_gone(c)]
videos = [v for c in live for v in api.video_ids(c)]
print(len(live), len(api.channel_ids) - len(live), len(videos),
      sum(api.privacy(v, 3) == 'private' for v in videos), sum(api.is_viral(v) for v in videos))")
note "fake API: $LIVE live channels, $GONE gone, $VIDEOS videos, $PRIVATE go private, $VIRAL viral"

is "$(q "$DB" "SELECT count(*) FROM conveyor.list_jobs('youtube', status => '{pending,running}')")" 0 "no job is left pending or running"
is "$(q "$DB" "SELECT count(*) FROM conveyor.list_jobs('youtube', status => '{dead}', lim => 1000)")" "$GONE" \
   "one job dead per gone channel (its backfill)"
is "$(q "$DB" "SELECT count(*) FROM conveyor.dead_jobs('youtube', lim => 1000) WHERE reason NOT LIKE 'channel_not_found:%' OR job_type <> 'BACKFILL_CHANNEL'")" 0 \
   "every dead job is a backfill dead-lettered for channel_not_found"
is "$(q "$DB" "SELECT count(*) FROM conveyor.list_jobs('youtube', status => '{completed}', lim => 1000, job_type => 'REFRESH_CHANNEL_STATS')")" $((LIVE * 3)) \
   "REFRESH_CHANNEL_STATS completed for every live channel on days 1 to 3"
failed=$(q "$DB" "SELECT failed FROM conveyor.queue_totals('youtube')")
check "transient API failures were retried ($failed failed attempts)" test "$failed" -gt 0
is "$(q "$DB" "SELECT count(*) FROM youtube.channels")" "$LIVE" "every live channel stored, none of the gone ones"
is "$(q "$DB" "SELECT count(*) FROM youtube.videos")" "$VIDEOS" "every video stored once"
is "$(q "$DB" "SELECT count(*) FROM youtube.videos WHERE privacy_status = 'private' AND privacy_changed_at IS NOT NULL")" "$PRIVATE" \
   "the public -> private changes are stored and stamped"
reported=$(report_sum "r['privacy_changes']")
is "$reported" "$PRIVATE" "upsert_videos reported each privacy change to the workers once"
is "$(q "$DB" "SELECT count(*) FROM youtube.channels c, LATERAL conveyor.snapshot_series('youtube.channel_stats', c.channel_id) s")" $((LIVE * 4)) \
   "channel stats: one row per live channel per day, four days"
is "$(q "$DB" "SELECT count(*) FROM youtube.channels c WHERE (SELECT count(DISTINCT s.period_start) FROM conveyor.snapshot_series('youtube.channel_stats', c.channel_id) s) <> 4")" 0 \
   "each channel's four rows are four different Pacific days"
is "$(q "$DB" "SELECT count(*) FROM youtube.channels WHERE views_gained IS NULL OR views_gained <= 0")" 0 \
   "every channel's summary holds a positive daily view gain"
is "$(q "$DB" "SELECT count(*) FROM youtube.videos v WHERE (SELECT count(*) FROM conveyor.snapshot_series('youtube.video_stats', v.video_id)) <> 5")" 0 \
   "video stats: five hourly rows per video (days 0 to 3, and day 2 three hours later)"
is "$(q "$DB" "SELECT count(*) FROM youtube.videos WHERE is_viral")" "$VIRAL" "the viral videos, and only they, are flagged"
used=$(q "$DB" "SELECT current_quota_used FROM conveyor.quota_status('youtube_data_api')")
units=$(report_sum "r['units']")
is "$used" "$units" "quota used ($used units) equals the units of the calls the workers made"
search=$(report_sum "r['calls'].get('search.list', 0)")
check "search.list was called and cost 100 units each ($search calls)" test "$search" -ge 4
is "$(q "$DB" "SELECT count(*) FROM conveyor.audit(function => 'youtube.consume_api_quota') WHERE current_user_name = 'youtube_worker_login'")" \
   "$(report_sum "sum(r['calls'].values())")" \
   "every quota call audited with the worker's login role"
if grep -qE 'Traceback|ERROR' "$TMP/workers.log"; then
    fail "the workers logged no error"
    grep -E -B2 -A40 'Traceback|ERROR' "$TMP/workers.log" | grep -vE '^\s+(\^|~)' | head -120 | sed 's/^/#   /'
else
    pass "the workers logged no error"
fi

finish

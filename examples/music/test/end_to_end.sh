#!/usr/bin/env bash
# The whole pipeline through pgbouncer in transaction mode: four worker processes logged in as a member of
# music_worker discover artists (three by name, one unknown, and a genre search), their albums a page at a
# time, tracks and producers, and enrich the producers, from worker/fixture.json; credits calls fail on a
# first read and workers get stuck past their visibility timeout along the way. Then: every message
# deleted or dead-lettered for a documented reason, the catalog exactly the fixture's, every entity
# COMPLETED and no lock left, and search_producers returning each producer with its exact counts.
source "$(dirname "$0")/../../../test/shell/lib/tap.bash"

DB=conveyor_example_music_e2e
HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=/usr/bin/python3
WORKERS=4
use_scratch music-e2e
chmod 755 "$TMP"
chown postgres:postgres "$TMP"
BPORT=$((PGPORT + 1200))
trap 'stop_pgbouncer; scratch_cleanup; psql -X -q -d postgres -c "DROP ROLE IF EXISTS music_worker_login" >/dev/null 2>&1' EXIT

create_db "$DB" || bail "could not create database $DB"
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$HERE/install.sql" >"$TMP/install.log" 2>&1 || { cat "$TMP/install.log"; bail "install.sql failed"; }
q "$DB" "SET client_min_messages = warning" "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'music_worker_login') THEN
           CREATE ROLE music_worker_login LOGIN; END IF; END \$\$" "GRANT music_worker TO music_worker_login" >/dev/null
start_pgbouncer "$DB" 6 music_worker_login
POOL="host=$TMP port=$BPORT dbname=$DB user=music_worker_login"

# What starts the run: three artists by name, one Spotify does not know, and a genre search.
mapfile -t NAMED < <($PYTHON -c "import json, sys; [print(n) for n in json.load(open(sys.argv[1]))['named']]" "$HERE/worker/fixture.json")
for name in "${NAMED[@]}"; do q "$DB" "SELECT music.start_artist_discovery('$name')" >/dev/null; done
read -r GENRE MINPOP LIMIT < <($PYTHON -c "import json, sys; g = json.load(open(sys.argv[1]))['genre_search']; print(g['genre'].replace(' ', '+'), g['min_popularity'], g['limit'])" "$HERE/worker/fixture.json")
q "$DB" "SELECT msg_id FROM music.start_bulk_artist_discovery(replace('$GENRE', '+', ' '), $MINPOP, $LIMIT)" >/dev/null

for i in $(seq 1 $WORKERS); do
    $PYTHON "$HERE/worker/music_worker.py" --pool "$POOL" --name "worker-$i" --vt 2 --idle-exit 6 \
        --report "$TMP/report-$i.json" 2>>"$TMP/workers.log" &
    PIDS+=($!)
done
wait_sessions_bounded "$DB" 150 "the workers"

report_sum() { $PYTHON -c "import glob, json, sys; print(sum(json.load(open(f))['$1'] for f in glob.glob(sys.argv[1] + '/report-*.json')))" "$TMP"; }

# What the fixture says the run must find: the artists named or found by the genre search.
$PYTHON - "$HERE/worker/fixture.json" >"$TMP/expected.txt" <<'PY'
import json, re, sys
sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0])
from fake_spotify import FakeSpotify, normalize
api = FakeSpotify(sys.argv[1])
f = api.data
g = f["genre_search"]
names = {n.lower() for n in f["named"]} | {n.lower() for n in api.search_genre(g["genre"], g["min_popularity"], g["limit"])}
artists = [a for a in f["artists"] if a["name"].lower() in names]
albums = [al for a in artists for al in a["albums"]]
tracks = [(a, t) for a in artists for al in a["albums"] for t in al["tracks"]]
norm = {(a["spotify_id"], re.sub("[^a-zA-Z0-9]", "", t["name"]).lower()) for a, t in tracks}
prod = {}
for a, t in tracks:
    for p in t["credits"]:
        e = prod.setdefault(p, [set(), set()])
        e[0].add(t["spotify_id"]); e[1].add(a["spotify_id"])
unknown = [n for n in f["named"] if n.lower() not in api.by_name]
print("counts", len(artists), len(albums), len(tracks), len(norm), len(prod),
      sum(1 for p in prod if f["producers"][p]["enrichment_fails"]), len(unknown),
      sum(1 for a, t in tracks if t["flaky"]), sum(1 for a, t in tracks if t["stall"]))
for p, (ts, ars) in sorted(prod.items()):
    print("producer", normalize(p).replace(" ", "+"), len(ts), len(ars))
PY
read -r _ ARTISTS ALBUMS TRACKS NORMALIZED PRODUCERS FAILING UNKNOWN FLAKY STALLS < <(grep '^counts' "$TMP/expected.txt")
note "fixture: $ARTISTS artists, $ALBUMS albums, $TRACKS tracks, $PRODUCERS producers ($FAILING without a profile), $UNKNOWN unknown artist, $FLAKY flaky credits, $STALLS stalls"

is "$(q "$DB" "SELECT coalesce(sum(pending + scheduled + running), 0) FROM music.diagnose_queue_tables()")" 0 "no message is left waiting or being read"
is "$(q "$DB" "SELECT string_agg(queue_name || ':' || failure_reason, ',') FROM music.dlq_messages")" \
   "artist_discovery_dlq:artist_not_found: no Spotify artist has this name" "one message dead-lettered: the unknown artist"
is "$(q "$DB" "SELECT count(*) FROM music.artists")|$(q "$DB" "SELECT count(*) FROM music.albums")|$(q "$DB" "SELECT count(*) FROM music.tracks")" \
   "$ARTISTS|$ALBUMS|$TRACKS" "artists, albums and tracks: exactly the fixture's, each once"
is "$(q "$DB" "SELECT count(*) FROM music.normalized_tracks")" "$NORMALIZED" "one normalized track per artist and song"
is "$(q "$DB" "SELECT count(*) FROM music.producers")" "$PRODUCERS" "every credited producer stored once"
is "$(q "$DB" "SELECT count(*) FROM music.producers WHERE enrichment_failed")|$(q "$DB" "SELECT count(*) FROM music.producers WHERE NOT enrichment_failed AND enriched_at IS NOT NULL AND instagram_handle IS NOT NULL")" \
   "$FAILING|$((PRODUCERS - FAILING))" "enrichment: failed where no profile exists, profiles stored for the others"
is "$(q "$DB" "SELECT string_agg(DISTINCT state || dead_lettered::text, ',') FROM music.processing_status")" "COMPLETEDfalse" \
   "every entity processed is COMPLETED"
is "$(q "$DB" "SELECT count(*) FROM music.processing_status WHERE entity_type = 'track'")" "$TRACKS" "one processing state per track"
is "$(q "$DB" "SELECT count(*) FROM music.processing_locks")" 0 "no processing lock is left"
# search_producers: each producer of the fixture, found by its name, with its exact counts
bad=0
while read -r _ name tracks artists; do
    got=$(q "$DB" "SELECT track_count || ' ' || artist_count FROM music.search_producers(replace('$name', '+', ' ')) WHERE normalized_name = replace('$name', '+', ' ')")
    if [ "$got" != "$tracks $artists" ]; then bad=$((bad + 1)); note "  ${name//+/ }: got '$got', expected '$tracks $artists'"; fi
done < <(grep '^producer' "$TMP/expected.txt")
is "$bad" 0 "search_producers returns every producer with its track and artist counts"
is "$(q "$DB" "SELECT string_agg(name || ':' || track_count || ':' || artist_count, ',' ORDER BY name) FROM music.search_producers('thomas bangalter')")" \
   "$(grep '^producer thomas+bangalter ' "$TMP/expected.txt" | awk '{print "Thomas Bangalter:" $3 ":" $4}')" "search_producers('thomas bangalter')"
failed=$(report_sum failed)
is "$failed" "$FLAKY" "each flaky credits call failed once ($failed), and its message came back"
is "$(report_sum stalled)" "$STALLS" "each stalling track stalled its first worker once"
check "stuck workers' entities were claimed by others or revived ($(report_sum lost) leases lost)" test "$(report_sum lost)" -le "$STALLS"
is "$(q "$DB" "SELECT count(*) FROM music.worker_issues WHERE issue_type = 'spotify_api'")" "$FLAKY" "each failure reported as a worker issue"
check "API calls were recorded as metrics" test "$(q "$DB" "SELECT coalesce(sum(total_calls), 0) FROM music_monitoring.api_metrics")" -gt "$TRACKS"
is "$(q "$DB" "SELECT count(*) FROM music.queue_metrics WHERE success_count + error_count <> processed_count")" 0 "processor runs recorded"
if grep -qE 'Traceback|ERROR' "$TMP/workers.log"; then
    fail "the workers logged no error"
    grep -E -B2 -A30 'Traceback|ERROR' "$TMP/workers.log" | head -80 | sed 's/^/#   /'
else
    pass "the workers logged no error"
fi
finish

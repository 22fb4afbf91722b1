# Shared by the notification tests (notify.sh, status_notify.sh), sourced after tap.bash; not a test on
# its own. A listener session LISTENs on a channel, runs the statements it is given, then waits inside
# one statement until the test says it is done (a row in table done of database DB): psql prints every
# notification it received after that statement, into $TMP/listener.out.

# listener_begin NAME: a scratch directory TMP, the database DB with table done, and an exit trap that
# ends a listener still running, drops the test databases and removes TMP.
listener_begin() {
    TMP=$(mktemp -d "/tmp/conveyor-$1.XXXXXX")
    LISTENER=
    trap listener_cleanup EXIT
    create_db "$DB" || bail "could not create database $DB"
    q "$DB" "CREATE TABLE done (x int)" >/dev/null || bail "could not create table done"
}
listener_cleanup() {
    [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null
    drop_test_dbs
    rm -rf "$TMP"
}

# listener_start APP CHANNEL [psql options]: starts it in the background (LISTENER) with application
# name APP; returns once it is inside its waiting statement, or 1 when it is not there within 10 s.
listener_start() {
    local app=$1 channel=$2
    shift 2
    PGAPPNAME=$app psql -X -q -At -d "$DB" -c "LISTEN $channel" "$@" \
        -c "DO \$\$ BEGIN
              FOR i IN 1 .. 300 LOOP    -- at most 30 s
                  EXIT WHEN EXISTS (SELECT 1 FROM done);
                  PERFORM pg_sleep(0.1);
              END LOOP;
            END \$\$" >"$TMP/listener.out" 2>&1 &
    LISTENER=$!
    wait_statement "$DB" "$app" 'DO %'
}

# listener_stop: lets the listener finish and waits for it (bounded); empties table done again.
listener_stop() {
    q "$DB" "INSERT INTO done VALUES (1)" >/dev/null
    for _ in $(seq 1 100); do
        kill -0 "$LISTENER" 2>/dev/null || break
        sleep 0.1
    done
    kill "$LISTENER" 2>/dev/null && fail "the listener did not finish in time"
    wait "$LISTENER" 2>/dev/null
    LISTENER=
    q "$DB" "DELETE FROM done" >/dev/null
}

# Shared by the tests and the bench of conveyor_proxy (test/shell/proxy_*.sh, bench/proxy.sh); sourced,
# never run on its own. Starts extra scratch clusters beside the runner's: conveyor shards and a
# PL/Proxy front, each its own cluster on its own port and unix socket, as the postgres OS user.
#
#   SHARD_BASE   directory for the clusters' data, sockets and logs (default: $TMP)
#   SHARD_PORTS  "FRONT_PORT SHARD1_PORT SHARD2_PORT ..." (default: CONVEYOR_PROXY_PORTS, else
#                55620 to 55629: the front first, then one port per shard, spares for add_shard_cluster)
#   SHARD_CRON   1: every shard preloads pg_cron, schedules from the test database and has its extension
#                there (for conveyor.schedule_enqueue); default 0

CV_PGBIN=${CONVEYOR_PGBIN:-/usr/lib/postgresql/15/bin}
SHARD_CLUSTERS=()   # data directories started here, stopped by stop_shard_clusters
SHARD_EXTRA_CONF=() # more postgresql.conf lines for every cluster (bench/proxy.sh: fsync on)
SHARD_CRON=${SHARD_CRON:-0}

# start_scratch_cluster NAME PORT [CONF...]: initdb + start under $SHARD_BASE/NAME; the socket is
# $SHARD_BASE/NAME/sock. Extra postgresql.conf lines may follow.
start_scratch_cluster() {
    local name=$1 port=$2 dir=$SHARD_BASE/$1
    shift 2
    rm -rf "$dir"
    mkdir -p "$dir/sock"
    chown -R postgres:postgres "$dir"
    runuser -u postgres -- "$CV_PGBIN/initdb" -D "$dir/data" --auth=trust --username=postgres -E UTF8 --locale=C.UTF-8 >/dev/null ||
        return 1
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir/sock'"
        echo "port = $port"
        echo "max_connections = 100"
        echo "shared_buffers = 64MB"
        echo "fsync = off"
        echo "log_min_messages = warning"
        echo "log_line_prefix = '%m [%p] %d '"
        local line
        for line in "$@" "${SHARD_EXTRA_CONF[@]}"; do echo "$line"; done
    } >> "$dir/data/postgresql.conf"
    # With the server binary or wrapper the runner's cluster has (CONVEYOR_POSTGRES: the sanitizer's or
    # valgrind's), so an instrumented conveyor.so loads in every cluster.
    runuser -u postgres -- "$CV_PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" ${CONVEYOR_POSTGRES:+-p "$CONVEYOR_POSTGRES"} \
        -t 120 -w start >/dev/null || return 1
    SHARD_CLUSTERS+=("$dir/data")
}

stop_shard_clusters() {
    local d
    for d in "${SHARD_CLUSTERS[@]}"; do
        [ -f "$d/postmaster.pid" ] || continue
        runuser -u postgres -- "$CV_PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    done
    SHARD_CLUSTERS=()
}

# sq NAME DB SQL...: psql on cluster NAME (unaligned, tuples only, stop at the first error).
sq() {
    local name=$1 db=$2
    shift 2
    local args=() s
    for s in "$@"; do args+=(-c "$s"); done
    psql -X -q -At -v ON_ERROR_STOP=1 -U postgres -h "$SHARD_BASE/$name/sock" -p "$(cluster_port "$name")" -d "$db" "${args[@]}"
}
declare -A CLUSTER_PORT=()
cluster_port() { echo "${CLUSTER_PORT[$1]}"; }

# start_shard_cluster I PORT DB: cluster shardI on PORT, conveyor in DB with shard.number I (and pg_cron
# there when SHARD_CRON is 1: preloaded, cron.database_name = DB, jobs in background workers).
start_shard_cluster() {
    local i=$1 port=$2 db=$3 cron=()
    CLUSTER_PORT[shard$i]=$port
    if [ "$SHARD_CRON" = 1 ]; then
        cron=("shared_preload_libraries = 'pg_cron'" "cron.database_name = '$db'" "cron.use_background_workers = on"
              "max_worker_processes = 16")
    fi
    start_scratch_cluster "shard$i" "$port" "track_functions = all" "max_connections = 60" "${cron[@]}" || return 1
    sq "shard$i" postgres "CREATE DATABASE $db" >/dev/null || return 1
    if [ "$SHARD_CRON" = 1 ]; then
        sq "shard$i" "$db" "SET client_min_messages = warning" "CREATE EXTENSION pg_cron" >/dev/null || return 1
    fi
    sq "shard$i" "$db" "CREATE EXTENSION conveyor" "SELECT conveyor.set_setting('shard.number', '$i')" >/dev/null
}

# start_sharded NSHARDS DB: starts clusters shard1..shardN (start_shard_cluster: conveyor installed in DB,
# shard.number set, track_functions = all) and front (conveyor_proxy in DB, the shards added, hash_shards = N, the
# directory pointing at itself, user mappings for PUBLIC as postgres). Shards are reached over their
# unix sockets with trust authentication: a test setup, not a deployment (proxy/README.md).
start_sharded() {
    local n=$1 db=$2 ports i
    read -r -a ports <<< "${SHARD_PORTS:-${CONVEYOR_PROXY_PORTS:-$(seq -s ' ' 55620 55629)}}"
    [ "${#ports[@]}" -gt "$n" ] || { echo "SHARD_PORTS needs $((n + 1)) ports" >&2; return 1; }
    SHARD_PORT_LIST=("${ports[@]}")
    CLUSTER_PORT[front]=${ports[0]}
    for i in $(seq 1 "$n"); do
        start_shard_cluster "$i" "${ports[$i]}" "$db" || return 1
    done
    start_scratch_cluster front "${ports[0]}" "max_connections = 60" || return 1
    sq front postgres "CREATE DATABASE $db" >/dev/null || return 1
    sq front "$db" "SET client_min_messages = warning" "CREATE EXTENSION conveyor_proxy CASCADE" >/dev/null || return 1
    for i in $(seq 1 "$n"); do
        sq front "$db" "SELECT conveyor_proxy.add_shard('host=$SHARD_BASE/shard$i/sock port=${ports[$i]} dbname=$db')" >/dev/null || return 1
    done
    sq front "$db" "SELECT conveyor_proxy.set_hash_shards($n)" \
        "SELECT conveyor_proxy.set_directory('host=$SHARD_BASE/front/sock port=${ports[0]} dbname=$db')" \
        "CREATE USER MAPPING FOR PUBLIC SERVER conveyor_shards OPTIONS (user 'postgres')" \
        "CREATE USER MAPPING FOR PUBLIC SERVER conveyor_directory OPTIONS (user 'postgres')" >/dev/null || return 1
}

# add_shard_cluster I DB: starts cluster shardI on the I-th spare port, with conveyor in DB and
# shard.number I, and adds it to the front (conveyor_proxy.add_shard).
add_shard_cluster() {
    local i=$1 db=$2
    start_shard_cluster "$i" "${SHARD_PORT_LIST[$i]}" "$db" || return 1
    [ "$(sq front "$db" "SELECT conveyor_proxy.add_shard('host=$SHARD_BASE/shard$i/sock port=${SHARD_PORT_LIST[$i]} dbname=$db')")" = "$i" ]
}

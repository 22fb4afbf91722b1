# Shared by scripts/test.sh, scripts/demo.sh and bench/run.sh: install what is missing, build and
# install conveyor, and run a scratch PostgreSQL 15 cluster of our own (as the postgres OS user,
# unix socket only, pg_cron preloaded). Source it; it defines functions and PG* variables.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# CONVEYOR_PGBIN: another PostgreSQL 15 installation (e.g. a copy, so two working trees can install
# and test side by side without replacing each other's conveyor.so).
PGBIN=${CONVEYOR_PGBIN:-/usr/lib/postgresql/15/bin}
PGXS_DIR=$(dirname "$PGBIN")/lib/pgxs
export CONVEYOR_PGDATA=${CONVEYOR_PGDATA:-/tmp/conveyor-pg/data}
export CONVEYOR_SOCKDIR=${CONVEYOR_SOCKDIR:-/tmp/conveyor-pg/sock}
export PGHOST=$CONVEYOR_SOCKDIR
export PGPORT=${CONVEYOR_PORT:-55432}
export PGUSER=postgres
export PGDATABASE=postgres

PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-15-pgtap postgresql-15-cron postgresql-15-plproxy libfmt-dev
          libxxhash-dev libvalijson-dev nlohmann-json3-dev libtap-parser-sourcehandler-pgtap-perl pgbouncer make g++ clang-14 llvm-14 python3
          python3-psycopg python3-pytest python3-pip python3-setuptools python3-venv nodejs
          valgrind prometheus-postgres-exporter curl
          git unzip dpkg-dev debhelper postgresql-server-dev-all)   # the last line: scripts/package.sh
# clients/node's tests need npm: NodeSource's nodejs package carries it, Debian's has it apart.
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

log() { printf '==> %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Debian starts a default cluster on install; ours is separate and needs none of it.
}

build_install() {
    log "building conveyor"
    # One build at a time per machine (several clusters may share the installed extension).
    (
        flock 9
        make -C "$ROOT" -s PG_CONFIG=$PGBIN/pg_config >/dev/null
        as_root make -C "$ROOT" -s PG_CONFIG=$PGBIN/pg_config install >/dev/null
    ) 9>/tmp/conveyor-build.lock
}

# The test-only extension conveyor_selftest (test/selftest): built from conveyor's own boundary objects
# and installed only for the test suites, never by the project's `make install`.
build_install_selftest() {
    (
        flock 9
        make -C "$ROOT/test/selftest" -s PG_CONFIG=$PGBIN/pg_config >/dev/null
        as_root make -C "$ROOT/test/selftest" -s PG_CONFIG=$PGBIN/pg_config install >/dev/null
    ) 9>/tmp/conveyor-build.lock
}

pg_as() { runuser -u postgres -- "$@"; }

cluster_stop() {
    if [ -f "$CONVEYOR_PGDATA/postmaster.pid" ]; then
        pg_as $PGBIN/pg_ctl -D "$CONVEYOR_PGDATA" -m fast -w stop >/dev/null 2>&1 || \
            pg_as $PGBIN/pg_ctl -D "$CONVEYOR_PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}

# A fresh cluster every time: nothing from an earlier run leaks into this one.
cluster_start() {
    cluster_stop
    local base
    base=$(dirname "$CONVEYOR_PGDATA")
    rm -rf "$CONVEYOR_PGDATA" "$CONVEYOR_SOCKDIR"
    mkdir -p "$base" "$CONVEYOR_SOCKDIR"
    chown postgres:postgres "$base" "$CONVEYOR_SOCKDIR"
    log "starting a scratch PostgreSQL 15 cluster on socket $CONVEYOR_SOCKDIR port $PGPORT"
    pg_as $PGBIN/initdb -D "$CONVEYOR_PGDATA" --auth=trust --username=postgres -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$CONVEYOR_PGDATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$CONVEYOR_SOCKDIR'
port = $PGPORT
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
# The server listens on its unix socket only: pg_cron runs jobs in background workers, not over libpq.
cron.use_background_workers = on
max_worker_processes = 32
max_connections = 250
shared_buffers = 512MB
max_locks_per_transaction = 256
max_prepared_transactions = 10
fsync = on
synchronous_commit = on
log_min_messages = warning
log_lock_waits = on
log_line_prefix = '%m [%p] %d '
CONF
    # CONVEYOR_POSTGRES: another server binary or wrapper (scripts/memcheck.sh runs it under valgrind).
    pg_as $PGBIN/pg_ctl -D "$CONVEYOR_PGDATA" -l "$base/server.log" ${CONVEYOR_POSTGRES:+-p "$CONVEYOR_POSTGRES"} \
        -t 300 -w start >/dev/null
}

# For scripts that start background sessions (bench, demo): on exit or Ctrl-C the shell's background
# jobs are ended, the cluster is stopped and the work directory $1 is removed.
cleanup_on_exit() {
    CLEANUP_DIR=$1
    trap cleanup_now EXIT
    trap 'exit 130' INT TERM
}
cleanup_now() {
    local rc=$? p
    for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
    for p in $(jobs -p); do wait "$p" 2>/dev/null || true; done
    cluster_stop
    rm -rf "$CLEANUP_DIR"
    exit $rc
}

setup_all() {
    ensure_packages
    build_install
    cluster_start
    trap cluster_stop EXIT
}

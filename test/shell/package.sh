#!/usr/bin/env bash
# The release artefacts: the version numbers agree, `make dist` writes the PGXN archive META.json
# names, and scripts/package.sh builds from that archive a Debian package that installs with dpkg -i
# into the system PostgreSQL 15 and serves CREATE EXTENSION conveyor there.
#   - conveyor.control's default_version, the Makefile's EXTVERSION, META.json's version (and what it
#     provides), the newest version sql/ names and debian/changelog's upstream version agree;
#   - the archive is <name>-<version>.zip with one top-level folder <name>-<version>/, holding
#     META.json and conveyor.control at those versions and no build product;
#   - the package (built by the archive's own Makefile, so `make` succeeds from the unpacked archive)
#     installs; on a scratch cluster of /usr/lib/postgresql/15/bin, CREATE EXTENSION conveyor loads
#     the package's conveyor.so (dpkg -L, the backend's memory map, the file inside the .deb) and a
#     job makes a round trip;
#   - the machine is left as found: the package is purged and whatever conveyor files the system tree
#     held before (a `make install` of the suite's, when CONVEYOR_PGBIN is the system tree) are put back
#     byte for byte; none is left that was not there.
source "$(dirname "$0")/lib/tap.bash"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
use_scratch package
chmod 755 "$TMP"
SYSTEM_BIN=/usr/lib/postgresql/15/bin
[ -x "$SYSTEM_BIN/initdb" ] || bail "no system PostgreSQL 15 in $SYSTEM_BIN (scripts/common.sh installs postgresql-15)"

# ---- the versions agree -------------------------------------------------------------------------
control_version=$(sed -n "s/^default_version = '\(.*\)'$/\1/p" "$ROOT/conveyor.control")
make_version=$(sed -n 's/^EXTVERSION = //p' "$ROOT/Makefile")
meta() { python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"m": m}))' "$@"; }
meta_name=$(meta "$ROOT/META.json" 'm["name"]')
meta_version=$(meta "$ROOT/META.json" 'm["version"]')
# Every version sql/ names, as an install script (conveyor--V.sql) or an upgrade's target (--A--V).
newest_sql=$(for f in "$ROOT"/sql/conveyor--*.sql; do v=${f%.sql}; echo "${v##*--}"; done | sort -V | tail -1)
deb_upstream=$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Version | sed 's/-[^-]*$//')
note "default_version $control_version, META.json $meta_version, newest in sql/ $newest_sql"
[ -n "$control_version" ] || bail "no default_version in conveyor.control"
# PGXN versions are semantic versions: default_version 0.3 is 0.3.0.
semver=$control_version
while [ "$(echo "$semver" | tr -cd . | wc -c)" -lt 2 ]; do semver=$semver.0; done
is "$meta_version" "$semver" "META.json's version is conveyor.control's default_version"
is "$(meta "$ROOT/META.json" 'm["provides"][m["name"]]["version"]')" "$semver" "META.json provides the extension at that version"
is "$(meta "$ROOT/META.json" 'm["provides"][m["name"]]["file"]')" "conveyor--$control_version.sql" "META.json's provided file is the install script of default_version"
is "$meta_name" "conveyor" "META.json names the extension"
is "$make_version" "$control_version" "the Makefile builds the install script of default_version"
is "$newest_sql" "$control_version" "the newest version sql/ names (its newest upgrade script's target) is default_version"
check "default_version is unreleased: no frozen sql/conveyor--$control_version.sql (the Makefile builds it)" \
    test ! -e "$ROOT/sql/conveyor--$control_version.sql"
is "$deb_upstream" "$meta_version" "debian/changelog's upstream version is META.json's"

# ---- build: the archive, then the package from it --------------------------------------------------
package=postgresql-15-$meta_name
if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed'; then
    bail "$package is installed on this machine; this test installs and purges its own build (dpkg -r $package first)"
fi
note "building the archive and the package (a whole build of conveyor)"
bash "$ROOT/scripts/package.sh" "$TMP/out" >"$TMP/package.out" 2>&1 || { sed 's/^/#   /' "$TMP/package.out"; bail "scripts/package.sh failed"; }
archive=$TMP/out/$meta_name-$meta_version.zip
deb=$(ls "$TMP"/out/${package}_"$meta_version"-*.deb 2>/dev/null | head -1)
check "make dist wrote $meta_name-$meta_version.zip" test -f "$archive"
[ -n "$deb" ] || bail "no ${package}_$meta_version-*.deb in $TMP/out"
note "$(basename "$deb")"

unzip -Z1 "$archive" >"$TMP/archive.list"
is "$(cut -d/ -f1 "$TMP/archive.list" | sort -u)" "$meta_name-$meta_version" "the archive has one top-level folder, $meta_name-$meta_version/"
is "$(unzip -p "$archive" "$meta_name-$meta_version/META.json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')" \
    "$meta_version" "the archive's META.json is at $meta_version"
is "$(unzip -p "$archive" "$meta_name-$meta_version/conveyor.control" | sed -n "s/^default_version = '\(.*\)'$/\1/p")" \
    "$control_version" "the archive's conveyor.control is at $control_version"
for f in Makefile src/core/module.cpp src/core/core.sql debian/rules debian/control $(cd "$ROOT" && ls sql/*.sql); do
    check "the archive holds $f" grep -qxF "$meta_name-$meta_version/$f" "$TMP/archive.list"
done
is "$(grep -E '\.(o|bc|so)$|/\.git/|/conveyor--[0-9.]+\.sql$|/results/|/dist/' "$TMP/archive.list" | grep -v '/sql/')" "" \
    "the archive holds no build product, results or git metadata"

dpkg-deb -c "$deb" | awk '{ print $NF }' | sed 's|^\./|/|' >"$TMP/deb.list"
for f in /usr/lib/postgresql/15/lib/conveyor.so /usr/share/postgresql/15/extension/conveyor.control \
         "/usr/share/postgresql/15/extension/conveyor--$control_version.sql"; do
    check "the package ships $f" grep -qxF "$f" "$TMP/deb.list"
done
dpkg-deb -x "$deb" "$TMP/deb"

# ---- the system tree as it was --------------------------------------------------------------------
# The package's files that exist now (a `make install` of conveyor into the system tree, or nothing).
# While the package is installed no build of this machine may install into the system tree: hold
# the lock scripts/common.sh's build_install takes.
exec 9>/tmp/conveyor-build.lock
flock 9
: >"$TMP/present.list"
while read -r f; do
    [ -f "$f" ] && [ -f "$TMP/deb$f" ] && echo "$f" >>"$TMP/present.list"
done <"$TMP/deb.list"
note "conveyor files in the system tree before: $(wc -l <"$TMP/present.list")"
if [ -s "$TMP/present.list" ]; then
    tar -C / -cpf "$TMP/saved.tar" -T <(sed 's|^/||' "$TMP/present.list")
    xargs -d '\n' sha256sum <"$TMP/present.list" >"$TMP/present.sha256"
fi

# The scratch cluster's folder (data, socket, log) belongs to the postgres OS user.
PGDIR=$TMP/pg
SOCK=$PGDIR/sock
SPORT=$((PGPORT + 1))
installed=0
restore_system_tree() {
    [ "$installed" = 1 ] || return 0
    [ -f "$PGDIR/data/postmaster.pid" ] && runuser -u postgres -- "$SYSTEM_BIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1
    dpkg --purge "$package" >"$TMP/purge.out" 2>&1
    [ -f "$TMP/saved.tar" ] && tar -C / -xpf "$TMP/saved.tar"
    installed=0
    flock -u 9
}
trap 'restore_system_tree; scratch_cleanup' EXIT

# ---- install and use it -----------------------------------------------------------------------------
installed=1
rc=0
dpkg -i "$deb" >"$TMP/install.out" 2>&1 || rc=$?
is "$rc" 0 "dpkg -i $(basename "$deb")"
[ "$rc" -eq 0 ] || { sed 's/^/#   /' "$TMP/install.out"; bail "the package did not install"; }
dpkg -L "$package" >"$TMP/dpkg-L.list"
check "dpkg -L lists the installed conveyor.so" grep -qxF /usr/lib/postgresql/15/lib/conveyor.so "$TMP/dpkg-L.list"
check "dpkg -L lists the installed conveyor.control" grep -qxF /usr/share/postgresql/15/extension/conveyor.control "$TMP/dpkg-L.list"

mkdir -p "$SOCK"
chown -R postgres:postgres "$PGDIR"
runuser -u postgres -- "$SYSTEM_BIN/initdb" -D "$PGDIR/data" --auth=trust --username=postgres -E UTF8 --locale=C.UTF-8 >/dev/null ||
    bail "initdb of the scratch cluster failed"
cat >>"$PGDIR/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $SPORT
CONF
runuser -u postgres -- "$SYSTEM_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w start >/dev/null ||
    { sed 's/^/#   /' "$PGDIR/server.log"; bail "the scratch cluster of $SYSTEM_BIN did not start"; }
sq() { PGHOST=$SOCK PGPORT=$SPORT q "$@"; }

is "$(sq postgres 'SELECT pg_catalog.current_setting($$server_version_num$$)::int / 10000')" 15 "the scratch cluster runs PostgreSQL 15"
is "$(sq postgres "SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'")" /usr/lib/postgresql/15/lib "the scratch cluster loads modules from the system tree"
sq postgres "CREATE DATABASE package_check" >/dev/null || bail "CREATE DATABASE failed"
out=$(sq package_check "CREATE EXTENSION conveyor" "SELECT extversion FROM pg_extension WHERE extname = 'conveyor'" 2>&1)
is "$out" "$control_version" "CREATE EXTENSION conveyor from the package, at $control_version"

# One session: a job's round trip, then the backend's own memory map names the conveyor.so it runs.
sq package_check "SELECT conveyor.create_queue('package_check')" >/dev/null
out=$(sq package_check \
    "SELECT was_duplicate FROM conveyor.enqueue('package_check', '{\"n\": 1}', dedup_key => 'one')" \
    "SELECT payload->>'n' FROM conveyor.dequeue('package_check', worker_id => 'w1')" \
    "SELECT conveyor.ack(job_id, success => true, worker_id => 'w1') FROM conveyor.enqueue('package_check', '{\"n\": 1}', dedup_key => 'one')" \
    "SELECT status FROM conveyor.list_jobs('package_check')" 2>&1 | tr '\n' ' ')
is "$out" "f 1 t completed " "enqueue, dequeue, ack: a job's round trip on the package's conveyor"
mapped=$(sq package_check "SELECT count(*) FROM conveyor.list_jobs('package_check')" \
    "SELECT DISTINCT substring(line from '(/\S*conveyor\.so)') FROM regexp_split_to_table(pg_read_file('/proc/self/maps'), E'\n') AS line WHERE line ~ 'conveyor\.so'" 2>&1 | tail -1)
is "$mapped" /usr/lib/postgresql/15/lib/conveyor.so "the backend maps /usr/lib/postgresql/15/lib/conveyor.so"
is "$(dpkg -S /usr/lib/postgresql/15/lib/conveyor.so 2>/dev/null | cut -d: -f1)" "$package" "that file belongs to $package"
is "$(sha256sum </usr/lib/postgresql/15/lib/conveyor.so)" "$(sha256sum <"$TMP/deb/usr/lib/postgresql/15/lib/conveyor.so")" \
    "and is the conveyor.so inside the .deb"

# ---- the machine as it was ----------------------------------------------------------------------------
restore_system_tree
check "$package is purged" bash -c "! dpkg-query -W -f='\${Status}' $package 2>/dev/null | grep -q installed"
[ -f "$TMP/present.sha256" ] && check "the system tree's conveyor files are back as they were" sha256sum --quiet -c "$TMP/present.sha256"
left=()
while read -r f; do
    [ -f "$f" ] && [ -f "$TMP/deb$f" ] && ! grep -qxF "$f" "$TMP/present.list" && left+=("$f")
done <"$TMP/deb.list"
is "${left[*]}" "" "no file of the package is left that was not there before"

finish

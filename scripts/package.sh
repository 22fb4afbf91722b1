#!/usr/bin/env bash
# The Debian package of conveyor, from the PGXN archive:  bash scripts/package.sh [OUTDIR]
#
# `make dist` writes the PGXN archive of the last commit (named by META.json, e.g.
# conveyor-0.3.0.zip); it is unpacked in a temporary folder and dpkg-buildpackage builds
# postgresql-15-conveyor_<version>-<revision>_<arch>.deb there from debian/ (pg_buildext, one build per
# PostgreSQL version of debian/pgversions), so the working tree's objects are never touched. Both
# files end up in OUTDIR (default dist/), and their paths are printed, the archive's first.
# What the build needs is installed with apt-get when missing. The package's own tests are skipped
# (DEB_BUILD_OPTIONS=nocheck): test/shell/package.sh installs the package and tests it.
source "$(dirname "$0")/common.sh"

OUTDIR=${1:-$ROOT/dist}
PACKAGES=(make g++ git unzip dpkg-dev debhelper postgresql-server-dev-all postgresql-server-dev-15 libfmt-dev
          libxxhash-dev libvalijson-dev nlohmann-json3-dev)
ensure_packages

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/conveyor-package.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

make -C "$ROOT" -s dist DIST_DIR="$WORK" PG_CONFIG="$PGBIN/pg_config"
archive=$(cd "$WORK" && ls ./*.zip)
archive=${archive#./}
log "unpacking $archive"
unzip -q "$WORK/$archive" -d "$WORK/src"
tree=$(ls -d "$WORK"/src/*/)

log "building the Debian package in $tree (a whole build of conveyor)"
if ! (cd "$tree" && DEB_BUILD_OPTIONS="nocheck ${DEB_BUILD_OPTIONS:-}" \
        dpkg-buildpackage -b -us -uc -j"$(nproc)") >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log" >&2
    log "dpkg-buildpackage failed"
    exit 1
fi
source_name=$(cd "$tree" && dpkg-parsechangelog -S Source)
debs=("$WORK"/src/postgresql-*-"$source_name"_*.deb)
[ -e "${debs[0]}" ] || { log "dpkg-buildpackage made no postgresql-*-$source_name package"; exit 1; }

cp "$WORK/$archive" "${debs[@]}" "$OUTDIR/"
echo "$OUTDIR/$archive"
for d in "${debs[@]}"; do echo "$OUTDIR/$(basename "$d")"; done

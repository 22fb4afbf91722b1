#!/usr/bin/env bash
# The whole test suite, from a bare Debian 12 machine:  bash scripts/test.sh
#
# Installs what is missing, builds and installs conveyor, starts a scratch cluster, then runs
#   1. pg_regress         test/regress/sql/*.sql against test/regress/expected/*.out   (what users see)
#   2. isolation tester   test/isolation/specs/*.spec against test/isolation/expected/ (every race)
#   3. pgTAP              test/pgtap/*.sql through pg_prove                            (behaviour)
#   4. shell tests        test/shell/*.sh                  (stress, fuzz, dump/restore, LISTEN, ...)
#   5. example apps       examples/<name>/: install.sql into a fresh database, then its pgTAP tests
#                         examples/<name>/test/*.sql and its shell tests examples/<name>/test/*.sh
# and ends with one line: "N passed, N failed". CONVEYOR_SUITES="regress isolation pgtap shell"
# picks suites; CONVEYOR_ONLY="<name> ..." picks files within them (for examples: the example's name).
source "$(dirname "$0")/common.sh"
setup_all
build_install_selftest

SUITES=${CONVEYOR_SUITES:-"regress isolation pgtap shell examples"}
ONLY=${CONVEYOR_ONLY:-}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/conveyor-test.XXXXXX")
chmod 755 "$OUT"
passed=0
failed=0
add() { passed=$((passed + $1)); failed=$((failed + $2)); }

pick() {  # the names (without extension) of files matching $1, filtered by ONLY
    local f
    for f in $1; do
        [ -e "$f" ] || continue
        f=$(basename "$f"); f=${f%.*}
        if [ -z "$ONLY" ] || [[ " $ONLY " == *" $f "* ]]; then echo "$f"; fi
    done
}

# pg_regress-style runners print one line per test: "ok", or "FAILED"/"failed".
count_regress() {
    local ok bad
    ok=$(grep -cE '^(ok|test) .*\.\.\. +ok|^ok [0-9]+ ' "$1" || true)
    bad=$(grep -cE '\.\.\. +FAILED|\.\.\. +failed|^not ok ' "$1" || true)
    add "$ok" "$bad"
}

run_regress() {
    local tests
    tests=$(pick "$ROOT/test/regress/sql/*.sql")
    [ -n "$tests" ] || return 0
    log "pg_regress"
    # shellcheck disable=SC2086
    $PGXS_DIR/src/test/regress/pg_regress --inputdir="$ROOT/test/regress" --outputdir="$OUT/regress" --bindir=$PGBIN \
        --load-extension=conveyor --dbname=conveyor_regress $tests 2>&1 | tee "$OUT/regress.log" || true
    count_regress "$OUT/regress.log"
    [ -f "$OUT/regress/regression.diffs" ] && cat "$OUT/regress/regression.diffs"
    return 0
}

run_isolation() {
    local tests
    tests=$(pick "$ROOT/test/isolation/specs/*.spec")
    [ -n "$tests" ] || return 0
    log "isolation tester"
    # shellcheck disable=SC2086
    $PGXS_DIR/src/test/isolation/pg_isolation_regress --inputdir="$ROOT/test/isolation" --outputdir="$OUT/isolation" \
        --bindir=$PGBIN --load-extension=conveyor --dbname=conveyor_isolation $tests 2>&1 | tee "$OUT/isolation.log" || true
    count_regress "$OUT/isolation.log"
    [ -f "$OUT/isolation/regression.diffs" ] && cat "$OUT/isolation/regression.diffs"
    return 0
}

run_pgtap() {
    local files=() f
    for f in $(pick "$ROOT/test/pgtap/*.sql"); do files+=("$ROOT/test/pgtap/$f.sql"); done
    [ ${#files[@]} -gt 0 ] || return 0
    log "pgTAP"
    psql -X -q -c "DROP DATABASE IF EXISTS conveyor_tap" -c "CREATE DATABASE conveyor_tap" >/dev/null
    psql -X -q -d conveyor_tap -c "CREATE EXTENSION pgtap" -c "CREATE EXTENSION conveyor" >/dev/null
    # From the repository root: tests read their fixtures as test/fixtures/<file>.
    (cd "$ROOT" && pg_prove --verbose --dbname conveyor_tap "${files[@]}") > "$OUT/pgtap.log" 2>&1 || true
    grep -E '^(not )?ok |Failed|Dubious|Parse errors|Result:|^# ' "$OUT/pgtap.log" | grep -vE '^ok ' || true
    local ok bad
    ok=$(grep -cE '^ *ok [0-9]+' "$OUT/pgtap.log" || true)
    bad=$(grep -cE '^ *not ok [0-9]+' "$OUT/pgtap.log" || true)
    # A file that dies or misses its plan fails even when every assertion it ran passed.
    if grep -q 'Result: FAIL' "$OUT/pgtap.log" && [ "$bad" -eq 0 ]; then bad=1; fi
    add "$ok" "$bad"
    grep -E '^(Files=|Result:)' "$OUT/pgtap.log" || true
}

# Shell tests print TAP lines ("ok - ..." / "not ok - ...") and exit non-zero on failure.
run_shell_file() {  # run_shell_file SCRIPT LOGNAME
    local rc=0 ok bad
    bash "$1" > "$OUT/shell-$2.log" 2>&1 || rc=$?
    cat "$OUT/shell-$2.log"
    ok=$(grep -cE '^ok ' "$OUT/shell-$2.log" || true)
    bad=$(grep -cE '^not ok ' "$OUT/shell-$2.log" || true)
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; echo "not ok - $2 exited with status $rc"; fi
    add "$ok" "$bad"
}

run_shell() {
    local t
    for t in $(pick "$ROOT/test/shell/*.sh"); do
        log "shell test $t"
        run_shell_file "$ROOT/test/shell/$t.sh" "$t"
    done
}

# Each example application (examples/<name>/) is installed with its install.sql into a fresh database
# that has conveyor and pgTAP, its pgTAP files run there (from the repository root), then its shell
# tests run like test/shell's (they create their own databases).
run_examples() {
    local name dir db files f ok bad t
    for name in $(pick "$ROOT/examples/*"); do
        dir=$ROOT/examples/$name
        [ -f "$dir/install.sql" ] || continue
        log "example $name"
        db=conveyor_example_$name
        psql -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
        psql -X -q -d "$db" -c "CREATE EXTENSION pgtap" -c "CREATE EXTENSION conveyor" >/dev/null
        if psql -X -q -v ON_ERROR_STOP=1 -d "$db" -f "$dir/install.sql" > "$OUT/example-$name-install.log" 2>&1; then
            echo "ok - examples/$name: install.sql"
            add 1 0
        else
            cat "$OUT/example-$name-install.log"
            echo "not ok - examples/$name: install.sql"
            add 0 1
            continue
        fi
        files=()
        for f in "$dir"/test/*.sql; do [ -e "$f" ] && files+=("$f"); done
        if [ ${#files[@]} -gt 0 ]; then
            (cd "$ROOT" && pg_prove --verbose --dbname "$db" "${files[@]}") > "$OUT/example-$name-pgtap.log" 2>&1 || true
            grep -E '^(not )?ok |Failed|Dubious|Parse errors|Result:|^# ' "$OUT/example-$name-pgtap.log" | grep -vE '^ok ' || true
            ok=$(grep -cE '^ *ok [0-9]+' "$OUT/example-$name-pgtap.log" || true)
            bad=$(grep -cE '^ *not ok [0-9]+' "$OUT/example-$name-pgtap.log" || true)
            if grep -q 'Result: FAIL' "$OUT/example-$name-pgtap.log" && [ "$bad" -eq 0 ]; then bad=1; fi
            add "$ok" "$bad"
            grep -E '^(Files=|Result:)' "$OUT/example-$name-pgtap.log" || true
        fi
        psql -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
        for t in "$dir"/test/*.sh; do
            [ -e "$t" ] || continue
            log "example $name: shell test $(basename "$t" .sh)"
            run_shell_file "$t" "example-$name-$(basename "$t" .sh)"
        done
    done
}

for s in $SUITES; do
    case $s in
        regress) run_regress ;;
        isolation) run_isolation ;;
        pgtap) run_pgtap ;;
        shell) run_shell ;;
        examples) run_examples ;;
        *) echo "unknown suite $s" >&2; add 0 1 ;;
    esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]

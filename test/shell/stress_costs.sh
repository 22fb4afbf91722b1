#!/usr/bin/env bash
# Stress: 100 concurrent clients (pgbench -c 100) each charge one account 100 times.
#   1. READ COMMITTED, no budget. Half the charges carry an idempotency key drawn from 60 per client,
#      so keys repeat; a key's amount is a function of the key. Each client logs, in the charge's own
#      transaction, what it charged. Afterwards the account's total equals the exact sum of the
#      distinct charges (every charge without a key, each key once), the ledger holds exactly those
#      entries, and ledger_verify is ok.
#   2. The same under SERIALIZABLE, pgbench retrying 40001 (--max-tries), as callers must.
#   3. A hard budget smaller than the demand: the total ends at or below the budget, every refused
#      charge was refused with CV001 (the wrapper catches only CV001; any other error fails the
#      client), and the refused charges wrote nothing.
#   4. Reservations: clients reserve, then settle, release or abandon (ttl 1 s), while others charge.
#      A sampler reads total + reserved every few milliseconds: it never passes the budget.
# The clients run with synchronous_commit = off: no crash is involved, and it keeps the run short.
source "$(dirname "$0")/lib/tap.bash"

DB=conveyor_shell_stress_costs
CLIENTS=${CONVEYOR_STRESS_CLIENTS:-100}
PER_CLIENT=${CONVEYOR_STRESS_CHARGES:-100}
PGBENCH=${CONVEYOR_PGBIN:-/usr/lib/postgresql/15/bin}/pgbench
use_scratch stress-costs

create_db "$DB" || bail "could not create database $DB"
export PGOPTIONS="-c synchronous_commit=off"

psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL' || bail "could not create the test tables"
-- What each client charged, written in the charge's transaction (so a rolled-back or retried
-- transaction leaves no row): idem_key NULL for charges without a key.
CREATE TABLE charge_log (account text, client int, idem_key text, amount numeric, outcome text);
CREATE TABLE samples (at timestamptz DEFAULT clock_timestamp(), total numeric, reserved numeric, budget numeric);
CREATE TABLE sampler_stop (stop boolean);

-- A key's amount depends on the key alone, so a repeated key is the same request.
CREATE FUNCTION amount_of(client int, k int) RETURNS numeric LANGUAGE sql IMMUTABLE
    RETURN round(((client * 61 + k * 7) % 9973 + 1) / 1000000.0, 6);

-- Charges; a CV001 refusal is logged as refused (in a subtransaction, so it writes nothing else);
-- every other error reaches the client (pgbench retries 40001/40P01, fails on anything else).
CREATE FUNCTION charge_logged(acct text, client int, k int, with_key boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    amt numeric := amount_of(client, k);
    key text := CASE WHEN with_key THEN 'c' || client || '-' || k END;
BEGIN
    BEGIN
        PERFORM conveyor.charge(acct, 'svc' || (k % 3), amt, 1, NULL, key);
        INSERT INTO charge_log VALUES (acct, client, key, amt, 'charged');
    EXCEPTION WHEN SQLSTATE 'CV001' THEN
        INSERT INTO charge_log VALUES (acct, client, key, amt, 'refused');
    END;
END
$$;

-- Reserves, or NULL when refused with CV001 (logged).
CREATE FUNCTION reserve_logged(acct text, client int, amt numeric, ttl int) RETURNS uuid
LANGUAGE plpgsql AS $$
BEGIN
    RETURN conveyor.reserve(acct, amt, ttl);
EXCEPTION WHEN SQLSTATE 'CV001' THEN
    INSERT INTO charge_log VALUES (acct, client, NULL, amt, 'reserve refused');
    RETURN NULL;
END
$$;

CREATE FUNCTION settle_logged(acct text, client int, id uuid, actual numeric) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM conveyor.settle(id, actual, 'paid_api');
    INSERT INTO charge_log VALUES (acct, client, NULL, actual, 'settled');
END
$$;

CREATE PROCEDURE sample(acct text) LANGUAGE plpgsql AS $$
BEGIN
    LOOP
        INSERT INTO samples (total, reserved, budget)
            SELECT total, reserved, budget FROM conveyor.accounts WHERE account = acct;
        COMMIT;
        EXIT WHEN EXISTS (SELECT FROM sampler_stop);
        PERFORM pg_sleep(0.005);
    END LOOP;
END
$$;
SQL

cat > "$TMP/charge.sql" <<'EOF'
\set k random(1, 60)
\set with_key random(0, 1)
SELECT charge_logged(:acct, :client_id, :k, :with_key = 1);
EOF
cat > "$TMP/charge_serializable.sql" <<'EOF'
\set k random(1, 60)
\set with_key random(0, 1)
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT charge_logged(:acct, :client_id, :k, :with_key = 1);
COMMIT;
EOF
# Reserve up to 0.05; settle for at most what was reserved (3 in 5), release (1 in 5) or abandon it
# to expire after 1 s (1 in 5); every transaction also makes a plain charge that competes for the
# same budget.
cat > "$TMP/reserve.sql" <<'EOF'
\set k random(1, 60)
\set what random(1, 5)
\set ttl 60 - 59 * ((:what + 3) / 8)
\set cents random(1, 5)
\set used :cents * random(0, 100)
SELECT COALESCE(r::text, '') AS rid, (r IS NOT NULL)::int AS got FROM reserve_logged(:acct, :client_id, :cents / 100.0, :ttl) r \gset
\if :got = 1 AND :what <= 3
SELECT settle_logged(:acct, :client_id, :rid, round(:used / 10000.0, 6));
\elif :got = 1 AND :what = 4
SELECT conveyor.release_reservation(:rid);
\endif
SELECT charge_logged(:acct, :client_id, :k, false);
EOF

# run_pgbench NAME SCRIPT ACCOUNT [pgbench args]: -c CLIENTS -t PER_CLIENT; fails if a client failed.
run_pgbench() {
    local name=$1 script=$2 acct=$3
    shift 3
    if ! "$PGBENCH" -n -M prepared -c "$CLIENTS" -j 2 -t "$PER_CLIENT" -f "$script" -D acct="$acct" "$@" "$DB" \
            > "$TMP/$name.out" 2>&1; then
        cat "$TMP/$name.out"
        return 1
    fi
    local failed
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$TMP/$name.out")
    note "$name: $(grep -E '^(number of transactions actually processed|number of transactions retried|total number of retries|tps)' "$TMP/$name.out" | tr '\n' ';')"
    [ "${failed:-0}" = 0 ] || { cat "$TMP/$name.out"; return 1; }
}

# The checks after a run without a budget: totals against the clients' own log and the ledger. (An
# account without a budget keeps its total on slot rows: account_status adds them up.)
check_exact() {
    local acct=$1 label=$2
    is "$(q "$DB" "SELECT count(*) FROM charge_log WHERE account = '$acct' AND outcome = 'charged'")" \
        "$((CLIENTS * PER_CLIENT))" "$label: every client transaction logged its charge"
    is "$(q "$DB" "SELECT count(*) > 0 FROM (SELECT idem_key FROM charge_log WHERE account = '$acct'
                   AND idem_key IS NOT NULL GROUP BY idem_key HAVING count(*) > 1) d")" t \
        "$label: idempotency keys were repeated"
    is "$(q "$DB" "SELECT total = (SELECT sum(amount) FROM (
                       SELECT amount FROM charge_log WHERE account = '$acct' AND idem_key IS NULL
                       UNION ALL
                       SELECT min(amount) FROM charge_log WHERE account = '$acct' AND idem_key IS NOT NULL GROUP BY idem_key) d)
                   FROM conveyor.account_status('$acct')")" t \
        "$label: the total is the exact sum of the distinct charges"
    is "$(q "$DB" "SELECT count(*) = (SELECT count(*) FILTER (WHERE idem_key IS NULL) + count(DISTINCT idem_key)
                                      FROM charge_log WHERE account = '$acct')
                   FROM conveyor.ledger WHERE account = '$acct'")" t \
        "$label: the ledger holds one entry per distinct charge"
    is "$(q "$DB" "SELECT ok FROM conveyor.ledger_verify('$acct')")" t "$label: ledger_verify is ok"
}

# ---- 1. READ COMMITTED ---------------------------------------------------------------------------
q "$DB" "SELECT conveyor.account_create('rc', NULL)" >/dev/null
SECONDS=0
if run_pgbench rc "$TMP/charge.sql" rc; then pass "READ COMMITTED: $CLIENTS clients x $PER_CLIENT charges, no client failed"
else fail "READ COMMITTED: a client failed"; fi
note "READ COMMITTED run: ${SECONDS}s"
check_exact rc "READ COMMITTED"

# ---- 2. SERIALIZABLE, retrying 40001 ------------------------------------------------------------
q "$DB" "SELECT conveyor.account_create('ser', NULL)" >/dev/null
SECONDS=0
if run_pgbench ser "$TMP/charge_serializable.sql" ser --max-tries=100000; then
    pass "SERIALIZABLE: $CLIENTS clients x $PER_CLIENT charges, retried on 40001, no client failed"
else fail "SERIALIZABLE: a client failed"; fi
note "SERIALIZABLE run: ${SECONDS}s"
is "$(grep -c 'number of transactions retried' "$TMP/ser.out")" 1 "SERIALIZABLE: pgbench reports its retries"
check_exact ser "SERIALIZABLE"

# ---- 3. a hard budget smaller than the demand ----------------------------------------------------
# Demand: charges average ~0.005 (10,000 of them: ~50); the budget is 40% of that.
N=$((CLIENTS * PER_CLIENT))
q "$DB" "SELECT conveyor.account_create('hard', $N / 500.0)" >/dev/null
if run_pgbench hard "$TMP/charge.sql" hard; then pass "hard budget: no client failed (refusals were CV001 only)"
else fail "hard budget: a client failed with an error other than CV001"; fi
is "$(q "$DB" "SELECT count(*) > 0 FROM charge_log WHERE account = 'hard' AND outcome = 'refused'")" t \
    "hard budget: charges were refused"
is "$(q "$DB" "SELECT total <= budget AND total > budget - 0.01 FROM conveyor.accounts WHERE account = 'hard'")" t \
    "hard budget: the total is within the budget and reached it"
is "$(q "$DB" "SELECT total = (SELECT sum(amount) FROM (
                   SELECT amount FROM charge_log WHERE account = 'hard' AND outcome = 'charged' AND idem_key IS NULL
                   UNION ALL
                   SELECT min(amount) FROM charge_log WHERE account = 'hard' AND outcome = 'charged' AND idem_key IS NOT NULL
                   GROUP BY idem_key) d) FROM conveyor.accounts WHERE account = 'hard'")" t \
    "hard budget: the total is the sum of the charges that passed; refused ones wrote nothing"
is "$(q "$DB" "SELECT ok FROM conveyor.ledger_verify('hard')")" t "hard budget: ledger_verify is ok"

# ---- 4. reservations, sampled while they run -----------------------------------------------------
q "$DB" "SELECT conveyor.account_create('resv', round($N * 0.0015, 6))" >/dev/null
psql -X -q -d "$DB" -c "CALL sample('resv')" >/dev/null 2>"$TMP/sampler.err" &
sampler=$!
PIDS+=("$sampler")
if run_pgbench resv "$TMP/reserve.sql" resv; then pass "reservations: no client failed (refusals were CV001 only)"
else fail "reservations: a client failed with an error other than CV001"; fi
# Past every ttl: the abandoned reservations are expired by maintain().
sleep 1.2
q "$DB" "INSERT INTO sampler_stop VALUES (true)" >/dev/null
wait "$sampler" || fail "the sampler failed: $(cat "$TMP/sampler.err")"
note "reservations: $(q "$DB" "SELECT count(*) || ' samples, max committed + reserved ' || max(total + reserved) FROM samples")"
is "$(q "$DB" "SELECT count(*) >= 20 FROM samples")" t "reservations: the sampler took samples during the run"
is "$(q "$DB" "SELECT count(*) FROM samples WHERE total + reserved > budget")" 0 \
    "reservations: committed + reserved never passed the budget in any sample"
is "$(q "$DB" "SELECT count(*) > 0 FROM samples WHERE reserved > 0")" t "reservations: samples saw budget held"
is "$(q "$DB" "SELECT count(*) > 0 FROM charge_log WHERE account = 'resv' AND outcome IN ('refused', 'reserve refused')")" t \
    "reservations: the budget ran out and refusals happened"
q "$DB" "SELECT conveyor.maintain()" >/dev/null
is "$(q "$DB" "SELECT count(*) FROM conveyor.reservations WHERE account = 'resv' AND state = 'open'")" 0 \
    "reservations: after maintain() none is left open"
is "$(q "$DB" "SELECT reserved FROM conveyor.accounts WHERE account = 'resv'")" 0.000000 \
    "reservations: nothing is left reserved"
is "$(q "$DB" "SELECT total = (SELECT COALESCE(sum(amount), 0) FROM charge_log WHERE account = 'resv'
                               AND outcome IN ('charged', 'settled')) FROM conveyor.accounts WHERE account = 'resv'")" t \
    "reservations: the total is the sum of settlements and charges that passed"
is "$(q "$DB" "SELECT total <= budget FROM conveyor.accounts WHERE account = 'resv'")" t \
    "reservations: the total is within the budget"
is "$(q "$DB" "SELECT bool_and(ok) FROM conveyor.ledger_verify()")" t "ledger_verify is ok on every account"

finish

#!/usr/bin/python3
"""The workload of the fault tests (test/shell/fault_*.sh); not a test on its own.

Subcommands:
  setup    DSN                       the queue, the accounts and the tables the checks read
  producer DSN OUT JOBS BATCH DEADLINE  enqueues JOBS jobs with enqueue_batch, one transaction per batch
  worker   DSN OUT NAME DEADLINE     dequeues and acks jobs, makes fenced writes and charges
  killer   DSN OUT DB DEADLINE KILL9 TERM INTERVAL
                                     kill -9s (KILL9 times) and pg_terminate_backends (TERM times) backends
                                     of the workload that are inside a transaction or a conveyor call

Every process reconnects after a connection error (short backoff, until its deadline) and goes on.
Whatever a process saw that the database cannot know is written to OUT (a directory): the charge keys a
worker attempted and the ones it got an answer for, the acks and the producer's batches whose commit it
saw confirmed, its counts, and the killer's kills. Each confirmed commit is logged with the client's
clock when the answer came and, with FAULT_WAL_POSITION=1, the server's WAL insert position asked for
right after it (a bound on the commit record's end; \\N when the connection went first): a failover
test compares them with what a standby had replayed.
"""
import json
import os
import random
import signal
import sys
import time
import zlib

import psycopg
from psycopg import errors

QUEUE = "faults"
NGROUPS = 200
LEASE_KEYS = 20
ACCOUNTS = ["acct-a", "acct-b", "acct-c", "acct-budget"]  # the last has a hard budget: the strict path
# Errors after which the same call is simply tried again on the same connection (README, "Errors").
RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected, errors.LockNotAvailable)

SCHEMA = """
SELECT conveyor.create_queue('faults', '{"lease_seconds": 2, "max_attempts": 5, "backoff_base_seconds": 1,
                                         "backoff_max_seconds": 2}');
SELECT conveyor.account_create('acct-a');
SELECT conveyor.account_create('acct-b');
SELECT conveyor.account_create('acct-c');
SELECT conveyor.account_create('acct-budget', 1000000);
SELECT conveyor.account_create('jobs');
-- What the producer enqueued, written in the enqueue_batch's own transaction.
CREATE TABLE enqueued (n int PRIMARY KEY, batch int NOT NULL, job_id uuid NOT NULL, was_duplicate boolean NOT NULL);
CREATE TABLE producer_done (done boolean);
-- A job's effect: written in the transaction that acks it with success.
CREATE TABLE effects (job_id uuid NOT NULL, attempt int NOT NULL, worker text NOT NULL,
                      dequeued_at timestamptz NOT NULL, committed_at timestamptz NOT NULL);
-- A failed attempt: written in the transaction that acks it with failure.
CREATE TABLE failures (job_id uuid NOT NULL, attempt int NOT NULL, worker text NOT NULL);
-- The resource the leases guard: one row per key; seq counts the events on it, in commit order.
CREATE TABLE lease_data (key text PRIMARY KEY, seq bigint NOT NULL DEFAULT 0, token bigint NOT NULL DEFAULT 0);
-- Acquisitions and accepted fenced writes, each with the key's seq taken under the row lock.
CREATE TABLE lease_events (key text NOT NULL, seq bigint NOT NULL, kind text NOT NULL, token bigint NOT NULL,
                           prev_token bigint, owner text NOT NULL, at timestamptz NOT NULL,
                           PRIMARY KEY (key, seq));
"""


def now():
    return time.time()


WAL_POSITION = os.environ.get("FAULT_WAL_POSITION") == "1"


def confirmed_position(conn):
    """After a commit the client saw confirmed: its time and, with FAULT_WAL_POSITION=1, the server's
    WAL insert position (at or past the end of that commit's record), as two tab-separated fields."""
    at = "%.6f" % now()
    if not WAL_POSITION:
        return at + "\t\\N"
    try:
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        conn.commit()
        return "%s\t%s" % (at, lsn)
    except Exception:  # noqa: BLE001 - the connection went: the position stays unknown
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001
            pass
        return at + "\t\\N"


class Stats(dict):
    def add(self, name, k=1):
        self[name] = self.get(name, 0) + k


class Session:
    """A connection that comes back after any connection error, until the deadline."""

    def __init__(self, dsn, app, deadline, stats, pooled):
        self.dsn, self.app, self.deadline, self.stats, self.pooled = dsn, app, deadline, stats, pooled
        self.conn = None
        self.generation = 0  # one more for every connection made
        self.streak, self.last_loss = 0, 0.0  # losses in a row, each within a second of the last

    def get(self):
        if self.conn is not None and not self.conn.closed and not self.conn.broken:
            return self.conn
        if self.conn is not None:
            self.stats.add("reconnects")
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None
        pause = 0.05
        while True:
            if now() > self.deadline:
                raise TimeoutError("deadline passed while reconnecting")
            try:
                self.conn = psycopg.connect(self.dsn, application_name=self.app, connect_timeout=3,
                                            autocommit=False,
                                            # pgbouncer in transaction mode: no prepared statements
                                            prepare_threshold=None if self.pooled else 5)
                self.generation += 1
                return self.conn
            except psycopg.OperationalError:
                self.stats.add("failed_connects")
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def lost(self, exc):
        """True when exc ended the connection (the caller starts over on a new one)."""
        if self.conn is None or self.conn.closed or self.conn.broken or isinstance(exc, psycopg.OperationalError):
            self.stats.add("connection_errors")
            # The first few kinds of message, for the notes; then a pause, so that a pooler that
            # accepts clients while its server is away is not asked again in a tight loop.
            kinds = self.stats.setdefault("lost_kinds", {})
            kind = str(exc).strip().split("\n")[0][:80]
            if kind in kinds or len(kinds) < 8:
                kinds[kind] = kinds.get(kind, 0) + 1
            self.streak = self.streak + 1 if now() - self.last_loss < 1 else 0
            self.last_loss = now()
            time.sleep(min(0.02 * 2 ** self.streak, 0.5))
            try:
                if self.conn is not None:
                    self.conn.close()
            except Exception:
                pass
            return True
        return False

    def rollback(self):
        try:
            self.conn.rollback()
        except Exception:
            pass


def run_tx(sess, fn, stats, what):
    """Runs fn(conn) in a transaction until it commits, retrying 40001/40P01/55P03 (same connection)
    and connection errors (new connection). Returns fn's result; raises only past the deadline or
    on an unexpected error."""
    while True:
        conn = sess.get()
        try:
            result = fn(conn)
            conn.commit()
            return result
        except RETRYABLE:
            stats.add("retries")
            sess.rollback()
        except Exception as exc:  # noqa: BLE001 - sorted below
            if sess.lost(exc):
                continue
            sess.rollback()
            raise


# ---- setup ------------------------------------------------------------------------------------------

def setup(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in SCHEMA.split(";\n"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("INSERT INTO lease_data (key) SELECT 'fault:' || g FROM generate_series(0, %s) g",
                     (LEASE_KEYS - 1,))


# ---- producer ---------------------------------------------------------------------------------------

def producer(dsn, out, jobs, batch, deadline, pooled):
    stats = Stats()
    rng = random.Random(2)
    sess = Session(dsn, "fault_producer", deadline, stats, pooled)
    nbatches = (jobs + batch - 1) // batch
    confirmed = open(os.path.join(out, "batches.confirmed"), "a", buffering=1)

    for b in range(nbatches):
        elements = [{"payload": {"n": n, "fail": n % 10 == 7},
                     "group_key": "g%03d" % (n % NGROUPS),
                     "priority": 1 + (n * 7) % 10,
                     "dedup_key": "n:%d" % n}
                    for n in range(b * batch, min((b + 1) * batch, jobs))]

        def enqueue(conn):
            # A retry after a connection error: the earlier try may have committed. Its rows in
            # `enqueued` say so (they commit with the jobs); then the batch is done.
            if conn.execute("SELECT EXISTS (SELECT FROM enqueued WHERE batch = %s)", (b,)).fetchone()[0]:
                stats.add("batches_found_committed")
                return
            conn.execute(
                "INSERT INTO enqueued (n, batch, job_id, was_duplicate)"
                " SELECT (%(jobs)s::jsonb -> e.ord -> 'payload' ->> 'n')::int, %(b)s, e.job_id, e.was_duplicate"
                " FROM conveyor.enqueue_batch('faults', %(jobs)s::jsonb) e",
                {"jobs": json.dumps(elements), "b": b})
            stats.add("batches")

        tries = 0
        while True:
            conn = sess.get()
            tries += 1
            try:
                enqueue(conn)
                time.sleep(0.02)  # idle in the transaction: the killer's chance
                conn.commit()
                if rng.random() < 0.1:
                    # The commit's answer lost on the way: the client cannot know it committed.
                    stats.add("commit_answers_lost")
                    sess.lost(psycopg.OperationalError("answer lost"))
                    continue
                # Committed now, or found committed by this transaction's look.
                confirmed.write("%d\t%s\n" % (b, confirmed_position(conn)))
                break
            except RETRYABLE:
                stats.add("retries")
                sess.rollback()
            except Exception as exc:  # noqa: BLE001
                if not sess.lost(exc):
                    raise
        if tries > 1:
            stats.add("batches_retried")
        time.sleep(0.2)
    run_tx(sess, lambda c: c.execute("INSERT INTO producer_done VALUES (true)"), stats, "done")
    write_stats(out, "producer", stats)


# ---- worker -----------------------------------------------------------------------------------------

def charge_amount(key):
    return "%.6f" % ((zlib.crc32(key.encode()) % 9973 + 1) / 1000000)


def worker(dsn, out, name, deadline, pooled):
    rng = random.Random(zlib.crc32(name.encode()) ^ os.getpid())
    stats = Stats()
    sess = Session(dsn, "fault_" + name, deadline, stats, pooled)
    attempted = open(os.path.join(out, "charges-%s.attempted" % name), "a", buffering=1)
    confirmed = open(os.path.join(out, "charges-%s.confirmed" % name), "a", buffering=1)
    acked = open(os.path.join(out, "acks-%s.confirmed" % name), "a", buffering=1)
    unexpected = []
    charge_seq = 0

    def work_jobs():
        conn = sess.get()
        rows = conn.execute(
            "SELECT d.job_id, d.attempt, (d.payload ->> 'fail')::boolean, clock_timestamp()"
            " FROM conveyor.dequeue('faults', %s, 5) d", (name,)).fetchall()
        conn.commit()
        if not rows:
            finished = conn.execute("SELECT EXISTS (SELECT FROM producer_done)"
                                    " AND NOT EXISTS (SELECT FROM conveyor.jobs)").fetchone()[0]
            conn.commit()
            if finished:
                return True
            time.sleep(0.05)
            return False
        stats.add("attempts", len(rows))
        for job_id, attempt, fails, dequeued_at in rows:
            if rng.random() < 0.003:
                time.sleep(2.5)  # a stall past the 2-second lease: this ack must be refused
            # One transaction: the job's charge, the work, the ack and the effect.
            if fails:
                ok = conn.execute("SELECT conveyor.ack(%s, false, 'always fails', worker_id => %s)",
                                  (job_id, name)).fetchone()[0]
                if ok:
                    conn.execute("INSERT INTO failures VALUES (%s, %s, %s)", (job_id, attempt, name))
            else:
                conn.execute("SELECT FROM conveyor.charge('jobs', 'job', 0.010000, metadata => %s,"
                             " idempotency_key => %s)",
                             (json.dumps({"job": str(job_id)}), "job:%s" % job_id))
                time.sleep(rng.random() * 0.004)  # the work, inside the transaction
                ok = conn.execute("SELECT conveyor.ack(%s, true, worker_id => %s)", (job_id, name)).fetchone()[0]
                if ok:
                    conn.execute("INSERT INTO effects VALUES (%s, %s, %s, %s, clock_timestamp())",
                                 (job_id, attempt, name, dequeued_at))
            if ok:
                conn.commit()
                stats.add("acks")
                acked.write("%s\t%d\t%s\t%s\t%s\n" % (job_id, attempt, "f" if fails else "t", name,
                                                        confirmed_position(conn)))
            else:
                conn.rollback()  # the lease was lost: nothing of this attempt may stay
                stats.add("acks_refused")
        return False

    def lease_section():
        conn = sess.get()
        key = "fault:%d" % rng.randrange(LEASE_KEYS)
        owner = "%s.%d" % (name, sess.generation)  # a new connection is a new owner
        tok = conn.execute("SELECT conveyor.lock_acquire(%s, %s, %s)", (key, owner, rng.choice([1, 2]))).fetchone()[0]
        if tok is None:
            conn.commit()
            stats.add("leases_busy")
            return
        seq = conn.execute("UPDATE lease_data SET seq = seq + 1 WHERE key = %s RETURNING seq", (key,)).fetchone()[0]
        conn.execute("INSERT INTO lease_events VALUES (%s, %s, 'acquire', %s, NULL, %s, clock_timestamp())",
                     (key, seq, tok, owner))
        conn.commit()
        stats.add("leases")
        for _ in range(rng.randint(1, 3)):
            time.sleep(2.2 if rng.random() < 0.1 else rng.random() * 0.01)  # sometimes past the ttl
            if not conn.execute("SELECT conveyor.lock_check(%s, %s)", (key, tok)).fetchone()[0]:
                conn.rollback()
                stats.add("fenced_refused")
                break
            time.sleep(rng.random() * 0.003)  # idle in transaction, holding the lease row
            prev, seq = conn.execute("SELECT token, seq + 1 FROM lease_data WHERE key = %s FOR UPDATE",
                                     (key,)).fetchone()
            conn.execute("UPDATE lease_data SET seq = %s, token = %s WHERE key = %s", (seq, tok, key))
            conn.execute("INSERT INTO lease_events VALUES (%s, %s, 'write', %s, %s, %s, clock_timestamp())",
                         (key, seq, tok, prev, owner))
            conn.commit()
            stats.add("fenced_writes")
        conn.execute("SELECT conveyor.lock_release(%s, %s, %s)", (key, owner, tok))
        conn.commit()

    def charge():
        nonlocal charge_seq
        charge_seq += 1
        key = "%s-%d" % (name, charge_seq)
        account = ACCOUNTS[zlib.crc32(key.encode()) % len(ACCOUNTS)]
        amount = charge_amount(key)
        attempted.write("%s\t%s\t%s\n" % (key, account, amount))
        # The same key until an answer comes back, whatever happens to the connection.
        while True:
            conn = sess.get()
            try:
                entry = conn.execute("SELECT entry_id FROM conveyor.charge(%s, 'svc', %s::numeric,"
                                     " metadata => %s, idempotency_key => %s)",
                                     (account, amount, json.dumps({"key": key}), key)).fetchone()[0]
                conn.commit()
                if rng.random() < 0.05:
                    # The answer lost on the way: the same key again must return the same entry.
                    stats.add("charge_answers_lost")
                    sess.lost(psycopg.OperationalError("answer lost"))
                    continue
                confirmed.write("%s\t%s\t%s\t%s\t%s\n" % (key, account, amount, entry, confirmed_position(conn)))
                stats.add("charges")
                return
            except (errors.ObjectNotInPrerequisiteState, *RETRYABLE):
                # 55000: an earlier call with this key is still running (e.g. behind a dead pooler).
                stats.add("retries")
                sess.rollback()
                time.sleep(0.05)
            except Exception as exc:  # noqa: BLE001
                if sess.lost(exc):
                    stats.add("charge_retries_after_error")
                    continue
                raise

    done = False
    while not done and now() < deadline:
        try:
            r = rng.random()
            if r < 0.06:
                lease_section()
            elif r < 0.16:
                charge()
            else:
                done = work_jobs()
        except RETRYABLE:
            stats.add("retries")
            sess.rollback()
        except TimeoutError:
            break
        except Exception as exc:  # noqa: BLE001
            if not sess.lost(exc):
                sess.rollback()
                stats.add("unexpected_errors")
                if len(unexpected) < 5:
                    unexpected.append("%s: %s" % (type(exc).__name__, str(exc).strip()))
                time.sleep(0.05)
    stats["finished"] = int(done)
    stats["unexpected"] = unexpected
    write_stats(out, name, stats)


# ---- killer -----------------------------------------------------------------------------------------

def killer(dsn, out, db, deadline, kill9, term, interval, pooled):
    """Picks a backend of database db (not its own) that is idle in a transaction or running a conveyor
    call and ends it: kill -9 (the postmaster then resets every backend) or pg_terminate_backend."""
    stats = Stats()
    sess = Session(dsn, "fault_killer", deadline, stats, False)
    log = open(os.path.join(out, "kills"), "a", buffering=1)
    outages = open(os.path.join(out, "outages"), "a", buffering=1)
    rng = random.Random(1)
    plan = ["KILL"] * kill9 + ["TERM"] * term
    rng.shuffle(plan)
    stop = os.path.join(out, "stop")
    time.sleep(interval)
    while plan and now() < deadline and not os.path.exists(stop):
        how = plan[0]
        try:
            conn = sess.get()
            # Through the pooler, application_name does not reach the server: any backend of db.
            rows = conn.execute(
                "SELECT pid, state, left(query, 60) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                "   AND (application_name LIKE 'fault\\_%%' OR %s)"
                "   AND (state LIKE 'idle in transaction%%' OR (state = 'active' AND query LIKE '%%conveyor.%%'))",
                (db, pooled)).fetchall()
            conn.commit()
        except Exception as exc:  # noqa: BLE001
            sess.lost(exc)
            time.sleep(0.1)
            continue
        if not rows:
            time.sleep(0.02)
            continue
        pid, state, query = rng.choice(rows)
        t_down = now()
        if how == "KILL":
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            sess.lost(psycopg.OperationalError("reset"))
            time.sleep(0.3)  # the postmaster ends every backend, then recovers
            sess.get()  # back when the server accepts connections again
            outages.write("%.6f %.6f\n" % (t_down, now()))
        else:
            try:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                conn.commit()
            except Exception as exc:  # noqa: BLE001
                sess.lost(exc)
                continue
        plan.pop(0)
        log.write("%s %d %s %s\n" % (how, pid, state.replace(" ", "_"), query.replace("\n", " ")))
        time.sleep(interval * (0.5 + rng.random()))


def write_stats(out, name, stats):
    with open(os.path.join(out, "stats-%s.json" % name), "w") as f:
        json.dump(stats, f)


def main(argv):
    cmd = argv[1]
    pooled = os.environ.get("FAULT_POOLED") == "1"
    if cmd == "setup":
        setup(argv[2])
    elif cmd == "producer":
        producer(argv[2], argv[3], int(argv[4]), int(argv[5]), now() + float(argv[6]), pooled)
    elif cmd == "worker":
        worker(argv[2], argv[3], argv[4], now() + float(argv[5]), pooled)
    elif cmd == "killer":
        killer(argv[2], argv[3], argv[4], now() + float(argv[5]), int(argv[6]), int(argv[7]), float(argv[8]), pooled)
    else:
        sys.exit("unknown subcommand " + cmd)


if __name__ == "__main__":
    main(sys.argv)

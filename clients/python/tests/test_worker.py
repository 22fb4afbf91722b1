import collections
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg

from conveyor_client import PermanentError, Producer, Worker

HERE = os.path.dirname(__file__)


def wait_until(condition, limit=120.0, what="condition"):
    """Polls condition() until it is true; fails the test past `limit` seconds (a stuck worker)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {limit} s"
        time.sleep(0.05)


def unfinished(db, queue):
    return db.execute("SELECT count(*) FROM conveyor.list_jobs(%s, ARRAY['pending', 'running'])",
                      (queue,)).fetchone()[0]


def requeue_while_running(db, worker, job_id, started, *waits):
    """Runs the worker; once started is set, an operator requeues the job while its handler runs. Waits
    for each (condition, what) of waits, then for the job to complete; stops the worker."""
    thread = start(worker)
    try:
        wait_until(started.is_set, what="the handler started")
        assert db.execute("SELECT conveyor.requeue(%s)", (job_id,)).fetchone()[0] is True
        for condition, what in waits:
            wait_until(condition, what=what)
        wait_until(lambda: db.execute("SELECT conveyor.get_job(%s)->>'status'", (job_id,)).fetchone()[0]
                   == "completed", what="the job completed")
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()


def start(worker):
    thread = threading.Thread(target=worker.run)
    thread.start()
    return thread


def test_worker_processes_run_every_job_once(db, direct_dsn, pool_dsn, make_queue, tmp_path):
    # Four worker processes over 2,000 jobs: one job in ten always fails, four "hold" jobs lose their
    # lease (an operator requeues them while they run), and one process is killed with SIGKILL halfway
    # (a fifth takes its place; its leases run out and others run its jobs again).
    queue = make_queue('{"max_attempts": 3, "backoff_base_seconds": 0, "lease_seconds": 4}')
    producer = Producer(pool_dsn)
    jobs = 2000
    holds = 4
    for chunk in range(0, jobs, 500):
        producer.enqueue_batch(queue, [
            {"payload": {"n": n, "fail": n % 10 == 5}, "job_type": "hold" if n < holds else "fetch",
             "priority": 10 if n < holds else 5} for n in range(chunk, chunk + 500)])

    def spawn(i):
        return subprocess.Popen([sys.executable, os.path.join(HERE, "stress_worker.py"), direct_dsn, pool_dsn,
                                 queue, str(tmp_path / f"runs{i}.txt"), f"stress-{i}"])

    def finished():
        return db.execute("SELECT count(*) FROM conveyor.job_history h JOIN conveyor.queues q USING (queue_id)"
                          " WHERE q.name = %s", (queue,)).fetchone()[0]

    procs = [spawn(i) for i in range(4)]
    try:
        held = [job_id for (job_id,) in db.execute(
            "SELECT job_id FROM conveyor.list_jobs(%s, job_type => 'hold')", (queue,))]
        assert len(held) == holds
        wait_until(lambda: db.execute("SELECT count(*) FROM conveyor.list_jobs(%s, ARRAY['running'], job_type => 'hold')",
                                      (queue,)).fetchone()[0] == holds, what="the hold jobs running")
        for job_id in held:
            assert db.execute("SELECT conveyor.requeue(%s)", (job_id,)).fetchone()[0] is True
        def cancelled_runs():  # a process that has not started yet has no file
            return sum((tmp_path / f"runs{i}.txt").read_text().count(" cancelled")
                       for i in range(4) if (tmp_path / f"runs{i}.txt").exists())

        wait_until(lambda: cancelled_runs() == holds, what="the hold jobs' handlers saw their lease lost")
        wait_until(lambda: finished() >= jobs // 3, limit=300, what="a third of the jobs finished")
        # Kill a process that holds jobs: their leases run out and other workers run them again. Every
        # process is frozen (SIGSTOP) first, so none can finish its jobs between the look and the kill
        # (an ack sent just before the freeze still lands within the half second), and the queue does not
        # drain while the test looks. The one holding the most running jobs is killed.
        killed = None
        for _ in range(100):
            for p in procs:
                p.send_signal(signal.SIGSTOP)
            time.sleep(0.5)
            row = db.execute("SELECT worker_id FROM conveyor.list_jobs(%s, ARRAY['running'])"
                             " GROUP BY worker_id ORDER BY count(*) DESC, worker_id LIMIT 1", (queue,)).fetchone()
            if row is not None:
                killed, killed_id = procs[int(row[0].split("-")[1])], row[0]
                killed.kill()
            for p in procs:
                if p is not killed:
                    p.send_signal(signal.SIGCONT)
            if killed is not None:
                break
            time.sleep(1.0)  # the survivors catch up on their heartbeats before the next freeze
        assert killed is not None, "a worker process holding a running job was found"
        assert killed.wait(timeout=60) == -signal.SIGKILL
        procs.append(spawn(4))
        wait_until(lambda: unfinished(db, queue) == 0, limit=600, what="every job finished")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a frozen process would not see SIGTERM
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=120) for p in procs]
    assert sorted(codes) == [-signal.SIGKILL, 0, 0, 0, 0], "the surviving workers shut down cleanly on SIGTERM"

    rows = db.execute(
        "SELECT h.job_id, h.status, h.attempt, h.payload, h.last_error FROM conveyor.job_history h"
        " JOIN conveyor.queues q USING (queue_id) WHERE q.name = %s", (queue,)).fetchall()
    assert len(rows) == jobs
    assert len({r[0] for r in rows}) == jobs, "a job finished more than once"
    trails = collections.defaultdict(list)
    for job_id, event, worker_id, details in db.execute(
            "SELECT e.job_id, e.event, e.worker_id, e.details FROM conveyor.job_events e"
            " JOIN conveyor.job_history h USING (job_id) JOIN conveyor.queues q USING (queue_id)"
            " WHERE q.name = %s ORDER BY e.at", (queue,)):
        trails[job_id].append((event, worker_id, details))
    for job_id, status, attempt, payload, last_error in rows:
        events = [e for e, _, _ in trails[job_id]]
        if payload["fail"]:
            assert (status, attempt) == ("dead", 3)
            assert last_error == f"planned failure {payload['n']}" or "expired" in events
            assert "succeeded" not in events
        else:
            assert status == "completed"
            assert events.count("succeeded") == 1, f"job {job_id} completed {events.count('succeeded')} times"
    assert sum(1 for t in trails.values() if any(e == "expired" for e, _, _ in t)) > 0, \
        "the killed worker's leased jobs expired and ran again"

    # Every handler run matches a `started` event (job, attempt, worker): the survivors' runs all of
    # them, the killed worker's some of its (it died between some dequeues and their handlers).
    runs = collections.Counter()
    outcomes = collections.defaultdict(list)
    for i in range(5):
        if not (tmp_path / f"runs{i}.txt").exists():
            continue
        with open(tmp_path / f"runs{i}.txt") as f:
            for line in f:
                job_id, attempt, worker_id, outcome = line.split()
                runs[(job_id, int(attempt), worker_id)] += 1
                outcomes[job_id].append((int(attempt), outcome))
    started = collections.Counter((str(job_id), d["attempt"], w) for job_id, t in trails.items()
                                  for e, w, d in t if e == "started")
    assert {k: v for k, v in runs.items() if k[2] != killed_id} == \
        {k: v for k, v in started.items() if k[2] != killed_id}
    assert all(started[k] >= v for k, v in runs.items() if k[2] == killed_id)
    # The hold jobs' first runs saw their lease lost; their outcomes changed nothing.
    for job_id in held:
        first = [o for a, o in outcomes[str(job_id)] if a == 1]
        assert first == ["cancelled"], f"hold job {job_id}: {outcomes[str(job_id)]}"
        events = [e for e, _, _ in trails[job_id]]
        assert "requeued" in events and events.count("succeeded") == 1 and "failed" not in events


def test_shutdown_releases_jobs_not_started(db, direct_dsn, pool_dsn, make_queue):
    queue = make_queue()
    producer = Producer(pool_dsn)
    ids = [producer.enqueue(queue, {"n": n}, job_type="slow")[0] for n in range(4)]
    started = threading.Event()
    go_on = threading.Event()
    ran = []

    def slow(job, ctx):
        ran.append(job.job_id)
        started.set()
        go_on.wait(60)
        return {"done": True}

    worker = Worker(queue, {"slow": slow}, concurrency=1, prefetch=3, conninfo_direct=direct_dsn,
                    conninfo_pool=pool_dsn, worker_id="shutdown-test", poll_interval=1.0)
    thread = start(worker)
    wait_until(started.is_set, what="the first job started")
    wait_until(lambda: db.execute("SELECT count(*) FROM conveyor.list_jobs(%s, ARRAY['running'])",
                                  (queue,)).fetchone()[0] == 4, what="four jobs leased")
    worker.stop()
    # The three jobs not started go back to the queue while the running one is still at work.
    wait_until(lambda: db.execute("SELECT count(*) FROM conveyor.list_jobs(%s, ARRAY['pending'])",
                                  (queue,)).fetchone()[0] == 3, what="three jobs released")
    assert thread.is_alive(), "the worker must wait for its running job"
    go_on.set()
    thread.join(60)
    assert not thread.is_alive()
    assert len(ran) == 1
    statuses = {job_id: db.execute("SELECT conveyor.get_job(%s)", (job_id,)).fetchone()[0] for job_id in ids}
    assert statuses[ran[0]]["status"] == "completed"
    pending = [j for j in ids if j != ran[0]]
    for job_id in pending:
        assert statuses[job_id]["status"] == "pending"
        events = [e for (e,) in db.execute("SELECT event FROM conveyor.job_events(%s)", (job_id,))]
        assert events[-1] == "released"


def test_a_handler_that_loses_its_lease_sees_cancelled(db, direct_dsn, pool_dsn, make_queue):
    queue = make_queue()
    job_id, _ = Producer(pool_dsn).enqueue(queue, {}, job_type="long")
    started = threading.Event()
    seen = []

    def long(job, ctx):
        if seen:  # the second run, after the lease was taken back
            seen.append(("again", job.attempt))
            return None
        started.set()
        seen.append(("cancelled", ctx.cancelled.wait(60)))
        return None

    # A 3 s lease: heartbeats every second. The operator takes the job back while the handler runs.
    worker = Worker(queue, {"long": long}, concurrency=1, conninfo_direct=direct_dsn, conninfo_pool=pool_dsn,
                    worker_id="lease-test", lease_seconds=3, poll_interval=0.5)
    requeue_while_running(db, worker, job_id, started, (lambda: len(seen) == 2, "the job ran again"))
    assert seen[0] == ("cancelled", True)
    events = [e for (e,) in db.execute("SELECT event FROM conveyor.job_events(%s)", (job_id,))]
    # The first run's outcome, after its lease was lost, changed nothing (one success, no failure).
    assert events.count("succeeded") == 1 and "failed" not in events


def test_a_job_leased_again_by_the_same_worker_is_run_again_and_the_old_run_is_not_acked(
        db, direct_dsn, pool_dsn, make_queue):
    # One worker with a free slot: after the operator's requeue, the job comes back to this same worker
    # while its first run still goes on. The first run must be cancelled at once and its outcome dropped:
    # the succeeded event is the second attempt's, with its stats.
    queue = make_queue()
    job_id, _ = Producer(pool_dsn).enqueue(queue, {}, job_type="long")
    first_started = threading.Event()
    second_started = threading.Event()
    first_returned = threading.Event()
    runs = []

    def long(job, ctx):
        if job.attempt == 1:
            first_started.set()
            runs.append((1, "cancelled", ctx.cancelled.wait(60)))
            runs.append((1, "saw the second run", second_started.wait(60)))
            first_returned.set()
            return {"run": 1}
        second_started.set()
        runs.append((2, "cancelled", ctx.cancelled.is_set()))
        first_returned.wait(60)
        time.sleep(0.5)  # the first run's ack, had it been sent, would have landed by now
        return {"run": 2}

    # A 60 s lease: no heartbeat within the test, so only the second dequeue can tell the first run.
    worker = Worker(queue, {"long": long}, concurrency=2, conninfo_direct=direct_dsn, conninfo_pool=pool_dsn,
                    worker_id="relet-test", lease_seconds=60, poll_interval=0.5)
    requeue_while_running(db, worker, job_id, first_started)
    assert sorted(runs) == [(1, "cancelled", True), (1, "saw the second run", True), (2, "cancelled", False)]
    trail = db.execute("SELECT event, worker_id, details FROM conveyor.job_events(%s)", (job_id,)).fetchall()
    succeeded = [d for e, _, d in trail if e == "succeeded"]
    assert [(d["attempt"], d["stats"]) for d in succeeded] == [(2, {"run": 2})], trail
    assert [w for e, w, _ in trail if e == "started"] == ["relet-test", "relet-test"]
    assert "failed" not in [e for e, _, _ in trail]


def test_failures_unknown_types_and_progress(db, direct_dsn, pool_dsn, make_queue):
    queue = make_queue('{"max_attempts": 1}')
    producer = Producer(pool_dsn)
    ok_id, _ = producer.enqueue(queue, {"url": "https://example.org/a"}, job_type="download")
    bad_id, _ = producer.enqueue(queue, {}, job_type="parse")
    odd_id, _ = producer.enqueue(queue, {}, job_type="mystery")

    def download(job, ctx):
        assert ctx.progress(40, "download", {"url": job.payload["url"]}) is True
        assert ctx.progress(70) is True
        assert ctx.log("parse.started", {"bytes": 10}) is True
        return {"bytes": 10}

    def parse(job, ctx):
        raise KeyError("title")

    worker = Worker(queue, {"download": download, "parse": parse}, concurrency=2, conninfo_direct=direct_dsn,
                    conninfo_pool=pool_dsn, poll_interval=0.5)
    thread = start(worker)
    try:
        wait_until(lambda: unfinished(db, queue) == 0, what="all three jobs finished")
    finally:
        worker.stop()
        thread.join(60)

    ok = db.execute("SELECT conveyor.get_job(%s)", (ok_id,)).fetchone()[0]
    assert (ok["status"], float(ok["percent"]), ok["step"]) == ("completed", 70.0, "download")
    trail = dict(db.execute("SELECT event, details FROM conveyor.job_events(%s)", (ok_id,)).fetchall())
    assert trail["progress"]["details"] == {"url": "https://example.org/a"}
    assert trail["log:parse.started"] == {"bytes": 10}
    assert trail["succeeded"]["stats"] == {"bytes": 10}

    bad = db.execute("SELECT conveyor.get_job(%s)", (bad_id,)).fetchone()[0]
    assert (bad["status"], bad["last_error"]) == ("dead", "'title'")
    failed = db.execute("SELECT details FROM conveyor.job_events(%s) WHERE event = 'failed'", (bad_id,)).fetchone()[0]
    assert failed["stats"] == {"exception": "KeyError"}

    odd = db.execute("SELECT conveyor.get_job(%s)", (odd_id,)).fetchone()[0]
    assert odd["status"] == "dead"
    assert odd["last_error"].startswith("no handler for job_type 'mystery'")
    assert "'download', 'parse'" in odd["last_error"]


def wake_lock_holders(db, queue):
    """The backends whose session waits on the queue (its wake lock, objsubid 6 in pg_locks)."""
    return [pid for (pid,) in db.execute(
        "SELECT l.pid FROM pg_locks l JOIN conveyor.queues q ON l.classid = 0 AND l.objid = q.queue_id::oid"
        " WHERE l.locktype = 'advisory' AND l.objsubid = 6 AND l.mode = 'ShareLock' AND q.name = %s", (queue,))]


def test_an_idle_worker_is_woken_by_an_enqueue_long_before_its_poll(db, direct_dsn, pool_dsn, make_queue):
    # The worker's dequeues go through the pool (pgbouncer in transaction mode in the pooled run);
    # only its direct session waits. A 60 s poll interval: the job must come through the wake-up.
    queue = make_queue()
    busy = threading.Event()
    go_on = threading.Event()
    holders_while_busy = []

    def handle(job, ctx):
        holders_while_busy.extend(wake_lock_holders(db_check, queue))
        busy.set()
        go_on.wait(30)
        return {"n": job.payload["n"]}

    worker = Worker(queue, {None: handle}, concurrency=1, conninfo_direct=direct_dsn, conninfo_pool=pool_dsn,
                    poll_interval=60.0)
    db_check = psycopg.connect(direct_dsn, autocommit=True)
    thread = start(worker)
    try:
        wait_until(lambda: len(wake_lock_holders(db, queue)) == 1, limit=30, what="the worker waiting on the queue")
        waiter = wake_lock_holders(db, queue)[0]
        listens = db.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (waiter,)).fetchone()[0]
        assert "wait_for" in listens, "the waiting session is the worker's direct one, which called wait_for"
        job_id, _ = Producer(pool_dsn).enqueue(queue, {"n": 1})
        enqueued = time.monotonic()
        wait_until(busy.is_set, limit=10, what="the job started (the worker woken well before its 60 s poll)")
        assert time.monotonic() - enqueued < 10
        go_on.set()
        wait_until(lambda: db.execute("SELECT conveyor.get_job(%s)->>'status'", (job_id,)).fetchone()[0]
                   == "completed", limit=10, what="the job completed")
        # Drained again: the worker waits anew on the same direct session.
        wait_until(lambda: wake_lock_holders(db, queue) == [waiter], limit=10, what="the worker waiting again")
    finally:
        go_on.set()
        worker.stop()
        thread.join(60)
        db_check.close()
    assert not thread.is_alive()
    assert holders_while_busy == [], "stop_waiting while it works: producers need not notify a busy worker"


def test_a_queue_without_notifications_is_polled(db, direct_dsn, pool_dsn, make_queue):
    # wait_for refuses such a queue (55000): the worker polls it instead of failing.
    queue = make_queue('{"notify": false}')
    worker = Worker(queue, {None: lambda job, ctx: None}, concurrency=1, conninfo_direct=direct_dsn,
                    conninfo_pool=pool_dsn, poll_interval=0.2)
    thread = start(worker)
    try:
        job_id, _ = Producer(pool_dsn).enqueue(queue, {})
        wait_until(lambda: db.execute("SELECT conveyor.get_job(%s)->>'status'", (job_id,)).fetchone()[0]
                   == "completed", limit=30, what="the job completed by polling")
        assert thread.is_alive()
        assert wake_lock_holders(db, queue) == []
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()


def test_shutdown_gives_up_on_a_handler_after_its_timeout_and_cancels_it(db, direct_dsn, pool_dsn, make_queue):
    queue = make_queue()
    job_id, _ = Producer(pool_dsn).enqueue(queue, {})
    started = threading.Event()
    seen = []

    def stubborn(job, ctx):
        started.set()
        seen.append(ctx.cancelled.wait(60))

    worker = Worker(queue, {None: stubborn}, concurrency=1, conninfo_direct=direct_dsn, conninfo_pool=pool_dsn,
                    shutdown_timeout=0.5, poll_interval=0.5)
    thread = start(worker)
    wait_until(started.is_set, what="the handler started")
    worker.stop()
    thread.join(60)
    assert not thread.is_alive(), "run() returns after shutdown_timeout"
    wait_until(lambda: seen == [True], limit=10, what="the handler saw the cancellation")
    # Its ack went out after run() returned, or not at all: the job is running or completed, never released.
    assert "released" not in [e for (e,) in db.execute("SELECT event FROM conveyor.job_events(%s)", (job_id,))]


def test_a_permanent_error_makes_the_job_dead_at_once(db, direct_dsn, pool_dsn, make_queue):
    # Five attempts each: a PermanentError dies on the first, any other exception is retried.
    queue = make_queue('{"max_attempts": 5, "backoff_base_seconds": 3600}')
    producer = Producer(pool_dsn)
    gone_id, _ = producer.enqueue(queue, {"channel_id": "UCgone"}, job_type="refresh")
    flaky_id, _ = producer.enqueue(queue, {"channel_id": "UCflaky"}, job_type="refresh")

    def refresh(job, ctx):
        if job.payload["channel_id"] == "UCgone":
            raise PermanentError("channel gone")
        raise RuntimeError("HTTP 503")

    worker = Worker(queue, {"refresh": refresh}, conninfo_direct=direct_dsn, conninfo_pool=pool_dsn,
                    poll_interval=0.5)
    thread = start(worker)
    try:
        wait_until(lambda: db.execute(
            "SELECT conveyor.get_job(%s) ->> 'status', conveyor.get_job(%s) ->> 'state'",
            (gone_id, flaky_id)).fetchone() == ("dead", "scheduled"), what="both jobs failed once")
    finally:
        worker.stop()
        thread.join(60)

    gone = db.execute("SELECT conveyor.get_job(%s)", (gone_id,)).fetchone()[0]
    assert (gone["status"], gone["attempt"], gone["last_error"], gone["reason"]) == \
        ("dead", 1, "channel gone", "not retryable")
    events = [e for (e,) in db.execute("SELECT event FROM conveyor.job_events(%s) ORDER BY at", (gone_id,))]
    assert events == ["enqueued", "started", "failed", "dead"]
    assert db.execute("SELECT reason FROM conveyor.dead_jobs(%s)", (queue,)).fetchall() == [("not retryable",)]

    flaky = db.execute("SELECT conveyor.get_job(%s)", (flaky_id,)).fetchone()[0]
    assert (flaky["status"], flaky["attempt"], flaky["last_error"]) == ("pending", 1, "HTTP 503")

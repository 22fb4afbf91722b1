"""The `conveyor` command line, run as a subprocess (python3 -m conveyor_client) against the database.

Commands other than tail go through pool_dsn (pgbouncer in the pooled run): each is one statement at
a time with no prepared statements. tail LISTENs, so it takes the direct connection.
"""
import json
import os
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

CLIENT = os.path.join(os.path.dirname(__file__), "..")


def run(args, dsn=None, env=None, timeout=60):
    full = [sys.executable, "-m", "conveyor_client"] + (["--dsn", dsn] if dsn else []) + list(args)
    return subprocess.run(full, cwd=CLIENT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def spawn(args, dsn):
    return subprocess.Popen([sys.executable, "-m", "conveyor_client", "--dsn", dsn] + list(args), cwd=CLIENT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def started_following(proc):
    """Blocks until tail says (on stderr) that it follows; what happens from then on is printed."""
    line = proc.stderr.readline()
    assert line.startswith("conveyor: following"), line


@pytest.fixture
def cli(pool_dsn):
    def call(*args, ok=True):
        result = run(args, dsn=pool_dsn)
        if ok:
            assert result.returncode == 0, result.stderr
        return result
    return call


def dead_job(db, queue, error="HTTP 503"):
    """A job of `queue` (max_attempts 1) that failed once: dead."""
    job_id = db.execute("SELECT job_id FROM conveyor.enqueue(%s, '{\"url\": \"a\"}', job_type => 'fetch')",
                        (queue,)).fetchone()[0]
    assert db.execute("SELECT job_id FROM conveyor.dequeue(%s, 'cli-test', 1)", (queue,)).fetchone()[0] == job_id
    assert db.execute("SELECT conveyor.ack(%s, false, %s, worker_id => 'cli-test')", (job_id, error)).fetchone()[0]
    return job_id


def test_status_shows_queue_metrics_and_health(db, cli, make_queue):
    queue = make_queue()
    for n in range(3):
        db.execute("SELECT conveyor.enqueue(%s, %s::jsonb)", (queue, json.dumps({"n": n})))
    out = cli("status", "--queue", queue).stdout
    health = db.execute("SELECT conveyor.health()->>'overall_status'").fetchone()[0]
    assert out.startswith(f"health: {health}  (queues ")
    header, rule, row = out.splitlines()[2:5]
    assert header.split()[:4] == ["queue", "pending", "scheduled", "running"]
    assert row.split()[:4] == [queue, "3", "0", "0"]
    doc = json.loads(cli("status", "--json").stdout)
    assert doc["health"]["overall_status"] == health
    assert {"queue": queue, "pending": 3}.items() <= next(q for q in doc["queues"] if q["queue"] == queue).items()


def test_jobs_filters_and_pages(db, cli, make_queue):
    queue = make_queue()
    ids = [db.execute("SELECT job_id FROM conveyor.enqueue(%s, '{}', job_type => %s, group_key => %s)",
                      (queue, t, g)).fetchone()[0] for t, g in [("a", "g1"), ("b", "g1"), ("a", "g2")]]
    listed = json.loads(cli("jobs", "--queue", queue, "--json").stdout)
    assert [j["job_id"] for j in listed] == [str(i) for i in reversed(ids)]
    assert [j["job_id"] for j in json.loads(cli("jobs", "-q", queue, "--type", "a", "--json").stdout)] == \
        [str(ids[2]), str(ids[0])]
    assert [j["job_id"] for j in json.loads(cli("jobs", "-q", queue, "--group", "g1", "--json").stdout)] == \
        [str(ids[1]), str(ids[0])]
    page1 = json.loads(cli("jobs", "-q", queue, "--limit", "2", "--json").stdout)
    page2 = json.loads(cli("jobs", "-q", queue, "--limit", "2", "--after", page1[-1]["job_id"], "--json").stdout)
    assert [j["job_id"] for j in page1 + page2] == [str(i) for i in reversed(ids)]
    assert json.loads(cli("jobs", "-q", queue, "--status", "running", "--status", "dead", "--json").stdout) == []
    table = cli("jobs", "-q", queue, "--type", "b").stdout.splitlines()
    assert table[0].split()[:3] == ["job_id", "queue", "status"]
    assert table[2].split()[:4] == [str(ids[1]), queue, "pending", "b"]
    assert cli("jobs", "-q", queue, "--status", "dead").stdout.strip() == "(no rows)"
    bad = cli("jobs", "--status", "lost", ok=False)
    assert bad.returncode == 1 and bad.stderr.startswith("conveyor: error 22023: ")


def test_a_failed_job_shows_in_dead_and_retry_brings_it_back(db, cli, make_queue):
    queue = make_queue('{"max_attempts": 1}')
    job_id = dead_job(db, queue)
    dead = cli("dead", queue).stdout.splitlines()
    assert len(dead) == 3
    assert dead[2].split()[:4] == [str(job_id), "fetch", "1", "HTTP"]
    assert [j["job_id"] for j in json.loads(cli("dead", queue, "--json").stdout)] == [str(job_id)]

    out = cli("retry", str(job_id)).stdout
    assert out.startswith(f"job {job_id} retried: pending, due ")
    assert db.execute("SELECT conveyor.get_job(%s)->>'status'", (job_id,)).fetchone()[0] == "pending"
    assert cli("dead", queue).stdout.strip() == "(no rows)"

    shown = json.loads(cli("job", str(job_id), "--json").stdout)
    assert (shown["job"]["status"], shown["job"]["last_error"]) == ("pending", "HTTP 503")
    assert [e["event"] for e in shown["events"]] == ["enqueued", "started", "failed", "dead", "retried"]
    lines = cli("job", str(job_id)).stdout.splitlines()
    assert lines[0].split() == ["job_id", str(job_id)]
    assert ["status", "pending"] in [line.split() for line in lines]
    assert lines[-1].split()[2] == "retried"

    again = cli("retry", str(job_id), ok=False)
    assert again.returncode == 1
    assert again.stderr.startswith(f"conveyor: error 55000: job {job_id} is pending")


def test_errors_have_sqlstate_message_and_exit_codes(cli, direct_dsn):
    unknown = uuid.uuid4()
    result = cli("job", str(unknown), ok=False)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"conveyor: error 42704: job {unknown} does not exist\n"
    result = cli("job", "not-a-job", ok=False)
    assert result.returncode == 1
    assert result.stderr.startswith('conveyor: error 22P02: invalid input syntax for type uuid: "not-a-job"')
    result = cli("dead", "no_such_queue", ok=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == 'conveyor: error 42704: queue "no_such_queue" does not exist'
    assert result.stderr.splitlines()[1].startswith("HINT: ")
    result = cli("jobs", "--limit", "0", ok=False)
    assert result.returncode == 2 and "not a positive number" in result.stderr
    result = cli("frobnicate", ok=False)
    assert result.returncode == 2
    result = run(["status"], dsn=direct_dsn + " dbname=conveyor_no_such_database")
    assert result.returncode == 3 and result.stderr.startswith("conveyor: cannot connect: ")


def test_the_connection_comes_from_the_libpq_environment(db, direct_dsn, make_queue):
    queue = make_queue()
    env = {f"PG{k.upper()}" if k != "dbname" else "PGDATABASE": v
           for k, v in psycopg.conninfo.conninfo_to_dict(direct_dsn).items() if k in ("host", "port", "user", "dbname")}
    result = run(["status", "--queue", queue, "--json"], env=env)
    assert result.returncode == 0, result.stderr
    assert [q["queue"] for q in json.loads(result.stdout)["queues"]] == [queue]


def test_tail_prints_events_and_status_changes_caused_after_it_started(db, direct_dsn, make_queue):
    queue = make_queue('{"max_attempts": 1, "status_notify": true}')
    before = dead_job(db, queue, "before tail")   # an event from before: not printed
    proc = spawn(["tail", "--queue", queue, "--json", "--count", "4", "--timeout", "60", "--interval", "0.2"],
                 direct_dsn)
    try:
        started_following(proc)
        job_id = dead_job(db, queue, "during tail")  # pending, running, dead; job_dead_lettered
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert str(before) not in out
    statuses = [(x["event"], x["subject"]) for x in lines if x["kind"] == "status"]
    assert statuses == [("pending", str(job_id)), ("running", str(job_id)), ("dead", str(job_id))]
    events = [x for x in lines if x["kind"] == "event"]
    assert [(e["event"], e["subject"], e["details"]["error"]) for e in events] == \
        [("job_dead_lettered", str(job_id), "during tail")]


def test_tail_job_follows_one_trail_until_the_job_finishes(db, direct_dsn, make_queue):
    queue = make_queue()
    job_id = db.execute("SELECT job_id FROM conveyor.enqueue(%s, '{}')", (queue,)).fetchone()[0]
    proc = spawn(["tail", "--job", str(job_id), "--timeout", "60", "--interval", "0.2"], direct_dsn)
    try:
        started_following(proc)
        time.sleep(0.3)  # not needed for correctness: the trail is read whole, then followed
        db.execute("SELECT conveyor.dequeue(%s, 'tail-test', 1)", (queue,))
        db.execute("SELECT conveyor.progress(%s, 'tail-test', 50, 'halfway')", (job_id,))
        db.execute("SELECT conveyor.ack(%s, true, worker_id => 'tail-test')", (job_id,))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert [line.split()[3] for line in out.splitlines()] == ["enqueued", "started", "progress", "succeeded"]
    assert all(line.split()[2] == "job" for line in out.splitlines())

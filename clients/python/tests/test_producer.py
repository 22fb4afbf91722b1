import datetime as dt

import pytest

from conveyor_client import Producer


def test_enqueue_returns_the_job_and_dedup_returns_was_duplicate(db, pool_dsn, make_queue):
    queue = make_queue()
    producer = Producer(pool_dsn)
    first, dup1 = producer.enqueue(queue, {"channel_id": "UC1"}, job_type="refresh", group_key="UC1",
                                   priority=8, dedup_key="refresh:UC1", max_attempts=3)
    second, dup2 = producer.enqueue(queue, {"channel_id": "UC1", "other": 1}, job_type="refresh",
                                    dedup_key="refresh:UC1")
    producer.close()
    assert (dup1, dup2) == (False, True)
    assert second == first
    job = db.execute("SELECT conveyor.get_job(%s)", (first,)).fetchone()[0]
    assert job["payload"] == {"channel_id": "UC1"}
    assert (job["job_type"], job["group_key"], job["priority"], job["max_attempts"]) == ("refresh", "UC1", 8, 3)
    assert db.execute("SELECT count(*) FROM conveyor.list_jobs(%s)", (queue,)).fetchone()[0] == 1


def test_enqueue_run_at_schedules_the_job(db, pool_dsn, make_queue):
    queue = make_queue()
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    job_id, _ = Producer(pool_dsn).enqueue(queue, {}, run_at=later)
    run_at = db.execute("SELECT (conveyor.get_job(%s)->>'run_at')::timestamptz", (job_id,)).fetchone()[0]
    assert abs((run_at - later).total_seconds()) < 0.001
    with pytest.raises(ValueError):
        Producer(pool_dsn).enqueue(queue, {}, run_at=dt.datetime(2030, 1, 1))


def test_enqueue_batch_keeps_order_and_reports_duplicates(db, pool_dsn, make_queue):
    queue = make_queue()
    producer = Producer(pool_dsn)
    existing, _ = producer.enqueue(queue, {"n": 0}, dedup_key="k0")
    when = dt.datetime(2031, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    result = producer.enqueue_batch(queue, [
        {"payload": {"n": 1}, "job_type": "a"},
        {"payload": {"n": 2}, "dedup_key": "k0"},
        {"payload": {"n": 3}, "dedup_key": "k3", "run_at": when, "priority": 9},
        {"payload": {"n": 4}, "dedup_key": "k3"},
    ])
    assert [dup for _, dup in result] == [False, True, False, True]
    assert result[1][0] == existing
    assert result[3][0] == result[2][0]
    payloads = [db.execute("SELECT conveyor.get_job(%s)->'payload'->>'n'", (job_id,)).fetchone()[0]
                for job_id, _ in result]
    assert payloads == ["1", "0", "3", "3"]
    assert db.execute("SELECT (conveyor.get_job(%s)->>'run_at')::timestamptz", (result[2][0],)).fetchone()[0] == when
    with pytest.raises(ValueError, match="unknown keys"):
        producer.enqueue_batch(queue, [{"payload": {}, "color": "red"}])


def test_a_dropped_connection_is_retried(db, direct_dsn, make_queue):
    queue = make_queue()
    producer = Producer(direct_dsn)
    producer.enqueue(queue, {"n": 1})
    # The producer's idle connection loses its server; the next call fails on it, then retries on a new one.
    with producer._pool.connection() as conn:
        victim = conn.info.backend_pid
    assert db.execute("SELECT pg_terminate_backend(%s)", (victim,)).fetchone()[0] is True
    job_id, was_duplicate = producer.enqueue(queue, {"n": 2})
    assert was_duplicate is False
    with producer._pool.connection() as conn:
        assert conn.info.backend_pid != victim
    assert db.execute("SELECT count(*) FROM conveyor.list_jobs(%s)", (queue,)).fetchone()[0] == 2
    assert db.execute("SELECT conveyor.get_job(%s)->'payload'->>'n'", (job_id,)).fetchone()[0] == "2"


def test_other_errors_are_not_retried(pool_dsn):
    import psycopg
    with pytest.raises(psycopg.errors.UndefinedObject):
        Producer(pool_dsn).enqueue("no_such_queue", {})


def test_retry_retries_40001_40P01_55P03_with_backoff_then_gives_up():
    import contextlib
    import psycopg
    from conveyor_client import Retry

    class OnePool:
        @contextlib.contextmanager
        def connection(self):
            yield None

    transient = [psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected,
                 psycopg.errors.LockNotAvailable]
    calls = []

    def flaky(conn):
        calls.append(1)
        if len(calls) <= len(transient):
            raise transient[len(calls) - 1]("transient")
        return "done"

    retry = Retry(attempts=4, base=0.001, cap=0.01)
    assert retry.run(OnePool(), flaky) == "done"
    assert len(calls) == 4
    assert [retry.delay(n) <= 0.01 for n in range(10)] == [True] * 10
    assert 0.0005 <= Retry(base=0.001, cap=1).delay(0) <= 0.001 and Retry(base=0.001, cap=1).delay(3) >= 0.004

    def always_conflicts(conn):
        calls.append(1)
        raise psycopg.errors.SerializationFailure("conflict")

    calls.clear()
    with pytest.raises(psycopg.errors.SerializationFailure):
        Retry(attempts=3, base=0.001).run(OnePool(), always_conflicts)
    assert len(calls) == 3, "at most `attempts` tries"

"""One worker process of test_worker_processes: runs until SIGTERM (or until the test kills it).

Each handler run appends "<job_id> <attempt> <worker_id> <outcome>" to its own file, so the test can
match the runs against the `started` events. Jobs whose payload says fail raise. A "hold" job on its
first attempt waits for its lease to be lost (the test requeues it) and records "cancelled" when its
context says so.
"""
import logging
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conveyor_client import Worker  # noqa: E402

direct_dsn, pool_dsn, queue, runs_path, worker_id = sys.argv[1:6]
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
lock = threading.Lock()
runs = open(runs_path, "a", buffering=1)


def record(job, outcome):
    with lock:
        runs.write(f"{job.job_id} {job.attempt} {worker_id} {outcome}\n")


def fetch(job, ctx):
    failing = job.payload["fail"]
    record(job, "fail" if failing else "ok")
    time.sleep(0.01)  # like a call to an API: a process frozen by the test is most often inside a handler
    if failing:
        raise RuntimeError(f"planned failure {job.payload['n']}")
    return {"n": job.payload["n"]}


def hold(job, ctx):
    if job.attempt == 1:
        record(job, "cancelled" if ctx.cancelled.wait(60) else "not-cancelled")
        return None
    record(job, "ok")
    return {"n": job.payload["n"]}


Worker(queue, {"fetch": fetch, "hold": hold}, concurrency=4, conninfo_direct=direct_dsn, conninfo_pool=pool_dsn,
       worker_id=worker_id, poll_interval=1.0).run()
runs.close()

"""One worker process of test_worker_processes: runs until SIGTERM.

Each handler run appends "<job_id> <attempt> ok|fail" to its own file, so the test can count runs.
Jobs whose payload says fail raise.
"""
import logging
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conveyor_client import Worker  # noqa: E402

direct_dsn, pool_dsn, queue, runs_path = sys.argv[1:5]
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
lock = threading.Lock()
runs = open(runs_path, "a", buffering=1)


def fetch(job, ctx):
    failing = job.payload["fail"]
    with lock:
        runs.write(f"{job.job_id} {job.attempt} {'fail' if failing else 'ok'}\n")
    if failing:
        raise RuntimeError(f"planned failure {job.payload['n']}")
    return {"n": job.payload["n"]}


Worker(queue, {"fetch": fetch}, concurrency=4, conninfo_direct=direct_dsn, conninfo_pool=pool_dsn,
       poll_interval=1.0).run()
runs.close()

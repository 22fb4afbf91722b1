"""A worker: LISTENs for its queue, dequeues in batches, runs handlers in threads, heartbeats and acks."""
from __future__ import annotations

import datetime as dt
import logging
import os
import select
import signal
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import psycopg
from psycopg.types.json import Jsonb

from ._db import Pool, Retry, as_pool, connect, is_retryable

log = logging.getLogger("conveyor_client")


@dataclass(frozen=True)
class Job:
    """A job as conveyor.dequeue hands it out."""
    job_id: uuid.UUID
    job_type: Optional[str]
    group_key: Optional[str]
    payload: Any
    priority: int
    attempt: int
    lease_until: dt.datetime


class JobContext:
    """What a handler gets besides its job: the cancellation event and progress reporting.

    cancelled is set when the worker lost the job's lease (another worker may run it now) or when the
    worker gave up waiting for it at shutdown: the handler should stop as soon as it can.
    """

    def __init__(self, worker: "Worker", job: Job) -> None:
        self.job = job
        self.worker_id = worker.worker_id
        self.cancelled = threading.Event()
        self._worker = worker

    def progress(self, percent: Optional[float] = None, step: Optional[str] = None,
                 details: Optional[Mapping[str, Any]] = None) -> bool:
        """conveyor.progress: records percent (0-100) and step; False when the lease is lost."""
        return self._worker._call(lambda c: c.execute(
            "SELECT conveyor.progress(%s, %s, %s::numeric, %s, %s, attempt => %s)",
            (self.job.job_id, self.worker_id, percent, step,
             None if details is None else Jsonb(dict(details)), self.job.attempt)).fetchone()[0])

    def log(self, event: str, details: Optional[Mapping[str, Any]] = None) -> bool:
        """conveyor.job_log: a custom event (stored as log:<event>) in the job's trail."""
        return self._worker._call(lambda c: c.execute(
            "SELECT conveyor.job_log(%s, %s, %s, %s, attempt => %s)",
            (self.job.job_id, self.worker_id, event,
             None if details is None else Jsonb(dict(details)), self.job.attempt)).fetchone()[0])


Handler = Callable[[Job, JobContext], Optional[Mapping[str, Any]]]


class PermanentError(Exception):
    """Raised by a handler for a failure no retry can fix (the API answered 404: the channel is gone).

    The worker acks the job with success false, the exception's message and retry => false: the job is
    dead at once, with the reason 'not retryable', whatever attempts it has left. Any other exception
    fails the attempt, retried after backoff until max_attempts.
    """


@dataclass
class _Leased:
    job: Job
    ctx: JobContext
    beat_every: float    # a third of the lease, in seconds
    next_beat: float     # time.monotonic() of the next heartbeat
    started: bool = False
    finishing: bool = False
    lost: bool = False
    superseded: bool = False  # this worker leased the job again while this run still went on


def _lease_arrays(items: List[_Leased]) -> Tuple[List[uuid.UUID], List[int]]:
    """The jobs' ids and attempts, for unnest(ids, attempts), by job id: one order for every statement,
    so two statements never lock the same rows in opposite orders."""
    leases = sorted((item.job.job_id, item.job.attempt) for item in items)
    return [j for j, _ in leases], [a for _, a in leases]


class _ListeningConnection:
    """The direct session: conveyor.wait_for (which LISTENs) and stop_waiting, nothing else.

    Reconnects after a drop; the next wait_for listens and waits again on the new session. Only the
    worker's main loop uses it.
    """

    def __init__(self, conninfo: str, on_notify: Callable[[psycopg.Notify], None]) -> None:
        self.conninfo = conninfo
        self.conn: Optional[psycopg.Connection] = None
        self._on_notify = on_notify

    def ensure(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.close()
            conn = connect(self.conninfo)
            conn.add_notify_handler(self._on_notify)
            self.conn = conn
        return self.conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        conn = self.ensure()
        try:
            yield conn
        except psycopg.OperationalError:
            if conn.closed or conn.broken:
                self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None


class Worker:
    """Runs the jobs of one queue with up to `concurrency` handlers at a time.

    handlers maps a job_type (None for jobs without one) to a callable(job, ctx); what it returns (a
    dict, or None) is stored as the job's stats; an exception fails the attempt. conninfo_direct is a
    session of its own for conveyor.wait_for, which LISTENs (never pgbouncer in transaction mode);
    conninfo_pool (a conninfo, often pgbouncer's, or a pool object) carries every other call, each its
    own transaction.
    """

    def __init__(self, queue: str, handlers: Mapping[Optional[str], Handler], concurrency: int = 4,
                 conninfo_direct: str = "", conninfo_pool: Optional[Pool] = None,
                 worker_id: Optional[str] = None, lease_seconds: Optional[int] = None,
                 poll_interval: float = 5.0, prefetch: int = 0, shutdown_timeout: float = 30.0,
                 retry: Optional[Retry] = None, handle_signals: bool = True) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if prefetch < 0:
            raise ValueError("prefetch must be 0 or more")
        if lease_seconds is not None and lease_seconds < 1:
            raise ValueError("lease_seconds must be at least 1")
        self.queue = queue
        self.handlers = dict(handlers)
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.shutdown_timeout = shutdown_timeout
        self.handle_signals = handle_signals
        self._retry = retry or Retry()
        pool_target = conninfo_pool if conninfo_pool is not None else conninfo_direct
        self._pool = as_pool(pool_target)
        self._owns_pool = isinstance(pool_target, str)
        self._direct = _ListeningConnection(conninfo_direct, self._on_notify)
        self._listening = True  # False once wait_for said the queue sends no notifications

        self._leased: Dict[uuid.UUID, _Leased] = {}
        self._superseded = 0   # runs still going whose job this worker has leased again (see _take)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)   # a job finished
        self._stopping = threading.Event()
        self._notified = threading.Event()
        self._beats_stop = threading.Event()
        self._beats_wake = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # ---- public ------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops taking jobs; run() then releases the jobs not started and waits for the running ones.

        Safe to call from a signal handler or another thread.
        """
        self._stopping.set()
        self._wake()

    def run(self) -> None:
        """Works until stop() or SIGTERM, then shuts down and returns."""
        previous = None
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda signum, frame: self.stop())
        beats = threading.Thread(target=self._heartbeat_loop, name=f"conveyor-heartbeat-{self.queue}", daemon=True)
        beats.start()
        try:
            self._loop()
        finally:
            try:
                self._shutdown()
            finally:
                self._beats_stop.set()
                self._beats_wake.set()
                beats.join()
                self._direct.close()
                if self._owns_pool:
                    self._pool.close()
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)

    # ---- the main loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        # Dequeues go through the pool while jobs flow. When the pool finds none, the direct session
        # calls wait_for: it LISTENs and marks the session as waiting on the queue, so producers on any
        # connection notify it; a non-empty answer means jobs are due already. Once a dequeue returns
        # jobs again, stop_waiting: producers need not notify while the worker is busy.
        waiting = False
        failures = 0
        while not self._stopping.is_set():
            self._start_buffered()
            with self._lock:
                free = self.concurrency + self.prefetch - len(self._leased) - self._superseded
            if free <= 0:
                self._wait(self.poll_interval)
                continue
            try:
                jobs = self._dequeue(free)
                if jobs:
                    if waiting:
                        self._stop_waiting()
                        waiting = False
                    self._take(jobs)
                    failures = 0
                    continue
                due = self._wait_for()
                waiting = self._listening
                failures = 0
            except psycopg.Error as exc:
                if not is_retryable(exc):
                    raise
                failures += 1
                log.error("dequeue or wait_for on %s failed (%s); trying again", self.queue, str(exc).strip())
                self._direct.close()  # a new session waits afresh
                waiting = False
                self._wait(self._retry.delay(min(failures, 8)))
                continue
            if not due:
                self._wait(self.poll_interval)

    def _dequeue(self, max_count: int) -> List[_Leased]:
        def call(conn: psycopg.Connection) -> List[Any]:
            return conn.execute(
                "SELECT d.job_id, d.job_type, d.group_key, d.payload, d.priority, d.attempt, d.lease_until,"
                " extract(epoch FROM d.lease_until - now())::float8"
                " FROM conveyor.dequeue(%s, %s, %s::int, %s::int) d",
                (self.queue, self.worker_id, max_count, self.lease_seconds)).fetchall()

        rows = self._retry.run(self._pool, call, self._stopping)
        now = time.monotonic()
        leased = []
        for job_id, job_type, group_key, payload, priority, attempt, lease_until, lease_len in rows:
            job = Job(job_id, job_type, group_key, payload, priority, attempt, lease_until)
            beat_every = max(0.2, lease_len / 3.0)
            leased.append(_Leased(job, JobContext(self, job), beat_every, now + beat_every))
        return leased

    def _wait_for(self) -> bool:
        """conveyor.wait_for on the direct session; True when the queue has due jobs already.

        A queue created with {"notify": false} wakes no one: the worker then polls it.
        """
        if not self._listening:
            return False
        try:
            due = self._retry.run(self._direct, lambda c: c.execute(
                "SELECT conveyor.wait_for(ARRAY[%s])", (self.queue,)).fetchone()[0], self._stopping)
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:
            log.warning("%s; polling queue %s every %.1f s", str(exc).strip(), self.queue, self.poll_interval)
            self._listening = False
            return False
        return bool(due)

    def _stop_waiting(self) -> None:
        self._retry.run(self._direct, lambda c: c.execute(
            "SELECT conveyor.stop_waiting(ARRAY[%s])", (self.queue,)).fetchone(), self._stopping)

    def _take(self, jobs: List[_Leased]) -> None:
        with self._lock:
            for item in jobs:
                old = self._leased.get(item.job.job_id)
                if old is not None:
                    # The lease this worker held was lost (an operator's requeue, an expiry) and the job
                    # came back to this same worker. The old run is cancelled and its outcome dropped
                    # (_run_job; its calls name its attempt, so none acts on the new lease), and it
                    # keeps its slot until its handler returns.
                    old.lost = True
                    old.superseded = True
                    old.ctx.cancelled.set()
                    if old.started:
                        self._superseded += 1
                    log.warning("job %s came back to %s (attempt %d) while its attempt %d still ran: "
                                "cancelling the old run", item.job.job_id, self.worker_id,
                                item.job.attempt, old.job.attempt)
                self._leased[item.job.job_id] = item
        self._beats_wake.set()
        self._start_buffered()

    def _start_buffered(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            running = self._superseded + sum(1 for item in self._leased.values() if item.started)
            for item in self._leased.values():
                if running >= self.concurrency:
                    break
                if not item.started:
                    item.started = True
                    running += 1
                    threading.Thread(target=self._run_job, args=(item,), daemon=True,
                                     name=f"conveyor-job-{item.job.job_id}").start()

    # ---- waiting -----------------------------------------------------------------------------------

    def _on_notify(self, notify: psycopg.Notify) -> None:
        if notify.channel == "conveyor" and notify.payload == self.queue:
            self._notified.set()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the loop wakes anyway

    def _wait(self, timeout: float) -> None:
        """Until a notification for this queue, a finished job, stop(), or timeout."""
        deadline = time.monotonic() + timeout
        while not self._stopping.is_set() and not self._notified.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            fds = [self._wake_r]
            conn = self._direct.conn
            if conn is not None and not conn.closed:
                fds.append(conn.fileno())
            ready, _, _ = select.select(fds, [], [], left)
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                break
            if conn is not None and len(ready) > 0:
                try:
                    conn.execute("SELECT")  # reads what arrived; the notify handler sees it
                except psycopg.Error:
                    self._direct.close()    # dropped: the next wait_for reconnects
                    break
        self._notified.clear()

    # ---- running a job -----------------------------------------------------------------------------

    def _run_job(self, item: _Leased) -> None:
        job, ctx = item.job, item.ctx
        handler = self.handlers.get(job.job_type)
        stats: Optional[Mapping[str, Any]] = None
        error: Optional[str] = None
        retry = True
        if handler is None:
            known = ", ".join(sorted(repr(t) for t in self.handlers))
            error = f"no handler for job_type {job.job_type!r} in worker {self.worker_id} (it handles {known})"
            success = False
        else:
            try:
                result = handler(job, ctx)
                success = True
                if isinstance(result, Mapping):
                    stats = result
            except Exception as exc:  # the attempt fails; the worker goes on
                success = False
                retry = not isinstance(exc, PermanentError)
                error = str(exc) or type(exc).__name__
                stats = {"exception": type(exc).__name__}
                log.info("job %s (%s) failed: %s: %s", job.job_id, job.job_type, type(exc).__name__, exc)
        with self._lock:
            item.finishing = True
            lost = item.lost
        try:
            if lost:
                # No ack: the lease is gone (the server would refuse it: it names this run's attempt).
                log.warning("job %s: its lease was lost while its handler ran; its outcome is dropped", job.job_id)
            elif not self._ack(job, success, error, stats, retry):
                log.warning("job %s was no longer leased to %s: its ack changed nothing", job.job_id, self.worker_id)
        except Exception:
            log.exception("ack of job %s failed; its lease will run out and it will be retried", job.job_id)
        finally:
            with self._lock:
                if item.superseded:
                    self._superseded -= 1
                elif self._leased.get(job.job_id) is item:
                    del self._leased[job.job_id]
                self._changed.notify_all()
            self._wake()

    def _ack(self, job: Job, success: bool, error: Optional[str],
             stats: Optional[Mapping[str, Any]], retry: bool = True) -> bool:
        # Fenced by worker_id and attempt: after a lost lease it returns false and changes nothing, even
        # when this worker has leased the job again since; and so does a retry after a drop whose
        # first ack committed.
        return self._call(lambda c: c.execute(
            "SELECT conveyor.ack(%s, %s, %s, %s, %s, retry => %s, attempt => %s)",
            (job.job_id, success, error, None if stats is None else Jsonb(dict(stats)), self.worker_id, retry,
             job.attempt)).fetchone()[0])

    def _call(self, fn: Callable[[psycopg.Connection], Any]) -> Any:
        return self._retry.run(self._pool, fn)

    # ---- heartbeats --------------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._beats_stop.is_set():
            now = time.monotonic()
            with self._lock:
                due = [item for item in self._leased.values()
                       if item.next_beat <= now and not item.lost and not item.finishing]
            if due:
                self._beat(due, now)
            with self._lock:
                upcoming = [item.next_beat for item in self._leased.values() if not item.lost]
            pause = min(upcoming, default=now + 1.0) - time.monotonic()
            self._beats_wake.wait(min(max(pause, 0.01), 1.0))
            self._beats_wake.clear()

    def _beat(self, due: List[_Leased], now: float) -> None:
        ids, attempts = _lease_arrays(due)
        try:
            rows = self._call(lambda c: c.execute(
                "SELECT j, conveyor.heartbeat(j, %s, %s::int, attempt => a)"
                " FROM unnest(%s::uuid[], %s::int[]) AS l(j, a)",
                (self.worker_id, self.lease_seconds, ids, attempts)).fetchall())
        except psycopg.Error as exc:
            log.error("heartbeat failed (%s); trying again in a second", str(exc).strip())
            for item in due:
                item.next_beat = now + min(1.0, item.beat_every)
            return
        leases = dict(rows)
        with self._lock:
            for item in due:
                if item.finishing:
                    continue
                if leases.get(item.job.job_id) is None:
                    item.lost = True
                    log.warning("lease of job %s lost: cancelling its handler", item.job.job_id)
                    item.ctx.cancelled.set()
                else:
                    item.next_beat = now + item.beat_every

    # ---- shutting down -----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self._stopping.set()
        with self._lock:
            unstarted = [item for item in self._leased.values() if not item.started]
            for item in unstarted:
                del self._leased[item.job.job_id]
        if unstarted:
            ids, attempts = _lease_arrays(unstarted)
            try:
                released = self._call(lambda c: c.execute(
                    "SELECT count(*) FILTER (WHERE conveyor.release(j, %s, attempt => a))"
                    " FROM unnest(%s::uuid[], %s::int[]) AS l(j, a)",
                    (self.worker_id, ids, attempts)).fetchone()[0])
                log.info("released %d of %d jobs not started", released, len(ids))
            except psycopg.Error:
                log.exception("could not release %d jobs not started; their leases will run out", len(ids))
        deadline = time.monotonic() + self.shutdown_timeout
        with self._lock:
            while (self._leased or self._superseded) and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            left = list(self._leased.values())
        for item in left:
            log.warning("job %s still running at shutdown: cancelling it; its lease will run out", item.job.job_id)
            item.ctx.cancelled.set()

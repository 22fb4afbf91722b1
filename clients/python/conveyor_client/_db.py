"""Connections for conveyor's clients: autocommit, no prepared statements, retried on transient errors.

Every call is one statement in its own transaction (autocommit) and psycopg never prepares a named
statement (prepare_threshold=None), so the same code works directly against PostgreSQL and behind
pgbouncer in transaction pooling mode, where consecutive transactions may land on different servers.
"""
from __future__ import annotations

import datetime
import decimal
import logging
import random
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, TypeVar, Union

import psycopg
from psycopg.adapt import PyFormat

log = logging.getLogger("conveyor_client")

T = TypeVar("T")

# psycopg registers the dumpers of some standard types by name ("uuid.UUID") and, the first time a
# value of such a type is sent, replaces the name by the class in its global adapters map, which
# every connection shares, without a lock: two threads sending their first UUID at once can both
# find the name and one then fails with KeyError('uuid.UUID') (seen as a worker's failed ack under
# load, leaving the job leased until its lease ran out). Resolved once here, at import, before any
# thread sends anything.
BY_NAME_TYPES = (uuid.UUID, datetime.date, datetime.datetime, datetime.time, datetime.timedelta, decimal.Decimal)


def resolve_dumpers_by_name() -> None:
    for cls in BY_NAME_TYPES:
        for fmt in PyFormat:
            try:
                psycopg.adapters.get_dumper(cls, fmt)
            except psycopg.ProgrammingError:  # no dumper for that format
                pass


resolve_dumpers_by_name()

# Serialization failure, deadlock, lock not available: conveyor never swallows them, callers retry.
RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
# The server went away under the connection (terminated backend, shutdown, cannot connect now).
DISCONNECT_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def connect(conninfo: str) -> psycopg.Connection:
    """A connection safe behind pgbouncer in transaction mode."""
    return psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)


def is_retryable(exc: BaseException) -> bool:
    """True for the errors a caller retries: 40001, 40P01, 55P03 and a dropped connection."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    if state is None:  # raised by libpq itself: the connection broke or could not be made
        return True
    return state in RETRY_SQLSTATES or state in DISCONNECT_SQLSTATES or state.startswith("08")


class ConnectionPool:
    """A small thread-safe set of idle connections to one conninfo (often a pgbouncer address).

    A connection is taken for one call and given back; one that broke is closed instead.
    """

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._idle: List[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = connect(self.conninfo)
        try:
            yield conn
        except BaseException:
            if conn.broken or conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.close()
                raise
            self._give_back(conn)
            raise
        else:
            self._give_back(conn)

    def _give_back(self, conn: psycopg.Connection) -> None:
        with self._lock:
            if not self._closed and not conn.closed:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


Pool = Union[str, Any]  # a conninfo string, or an object whose connection() yields a psycopg connection


def as_pool(conninfo_or_pool: Pool) -> Any:
    if isinstance(conninfo_or_pool, str):
        return ConnectionPool(conninfo_or_pool)
    if not hasattr(conninfo_or_pool, "connection"):
        raise TypeError("expected a conninfo string or a pool with a connection() method")
    return conninfo_or_pool


class Retry:
    """Exponential backoff with jitter for retryable errors: base * 2^n, capped, at most `attempts` tries."""

    def __init__(self, attempts: int = 8, base: float = 0.05, cap: float = 5.0) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.base = base
        self.cap = cap

    def delay(self, n: int) -> float:
        return min(self.cap, self.base * (2 ** n)) * random.uniform(0.5, 1.0)

    def run(self, pool: Any, fn: Callable[[psycopg.Connection], T],
            stop: Optional[threading.Event] = None) -> T:
        n = 0
        while True:
            try:
                with pool.connection() as conn:
                    return fn(conn)
            except psycopg.Error as exc:
                n += 1
                if not is_retryable(exc) or n >= self.attempts:
                    raise
                wait = self.delay(n - 1)
                log.warning("retrying in %.2fs after %s: %s", wait, getattr(exc, "sqlstate", None) or "disconnect",
                            str(exc).strip())
                if stop is not None:
                    stop.wait(wait)
                else:
                    time.sleep(wait)

"""Enqueuing jobs: conveyor.enqueue and conveyor.enqueue_batch."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from psycopg.types.json import Jsonb

from ._db import Pool, Retry, as_pool

JOB_KEYS = frozenset({"payload", "job_type", "group_key", "priority", "run_at", "dedup_key", "max_attempts"})


def _json_ready(value: Any) -> Any:
    # enqueue_batch reads run_at as a JSON string; datetimes travel as ISO 8601 with their offset.
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")
        return value.isoformat()
    return value


class Producer:
    """Adds jobs to conveyor's queues through a conninfo (direct or pgbouncer) or a pool.

    A retried call after a dropped connection may enqueue twice if the first commit went through
    but its answer was lost: give jobs a dedup_key where that matters.
    """

    def __init__(self, conninfo_or_pool: Pool, retry: Optional[Retry] = None) -> None:
        self._pool = as_pool(conninfo_or_pool)
        self._owns_pool = isinstance(conninfo_or_pool, str)
        self._retry = retry or Retry()

    def enqueue(self, queue: str, payload: Optional[Mapping[str, Any]] = None, job_type: Optional[str] = None,
                group_key: Optional[str] = None, priority: int = 5, run_at: Optional[dt.datetime] = None,
                dedup_key: Optional[str] = None, max_attempts: Optional[int] = None) -> Tuple[uuid.UUID, bool]:
        """Adds one job; returns (job_id, was_duplicate). run_at None means now (the server's clock)."""
        if run_at is not None and run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")
        params = (queue, Jsonb(dict(payload or {})), job_type, group_key, priority, run_at, dedup_key, max_attempts)

        def call(conn: Any) -> Tuple[uuid.UUID, bool]:
            row = conn.execute(
                "SELECT job_id, was_duplicate FROM conveyor.enqueue("
                "queue => %s, payload => %s, job_type => %s, group_key => %s, priority => %s::int,"
                " run_at => coalesce(%s::timestamptz, now()), dedup_key => %s, max_attempts => %s::int)",
                params).fetchone()
            return row[0], row[1]

        return self._retry.run(self._pool, call)

    def enqueue_batch(self, queue: str, jobs: Sequence[Mapping[str, Any]]) -> List[Tuple[uuid.UUID, bool]]:
        """Adds many jobs in one statement, all or none; each dict takes enqueue's keyword arguments.

        Returns (job_id, was_duplicate) per job, in the order given.
        """
        elements: List[Dict[str, Any]] = []
        for i, job in enumerate(jobs):
            unknown = set(job) - JOB_KEYS
            if unknown:
                raise ValueError(f"jobs[{i}]: unknown keys {sorted(unknown)}; allowed: {sorted(JOB_KEYS)}")
            elements.append({k: _json_ready(v) for k, v in job.items() if v is not None})
        if not elements:
            return []

        def call(conn: Any) -> List[Tuple[uuid.UUID, bool]]:
            rows = conn.execute(
                "SELECT job_id, was_duplicate FROM conveyor.enqueue_batch(%s, %s) ORDER BY ord",
                (queue, Jsonb(elements))).fetchall()
            return [(r[0], r[1]) for r in rows]

        return self._retry.run(self._pool, call)

    def close(self) -> None:
        if self._owns_pool:
            self._pool.close()

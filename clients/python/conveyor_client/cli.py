"""conveyor: the operator's command line for conveyor's queues.

    conveyor [--dsn DSN] [--json] status | jobs | job ID | retry ID | dead QUEUE | tail

The connection comes from --dsn (a conninfo or a postgresql:// URI) and the usual libpq variables
(PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSERVICE, ...). Output is a table, or JSON with
--json (tail prints one JSON object per line). Exit codes: 0 done, 1 the database refused (its
SQLSTATE and message are printed), 2 bad usage, 3 no connection.
"""
from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import select
import sys
import time
import uuid
from typing import Any, Dict, Iterable, List, Optional, Sequence

import psycopg
from psycopg.rows import dict_row

EXIT_OK, EXIT_DATABASE, EXIT_USAGE, EXIT_CONNECT = 0, 1, 2, 3
FINISHED = frozenset({"completed", "dead", "cancelled"})
# Events are stamped when written, not when committed: each poll looks back this far, so an event
# whose transaction committed late is still seen (ids already printed are skipped).
EVENTS_LOOKBACK = dt.timedelta(seconds=60)


class Failure(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---- output -------------------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (uuid.UUID, dt.timedelta)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def to_json(value: Any, indent: Optional[int] = 2) -> str:
    return json.dumps(value, default=_json_default, indent=indent, ensure_ascii=False)


def cell(value: Any, width: int = 60) -> str:
    if isinstance(value, str) and len(value) >= 25 and value[10:11] == "T" and value[4:5] == "-":
        try:  # a timestamp from JSON (get_job, notifications): shown as the table's other times
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
    if value is None:
        text = ""
    elif isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ", timespec="seconds")
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, default=_json_default, ensure_ascii=False, separators=(", ", ": "))
    elif isinstance(value, decimal.Decimal):
        text = str(value.normalize()) if value == value.to_integral_value() else f"{value:.2f}"
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


def table(rows: Sequence[Dict[str, Any]], columns: Sequence[str], out=sys.stdout) -> None:
    """An aligned text table with a header; "(no rows)" when empty."""
    if not rows:
        print("(no rows)", file=out)
        return
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float, decimal.Decimal)) or r.get(c) is None for r in rows)
               and not all(r.get(c) is None for r in rows) for c in columns]
    print("  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(columns, widths, numeric)).rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print("  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(row, widths, numeric)).rstrip(), file=out)


# get_job's keys in the reference's order (jsonb keeps its own); keys of later versions follow.
JOB_KEYS = ["job_id", "queue", "status", "state", "job_type", "group_key", "dedup_key", "payload", "priority",
            "attempt", "max_attempts", "run_at", "worker_id", "started_at", "lease_until", "last_error",
            "created_at", "finished_at", "percent", "step", "reason", "details", "resolved_at", "resolution",
            "resolved_by"]


def pairs(obj: Dict[str, Any], out=sys.stdout) -> None:
    width = max(len(k) for k in obj)
    keys = [k for k in JOB_KEYS if k in obj] + sorted(k for k in obj if k not in JOB_KEYS)
    for key in keys:
        value = obj[key]
        print(f"{key.ljust(width)}  {cell(value, 200)}", file=out)


# ---- commands -----------------------------------------------------------------------------------------

def cmd_status(conn: psycopg.Connection, args: argparse.Namespace) -> None:
    queues = conn.execute("SELECT * FROM conveyor.queue_metrics(%s) ORDER BY queue", (args.queue,)).fetchall()
    health = conn.execute("SELECT conveyor.health() AS h").fetchone()["h"]
    if args.json:
        print(to_json({"queues": queues, "health": health}))
        return
    sections = [k for k in ("queues", "locks", "entities", "workers", "costs", "horizon") if isinstance(health.get(k), dict)]
    print(f"health: {health.get('overall_status')}  (" +
          ", ".join(f"{k} {health[k].get('status')}" for k in sections) + ")")
    print()
    table(queues, ["queue", "pending", "scheduled", "running", "expired_leases", "completed_1h", "failed_24h",
                   "dead", "avg_queue_seconds", "jobs_per_hour", "oldest_pending_seconds"])


JOB_COLUMNS = ["job_id", "queue", "status", "job_type", "group_key", "attempt", "percent", "step", "created_at",
               "last_error"]


def cmd_jobs(conn: psycopg.Connection, args: argparse.Namespace) -> None:
    rows = conn.execute(
        "SELECT * FROM conveyor.list_jobs(queue => %s, status => %s::text[], group_key => %s, job_type => %s,"
        " since => %s::timestamptz, until => %s::timestamptz, lim => %s::int, after => %s::uuid)",
        (args.queue, args.status, args.group, args.type, args.since, args.until, args.limit, args.after)).fetchall()
    if args.json:
        print(to_json(rows))
    else:
        table(rows, JOB_COLUMNS)


def cmd_job(conn: psycopg.Connection, args: argparse.Namespace) -> None:
    job = conn.execute("SELECT conveyor.get_job(%s::uuid) AS j", (args.job_id,)).fetchone()["j"]
    events = conn.execute("SELECT at, event, worker_id, details FROM conveyor.job_events(%s::uuid)",
                          (args.job_id,)).fetchall()
    if args.json:
        print(to_json({"job": job, "events": events}))
        return
    pairs(job)
    print()
    table(events, ["at", "event", "worker_id", "details"])


def cmd_retry(conn: psycopg.Connection, args: argparse.Namespace) -> None:
    conn.execute("SELECT conveyor.retry(%s::uuid, delay_seconds => %s::int, reset_attempts => %s)",
                 (args.job_id, args.delay, args.reset_attempts))
    job = conn.execute("SELECT conveyor.get_job(%s::uuid) AS j", (args.job_id,)).fetchone()["j"]
    if args.json:
        print(to_json({"job_id": job["job_id"], "retried": True, "status": job["status"], "run_at": job["run_at"],
                       "attempt": job["attempt"], "max_attempts": job["max_attempts"]}))
    else:
        print(f"job {job['job_id']} retried: {job['status']}, due {cell(job['run_at'])}, "
              f"attempt {job['attempt']} of {job['max_attempts']}")


def cmd_dead(conn: psycopg.Connection, args: argparse.Namespace) -> None:
    rows = conn.execute(
        "SELECT * FROM conveyor.dead_jobs(%s, since => %s::timestamptz, lim => %s::int, after => %s::uuid)",
        (args.queue, args.since, args.limit, args.after)).fetchall()
    if args.json:
        print(to_json(rows))
    else:
        table(rows, ["job_id", "job_type", "group_key", "attempt", "last_error", "reason", "finished_at",
                     "resolution"])


class Tail:
    """Follows conveyor.events() with a cursor, conveyor_status notifications, or one job's trail."""

    def __init__(self, conn: psycopg.Connection, args: argparse.Namespace) -> None:
        self.conn = conn
        self.args = args
        self.printed = 0
        self.seen_events: Dict[int, dt.datetime] = {}
        self.seen_trail: set = set()
        self.statuses: List[Dict[str, Any]] = []
        conn.add_notify_handler(self._on_notify)

    def _on_notify(self, notify: psycopg.Notify) -> None:
        if notify.channel != "conveyor_status":
            return
        try:
            payload = json.loads(notify.payload)
        except ValueError:
            return
        if self.args.queue is None or payload.get("queue") == self.args.queue:
            self.statuses.append(payload)

    def emit(self, kind: str, at: Any, event: str, subject: Any, details: Any) -> None:
        if self.args.json:
            print(to_json({"kind": kind, "at": at, "event": event, "subject": subject, "details": details},
                          indent=None))
        else:
            print(f"{cell(at)}  {kind:<6}  {event:<20}  {cell(subject, 40)}  {cell(details, 200)}".rstrip())
        sys.stdout.flush()
        self.printed += 1

    def done(self) -> bool:
        return self.args.count is not None and self.printed >= self.args.count

    def poll_events(self) -> None:
        since = self.cursor - EVENTS_LOOKBACK
        rows = self.conn.execute(
            "SELECT event_id, at, event, source, subject, details FROM conveyor.events(since => %s, event_type => %s,"
            " lim => 100000)", (since, self.args.event)).fetchall()
        for r in rows:
            if r["event_id"] in self.seen_events or r["at"] < self.start:
                continue
            self.seen_events[r["event_id"]] = r["at"]
            self.cursor = max(self.cursor, r["at"])
            self.emit("event", r["at"], r["event"], r["subject"], r["details"])
            if self.done():
                return
        horizon = self.cursor - EVENTS_LOOKBACK
        self.seen_events = {k: v for k, v in self.seen_events.items() if v >= horizon}

    def poll_trail(self) -> bool:
        """Prints the job's new events; True once the job has finished."""
        rows = self.conn.execute("SELECT at, event, worker_id, details FROM conveyor.job_events(%s::uuid)",
                                 (self.args.job,)).fetchall()
        for r in rows:
            key = (r["at"], r["event"], r["worker_id"], json.dumps(r["details"], sort_keys=True))
            if key in self.seen_trail:
                continue
            self.seen_trail.add(key)
            self.emit("job", r["at"], r["event"], r["worker_id"], r["details"])
            if self.done():
                return True
        status = self.conn.execute("SELECT conveyor.get_job(%s::uuid)->>'status' AS s", (self.args.job,)).fetchone()
        return status["s"] in FINISHED and not self.args.forever

    def flush_statuses(self) -> None:
        while self.statuses and not self.done():
            p = self.statuses.pop(0)
            details = {k: v for k, v in p.items() if k not in ("at", "status", "job_id")}
            self.emit("status", p.get("at"), p.get("status") or "", p.get("job_id"), details)

    def run(self) -> None:
        args = self.args
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        if args.job is not None:
            self.conn.execute("SELECT conveyor.get_job(%s::uuid)", (args.job,))  # 42704 for an unknown job
        else:
            self.conn.execute("LISTEN conveyor_status")
            self.start = self.conn.execute(
                "SELECT coalesce(%s::timestamptz, now()) AS t", (args.since,)).fetchone()["t"]
            self.cursor = self.start
        what = f"job {args.job}" if args.job else "conveyor.events() and conveyor_status"
        print(f"conveyor: following {what}; Ctrl-C to stop", file=sys.stderr, flush=True)
        while not self.done():
            if args.job is not None:
                if self.poll_trail():
                    return
            else:
                self.poll_events()
                self.flush_statuses()
            if self.done():
                return
            wait = args.interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            ready, _, _ = select.select([self.conn.fileno()], [], [], wait)
            if ready:
                self.conn.execute("SELECT")  # reads the notifications that arrived
                self.flush_statuses()


def cmd_tail(conn: psycopg.Connection, args: argparse.Namespace) -> None:
    try:
        Tail(conn, args).run()
    except KeyboardInterrupt:
        pass


# ---- arguments ----------------------------------------------------------------------------------------

def positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return n


def seconds(text: str) -> float:
    x = float(text)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return x


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # Also accepted after the command; SUPPRESS keeps the main parser's value when not given there.
    common.add_argument("--dsn", default=argparse.SUPPRESS,
                        help="conninfo or URI; default: the libpq environment (PGHOST, PGDATABASE, ...)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output for scripts")

    main = argparse.ArgumentParser(prog="conveyor", description="Look at and act on conveyor's queues.")
    main.add_argument("--dsn", default="", help="conninfo or URI; default: the libpq environment")
    main.add_argument("--json", action="store_true", default=False, help="JSON output for scripts")
    sub = main.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("status", parents=[common], help="queue metrics and health (queue_metrics, health)")
    p.add_argument("--queue", "-q", help="one queue only")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("jobs", parents=[common], help="list jobs, newest first (list_jobs)")
    p.add_argument("--queue", "-q")
    p.add_argument("--status", "-s", action="append",
                   help="pending, running, completed, dead or cancelled; repeat for several")
    p.add_argument("--type", "-t", help="job_type")
    p.add_argument("--group", "-g", help="group_key")
    p.add_argument("--since", help="created at or after (a timestamptz)")
    p.add_argument("--until", help="created before (a timestamptz)")
    p.add_argument("--limit", "-n", type=positive, default=100, help="rows, 1 to 1000 (default 100)")
    p.add_argument("--after", help="the last job_id of the previous page")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("job", parents=[common], help="one job and its event trail (get_job, job_events)")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_job)

    p = sub.add_parser("retry", parents=[common], help="run a dead, cancelled or backing-off job again (retry)")
    p.add_argument("job_id")
    p.add_argument("--delay", type=int, default=None, help="seconds until it is due (default 0)")
    p.add_argument("--reset-attempts", action="store_true", help="start again from attempt 0")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("dead", parents=[common], help="a queue's dead jobs, newest first (dead_jobs)")
    p.add_argument("queue")
    p.add_argument("--since", help="died at or after (a timestamptz)")
    p.add_argument("--limit", "-n", type=positive, default=100, help="rows, 1 to 1000 (default 100)")
    p.add_argument("--after", help="the last job_id of the previous page")
    p.set_defaults(func=cmd_dead)

    p = sub.add_parser("tail", parents=[common],
                       help="follow monitoring events and job status changes live, or one job's trail")
    p.add_argument("--queue", "-q", help="only this queue's status changes")
    p.add_argument("--event", "-e", help="only monitoring events of this type (e.g. job_dead_lettered)")
    p.add_argument("--job", help="follow this job's event trail instead, until it finishes")
    p.add_argument("--forever", action="store_true", help="with --job: keep following after it finished")
    p.add_argument("--since", help="also print monitoring events from this time on (default: now)")
    p.add_argument("--count", type=positive, help="exit after printing this many lines")
    p.add_argument("--timeout", type=seconds, help="exit after this many seconds")
    p.add_argument("--interval", type=seconds, default=1.0, help="seconds between polls (default 1)")
    p.set_defaults(func=cmd_tail)
    return main


def describe(exc: psycopg.Error) -> str:
    diag = exc.diag
    state = exc.sqlstate or "-----"
    lines = [f"conveyor: error {state}: {diag.message_primary or str(exc).strip()}"]
    if diag.message_detail:
        lines.append(f"DETAIL: {diag.message_detail}")
    if diag.message_hint:
        lines.append(f"HINT: {diag.message_hint}")
    return "\n".join(lines)


def main(argv: Optional[Iterable[str]] = None) -> int:
    args = parser().parse_args(None if argv is None else list(argv))
    try:
        conn = psycopg.connect(args.dsn, autocommit=True, prepare_threshold=None, row_factory=dict_row)
    except psycopg.Error as exc:
        print(f"conveyor: cannot connect: {str(exc).strip()}", file=sys.stderr)
        return EXIT_CONNECT
    try:
        with conn:
            args.func(conn, args)
    except psycopg.Error as exc:
        if exc.sqlstate is None:  # the connection broke
            print(f"conveyor: connection lost: {str(exc).strip()}", file=sys.stderr)
            return EXIT_CONNECT
        print(describe(exc), file=sys.stderr)
        return EXIT_DATABASE
    except BrokenPipeError:  # `conveyor tail | head`
        return EXIT_OK
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

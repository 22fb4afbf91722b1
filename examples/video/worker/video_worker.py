#!/usr/bin/python3
"""The render worker of the video service, on conveyor's queue 'video' through conveyor_client.

  video_worker.py create --dsn DSN --jobs 60 --seed 7     jobs created as clients would (video_client,
                                                          one request IP each), every 25th one cancelled
  video_worker.py work --direct DSN --pool DSN            a worker (run several); --until-idle to stop

A RENDER_VIDEO job runs the steps validation, download, processing, encoding and upload of its video
job through the video.* functions, every write fenced by the worker id (a worker that lost its lease
changes nothing), against fake_render.py. A missing source fails the job (SOURCE_NOT_FOUND); a failed
upload puts it back to pending and fails the attempt, so conveyor retries it; on the last attempt the
job fails (UPLOAD_FAILED). A failed job's render job is dead-lettered by update_job_status itself.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from typing import Any, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "clients", "python"))

from psycopg.types.json import Jsonb  # noqa: E402

from conveyor_client import Retry, Worker  # noqa: E402
from conveyor_client._db import as_pool  # noqa: E402
import fake_render  # noqa: E402
from fake_render import FakeRender, SourceNotFound, UploadFailed  # noqa: E402

QUEUE = "video"
CLIENT_IPS = [f"198.51.100.{i}" for i in range(1, 6)]
log = logging.getLogger("video_worker")


def titles(count: int):
    return [f"clip {i}" for i in range(count)]


def create(args: argparse.Namespace) -> None:
    """Creates the jobs as the API would: each call in a transaction that first sets request.client_ip."""
    pool = as_pool(args.dsn)
    for i, title in enumerate(titles(args.jobs)):
        ip = CLIENT_IPS[i % len(CLIENT_IPS)]
        with pool.connection() as conn, conn.transaction():
            conn.execute("SELECT set_config('request.client_ip', %s, true)", (ip,))
            created = conn.execute(
                "SELECT video.create_job(p_output_format => %s, p_width => %s, p_height => %s, p_estimated_duration => %s,"
                " p_client_ip => %s::inet, p_user_agent => %s, p_response_type => %s, p_request => %s, p_elements => %s)",
                ("mp4" if i % 3 else "webm", 1280, 720, 10 + i % 50, ip, "video-api-test/1.0",
                 "sync" if i % 7 == 0 else "async", Jsonb({"title": title}),
                 Jsonb(fake_render.plan_elements(args.seed, title)))).fetchone()[0]
            if i % 25 == 24:
                conn.execute("SELECT video.update_job_status(%s, 'cancelled', 'cancelled by the client')", (created["job_id"],))
        print(created["job_id"])


class Renderer:
    def __init__(self, pool: Any, seed: int) -> None:
        self.pool = pool
        self.fake = FakeRender(seed)
        self.retry = Retry()

    def call(self, sql: str, *params: Any) -> Any:
        return self.retry.run(self.pool, lambda c: c.execute(sql, params).fetchone()[0])

    def step(self, vid: str, wid: str, name: str, order: int, work, progress: float) -> Dict:
        tid = self.call("SELECT video.start_processing_step(%s, %s, %s::int, NULL, %s)", vid, name, order, wid)
        try:
            details = work() or {}
        except Exception as exc:
            self.call("SELECT video.complete_processing_step(%s, false, NULL, NULL, NULL, NULL, %s, %s)", tid, str(exc), wid)
            raise
        metrics = self.fake.render(vid, name)
        self.call("SELECT video.complete_processing_step(%s, true, %s::numeric, %s, %s::numeric, %s::bigint, NULL, %s)", tid, progress,
                  Jsonb(details), metrics["cpu_usage"], metrics["memory_usage"], wid)
        return details

    def render(self, job, ctx) -> Dict[str, Any]:
        vid, wid = job.payload["video_job_id"], ctx.worker_id
        row = self.call("SELECT to_jsonb(j) FROM video.jobs j WHERE id = %s", vid)
        title = row["request"]["title"]
        if row["status"] in ("processing", "uploading"):   # an earlier attempt died mid-way
            self.call("SELECT video.update_job_status(%s, 'pending', 'the previous attempt was lost', 'ATTEMPT_LOST', p_worker_id => %s)", vid, wid)
        self.call("SELECT video.update_job_status(%s, 'processing', p_worker_id => %s)", vid, wid)
        elements = self.call("SELECT coalesce(jsonb_agg(to_jsonb(e) ORDER BY element_order), '[]') FROM video.elements e WHERE job_id = %s", vid)

        self.step(vid, wid, "validation", 0, lambda: {"elements": len(elements)}, 5)

        def download():
            for el in elements:
                got = self.fake.download(el["source_url"])
                self.call("SELECT video.update_element_status(%s, true, NULL, %s, %s::bigint, NULL, %s)",
                          el["id"], got["local_path"], got["size"], wid)
            return {"files": len(elements)}
        try:
            self.step(vid, wid, "download", 1, download, 30)
        except SourceNotFound as exc:
            self.call("SELECT video.update_job_status(%s, 'failed', %s, 'SOURCE_NOT_FOUND', p_worker_id => %s)", vid, str(exc), wid)
            return {"outcome": "failed", "error_code": "SOURCE_NOT_FOUND"}

        def process():
            for n, el in enumerate(elements):
                self.call("SELECT video.update_element_status(%s, NULL, true, NULL, NULL, NULL, %s)", el["id"], wid)
                self.call("SELECT video.update_job_progress(%s, %s::numeric, 'processing', %s)", vid, 30 + 40 * (n + 1) / len(elements), wid)
            return {"composed": len(elements)}
        self.step(vid, wid, "processing", 2, process, 70)
        self.step(vid, wid, "encoding", 3, lambda: {"codec": "h264" if row["output_format"] == "mp4" else "vp9"}, 85)
        self.call("SELECT video.update_job_status(%s, 'uploading', p_worker_id => %s)", vid, wid)
        key = f"renders/{vid}.{row['output_format']}"
        uploaded: Dict[str, Any] = {}

        def upload():
            try:
                uploaded.update(self.fake.upload(title, job.attempt, row["width"], row["height"], float(row["estimated_duration"])))
            except UploadFailed as exc:
                self.call("SELECT video.log_storage_operation(%s, 'upload', %s, %s, %s, false, NULL, %s::int, %s)",
                          vid, fake_render.BUCKET, key, fake_render.REGION, exc.duration_ms, str(exc))
                raise
            self.call("SELECT video.log_storage_operation(%s, 'upload', %s, %s, %s, true, %s::bigint, %s::int, NULL, %s)",
                      vid, fake_render.BUCKET, key, fake_render.REGION, uploaded["size"], uploaded["duration_ms"],
                      Jsonb({"content_type": f"video/{row['output_format']}"}))
            return {"bytes": uploaded["size"]}
        try:
            self.step(vid, wid, "upload", 4, upload, 100)
        except UploadFailed as exc:
            max_attempts = self.call("SELECT (conveyor.get_job(%s) ->> 'max_attempts')::int", job.job_id)
            if job.attempt >= max_attempts:
                self.call("SELECT video.update_job_status(%s, 'failed', %s, 'UPLOAD_FAILED', p_worker_id => %s)",
                          vid, f"after {job.attempt} attempts: {exc}", wid)
                return {"outcome": "failed", "error_code": "UPLOAD_FAILED"}
            self.call("SELECT video.update_job_status(%s, 'pending', %s, 'UPLOAD_FAILED', p_worker_id => %s)", vid, str(exc), wid)
            raise
        self.call("SELECT video.update_job_status(%s, 'completed', p_result_url => %s, p_file_size => %s::bigint, "
                  "p_actual_duration => %s::numeric, p_worker_id => %s)",
                  vid, f"https://{fake_render.BUCKET}.s3.amazonaws.com/{key}", uploaded["size"], row["estimated_duration"], wid)
        return {"outcome": "completed", "bytes": uploaded["size"]}


def work(args: argparse.Namespace) -> None:
    pool = as_pool(args.pool or args.direct)
    renderer = Renderer(pool, args.seed)
    worker = Worker(QUEUE, {"RENDER_VIDEO": renderer.render}, concurrency=args.concurrency,
                    conninfo_direct=args.direct, conninfo_pool=pool, poll_interval=1.0)
    if args.until_idle:
        def watch() -> None:  # stop once the queue has had nothing to do for 3 checks in a row
            quiet = 0
            while quiet < 3:
                time.sleep(1)
                with pool.connection() as conn:
                    busy = conn.execute("SELECT pending + scheduled + running FROM conveyor.queue_metrics(%s)",
                                        (QUEUE,)).fetchone()[0]
                quiet = quiet + 1 if busy == 0 else 0
            worker.stop()
        threading.Thread(target=watch, daemon=True).start()
    worker.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create")
    c.add_argument("--dsn", required=True)
    c.add_argument("--jobs", type=int, default=60)
    c.add_argument("--seed", type=int, default=7)
    w = sub.add_parser("work")
    w.add_argument("--direct", required=True, help="PostgreSQL itself, for wait_for's LISTEN")
    w.add_argument("--pool", help="pgbouncer (transaction mode) or PostgreSQL, for every other call")
    w.add_argument("--concurrency", type=int, default=4)
    w.add_argument("--seed", type=int, default=7)
    w.add_argument("--until-idle", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    create(args) if args.command == "create" else work(args)


if __name__ == "__main__":
    main()

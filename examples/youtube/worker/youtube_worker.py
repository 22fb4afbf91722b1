#!/usr/bin/python3
"""The pipeline's worker: conveyor_client's Worker on queue 'youtube', handlers calling the youtube.* RPCs.

Jobs are leased, heartbeated and acknowledged by conveyor_client (conveyor.dequeue / ack on the queue
'youtube', group_key = channel: one job per channel at a time). Everything a handler stores goes through
the example's RPCs: youtube.consume_api_quota before each API call, then upsert_channel, upsert_videos,
capture_channel_stats, capture_video_stats, enqueue_job for follow-up jobs and dead_letter_job for a
channel that is gone.

The API is fake_youtube.FakeYouTube (seeded). The pipeline's clock is simulated: --as-of is the capture
time sent as "capturedAt", --day the simulated day whose statistics the API returns, --hour an offset in
hours within it (several video captures a day).

  youtube_worker.py --pool "host=... dbname=..." --direct "host=... dbname=..." --as-of 2024-05-01T07:00:00Z \
      --day 0 --concurrency 4 --exit-when-idle --report /tmp/w1.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "clients", "python"))

from psycopg.types.json import Jsonb  # noqa: E402

from conveyor_client import ConnectionPool, Retry, Worker  # noqa: E402
from fake_youtube import COSTS, PAGE, FakeYouTube  # noqa: E402

log = logging.getLogger("youtube_worker")

CHANNEL_GONE = "channel_not_found: channels.list returned no item (deleted or terminated channel, HTTP 404)"


class QuotaExhausted(Exception):
    pass


class Pipeline:
    def __init__(self, api: FakeYouTube, pool: ConnectionPool, as_of: dt.datetime, day: int, hour: int) -> None:
        self.api = api
        self.pool = pool
        self.retry = Retry()
        self.as_of = as_of + dt.timedelta(hours=hour)
        self.day = day
        self.hour = hour
        self.lock = threading.Lock()
        self.report: Dict[str, Any] = {"units": 0, "calls": {}, "dead_lettered": 0, "privacy_changes": 0,
                                       "jobs": 0}

    # ---- database ----------------------------------------------------------------------------------

    def rpc(self, sql: str, params: tuple) -> List[tuple]:
        return self.retry.run(self.pool, lambda c: c.execute(sql, params).fetchall())

    def api_call(self, op: str, fn, *args):
        """YouTube charges a call whether or not it succeeds: the units are consumed first."""
        allowed = self.rpc("SELECT allowed FROM youtube.consume_api_quota(%s)", (op,))[0][0]
        if not allowed:
            raise QuotaExhausted(f"{op}: the day's quota is used up")
        with self.lock:
            self.report["units"] += COSTS[op]
            self.report["calls"][op] = self.report["calls"].get(op, 0) + 1
        return fn(*args)

    def stamp(self) -> str:
        return self.as_of.strftime("%Y-%m-%dT%H:%M:%SZ")

    # ---- steps -------------------------------------------------------------------------------------

    def fetch_channel(self, job, channel_id: str) -> Optional[dict]:
        items = self.api_call("channels.list", self.api.channels_list, [channel_id], self.day, job.attempt)["items"]
        if not items:
            self.rpc("SELECT youtube.dead_letter_job(%s, %s)", (job.job_id, CHANNEL_GONE))
            with self.lock:
                self.report["dead_lettered"] += 1
            return None
        return items[0]

    def capture_channel(self, channel_id: str, item: dict) -> None:
        self.rpc("SELECT * FROM youtube.capture_channel_stats(%s, %s)",
                 (channel_id, Jsonb({**item["statistics"], "capturedAt": self.stamp()})))

    def store_videos(self, job, video_ids: List[str]) -> int:
        stored = 0
        for start in range(0, len(video_ids), PAGE):
            chunk = video_ids[start:start + PAGE]
            items = self.api_call("videos.list", self.api.videos_list, chunk, self.day, self.hour, job.attempt)["items"]
            if not items:
                continue
            rows = self.rpc("SELECT video_id, change_summary FROM youtube.upsert_videos(%s::jsonb[])",
                            ([Jsonb(i) for i in items],))
            changes = sum(1 for _, summary in rows if "privacy_change" in summary)
            self.rpc("SELECT count(*) FROM youtube.capture_video_stats(%s::jsonb[])",
                     ([Jsonb({"id": i["id"], "statistics": i["statistics"], "capturedAt": self.stamp()}) for i in items],))
            with self.lock:
                self.report["privacy_changes"] += changes
            stored += len(items)
        return stored

    def uploads(self, job, channel_id: str) -> List[str]:
        ids: List[str] = []
        token: Optional[str] = None
        while True:
            page = self.api_call("playlistItems.list", self.api.playlist_items_list, "UU" + channel_id[2:], token,
                                 job.attempt)
            ids += [i["contentDetails"]["videoId"] for i in page["items"]]
            token = page["nextPageToken"]
            if token is None:
                return ids

    # ---- handlers, one per job type ----------------------------------------------------------------

    def discover_channels(self, job, ctx):
        # every search first, then the enqueues: a failed search retries the job before anything was enqueued
        found: List[str] = []
        page = 0
        while True:
            items = self.api_call("search.list", self.api.search_list, "music", page, job.attempt)["items"]
            found += [item["id"]["channelId"] for item in items]
            if len(items) < PAGE:
                break
            page += 1
        for channel_id in found:
            self.rpc("SELECT * FROM youtube.enqueue_job('BACKFILL_CHANNEL', %s, priority => 7, dedup_key => %s)",
                     (channel_id, "backfill:" + channel_id))
        return self.done({"channels_found": len(found)})

    def backfill_channel(self, job, ctx):
        channel_id = job.payload["channel_id"]
        item = self.fetch_channel(job, channel_id)
        if item is None:
            return {"dead_lettered": CHANNEL_GONE}
        self.rpc("SELECT * FROM youtube.upsert_channel(%s)", (Jsonb(item),))
        self.capture_channel(channel_id, item)
        return self.done({"videos": self.store_videos(job, self.uploads(job, channel_id))})

    def refresh_channel_metadata(self, job, ctx):
        item = self.fetch_channel(job, job.payload["channel_id"])
        if item is None:
            return {"dead_lettered": CHANNEL_GONE}
        self.rpc("SELECT * FROM youtube.upsert_channel(%s)", (Jsonb(item),))
        return self.done({})

    def refresh_channel_stats(self, job, ctx):
        channel_id = job.payload["channel_id"]
        item = self.fetch_channel(job, channel_id)
        if item is None:
            return {"dead_lettered": CHANNEL_GONE}
        self.capture_channel(channel_id, item)
        return self.done({})

    def sync_channel_videos(self, job, ctx):
        return self.done({"videos": self.store_videos(job, self.uploads(job, job.payload["channel_id"]))})

    def refresh_video_stats(self, job, ctx):
        return self.done({"videos": self.store_videos(job, job.payload["video_ids"])})

    def done(self, stats: dict) -> dict:
        with self.lock:
            self.report["jobs"] += 1
        return stats

    def handlers(self):
        return {"DISCOVER_CHANNELS": self.discover_channels, "BACKFILL_CHANNEL": self.backfill_channel,
                "REFRESH_CHANNEL_METADATA": self.refresh_channel_metadata,
                "REFRESH_CHANNEL_STATS": self.refresh_channel_stats,
                "SYNC_CHANNEL_VIDEOS": self.sync_channel_videos, "REFRESH_VIDEO_STATS": self.refresh_video_stats}


def stop_when_idle(worker: Worker, pool: ConnectionPool, interval: float = 0.3) -> None:
    """Stops the worker once the queue has had no pending, scheduled or running job for two looks in a row."""
    idle = 0
    while idle < 2:
        time.sleep(interval)
        with pool.connection() as conn:
            left = conn.execute("SELECT pending + scheduled + running FROM conveyor.queue_metrics('youtube')").fetchone()[0]
        idle = idle + 1 if left == 0 else 0
    worker.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", required=True, help="conninfo for every call (pgbouncer in transaction mode is fine)")
    ap.add_argument("--direct", required=True, help="conninfo of a direct session, for LISTEN")
    ap.add_argument("--as-of", required=True, help="the simulated capture time (ISO 8601, UTC)")
    ap.add_argument("--day", type=int, default=0, help="the simulated day whose statistics the API returns")
    ap.add_argument("--hour", type=int, default=0, help="hours after --as-of (several captures a day)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--channels", type=int, default=200)
    ap.add_argument("--failure-rate", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--exit-when-idle", action="store_true")
    ap.add_argument("--report", help="write the calls made and their units here (JSON) at exit")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    as_of = dt.datetime.fromisoformat(args.as_of.replace("Z", "+00:00"))
    pool = ConnectionPool(args.pool)
    pipeline = Pipeline(FakeYouTube(args.seed, args.channels, args.failure_rate), pool, as_of, args.day, args.hour)
    worker = Worker("youtube", pipeline.handlers(), concurrency=args.concurrency, conninfo_direct=args.direct,
                    conninfo_pool=pool, poll_interval=0.5)
    if args.exit_when_idle:
        threading.Thread(target=stop_when_idle, args=(worker, pool), daemon=True).start()
    worker.run()
    pool.close()
    if args.report:
        with open(args.report, "w") as f:
            json.dump(pipeline.report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""The pipeline's worker: reads the music queues with music.pg_dequeue (pgmq's visibility timeout over
conveyor's leases) and runs each step against a simulated Spotify (fixture.json, see fake_spotify.py).

Each message is one step: artist_discovery (a name or a genre search), album_discovery (a page of an
artist's albums), track_discovery (an album's tracks), producer_identification (a track's credits),
social_enrichment (a producer's profile), and music_processor_ticks (a scheduled batch of one queue).
Per entity it does what the specification's workers do: acquire_processing_lock, an INSERT into
processing_locks, heartbeats, an UPDATE of processing_status to COMPLETED or FAILED, a DELETE of its
lock, then pg_delete_message. A message it does not delete comes back after the visibility timeout.

  music_worker.py --pool "host=... dbname=... user=..." --name w1 --vt 2 --idle-exit 6
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "clients", "python"))

import psycopg  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from conveyor_client import ConnectionPool, Retry  # noqa: E402
from fake_spotify import ApiError, FakeSpotify, normalize  # noqa: E402

log = logging.getLogger("music_worker")
# Downstream first, so a run finishes what it started before it discovers more.
QUEUES = ["social_enrichment", "producer_identification", "track_discovery", "album_discovery",
          "artist_discovery", "music_processor_ticks"]
NOT_FOUND = "artist_not_found: no Spotify artist has this name"


class LeaseLost(Exception):
    pass


class Worker:
    def __init__(self, pool: ConnectionPool, api: FakeSpotify, name: str, vt: int) -> None:
        self.pool, self.api, self.name, self.vt = pool, api, name, vt
        self.retry = Retry()
        self.report: Dict[str, int] = {"processed": 0, "failed": 0, "stalled": 0, "lost": 0, "duplicates": 0}

    def sql(self, query: str, *params: Any) -> List[tuple]:
        def call(conn: psycopg.Connection) -> List[tuple]:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []
        return self.retry.run(self.pool, call)

    def one(self, query: str, *params: Any) -> Any:
        return self.sql(query, *params)[0][0]

    def api_call(self, api: str, fn, *args):
        t0 = time.monotonic()
        ok = False
        try:
            result = fn(*args)
            ok = True
            return result
        finally:
            self.sql("INSERT INTO music_monitoring.pipeline_metrics (metric_name, metric_value, tags) VALUES ('api_call', %s, %s)",
                     (time.monotonic() - t0) * 1000, Jsonb({"api": api, "success": "true" if ok else "false"}))

    # ---- one entity, as the specification's workers handle it ----------------------------------------

    def with_entity(self, etype: str, eid: str, msg: Dict[str, Any], work) -> bool:
        """Runs work() holding the entity; True when the message is done (delete it)."""
        corr = f"msg-{msg['msg_id']}"
        if not self.one("SELECT music.acquire_processing_lock(%s, %s, 30, %s)", etype, eid, corr):
            state = self.sql("SELECT state, dead_lettered FROM music.processing_status WHERE entity_type = %s AND entity_id = %s",
                             etype, eid)
            if state and state[0][0] == "COMPLETED":
                self.report["duplicates"] += 1
                return True                       # done before (a repeated message): nothing to do
            if not self.one("SELECT music.claim_stale_lock(%s, %s, %s, %s)", etype, eid, self.name, corr):
                return False                      # another worker is on it: the message comes back later
        try:
            self.sql("INSERT INTO music.processing_locks (entity_type, entity_id, worker_id, correlation_id, ttl_seconds) "
                     "VALUES (%s, %s, %s, %s, %s)", etype, eid, self.name, corr, self.vt)
        except psycopg.errors.UniqueViolation:
            # Another worker still holds the entity's lock: it has just recorded a failure, which let this
            # worker acquire the entity, and not yet let go of the lock. The message comes back later.
            return False
        attempt = self.one("SELECT attempts FROM music.processing_status WHERE entity_type = %s AND entity_id = %s", etype, eid)
        try:
            work(lambda: self.heartbeat(etype, eid, corr), attempt)
        except ApiError as exc:
            self.report["failed"] += 1
            self.sql("UPDATE music.processing_status SET state = 'FAILED', last_error = %s WHERE entity_type = %s AND entity_id = %s",
                     str(exc), etype, eid)
            self.sql("INSERT INTO music.worker_issues (worker_name, issue_type, message, details) VALUES (%s, 'spotify_api', %s, %s)",
                     self.name, str(exc), Jsonb({"entity_type": etype, "entity_id": eid}))
            self.sql("DELETE FROM music.processing_locks WHERE entity_type = %s AND entity_id = %s AND worker_id = %s", etype, eid, self.name)
            return False                          # read again after the visibility timeout
        except LeaseLost:
            self.report["lost"] += 1
            return False
        self.sql("UPDATE music.processing_status SET state = 'COMPLETED' WHERE entity_type = %s AND entity_id = %s", etype, eid)
        self.sql("DELETE FROM music.processing_locks WHERE entity_type = %s AND entity_id = %s AND worker_id = %s", etype, eid, self.name)
        return True

    def heartbeat(self, etype: str, eid: str, corr: str) -> None:
        if not self.one("SELECT music.update_lock_heartbeat(%s, %s, %s, %s)", etype, eid, self.name, corr):
            raise LeaseLost(f"{etype} {eid}")

    # ---- steps -------------------------------------------------------------------------------------

    def artist_discovery(self, msg: Dict[str, Any]) -> bool:
        body = msg["message"]
        if "genre" in body:
            for name in self.api_call("spotify", self.api.search_genre, body["genre"], body["minPopularity"], body["limit"]):
                self.one("SELECT music.start_artist_discovery(%s)", name)
            return True
        artist = self.api_call("spotify", self.api.search_artist, body["artistName"])
        if artist is None:
            self.one("SELECT music.move_to_dead_letter_queue('artist_discovery', 'artist_discovery_dlq', %s, %s, %s)",
                     str(msg["msg_id"]), NOT_FOUND, Jsonb({"artistName": body["artistName"]}))
            return False                          # moved: nothing left to delete

        def work(beat, attempt):
            r = self.one("SELECT music.process_artist_atomic(%s, %s, %s)",
                         Jsonb({"name": artist["name"], "followers": artist["followers"], "popularity": artist["popularity"],
                                "metadata": {"genres": artist["genres"]}}),
                         f"artist:{artist['spotify_id']}", artist["spotify_id"])
            self.one("SELECT music.start_album_discovery(%s, 0)", r["artist_id"])
        return self.with_entity("artist", artist["spotify_id"], msg, work)

    def album_discovery(self, msg: Dict[str, Any]) -> bool:
        body = msg["message"]

        def work(beat, attempt):
            page, more = self.api_call("spotify", self.api.artist_albums, body["artistSpotifyId"], body["offset"])
            for album in page:
                r = self.one("SELECT music.process_album_atomic(%s, %s, %s)",
                             Jsonb({"name": album["name"], "artist_id": body["artistId"], "release_date": album["release_date"]}),
                             f"album:{album['spotify_id']}", album["spotify_id"])
                self.one("SELECT music.pg_enqueue('track_discovery', %s)",
                         Jsonb({"albumId": r["album_id"], "albumSpotifyId": album["spotify_id"], "artistId": body["artistId"]}))
                beat()
            if more:
                self.one("SELECT music.start_album_discovery(%s, %s)", body["artistId"], body["offset"] + len(page))
        return self.with_entity("album_page", f"{body['artistId']}:{body['offset']}", msg, work)

    def track_discovery(self, msg: Dict[str, Any]) -> bool:
        body = msg["message"]

        def work(beat, attempt):
            tracks = self.api_call("spotify", self.api.album_tracks, body["albumSpotifyId"])
            r = self.one("SELECT music.process_track_batch(%s::jsonb[], %s, %s)",
                         [Jsonb({k: t[k] for k in ("spotify_id", "name", "duration_ms", "popularity")}) for t in tracks],
                         body["albumId"], body["artistId"])
            if "error" in r:
                raise RuntimeError(f"process_track_batch: {r}")
            for t in r["results"]:
                self.one("SELECT music.pg_enqueue('producer_identification', %s)",
                         Jsonb({"trackId": t["track_id"], "trackSpotifyId": t["spotify_id"]}))
        return self.with_entity("album", body["albumSpotifyId"], msg, work)

    def producer_identification(self, msg: Dict[str, Any]) -> bool:
        body = msg["message"]

        def work(beat, attempt):
            if self.api.stalls(body["trackSpotifyId"], attempt):
                self.report["stalled"] += 1
                time.sleep(self.vt + 1.5)         # a stuck worker: its lease and the message's timeout run out
            beat()                                # ... so here it learns whether it still holds the entity
            for name in self.api_call("spotify", self.api.track_credits, body["trackSpotifyId"], attempt):
                r = self.one("SELECT music.process_producer_atomic(%s, %s, %s)",
                             Jsonb({"name": name, "track_id": body["trackId"], "confidence": 0.9, "source": "spotify_credits"}),
                             f"credit:{body['trackSpotifyId']}:{normalize(name)}", normalize(name))
                self.one("SELECT music.pg_enqueue('social_enrichment', %s)",
                         Jsonb({"producerId": r["producer_id"], "name": name, "normalizedName": normalize(name)}))
        return self.with_entity("track", body["trackSpotifyId"], msg, work)

    def social_enrichment(self, msg: Dict[str, Any]) -> bool:
        body = msg["message"]

        def work(beat, attempt):
            try:
                profile = self.api_call("instagram", self.api.instagram_profile, body["name"])
                data = {"instagram_handle": profile["instagram_handle"], "instagram_bio": profile["instagram_bio"],
                        # the message's time, the same on every read: a repeat replays the operation
                        "enriched_at": msg["enqueued_at"].isoformat(), "enrichment_failed": False}
            except ApiError as exc:               # no profile to be found: recorded, not retried
                self.sql("INSERT INTO music_monitoring.worker_issues (worker_name, issue_type, severity, message) "
                         "VALUES (%s, 'enrichment', 'info', %s)", self.name, str(exc))
                data = {"enrichment_failed": True}
            self.one("SELECT music.process_producer_atomic(%s, %s, %s)", Jsonb(data),
                     f"enrich:{body['normalizedName']}", body["normalizedName"])
        return self.with_entity("producer", body["normalizedName"], msg, work)

    def music_processor_ticks(self, msg: Dict[str, Any]) -> bool:
        body = msg["message"]
        for q in ([body["queue"]] if body["queue"] != "*" else QUEUES[:-1]):
            self.batch(q, int(body["batch_size"]))
        return True

    # ---- the loop ----------------------------------------------------------------------------------

    def batch(self, queue: str, size: int) -> int:
        rows = self.sql("SELECT msg_id, id, read_ct, enqueued_at, message FROM music.pg_dequeue(%s, %s, %s)", queue, size, self.vt)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ok = 0
        for msg_id, mid, read_ct, enqueued_at, message in rows:
            msg = {"msg_id": msg_id, "id": mid, "read_ct": read_ct, "enqueued_at": enqueued_at, "message": message}
            if getattr(self, queue)(msg):
                self.one("SELECT music.pg_delete_message(%s, %s)", queue, str(msg_id))
                ok += 1
            self.report["processed"] += 1
        if rows:
            self.sql("INSERT INTO music.queue_metrics (queue_name, operation, started_at, finished_at, processed_count, "
                     "success_count, error_count) VALUES (%s, 'batch', %s, now(), %s, %s, %s)",
                     queue, started, len(rows), ok, len(rows) - ok)
        return len(rows)

    def run(self, idle_exit: float) -> None:
        idle_since = time.monotonic()
        while True:
            got = sum(self.batch(q, 5) for q in QUEUES)
            if got:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_exit:
                return
            else:
                time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--vt", type=int, default=2, help="visibility timeout, seconds")
    ap.add_argument("--idle-exit", type=float, default=6.0, help="exit after this long without a message")
    ap.add_argument("--fixture", default=os.path.join(HERE, "fixture.json"))
    ap.add_argument("--report")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {args.name} %(levelname)s %(message)s")
    pool = ConnectionPool(args.pool)
    w = Worker(pool, FakeSpotify(args.fixture), args.name, args.vt)
    w.run(args.idle_exit)
    pool.close()
    if args.report:
        with open(args.report, "w") as f:
            json.dump(w.report, f)


if __name__ == "__main__":
    main()

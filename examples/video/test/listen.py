#!/usr/bin/python3
"""LISTENs (on a direct connection) to the service's channels and writes every notification as
"channel<TAB>payload" lines until one arrives on video_test_done.

  listen.py --dsn DSN --out FILE                   video_job_status and video_timeline (all jobs)
  listen.py --dsn DSN --out FILE --job ID ...      video_job_status:<ID> and video_timeline:<ID> only
"""
import argparse
import sys

import psycopg
from psycopg import sql


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--job", action="append", default=[])
    args = parser.parse_args()
    channels = ["video_test_done"]
    if args.job:
        channels += [f"video_job_status:{j}" for j in args.job] + [f"video_timeline:{j}" for j in args.job]
    else:
        channels += ["video_job_status", "video_timeline"]
    with psycopg.connect(args.dsn, autocommit=True) as conn, open(args.out, "w") as out:
        for ch in channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ch)))
        print("ready", flush=True)
        for note in conn.notifies():
            if note.channel == "video_test_done":
                break
            out.write(f"{note.channel}\t{note.payload}\n")
    sys.exit(0)


if __name__ == "__main__":
    main()

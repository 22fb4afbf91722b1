#!/usr/bin/python3
"""Checks what the listen.py runs (files after the DSN) received against the database: for every job, the notifications on
video_job_status carry versions 1, 2, 3, ... with no gap, repeat or reordering, and the last one has
the job's final status and version; every timeline row was announced when it started and when it
ended; each per-job channel received exactly that job's part of the all-jobs stream, in order.
Prints one TAP line per check."""
import collections
import json
import sys

import psycopg

dsn = sys.argv[1]
lines = [line.rstrip("\n").split("\t", 1) for path in sys.argv[2:] for line in open(path)]
status = collections.defaultdict(list)
timeline = collections.defaultdict(list)
per_job = collections.defaultdict(list)
for channel, payload in lines:
    p = json.loads(payload)
    if channel == "video_job_status":
        status[p["job_id"]].append(p)
    elif channel == "video_timeline":
        timeline[p["job_id"]].append(p)
    else:
        per_job[channel].append(p)

failed = 0


def ok(cond, desc, detail=""):
    global failed
    print(("ok - " if cond else "not ok - ") + desc)
    if not cond:
        failed += 1
        print("#   " + detail[:2000])


with psycopg.connect(dsn, autocommit=True) as conn:
    jobs = {str(i): (s, v) for i, s, v in conn.execute("SELECT id, status, version FROM video.jobs")}
    steps = {str(i): n for i, n in conn.execute(
        "SELECT job_id, count(*) FROM video.processing_timeline GROUP BY job_id")}
    ended = {str(i): n for i, n in conn.execute(
        "SELECT job_id, count(*) FROM video.processing_timeline WHERE status <> 'running' GROUP BY job_id")}

bad = [j for j, (st, ver) in jobs.items()
       if [p["version"] for p in status[j]] != list(range(1, ver + 1)) or status[j][-1]["new_status"] != st]
ok(not bad, f"every job's status notifications: versions 1..final in order, last = its final status ({len(jobs)} jobs, {len(lines)} notifications)",
   f"{len(bad)} jobs differ, e.g. {bad[:1]}: {[(p['version'], p['new_status']) for p in status[bad[0]]] if bad else ''} vs {jobs[bad[0]] if bad else ''}")
transitions = [(p["old_status"], p["new_status"]) for ps in status.values() for p in ps if p["event"] == "status"]
ok(all(o != n for o, n in transitions) and len(transitions) > 0,
   f"each status event reports a change ({len(transitions)} status changes)")
bad = [j for j in jobs if sum(p["event"] == "step_started" for p in timeline[j]) != steps.get(j, 0)
       or sum(p["event"] != "step_started" for p in timeline[j]) != ended.get(j, 0)]
ok(not bad, "every timeline row announced once when it started and once when it ended", str(bad[:3]))
sampled = {c.split(":", 1)[1] for c in per_job}
# The per-job listener started after the jobs were created: it saw the tail of each job's stream.
bad = [j for j in sampled for mine, everyone in ((per_job[f"video_job_status:{j}"], status[j]), (per_job[f"video_timeline:{j}"], timeline[j]))
       if not mine or mine != everyone[len(everyone) - len(mine):]]
ok(len(sampled) == 3 and not bad, f"the per-job channels of {len(sampled)} jobs carried exactly their jobs' notifications, in order", str(bad))
sys.exit(1 if failed else 0)

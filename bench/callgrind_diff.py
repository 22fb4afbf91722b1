#!/usr/bin/env python3
"""Per-job instruction counts from two callgrind files of the same workload (bench/callgrind.sh).

    python3 bench/callgrind_diff.py SMALL_FILE LARGE_FILE JOBS [TOP]
    python3 bench/callgrind_diff.py --top-only SMALL_FILE LARGE_FILE CALLS TOP

Prints, for the named parts and then (with TOP) the TOP functions with the largest inclusive counts,
(count in LARGE_FILE - count in SMALL_FILE) / JOBS: the cost per job without what both runs share
(the connection's start, plans made once). Inclusive counts as callgrind_annotate --inclusive=yes
gives them (a recursive function's count is that of its outermost calls). --top-only prints just the
TOP functions (without the program's total), as bench/callgrind.sh enqueue lists them.
"""
import re
import subprocess
import sys

# Where a job's instructions go: the conveyor functions called, then the server's parts.
PARTS = [
    ("conveyor_dequeue", "conveyor.dequeue, inclusive"),
    ("conveyor_ack", "conveyor.ack, inclusive"),
    ("conveyor_ack_many", "conveyor.ack_many, inclusive"),
    ("fmgr_security_definer", "SECURITY DEFINER + SET calls (incl. the body)"),
    ("ProcessGUCArray", "  pinning the SET settings"),
    ("AtEOXact_GUC", "  restoring them"),
    ("GetCachedPlan", "kept plans: revalidation and locks"),
    ("standard_ExecutorStart", "executor start-up (all statements)"),
    ("ExecInitModifyTable", "  of which ModifyTable nodes"),
    ("ExecOpenIndices", "    opening indexes"),
    ("standard_ExecutorFinish", "CTE writes run at ExecutorFinish"),
    ("standard_ExecutorEnd", "executor shut-down"),
    ("ExecCloseIndices", "  closing indexes"),
    ("ExecInsertIndexTuples", "index upkeep of inserted/updated rows"),
    ("ExecPrepareQual", "  partial-index predicates prepared"),
    ("btinsert", "  btree inserts"),
    ("ExecCheckIndexConstraints", "ON CONFLICT arbiter check (counters)"),
    ("ExecFindPartition", "partition routing (history, events)"),
    ("heap_insert", "heap inserts"),
    ("heap_update", "heap updates"),
    ("heap_delete", "heap deletes"),
    ("jsonb_build_object", "event details (jsonb_build_object)"),
    ("XLogInsert", "WAL records"),
    ("CommitTransactionCommand", "commit"),
]


def load(path):
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--auto=no", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    counts = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if not m:
            continue
        name = re.sub(r" \[[^\]]*\]$", "", m.group(2))
        if name != "PROGRAM TOTALS" and ":" in name:
            name = name.split(":", 1)[1]
        value = int(m.group(1).replace(",", ""))
        counts[name] = max(counts.get(name, 0), value)
    return counts


def main():
    args = sys.argv[1:]
    top_only = args[:1] == ["--top-only"]
    if top_only:
        args = args[1:]
    a, b, jobs = load(args[0]), load(args[1]), int(args[2])
    top = int(args[3]) if len(args) > 3 else 0
    per = lambda k: (b.get(k, 0) - a.get(k, 0)) / jobs
    if top_only:
        funcs = (set(a) | set(b)) - {"PROGRAM TOTALS"}
        for v, k in sorted(((per(k), k) for k in funcs), reverse=True)[:top]:
            print(f"  {v:12,.0f}  {k[:110]}")
        return
    print(f"  {'total':<50} {per('PROGRAM TOTALS'):10.0f}")
    for name, label in PARTS:
        if name in b:
            print(f"  {label:<50} {per(name):10.0f}")
    if top:
        print(f"  top {top} functions, inclusive:")
        for v, k in sorted(((per(k), k) for k in set(a) | set(b)), reverse=True)[:top]:
            print(f"    {v:10.0f}  {k[:110]}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reads auto_explain's JSON plans (log_format = json, log_analyze, log_buffers, nested statements) as
psql prints them on stderr, and prints for every statement its time, the shared buffers it touched and
each table it read with how. Exit status 1 when a plan reads a table it is told to avoid.

    python3 bench/plan_check.py AVOID_SPEC < psql-stderr

AVOID_SPEC: comma-separated rules, each RELATION_PREFIX (any read of it counts, e.g. job_history,
which also matches its partitions job_history_p20261203) or RELATION_PREFIX=Node Type (only that
kind of read counts, e.g. "entities=Seq Scan").
"""
import json
import re
import sys


def nodes(plan, depth=0):
    yield plan, depth
    for child in plan.get("Plans", []):
        yield from nodes(child, depth + 1)


def main():
    rules = []
    for rule in sys.argv[1].split(","):
        rel, _, node = rule.partition("=")
        rules.append((rel.strip(), node.strip() or None))
    text = sys.stdin.read()
    decoder = json.JSONDecoder()
    bad = []
    count = 0
    for m in re.finditer(r"LOG:  duration: ([0-9.]+) ms  plan:\s*", text):
        try:
            doc, _ = decoder.raw_decode(text, m.end())
        except ValueError:
            continue
        count += 1
        plan = doc["Plan"]
        query = re.sub(r"\s+", " ", doc.get("Query Text", "")).strip()
        reads = []
        for node, _ in nodes(plan):
            rel = node.get("Relation Name")
            if not rel:
                continue
            how = node["Node Type"] + (" using " + node["Index Name"] if "Index Name" in node else "")
            reads.append(f"{rel} ({how}, rows {node.get('Actual Rows', '?')} x {node.get('Actual Loops', '?')})")
            for prefix, kind in rules:
                if rel.startswith(prefix) and (kind is None or node["Node Type"] == kind):
                    bad.append(f"{node['Node Type']} on {rel} in: {query[:160]}")
        buffers = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
        print(f"  {float(m.group(1)):9.3f} ms {buffers:7d} buffers  {query[:100]}")
        for r in sorted(set(reads)):
            print(f"  {'':28}reads {r}")
    if count == 0:
        print("  no plans found (is auto_explain loaded?)")
        return 1
    for b in bad:
        print(f"  AVOIDED TABLE READ: {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

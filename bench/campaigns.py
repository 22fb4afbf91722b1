#!/usr/bin/python3
"""Times the campaigns example's functions (examples/campaigns) against the budgets of its contract.

Each measurement is the median of RUNS calls on a database where install.sql ran; printed with the
ratio measured/budget (below 1 is within budget). Usage: bench/campaigns.py DSN [RUNS]
"""
import statistics
import sys
import threading
import time
import uuid

import psycopg
from psycopg.types.json import Jsonb

DSN = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
conn = psycopg.connect(DSN, autocommit=True)


def call(sql, *args):
    env = conn.execute(sql, args).fetchone()[0]
    assert env["success"], env
    return env


def median_ms(fn):
    times = []
    for i in range(RUNS):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def campaign(zips=100):
    return call("SELECT campaigns.create_campaign_with_coverage(%s, %s)", Jsonb({"name": "bench"}),
                Jsonb([f"{10000 + i:05d}" for i in range(zips)]))["campaign_id"]


def businesses(n, tag):
    return Jsonb([{"place_id": f"bench-{tag}-{i}", "name": f"B{i}", "email": f"b{i}@{tag}.example",
                   "phone": "+1 555 000 0000", "rating": 4.2} for i in range(n)])


rows = []
def row(what, ms, budget_ms):
    rows.append((what, ms, budget_ms))
    print(f"{what:<58} {ms:9.2f} ms  budget {budget_ms:7.0f} ms  ratio {ms / budget_ms:6.3f}", flush=True)


row("create_campaign_with_coverage, 100 ZIPs", median_ms(lambda i: campaign(100)), 500)
row("create_campaign_with_coverage, 10,000 ZIPs", median_ms(lambda i: campaign(10000)), 500 * 100)
cid = campaign(100)
row("insert_businesses_batch, 50 businesses", median_ms(lambda i: call(
    "SELECT campaigns.insert_businesses_batch(%s, '10000', %s)", cid, businesses(50, f"a{i}"))), 1000)
row("insert_businesses_batch, 1,000 businesses", median_ms(lambda i: call(
    "SELECT campaigns.insert_businesses_batch(%s, '10000', %s)", cid, businesses(1000, f"k{i}"))), 1000 * 20)
row("update_campaign_statistics", median_ms(lambda i: call("SELECT campaigns.update_campaign_statistics(%s)", cid)), 200)
row("track_campaign_cost", median_ms(lambda i: call(
    "SELECT campaigns.track_campaign_cost(%s, 'google_maps', 10, 0.025, NULL)", cid)), 100)
row("update_coverage_status", median_ms(lambda i: call(
    "SELECT campaigns.update_coverage_status(%s, %s, 10, 2, 0.025)", cid, f"{10000 + i:05d}")), 50)
ids = [r[0] for r in conn.execute("SELECT id FROM campaigns.gmaps_businesses WHERE campaign_id = %s ORDER BY id", (cid,))]
row("update_enrichment_batch, 50 enrichments", median_ms(lambda i: call(
    "SELECT campaigns.update_enrichment_batch('facebook', %s)",
    Jsonb([{"business_id": str(b), "status": "found", "url": "https://facebook.example/x", "data": {"likes": 3}}
           for b in ids[i * 50:(i + 1) * 50]]))), 1000)
emails = conn.execute("SELECT id, email FROM campaigns.gmaps_businesses WHERE campaign_id = %s ORDER BY id", (cid,)).fetchall()
row("update_email_verification", median_ms(lambda i: call(
    "SELECT campaigns.update_email_verification(%s, %s, %s)", emails[i][0], emails[i][1], Jsonb({"status": "deliverable"}))), 50)
row("get_businesses_for_enrichment, 100 businesses", median_ms(lambda i: call(
    "SELECT campaigns.get_businesses_for_enrichment(%s, 'linkedin', 100, %s)", cid, i * 100)), 500)


def concurrent_costs(_):
    c2 = campaign(1)
    conns = [psycopg.connect(DSN, autocommit=True) for _ in range(100)]
    gate = threading.Barrier(101)
    def one(c):
        gate.wait()
        assert c.execute("SELECT campaigns.track_campaign_cost(%s, 'bouncer', 1, 0.008, NULL)", (c2,)).fetchone()[0]["success"]
    threads = [threading.Thread(target=one, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    return elapsed


times = []
for _ in range(3):
    times.append(concurrent_costs(0) * 1000)
row("100 concurrent track_campaign_cost, all done (one campaign)", statistics.median(times), 100 * 100)
print(f"# budgets: the contract's per call; 10,000 ZIPs: 100 x the 100-ZIP budget; 1,000 businesses: 20 x the 50-business"
      f" budget; 100 concurrent costs: 100 x one call's. Median of {RUNS} runs (3 for the concurrent one).")

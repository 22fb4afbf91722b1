#!/usr/bin/python3
"""Concurrency checks of the campaigns functions, each thread on its own connection; prints TAP lines."""
import os
import sys
import threading
import time
import uuid
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "worker"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "clients", "python"))
import psycopg  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from campaigns_client import CampaignsClient  # noqa: E402

DSN = sys.argv[1]
failed = 0


def tap(ok, what, got=None, want=None):
    global failed
    print(("ok - " if ok else "not ok - ") + what)
    if not ok:
        failed += 1
        print(f"#   got: {got!r}\n#   want: {want!r}")


def is_(got, want, what):
    tap(got == want, what, got, want)


def connect():
    return psycopg.connect(DSN, autocommit=True)


def one(sql, *args):
    with connect() as c:
        return c.execute(sql, args).fetchone()


def new_campaign(budget=None, zips=("94103",)):
    data = {"name": "concurrency"} if budget is None else {"name": "concurrency", "budget": budget}
    return one("SELECT campaigns.create_campaign_with_coverage(%s, %s)", Jsonb(data), Jsonb(list(zips)))[0]["campaign_id"]


def run_threads(n, body):
    """n threads, each with its own connection, released together; their results in order."""
    conns = [connect() for _ in range(n)]
    gate = threading.Barrier(n)
    results = [None] * n

    def run(i):
        gate.wait()
        results[i] = body(i, conns[i])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    return results


def totals(cid):
    return one("""SELECT c.total_cost, (SELECT coalesce(sum(cost_usd), 0) FROM campaigns.gmaps_api_costs WHERE campaign_id = c.id),
                         (SELECT count(*) FROM campaigns.gmaps_api_costs WHERE campaign_id = c.id), l.total, l.ok
                  FROM campaigns.gmaps_campaigns c, conveyor.ledger_verify(campaigns.account_name(c.id)) l WHERE c.id = %s""", cid)


# Concurrent costs: none lost. Amounts differ so a lost one would show in the sum.
for n in (10, 100):
    cid = new_campaign()
    amounts = [Decimal(i + 1) / 1000 for i in range(n)]
    res = run_threads(n, lambda i, c: c.execute("SELECT campaigns.track_campaign_cost(%s, 'google_maps', 1, %s, NULL)",
                                                (cid, amounts[i])).fetchone()[0])
    is_(sum(1 for r in res if r["success"]), n, f"{n} concurrent track_campaign_cost: all succeed")
    want = sum(amounts)
    is_(totals(cid), (want, want, n, want, True), f"{n} concurrent costs: campaign total = cost rows = ledger = {want}")
    is_(sorted(Decimal(str(r["new_total_cost"])) for r in res)[-1], want, f"{n} concurrent costs: the last new_total_cost is the sum")

# Concurrent costs against a budget: exactly the charges that fit are taken.
cid = new_campaign(budget=1)
res = run_threads(30, lambda i, c: c.execute("SELECT campaigns.track_campaign_cost(%s, 'bouncer', 1, 0.1, NULL)", (cid,)).fetchone()[0])
is_((sum(1 for r in res if r["success"]), sorted({r["error_code"] for r in res if not r["success"]})), (10, ["CV001"]),
    "30 concurrent costs of 0.1 on a budget of 1: 10 taken, the rest refused with CV001")
is_(totals(cid), (Decimal("1.000000"), Decimal("1.000000"), 10, Decimal("1.000000"), True), "budget: totals agree with the ledger")

# 20 concurrent batches with overlapping place_ids (batch k: k*10 .. k*10+29): no duplicates, counts add up.
cid = new_campaign()
client_retries = []


def batch(i, conn):
    client = CampaignsClient(DSN, backoff_base=0.05)
    env = client.call("insert_businesses_batch", p_campaign_id=cid, p_zip_code="94103",
                      p_businesses=[{"place_id": f"cc-{p}", "name": f"B{p}"} for p in range(i * 10, i * 10 + 30)])
    client_retries.append(client.retried)
    return env


res = run_threads(20, batch)
is_(sum(1 for r in res if r["success"]), 20, "20 concurrent insert_businesses_batch: all succeed (retried on retry_recommended)")
is_(sum(r["inserted"] for r in res), 220, "20 concurrent batches: inserted counts add up to the 220 distinct place_ids")
is_(sum(r["inserted"] + r["updated"] + r["skipped"] for r in res), 600, "20 concurrent batches: every element counted once")
is_(one("SELECT count(*), count(DISTINCT place_id) FROM campaigns.gmaps_businesses WHERE place_id LIKE 'cc-%%'"), (220, 220),
    "20 concurrent batches: 220 rows, no duplicate place_id")

# 5 concurrent statistics recounts (while costs and businesses keep coming): no conflict, right totals.
one("SELECT campaigns.update_coverage_status(%s, '94103', 220, 0, 0)", cid)
res = run_threads(5, lambda i, c: c.execute("SELECT campaigns.update_campaign_statistics(%s)", (cid,)).fetchone()[0])
is_([r["success"] for r in res], [True] * 5, "5 concurrent update_campaign_statistics: no conflict")
is_({(r["total_businesses"], r["zips_scraped"]) for r in res}, {(220, 1)}, "5 concurrent recounts: each sees the right totals")
is_(one("SELECT total_businesses, zips_scraped FROM campaigns.gmaps_campaigns WHERE id = %s", cid), (220, 1), "recount stored")

# 55P03: a campaign locked elsewhere, lock_timeout short: retry_recommended; the client's retry gets through.
cid = new_campaign()
holder = connect()
holder.autocommit = False
holder.execute("SELECT 1 FROM campaigns.gmaps_campaigns WHERE id = %s FOR UPDATE", (cid,))
with psycopg.connect(DSN, autocommit=True, options="-c lock_timeout=100") as c:
    env = c.execute("SELECT campaigns.track_campaign_cost(%s, 'facebook', 1, 0.5, NULL)", (cid,)).fetchone()[0]
is_((env["success"], env["error_code"], env["retry_recommended"]), (False, "55P03", True), "a locked campaign: 55P03, retry recommended")
threading.Timer(0.3, holder.commit).start()
client = CampaignsClient(psycopg.conninfo.make_conninfo(DSN, options="-c lock_timeout=100"), backoff_base=0.2)
env = client.call("track_campaign_cost", p_campaign_id=cid, p_service="facebook", p_items_processed=1, p_cost_usd=0.5, p_metadata=None)
is_((env["success"], client.retried >= 1), (True, True), "the client retries 55P03 with backoff and succeeds once the lock is gone")
time.sleep(0.1)
holder.close()
is_(totals(cid), (Decimal("0.500000"), Decimal("0.500000"), 1, Decimal("0.500000"), True), "after 55P03 and a retry: charged once")

# 40001: a SERIALIZABLE caller whose snapshot predates another's cost: retry recommended, nothing written.
cid = new_campaign()
with connect() as c1:
    c1.autocommit = False
    c1.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    c1.execute("SELECT total_cost FROM campaigns.gmaps_campaigns WHERE id = %s", (cid,))
    one("SELECT campaigns.track_campaign_cost(%s, 'linkedin', 1, 0.25, NULL)", cid)
    env = c1.execute("SELECT campaigns.track_campaign_cost(%s, 'linkedin', 1, 0.75, NULL)", (cid,)).fetchone()[0]
    c1.rollback()
is_((env["success"], env["error_code"], env["retry_recommended"]), (False, "40001", True), "SERIALIZABLE caller after a concurrent cost: 40001, retry recommended")
is_(totals(cid), (Decimal("0.250000"), Decimal("0.250000"), 1, Decimal("0.250000"), True), "after 40001: only the other cost is recorded")

sys.exit(1 if failed else 0)

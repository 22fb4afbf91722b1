#!/usr/bin/python3
"""The campaigns pipeline on conveyor's queue, against the simulated APIs of fake_api.py.

  pipeline.py create --dsn DSN --campaigns 30 --seed 4     campaigns, their ZIPs, one SCRAPE_ZIP job each
  pipeline.py work --direct DSN --pool DSN [--until-idle]  a worker (several may run at once)

SCRAPE_ZIP: search the ZIP, charge it (track_campaign_cost, idempotent per ZIP), store the businesses
(insert_businesses_batch), mark the ZIP (update_coverage_status); the call that leaves no ZIP pending
enqueues ENRICH_FACEBOOK -> ENRICH_LINKEDIN -> VERIFY_EMAILS -> UPDATE_STATISTICS, one after another.
A campaign whose budget refuses a charge stops there (the job completes with outcome budget_exceeded).
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import threading
import time
from typing import Any, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "clients", "python"))

from conveyor_client import PermanentError, Producer, Worker  # noqa: E402
from conveyor_client._db import as_pool  # noqa: E402

from campaigns_client import CampaignsClient, CampaignsError  # noqa: E402
import fake_api  # noqa: E402
from fake_api import KEYWORDS, FakeAPI  # noqa: E402

QUEUE = "campaigns"
PAGE = 50
NEXT_STAGE = {"ENRICH_FACEBOOK": "ENRICH_LINKEDIN", "ENRICH_LINKEDIN": "VERIFY_EMAILS",
              "VERIFY_EMAILS": "UPDATE_STATISTICS"}
log = logging.getLogger("campaigns")


def plan_campaigns(count: int, seed: int) -> list:
    """count campaigns over a shared set of ZIPs (so campaigns overlap); some have a ZIP the API
    rejects, one has a budget too small to finish."""
    rng = random.Random(seed)
    zips = [f"{94000 + i:05d}" for i in range(120)]
    plans = []
    for i in range(count):
        chosen = rng.sample(zips, rng.randint(15, 35))
        if i % 10 == 3:
            chosen.append(f"009{i:02d}")
        plans.append({"name": f"campaign {i}", "keywords": [KEYWORDS[i % len(KEYWORDS)]],
                      "budget": 0.05 if i == 1 else 100, "zips": chosen})
    return plans


def create(args: argparse.Namespace) -> None:
    client = CampaignsClient(args.dsn)
    producer = Producer(args.dsn)
    for plan in plan_campaigns(args.campaigns, args.seed):
        env = client.must("create_campaign_with_coverage", p_campaign_data={
            "name": plan["name"], "keywords": plan["keywords"], "budget": plan["budget"]}, p_zip_codes=plan["zips"])
        cid = env["campaign_id"]
        producer.enqueue_batch(QUEUE, [{"payload": {"campaign_id": cid, "zip_code": z, "keyword": plan["keywords"][0]},
                                        "job_type": "SCRAPE_ZIP", "dedup_key": f"scrape:{cid}:{z}"} for z in plan["zips"]])
        print(cid)


class Pipeline:
    def __init__(self, pool: Any, api: FakeAPI, retry_base: float) -> None:
        self.client = CampaignsClient(pool, backoff_base=retry_base)
        self.producer = Producer(pool)
        self.api = api

    def next_stage(self, job_type: str, cid: str) -> None:
        self.producer.enqueue(QUEUE, {"campaign_id": cid}, job_type=job_type, group_key=cid,
                              dedup_key=f"{job_type}:{cid}")

    def scrape_zip(self, job, ctx) -> Dict[str, Any]:
        cid, zip_code, keyword = job.payload["campaign_id"], job.payload["zip_code"], job.payload["keyword"]
        try:
            found = self.api.google_maps_search(keyword, zip_code, job.attempt)  # raises on API failures
        except fake_api.PermanentAPIError as e:  # the API will never accept this ZIP: no retry
            raise PermanentError(str(e)) from e
        businesses = found["businesses"]
        cost = self.client.call("track_campaign_cost", p_campaign_id=cid, p_service="google_maps",
                                p_items_processed=len(businesses), p_cost_usd=found["cost"],
                                p_metadata={"idempotency_key": f"google_maps:{cid}:{zip_code}", "zip_code": zip_code})
        if not cost["success"]:
            if cost["error_code"] == "CV001":
                return {"outcome": "budget_exceeded"}
            raise CampaignsError("track_campaign_cost", cost)
        stored = self.client.must("insert_businesses_batch", p_campaign_id=cid, p_zip_code=zip_code, p_businesses=businesses)
        emails = sum(1 for b in businesses if "email" in b)
        coverage = self.client.must("update_coverage_status", p_campaign_id=cid, p_zip_code=zip_code,
                                    p_businesses_found=len(businesses), p_emails_found=emails, p_actual_cost=found["cost"])
        if coverage["zips_pending"] == 0:
            self.next_stage("ENRICH_FACEBOOK", cid)
        return {"businesses": len(businesses), "inserted": stored["inserted"]}

    def enrich(self, job, ctx) -> Dict[str, Any]:
        cid = job.payload["campaign_id"]
        kind = {"ENRICH_FACEBOOK": "facebook", "ENRICH_LINKEDIN": "linkedin", "VERIFY_EMAILS": "email"}[job.job_type]
        service = "bouncer" if kind == "email" else kind
        done, outcome = 0, "done"
        while not ctx.cancelled.is_set():
            page = self.client.must("get_businesses_for_enrichment", p_campaign_id=cid, p_enrichment_type=kind,
                                    p_limit=PAGE, p_offset=0)["businesses"]
            if not page:
                break
            if kind == "email":
                results = [(b, self.api.bouncer_verify(b["email"], job.attempt)) for b in page]
                price = len(page) * fake_api.BOUNCER_PER_EMAIL
            else:
                results = [self.api.social_lookup(kind, b, job.attempt) for b in page]
                price = len(page) * (fake_api.FACEBOOK_PER_LOOKUP if kind == "facebook"
                                     else fake_api.LINKEDIN_PER_LOOKUP)
            # Keyed by the page's first business: a retried attempt finds the same page unfinished.
            cost = self.client.call("track_campaign_cost", p_campaign_id=cid, p_service=service,
                                    p_items_processed=len(page), p_cost_usd=price,
                                    p_metadata={"idempotency_key": f"{service}:{cid}:{page[0]['id']}"})
            if not cost["success"]:
                if cost["error_code"] == "CV001":
                    outcome = "budget_exceeded"
                    break
                raise CampaignsError("track_campaign_cost", cost)
            if kind == "email":
                for b, verdict in results:
                    self.client.must("update_email_verification", p_business_id=b["id"], p_email=b["email"],
                                     p_verification_data=verdict)
            else:
                answer = self.client.must("update_enrichment_batch", p_enrichment_type=kind, p_enrichments=results)
                if answer["failed"]:
                    raise CampaignsError("update_enrichment_batch", answer)
            done += len(page)
        self.next_stage(NEXT_STAGE[job.job_type], cid)
        return {"processed": done, "outcome": outcome}

    def statistics(self, job, ctx) -> Dict[str, Any]:
        stats = self.client.must("update_campaign_statistics", p_campaign_id=job.payload["campaign_id"])
        return {"status": stats["status"], "total_businesses": stats["total_businesses"]}


def work(args: argparse.Namespace) -> None:
    pool = as_pool(args.pool or args.direct)
    pipeline = Pipeline(pool, FakeAPI(args.seed, args.transient_rate), args.retry_base)
    worker = Worker(QUEUE, {"SCRAPE_ZIP": pipeline.scrape_zip, "ENRICH_FACEBOOK": pipeline.enrich,
                            "ENRICH_LINKEDIN": pipeline.enrich, "VERIFY_EMAILS": pipeline.enrich,
                            "UPDATE_STATISTICS": pipeline.statistics},
                    concurrency=args.concurrency, conninfo_direct=args.direct, conninfo_pool=pool,
                    poll_interval=1.0)
    if args.until_idle:
        def watch() -> None:  # stop after the queue has had nothing to do for 3 checks in a row
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
    print(f"worker {worker.worker_id}: retried {pipeline.client.retried} calls on retry_recommended")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create")
    c.add_argument("--dsn", required=True)
    c.add_argument("--campaigns", type=int, default=30)
    c.add_argument("--seed", type=int, default=4)
    w = sub.add_parser("work")
    w.add_argument("--direct", required=True, help="PostgreSQL itself, for wait_for's LISTEN")
    w.add_argument("--pool", help="pgbouncer (transaction mode) or PostgreSQL, for every other call")
    w.add_argument("--concurrency", type=int, default=4)
    w.add_argument("--seed", type=int, default=4)
    w.add_argument("--transient-rate", type=float, default=0.1)
    w.add_argument("--retry-base", type=float, default=1.0, help="seconds before the first retry on retry_recommended")
    w.add_argument("--until-idle", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    create(args) if args.command == "create" else work(args)


if __name__ == "__main__":
    main()

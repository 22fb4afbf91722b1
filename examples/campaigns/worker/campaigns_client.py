"""Calls the campaigns functions and retries the ones whose envelope says retry_recommended.

Every function answers {success, error, error_code, retry_recommended, ...}. A failure with
retry_recommended (40001, 40P01, 55P03: a conflict that a new attempt may not meet) is called again
after 1 s, 2 s, 4 s (base * 2^(n-1), `retries` times); any other answer is returned as it is.
"""
from __future__ import annotations

import decimal
import time
from typing import Any, Callable, Dict, Mapping, Optional

from psycopg.types.json import Jsonb

from conveyor_client._db import Pool, as_pool

# Each function's parameters and their types, in the contract's order.
FUNCTIONS: Dict[str, tuple] = {
    "create_campaign_with_coverage": (("p_campaign_data", "jsonb"), ("p_zip_codes", "jsonb")),
    "insert_businesses_batch": (("p_campaign_id", "uuid"), ("p_zip_code", "varchar"), ("p_businesses", "jsonb")),
    "update_campaign_statistics": (("p_campaign_id", "uuid"),),
    "track_campaign_cost": (("p_campaign_id", "uuid"), ("p_service", "varchar"), ("p_items_processed", "int"),
                            ("p_cost_usd", "numeric"), ("p_metadata", "jsonb")),
    "update_coverage_status": (("p_campaign_id", "uuid"), ("p_zip_code", "varchar"), ("p_businesses_found", "int"),
                               ("p_emails_found", "int"), ("p_actual_cost", "numeric")),
    "update_enrichment_batch": (("p_enrichment_type", "varchar"), ("p_enrichments", "jsonb")),
    "update_email_verification": (("p_business_id", "uuid"), ("p_email", "varchar"), ("p_verification_data", "jsonb")),
    "get_businesses_for_enrichment": (("p_campaign_id", "uuid"), ("p_enrichment_type", "varchar"), ("p_limit", "int"),
                                      ("p_offset", "int")),
}
JSON_PARAMS = {"p_campaign_data", "p_zip_codes", "p_businesses", "p_metadata", "p_enrichments", "p_verification_data"}


class CampaignsError(Exception):
    """A function answered success=false (after any retries)."""

    def __init__(self, function: str, envelope: Mapping[str, Any]) -> None:
        super().__init__(f"{function}: {envelope.get('error_code')} {envelope.get('error')}")
        self.function = function
        self.envelope = dict(envelope)
        self.error_code = envelope.get("error_code")


class CampaignsClient:
    def __init__(self, conninfo_or_pool: Pool, retries: int = 3, backoff_base: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if retries < 0 or backoff_base < 0:
            raise ValueError("retries and backoff_base must be 0 or more")
        self._pool = as_pool(conninfo_or_pool)
        self.retries = retries
        self.backoff_base = backoff_base
        self._sleep = sleep
        self.retried = 0  # how many calls were repeated, for reports

    def call(self, function: str, **params: Any) -> Dict[str, Any]:
        """The function's envelope; retried while it says retry_recommended, at most `retries` times."""
        if function not in FUNCTIONS:
            raise ValueError(f"unknown function {function!r}")
        names = [n for n, _ in FUNCTIONS[function]]
        if set(params) != set(names):
            raise TypeError(f"{function} takes {', '.join(names)}")
        sql = "SELECT campaigns.%s(%s)" % (function, ", ".join(f"{n} => %s::{t}" for n, t in FUNCTIONS[function]))
        args = [Jsonb(params[n]) if n in JSON_PARAMS and params[n] is not None
                else str(params[n]) if isinstance(params[n], float) else params[n] for n in names]
        attempt = 0
        while True:
            with self._pool.connection() as conn:
                envelope = conn.execute(sql, args).fetchone()[0]
            if envelope.get("success") or not envelope.get("retry_recommended") or attempt >= self.retries:
                return envelope
            attempt += 1
            self.retried += 1
            self._sleep(self.backoff_base * 2 ** (attempt - 1))

    def must(self, function: str, **params: Any) -> Dict[str, Any]:
        """call, raising CampaignsError when the answer is a failure."""
        envelope = self.call(function, **params)
        if not envelope.get("success"):
            raise CampaignsError(function, envelope)
        return envelope


def money(value: Any) -> decimal.Decimal:
    return decimal.Decimal(str(value))

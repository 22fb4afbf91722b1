"""Deterministic stand-ins for Google Maps, Facebook, LinkedIn and Bouncer (same seed, same answers).

Failures: a transient one (an HTTP 503) on some first attempts, which a retry gets past; and ZIP
codes starting with 009, which Google Maps rejects on every attempt (the job is dead-lettered).
Prices are exact decimals, as the ledger keeps them.
"""
from __future__ import annotations

import hashlib
import random
from decimal import Decimal
from typing import Any, Dict, List

KEYWORDS = ["dentist", "plumber", "bakery", "florist", "gym", "lawyer"]
MAPS_REQUEST = Decimal("0.005")
MAPS_PER_RESULT = Decimal("0.002")
FACEBOOK_PER_LOOKUP = Decimal("0.001")
LINKEDIN_PER_LOOKUP = Decimal("0.0015")
BOUNCER_PER_EMAIL = Decimal("0.008")


class TransientAPIError(Exception):
    """The API failed this time (503); the same call later succeeds."""


class PermanentAPIError(Exception):
    """The API refuses this request on every attempt."""


class FakeAPI:
    def __init__(self, seed: int = 4, transient_rate: float = 0.1) -> None:
        self.seed = seed
        self.transient_rate = transient_rate

    def _rng(self, *parts: Any) -> random.Random:
        digest = hashlib.sha256(":".join(map(str, (self.seed,) + parts)).encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def _maybe_fail(self, what: str, key: str, attempt: int, per_item: bool = False) -> None:
        # Per-item calls come 50 to a job: a lower rate keeps most jobs' first attempts whole.
        rate = self.transient_rate / 20 if per_item else self.transient_rate
        if attempt == 1 and self._rng("fail", what, key).random() < rate:
            raise TransientAPIError(f"{what}: 503 Service Unavailable for {key} (attempt {attempt})")

    def google_maps_search(self, keyword: str, zip_code: str, attempt: int) -> Dict[str, Any]:
        if zip_code.startswith("009"):
            raise PermanentAPIError(f"google_maps: INVALID_REQUEST: no such ZIP code {zip_code}")
        self._maybe_fail("google_maps", f"{keyword}:{zip_code}", attempt)
        rng = self._rng("maps", keyword, zip_code)
        businesses: List[Dict[str, Any]] = []
        for i in range(rng.randint(0, 14)):
            b: Dict[str, Any] = {
                "place_id": f"gm-{keyword}-{zip_code}-{i}",
                "name": f"{keyword.title()} {zip_code}-{i}",
                "address": f"{rng.randint(1, 999)} Main St, {zip_code}",
                "phone": f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                "category": keyword,
                "rating": round(rng.uniform(1, 5), 1),
                "reviews_count": rng.randint(0, 500),
            }
            if rng.random() < 0.5:
                b["website"] = f"https://{keyword}{zip_code}-{i}.example"
            if rng.random() < 0.3:
                b["email"] = f"info@{keyword}{zip_code}-{i}.example"
            businesses.append(b)
        return {"businesses": businesses, "cost": MAPS_REQUEST + MAPS_PER_RESULT * len(businesses)}

    def social_lookup(self, network: str, business: Dict[str, Any], attempt: int) -> Dict[str, Any]:
        self._maybe_fail(network, business["place_id"], attempt, per_item=True)
        rng = self._rng(network, business["place_id"])
        found = rng.random() < (0.6 if network == "facebook" else 0.4)
        result: Dict[str, Any] = {"business_id": business["id"], "status": "found" if found else "not_found"}
        if found:
            result["url"] = f"https://{network}.example/{business['place_id']}"
            result["data"] = {"followers": rng.randint(0, 5000)}
            if rng.random() < 0.3:
                result["email"] = f"contact@{network}-{business['place_id']}.example"
        return result

    def bouncer_verify(self, email: str, attempt: int) -> Dict[str, Any]:
        self._maybe_fail("bouncer", email, attempt, per_item=True)
        rng = self._rng("bouncer", email)
        x = rng.random()
        status = "deliverable" if x < 0.7 else "undeliverable" if x < 0.85 else "risky" if x < 0.95 else "unknown"
        return {"status": status, "score": rng.randint(0, 100), "reason": "simulated"}

"""A deterministic stand-in for the renderer (FFmpeg) and S3: what happens to a job depends only on
the seed and the job's title, so a test can tell in advance how every job ends.

  scenario "ok"             every step succeeds
  scenario "flaky_upload"   the S3 upload fails on attempt 1 (503 SlowDown), succeeds on attempt 2
  scenario "broken_upload"  the S3 upload fails on every attempt: the job fails with UPLOAD_FAILED
  scenario "missing_source" one element's source URL answers 404: the job fails with SOURCE_NOT_FOUND
"""
from __future__ import annotations

import hashlib
import random
from typing import Dict, List

BUCKET = "video-renders"
REGION = "us-east-1"
SOURCE_HOST = "https://media.example.com"


def scenario(seed: int, title: str) -> str:
    r = random.Random(f"{seed}:{title}:scenario").random()
    if r < 0.08:
        return "missing_source"
    if r < 0.13:
        return "broken_upload"
    if r < 0.33:
        return "flaky_upload"
    return "ok"


def plan_elements(seed: int, title: str) -> List[Dict]:
    """The elements of a job: 1 to 4 media, a missing one for the missing_source scenario."""
    rng = random.Random(f"{seed}:{title}:elements")
    kinds = ["video", "image", "audio"]
    elements = []
    for i in range(rng.randint(1, 4)):
        kind = kinds[rng.randrange(3)]
        ext = {"video": "mp4", "image": "png", "audio": "mp3"}[kind]
        elements.append({"type": kind, "source_url": f"{SOURCE_HOST}/{title.replace(' ', '-')}/{i}.{ext}",
                         "element_order": i, "track": 1 if kind == "audio" else 0,
                         "x_position": f"{rng.randint(0, 20)}%", "y_position": f"{rng.randint(0, 20)}%",
                         "width": f"{rng.randint(50, 100)}%", "height": f"{rng.randint(50, 100)}%",
                         "fit_mode": rng.choice(["contain", "cover"])})
    if scenario(seed, title) == "missing_source":
        elements[-1]["source_url"] = f"{SOURCE_HOST}/missing/{title.replace(' ', '-')}.mp4"
    return elements


class FakeRender:
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def _rng(self, *parts: object) -> random.Random:
        return random.Random(":".join(str(p) for p in (self.seed,) + parts))

    def download(self, url: str) -> Dict:
        """Fetches one source; raises SourceNotFound for a missing one."""
        if "/missing/" in url:
            raise SourceNotFound(f"GET {url}: 404 Not Found")
        size = self._rng("size", url).randint(200_000, 50_000_000)
        digest = hashlib.sha1(url.encode()).hexdigest()[:12]
        return {"local_path": f"/tmp/video-work/{digest}", "size": size}

    def render(self, title: str, step: str) -> Dict:
        rng = self._rng("render", title, step)
        return {"cpu_usage": round(rng.uniform(20, 380), 2), "memory_usage": rng.randint(100, 2000) * 1048576}

    def upload(self, title: str, attempt: int, width: int, height: int, duration: float) -> Dict:
        """Uploads the output; raises UploadFailed as the scenario says."""
        kind = scenario(self.seed, title)
        rng = self._rng("upload", title, attempt)
        took = rng.randint(80, 4000)
        if kind == "broken_upload" or (kind == "flaky_upload" and attempt == 1):
            raise UploadFailed("PUT s3://%s: 503 SlowDown" % BUCKET, took)
        size = int(width * height * duration * 0.9) + rng.randint(0, 100_000)
        return {"size": size, "duration_ms": took}


class SourceNotFound(Exception):
    pass


class UploadFailed(Exception):
    def __init__(self, message: str, duration_ms: int) -> None:
        super().__init__(message)
        self.duration_ms = duration_ms

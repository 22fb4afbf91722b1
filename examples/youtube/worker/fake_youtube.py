"""A deterministic stand-in for the YouTube Data API v3, seeded: same seed, same channels, videos and failures.

- Channels: `channels` of them, ids "UC" + 22 characters derived from the seed. One in 25 is gone: channels.list
  returns no item for it (the API's answer for a deleted or terminated channel), which the worker treats as 404.
- Videos: 5 to 25 per channel, in its uploads playlist, newest first, 50 per playlistItems.list page.
- Statistics grow with the simulated day (0, 1, 2, ...); one video in 40 is viral from day 2 on; one in 30 goes
  from public to private on day 2.
- Transient failures: a call fails (HTTP 503) when a hash of (seed, operation, arguments, attempt) falls under
  `failure_rate`, on attempts 1 and 2 only, so a job always gets through by its third attempt.
- search.list (100 units) returns up to 50 channels per page of one query.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Dict, List, Optional

COSTS = {"channels.list": 1, "videos.list": 1, "playlistItems.list": 1, "search.list": 100}
PAGE = 50


class TransientError(Exception):
    """HTTP 503 backendError: try again later."""


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def _id(n: int, *parts: object) -> str:
    raw = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return base64.urlsafe_b64encode(raw).decode()[:n]


class FakeYouTube:
    def __init__(self, seed: int = 1, channels: int = 200, failure_rate: float = 0.05) -> None:
        self.seed = seed
        self.failure_rate = failure_rate
        self.channel_ids = ["UC" + _id(22, seed, "channel", i) for i in range(channels)]
        self._index = {c: i for i, c in enumerate(self.channel_ids)}

    # ---- the world ---------------------------------------------------------------------------------

    def is_gone(self, channel_id: str) -> bool:
        return self._index.get(channel_id, 0) % 25 == 7 or channel_id not in self._index

    def video_ids(self, channel_id: str) -> List[str]:
        i = self._index[channel_id]
        n = 5 + _h(self.seed, "nvideos", i) % 21
        return [_id(11, self.seed, "video", i, k) for k in range(n)]

    def channel_of(self, video_id: str) -> Optional[str]:
        if not hasattr(self, "_owner"):
            self._owner = {v: c for c in self.channel_ids if not self.is_gone(c) for v in self.video_ids(c)}
        return self._owner.get(video_id)

    def privacy(self, video_id: str, day: int) -> str:
        return "private" if day >= 2 and _h(self.seed, "private", video_id) % 30 == 0 else "public"

    def is_viral(self, video_id: str) -> bool:
        return _h(self.seed, "viral", video_id) % 40 == 0

    def video_views(self, video_id: str, day: int, hour: int = 0) -> int:
        base = 1000 + _h(self.seed, "views", video_id) % 100000
        per_day = 200 + _h(self.seed, "growth", video_id) % 3000
        views = base + per_day * day + per_day * hour // 24
        if self.is_viral(video_id) and day >= 2:
            views += 120000 * (day - 1) + 8000 * hour
        return views

    # ---- the API -----------------------------------------------------------------------------------

    def _maybe_fail(self, op: str, key: str, attempt: int) -> None:
        if attempt <= 2 and _h(self.seed, "fail", op, key, attempt) % 10000 < self.failure_rate * 10000:
            raise TransientError(f"{op}: HTTP 503 backendError (simulated)")

    def channels_list(self, ids: List[str], day: int, attempt: int) -> Dict:
        self._maybe_fail("channels.list", ",".join(ids), attempt)
        items = []
        for c in ids:
            if self.is_gone(c):
                continue
            i = self._index[c]
            videos = self.video_ids(c)
            items.append({
                "kind": "youtube#channel", "etag": _id(27, self.seed, "etag", c, day), "id": c,
                "snippet": {"title": f"Channel {i}", "description": f"Videos about topic {i % 17}",
                            "customUrl": f"@channel{i}", "country": ["US", "GB", "DE", "JP", "BR"][i % 5],
                            "publishedAt": (dt.datetime(2015, 1, 1, tzinfo=dt.timezone.utc)
                                            + dt.timedelta(days=i)).strftime("%Y-%m-%dT%H:%M:%SZ")},
                "contentDetails": {"relatedPlaylists": {"uploads": "UU" + c[2:]}},
                "statistics": {"viewCount": str(sum(self.video_views(v, day) for v in videos)),
                               "subscriberCount": str(500 + _h(self.seed, "subs", c) % 90000 + 37 * day),
                               "hiddenSubscriberCount": False, "videoCount": str(len(videos))}})
        return {"kind": "youtube#channelListResponse", "items": items}

    def playlist_items_list(self, playlist_id: str, page_token: Optional[str], attempt: int) -> Dict:
        self._maybe_fail("playlistItems.list", f"{playlist_id}:{page_token}", attempt)
        videos = self.video_ids("UC" + playlist_id[2:])
        start = int(page_token or 0)
        page = videos[start:start + PAGE]
        nxt = str(start + PAGE) if start + PAGE < len(videos) else None
        return {"items": [{"contentDetails": {"videoId": v}} for v in page], "nextPageToken": nxt}

    def videos_list(self, ids: List[str], day: int, hour: int, attempt: int) -> Dict:
        self._maybe_fail("videos.list", ",".join(ids), attempt)
        items = []
        for v in ids:
            c = self.channel_of(v)
            if c is None:
                continue
            views = self.video_views(v, day, hour)
            items.append({
                "kind": "youtube#video", "etag": _id(27, self.seed, "vetag", v, day, hour), "id": v,
                "snippet": {"channelId": c, "title": f"Video {v}", "description": "simulated",
                            "publishedAt": "2023-06-01T12:00:00Z", "categoryId": str(10 + _h(v) % 20),
                            "tags": ["music", "simulated"]},
                "contentDetails": {"duration": f"PT{1 + _h(v, 'm') % 59}M{_h(v, 's') % 60}S"},
                "status": {"privacyStatus": self.privacy(v, day), "uploadStatus": "processed"},
                "statistics": {"viewCount": str(views), "likeCount": str(views // 25),
                               "commentCount": str(views // 400)}})
        return {"kind": "youtube#videoListResponse", "items": items}

    def search_list(self, query: str, page: int, attempt: int) -> Dict:
        self._maybe_fail("search.list", f"{query}:{page}", attempt)
        ids = self.channel_ids[page * PAGE:(page + 1) * PAGE]
        return {"items": [{"id": {"kind": "youtube#channel", "channelId": c}} for c in ids]}

"""A deterministic stand-in for the Spotify and Instagram APIs, read from fixture.json.

Faults come from the fixture: a track marked flaky fails its credits call on its first attempt (the
entity's attempts, counted by conveyor), one marked stall makes the worker of its first attempt hang past its visibility timeout, and the
producers marked enrichment_fails have no profile to be found.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple


class ApiError(Exception):
    pass


def normalize(name: str) -> str:
    """A producer's key: lower case, inner spaces collapsed."""
    return re.sub(r"\s+", " ", name.strip().lower())


class FakeSpotify:
    def __init__(self, path: str) -> None:
        with open(path) as f:
            self.data = json.load(f)
        self.page = self.data["album_page_size"]
        self.by_name = {a["name"].lower(): a for a in self.data["artists"]}
        self.by_id = {a["spotify_id"]: a for a in self.data["artists"]}
        self.albums = {al["spotify_id"]: al for a in self.data["artists"] for al in a["albums"]}
        self.tracks = {t["spotify_id"]: t for al in self.albums.values() for t in al["tracks"]}

    def search_artist(self, name: str) -> Optional[Dict[str, Any]]:
        return self.by_name.get(name.strip().lower())

    def search_genre(self, genre: str, min_popularity: int, limit: int) -> List[str]:
        hits = [a for a in self.data["artists"] if genre in a["genres"] and a["popularity"] >= min_popularity]
        return [a["name"] for a in sorted(hits, key=lambda a: -a["popularity"])[:limit]]

    def artist_albums(self, artist_spotify_id: str, offset: int) -> Tuple[List[Dict[str, Any]], bool]:
        albums = self.by_id[artist_spotify_id]["albums"]
        return albums[offset:offset + self.page], offset + self.page < len(albums)

    def album_tracks(self, album_spotify_id: str) -> List[Dict[str, Any]]:
        return self.albums[album_spotify_id]["tracks"]

    def track_credits(self, track_spotify_id: str, attempt: int) -> List[str]:
        t = self.tracks[track_spotify_id]
        if t["flaky"] and attempt == 1:
            raise ApiError(f"HTTP 503 from the credits of track {track_spotify_id}")
        return t["credits"]

    def stalls(self, track_spotify_id: str, attempt: int) -> bool:
        return self.tracks[track_spotify_id]["stall"] and attempt == 1

    def instagram_profile(self, name: str) -> Dict[str, Any]:
        p = self.data["producers"][name]
        if p["enrichment_fails"]:
            raise ApiError(f"no Instagram profile found for {name}")
        return p

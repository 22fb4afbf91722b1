#!/usr/bin/python3
"""Writes fixture.json, the simulated Spotify (and Instagram) the worker reads: artists with genres,
albums, tracks and their credits, and the faults mixed in. Seeded: the same file every run.

  python3 make_fixture.py > fixture.json
"""
import json
import random

rng = random.Random(16)
GENRES = ["french house", "synthpop", "hip hop"]
ARTISTS = ["Daft Punk", "Justice", "Air", "Cassius", "Phoenix", "Kavinsky", "Breakbot", "Sebastian",
           "Chromeo", "Metronomy", "Madlib", "J Dilla"]
PRODUCERS = ["Thomas Bangalter", "Guy-Manuel de Homem-Christo", "Pedro Winter", "Todd Edwards", "Nile Rodgers",
             "Gaspard Augé", "Xavier de Rosnay", "Philippe Zdar", "SebastiAn", "Irfane Khan-Acito",
             "Joseph Mount", "Otis Jackson Jr.", "James Yancey", "Oh No"]
WORDS = ["Night", "Light", "Digital", "Love", "One", "More", "Time", "Voyage", "Harder", "Better", "City",
         "Genesis", "Nightcall", "Disco", "Fever", "Gold", "Summer", "Motor", "Echo", "Signal"]

artists = []
for i, name in enumerate(ARTISTS):
    sid = f"sp_artist_{i:02d}"
    albums = []
    for a in range(rng.randint(1, 4)):
        asid = f"{sid}_al{a}"
        tracks = []
        for t in range(rng.randint(2, 4)):
            tname = " ".join(rng.sample(WORDS, 2))
            if t == 1 and rng.random() < 0.3:
                tname = tracks[0]["name"].upper() + "!"       # the same song twice (a normalized_tracks case)
            credits = rng.sample(PRODUCERS, rng.randint(1, 3))
            fault = rng.random()
            tracks.append({"spotify_id": f"{asid}_t{t}", "name": tname, "duration_ms": rng.randint(150000, 420000),
                           "popularity": rng.randint(20, 90), "credits": credits,
                           "flaky": fault < 0.15,            # the credits call fails on the first read
                           "stall": fault > 0.94})           # the first worker to read it hangs past its timeout
        albums.append({"spotify_id": asid, "name": f"{name} {' '.join(rng.sample(WORDS, 1))} {a}",
                       "release_date": rng.choice([f"{2000 + a}", f"{2000 + a}-0{a + 1}", f"{2000 + a}-0{a + 1}-1{a}"]),
                       "tracks": tracks})
    artists.append({"spotify_id": sid, "name": name, "followers": rng.randint(1000, 900000),
                    "popularity": rng.randint(30, 95), "genres": rng.sample(GENRES, rng.randint(1, 2)), "albums": albums})

producers = {p: {"instagram_handle": "@" + p.lower().replace(" ", "").replace(".", "").replace("-", ""),
                 "instagram_bio": f"{p}, producer", "enrichment_fails": p in ("Todd Edwards", "Oh No", "Pedro Winter")}
             for p in PRODUCERS}
print(json.dumps({"artists": artists, "producers": producers, "album_page_size": 2,
                  "named": ["Daft Punk", "Justice", "Madlib", "Nobody Known"],
                  "genre_search": {"genre": "french house", "min_popularity": 40, "limit": 10}}, indent=1))

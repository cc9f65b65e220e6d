#!/usr/bin/env python3
"""The course lab's stock client, re-created: sends every sample song for separation in the lab's
exact format (no `model` field, a callback), then asks for the queue the way the lab does — a GET
with a JSON `null` body.

Usage: REST=host:port samples/sample-requests.py     (default REST=localhost:5000)
Songs: samples/songs/*.mp3, made by samples/make-songs.sh. Exits 1 if any request fails.
A server that requires API keys (STEMSEP_AUTH=keys, as the Kubernetes overlays set) gets the key in
API_KEY as an X-API-Key header; without API_KEY the requests are exactly the lab's.
"""
import base64
import glob
import json
import os
import sys

import requests

REST = os.getenv("REST") or "localhost:5000"
API_KEY = os.getenv("API_KEY")
SONGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "songs")


def mkReq(reqmethod, endpoint, data):
    """Sends `data` as a JSON body (the lab sends one even on GET), prints the reply; True if 200."""
    url = f"http://{REST}/{endpoint}"
    headers = {"Content-type": "application/json"}
    if API_KEY:
        headers["X-API-Key"] = API_KEY
    try:
        response = reqmethod(url, data=json.dumps(data), headers=headers)
    except requests.RequestException as e:
        print(f"request to {url} failed: {e}")
        return False
    if response.status_code == 200:
        print(json.dumps(response.json(), indent=4, sort_keys=True))
        return True
    print(f"response code is {response.status_code}, raw response is {response.text}")
    return False


def main(short):
    """Separates the short clips (`short-*.mp3`) or else the full songs; returns the exit code."""
    mp3s = [
        mp3
        for mp3 in sorted(glob.glob(os.path.join(SONGS, "*.mp3")))
        if os.path.basename(mp3).startswith("short-") == short
    ]
    if not mp3s:
        print(f"no songs in {SONGS}: run samples/make-songs.sh first", file=sys.stderr)
        return 1
    ok = True
    for mp3 in mp3s:
        name = os.path.basename(mp3)
        print(f"Separate {name}")
        with open(mp3, "rb") as f:
            encoded = base64.b64encode(f.read()).decode("utf-8")
        ok &= mkReq(
            requests.post,
            "apiv1/separate",
            data={
                "mp3": encoded,
                "callback": {
                    "url": "http://localhost:5000",
                    "data": {"mp3": name, "data": "to be returned"},
                },
            },
        )
        print("Queue from server is")
        ok &= mkReq(requests.get, "apiv1/queue", data=None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(short=False))

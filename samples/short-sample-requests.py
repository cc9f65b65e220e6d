#!/usr/bin/env python3
"""The lab's short client: like sample-requests.py, but sends only the ~20 s clips
samples/songs/short-*.mp3, so a whole round trip takes seconds, not minutes.

Usage: REST=host:port [API_KEY=key] samples/short-sample-requests.py     (default REST=localhost:5000)
"""
import os
import runpy
import sys

client = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample-requests.py"))
sys.exit(client["main"](short=True))

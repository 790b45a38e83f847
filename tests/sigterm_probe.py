"""Not collected on its own: ``tests/test_sigterm.py`` runs this file in a pytest of its own. It
starts what the tests start (Label Studio, PostgreSQL, Redis, a browser) the way they start them,
writes their process ids to ``$ACTIVESEG_PROBE_OUT`` and waits to be stopped from outside."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from browser import Chromium
from services import PostgresServer, RedisServer

from activeseg.fsutil import atomic_write_text
from activeseg.lsserver import LabelStudioServer


def test_wait_to_be_stopped(
    label_studio: LabelStudioServer, postgres: PostgresServer, redis: RedisServer, tmp_path: Path
) -> None:
    browser = Chromium(tmp_path / "chromedriver.log")
    with browser:
        postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
        pids = {
            "label_studio": [label_studio.running_pid()],
            "postgres": [postmaster],
            "redis": [redis.process.pid],
            "browser": sorted(browser.processes()),
        }
        atomic_write_text(os.environ["ACTIVESEG_PROBE_OUT"], json.dumps(pids))
        time.sleep(600)

"""A test run stopped from outside (SIGTERM to pytest, as a timeout sends) stops the servers and
browsers its fixtures started, as a normal end does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import CHROMEDRIVER, CHROMIUM
from services import require_program

TESTS = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


@pytest.mark.slow
@pytest.mark.labelstudio
def test_sigterm_stops_every_service_the_fixtures_started(tmp_path: Path) -> None:
    require_program("chromium", str(CHROMIUM), package="chromium")
    require_program("chromedriver", str(CHROMEDRIVER), package="chromium-driver")
    require_program("redis-server", package="redis-server")
    require_program("initdb", "/usr/lib/postgresql/*/bin/initdb", package="postgresql")
    out = tmp_path / "pids.json"
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(TESTS / "sigterm_probe.py"), "-q", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'probe'}"],
        cwd=TESTS.parent, env=dict(os.environ, ACTIVESEG_PROBE_OUT=str(out)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not out.exists():
            assert run.poll() is None, f"the probe ended early:\n{run.stdout.read()}"
            assert time.monotonic() < deadline, "the probe did not start its services in 300 s"
            time.sleep(0.5)
        pids = json.loads(out.read_text())
        assert all(pids.values()) and all(_alive(p) for ps in pids.values() for p in ps), pids
        run.send_signal(signal.SIGTERM)  # to pytest alone, not to its process group
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert "stopped by signal 15" in output, output
    deadline = time.monotonic() + 20
    while any(_alive(p) for ps in pids.values() for p in ps) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = {name: [p for p in ps if _alive(p)] for name, ps in pids.items()}
    for pid in (p for ps in left.values() for p in ps):  # a failing run must not leak them either
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not any(left.values()), f"still running after SIGTERM: {left}\n{output}"

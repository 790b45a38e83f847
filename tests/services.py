"""Real PostgreSQL and Redis servers on 127.0.0.1 for the tests (Debian's packages, no Docker).

Each server lives in a throwaway folder, listens on a free port with a password, and is stopped
by the fixture that started it. Where a program is missing the test is skipped, except under
CI (``CI`` set, as ``.ci/run`` does), where a missing program is a failure: CI must not turn
green by skipping the tests it exists to run.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from activeseg.lsserver import free_port


def require_program(name: str, *candidates: str, package: str) -> str:
    """The path of ``name`` (on PATH or at one of ``candidates``); skip, or fail under CI, without it."""
    found = shutil.which(name) or next((p for c in candidates for p in sorted(glob.glob(c))), None)
    if found:
        return found
    message = f"{name} is not installed (Debian package {package}; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = 600.0,
    every: float = 0.5,
    proc: subprocess.Popen | None = None,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check()`` until it returns something true, and return that; fail if ``proc`` (the
    program being waited for) exits first or ``timeout`` seconds pass, adding ``explain()`` (what
    the failure report should show, e.g. the log of the awaited job) to the message."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        failure = None
        if proc is not None and proc.poll() is not None:
            failure = f"{what}: the process exited with status {proc.returncode}"
        elif time.monotonic() > deadline:
            failure = f"timed out waiting for {what}"
        if failure:
            raise AssertionError(f"{failure}\n{explain()}" if explain else failure)
        time.sleep(every)


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1, nothing saved to disk, optional password."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        binary = require_program("redis-server", package="redis-server")
        self.port = free_port()
        self.password = password
        auth = ["--requirepass", password] if password else []
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), *auth],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        from redis import Redis

        client = Redis(port=self.port, password=password)

        def pings() -> bool:
            try:
                return bool(client.ping())
            except Exception:
                return False

        try:
            wait_for("redis-server", pings, timeout=20, every=0.1, proc=self.process)
        except Exception:
            self.stop()
            raise

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class PostgresServer:
    """A new PostgreSQL cluster (Debian's ``postgresql`` binaries) with one database and user.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` system
    user and its programs run through ``runuser``. Connections over TCP need the password.
    """

    def __init__(self, database: str = "labelstudio", user: str = "labelstudio") -> None:
        initdb = require_program("initdb", "/usr/lib/postgresql/*/bin/initdb", package="postgresql")
        self._bin = Path(initdb).resolve().parent
        self.database, self.user = database, user
        self.password = secrets.token_urlsafe(16)
        self.port = free_port()
        # not under pytest's tmp_path: that is private to root, and the server may run as postgres
        self.root = Path(tempfile.mkdtemp(prefix="activeseg-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_owner:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", user, f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
            "--auth-local=peer", "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        pwfile.unlink()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start"
        )
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", user, database, password=True)
        self.query("SELECT 1")  # the password works over TCP

    def _run(self, program: str, *args: str, password: bool = False) -> str:
        env = dict(os.environ, PGPASSWORD=self.password) if password else None
        done = subprocess.run(
            [*self._as_owner, str(self._bin / program), *args], capture_output=True, text=True, env=env
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def query(self, sql: str) -> str:
        """What ``psql`` prints for ``sql`` (unaligned, no headers), connected as the test's user."""
        address = ["-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", self.database]
        return self._run("psql", *address, "-tAc", sql, password=True).strip()

    def label_studio_env(self) -> dict[str, str]:
        """The variables that put Label Studio 1.23.2 on this database (as docker-compose.yml does)."""
        return {
            "DJANGO_DB": "default",
            "POSTGRE_NAME": self.database,
            "POSTGRE_USER": self.user,
            "POSTGRE_PASSWORD": self.password,
            "POSTGRE_HOST": "127.0.0.1",
            "POSTGRE_PORT": str(self.port),
        }

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

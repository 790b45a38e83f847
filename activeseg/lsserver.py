"""Start and stop a local Label Studio 1.23.2 server (for the demo and the test suite).

Label Studio lives in its own virtual environment (``.venv-ls``, made by ``scripts/setup.sh``)
because it brings Django 5, numpy 2.2 and pandas 3, which must not meet torch and nnU-Net.
The server binds 127.0.0.1 only. Its admin login and legacy API token are random, created at
the first start of a data dir, and kept in ``<data dir>/activeseg-login.json`` (mode 0600).

Facts this relies on (``../shared/docs/labelstudio.md``): the first start migrates an empty
SQLite database (40-60 s on 2 cores); later starts take about 7 s; legacy tokens only work when
enabled at the first start; a busy port makes Label Studio silently move to the next one, so
after start-up we check that *our* token works on *our* port.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from activeseg.fsutil import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
LS_VERSION = "1.23.2"
LOGIN_FILE = "activeseg-login.json"
# Label Studio 1.23.2's default SSRF block list (core/utils/io.py) without 127.0.0.0/8 and ::1.
BANNED_SUBNETS_EXCEPT_LOOPBACK = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "233.252.0.0/24", "240.0.0.0/4",
    "255.255.255.255/32", "::/128", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96",
    "64:ff9b:1::/48", "100::/64", "2001:0000::/32", "2001:20::/28", "2001:db8::/32", "2002::/16",
    "fc00::/7", "fe80::/10", "ff00::/8",
)  # fmt: skip


class LabelStudioServerError(RuntimeError):
    """The local Label Studio server could not be started or stopped."""


def default_venv() -> Path:
    """``$ACTIVESEG_LS_VENV`` or the repository's ``.venv-ls``."""
    return Path(os.environ.get("ACTIVESEG_LS_VENV", REPO_ROOT / ".venv-ls"))


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Login:
    """Admin e-mail, password and legacy API token of a data dir."""

    username: str
    password: str
    token: str

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Login:
        path = data_dir / LOGIN_FILE
        if path.is_file():
            return cls(**json.loads(path.read_text()))
        login = cls(
            username="admin@activeseg.local",
            password=secrets.token_urlsafe(12),
            token=secrets.token_hex(20),
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(login.__dict__))
        path.chmod(0o600)
        return login


class LabelStudioServer:
    """One Label Studio process on 127.0.0.1 with its own data dir.

    ``files_root`` is the document root for ``/data/local-files/?d=<path>`` URLs: images under
    it can be attached to tasks through a Local Storage. ``extra_env`` adds to or overrides the
    server's environment, e.g. ``DJANGO_DB=default`` and ``POSTGRE_*`` for PostgreSQL instead of
    the data dir's SQLite file.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        files_root: str | os.PathLike[str] | None = None,
        port: int | None = None,
        venv: str | os.PathLike[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.files_root = Path(files_root or self.data_dir / "files").resolve()
        self.port = port or free_port()
        self.venv = Path(venv or default_venv())
        self.extra_env = dict(extra_env or {})
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir / "labelstudio.log"
        self.pid_path = self.data_dir / "labelstudio.pid"
        self.url_path = self.data_dir / "labelstudio.url"
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @functools.cached_property
    def login(self) -> Login:
        """The data dir's admin login, created on first use."""
        return Login.load_or_create(self.data_dir)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "LABEL_STUDIO_USERNAME": self.login.username,
                "LABEL_STUDIO_PASSWORD": self.login.password,
                "LABEL_STUDIO_USER_TOKEN": self.login.token,
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                # no PyPI version check, no Sentry, no telemetry: nothing leaves the machine
                "LATEST_VERSION_CHECK": "false",
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "COLLECT_ANALYTICS": "false",
                # ML backends and webhooks may live on loopback (refused or silently dropped
                # otherwise); every other reserved range stays blocked
                "SSRF_PROTECTION_ENABLED": "true",
                "ML_BLOCK_LOCAL_IP": "true",
                "USE_DEFAULT_BANNED_SUBNETS": "false",
                "USER_ADDITIONAL_BANNED_SUBNETS": ",".join(BANNED_SUBNETS_EXCEPT_LOOPBACK),
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.files_root),
                "LABEL_STUDIO_HOST": self.url,
            }
        )
        env.update(self.extra_env)
        return env

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _token_accepted(self) -> bool:
        r = requests.get(
            f"{self.url}/api/current-user/whoami",
            headers={"Authorization": f"Token {self.login.token}"},
            timeout=5,
        )
        return r.status_code == 200 and r.json().get("email") == self.login.username

    def start(self, timeout: float = 240.0, progress: bool = False) -> None:
        """Start the server and wait until it answers with our token; raise on any failure.

        With ``progress`` a line on stderr counts the seconds, since a first start spends most
        of a minute on database migrations.
        """
        exe = self.venv / "bin" / "label-studio"
        if not exe.exists():
            raise LabelStudioServerError(
                f"no Label Studio in {self.venv}; run scripts/setup.sh (or set ACTIVESEG_LS_VENV)"
            )
        if port_in_use(self.port):
            raise LabelStudioServerError(
                f"port {self.port} on 127.0.0.1 is already in use; pick another port"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.files_root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        log = self.log_path.open("ab")
        self._process = process = subprocess.Popen(
            [
                str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1",
                "--port", str(self.port), "--data-dir", str(self.data_dir),
                "--enable-legacy-api-token",
            ],
            env=self._env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        atomic_write_text(self.pid_path, str(self._process.pid))
        with tqdm(
            desc="starting Label Studio", bar_format="{desc}: {elapsed}", disable=not progress
        ) as ticker:
            self._wait_healthy(process, started + timeout, ticker)
        if not self._token_accepted():
            self.stop()
            raise LabelStudioServerError(
                f"the server on {self.url} does not accept this data dir's token: another "
                f"Label Studio may hold the port, or {self.data_dir} was created without "
                "legacy tokens"
            )
        self.startup_seconds = time.monotonic() - started
        atomic_write_text(self.url_path, self.url)

    def _wait_healthy(self, process: subprocess.Popen[bytes], deadline: float, ticker: tqdm) -> None:
        while not self._healthy():
            ticker.update(0)  # refreshes the elapsed time
            code = process.poll()
            if code is not None:
                self._forget()
                raise LabelStudioServerError(
                    f"Label Studio exited during start-up (code {code}); see {self.log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise LabelStudioServerError(
                    f"no answer from {self.url}/health/ in time; stopped it; see {self.log_path}"
                )
            time.sleep(0.5)

    def _forget(self) -> None:
        self.pid_path.unlink(missing_ok=True)
        self.url_path.unlink(missing_ok=True)
        self._process = None

    def running_pid(self) -> int | None:
        """PID of this data dir's server if it is alive, else None (also across processes)."""
        try:
            pid = int(self.pid_path.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def running_url(self) -> str | None:
        """URL of this data dir's server if one is running (started by any process), else None."""
        if self.running_pid() is None or not self.url_path.is_file():
            return None
        return self.url_path.read_text().strip()

    def stop(self, grace: float = 30.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``grace`` seconds)."""
        pid = self._process.pid if self._process else self.running_pid()
        if pid is None:
            self._forget()
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            self._forget()
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.2)
        else:
            os.killpg(pid, signal.SIGKILL)
            if self._process is not None:
                self._process.wait()
        self._forget()


def ensure_template(template: Path) -> Path:
    """Make ``template`` a migrated, stopped Label Studio data dir unless it already is one.

    The first start of Label Studio spends most of a minute on database migrations; a copy of a
    migrated data dir starts in seconds. Copies carry the template's secret key and login, which
    is fine for throwaway test servers and nothing else.
    """
    if (template / "label_studio.sqlite3").is_file():
        return template
    shutil.rmtree(template, ignore_errors=True)  # a half-made template from an interrupted run
    staging = template.with_name(f"{template.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    server = LabelStudioServer(staging)
    server.start()
    server.stop()
    (staging / "labelstudio.log").unlink(missing_ok=True)
    staging.replace(template)
    return template


def prepare_from_template(data_dir: Path, template: Path) -> None:
    """Fill ``data_dir`` with a copy of the migrated ``template`` (made first if needed)."""
    shutil.copytree(ensure_template(template), data_dir, dirs_exist_ok=True)

"""Local Label Studio control: refusals before start-up, login handling, and Personal Access Tokens."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LOGIN_FILE, LabelStudioServer, LabelStudioServerError, Login


def test_busy_port_is_refused_before_starting(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = LabelStudioServer(tmp_path / "ls", port=port)
        with pytest.raises(LabelStudioServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            server.start()
    assert server.running_pid() is None and not server.pid_path.exists()


def test_missing_label_studio_environment(tmp_path: Path) -> None:
    server = LabelStudioServer(tmp_path / "ls", venv=tmp_path / "no-venv")
    with pytest.raises(LabelStudioServerError, match=r"run scripts/setup\.sh"):
        server.start()


def test_login_is_random_private_and_stable(tmp_path: Path) -> None:
    a = Login.load_or_create(tmp_path / "a")
    b = Login.load_or_create(tmp_path / "b")
    assert a.password != b.password and a.token != b.token and len(a.token) > 5
    assert Login.load_or_create(tmp_path / "a") == a
    assert stat.S_IMODE((tmp_path / "a" / LOGIN_FILE).stat().st_mode) == 0o600


def test_status_of_a_never_started_server_writes_nothing(tmp_path: Path) -> None:
    server = LabelStudioServer(tmp_path / "ls")
    assert server.running_url() is None
    server.stop()  # nothing to stop: no error
    assert not (tmp_path / "ls").exists()


@pytest.mark.slow
@pytest.mark.labelstudio
def test_personal_access_token_works(label_studio: LabelStudioServer, ls_client: LabelStudioClient) -> None:
    """Production keys are PATs (JWT refresh tokens); the SDK exchanges them for access tokens."""
    pat = ls_client.sdk.tokens.create().token
    assert pat.count(".") == 2  # a JWT, not a legacy token
    assert LabelStudioClient(label_studio.url, pat).whoami()["email"] == label_studio.login.username

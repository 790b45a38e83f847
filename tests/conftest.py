"""Shared fixtures: data locations and one real Label Studio server per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from activeseg.datasets import BUNDLED_SAMPLE
from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LS_VERSION, LabelStudioServer, ensure_template, prepare_from_template

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ACTIVESEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The 24-image CC0 sample bundled in the repository."""
    return BUNDLED_SAMPLE


@pytest.fixture(scope="session")
def dsb_train() -> Path:
    """The full DSB2018 fluorescence training folder; tests needing it skip where it is absent."""
    path = SHARED_DATA / "dsb2018_stage1_train_fluo"
    if not path.is_dir():
        pytest.skip(f"{path} not present (set ACTIVESEG_SHARED_DATA)")
    return path


def ls_template_dir() -> Path:
    """A migrated Label Studio data dir reused between runs (first start: ~25-60 s of migrations)."""
    default = Path.home() / ".cache" / "activeseg" / f"ls-template-{LS_VERSION}"
    return Path(os.environ.get("ACTIVESEG_LS_TEMPLATE", default))


@pytest.fixture(scope="session")
def ls_template() -> Path:
    return ensure_template(ls_template_dir())


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory, ls_template: Path) -> Iterator[LabelStudioServer]:
    """A real Label Studio 1.23.2 on a free port of 127.0.0.1, stopped at the end of the session."""
    data_dir = tmp_path_factory.mktemp("labelstudio") / "data"
    prepare_from_template(data_dir, ls_template)
    server = LabelStudioServer(data_dir, files_root=data_dir.parent / "files")
    server.start()
    print(f"\nLabel Studio up on {server.url} after {server.startup_seconds:.1f} s")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ls_client(label_studio: LabelStudioServer) -> LabelStudioClient:
    return LabelStudioClient(label_studio.url, label_studio.login.token)


class Recorder:
    """A tiny HTTP server on 127.0.0.1 that records what it is sent and answers like an ML backend."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str, dict]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                recorder.requests.append(("GET", self.path, {}))
                self._answer({"status": "UP"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                recorder.requests.append(("POST", self.path, body))
                self._answer({"model_version": "recorder-v1"} if self.path == "/setup" else {})

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()


class ThreadedServer:
    """A WSGI app served on a free port of 127.0.0.1 from a background thread."""

    def __init__(self, app) -> None:
        import threading

        from werkzeug.serving import make_server

        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()

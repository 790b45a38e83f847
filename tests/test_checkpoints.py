"""`activeseg models fetch`: download and checksum logic against a local HTTP server."""

from __future__ import annotations

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ml_backend import checkpoints
from ml_backend.checkpoints import Checkpoint, CheckpointError, fetch


@pytest.fixture
def mirror(tmp_path: Path):
    """A local HTTP server on 127.0.0.1 serving files from a folder, counting requests."""
    served = tmp_path / "served"
    served.mkdir()
    hits: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served, hits
    server.shutdown()
    server.server_close()


def register(
    monkeypatch: pytest.MonkeyPatch, name: str, file: str, content: bytes, sha: str | None = None
) -> None:
    ckpt = Checkpoint(file, sha or hashlib.sha256(content).hexdigest(), len(content), "vit_b")
    monkeypatch.setitem(checkpoints.KNOWN, name, ckpt)


def test_fetch_verifies_and_skips_a_verified_copy(
    mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served, hits = mirror
    content = b"weights" * 100_000
    (served / "w.pth").write_bytes(content)
    register(monkeypatch, "test", "w.pth", content)
    dest = tmp_path / "ckpt"
    path = fetch("test", dest, base_url=url, progress=False)
    assert path == dest / "w.pth" and path.read_bytes() == content
    assert fetch("test", dest, base_url=url, progress=False) == path
    assert hits == ["/w.pth"]  # the second call found a verified copy and downloaded nothing


def test_checksum_mismatch_leaves_nothing(mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, served, _ = mirror
    (served / "w.pth").write_bytes(b"tampered")
    register(monkeypatch, "test", "w.pth", b"tampered", sha="0" * 64)
    with pytest.raises(CheckpointError, match="does not match"):
        fetch("test", tmp_path / "ckpt", base_url=url, progress=False)
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_missing_file_and_unknown_name(mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _, _ = mirror
    register(monkeypatch, "test", "absent.pth", b"x")
    with pytest.raises(CheckpointError, match="HTTP 404"):
        fetch("test", tmp_path, base_url=url, progress=False)
    with pytest.raises(CheckpointError, match="unknown checkpoint"):
        fetch("sam_vit_z", tmp_path)


def test_known_official_checkpoints() -> None:
    assert set(checkpoints.KNOWN) == {"sam_vit_b", "sam_vit_l", "sam_vit_h"}
    assert all(len(c.sha256) == 64 for c in checkpoints.KNOWN.values())

"""`activeseg models fetch`: download and checksum logic against a local HTTP server."""

from __future__ import annotations

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import xxhash

from activeseg import checkpoints
from activeseg.checkpoints import Checkpoint, CheckpointError, digest_of, fetch
from activeseg.labellers.sam_models import build_tiny_sam, read_sam_state


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
    monkeypatch: pytest.MonkeyPatch, name: str, file: str, content: bytes, digest: str | None = None
) -> None:
    digest = digest or f"sha256:{hashlib.sha256(content).hexdigest()}"
    ckpt = Checkpoint(file, digest, len(content), "vit_b", f"http://127.0.0.1:9/{file}", "test")
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
    register(monkeypatch, "test", "w.pth", b"tampered", digest="sha256:" + "0" * 64)
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


def test_known_checkpoints() -> None:
    """Meta's SAM with SHA-256, micro-sam's light-microscopy generalists with xxh128 (its registry's)."""
    assert set(checkpoints.KNOWN) == {
        "sam_vit_b",
        "sam_vit_l",
        "sam_vit_h",
        "vit_b_lm",
        "vit_l_lm",
        "vit_t_lm",
    }
    for name, ckpt in checkpoints.KNOWN.items():
        algorithm, _, value = ckpt.digest.partition(":")
        assert (algorithm, len(value)) == (("xxh128", 32) if name.endswith("_lm") else ("sha256", 64))
        assert ckpt.url.startswith("https://") and ckpt.sam_type == name.removeprefix("sam_")[:5]
    assert checkpoints.KNOWN["vit_b_lm"].url.endswith("/diplomatic-bug/1.2/files/vit_b.pt")
    assert checkpoints.KNOWN["vit_t_lm"].url.endswith("/faithful-chicken/1.1/files/vit_t.pt")
    with pytest.raises(ValueError, match="digest must be one of"):
        Checkpoint("x.pt", "md5:abc", None, "vit_b", "https://example.org/x.pt", "test")


def test_a_micro_sam_checkpoint_is_fetched_with_its_xxh128_and_loads_into_sam(
    mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny random SAM written as micro-sam writes its training checkpoints (``model_state``, keys
    prefixed ``sam.``), served by a local mirror under the known name's file, checked by xxh128."""
    url, served, hits = mirror
    sam = build_tiny_sam(seed=0)
    state = {"model_state": {f"sam.{k}": v for k, v in sam.state_dict().items()}, "iteration": 7}
    torch.save(state, served / "vit_b_lm.pt")
    content = (served / "vit_b_lm.pt").read_bytes()
    register(monkeypatch, "vit_b_lm", "vit_b_lm.pt", content, f"xxh128:{xxhash.xxh128(content).hexdigest()}")
    monkeypatch.setenv("ACTIVESEG_CHECKPOINT_MIRROR", url)
    path = fetch("vit_b_lm", tmp_path / "ckpt", progress=False)
    assert hits == ["/vit_b_lm.pt"] and digest_of(path, "xxh128") == xxhash.xxh128(content).hexdigest()
    loaded = build_tiny_sam(seed=1)
    loaded.load_state_dict(read_sam_state(path))
    assert all(torch.equal(v, sam.state_dict()[k]) for k, v in loaded.state_dict().items())

    register(monkeypatch, "vit_b_lm", "vit_b_lm.pt", content, "xxh128:" + "0" * 32)
    with pytest.raises(CheckpointError, match=r"xxh128 .* does not match"):
        fetch("vit_b_lm", tmp_path / "other", progress=False)
    assert list((tmp_path / "other").iterdir()) == []

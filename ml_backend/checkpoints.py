"""``activeseg models fetch``: download known SAM checkpoints, checked against their SHA-256.

For labs with internet access; offline, give a checkpoint path or use LiteMedSAM. A lab mirror
can stand in for the official host with ``ACTIVESEG_CHECKPOINT_MIRROR`` (same file names).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from activeseg.fsutil import atomic_path

OFFICIAL = "https://dl.fbaipublicfiles.com/segment_anything"


@dataclass(frozen=True)
class Checkpoint:
    file: str
    sha256: str
    size: int
    sam_type: str


KNOWN: dict[str, Checkpoint] = {
    "sam_vit_b": Checkpoint(
        "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        375_042_383,
        "vit_b",
    ),
    "sam_vit_l": Checkpoint(
        "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        1_249_524_607,
        "vit_l",
    ),
    "sam_vit_h": Checkpoint(
        "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        2_564_550_879,
        "vit_h",
    ),
}


class CheckpointError(RuntimeError):
    """A download that failed or did not match its checksum; nothing is left behind."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, dest: Path, base_url: str | None = None, progress: bool = True) -> Path:
    """Download checkpoint ``name`` into ``dest`` (skipped when a verified copy is there)."""
    if name not in KNOWN:
        raise CheckpointError(f"unknown checkpoint {name!r}; known: {', '.join(KNOWN)}")
    ckpt = KNOWN[name]
    target = dest / ckpt.file
    if target.is_file() and sha256_of(target) == ckpt.sha256:
        return target
    base = (base_url or os.environ.get("ACTIVESEG_CHECKPOINT_MIRROR") or OFFICIAL).rstrip("/")
    url = f"{base}/{ckpt.file}"
    digest = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=60) as r, atomic_path(target) as tmp:
            if r.status_code != 200:
                raise CheckpointError(f"{url} answered HTTP {r.status_code}")
            with tmp.open("wb") as out, tqdm(total=ckpt.size, unit="B", unit_scale=True, desc=ckpt.file,
                                             disable=not progress) as bar:  # fmt: skip
                for chunk in r.iter_content(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if digest.hexdigest() != ckpt.sha256:
                raise CheckpointError(
                    f"{url}: SHA-256 {digest.hexdigest()[:16]}... does not match the known "
                    f"{ckpt.sha256[:16]}...; the file was discarded"
                )
    except requests.RequestException as exc:
        raise CheckpointError(f"cannot download {url}: {type(exc).__name__}") from None
    return target

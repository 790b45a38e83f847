"""``activeseg models fetch``: download known SAM-architecture checkpoints, checked against the
digest their publisher gives (SHA-256 for Meta's SAM, xxh128 for micro-sam's registry).

For labs with internet access; offline, give a checkpoint path or use LiteMedSAM. A lab mirror
can stand in for every publisher with ``ACTIVESEG_CHECKPOINT_MIRROR`` (files named as ``file``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from activeseg.fsutil import atomic_path

OFFICIAL = "https://dl.fbaipublicfiles.com/segment_anything"
#: micro-sam's model registry (``micro_sam.util.models()``, release 1.8.10): bioimage.io's files
MICRO_SAM = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io"
ALGORITHMS = ("sha256", "xxh128")


@dataclass(frozen=True)
class Checkpoint:
    file: str  # the name it is saved under, and its name on a mirror
    digest: str  # "<algorithm>:<hex>", as its publisher gives it
    size: int | None  # bytes, for the progress bar (None: not published)
    sam_type: str  # the segment_anything architecture it loads into
    url: str  # where its publisher serves it
    source: str  # who trained it, for `models list`

    def __post_init__(self) -> None:
        algorithm, _, value = self.digest.partition(":")
        if algorithm not in ALGORITHMS or not value:
            raise ValueError(f"{self.file}: digest must be one of {ALGORITHMS} as 'algorithm:hex'")


def _sam(name: str, sha256: str, size: int, sam_type: str) -> Checkpoint:
    return Checkpoint(name, f"sha256:{sha256}", size, sam_type, f"{OFFICIAL}/{name}", "Meta AI, SAM")


def _micro_sam(name: str, path: str, xxh128: str, sam_type: str) -> Checkpoint:
    source = "micro-sam, light-microscopy generalist"
    return Checkpoint(f"{name}.pt", f"xxh128:{xxh128}", None, sam_type, f"{MICRO_SAM}/{path}", source)


KNOWN: dict[str, Checkpoint] = {
    "sam_vit_b": _sam(
        "sam_vit_b_01ec64.pth", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        375_042_383, "vit_b",
    ),
    "sam_vit_l": _sam(
        "sam_vit_l_0b3195.pth", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        1_249_524_607, "vit_l",
    ),
    "sam_vit_h": _sam(
        "sam_vit_h_4b8939.pth", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        2_564_550_879, "vit_h",
    ),
    # micro-sam's *_decoder files serve its own instance decoder, not SAM's prompts: left out
    "vit_b_lm": _micro_sam(
        "vit_b_lm", "diplomatic-bug/1.2/files/vit_b.pt", "fe9252a29f3f4ea53c15a06de471e186", "vit_b"
    ),
    "vit_l_lm": _micro_sam(
        "vit_l_lm", "idealistic-rat/1.2/files/vit_l.pt", "017f20677997d628426dec80a8018f9d", "vit_l"
    ),
    # MobileSAM's TinyViT encoder (sam_models.build_vit_t); version 1.1 is the one 1.8.10 lists
    "vit_t_lm": _micro_sam(
        "vit_t_lm", "faithful-chicken/1.1/files/vit_t.pt", "72ec5074774761a6e5c05a08942f981e", "vit_t"
    ),
}  # fmt: skip


class CheckpointError(RuntimeError):
    """A download that failed or did not match its digest; nothing is left behind."""


def _hasher(algorithm: str) -> Any:
    if algorithm == "xxh128":
        import xxhash

        return xxhash.xxh128()
    return hashlib.new(algorithm)


def digest_of(path: Path, algorithm: str = "sha256") -> str:
    """``algorithm``'s hex digest of the whole file (xxh128 as micro-sam's ``xxh128sum``)."""
    digest = _hasher(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, dest: Path, base_url: str | None = None, progress: bool = True) -> Path:
    """Download checkpoint ``name`` into ``dest`` (skipped when a verified copy is there)."""
    if name not in KNOWN:
        raise CheckpointError(f"unknown checkpoint {name!r}; known: {', '.join(KNOWN)}")
    ckpt = KNOWN[name]
    algorithm, _, expected = ckpt.digest.partition(":")
    target = dest / ckpt.file
    if target.is_file() and digest_of(target, algorithm) == expected:
        return target
    mirror = base_url or os.environ.get("ACTIVESEG_CHECKPOINT_MIRROR")
    url = f"{mirror.rstrip('/')}/{ckpt.file}" if mirror else ckpt.url
    digest = _hasher(algorithm)
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
            if digest.hexdigest() != expected:
                raise CheckpointError(
                    f"{url}: {algorithm} {digest.hexdigest()[:16]}... does not match the known "
                    f"{expected[:16]}...; the file was discarded"
                )
    except requests.RequestException as exc:
        raise CheckpointError(f"cannot download {url}: {type(exc).__name__}") from None
    return target

"""Pseudo-labels on disk, keyed by (image content, pseudo-labeller version).

A repeated ``/predict`` or ``activeseg prelabel`` then costs a file read. The version hashes the
labeller's settings and weights, so a new configuration never serves stale masks.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from activeseg.fsutil import atomic_write_bytes
from activeseg.labellers.base import Segmentation


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PredictionCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, version: str, image_hash: str) -> Path:
        return self.root / version / image_hash[:2] / f"{image_hash}.npz"

    def get(self, version: str, image_hash: str) -> Segmentation | None:
        path = self._path(version, image_hash)
        try:
            with np.load(path) as npz:
                labels = npz["labels"]
                scores = json.loads(str(npz["scores"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError):  # a damaged entry is recomputed, not trusted
            path.unlink(missing_ok=True)
            return None
        return Segmentation(labels, {int(k): float(v) for k, v in scores.items()})

    def put(self, version: str, image_hash: str, seg: Segmentation) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, labels=seg.labels, scores=np.array(json.dumps(seg.instance_scores)))
        atomic_write_bytes(self._path(version, image_hash), buf.getvalue())

"""Per-task scores of one model version, stored beside the project's models.

One ``.npz`` per task under ``<project dir>/scores/<model version>/``: the model's uncertainty
about the image, its instance count, a feature vector for diversity and, for nnU-Net models, the
predicted instance mask (what the ML backend serves and ``export`` writes). Each file is written
atomically as soon as it is computed, so an interrupted scoring run resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from activeseg.fsutil import atomic_path
from activeseg.metrics import score_image

FOREGROUND_DILATION = 3  # pixels around predicted cells that count towards the entropy


@dataclass(frozen=True)
class TaskScore:
    task_id: int
    uncertainty: float
    instances: int
    features: np.ndarray
    labels: np.ndarray | None = None  # predicted instances (nnU-Net scorers only)
    #: test-time-flip disagreement over the foreground (nnU-Net scorers, when a strategy asks)
    flip_spread: float | None = None


class ScoreStore:
    """The scores of one model version: ``<dir>/<task id>.npz``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, task_id: int) -> Path:
        return self.root / f"{int(task_id)}.npz"

    def has(self, task_id: int) -> bool:
        return self.path(task_id).is_file()

    def put(self, score: TaskScore) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "uncertainty": np.float64(score.uncertainty),
            "instances": np.int64(score.instances),
            "features": score.features.astype(np.float32),
        }
        if score.labels is not None:
            arrays["labels"] = score.labels
        if score.flip_spread is not None:
            arrays["flip_spread"] = np.float64(score.flip_spread)
        with atomic_path(self.path(score.task_id)) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    def get(self, task_id: int) -> TaskScore | None:
        if not self.has(task_id):
            return None
        with np.load(self.path(task_id)) as data:
            return TaskScore(
                task_id=int(task_id),
                uncertainty=float(data["uncertainty"]),
                instances=int(data["instances"]),
                features=data["features"],
                labels=data.get("labels"),
                flip_spread=float(data["flip_spread"]) if "flip_spread" in data.files else None,
            )

    def labels(self, task_id: int) -> np.ndarray | None:
        found = self.get(task_id)
        return None if found is None else found.labels


def foreground_mean(values: np.ndarray, classes: np.ndarray) -> float:
    """Mean of a per-pixel map (entropy, flip spread) over the dilated predicted foreground, where
    errors happen; the whole image's if there is none."""
    foreground = classes > 0
    if foreground.any():
        foreground = ndimage.binary_dilation(foreground, iterations=FOREGROUND_DILATION)
        return float(values[foreground].mean())
    return float(values.mean())


def disagreement(pseudo: np.ndarray, model: np.ndarray) -> float:
    """1 - mSA of the model's instances against the pseudo-label: 0 where the model learnt the
    teacher's answer, 1 where none of their cells match. Where they differ, the teacher is
    probably wrong, so a correction there changes the most labels."""
    return 1.0 - score_image(pseudo, model).msa

"""The pseudo-labeller interface: an image in, instance masks with confidences out."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ModelLoadError(RuntimeError):
    """Weights that cannot be loaded; the message says which file and why."""


@dataclass(frozen=True)
class Segmentation:
    """Instances of one image: ``labels`` (0 = background, 1..N) and a confidence per instance.

    ``score`` is the image's confidence: the mean instance confidence, 0 for an empty result
    (nothing found is the least trustworthy answer).
    """

    labels: np.ndarray
    instance_scores: dict[int, float] = field(default_factory=dict)

    @property
    def n_instances(self) -> int:
        return len(self.instance_scores)

    @property
    def score(self) -> float:
        if not self.instance_scores:
            return 0.0
        return float(np.mean(list(self.instance_scores.values())))


class PseudoLabeler(ABC):
    """Turns a raw image (``(H, W)`` or ``(H, W, C)``, any dtype) into instances.

    Implementations are built once per process and may be slow to build (model weights); calls
    to :meth:`segment` may come from several threads, so implementations guard any shared
    mutable state themselves.
    """

    #: registry name, e.g. "classical"
    name: str

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that changes the output (parameters, weights' checksum), as JSON values."""

    @abstractmethod
    def segment(self, image: np.ndarray) -> Segmentation:
        """Instances of ``image``; the labels have the image's height and width."""

    def load(self) -> None:  # noqa: B027 - deliberately optional
        """Load weights now (a no-op for labellers without any); called to warm up a server."""

    @property
    def version(self) -> str:
        """``<name>-<hash of settings>``: the model version shown in Label Studio and cache key."""
        digest = hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()
        return f"{self.name}-{digest[:10]}"

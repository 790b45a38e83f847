"""Pseudo-labelling a Label Studio task: fetch its image, segment it (cached), and turn the
instances into a prediction for the project's label config.

The one place that does it, for ``activeseg prelabel``, the labeller comparison and the ML
backend's ``/predict`` alike, so all three share the cache: a task pre-labelled by the CLI costs
the backend a file read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from activeseg.imagefetch import ImageFetchError, ImageSource, task_image_url
from activeseg.imageio import ImageReadError, decode_image
from activeseg.labelconfig import RegionConfig
from activeseg.labellers import DEFAULT, ModelLoadError, PseudoLabeler, Segmentation, build_pseudolabeler
from activeseg.labellers.cache import PredictionCache, content_hash
from activeseg.lsclient import LabelStudioError

#: what one task can fail with; the rest of a batch goes on
TASK_ERRORS = (ImageFetchError, ImageReadError, LabelStudioError, ModelLoadError, ValueError)


@dataclass(frozen=True)
class LabellerConfig:
    """Which labeller, its SAM weights, and the largest image it takes (from the environment:
    ACTIVESEG_PSEUDOLABELER, ACTIVESEG_SAM_CHECKPOINT, ACTIVESEG_SAM_TYPE, ACTIVESEG_MAX_PIXELS)."""

    name: str = DEFAULT
    sam_checkpoint: Path | None = None
    sam_type: str = "vit_b"
    max_pixels: int = 64_000_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LabellerConfig:
        env = os.environ if env is None else env
        checkpoint = env.get("ACTIVESEG_SAM_CHECKPOINT")
        return cls(
            name=env.get("ACTIVESEG_PSEUDOLABELER", DEFAULT),
            sam_checkpoint=Path(checkpoint) if checkpoint else None,
            sam_type=env.get("ACTIVESEG_SAM_TYPE", "vit_b"),
            max_pixels=int(env.get("ACTIVESEG_MAX_PIXELS", 64_000_000)),
        )


class TaskLabeller:
    """Labellers by name (one each, built on first use under a lock, so threads share them),
    the image source and the segmentation cache under ``cache_dir``."""

    def __init__(
        self,
        config: LabellerConfig,
        images: ImageSource,
        cache_dir: Path,
        labeler: PseudoLabeler | None = None,
    ) -> None:
        self.labeller_config = config
        self.images = images
        self.cache = PredictionCache(cache_dir)
        self._labelers: dict[str, PseudoLabeler] = {} if labeler is None else {config.name: labeler}
        self._lock = threading.Lock()

    @property
    def labeler(self) -> PseudoLabeler:
        """The configured labeller."""
        return self.labeler_named(self.labeller_config.name)

    def labeler_named(self, name: str) -> PseudoLabeler:
        """One labeller per name, built on first use (its weights load later, on first image)."""
        with self._lock:
            if name not in self._labelers:
                cfg = self.labeller_config
                self._labelers[name] = build_pseudolabeler(name, cfg.sam_checkpoint, cfg.sam_type)
            return self._labelers[name]

    @property
    def model_version(self) -> str:
        """The configured labeller's version (what its predictions are stored under)."""
        return self.labeler.version

    def segment_bytes(
        self, data: bytes, name: str, labeler: PseudoLabeler | None = None
    ) -> tuple[Segmentation, bool]:
        """Instances of an encoded image (by ``labeler``, default the configured one), and
        whether they came from the cache."""
        labeler = labeler or self.labeler
        key = content_hash(data)
        version = labeler.version
        cached = self.cache.get(version, key)
        if cached is not None:
            return cached, True
        image = decode_image(data, name)
        pixels = image.shape[0] * image.shape[1]
        limit = self.labeller_config.max_pixels
        if pixels > limit:
            raise ValueError(
                f"{name}: {image.shape[1]}x{image.shape[0]} is larger than the {limit:,} "
                "pixels this backend accepts (ACTIVESEG_MAX_PIXELS)"
            )
        seg = labeler.segment(image)
        self.cache.put(version, key, seg)
        return seg, False

    def predict_task(
        self, task: dict[str, Any], config: RegionConfig, labeler: PseudoLabeler | None = None
    ) -> tuple[dict[str, Any], bool]:
        """The task's pseudo-label prediction (validated against ``config``) and whether it came
        from the cache."""
        labeler = labeler or self.labeler
        image = self.images.fetch(task_image_url(task, config.image_key))
        seg, cached = self.segment_bytes(image.data, image.name, labeler)
        result = config.to_results(seg.labels.astype(np.uint32), seg.instance_scores)
        prediction = {"result": result, "score": round(seg.score, 4), "model_version": labeler.version}
        config.validate_prediction(prediction)
        return prediction, cached

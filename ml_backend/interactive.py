"""Interactive assist: an annotator draws a box or clicks a point with a smart tool in Label
Studio, and SAM returns the mask for it as one new brush region.

Label Studio sends the prompt as ``params.context.result`` (``rectanglelabels`` with x, y,
width, height, or ``keypointlabels`` with x, y and ``is_positive``, all in percent of the image).
The image embedding, the slow part (about 1.4 s for LiteMedSAM on 2 cores), is kept per image
in a small LRU cache, so every further prompt on the same task costs only the mask decoder.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from activeseg.labelconfig import RegionConfig
from activeseg.labellers.sam import sam_rgb
from activeseg.regions import mask_to_result

PROMPT_TYPES = ("rectanglelabels", "keypointlabels")


@dataclass(frozen=True)
class Prompt:
    box: np.ndarray | None  # XYXY in pixels
    points: np.ndarray | None  # (N, 2) XY in pixels
    point_labels: np.ndarray | None  # 1 = positive, 0 = negative
    label: str | None  # the label the annotator picked, if any


def parse_context(context: dict[str, Any] | None) -> Prompt | None:
    """The SAM prompt in Label Studio's interactive ``context``, or None when there is none."""
    items = [r for r in (context or {}).get("result") or [] if r.get("type") in PROMPT_TYPES]
    if not items:
        return None
    box, points, labels, label = None, [], [], None
    for item in items:
        w, h = float(item["original_width"]), float(item["original_height"])
        v = item["value"]
        x, y = v["x"] * w / 100, v["y"] * h / 100
        label = (v.get(item["type"]) or [label])[0]
        if item["type"] == "rectanglelabels":
            box = np.array([x, y, x + v["width"] * w / 100, y + v["height"] * h / 100], dtype=np.float32)
        else:
            points.append((x, y))
            labels.append(1 if item.get("is_positive", True) else 0)
    return Prompt(
        box=box,
        points=np.array(points, dtype=np.float32) if points else None,
        point_labels=np.array(labels, dtype=np.int64) if labels else None,
        label=label,
    )


class InteractiveSegmenter:
    """SAM answering one prompt at a time, with cached image embeddings (thread-safe)."""

    def __init__(self, load_model: Callable[[], Sam], weights_id: str, cache_size: int = 8) -> None:
        self.weights_id = weights_id
        self._load_model = load_model
        self._predictor: SamPredictor | None = None
        self._embeddings: OrderedDict[str, tuple[torch.Tensor, tuple[int, int], tuple[int, int]]] = (
            OrderedDict()
        )
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.embedding_hits = 0

    def _set_image(self, key: str, image: np.ndarray) -> SamPredictor:
        if self._predictor is None:
            self._predictor = SamPredictor(self._load_model())
        predictor = self._predictor
        if key in self._embeddings:
            features, original_size, input_size = self._embeddings[key]
            self._embeddings.move_to_end(key)
            predictor.features, predictor.original_size, predictor.input_size = (
                features,
                original_size,
                input_size,
            )
            predictor.is_image_set = True
            self.embedding_hits += 1
            return predictor
        predictor.set_image(sam_rgb(image))
        self._embeddings[key] = (predictor.features, predictor.original_size, predictor.input_size)
        while len(self._embeddings) > self._cache_size:
            self._embeddings.popitem(last=False)
        return predictor

    def segment(self, key: str, image: np.ndarray, prompt: Prompt) -> tuple[np.ndarray, float]:
        """The best mask for ``prompt`` on ``image`` (``key`` identifies the image) and SAM's IoU."""
        with self._lock, torch.inference_mode():
            predictor = self._set_image(key, image)
            many = prompt.box is None  # a lone point is ambiguous: take SAM's best of three
            masks, scores, _ = predictor.predict(
                point_coords=prompt.points,
                point_labels=prompt.point_labels,
                box=prompt.box,
                multimask_output=many,
            )
        best = int(np.argmax(scores))
        return masks[best], float(np.clip(scores[best], 0.0, 1.0))

    def region(self, key: str, image: np.ndarray, prompt: Prompt, config: RegionConfig) -> dict[str, Any]:
        """The prompt's mask as one region of the config's kind (brush or polygon)."""
        mask, score = self.segment(key, image, prompt)
        label = prompt.label if prompt.label in config.labels else config.label
        region_id = f"smart-{uuid.uuid4().hex[:8]}"
        region = mask_to_result(mask, config.from_name, config.to_name, label, config.kind, region_id)
        return {**region, "score": score}

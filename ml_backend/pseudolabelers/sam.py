"""SAM-based pseudo-labellers: detector boxes refined by SAM, and SAM's automatic point grid.

Both run the real ``segment_anything`` code. SAM sees the 8-bit display version of the image
(percentile-stretched, grey repeated to RGB), as a person does in Label Studio.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam
from skimage.measure import regionprops
from skimage.transform import resize

from activeseg.imageio import to_display
from ml_backend.pseudolabelers.base import PseudoLabeler, Segmentation
from ml_backend.pseudolabelers.classical import ClassicalLabeler
from ml_backend.pseudolabelers.postprocess import masks_to_labels


def sam_rgb(image: np.ndarray) -> np.ndarray:
    """The uint8 HxWx3 image SAM is given: the display stretch, grey repeated to three channels."""
    disp = to_display(image)
    return np.repeat(disp[..., None], 3, axis=2) if disp.ndim == 2 else disp


def detector_boxes(labels: np.ndarray, margin: int) -> np.ndarray:
    """XYXY boxes (pixel edges) around each instance, grown by ``margin`` and clipped to the image."""
    h, w = labels.shape
    boxes = [
        (max(c0 - margin, 0), max(r0 - margin, 0), min(c1 + margin, w), min(r1 + margin, h))
        for r0, c0, r1, c1 in (r.bbox for r in regionprops(labels))
    ]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


class SamBoxLabeler(PseudoLabeler):
    """The classical detector finds the cells; SAM redraws each one from its box.

    All boxes of an image go through SAM's mask decoder in batches (one image embedding), which
    is several times faster than one ``SamPredictor.predict`` call per box.
    """

    def __init__(
        self,
        load_model: Callable[[], Sam],
        weights_id: str,
        name: str = "sam-box",
        detector: ClassicalLabeler | None = None,
        margin: int = 2,
        batch_size: int = 32,
        min_area: int = 15,
    ) -> None:
        self.name = name
        self.detector = detector or ClassicalLabeler()
        self.margin, self.batch_size, self.min_area = margin, batch_size, min_area
        self.weights_id = weights_id
        self._load_model = load_model
        self._predictor_: SamPredictor | None = None
        self._lock = threading.Lock()  # the predictor holds one image's embedding at a time

    @property
    def _predictor(self) -> SamPredictor:
        if self._predictor_ is None:  # callers hold self._lock
            self._predictor_ = SamPredictor(self._load_model())
        return self._predictor_

    def load(self) -> None:
        """Load the weights now rather than on the first image."""
        with self._lock:
            _ = self._predictor

    def settings(self) -> dict[str, Any]:
        return {
            "weights": self.weights_id,
            "detector": self.detector.settings(),
            "margin": self.margin,
            "min_area": self.min_area,
        }

    def segment(self, image: np.ndarray) -> Segmentation:
        det = self.detector.segment(image)
        boxes = detector_boxes(det.labels, self.margin)
        if len(boxes) == 0:
            return det
        with self._lock:
            self._predictor.set_image(sam_rgb(image))
            masks, ious = self.predict_boxes(boxes)
        labels, scores = masks_to_labels(
            list(masks), list(ious), det.labels.shape, min_area=self.min_area, foreground=det.labels > 0
        )
        return Segmentation(labels, scores)

    @torch.inference_mode()
    def predict_boxes(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks (N, H, W) and predicted IoUs (N,) for boxes on the image set last; batched."""
        predictor = self._predictor
        masks, ious = [], []
        for start in range(0, len(boxes), self.batch_size):
            chunk = torch.as_tensor(boxes[start : start + self.batch_size], device=predictor.device)
            chunk = predictor.transform.apply_boxes_torch(chunk, predictor.original_size)
            m, iou, _ = predictor.predict_torch(None, None, boxes=chunk, multimask_output=False)
            masks.append(m[:, 0].cpu().numpy())
            ious.append(iou[:, 0].clamp(0, 1).cpu().numpy())
        return np.concatenate(masks), np.concatenate(ious)

    def predict_boxes_one_by_one(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The naive loop (one ``SamPredictor.predict`` per box); kept for the benchmark."""
        out = [self._predictor.predict(box=b, multimask_output=False) for b in boxes]
        return np.stack([m[0] for m, _, _ in out]), np.array([float(s[0]) for _, s, _ in out])


class SamAutoLabeler(PseudoLabeler):
    """SAM's automatic point grid, for full SAM checkpoints (LiteMedSAM finds nothing this way).

    The stock generator upsamples every candidate mask to the image size and takes minutes per
    image on 2 cores; here the image is first shrunk so its longest side is at most
    ``max_side`` (masks are scaled back with nearest neighbours) and the grid is coarser.
    Masks lying mostly on background (per the classical foreground) or covering most of the
    image are dropped.
    """

    def __init__(
        self,
        load_model: Callable[[], Sam],
        weights_id: str,
        name: str = "sam-auto",
        points_per_side: int = 16,
        max_side: int = 512,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.9,
        min_area: int = 15,
    ) -> None:
        self.name = name
        self.points_per_side, self.max_side, self.min_area = points_per_side, max_side, min_area
        self.pred_iou_thresh, self.stability_score_thresh = pred_iou_thresh, stability_score_thresh
        self.weights_id = weights_id
        self._load_model = load_model
        self._generator_: SamAutomaticMaskGenerator | None = None
        self._foreground = ClassicalLabeler()
        self._lock = threading.Lock()

    @property
    def _generator(self) -> SamAutomaticMaskGenerator:
        if self._generator_ is None:  # callers hold self._lock
            self._generator_ = SamAutomaticMaskGenerator(
                self._load_model(),
                points_per_side=self.points_per_side,
                pred_iou_thresh=self.pred_iou_thresh,
                stability_score_thresh=self.stability_score_thresh,
            )
        return self._generator_

    def load(self) -> None:
        """Load the weights now rather than on the first image."""
        with self._lock:
            _ = self._generator

    def settings(self) -> dict[str, Any]:
        return {
            "weights": self.weights_id,
            "points_per_side": self.points_per_side,
            "max_side": self.max_side,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_score_thresh": self.stability_score_thresh,
            "min_area": self.min_area,
        }

    def segment(self, image: np.ndarray) -> Segmentation:
        rgb = sam_rgb(image)
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = (
            rgb if scale == 1.0 else resize(rgb, (round(h * scale), round(w * scale)), preserve_range=True)
        )
        with self._lock, torch.inference_mode():
            found = self._generator.generate(small.astype(np.uint8))
        masks = [self._full_size(m["segmentation"], (h, w)) for m in found]
        scores = [float(m["predicted_iou"]) * float(m["stability_score"]) for m in found]
        _, fg = self._foreground.foreground(image)
        labels, inst_scores = masks_to_labels(
            masks, [min(max(s, 0.0), 1.0) for s in scores], (h, w), min_area=self.min_area, foreground=fg
        )
        return Segmentation(labels, inst_scores)

    @staticmethod
    def _full_size(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        if mask.shape == shape:
            return mask
        return resize(mask, shape, order=0, preserve_range=True, anti_aliasing=False).astype(bool)

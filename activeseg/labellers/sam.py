"""SAM-based pseudo-labellers: detector boxes refined by SAM, and SAM's automatic point grid.

Both run the real ``segment_anything`` code. SAM sees the 8-bit display version of the image
(percentile-stretched, grey repeated to RGB), as a person does in Label Studio.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam
from segment_anything.utils.amg import calculate_stability_score
from skimage.measure import regionprops

from activeseg.imageio import to_display
from activeseg.labellers.base import PseudoLabeler, Segmentation
from activeseg.labellers.classical import ClassicalLabeler
from activeseg.labellers.postprocess import MaskCrop, masks_to_labels
from activeseg.labellers.tiling import blocks, crop_in_block, suppress_duplicates


def sam_rgb(image: np.ndarray) -> np.ndarray:
    """The uint8 HxWx3 image SAM is given: the display stretch, grey repeated to three channels."""
    disp = to_display(image)
    return np.repeat(disp[..., None], 3, axis=2) if disp.ndim == 2 else disp


def _around(box: np.ndarray, shape: tuple[int, int], grow: float = 0.5) -> tuple[slice, slice]:
    """The window a box's mask is kept in: the box grown by half its size, clipped."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * grow, (y1 - y0) * grow
    return (
        slice(max(int(y0 - dy), 0), min(int(np.ceil(y1 + dy)), shape[0])),
        slice(max(int(x0 - dx), 0), min(int(np.ceil(x1 + dx)), shape[1])),
    )


def detector_boxes(labels: np.ndarray, margin: int) -> np.ndarray:
    """XYXY boxes (pixel edges) around each instance, grown by ``margin`` and clipped to the image."""
    h, w = labels.shape
    boxes = [
        (max(c0 - margin, 0), max(r0 - margin, 0), min(c1 + margin, w), min(r1 + margin, h))
        for r0, c0, r1, c1 in (r.bbox for r in regionprops(labels))
    ]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def inner_points(labels: np.ndarray) -> np.ndarray:
    """One XY point per instance (``detector_boxes``' order) that lies inside it: the mask pixel
    nearest its centroid, so a curved cell's point still falls on the cell."""
    points = []
    for region in regionprops(labels):
        coords = region.coords  # (n, 2) rows, cols
        nearest = coords[np.argmin(((coords - np.asarray(region.centroid)) ** 2).sum(axis=1))]
        points.append((nearest[1] + 0.5, nearest[0] + 0.5))
    return np.asarray(points, dtype=np.float32).reshape(-1, 2)


def jittered(boxes: np.ndarray, draw: int, spread: float = 0.1) -> np.ndarray:
    """The ``draw``-th deterministic jitter of XYXY boxes: each edge moved by up to ``spread`` of
    the box's size (the box-noise SAM was trained with)."""
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    noise = np.random.default_rng(draw).uniform(-spread, spread, size=boxes.shape)
    return (boxes + noise * size).astype(np.float32)


#: how a box's mask is chosen when SAM answers with three (``SamBoxLabeler(multimask=...)``)
MULTIMASK_CHOICES = ("iou", "stability")


@dataclass
class Refined:
    """One image's detector answer and, per detected cell, SAM's logits in the cell's window."""

    detection: Segmentation
    logits: list[MaskCrop]
    scores: list[float]  # SAM's predicted IoU per cell
    cells: list[int]  # the detector's instance id each box was drawn around


class SamBoxLabeler(PseudoLabeler):
    """The classical detector finds the cells; SAM redraws each one from its box.

    The image is embedded once and the boxes go through SAM's mask decoder in small batches.
    On CPU, batching saves little: the decoder's two-way transformer updates all 64x64 image
    tokens for every prompt, so its cost grows with the number of boxes either way
    (``benchmarks/pseudolabels.py`` measures both).
    """

    def __init__(
        self,
        load_model: Callable[[], Sam],
        weights_id: str,
        name: str = "sam-box",
        detector: ClassicalLabeler | None = None,
        margin: int = 2,
        batch_size: int = 4,
        min_area: int = 15,
        tile_size: int | None = None,
        tile_overlap: int = 128,
        mask_threshold: float = 0.0,
        refine_below: float | None = None,
        min_sam_iou: float = 0.0,
        multimask: str | None = None,
        point_prompt: bool = False,
        jitter: int = 0,
    ) -> None:
        if multimask is not None and multimask not in MULTIMASK_CHOICES:
            raise ValueError(
                f"multimask must be one of {', '.join(MULTIMASK_CHOICES)} or None, got {multimask!r}"
            )
        self.name = name
        self.detector = detector or ClassicalLabeler()
        self.margin, self.batch_size, self.min_area = margin, batch_size, min_area
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        self.mask_threshold = mask_threshold  # on SAM's mask logits; SAM's own is 0 (p = 0.5)
        #: SAM redraws only the cells whose classical confidence is below this (None: every cell)
        self.refine_below = refine_below
        #: a cell keeps its classical mask where SAM's predicted IoU is below this
        self.min_sam_iou = min_sam_iou
        #: None: SAM's single mask; "iou"/"stability": the best of its three by that score (stability
        #: at ``mask_threshold``), chosen per prompt, so each jittered copy may choose its own
        self.multimask = multimask
        self.point_prompt = point_prompt  # a positive point inside the cell besides its box
        self.jitter = jitter  # extra jittered boxes per cell, logits averaged (0: the box alone)
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
        settings = {
            "weights": self.weights_id,
            "detector": self.detector.settings(),
            "margin": self.margin,
            "min_area": self.min_area,
            "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap,
        }
        # options at their defaults stay out, so versions made before they existed still hold
        if self.mask_threshold != 0.0:
            settings["mask_threshold"] = self.mask_threshold
        if self.refine_below is not None:
            settings["refine_below"] = self.refine_below
        if self.min_sam_iou != 0.0:
            settings["min_sam_iou"] = self.min_sam_iou
        if self.multimask is not None:
            settings["multimask"] = self.multimask
        if self.point_prompt:
            settings["point_prompt"] = True
        if self.jitter:
            settings["jitter"] = self.jitter
        return settings

    def segment(self, image: np.ndarray) -> Segmentation:
        refined = self.refine(image, self.refine_below)
        return self.labels(refined, self.mask_threshold, self.min_sam_iou, self.refine_below)

    def refine(self, image: np.ndarray, refine_below: float | None = None) -> Refined:
        """The detector's cells and SAM's mask logits for the boxes of those whose detector
        confidence is below ``refine_below`` (None: all), thresholded by :meth:`labels`; kept
        apart so a benchmark can try thresholds without running SAM again."""
        det = self.detector.segment(image)
        ids = [r.label for r in regionprops(det.labels)]  # detector_boxes' order
        boxes = detector_boxes(det.labels, self.margin)
        points = inner_points(det.labels) if self.point_prompt else None
        if refine_below is not None:
            unsure = [i for i, cell in enumerate(ids) if det.instance_scores.get(cell, 0.0) < refine_below]
            ids, boxes = [ids[i] for i in unsure], boxes[unsure]
            points = None if points is None else points[unsure]
        refined = Refined(det, [], [], [])
        if len(boxes) == 0:
            return refined
        rgb = sam_rgb(image)
        with self._lock:
            for (r0, c0, r1, c1), members in self._tiles(rgb.shape[:2], boxes):
                self._predictor.set_image(np.ascontiguousarray(rgb[r0:r1, c0:c1]))
                local = boxes[members] - np.array([c0, r0, c0, r0], dtype=np.float32)
                local_points = (
                    None if points is None else points[members] - np.array([c0, r0], dtype=np.float32)
                )
                logits, ious = self.box_logits(local, local_points)
                for box, logit, iou, member in zip(local, logits, ious, members, strict=True):
                    rows, cols = _around(box, logit.shape)
                    shifted = (slice(rows.start + r0, rows.stop + r0), slice(cols.start + c0, cols.stop + c0))
                    refined.logits.append((shifted, logit[rows, cols]))
                    refined.scores.append(float(iou))
                    refined.cells.append(ids[member])
        return refined

    def labels(
        self,
        refined: Refined,
        threshold: float = 0.0,
        min_sam_iou: float = 0.0,
        refine_below: float | None = None,
    ) -> Segmentation:
        """One instance per detected cell: SAM's logits above ``threshold`` for the refined cells
        whose predicted IoU reaches ``min_sam_iou`` and whose detector confidence is below
        ``refine_below`` (None: any), the detector's own mask for the others; overlaps go to
        the surer mask."""
        det = refined.detection
        if not refined.logits:
            return det
        refined_cells = set(refined.cells)
        crops: list[MaskCrop] = []
        scores: list[float] = []
        for (window, logit), score, cell in zip(refined.logits, refined.scores, refined.cells, strict=True):
            confidence = det.instance_scores.get(cell, 0.0)
            if score >= min_sam_iou and (refine_below is None or confidence < refine_below):
                crops.append((window, logit > threshold))
            else:
                crops.append((window, det.labels[window] == cell))
            scores.append(score)
        for region in regionprops(det.labels):  # cells SAM was not asked about keep their mask
            if region.label not in refined_cells:
                crops.append((region.slice, region.image))
                scores.append(det.instance_scores.get(region.label, 0.0))
        labels, inst_scores = masks_to_labels(
            crops, scores, det.labels.shape, min_area=self.min_area, foreground=det.labels > 0
        )
        return Segmentation(labels, inst_scores)

    def _tiles(
        self, shape: tuple[int, int], boxes: np.ndarray
    ) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
        """Overlapping tiles (r0, c0, r1, c1) and the boxes each one answers.

        Without ``tile_size`` (or for a small image) the whole image is one tile. Otherwise every
        box goes to the tile in which it sits farthest from the edges, so a cell on a tile border
        is segmented whole by the neighbouring tile: no instance is ever split or merged.
        """
        h, w = shape
        t = self.tile_size
        if t is None or max(h, w) <= t:
            return [((0, 0, h, w), np.arange(len(boxes)))]
        step = max(t - self.tile_overlap, 1)

        def starts(n: int) -> list[int]:
            return sorted({*range(0, max(n - t, 0) + 1, step), max(n - t, 0)})

        tiles = [(r, c, min(r + t, h), min(c + t, w)) for r in starts(h) for c in starts(w)]
        tb = np.array(tiles, dtype=np.float32)  # (T, 4) as r0, c0, r1, c1
        # distance of each box to each tile's edges (negative: sticks out)
        slack = np.minimum.reduce([
            boxes[None, :, 0] - tb[:, None, 1], boxes[None, :, 1] - tb[:, None, 0],
            tb[:, None, 3] - boxes[None, :, 2], tb[:, None, 2] - boxes[None, :, 3],
        ])  # fmt: skip
        best = np.argmax(slack, axis=0)
        return [(tile, np.flatnonzero(best == k)) for k, tile in enumerate(tiles) if (best == k).any()]

    @torch.inference_mode()
    def box_logits(
        self, boxes: np.ndarray, points: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mask logits (N, H, W) and predicted IoUs (N,) for boxes (and, with ``points``, one
        positive XY point each) on the image set last; batched; with ``jitter``, averaged over
        the box and its jittered copies."""
        variants = [boxes] + [jittered(boxes, draw) for draw in range(self.jitter)]
        logits, ious = [], []
        for start in range(0, len(boxes), self.batch_size):
            batch = slice(start, start + self.batch_size)
            where = None if points is None else points[batch]
            answers = [self._decode(variant[batch], where) for variant in variants]
            logits.append((sum(m for m, _ in answers) / len(answers)).cpu().numpy())
            ious.append((sum(iou for _, iou in answers) / len(answers)).clamp(0, 1).cpu().numpy())
        return np.concatenate(logits), np.concatenate(ious)

    def _decode(self, boxes: np.ndarray, points: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder pass: a mask's logits (N, H, W) and predicted IoU (N,) per prompt."""
        predictor = self._predictor
        box = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, device=predictor.device),
                                                    predictor.original_size)  # fmt: skip
        coords = labels = None
        if points is not None:
            xy = torch.as_tensor(points[:, None, :], device=predictor.device)
            coords = predictor.transform.apply_coords_torch(xy, predictor.original_size)
            labels = torch.ones(coords.shape[:2], dtype=torch.int, device=predictor.device)
        many = self.multimask is not None
        m, iou, _ = predictor.predict_torch(
            coords, labels, boxes=box, multimask_output=many, return_logits=True
        )
        if not many:
            return m[:, 0], iou[:, 0]
        score = iou if self.multimask == "iou" else calculate_stability_score(m, self.mask_threshold, 1.0)
        pick = score.argmax(dim=1)
        rows = torch.arange(len(m), device=m.device)
        return m[rows, pick], iou[rows, pick]

    def predict_boxes(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks (N, H, W) at ``mask_threshold`` and predicted IoUs (N,), as :meth:`box_logits`."""
        logits, ious = self.box_logits(boxes)
        return logits > self.mask_threshold, ious

    def predict_boxes_one_by_one(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The naive loop (one ``SamPredictor.predict`` per box); kept for the benchmark."""
        out = [self._predictor.predict(box=b, multimask_output=False) for b in boxes]
        return np.stack([m[0] for m, _, _ in out]), np.array([float(s[0]) for _, s, _ in out])


class SamAutoLabeler(PseudoLabeler):
    """SAM's automatic point grid, for full SAM checkpoints (LiteMedSAM finds nothing this way).

    Fields larger than one block are tiled, micro-sam's way (``tiling.py``): tiles of
    ``tile_size`` px seen with a ``halo`` on each inner side, cut-off masks dropped, cells found
    twice merged. Each block gets its own ``points_per_side`` grid, so a large field is prompted
    as densely as a small one; the stock generator's cost (every candidate mask upsampled to the
    image) stays bounded by the block. Masks lying mostly on background (per the classical
    foreground) or covering most of the image are dropped.
    """

    def __init__(
        self,
        load_model: Callable[[], Sam],
        weights_id: str,
        name: str = "sam-auto",
        points_per_side: int = 16,
        tile_size: int = 384,
        halo: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.9,
        min_area: int = 15,
    ) -> None:
        self.name = name
        self.points_per_side, self.min_area = points_per_side, min_area
        self.tile_size, self.halo = tile_size, halo
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
            "tile_size": self.tile_size,
            "halo": self.halo,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_score_thresh": self.stability_score_thresh,
            "min_area": self.min_area,
        }

    def generate(self, rgb: np.ndarray) -> list[dict[str, Any]]:
        """SAM's automatic masks of one block (``segmentation``, ``predicted_iou``, ``stability_score``)."""
        with self._lock, torch.inference_mode():
            return self._generator.generate(np.ascontiguousarray(rgb))

    def segment(self, image: np.ndarray) -> Segmentation:
        rgb = sam_rgb(image)
        h, w = rgb.shape[:2]
        crops, scores = [], []
        for block in blocks((h, w), self.tile_size, self.halo):
            for found in self.generate(rgb[block.window]):
                crop = crop_in_block(found["segmentation"], block)
                if crop is not None:
                    crops.append(crop)
                    scores.append(
                        min(max(float(found["predicted_iou"]) * float(found["stability_score"]), 0.0), 1.0)
                    )
        keep = suppress_duplicates(crops, scores)
        _, fg = self._foreground.foreground(image)
        labels, inst_scores = masks_to_labels(
            [crops[i] for i in keep], [scores[i] for i in keep], (h, w), min_area=self.min_area, foreground=fg
        )
        return Segmentation(labels, inst_scores)

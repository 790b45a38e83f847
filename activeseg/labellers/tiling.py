"""Large fields for SAM's automatic generator: overlapping blocks, instances merged across them.

micro-sam's scheme (tile 384 px, halo 64 px): the image is cut into a grid of tiles; SAM sees
each tile grown by the halo on every side that is not the image border. A mask touching such an
inner edge is cut off by it and dropped; the same cell lies whole in a neighbouring block
(when it is smaller than the halo). Cells found whole by two blocks are merged by
non-maximum suppression on their masks. Shrinking the image instead, as this project did
before, erased the small nuclei SAM must see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from activeseg.labellers.postprocess import MaskCrop


@dataclass(frozen=True)
class Block:
    """What SAM sees of the image (``window``) and which of its sides lie inside the image."""

    window: tuple[slice, slice]
    open_sides: tuple[bool, bool, bool, bool]  # top, left, bottom, right


def blocks(shape: tuple[int, int], tile: int, halo: int) -> list[Block]:
    """The blocks covering an image; one block (the whole image) when it fits in one."""
    h, w = shape
    if max(h, w) <= tile + 2 * halo:
        return [Block((slice(0, h), slice(0, w)), (False, False, False, False))]
    out = []
    for r in range(0, h, tile):
        for c in range(0, w, tile):
            r0, c0 = max(r - halo, 0), max(c - halo, 0)
            r1, c1 = min(r + tile + halo, h), min(c + tile + halo, w)
            out.append(Block((slice(r0, r1), slice(c0, c1)), (r0 > 0, c0 > 0, r1 < h, c1 < w)))
    return out


def crop_in_block(mask: np.ndarray, block: Block, margin: int = 2) -> MaskCrop | None:
    """A block's mask as a crop in image coordinates; None when it is empty or reaches within
    ``margin`` pixels of an inner side (the cell continues beyond what SAM saw)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    top, left, bottom, right = block.open_sides
    h, w = mask.shape
    if (
        (top and r0 < margin)
        or (left and c0 < margin)
        or (bottom and r1 > h - margin)
        or (right and c1 > w - margin)
    ):
        return None
    br, bc = block.window[0].start, block.window[1].start
    return (slice(r0 + br, r1 + br), slice(c0 + bc, c1 + bc)), mask[r0:r1, c0:c1]


def _iou(a: MaskCrop, b: MaskCrop) -> float:
    (ar, ac), am = a
    (br, bc), bm = b
    r0, r1 = max(ar.start, br.start), min(ar.stop, br.stop)
    c0, c1 = max(ac.start, bc.start), min(ac.stop, bc.stop)
    if r0 >= r1 or c0 >= c1:
        return 0.0
    inter = int(
        (
            am[r0 - ar.start : r1 - ar.start, c0 - ac.start : c1 - ac.start]
            & bm[r0 - br.start : r1 - br.start, c0 - bc.start : c1 - bc.start]
        ).sum()
    )
    union = int(am.sum()) + int(bm.sum()) - inter
    return inter / union if union else 0.0


def suppress_duplicates(crops: Sequence[MaskCrop], scores: Sequence[float], iou: float = 0.7) -> list[int]:
    """Indices of the masks to keep: best score first, dropping any mask overlapping a kept one
    by more than ``iou`` (the same cell found by two blocks)."""
    kept: list[int] = []
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        if all(_iou(crops[i], crops[j]) <= iou for j in kept):
            kept.append(int(i))
    return sorted(kept)

"""Instance masks <-> Label Studio ``polygonlabels`` points (one closed polygon per instance).

A brush region costs the annotator's browser a full-image canvas per cell, so a page with a few
hundred cells runs out of memory (``benchmarks/annotator_page.py``); a polygon is a handful of
points. The outline is traced through the midpoints between inside and outside pixel centres
(marching squares at level 0.5), so filling it again by pixel centre gives back the mask, and
then simplified (Douglas-Peucker) to keep the points an annotator has to drag few.

Label Studio keeps polygon points in percent of the image's width and height, measured from the
image's top-left corner, so pixel (row r, column c) has its centre at ((c + 0.5) / W, (r + 0.5) / H).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.draw import polygon as fill_polygon
from skimage.measure import approximate_polygon, find_contours

#: Douglas-Peucker tolerance in pixels: the round trip over the 541 DSB2018 training label images
#: keeps mSA 0.991 at 0.5 px with 17 points per cell, ~6x fewer than the traced outline (README)
TOLERANCE_PX = 0.5


def trace(mask: np.ndarray, tolerance: float = TOLERANCE_PX) -> np.ndarray:
    """The outline of the mask's largest connected piece: (n, 2) pixel (row, column) points.

    Holes are filled and smaller pieces dropped: one polygon is one region, as the annotator edits
    it. An empty mask gives no points.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    pieces, count = ndimage.label(mask)
    if count == 0:
        return np.zeros((0, 2))
    if count > 1:
        mask = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
    rows, cols = np.nonzero(mask)
    r0, c0 = rows.min(), cols.min()
    crop = np.pad(mask[r0 : rows.max() + 1, c0 : cols.max() + 1], 1).astype(np.float32)
    outline = max(find_contours(crop, 0.5), key=len)  # the outer one: holes are filled
    if tolerance > 0:
        outline = approximate_polygon(outline, tolerance)
    # find_contours closes the ring by repeating its first point; the crop was padded by 1
    return outline[:-1] + np.array([r0 - 1, c0 - 1])


def to_percent(
    outline: np.ndarray, shape: tuple[int, int], offset: tuple[int, int] = (0, 0)
) -> list[list[float]]:
    """Label Studio [x, y] percent points of pixel (row, column) points ``offset`` from the origin of
    an image of ``shape`` (height, width)."""
    height, width = shape
    ys = (outline[:, 0] + offset[0] + 0.5) * (100.0 / height)
    xs = (outline[:, 1] + offset[1] + 0.5) * (100.0 / width)
    return [[round(float(x), 4), round(float(y), 4)] for x, y in zip(xs, ys, strict=True)]


def mask_to_points(mask: np.ndarray, tolerance: float = TOLERANCE_PX) -> list[list[float]]:
    """The mask's outline (see :func:`trace`) as Label Studio percent points."""
    return to_percent(trace(mask, tolerance), mask.shape)


def points_to_pixels(
    points: Sequence[Sequence[float]], height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the pixels whose centres lie inside the polygon of percent points."""
    if len(points) < 3:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    pts = np.asarray(points, dtype=np.float64)
    cols = pts[:, 0] * (width / 100.0) - 0.5
    rows = pts[:, 1] * (height / 100.0) - 0.5
    return fill_polygon(rows, cols, shape=(height, width))


def points_to_mask(points: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of the pixels whose centres lie inside the polygon."""
    out = np.zeros((height, width), dtype=bool)
    out[points_to_pixels(points, height, width)] = True
    return out

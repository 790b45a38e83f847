"""Clean-up shared by every pseudo-labeller (one instance per pixel, no specks, no holes), and the
seeded watershed that turns a foreground into cells, shared with nnU-Net's class maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

#: a mask given as the window it lives in and its pixels there
MaskCrop = tuple[tuple[slice, slice], np.ndarray]


def peak_seeds(region: np.ndarray, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, distance): one seed per peak of ``region``'s smoothed distance map at least
    ``depth`` px deep, so touching blobs get one seed each; a component of ``region`` too shallow
    for any peak is one seed of its own, not a piece for its neighbours."""
    distance = ndi.gaussian_filter(ndi.distance_transform_edt(region), 1.0)
    peaks = h_maxima(distance, depth).astype(bool) & region
    components, count = ndi.label(region)
    has_peak = np.zeros(count + 1, dtype=bool)
    has_peak[components[peaks]] = True
    seeds, _ = ndi.label(peaks | (region & ~has_peak[components]))
    return seeds, distance


def grow(seeds: np.ndarray, flood: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Seeds grown over ``extent`` in the order of ``flood`` (low first); a part of ``extent``
    that no seed reaches (an object too thin for a seed) becomes an instance of its own."""
    labels = watershed(flood, seeds, mask=extent) if seeds.any() else np.zeros(seeds.shape, dtype=np.int32)
    orphans, _ = ndi.label(extent & (labels == 0))
    return np.where(orphans > 0, orphans + labels.max(), labels)


def full_crop(mask: np.ndarray) -> MaskCrop:
    """A whole-image mask as a crop."""
    return (slice(0, mask.shape[0]), slice(0, mask.shape[1])), mask


def masks_to_labels(
    crops: Sequence[MaskCrop],
    scores: Sequence[float],
    shape: tuple[int, int],
    min_area: int = 15,
    max_fraction: float = 0.5,
    foreground: np.ndarray | None = None,
    min_foreground_overlap: float = 0.5,
) -> tuple[np.ndarray, dict[int, float]]:
    """Resolve possibly overlapping boolean masks into a label image with per-instance scores.

    Masks come as crops (window, pixels) so that hundreds of cells on a large image never need
    hundreds of full-size arrays. Masks covering more than ``max_fraction`` of the image are
    dropped, and so are masks lying mostly on background when a ``foreground`` estimate is given.
    Where masks overlap, the higher score wins. Each instance then keeps its largest connected
    part with holes filled; parts under ``min_area`` pixels are dropped. Ids are 1..N in the
    order of the input masks.
    """
    total = shape[0] * shape[1]
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")  # low first: high wins
    canvas = np.zeros(shape, dtype=np.int64)  # index + 1 into crops
    for i in order:
        window, mask = crops[i]
        area = int(mask.sum())
        if area == 0 or area > max_fraction * total:
            continue
        if foreground is not None and foreground[window][mask].mean() < min_foreground_overlap:
            continue
        canvas[window][mask] = i + 1
    return relabel_clean(canvas, {i + 1: float(scores[i]) for i in range(len(crops))}, min_area)


def relabel_clean(
    labels: np.ndarray, scores: dict[int, float], min_area: int = 15
) -> tuple[np.ndarray, dict[int, float]]:
    """Keep each instance's largest connected part, fill its holes, drop specks, renumber 1..N."""
    out = np.zeros(labels.shape, dtype=np.uint32)
    out_scores: dict[int, float] = {}
    next_id = 1
    for inst, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        mask = labels[sl] == inst
        parts, n = ndi.label(mask)
        if n > 1:
            sizes = np.bincount(parts.ravel())[1:]
            mask = parts == (int(np.argmax(sizes)) + 1)
        mask = ndi.binary_fill_holes(mask)
        if mask.sum() < min_area:
            continue
        region = out[sl]
        region[mask & (region == 0)] = next_id  # a filled hole never takes another instance's pixels
        out_scores[next_id] = scores.get(inst, 0.0)
        next_id += 1
    return out, out_scores

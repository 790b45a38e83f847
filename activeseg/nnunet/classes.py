"""Instances <-> the three classes nnU-Net learns: background 0, cell interior 1, cell border 2.

A fourth value, IGNORE, marks pixels a case does not vouch for (nnU-Net's ignore label: they add
nothing to the loss); it is written only into datasets that have such pixels.

nnU-Net segments classes, not instances (its maintainers' recipe for instances is exactly this):
the border class keeps touching cells apart, and after prediction every interior component seeds
one instance that grows back over the border pixels nearest to it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries, watershed

BACKGROUND, INTERIOR, BORDER, IGNORE = 0, 1, 2, 3
LABELS = {"background": BACKGROUND, "cell": INTERIOR, "border": BORDER}
#: nnU-Net wants the ignore label named "ignore" and above every class
LABELS_WITH_IGNORE = {**LABELS, "ignore": IGNORE}


def instances_to_classes(labels: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """uint8 class map: each instance's outermost pixel ring is border, the rest interior, and
    the pixels of the ``ignore`` mask IGNORE."""
    border = find_boundaries(labels, mode="inner") & (labels > 0)
    out = np.zeros(labels.shape, dtype=np.uint8)
    out[labels > 0] = INTERIOR
    out[border] = BORDER
    if ignore is not None:
        out[ignore] = IGNORE
    return out


def classes_to_instances(classes: np.ndarray, min_area: int = 1) -> np.ndarray:
    """Instances from a class map: interior components are seeds, interior and border the extent.

    Border pixels join the nearest seed. A foreground component with no interior at all (a cell
    one or two pixels thin) becomes an instance of its own instead of vanishing.
    """
    fg = classes > 0
    seeds, n = ndi.label(classes == INTERIOR)
    if n:  # flood from the seeds over connected foreground, nearest seed first
        labels = watershed(ndi.distance_transform_edt(seeds == 0), seeds, mask=fg)
    else:
        labels = np.zeros(classes.shape, dtype=np.int32)
    orphans, _ = ndi.label(fg & (labels == 0))
    labels = np.where(orphans > 0, orphans + labels.max(), labels)
    if min_area > 1:
        sizes = np.bincount(labels.ravel())
        labels[sizes[labels] < min_area] = 0
    return _relabel(labels)


def _relabel(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.uint32)
    return lut[labels]

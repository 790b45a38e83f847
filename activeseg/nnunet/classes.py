"""Instances <-> the three classes nnU-Net learns: background 0, cell interior 1, cell border 2.

A fourth value, IGNORE, marks pixels a case does not vouch for (nnU-Net's ignore label: they add
nothing to the loss); it is written only into datasets that have such pixels.

nnU-Net segments classes, not instances (its maintainers' recipe for instances starts from this):
the border class keeps touching cells apart, and after prediction the interior seeds instances that
grow back over the border pixels nearest to them. A one-pixel border is hard to predict where cells
touch, so an interior component may hold several cells; it is split where its distance map has
more than one peak of depth ``SPLIT_DEPTH``, as the classical labeller splits its foreground.
Measured on training images (``benchmarks/instance_split.py``): nnU-Net models trained on
pseudo-labels merged a quarter of the cells in dense fields, and splitting took their mSA from
0.509 to 0.549 on 256x256 fields and from 0.523 to 0.602 on 520x696 fields.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from activeseg.labellers.postprocess import grow, peak_seeds

BACKGROUND, INTERIOR, BORDER, IGNORE = 0, 1, 2, 3
LABELS = {"background": BACKGROUND, "cell": INTERIOR, "border": BORDER}
#: nnU-Net wants the ignore label named "ignore" and above every class
LABELS_WITH_IGNORE = {**LABELS, "ignore": IGNORE}
#: minimum depth (px) of a peak of the interior's distance map that seeds an instance of its own;
#: the classical labeller's own depth; of 0.5-3 px, the best on 520x696 training fields and within
#: 0.005 of 0.5 px on 256x256 ones, where it keeps more of a perfect class map (instance_split.py)
SPLIT_DEPTH = 1.0


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


def classes_to_instances(
    classes: np.ndarray, min_area: int = 1, split_depth: float | None = SPLIT_DEPTH
) -> np.ndarray:
    """Instances from a class map: interior seeds, interior and border the extent.

    With ``split_depth`` each peak of the interior's (smoothed) distance map at least that deep
    seeds an instance; with None each interior component does (activeseg before 2026-12-07, kept
    so that older studies continue with what they measured). Border pixels join the nearest seed.
    A foreground component with no seed (a cell one or two pixels thin) becomes an instance of its
    own instead of vanishing.
    """
    fg = classes > 0
    interior = classes == INTERIOR
    if split_depth is None:  # each component floods the border pixels nearest to it
        seeds, _ = ndi.label(interior)
        labels = grow(seeds, ndi.distance_transform_edt(seeds == 0), fg)
    else:  # from the peaks downhill, so a merged blob parts at its necks
        seeds, distance = peak_seeds(interior, split_depth)
        labels = grow(seeds, -distance, fg)
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

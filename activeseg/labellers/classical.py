"""Threshold + distance-transform watershed: the baseline, and the source of box prompts for SAM.

Each image is first read (``activeseg.labellers.modality``): fluorescence is thresholded as it
is, stained tissue by its darkest channel, brightfield by its optical density with everything
wider than an object removed, so the nuclei, not the cells around them, stand out. Brightfield
has three levels (background, cytoplasm, nuclei): its threshold is the upper of Otsu's two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu, threshold_otsu
from skimage.measure import regionprops

from activeseg.labellers.base import PseudoLabeler, Segmentation
from activeseg.labellers.modality import MODALITIES, object_diameter, object_signal, read_modality
from activeseg.labellers.postprocess import grow, peak_seeds, relabel_clean

AUTO = "auto"


@dataclass(frozen=True)
class ClassicalSettings:
    sigma: float = 0.5  # Gaussian smoothing before thresholding (px)
    h: float = 1.0  # minimum depth of a distance-map peak to seed its own instance (px)
    min_area: int = 15  # instances smaller than this are specks (px)
    modality: str = AUTO  # "auto" reads each image; or one of MODALITIES for every image
    background_width: float = 1.0  # brightfield: wider than this many object diameters is background

    def __post_init__(self) -> None:
        if self.modality != AUTO and self.modality not in MODALITIES:
            raise ValueError(f"modality {self.modality!r} is not auto or one of {', '.join(MODALITIES)}")


class ClassicalLabeler(PseudoLabeler):
    def __init__(self, settings: ClassicalSettings | None = None) -> None:
        self.params = settings or ClassicalSettings()
        #: "classical", or "classical-<modality>" where one modality is forced on every image
        self.name = "classical" if self.params.modality == AUTO else f"classical-{self.params.modality}"

    def settings(self) -> dict[str, Any]:
        return asdict(self.params)

    def foreground(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(smoothed object signal, foreground mask): objects made bright, then thresholded."""
        modality = read_modality(image) if self.params.modality == AUTO else self.params.modality
        signal = object_signal(image, modality)
        if modality == "brightfield":
            width = 2 * int(self.params.background_width * object_diameter(signal) / 2) + 1
            signal = signal - ndi.grey_opening(signal, size=(width, width))
        smooth = ndi.gaussian_filter(signal, self.params.sigma)
        if smooth.max() <= smooth.min():
            return smooth, np.zeros(smooth.shape, dtype=bool)
        return smooth, ndi.binary_fill_holes(smooth > _threshold(smooth, modality))

    def segment(self, image: np.ndarray) -> Segmentation:
        smooth, fg = self.foreground(image)
        if not fg.any():
            return Segmentation(np.zeros(fg.shape, dtype=np.uint32), {})
        seeds, distance = peak_seeds(fg, self.params.h)
        labels = grow(seeds, -distance, fg)
        scores = self._confidences(labels, smooth, fg)
        labels, scores = relabel_clean(labels, scores, self.params.min_area)
        return Segmentation(labels, scores)

    @staticmethod
    def _confidences(labels: np.ndarray, smooth: np.ndarray, fg: np.ndarray) -> dict[int, float]:
        """Contrast against the background times solidity, each in [0, 1].

        Bright, convex objects are likely single nuclei; faint or ragged ones are the ones a
        person should look at.
        """
        bg = float(np.median(smooth[~fg])) if (~fg).any() else float(smooth.min())
        top = float(np.percentile(smooth[fg], 99))
        span = max(top - bg, 1e-9)
        scores = {}
        for region in regionprops(labels, intensity_image=smooth):
            contrast = np.clip((region.intensity_mean - bg) / span, 0.0, 1.0)
            scores[region.label] = float(contrast * region.solidity)
        return scores


def _threshold(smooth: np.ndarray, modality: str) -> float:
    """Otsu's threshold; for brightfield the upper of the three-level one (nuclei above cytoplasm)."""
    if modality == "brightfield" and len(np.unique(smooth)) >= 3:
        return float(threshold_multiotsu(smooth, classes=3)[1])
    return float(threshold_otsu(smooth))

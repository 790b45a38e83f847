"""Threshold + distance-transform watershed: the baseline, and the source of box prompts for SAM.

Works on fluorescence-like images (bright objects, dark background) and inverts itself when the
thresholded foreground covers most of the image (dark objects on a bright background).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.measure import regionprops

from activeseg.imageio import model_channels
from activeseg.labellers.base import PseudoLabeler, Segmentation
from activeseg.labellers.postprocess import grow, peak_seeds, relabel_clean


@dataclass(frozen=True)
class ClassicalSettings:
    sigma: float = 0.5  # Gaussian smoothing before thresholding (px)
    h: float = 1.0  # minimum depth of a distance-map peak to seed its own instance (px)
    min_area: int = 15  # instances smaller than this are specks (px)


def grey(image: np.ndarray) -> np.ndarray:
    """One float channel: the mean of the image's channels (one channel for R = G = B images)."""
    return model_channels(image).astype(np.float64).mean(axis=0)


class ClassicalLabeler(PseudoLabeler):
    name = "classical"

    def __init__(self, settings: ClassicalSettings | None = None) -> None:
        self.params = settings or ClassicalSettings()

    def settings(self) -> dict[str, Any]:
        return asdict(self.params)

    def foreground(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(smoothed grey image, foreground mask) by Otsu's threshold."""
        smooth = ndi.gaussian_filter(grey(image), self.params.sigma)
        if smooth.max() <= smooth.min():
            return smooth, np.zeros(smooth.shape, dtype=bool)
        fg = smooth > threshold_otsu(smooth)
        if fg.mean() > 0.5:  # objects are the minority: dark objects on a bright field
            smooth = smooth.max() - smooth
            fg = ~fg
        return smooth, ndi.binary_fill_holes(fg)

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

"""What kind of microscopy image this is, read from its pixels, and how big its objects are.

The classical labeller thresholds whatever is brightest; that is right for fluorescence only. On
DSB2018's brightfield fields (grey nuclei inside grey cytoplasm on a bright background) it found
the cells' outlines, not the nuclei (mSA 0.011), and on its stained tissue (dark purple nuclei on
a pale background) it read the grey mean of the colours. So each image is first sorted:

| modality | how it is recognised | what the labeller segments |
|---|---|---|
| ``fluorescence`` | a dark background (most pixels below Otsu's threshold) | the grey image |
| ``stained`` | colour channels that differ, and a bright background | the darkest channel, inverted |
| ``brightfield`` | grey, with a bright background | optical density minus anything wider than an object |

The object size comes from the image too: the scale at which a Laplacian of Gaussian answers
most strongly (a blob of diameter d answers most at sigma = d / 2 sqrt 2). It sets how wide a
structure brightfield's background removal keeps, and ``activeseg init`` reports it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from activeseg.imageio import model_channels

Modality = Literal["fluorescence", "stained", "brightfield"]
MODALITIES: tuple[Modality, ...] = ("fluorescence", "stained", "brightfield")

#: what each modality's objects look like, for people
LOOKS = {
    "fluorescence": "bright objects on a dark background",
    "stained": "dark stained objects on a bright, coloured background",
    "brightfield": "dark objects on a bright grey background",
}
#: LoG scales tried, px (object diameters about 6 to 45 px)
SCALES = 2.0 ** np.arange(1.0, 4.01, 0.25)
#: the share of pixels the scale is judged on (the objects' strongest answers, not the background)
TOP_PERCENTILE = 99.5
#: the longest side the scale is estimated at; larger images are subsampled first (speed)
SCALE_SIDE = 1024


@dataclass(frozen=True)
class ImageKind:
    """How an image (or a collection) looks: its ``modality`` and typical object ``diameter`` (px)."""

    modality: Modality
    diameter: float

    def describe(self) -> str:
        return f"{self.modality} ({LOOKS[self.modality]}), objects about {self.diameter:.0f} px across"


def grey(image: np.ndarray) -> np.ndarray:
    """One float channel: the mean of the image's channels (one channel for R = G = B images)."""
    return model_channels(image).astype(np.float64).mean(axis=0)


def bright_background(image: np.ndarray) -> bool:
    """Whether the background is the bright part: more than half the pixels above Otsu's
    threshold or, for colour images, a median above the middle of the range (densely packed
    stained nuclei can cover half a field)."""
    g = ndi.gaussian_filter(grey(image), 0.5)
    if g.max() <= g.min():
        return False
    if (g > threshold_otsu(g)).mean() > 0.5:
        return True
    low, high = np.percentile(g, (1, 99))
    return is_colour(image) and float(np.median(g)) > (low + high) / 2


def is_colour(image: np.ndarray) -> bool:
    """Three channels that differ (R = G = B images are grey; see ``model_channels``)."""
    return model_channels(image).shape[0] == 3


def read_modality(image: np.ndarray) -> Modality:
    if not bright_background(image):
        return "fluorescence"
    return "stained" if is_colour(image) else "brightfield"


def object_signal(image: np.ndarray, modality: Modality) -> np.ndarray:
    """The image as bright objects on a dark background, before any background removal."""
    channels = model_channels(image).astype(np.float64)
    if modality == "fluorescence":
        return channels.mean(axis=0)
    if modality == "stained":  # stain absorbs: the darkest channel shows the most of it
        darkest = channels.min(axis=0)
        return darkest.max() - darkest
    light = channels.mean(axis=0)  # brightfield: optical density against the bright background
    return -np.log((light + 1.0) / (np.percentile(light, 99) + 1.0))


def object_diameter(signal: np.ndarray) -> float:
    """Typical diameter (px) of the bright blobs in ``signal``, by the LoG scale that answers most."""
    step = int(np.ceil(max(signal.shape) / SCALE_SIDE))  # every step-th pixel of a large image
    small = ndi.gaussian_filter(signal, step / 2)[::step, ::step] if step > 1 else signal
    spread = small.std()
    if spread == 0:
        return float(2 * np.sqrt(2) * SCALES[0])
    small = (small - small.mean()) / spread
    scales = [s for s in SCALES if s / step >= 1.0]
    answers = [_blob_answer(small, s / step) for s in scales]
    return float(2 * np.sqrt(2) * scales[int(np.argmax(answers))])


def _blob_answer(signal: np.ndarray, sigma: float) -> float:
    """How strongly blobs of scale ``sigma`` stand out: the top of the scale-normalised LoG."""
    return float(np.percentile(-ndi.gaussian_laplace(signal, sigma) * sigma**2, TOP_PERCENTILE))


def read_kind(image: np.ndarray) -> ImageKind:
    modality = read_modality(image)
    return ImageKind(modality, object_diameter(object_signal(image, modality)))


def collection_kind(images: Iterable[np.ndarray]) -> ImageKind | None:
    """The most common modality of ``images`` and their median object diameter (None: no images)."""
    kinds = [read_kind(image) for image in images]
    if not kinds:
        return None
    modality = Counter(k.modality for k in kinds).most_common(1)[0][0]
    return ImageKind(modality, float(np.median([k.diameter for k in kinds])))

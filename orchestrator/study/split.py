"""One image collection split into a pool and a held-out test set, as a lab sees its own images.

A lab annotates k of its images and wants the rest (and next month's images from the same
microscope) segmented well. So the study draws both sets from one collection, by seed and
stratified by image size (on DSB2018 a size is one microscope and magnification), instead of
testing on another distribution than the pool.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from PIL import Image as PILImage

from activeseg.datasets import Sample


def image_size(sample: Sample) -> tuple[int, int]:
    """(height, width) from the file's header, without decoding the pixels."""
    with PILImage.open(sample.image) as image:
        return image.height, image.width


def split_pool_test(
    samples: Sequence[Sample], test_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """(pool, test): ``round(test_fraction * n)`` test images, each image size represented in
    proportion (largest remainders decide the fractions), drawn by ``seed``; both in input order."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"the test fraction must be between 0 and 1, got {test_fraction}")
    strata: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        strata[image_size(sample)].append(index)
    keys = sorted(strata)
    quotas = np.array([len(strata[k]) * test_fraction for k in keys])
    counts = np.floor(quotas).astype(int)
    extra = round(test_fraction * len(samples)) - int(counts.sum())
    order = sorted(range(len(keys)), key=lambda i: (-(quotas[i] - counts[i]), keys[i]))
    counts[order[:extra]] += 1
    rng = np.random.default_rng(seed)
    test: set[int] = set()
    for key, count in zip(keys, counts, strict=True):
        test.update(int(i) for i in rng.permutation(strata[key])[:count])
    pool = [s for i, s in enumerate(samples) if i not in test]
    return pool, [s for i, s in enumerate(samples) if i in test]

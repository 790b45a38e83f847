"""``activeseg init --regions auto``: polygons for dense or smooth cells, brush masks only for sparse
cells whose shapes an outline loses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from activeseg.datasets import read_dataset
from activeseg.labellers import PseudoLabeler
from activeseg.labellers.base import Segmentation
from orchestrator.prelabel.region_choice import BRUSH_MAX_CELLS, choose_regions, polygon_round_trip


def _cells(shape: tuple[int, int], centres: list[tuple[int, int]], radius: int, hole: int = 0) -> np.ndarray:
    """Instance labels: one disk per centre, with a round hole of radius ``hole`` in its middle."""
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, dtype=np.uint16)
    for index, (r, c) in enumerate(centres, start=1):
        distance = np.hypot(rows - r, cols - c)
        labels[(distance <= radius) & (distance >= hole)] = index
    return labels


CENTRES = [(40, 40), (40, 130), (130, 40), (130, 130), (85, 85)]


def _folder(root: Path, hole: int, n: int = 3) -> Path:
    """Fluorescence-like images: bright cells on a dark, slightly noisy background."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cells = _cells((170, 170), CENTRES, radius=30, hole=hole) > 0
        image = np.clip(20 + 180 * cells + rng.normal(0, 5, cells.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"field-{i}.png")
    return root


class ThresholdLabeler(PseudoLabeler):
    """Bright connected pixels, holes kept: like SAM's masks, unlike the classical labeller's."""

    name = "threshold"

    def settings(self) -> dict[str, int]:
        return {"threshold": 100}

    def segment(self, image: np.ndarray) -> Segmentation:
        labels, n = ndimage.label(image > 100)
        return Segmentation(labels.astype(np.uint16), {i: 1.0 for i in range(1, n + 1)})


def test_polygon_round_trip_keeps_disks_and_loses_rings() -> None:
    assert polygon_round_trip(_cells((170, 170), CENTRES, radius=30)) > 0.95
    # an outline cannot carry a hole: the ring comes back as a full disk
    assert polygon_round_trip(_cells((170, 170), CENTRES, radius=30, hole=22)) < 0.5
    assert polygon_round_trip(np.zeros((8, 8), dtype=np.uint16)) == 1.0


def test_dense_fields_get_polygons(sample_dir: Path) -> None:
    choice = choose_regions(read_dataset(sample_dir))
    assert choice.kind == "polygon" and choice.images == min(20, len(read_dataset(sample_dir)))
    assert choice.densest is not None and choice.densest > BRUSH_MAX_CELLS
    assert f"past {BRUSH_MAX_CELLS} cells" in choice.why


def test_sparse_smooth_fields_get_polygons(tmp_path: Path) -> None:
    choice = choose_regions(read_dataset(_folder(tmp_path, hole=0)))
    assert choice.kind == "polygon" and choice.densest == len(CENTRES), choice.why
    assert "outlines keep the cells" in choice.why and "classical" in choice.why


@pytest.mark.parametrize(("centres", "kind"), [(CENTRES, "brush"), (CENTRES * 6, "polygon")])
def test_ring_cells_get_brush_masks_only_when_sparse(tmp_path: Path, centres: list, kind: str) -> None:
    """Rings lose their holes as outlines: brush masks keep them where the page can afford it."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        rings = _cells((170, 170), CENTRES, radius=30, hole=22) > 0
        Image.fromarray((20 + 180 * rings).astype(np.uint8)).save(images / f"field-{i}.png")
    if len(centres) > BRUSH_MAX_CELLS:  # a dense field of 30 small rings beside them
        rings = np.zeros((170, 170), dtype=bool)
        for r in range(6):
            for c in range(5):
                rows, cols = np.indices(rings.shape)
                d = np.hypot(rows - (14 + 28 * r), cols - (17 + 34 * c))
                rings |= (d <= 11) & (d >= 6)
        Image.fromarray((20 + 180 * rings).astype(np.uint8)).save(images / "dense.png")
    choice = choose_regions(read_dataset(tmp_path), ThresholdLabeler())
    assert choice.kind == kind, choice.why
    assert choice.polygon_msa is not None and choice.polygon_msa < 0.95 and "threshold" in choice.why


def test_no_images_default_to_polygons() -> None:
    assert choose_regions([]).kind == "polygon"

"""Reading an image before segmenting it: its modality, its objects' size, and the classical
labeller that follows both (fluorescence as before, stained tissue, brightfield)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from activeseg.datasets import read_dataset
from activeseg.imageio import read_image, read_label_image
from activeseg.labellers import build_pseudolabeler
from activeseg.labellers.classical import ClassicalLabeler, ClassicalSettings
from activeseg.labellers.modality import collection_kind, object_diameter, read_kind, read_modality
from activeseg.metrics import score_dataset, score_image
from activeseg.projectstate import ProjectState
from orchestrator.prelabel.labeller_fit import in_use
from tests.conftest import SHARED_DATA

NUCLEI = [(40, 40), (40, 120), (120, 60), (150, 150), (90, 170)]


def field(background: float, cell: float | None, nucleus: float, radius: int = 9) -> np.ndarray:
    """A 200x200 grey field: nuclei of ``radius`` at NUCLEI, each inside a wide cell if ``cell``."""
    rng = np.random.default_rng(0)
    img = np.full((200, 200), background, np.float64)
    for y, x in NUCLEI:
        if cell is not None:
            img[disk((y, x), 3 * radius, shape=img.shape)] = cell
    for y, x in NUCLEI:
        img[disk((y, x), radius, shape=img.shape)] = nucleus
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def nuclei_truth(radius: int = 9) -> np.ndarray:
    truth = np.zeros((200, 200), np.uint16)
    for i, (y, x) in enumerate(NUCLEI, start=1):
        truth[disk((y, x), radius, shape=truth.shape)] = i
    return truth


def test_each_modality_is_recognised() -> None:
    assert read_modality(field(20, None, 200)) == "fluorescence"
    assert read_modality(field(220, 150, 80)) == "brightfield"
    pale_pink = np.stack([field(230, None, 90), field(200, None, 40), field(225, None, 140)], axis=-1)
    assert read_modality(pale_pink) == "stained"
    assert read_modality(np.stack([field(20, None, 200)] * 3, axis=-1)) == "fluorescence"  # R = G = B


@pytest.mark.parametrize("radius", [5, 9, 16])
def test_object_size_is_read_from_the_image(radius: int) -> None:
    found = object_diameter(field(10, None, 200, radius).astype(np.float64))
    assert 0.7 * 2 * radius <= found <= 1.4 * 2 * radius


def test_brightfield_nuclei_are_found_inside_their_cells() -> None:
    """Grey cells with darker nuclei on a bright field: the nuclei, not the cells, are the objects
    (a two-level threshold of the inverted image finds the cells, as the labeller did before)."""
    img, truth = field(220, 150, 80), nuclei_truth()
    found = ClassicalLabeler().segment(img)
    assert score_image(truth, found.labels).f1 == 1.0
    assert score_image(truth, found.labels).mean_matched_iou > 0.8
    cells = ClassicalLabeler(ClassicalSettings(modality="fluorescence")).segment(255 - img)
    assert score_image(truth, cells.labels).f1 == 0.0  # what a plain threshold finds: the cells


def test_stained_nuclei_are_found_by_their_darkest_channel() -> None:
    img = np.stack([field(230, None, 90), field(200, None, 40), field(225, None, 140)], axis=-1)
    found = ClassicalLabeler().segment(img)
    assert score_image(nuclei_truth(), found.labels).f1 == 1.0


def test_a_modality_can_be_forced_and_a_wrong_one_is_refused() -> None:
    img = field(220, 150, 80)
    assert ClassicalLabeler(ClassicalSettings(modality="brightfield")).segment(img).n_instances == len(NUCLEI)
    assert ClassicalLabeler().version != ClassicalLabeler(ClassicalSettings(modality="brightfield")).version
    with pytest.raises(ValueError, match="modality 'phase'"):
        ClassicalSettings(modality="phase")
    # the forced variants are labellers of their own, for `activeseg pseudolabels compare`
    forced = build_pseudolabeler("classical-brightfield")
    assert forced.name == "classical-brightfield" and forced.version.startswith("classical-brightfield-")
    by_hand = ClassicalLabeler(ClassicalSettings(modality="brightfield"))
    assert np.array_equal(forced.segment(img).labels, by_hand.segment(img).labels)
    assert build_pseudolabeler("classical").version == ClassicalLabeler().version  # the default's caches hold
    assert in_use(ProjectState(1, pseudo_version=forced.version)) == "classical-brightfield"
    with pytest.raises(ValueError, match="unknown pseudo-labeller 'classical-phase'"):
        build_pseudolabeler("classical-phase")


def test_a_collection_is_described_by_its_majority(sample_dir: Path) -> None:
    images = [read_image(s.image) for s in read_dataset(sample_dir)[:5]]
    kind = collection_kind([*images, field(220, 150, 80)])
    assert kind is not None and kind.modality == "fluorescence"
    assert "fluorescence" in kind.describe() and "px across" in kind.describe()
    assert collection_kind([]) is None


def _group(name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    path = SHARED_DATA / f"dsb2018_stage1_train_{name}"
    if not path.is_dir():
        pytest.skip(f"{path} not present (set ACTIVESEG_SHARED_DATA)")
    return [(read_image(s.image), read_label_image(s.label)) for s in read_dataset(path)[:4]]


@pytest.mark.slow
def test_real_brightfield_and_stained_images_are_read_and_segmented() -> None:
    """On DSB2018's brightfield fields the labeller used to outline whole cells (mSA 0.011 on all
    16); reading the image first finds the nuclei (0.24 on the first 8: docs/results.md)."""
    for name, modality, floor in (("brightfield", "brightfield", 0.15), ("color", "stained", 0.2)):
        pairs = _group(name)
        assert all(read_kind(img).modality == modality for img, _ in pairs)
        lab = ClassicalLabeler()
        scores = score_dataset([(gt, lab.segment(img).labels) for img, gt in pairs])
        assert scores.msa > floor, (name, scores.msa)

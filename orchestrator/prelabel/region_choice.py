"""Which kind of region a new project draws its cells with: polygons or brush masks.

``benchmarks/annotator_page.py`` measured Label Studio's page with one region per cell: polygons
draw 375 cells in 4 s at 0.5 GB above an empty task; brush masks need 4 s and 1 GB more already at
25 cells, 12-16 s and 3.4 GB more at 100, and never draw at 199 or more. Polygons cost fidelity
only: an outline fills holes and smooths ragged edges (mSA 0.991 on the DSB2018 training labels).
So polygons, unless the images are sparse enough for brush masks *and* their cells are shapes an
outline redraws poorly (the classical labeller fills holes, so with it that is rare; SAM's masks
can keep them): then the exact masks are worth their weight. The cells are those of the
pseudo-labeller ``prelabel`` will use, as its regions are what the annotators' page will hold.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from activeseg.datasets import Sample
from activeseg.imageio import read_image
from activeseg.labelconfig import LABEL_CONFIGS, LabelConfigError, RegionConfig, load_label_config
from activeseg.labellers import PseudoLabeler, build_pseudolabeler
from activeseg.labellers.tasks import LabellerConfig
from activeseg.lsclient import LabelStudioClient
from activeseg.metrics import score_image
from activeseg.regions import Kind, labels_to_results, results_to_labels

#: the densest task brush masks were measured usable on (25 cells: drawn in 4 s, page answering)
BRUSH_MAX_CELLS = 25
#: polygon round trip of the pseudo-labels (mSA) below which outlines lose too much of the cells
POLYGON_MIN_MSA = 0.95
SAMPLE_SIZE = 20


@dataclass(frozen=True)
class RegionChoice:
    """The kind chosen, and what it was chosen from (``None`` with no images to measure)."""

    kind: Kind
    why: str
    images: int = 0
    densest: int | None = None
    polygon_msa: float | None = None


def polygon_round_trip(labels: np.ndarray) -> float:
    """mSA of instances drawn as polygons and read back, against the instances."""
    if not labels.any():
        return 1.0
    results = labels_to_results(labels, "label", "image", "Cell", kind="polygon")
    return score_image(labels, results_to_labels(results, *labels.shape)).msa


def choose_regions(
    samples: Sequence[Sample],
    labeller: PseudoLabeler | None = None,
    sample_size: int = SAMPLE_SIZE,
    seed: int = 0,
) -> RegionChoice:
    """Pseudo-label a seeded sample of the images (classical unless ``labeller`` is given) and
    choose their region kind (module docstring)."""
    if not samples:
        return RegionChoice("polygon", "no images to measure; polygons draw any density")
    labeller = labeller or build_pseudolabeler("classical")
    picked = random.Random(seed).sample(list(samples), min(sample_size, len(samples)))
    counts, fidelity = [], []
    for sample in tqdm(picked, desc="counting cells", unit="img", leave=False):
        found = labeller.segment(read_image(sample.image))
        counts.append(found.n_instances)
        fidelity.append(polygon_round_trip(found.labels))
    densest, msa = max(counts), float(np.mean(fidelity))
    measured = (
        f"{len(picked)} sampled images: at most {densest} cells by the {labeller.name} pseudo-labeller, "
        f"polygon round trip mSA {msa:.3f}"
    )
    if densest > BRUSH_MAX_CELLS:
        why = f"{measured}; brush masks slow Label Studio's page past {BRUSH_MAX_CELLS} cells"
        return RegionChoice("polygon", why, len(picked), densest, msa)
    if msa < POLYGON_MIN_MSA:
        why = f"{measured}; sparse enough for brush masks, whose exact shapes outlines miss"
        return RegionChoice("brush", why, len(picked), densest, msa)
    why = f"{measured}; outlines keep the cells and draw faster than brush masks"
    return RegionChoice("polygon", why, len(picked), densest, msa)


def project_label_config(
    client: LabelStudioClient,
    title: str,
    samples: Sequence[Sample],
    regions: str = "auto",
    label_config: Path | None = None,
) -> tuple[RegionConfig, str]:
    """The label config ``activeseg init`` gives a project, and a line saying why.

    An existing project keeps its own (a brush project stays brush); a given ``label_config``
    wins over ``regions``; ``auto`` measures the images (:func:`choose_regions`).
    """
    given = load_label_config(label_config) if label_config is not None else None
    if given is not None and regions not in ("auto", given.kind):
        raise LabelConfigError(
            f"--regions {regions} contradicts --label-config {label_config} ({given.kind})"
        )
    existing = client.find_project(title)
    if existing is not None:
        config = client.region_config(existing)
        return config, f"{config.kind}, the label config of existing project {existing} (kept)"
    if given is not None:
        return given, f"{given.kind}, from {label_config}"
    if regions != "auto":
        return load_label_config(LABEL_CONFIGS[regions]), f"{regions}, as asked"
    env = LabellerConfig.from_env()
    choice = choose_regions(samples, build_pseudolabeler(env.name, env.sam_checkpoint, env.sam_type))
    return load_label_config(LABEL_CONFIGS[choice.kind]), f"{choice.kind}, chosen from {choice.why}"

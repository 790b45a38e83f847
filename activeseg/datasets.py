"""Reading image folders with optional instance labels.

The layout is the one of ``../shared/data`` and of the bundled sample: ``images/`` (original
files), ``labels/`` (uint16 PNG, 0 = background, 1..N = instances) and an optional
``manifest.csv`` whose ``id``, ``image`` and ``label`` columns give the pairs. Without a manifest,
images and labels are paired by file stem.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from activeseg.imageio import is_supported_image

BUNDLED_SAMPLE = Path(__file__).resolve().parent / "sample_data" / "dsb2018_fluo24"  # in the wheel too


def shared_data() -> Path:
    """The team's public datasets (DSB2018): ``ACTIVESEG_SHARED_DATA``, else ``../shared/data``
    beside the repository. It may not exist; callers say so."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("ACTIVESEG_SHARED_DATA") or default)


@dataclass(frozen=True)
class Sample:
    """One image of a dataset, with its instance labels when the dataset has them."""

    id: str
    image: Path
    label: Path | None


class DatasetError(ValueError):
    """A dataset folder that cannot be read; the message names the folder and the problem."""


def _from_manifest(root: Path, manifest: Path) -> list[Sample]:
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"id", "image"} - set(rows[0].keys() if rows else ())
    if missing:
        raise DatasetError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}")
    samples = []
    for row in rows:
        label = root / row["label"] if row.get("label") else None
        samples.append(Sample(id=row["id"], image=root / row["image"], label=label))
    for s in samples:
        if not s.image.is_file():
            raise DatasetError(f"{manifest}: image {s.image} of {s.id} does not exist")
        if s.label is not None and not s.label.is_file():
            raise DatasetError(f"{manifest}: label {s.label} of {s.id} does not exist")
    return samples


def _from_folders(root: Path) -> list[Sample]:
    image_dir = root / "images" if (root / "images").is_dir() else root
    label_dir = root / "labels"
    labels = {p.stem: p for p in label_dir.iterdir() if is_supported_image(p)} if label_dir.is_dir() else {}
    return [
        Sample(id=p.stem, image=p, label=labels.get(p.stem))
        for p in sorted(image_dir.iterdir())
        if p.is_file() and is_supported_image(p) and not p.name.startswith(".")
    ]


def read_dataset(root: str | os.PathLike[str]) -> list[Sample]:
    """All samples of a dataset folder, in manifest order or sorted by file name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    manifest = root / "manifest.csv"
    samples = _from_manifest(root, manifest) if manifest.is_file() else _from_folders(root)
    if not samples:
        raise DatasetError(f"{root}: no PNG or TIFF images found (looked in {root / 'images'} and {root})")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{root}: image ids are not unique")
    return samples


#: the DSB2018 stage-1 test folder lists, in this file, its images that show the same field of view
#: as a training image; a study that trains on the training set must not test on them
OVERLAP_FILE = "overlap_with_dsb2018_stage1_train.csv"


def held_out(root: str | os.PathLike[str], group: str | None = "fluorescence") -> list[Sample]:
    """A test folder's samples of one manifest ``group`` (None: all), less those its overlap file
    lists. Folders without a ``group`` column or an overlap file are taken whole."""
    root = Path(root)
    samples = read_dataset(root)
    manifest = root / "manifest.csv"
    if group is not None and manifest.is_file():
        with manifest.open(newline="") as f:
            groups = {row["id"]: row.get("group") for row in csv.DictReader(f)}
        if any(g is not None for g in groups.values()):
            samples = [s for s in samples if groups.get(s.id) == group]
    overlap = root / OVERLAP_FILE
    if overlap.is_file():
        with overlap.open(newline="") as f:
            excluded = {row["id"] for row in csv.DictReader(f)}
        samples = [s for s in samples if s.id not in excluded]
    if not samples:
        raise DatasetError(f"{root}: no {group or ''} images left after removing the overlapping ones")
    return samples

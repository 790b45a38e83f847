"""Exporting images and instance labels as an nnU-Net raw dataset (2-D PNG).

Images keep their raw values (8- or 16-bit) and channels follow ``activeseg.imageio``'s
``model_channels`` (alpha dropped, identical colour channels merged), one ``_000c.png`` file per
channel. Labels become the three classes of :mod:`activeseg.nnunet.classes`, plus its ignore
label where a case masks pixels out (then the dataset declares it). Every file is
written atomically and only when its content changed, so a re-export is idempotent and a crash
leaves no half-written case.
"""

from __future__ import annotations

import errno
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from activeseg.fsutil import atomic_write_bytes
from activeseg.imageio import model_channels
from activeseg.nnunet.classes import LABELS, LABELS_WITH_IGNORE, instances_to_classes
from activeseg.nnunet.workspace import Workspace


class DatasetExportError(ValueError):
    """Input that cannot become an nnU-Net dataset; the message names the case."""


@dataclass(frozen=True)
class Case:
    """One training image: its raw pixels, its instance labels, and where the labels came from."""

    id: str
    image: np.ndarray
    labels: np.ndarray
    source: str = "pseudo"  # "human" annotations are trusted over "pseudo" labels
    #: pixels whose label this case does not vouch for (left out of the loss), or None
    ignore: np.ndarray | None = None


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _write_if_changed(path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DatasetExportError(f"disk full while writing {path}; free space and re-run") from None
        raise
    return True


def _channels(case: Case) -> np.ndarray:
    chans = model_channels(case.image)
    if chans.dtype not in (np.uint8, np.uint16):
        raise DatasetExportError(
            f"{case.id}: {chans.dtype} images are not supported for nnU-Net export yet (8- or 16-bit only)"
        )
    return chans


def export_dataset(ws: Workspace, cases: Sequence[Case]) -> dict:
    """Write (or update) the workspace's raw dataset; returns the dataset.json written.

    Cases no longer in ``cases`` are removed, so the dataset always equals the latest export.
    """
    if not ws.root.is_dir():
        raise DatasetExportError(f"workspace {ws.root} does not exist")
    if not cases:
        raise DatasetExportError("no cases to export: the dataset would be empty")
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise DatasetExportError("case ids are not unique")
    n_channels = {_channels(c).shape[0] for c in cases}
    if len(n_channels) != 1:
        raise DatasetExportError(
            f"images have different channel counts {sorted(n_channels)}; export them apart"
        )
    (n_ch,) = n_channels
    images_dir, labels_dir = ws.dataset_dir / "imagesTr", ws.dataset_dir / "labelsTr"
    wanted: set[str] = set()
    listing: dict[str, dict] = {}
    for case in cases:
        chans = _channels(case)
        if chans.shape[1:] != case.labels.shape:
            raise DatasetExportError(
                f"{case.id}: image is {chans.shape[2]}x{chans.shape[1]} but its labels are "
                f"{case.labels.shape[1]}x{case.labels.shape[0]}"
            )
        if (case.labels > 0).all():
            raise DatasetExportError(f"{case.id}: the labels have no background pixel; check the label image")
        if case.ignore is not None and case.ignore.shape != case.labels.shape:
            raise DatasetExportError(f"{case.id}: its ignore mask and its labels differ in size")
        images = [f"imagesTr/{case.id}_{c:04d}.png" for c in range(n_ch)]
        for c, name in enumerate(images):
            _write_if_changed(ws.dataset_dir / name, _png(chans[c]))
        label = f"labelsTr/{case.id}.png"
        _write_if_changed(ws.dataset_dir / label, _png(instances_to_classes(case.labels, case.ignore)))
        wanted.update([*images, label])
        listing[case.id] = {"images": images, "label": label}
    for sub in (images_dir, labels_dir):
        for stale in sub.glob("*.png"):
            if f"{sub.name}/{stale.name}" not in wanted:
                stale.unlink()
    masked = any(c.ignore is not None and c.ignore.any() for c in cases)
    dataset = {
        "channel_names": {str(c): "zscore" for c in range(n_ch)},
        "labels": LABELS_WITH_IGNORE if masked else LABELS,
        "numTraining": len(cases),
        "file_ending": ".png",
        # The files listed: without this nnU-Net finds them with a *fork* pool, and forking this
        # multi-threaded job process (heartbeat, tqdm, torch threads) risks a deadlocked child.
        "dataset": listing,
        "activeseg_sources": {c.id: c.source for c in cases},
    }
    _write_if_changed(ws.dataset_dir / "dataset.json", json.dumps(dataset, indent=1).encode())
    return dataset

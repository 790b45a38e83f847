"""Export instance labels for use outside Label Studio: one label TIFF per image, a COCO file and a
manifest saying where each image's labels came from.

COCO segmentations are *uncompressed* RLE so that no reader needs pycocotools: ``{"size": [h, w],
"counts": [...]}``, runs over the mask in column-major (Fortran) order, starting with a background
run (0 when the first pixel is foreground) and summing to ``h * w``. pycocotools reads this as is
(``frPyObjects``), also for ``iscrowd`` 0; :func:`rle_to_mask` decodes it without pycocotools.

Re-exporting into the same folder rewrites our files and deletes only label TIFFs that the previous
``manifest.csv`` lists and this export no longer has, so files put there by anyone else survive.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from scipy import ndimage

import activeseg
from activeseg.fsutil import atomic_path, atomic_write_text

MANIFEST_FIELDS = ("name", "task_id", "source", "instances")


@dataclass(frozen=True)
class ExportItem:
    name: str  # file-name-safe image name (e.g. "t12_abc123"); the TIFF is <name>.tif
    labels: np.ndarray  # (H, W) integer instance labels, 0 = background
    source: str  # "human" or a model version like "nnunet-r1"
    task_id: int
    image_file: str  # the image's file name/URL as the user knows it (COCO images[].file_name)


@dataclass(frozen=True)
class ExportReport:
    out_dir: Path
    n_images: int
    n_instances: int
    by_source: dict[str, int]  # images per source


def check_name(name: str) -> None:
    """Names become file names inside ``labels/``: nothing that could point elsewhere."""
    if not name or any(bad in name for bad in ("/", "\\", "..", "\0")):
        raise ValueError(f"export name {name!r} is not a plain file name")


def label_dtype(labels: np.ndarray) -> np.dtype:
    """The narrowest of uint16/uint32 that holds ``labels``; anything else cannot be exported."""
    if labels.ndim != 2 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a non-empty 2-D integer array, got {labels.dtype} {labels.shape}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high > np.iinfo(np.uint32).max:
        raise ValueError(f"labels must lie in 0..{np.iinfo(np.uint32).max}, got {low}..{high}")
    return np.dtype(np.uint16 if high < 2**16 else np.uint32)


def runs_from_positions(positions: np.ndarray, total: int) -> list[int]:
    """Uncompressed RLE counts of a mask given its sorted column-major pixel positions."""
    breaks = np.flatnonzero(np.diff(positions) != 1)
    starts = positions[np.r_[0, breaks + 1]]
    ends = positions[np.r_[breaks, len(positions) - 1]] + 1
    counts = np.empty(2 * len(starts), dtype=np.int64)
    counts[0::2] = np.r_[starts[0], starts[1:] - ends[:-1]]
    counts[1::2] = ends - starts
    out = counts.tolist()
    if ends[-1] < total:
        out.append(int(total - ends[-1]))
    return out


def instance_annotations(labels: np.ndarray) -> list[dict[str, Any]]:
    """COCO annotation bodies (no ids yet) of each instance, in increasing label order.

    Each instance is only visited inside its bounding box, so many small cells stay cheap.
    ``instance_label`` is the instance's value in the TIFF, which need not be consecutive.
    """
    height, width = labels.shape
    values, compact = np.unique(labels, return_inverse=True)
    compact = compact.reshape(labels.shape)
    if values.size and values[0] == 0:
        values = values[1:]
    else:
        compact = compact + 1
    out = []
    for index, (value, box) in enumerate(zip(values, ndimage.find_objects(compact), strict=True), start=1):
        rows, cols = box
        col, row = np.nonzero((compact[box] == index).T)  # column-major order
        positions = (col + cols.start) * height + (row + rows.start)
        out.append(
            {
                "category_id": 1,
                "segmentation": {
                    "size": [height, width],
                    "counts": runs_from_positions(positions, labels.size),
                },
                "area": len(positions),
                "bbox": [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start],
                "iscrowd": 0,
                "instance_label": int(value),
            }
        )
    return out


def previous_names(manifest: Path) -> set[str]:
    """Names listed by an earlier export's manifest; unsafe ones are ignored, never acted on."""
    if not manifest.is_file():
        return set()
    names = set()
    with manifest.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row.get("name") or ""
            try:
                check_name(name)
            except ValueError:
                continue
            names.add(name)
    return names


def export_labels(items: Iterable[ExportItem], out_dir: Path, category: str = "Cell") -> ExportReport:
    """Write ``labels/<name>.tif``, ``coco.json`` and ``manifest.csv`` under ``out_dir``.

    Items are consumed one at a time, so a generator keeps only one label image in memory. A bad
    item raises ValueError before its TIFF is written; the previous COCO file and manifest then
    stay in place.
    """
    out_dir = Path(out_dir)
    label_dir = out_dir / "labels"
    manifest = out_dir / "manifest.csv"
    stale = previous_names(manifest)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    by_source: Counter[str] = Counter()
    for image_id, item in enumerate(items, start=1):
        check_name(item.name)
        if item.name in seen:
            raise ValueError(f"export name {item.name!r} appears twice")
        seen.add(item.name)
        dtype = label_dtype(item.labels)
        with atomic_path(label_dir / f"{item.name}.tif") as tmp:
            tifffile.imwrite(tmp, item.labels.astype(dtype, copy=False), compression="zlib")
        height, width = item.labels.shape
        images.append(
            {
                "id": image_id,
                "file_name": item.image_file,
                "height": height,
                "width": width,
                "task_id": int(item.task_id),
                "source": item.source,
            }
        )
        found = instance_annotations(item.labels)
        for ann in found:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
        rows.append(
            {"name": item.name, "task_id": int(item.task_id), "source": item.source, "instances": len(found)}
        )
        by_source[item.source] += 1
    coco = {
        "info": {
            "description": "activeseg instance labels",
            "version": activeseg.__version__,
            "date_created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": category}],
    }
    atomic_write_text(out_dir / "coco.json", json.dumps(coco))
    # Stale TIFFs go before the new manifest: a crash in between leaves them listed, so a later
    # export still removes them.
    for name in stale - seen:
        (label_dir / f"{name}.tif").unlink(missing_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(manifest, text.getvalue())
    return ExportReport(out_dir, len(images), len(annotations), dict(by_source))


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode an uncompressed COCO RLE into an (H, W) bool mask."""
    counts = rle["counts"]
    if isinstance(counts, str | bytes):
        raise ValueError("compressed RLE (string counts) needs pycocotools; this reads list counts only")
    height, width = (int(n) for n in rle["size"])
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != height * width or (counts < 0).any():
        raise ValueError(f"RLE counts must be >= 0 and sum to {height} * {width}, got sum {counts.sum()}")
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape((height, width), order="F")

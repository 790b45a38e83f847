"""Instance label images <-> Label Studio regions, brush or polygon: one region per instance.

A project holds its cells as one kind of region, named by its label config (``brush`` for
``BrushLabels``, ``polygon`` for ``PolygonLabels``). Writing uses that kind; reading takes both,
so a project keeps its annotations whatever kind it used when they were made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from activeseg import brush
from activeseg.polygon import mask_to_points, points_to_pixels, to_percent, trace

Kind = Literal["brush", "polygon"]
KINDS: tuple[Kind, ...] = ("brush", "polygon")
REGION_ID = re.compile(r"^inst-(\d+)$")
RESULT_TYPES = {"brushlabels": "brush", "polygonlabels": "polygon"}


def polygon_region(
    points: list[list[float]], region_id: str, names: tuple[str, str], label: str, shape: tuple[int, int]
) -> dict[str, Any]:
    """One ``polygonlabels`` region: ``names`` is (from_name, to_name), ``shape`` (height, width)."""
    return {
        "id": region_id,
        "from_name": names[0],
        "to_name": names[1],
        "type": "polygonlabels",
        "original_width": shape[1],
        "original_height": shape[0],
        "image_rotation": 0,
        "value": {"points": points, "closed": True, "polygonlabels": [label]},
    }


def labels_to_results(
    labels: np.ndarray,
    from_name: str,
    to_name: str,
    label: str,
    kind: Kind = "brush",
    scores: Mapping[int, float] | None = None,
) -> list[dict[str, Any]]:
    """One region of ``kind`` per instance, in ascending id order, ids ``inst-<id>``.

    The ids let :func:`results_to_labels` restore the same instance ids, so a corrected
    annotation still says which predicted instance each region came from.
    """
    if kind == "brush":
        return brush.labels_to_results(labels, from_name, to_name, label, scores)
    if kind != "polygon":
        raise ValueError(f"unknown region kind {kind!r}; expected one of {', '.join(KINDS)}")
    if labels.ndim != 2:
        raise ValueError(f"label image must be 2-D, got shape {labels.shape}")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"label image must be integer, got {labels.dtype}")
    results = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        outline = trace(labels[box] == index)  # in the instance's box: no full-image mask per cell
        if len(outline) < 3:
            continue
        points = to_percent(outline, labels.shape, (box[0].start, box[1].start))
        region = polygon_region(points, f"inst-{index}", (from_name, to_name), label, labels.shape)
        if scores is not None and index in scores:
            region["score"] = float(scores[index])
        results.append(region)
    return results


def mask_to_result(
    mask: np.ndarray, from_name: str, to_name: str, label: str, kind: Kind, region_id: str
) -> dict[str, Any]:
    """One region of ``kind`` for a boolean mask (the smart tools' answer to a click or box)."""
    if kind == "polygon":
        return polygon_region(mask_to_points(mask), region_id, (from_name, to_name), label, mask.shape)
    return brush.brush_region(brush.encode_mask(mask), region_id, (from_name, to_name), label, mask.shape)


def _pixels(region: Mapping[str, Any], height: int, width: int) -> np.ndarray:
    """Flat (row-major) indices of the pixels a brush or polygon region covers."""
    value = region["value"]
    if region.get("type", "").lower() == "polygonlabels":
        rows, cols = points_to_pixels(value.get("points") or [], height, width)
        return rows * width + cols
    return brush.mask_pixels(value["rle"], height, width)


def region_mask(region: Mapping[str, Any], height: int, width: int) -> np.ndarray:
    """The boolean mask a brush or polygon region covers."""
    out = np.zeros(height * width, dtype=bool)
    out[_pixels(region, height, width)] = True
    return out.reshape(height, width)


def results_to_labels(
    results: Sequence[Mapping[str, Any]],
    height: int,
    width: int,
    from_name: str | None = None,
) -> np.ndarray:
    """Instance label image (uint32) from brush and polygon regions; other result types are skipped.

    A region whose id is ``inst-<n>`` gets id n (unless n is taken), others get fresh ids above
    the largest. Where regions overlap, the later one wins, as it is drawn on top in the editor.
    """
    regions = [
        r
        for r in results
        if r.get("type", "").lower() in RESULT_TYPES
        and (from_name is None or r.get("from_name") == from_name)
    ]
    wanted: list[int | None] = []
    used: set[int] = set()
    for r in regions:
        m = REGION_ID.match(str(r.get("id", "")))
        n = int(m.group(1)) if m else 0
        if n > 0 and n not in used:
            used.add(n)
            wanted.append(n)
        else:
            wanted.append(None)
    next_id = max(used, default=0) + 1
    out = np.zeros(height * width, dtype=np.uint32)
    for r, n in zip(regions, wanted, strict=True):
        w = r.get("original_width", width)
        h = r.get("original_height", height)
        if (h, w) != (height, width):
            raise ValueError(f"region {r.get('id')} is {w}x{h}, the image is {width}x{height}")
        if n is None:
            n, next_id = next_id, next_id + 1
        out[_pixels(r, height, width)] = n
    return out.reshape(height, width)

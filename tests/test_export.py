"""Label export (TIFF, COCO RLE, manifest) and the learning-curve plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from orchestrator.curve import CurvePoint, plot_learning_curve
from orchestrator.export.formats import ExportItem, export_labels, rle_to_mask


def random_instances(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    """Random non-overlapping rectangles labelled 1..n (some may end up clipped or covered)."""
    labels = np.zeros(shape, dtype=np.int32)
    for value in range(1, n + 1):
        r, c = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
        h, w = rng.integers(1, 8, size=2)
        labels[r : r + h, c : c + w] = value
    return labels


def sample_items() -> list[ExportItem]:
    rng = np.random.default_rng(0)
    touching = np.zeros((20, 30), dtype=np.uint8)
    touching[2:10, 3:9] = 1
    touching[2:10, 9:15] = 2  # shares an edge with 1
    touching[19, 29] = 3  # the very last pixel, so the RLE ends on a foreground run
    sparse = np.zeros((16, 16), dtype=np.int64)
    sparse[0, 0] = 7  # the first pixel: the RLE starts with an empty background run
    sparse[5:9, 2:4] = 300
    sparse[10:12, 10:16] = 41
    return [
        ExportItem("t1_random", random_instances(rng, (40, 50), 12), "human", 1, "random.png"),
        ExportItem("t2_touching", touching, "nnunet-r1", 2, "touching.png"),
        ExportItem("t3_sparse", sparse, "human", 3, "http://host/data/sparse.tif"),
        ExportItem("t4_empty", np.zeros((8, 9), dtype=np.uint16), "nnunet-r1", 4, "empty.png"),
    ]


def reference_counts(mask: np.ndarray) -> list[int]:
    """pycocotools' uncompressed RLE, written the slow obvious way: column-major, background first."""
    counts, current, run = [], False, 0
    for pixel in mask.ravel(order="F"):
        if pixel != current:
            counts.append(run)
            current, run = pixel, 0
        run += 1
    return [*counts, run]


def read_manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_round_trip(tmp_path: Path) -> None:
    items = sample_items()
    report = export_labels(items, tmp_path, category="Nucleus")
    coco = json.loads((tmp_path / "coco.json").read_text())

    assert report.n_images == 4
    assert report.by_source == {"human": 2, "nnunet-r1": 2}
    assert report.n_instances == len(coco["annotations"])
    assert coco["categories"] == [{"id": 1, "name": "Nucleus"}]
    assert len({im["id"] for im in coco["images"]}) == 4
    assert len({ann["id"] for ann in coco["annotations"]}) == len(coco["annotations"])

    for item, image in zip(items, coco["images"], strict=True):
        tif = tifffile.imread(tmp_path / "labels" / f"{item.name}.tif")
        assert tif.dtype == np.uint16
        np.testing.assert_array_equal(tif, item.labels)
        assert image["file_name"] == item.image_file
        assert (image["height"], image["width"]) == item.labels.shape
        assert (image["task_id"], image["source"]) == (item.task_id, item.source)

        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        values = [v for v in np.unique(item.labels) if v != 0]
        assert [a["instance_label"] for a in anns] == values
        for ann in anns:
            expected = item.labels == ann["instance_label"]
            assert ann["segmentation"]["size"] == list(item.labels.shape)
            assert sum(ann["segmentation"]["counts"]) == item.labels.size
            assert ann["segmentation"]["counts"] == reference_counts(expected)
            np.testing.assert_array_equal(rle_to_mask(ann["segmentation"]), expected)
            rows, cols = np.nonzero(expected)
            bbox = [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
            assert ann["bbox"] == bbox
            assert ann["area"] == expected.sum()
            assert (ann["category_id"], ann["iscrowd"]) == (1, 0)

    by_name = {row["name"]: row for row in read_manifest(tmp_path)}
    assert by_name["t4_empty"] == {
        "name": "t4_empty",
        "task_id": "4",
        "source": "nnunet-r1",
        "instances": "0",
    }
    assert by_name["t2_touching"]["instances"] == "3"
    first_pixel = next(a for a in coco["annotations"] if a["image_id"] == 3 and a["instance_label"] == 7)
    assert first_pixel["segmentation"]["counts"][:2] == [0, 1]
    last_pixel = next(a for a in coco["annotations"] if a["image_id"] == 2 and a["instance_label"] == 3)
    assert last_pixel["segmentation"]["counts"] == [20 * 30 - 1, 1]


def test_rerun_removes_only_our_stale_files(tmp_path: Path) -> None:
    items = sample_items()
    export_labels(items, tmp_path)
    foreign = tmp_path / "labels" / "mine.tif"
    foreign.write_bytes(b"not ours")

    report = export_labels(items[:2], tmp_path)

    assert report.n_images == 2
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == [
        "mine.tif",
        "t1_random.tif",
        "t2_touching.tif",
    ]
    assert foreign.read_bytes() == b"not ours"
    assert [row["name"] for row in read_manifest(tmp_path)] == ["t1_random", "t2_touching"]
    assert len(json.loads((tmp_path / "coco.json").read_text())["images"]) == 2


def test_tampered_manifest_cannot_delete_outside(tmp_path: Path) -> None:
    outside = tmp_path / "keep.tif"
    outside.write_bytes(b"x")
    out = tmp_path / "export"
    out.mkdir()
    (out / "manifest.csv").write_text("name,task_id,source,instances\n../../keep,1,human,0\n")
    export_labels([], out)
    assert outside.exists()


@pytest.mark.parametrize("name", ["", "a/b", "..", "x..y", "a\\b"])
def test_bad_names_rejected(tmp_path: Path, name: str) -> None:
    item = ExportItem(name, np.zeros((2, 2), dtype=np.uint8), "human", 1, "a.png")
    with pytest.raises(ValueError, match="not a plain file name"):
        export_labels([item], tmp_path)


def test_duplicate_names_and_bad_labels_rejected(tmp_path: Path) -> None:
    item = ExportItem("a", np.zeros((2, 2), dtype=np.uint8), "human", 1, "a.png")
    with pytest.raises(ValueError, match="twice"):
        export_labels([item, item], tmp_path)
    for labels in (
        np.zeros((2, 2), dtype=float),
        np.full((2, 2), -1),
        np.zeros((2, 2, 3), dtype=np.uint8),
        np.zeros((0, 4), dtype=np.uint8),
    ):
        with pytest.raises(ValueError, match="labels must"):
            export_labels([ExportItem("b", labels, "human", 1, "b.png")], tmp_path)


def test_large_labels_written_as_uint32(tmp_path: Path) -> None:
    labels = np.zeros((3, 4), dtype=np.int64)
    labels[1, 1:3] = 70000
    labels[2, 0] = 65535
    export_labels([ExportItem("big", labels, "human", 1, "big.png")], tmp_path)
    tif = tifffile.imread(tmp_path / "labels" / "big.tif")
    assert tif.dtype == np.uint32
    np.testing.assert_array_equal(tif, labels)
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert [a["instance_label"] for a in coco["annotations"]] == [65535, 70000]


def test_rle_is_column_major(tmp_path: Path) -> None:
    labels = np.zeros((2, 3), dtype=np.uint8)
    labels[0, 1] = 1  # row 0, column 1: Fortran position 2
    export_labels([ExportItem("one", labels, "human", 1, "one.png")], tmp_path)
    (ann,) = json.loads((tmp_path / "coco.json").read_text())["annotations"]
    assert ann["segmentation"] == {"size": [2, 3], "counts": [2, 1, 3]}
    assert ann["bbox"] == [1, 0, 1, 1]


def test_rle_to_mask_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="pycocotools"):
        rle_to_mask({"size": [2, 2], "counts": "abc"})
    with pytest.raises(ValueError, match="sum"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2]})


def test_learning_curve_png(tmp_path: Path) -> None:
    points = [CurvePoint(20, 0.61, "nnunet-r2"), CurvePoint(10, 0.52, "nnunet-r1"), CurvePoint(40, 0.7, "r3")]
    out = plot_learning_curve(points, tmp_path / "curve.png", reference=0.75)
    assert out == tmp_path / "curve.png"
    with Image.open(out) as png:
        assert png.format == "PNG"
        assert png.size[0] > 0 and png.size[1] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_learning_curve_needs_two_points(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least two rounds"):
        plot_learning_curve([CurvePoint(10, 0.5, "r1")], tmp_path / "curve.png")
    assert not (tmp_path / "curve.png").exists()

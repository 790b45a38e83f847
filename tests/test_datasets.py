"""Dataset folders: the bundled sample, the shared DSB2018 data, and folders without a manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from activeseg.datasets import DatasetError, read_dataset
from activeseg.imageio import read_image, read_label_image, write_png


def test_bundled_sample(sample_dir: Path) -> None:
    samples = read_dataset(sample_dir)
    assert len(samples) == 24
    for s in samples:
        img, lab = read_image(s.image), read_label_image(s.label)
        assert img.shape[:2] == lab.shape and lab.max() > 0
    assert sum(p.stat().st_size for p in sample_dir.rglob("*") if p.is_file()) < 5 * 2**20
    assert "CC0" in (sample_dir / "README.md").read_text()


def test_shared_dsb_training_set(dsb_train: Path) -> None:
    samples = read_dataset(dsb_train)
    assert len(samples) == 541
    first = samples[0]
    assert read_image(first.image).shape[:2] == read_label_image(first.label).shape


def test_folder_without_manifest_pairs_by_stem(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    write_png(np.zeros((4, 4), np.uint8), tmp_path / "images" / "b.png")
    write_png(np.zeros((4, 4), np.uint8), tmp_path / "images" / "a.png")
    write_png(np.ones((4, 4), np.uint16), tmp_path / "labels" / "a.png")
    (tmp_path / "images" / "notes.txt").write_text("ignored")
    samples = read_dataset(tmp_path)
    assert [s.id for s in samples] == ["a", "b"]
    assert samples[0].label is not None and samples[1].label is None


def test_flat_folder_of_images(tmp_path: Path) -> None:
    write_png(np.zeros((4, 4), np.uint8), tmp_path / "x.png")
    assert [s.id for s in read_dataset(tmp_path)] == ["x"]


def test_errors(tmp_path: Path, sample_dir: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder"):
        read_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no PNG or TIFF"):
        read_dataset(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(sample_dir, broken)
    next((broken / "images").iterdir()).unlink()
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(broken)

"""The study's pool and held-out test from one collection: by seed, in proportion per image size."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from activeseg.datasets import read_dataset
from orchestrator.context import LoopError
from orchestrator.study.runner import Study, StudyConfig
from orchestrator.study.split import image_size, split_pool_test


def test_split_is_seeded_disjoint_and_proportional_per_image_size(sample_dir: Path) -> None:
    samples = read_dataset(sample_dir)  # 14 x 256², 4 x 360², 4 x 696x520, 2 x 640x512
    pool, test = split_pool_test(samples, 0.25, seed=0)
    assert len(test) == 6 and len(pool) == 18
    assert {s.id for s in pool} | {s.id for s in test} == {s.id for s in samples}
    assert not {s.id for s in pool} & {s.id for s in test}
    everywhere, held = Counter(map(image_size, samples)), Counter(map(image_size, test))
    for size, n in everywhere.items():  # each size within one image of its share
        assert abs(held[size] - 0.25 * n) < 1, (size, held[size], n)
    assert split_pool_test(samples, 0.25, seed=0) == (pool, test)
    assert {s.id for s in split_pool_test(samples, 0.25, seed=1)[1]} != {s.id for s in test}
    assert [s.id for s in pool] == [s.id for s in samples if s in pool]  # input order kept
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_pool_test(samples, 1.0, seed=0)


def test_a_study_on_one_collection_draws_pool_and_test_from_it(sample_dir: Path, tmp_path: Path) -> None:
    config = StudyConfig(data=sample_dir, test_fraction=0.25, pool_size=None)
    study = Study(config, tmp_path / "study", report=lambda message: None)
    pool, test = {im.id for im in study.pool}, {im.id for im in study.test}
    assert len(pool) == 18 and len(test) == 6 and not pool & test
    assert test == {s.id for s in split_pool_test(read_dataset(sample_dir), 0.25, seed=0)[1]}
    other = Study(StudyConfig(data=sample_dir, test_fraction=0.25, split_seed=1), tmp_path / "other")
    assert {im.id for im in other.test} != test
    # a folder belongs to one split
    with pytest.raises(LoopError, match="split_seed"):
        Study(StudyConfig(data=sample_dir, test_fraction=0.25, split_seed=1), tmp_path / "study")
    with pytest.raises(LoopError, match="--data, or both --train and --test"):
        StudyConfig(train=sample_dir)
    with pytest.raises(LoopError, match="--test-fraction"):
        StudyConfig(data=sample_dir, test_fraction=0)

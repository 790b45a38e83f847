"""A wheel built from the repo carries what a pip-installed activeseg reads from its own folder:
the label configs ``init`` sends to Label Studio, the demo's bundled sample and the starting model."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from activeseg.datasets import BUNDLED_SAMPLE
from activeseg.labelconfig import LABEL_CONFIGS

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "activeseg"


@pytest.mark.slow
def test_the_wheel_ships_label_configs_sample_and_weights(tmp_path: Path) -> None:
    src = tmp_path / "src"  # what the build reads, copied: it leaves no build/ or egg-info in the checkout
    for part in ("activeseg", "orchestrator", "ml_backend"):
        shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, src / part)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("activeseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [
        *LABEL_CONFIGS.values(),
        *sorted(BUNDLED_SAMPLE.rglob("*.*")),
        *(PACKAGE / "nnunet" / "weights").glob("*.pt"),
    ]
    assert len(shipped) > len(LABEL_CONFIGS) + 24  # the configs, the 24 images with their labels, weights
    missing = [str(p.relative_to(REPO)) for p in shipped if p.relative_to(REPO).as_posix() not in names]
    assert not missing, f"not in the wheel: {missing}"

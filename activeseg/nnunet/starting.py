"""Starting points: network weights a new project's first model starts from instead of random.

On two CPU cores the first model gets a few minutes of training: a randomly initialised U-Net
is still underfit then and loses to the pseudo-labels it learns from (``docs/training.md``).
activeseg therefore ships one starting point, a ``2d_lite`` network trained on the public ground
truth of 517 DSB2018 fluorescence images (made by ``scripts/make_starting_point.py``, which
records how inside the file), as generalist nuclei models are. A project's first model is that
network when its own has the same shape (same depth, width, input channels and classes), by
default without training it on the project's classical pseudo-labels, which made it worse in
every run measured; otherwise it starts from random weights and says why.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activeseg.fsutil import atomic_write_bytes
from activeseg.nnunet.workspace import WorkspaceError

SHIPPED = Path(__file__).resolve().parent / "weights" / "nuclei_fluo_2d_lite.pt"
AUTO, NONE = "auto", "none"
FORMAT = "activeseg-starting-point/1"


@dataclass(frozen=True)
class StartingPoint:
    path: Path
    about: dict[str, Any]
    weights: dict[str, Any]  # nnU-Net network state dict (half precision on disk)

    @classmethod
    def load(cls, path: Path) -> StartingPoint:
        import torch

        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            first_line = (str(e).splitlines() or [type(e).__name__])[0]
            raise WorkspaceError(f"cannot read starting point {path}: {first_line}") from e
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise WorkspaceError(
                f"{path} is not an activeseg starting point (see scripts/make_starting_point.py)"
            )
        return cls(Path(path), json.loads(blob["about"]), blob["network_weights"])

    def mismatch(self, network: Any) -> str | None:
        """Why these weights do not fit ``network`` (None: they do)."""
        own = unwrapped(network).state_dict()
        if set(own) != set(self.weights):
            return f"its network has {len(self.weights)} tensors, this project's {len(own)} (another depth)"
        for name, tensor in own.items():
            if tuple(tensor.shape) != tuple(self.weights[name].shape):
                return f"{name} is {tuple(self.weights[name].shape)} there, {tuple(tensor.shape)} here"
        return None

    def load_into(self, network: Any) -> None:
        network = unwrapped(network)
        own = network.state_dict()
        network.load_state_dict({k: v.to(own[k].dtype) for k, v in self.weights.items()})

    def describe(self) -> str:
        return f"{self.path.name}: {self.about.get('trained_on', 'unknown origin')}"


def unwrapped(network: Any) -> Any:
    """The module itself, under ``torch.compile``'s wrapper if nnU-Net compiled it."""
    return getattr(network, "_orig_mod", network)


def resolve(init: str) -> StartingPoint | None:
    """``--init``: ``auto`` (the shipped starting point), ``none`` (random weights) or a file."""
    if init == NONE:
        return None
    path = SHIPPED if init == AUTO else Path(init)
    if not path.is_file():
        what = "the shipped starting point (a broken install?)" if init == AUTO else "starting point"
        raise WorkspaceError(f"{what} {path} does not exist; --init none trains from random weights")
    return StartingPoint.load(path)


def save_starting_point(checkpoint: Path, out: Path, about: dict[str, Any]) -> None:
    """Keep only an nnU-Net checkpoint's network weights, in half precision, with ``about``."""
    import io

    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    halves: dict[tuple[int, tuple[int, ...]], Any] = {}  # the decoder shares the encoder's tensors
    weights = {}
    for name, tensor in ckpt["network_weights"].items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key not in halves:
            halves[key] = tensor.half() if tensor.is_floating_point() else tensor
        weights[name] = halves[key]
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "about": json.dumps(about), "network_weights": weights}, buf)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())

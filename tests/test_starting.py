"""Starting points: the weights a project's first model starts from (activeseg.nnunet.starting)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from activeseg.nnunet import starting
from activeseg.nnunet.workspace import WorkspaceError


def unet(n_stages: int, in_channels: int = 1) -> torch.nn.Module:
    """A PlainConvUNet as nnU-Net builds it for a 2d_lite plan (16 features doubling)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    features = [min(16 * 2**i, 256) for i in range(n_stages)]
    return PlainConvUNet(
        in_channels, n_stages, features, torch.nn.Conv2d, 3, [1] + [2] * (n_stages - 1), 2, 3, 2,
        conv_bias=True, norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True,
    )  # fmt: skip


def save_from(network: torch.nn.Module, tmp_path: Path) -> Path:
    ckpt = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": network.state_dict()}, ckpt)
    out = tmp_path / "start.pt"
    starting.save_starting_point(ckpt, out, {"trained_on": "a test"})
    return out


def test_a_starting_point_loads_into_a_network_of_its_shape_only(tmp_path: Path) -> None:
    source = unet(4)
    point = starting.StartingPoint.load(save_from(source, tmp_path))
    assert point.about == {"trained_on": "a test"} and "a test" in point.describe()
    assert all(v.dtype == torch.float16 for v in point.weights.values() if v.is_floating_point())

    target = unet(4)
    assert point.mismatch(target) is None
    point.load_into(target)
    for name, tensor in target.state_dict().items():
        assert tensor.dtype == source.state_dict()[name].dtype  # back to the network's own precision
        assert torch.allclose(tensor, source.state_dict()[name], atol=1e-2)

    assert "another depth" in (point.mismatch(unet(5)) or "")
    colour = point.mismatch(unet(4, in_channels=3))
    assert colour is not None and "(16, 3, 3, 3)" in colour  # the first convolution's input channels


def test_init_choices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert starting.resolve("none") is None
    with monkeypatch.context() as m:  # a missing shipped file is said, not hidden behind random weights
        m.setattr(starting, "SHIPPED", tmp_path / "gone.pt")
        with pytest.raises(WorkspaceError, match=r"shipped starting point .* does not exist; --init none"):
            starting.resolve("auto")
    with pytest.raises(WorkspaceError, match="does not exist"):
        starting.resolve(str(tmp_path / "missing.pt"))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(WorkspaceError, match="not an activeseg starting point"):
        starting.resolve(str(foreign))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WorkspaceError, match="cannot read starting point"):
        starting.resolve(str(garbage))
    assert starting.SHIPPED.is_file(), "the shipped starting point is part of the package"
    shipped = starting.resolve("auto")
    assert shipped is not None and shipped.path == starting.SHIPPED
    assert "ground-truth labels" in shipped.about["trained_on"] and shipped.about["iterations"] > 0

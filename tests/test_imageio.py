"""Image IO: raw values kept for the models, display PNGs for people, one clear error per bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from activeseg.imageio import (
    ImageReadError,
    model_channels,
    read_image,
    read_label_image,
    to_display,
    write_display_png,
    write_png,
)

RNG = np.random.default_rng(0)


def _grey(dtype: type, hi: int) -> np.ndarray:
    return RNG.integers(0, hi, (13, 17)).astype(dtype)


CASES = {
    "grey8": _grey(np.uint8, 256),
    "grey16": _grey(np.uint16, 65536),
    "rgb8": RNG.integers(0, 256, (13, 17, 3)).astype(np.uint8),
    "rgba8": RNG.integers(0, 256, (13, 17, 4)).astype(np.uint8),
}


@pytest.mark.parametrize("name", list(CASES))
def test_png_keeps_raw_values(tmp_path: Path, name: str) -> None:
    arr = CASES[name]
    write_png(arr, tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "arr",
    [
        *CASES.values(),
        RNG.integers(0, 65536, (9, 11, 3)).astype(np.uint16),
        RNG.random((9, 11)).astype(np.float32),
    ],
    ids=[*CASES, "rgb16", "float32"],
)
def test_tiff_keeps_raw_values(tmp_path: Path, arr: np.ndarray) -> None:
    photometric = "rgb" if arr.ndim == 3 else "minisblack"
    tifffile.imwrite(tmp_path / "a.tif", arr, photometric=photometric)
    out = read_image(tmp_path / "a.tif")
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)


def test_multipage_tiff_is_not_supported_yet(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tw:
        for _ in range(3):
            tw.write(_grey(np.uint16, 1000))
    with pytest.raises(ImageReadError, match=r"stack.tif.*multi-page or 3-D TIFF.*not supported yet"):
        read_image(path)


def test_volume_tiff_is_not_supported_yet(tmp_path: Path) -> None:
    path = tmp_path / "vol.tiff"
    tifffile.imwrite(path, RNG.integers(0, 100, (5, 8, 8)).astype(np.uint16))
    with pytest.raises(ImageReadError, match=r"not supported yet"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_corrupt_file_names_itself(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageReadError, match=f"broken\\{suffix}: not a readable"):
        read_image(path)


def test_truncated_png(tmp_path: Path) -> None:
    write_png(_grey(np.uint8, 256), tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut.png"):
        read_image(tmp_path / "cut.png")


def test_empty_missing_and_unsupported_files(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty.png: file is empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match=r"nope.tif: no such file"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(ImageReadError, match=r"unsupported file type .jpg"):
        read_image(tmp_path / "a.jpg")


def test_zero_sized_tiff(tmp_path: Path) -> None:
    path = tmp_path / "zero.tif"
    with pytest.warns(UserWarning):
        tifffile.imwrite(path, np.zeros((0, 5), np.uint8))
    with pytest.raises(ImageReadError, match=r"zero.tif"):
        read_image(path)


def test_palette_png_becomes_rgb(tmp_path: Path) -> None:
    Image.fromarray(CASES["rgb8"]).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (13, 17, 3)


def test_model_channels() -> None:
    grey = CASES["grey16"]
    assert model_channels(grey).shape == (1, 13, 17)
    fluo_rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    np.testing.assert_array_equal(model_channels(fluo_rgba), grey[None])
    assert model_channels(CASES["rgb8"]).shape == (3, 13, 17)


def test_display_stretches_dim_16bit_to_full_range(tmp_path: Path) -> None:
    dim = RNG.integers(100, 400, (32, 40)).astype(np.uint16)  # "black" on a 16-bit screen
    disp = to_display(dim)
    assert disp.dtype == np.uint8 and disp.shape == dim.shape
    assert disp.min() == 0 and disp.max() == 255
    # order is kept: a brighter raw pixel is never darker on screen
    order = np.argsort(dim.ravel(), kind="stable")
    assert np.all(np.diff(disp.ravel()[order].astype(int)) >= 0)
    write_display_png(dim, tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        assert im.size == (40, 32) and im.mode == "L"


def test_display_of_colour_and_constant_images() -> None:
    assert to_display(CASES["rgb8"]).shape == (13, 17, 3)
    assert to_display(CASES["rgba8"]).shape == (13, 17, 3)
    np.testing.assert_array_equal(to_display(np.full((4, 4), 7, np.uint16)), 0)


def test_write_png_is_atomic_and_typed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"uint8 or uint16"):
        write_png(np.zeros((2, 2), np.float32), tmp_path / "f.png")
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_label_images(tmp_path: Path) -> None:
    labels = np.zeros((8, 8), np.uint16)
    labels[2:4, 2:4] = 1000
    write_png(labels, tmp_path / "l.png")
    np.testing.assert_array_equal(read_label_image(tmp_path / "l.png"), labels)
    write_png(CASES["rgb8"], tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match=r"2-D integer"):
        read_label_image(tmp_path / "rgb.png")

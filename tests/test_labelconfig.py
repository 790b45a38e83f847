"""Label configs: the shipped one works; unusable ones get a message saying what to change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activeseg.brush import labels_to_results
from activeseg.labelconfig import LabelConfigError, load_label_config, parse_label_config


def test_shipped_config() -> None:
    cfg = load_label_config()
    assert (cfg.from_name, cfg.to_name, cfg.image_key, cfg.label) == ("label", "image", "image", "Cell")


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ('<View><Image name="image" value="$image"/><RectangleLabels name="b" toName="image">'
         '<Label value="Cell"/></RectangleLabels></View>', "no <BrushLabels>"),
        ("<View><Image", "not valid XML"),
        ('<View><Image name="img" value="$image"/><BrushLabels name="l" toName="image">'
         '<Label value="Cell"/></BrushLabels></View>', 'names no <Image name="image">'),
        ('<View><Image name="image" value="image"/><BrushLabels name="l" toName="image">'
         '<Label value="Cell"/></BrushLabels></View>', "needs value="),
        ('<View><Image name="image" value="$image"/><BrushLabels name="l" toName="image">'
         "</BrushLabels></View>", "no <Label"),
    ],
)  # fmt: skip
def test_unusable_configs(xml: str, message: str) -> None:
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(xml)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LabelConfigError, match="cannot read label config"):
        load_label_config(tmp_path / "none.xml")


def test_validation_catches_what_label_studio_would_store_anyway() -> None:
    cfg = load_label_config()
    labels = np.zeros((4, 4), np.uint16)
    labels[1:3, 1:3] = 1
    good = labels_to_results(labels, cfg.from_name, cfg.to_name, cfg.label)
    cfg.validate_prediction({"result": good, "score": 0.3})
    for bad in (
        labels_to_results(labels, "wrong", cfg.to_name, cfg.label),
        labels_to_results(labels, cfg.from_name, cfg.to_name, "Nucleus"),
    ):
        with pytest.raises(ValueError, match="does not fit the label config"):
            cfg.validate_prediction({"result": bad})
    with pytest.raises(ValueError, match="Score"):
        cfg.validate_prediction({"result": good, "score": 3.0})

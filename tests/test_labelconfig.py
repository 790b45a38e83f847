"""Label configs: the shipped one works; unusable ones get a message saying what to change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activeseg.labelconfig import LABEL_CONFIGS, LabelConfigError, load_label_config, parse_label_config
from activeseg.regions import KINDS, labels_to_results


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_configs(kind: str) -> None:
    cfg = load_label_config(LABEL_CONFIGS[kind])
    assert (cfg.kind, cfg.from_name, cfg.to_name, cfg.image_key, cfg.label) == (
        kind,
        "label",
        "image",
        "image",
        "Cell",
    )
    assert load_label_config().kind == "polygon"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ('<View><Image name="image" value="$image"/><RectangleLabels name="b" toName="image">'
         '<Label value="Cell"/></RectangleLabels></View>', "no <PolygonLabels> or <BrushLabels>"),
        ('<View><Image name="image" value="$image"/><BrushLabels name="l" toName="image"><Label value="C"/>'
         '</BrushLabels><PolygonLabels name="p" toName="image"><Label value="C"/></PolygonLabels></View>',
         "needs exactly one"),
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


@pytest.mark.parametrize("kind", KINDS)
def test_validation_catches_what_label_studio_would_store_anyway(kind: str) -> None:
    cfg = load_label_config(LABEL_CONFIGS[kind])
    labels = np.zeros((4, 4), np.uint16)
    labels[1:3, 1:3] = 1
    good = cfg.to_results(labels)
    assert [r["type"] for r in good] == [f"{kind}labels"]
    cfg.validate_prediction({"result": good, "score": 0.3})
    other = "brush" if kind == "polygon" else "polygon"
    for bad in (
        labels_to_results(labels, "wrong", cfg.to_name, cfg.label, kind),
        labels_to_results(labels, cfg.from_name, cfg.to_name, "Nucleus", kind),
        labels_to_results(labels, cfg.from_name, cfg.to_name, cfg.label, other),
    ):
        with pytest.raises(ValueError, match="does not fit the label config"):
            cfg.validate_prediction({"result": bad})
    with pytest.raises(ValueError, match="Score"):
        cfg.validate_prediction({"result": good, "score": 3.0})

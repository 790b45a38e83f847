"""Interactive assist: a smart-tool box or click becomes one SAM mask (real LiteMedSAM weights)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from skimage.measure import regionprops

from activeseg.datasets import read_dataset
from activeseg.imageio import read_label_image
from activeseg.labelconfig import LABEL_CONFIGS, load_label_config
from activeseg.regions import KINDS, region_mask
from ml_backend.app import create_app
from ml_backend.config import BackendConfig
from ml_backend.interactive import parse_context
from ml_backend.service import PredictionService

pytestmark = pytest.mark.slow


def box_context(bbox: tuple[int, int, int, int], h: int, w: int) -> dict:
    r0, c0, r1, c1 = bbox
    return {"result": [{
        "type": "rectanglelabels", "original_width": w, "original_height": h, "from_name": "smart_box",
        "to_name": "image",
        "value": {"x": 100 * c0 / w, "y": 100 * r0 / h, "width": 100 * (c1 - c0) / w,
                  "height": 100 * (r1 - r0) / h, "rectanglelabels": ["Cell"]},
    }]}  # fmt: skip


def point_context(y: float, x: float, h: int, w: int) -> dict:
    return {"result": [{
        "type": "keypointlabels", "original_width": w, "original_height": h, "is_positive": True,
        "value": {"x": 100 * x / w, "y": 100 * y / h, "keypointlabels": ["Cell"]},
    }]}  # fmt: skip


def test_parse_context() -> None:
    prompt = parse_context(box_context((10, 20, 30, 60), 100, 200))
    assert prompt is not None and prompt.label == "Cell" and prompt.points is None
    np.testing.assert_allclose(prompt.box, [20, 10, 60, 30], atol=1e-4)
    prompt = parse_context(point_context(5, 7, 100, 200))
    assert prompt is not None and prompt.box is None
    np.testing.assert_allclose(prompt.points, [[7, 5]], atol=1e-4)
    assert list(prompt.point_labels) == [1]
    assert parse_context(None) is None and parse_context({"result": []}) is None


@pytest.fixture
def served(tmp_path: Path, sample_dir: Path):
    sample = read_dataset(sample_dir)[0]
    root = tmp_path / "root"
    root.mkdir()
    shutil.copyfile(sample.image, root / "a.png")
    service = PredictionService(BackendConfig(model_dir=tmp_path / "md", local_files_root=root, worker="off"))
    return create_app(service.config, service).test_client(), service, read_label_image(sample.label)


@pytest.mark.parametrize("kind", KINDS)
def test_box_prompt_gives_the_nucleus(served, kind: str) -> None:
    """A smart box becomes one region of the project's kind (the config's tag) on the nucleus."""
    client, service, gt = served
    config = load_label_config(LABEL_CONFIGS[kind])
    h, w = gt.shape
    biggest = max(regionprops(gt), key=lambda r: r.area)
    task = {"id": 7, "data": {"image": "/data/local-files/?d=a.png"}}
    body = {
        "tasks": [task],
        "label_config": config.xml,
        "params": {"context": box_context(biggest.bbox, h, w)},
    }
    (answer,) = client.post("/predict", json=body).get_json()["results"]
    (region,) = answer["result"]
    assert region["type"] == f"{kind}labels" and region["id"].startswith("smart-")
    assert region["value"][f"{kind}labels"] == ["Cell"] and 0 <= region["score"] <= 1
    mask = region_mask(region, h, w)
    truth = gt == biggest.label
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.5, iou  # real weights outline the real nucleus

    # the next prompt on the same image reuses the cached embedding
    cy, cx = biggest.centroid
    body["params"]["context"] = point_context(cy, cx, h, w)
    (answer,) = client.post("/predict", json=body).get_json()["results"]
    assert len(answer["result"]) == 1 and service.interactive.embedding_hits == 1

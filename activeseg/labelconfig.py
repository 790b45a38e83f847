"""What activeseg needs from a Label Studio label config: one BrushLabels or PolygonLabels tag
bound to an Image. The tag decides the kind of region every cell is written as."""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from label_studio_sdk.label_interface import LabelInterface

from activeseg.regions import Kind, labels_to_results, results_to_labels

#: the package's links to the repository's top-level label_config*.xml (where an admin looks for
#: them): a wheel copies what they point at, so a pip-installed activeseg has them too
_ROOT = Path(__file__).resolve().parent
#: the shipped label config per kind of region; ``--label-config`` picks one (polygons by default)
LABEL_CONFIGS: dict[Kind, Path] = {
    "polygon": _ROOT / "label_config.xml",
    "brush": _ROOT / "label_config_brush.xml",
}
DEFAULT_LABEL_CONFIG = LABEL_CONFIGS["polygon"]
TAGS: dict[str, Kind] = {"BrushLabels": "brush", "PolygonLabels": "polygon"}


class LabelConfigError(ValueError):
    """The label config cannot carry instance masks; the message says what to change."""


@dataclass(frozen=True)
class RegionConfig:
    """Names that every region must carry, and the regions' kind, read from the config."""

    kind: Kind  # "brush" for BrushLabels, "polygon" for PolygonLabels
    from_name: str  # BrushLabels@name or PolygonLabels@name
    to_name: str  # Image@name
    image_key: str  # task data key the image is read from ($image -> "image")
    labels: tuple[str, ...]
    xml: str

    @property
    def label(self) -> str:
        """The label given to predicted instances: the first one in the config."""
        return self.labels[0]

    @functools.cached_property
    def interface(self) -> LabelInterface:
        """The SDK's parsed view of the config, used for validation."""
        return LabelInterface(self.xml)

    def to_results(
        self, labels: np.ndarray, scores: Mapping[int, float] | None = None
    ) -> list[dict[str, Any]]:
        """One region of this config's kind per instance of ``labels``."""
        return labels_to_results(labels, self.from_name, self.to_name, self.label, self.kind, scores)

    def to_labels(self, results: Sequence[Mapping[str, Any]], height: int, width: int) -> np.ndarray:
        """The instance label image of this config's regions (brush and polygon alike) in ``results``."""
        return results_to_labels(results, height, width, self.from_name)

    def validate_prediction(self, prediction: dict[str, Any]) -> None:
        """Raise ValueError unless Label Studio's own schema accepts ``prediction``.

        Label Studio stores malformed predictions without complaint and then cannot show them,
        so every prediction is checked here before it is sent.
        """
        errors = self.interface.validate_prediction(prediction, return_errors=True)
        if errors:
            raise ValueError(f"prediction does not fit the label config: {errors[0]}")


def parse_label_config(xml: str) -> RegionConfig:
    """Find the BrushLabels or PolygonLabels tag and its Image; raise :class:`LabelConfigError` if
    unusable."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError(f"label config is not valid XML: {exc}") from exc
    found = [tag for name in TAGS for tag in root.findall(f".//{name}")]
    if not found:
        raise LabelConfigError(
            "label config has no <PolygonLabels> or <BrushLabels> tag; activeseg writes one region per cell, "
            'so add e.g. <PolygonLabels name="label" toName="image"><Label value="Cell"/></PolygonLabels>'
        )
    if len(found) > 1:
        names = ", ".join(f"<{t.tag}>" for t in found)
        raise LabelConfigError(f"label config has {names}; activeseg needs exactly one of them")
    tag = found[0]
    from_name, to_name = tag.get("name"), tag.get("toName")
    if not from_name or not to_name:
        raise LabelConfigError(f"<{tag.tag}> needs both a name and a toName attribute")
    images = {img.get("name"): img for img in root.findall(".//Image")}
    if to_name not in images:
        raise LabelConfigError(f'<{tag.tag} toName="{to_name}"> names no <Image name="{to_name}">')
    value = images[to_name].get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise LabelConfigError(f'<Image name="{to_name}"> needs value="$<task data key>", got "{value}"')
    labels = tuple(lab.get("value", "") for lab in tag.findall("Label") if lab.get("value"))
    if not labels:
        raise LabelConfigError(f"<{tag.tag}> has no <Label value=...>; add one, e.g. Cell")
    return RegionConfig(
        kind=TAGS[tag.tag], from_name=from_name, to_name=to_name, image_key=value[1:], labels=labels, xml=xml
    )


def load_label_config(path: str | Path = DEFAULT_LABEL_CONFIG) -> RegionConfig:
    """Read and parse a label config file."""
    path = Path(path)
    try:
        xml = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabelConfigError(f"cannot read label config {path}: {exc.strerror}") from exc
    return parse_label_config(xml)

"""What activeseg needs from a Label Studio label config: one BrushLabels tag bound to an Image."""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

DEFAULT_LABEL_CONFIG = Path(__file__).resolve().parent.parent / "label_config.xml"


class LabelConfigError(ValueError):
    """The label config cannot carry instance masks; the message says what to change."""


@dataclass(frozen=True)
class BrushConfig:
    """Names that every brush result must carry, read from the config."""

    from_name: str  # BrushLabels@name
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

    def validate_prediction(self, prediction: dict[str, Any]) -> None:
        """Raise ValueError unless Label Studio's own schema accepts ``prediction``.

        Label Studio stores malformed predictions without complaint and then cannot show them,
        so every prediction is checked here before it is sent.
        """
        errors = self.interface.validate_prediction(prediction, return_errors=True)
        if errors:
            raise ValueError(f"prediction does not fit the label config: {errors[0]}")


def parse_label_config(xml: str) -> BrushConfig:
    """Find the BrushLabels tag and its Image; raise :class:`LabelConfigError` if unusable."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError(f"label config is not valid XML: {exc}") from exc
    brushes = root.findall(".//BrushLabels")
    if not brushes:
        raise LabelConfigError(
            "label config has no <BrushLabels> tag; activeseg writes one brush region per cell, "
            'so add e.g. <BrushLabels name="label" toName="image"><Label value="Cell"/></BrushLabels>'
        )
    if len(brushes) > 1:
        raise LabelConfigError("label config has several <BrushLabels> tags; activeseg needs exactly one")
    brush = brushes[0]
    from_name, to_name = brush.get("name"), brush.get("toName")
    if not from_name or not to_name:
        raise LabelConfigError("<BrushLabels> needs both a name and a toName attribute")
    images = {img.get("name"): img for img in root.findall(".//Image")}
    if to_name not in images:
        raise LabelConfigError(f'<BrushLabels toName="{to_name}"> names no <Image name="{to_name}">')
    value = images[to_name].get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise LabelConfigError(f'<Image name="{to_name}"> needs value="$<task data key>", got "{value}"')
    labels = tuple(lab.get("value", "") for lab in brush.findall("Label") if lab.get("value"))
    if not labels:
        raise LabelConfigError("<BrushLabels> has no <Label value=...>; add one, e.g. Cell")
    return BrushConfig(from_name=from_name, to_name=to_name, image_key=value[1:], labels=labels, xml=xml)


def load_label_config(path: str | Path = DEFAULT_LABEL_CONFIG) -> BrushConfig:
    """Read and parse a label config file."""
    path = Path(path)
    try:
        xml = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabelConfigError(f"cannot read label config {path}: {exc.strerror}") from exc
    return parse_label_config(xml)

"""The learning curve: model quality against the number of human-annotated images, one point per
active-learning round, to show how close a small core-set gets to full supervision."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from activeseg.fsutil import atomic_path


@dataclass(frozen=True)
class CurvePoint:
    n_annotated: int  # images with a human annotation when the model was trained
    value: float  # e.g. mSA
    label: str  # model version / round name


def plot_learning_curve(
    points: Sequence[CurvePoint],
    out: Path,
    metric: str = "mSA",
    title: str = "activeseg learning curve",
    reference: float | None = None,
    reference_label: str = "reference",
) -> Path:
    """Write a PNG of ``points`` (sorted by annotation count) to ``out`` and return ``out``.

    ``reference`` draws a dashed line, e.g. the score of a fully supervised model. The figure is
    built without pyplot, on an Agg canvas of its own, so the caller's matplotlib backend and
    open figures are left alone.
    """
    if len(points) < 2:
        raise ValueError(f"a learning curve needs at least two rounds of results, got {len(points)}")
    import matplotlib  # imported here: matplotlib is slow to import
    from matplotlib.figure import Figure

    # matplotlib's own defaults, whatever a library changed globally (nnU-Net sets seaborn's
    # font_scale=2.5 when it is imported, which made this plot unreadable)
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        return _plot(points, Path(out), metric, title, (reference, reference_label), Figure)


def _plot(points: Sequence[CurvePoint], out: Path, metric: str, title: str,
          reference: tuple[float | None, str], figure: type) -> Path:  # fmt: skip
    ordered = sorted(points, key=lambda p: p.n_annotated)
    fig = figure(figsize=(6, 4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot([p.n_annotated for p in ordered], [p.value for p in ordered], marker="o", label=metric)
    for p in ordered:
        ax.annotate(p.label, (p.n_annotated, p.value), textcoords="offset points", xytext=(4, 6), fontsize=8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    value, label = reference
    if value is not None:
        ax.axhline(value, linestyle="--", color="grey", label=f"{label} ({value:.3g})")
    ax.set_xlabel("human-annotated images")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out

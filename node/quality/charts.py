"""The Quality page's plots over time as inline SVG (matplotlib): Dice per segment and pipeline version, and
agreement of findings with their references."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    for axes in figure.axes:
        locator = mdates.AutoDateLocator(maxticks=6)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _label(figure: Figure, what: str, title: str) -> Figure:
    """A 0-1 scale named ``what``, the title, a grid and the legend of the figure's one plot."""
    axes = figure.axes[0]
    axes.set_ylim(-0.05, 1.05)
    axes.set_ylabel(what)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower left")
    return figure


def dice_over_time(rows: list[dict[str, Any]]) -> str | None:
    """Each score's Dice at the time it was scored, one series of points per segment and pipeline version."""
    series: dict[str, list[tuple[Any, float]]] = defaultdict(list)
    for row in rows:
        if row["kind"] == "segment" and row["dice"] is not None:
            series[f"{row['pipeline']} {row['version']}: {row['name']}"].append((row["scored_at"], row["dice"]))
    if not series:
        return None
    figure, axes = plt.subplots(figsize=(8, 3.4))
    for name, points in sorted(series.items()):
        points.sort()
        axes.plot(*zip(*points), marker="o", markersize=4, linewidth=1, label=name)
    return _svg(_label(figure, "Dice", "Dice against references over time"))


def agreement_over_time(rows: list[dict[str, Any]]) -> str | None:
    """The running share of findings that agree with their references, per finding and pipeline version."""
    series: dict[str, list[tuple[Any, bool]]] = defaultdict(list)
    for row in rows:
        if row["kind"] == "classification":
            series[f"{row['pipeline']} {row['version']}: {row['name']}"].append((row["scored_at"], row["predicted"] == row["reference"]))
    if not series:
        return None
    figure, axes = plt.subplots(figsize=(8, 3.0))
    for name, points in sorted(series.items()):
        points.sort()
        agreed, shares = 0, []
        for count, (_, agrees) in enumerate(points, start=1):
            agreed += agrees
            shares.append(agreed / count)
        axes.step([t for t, _ in points], shares, where="post", label=name)
    return _svg(_label(figure, "agreement", "Findings agreeing with references (running share)"))

"""The evaluation report's plots as inline SVG (matplotlib): Dice per case and segment, Bland-Altman of
volumes, and each finding's confusion matrix. SVG text keeps report.html one self-contained file."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog: the SVG sits inside HTML


def dice_plot(cases: Sequence[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> str | None:
    """Each scored case's Dice per segment, with the mean and its 95 % confidence interval."""
    labels = list(summary)
    if not labels:
        return None
    figure, axes = plt.subplots(figsize=(max(4.0, 1.6 * len(labels)), 3.6))
    for position, label in enumerate(labels):
        values = [c["segments"][label]["dice"] for c in cases if c["status"] == "ok" and label in c["segments"]]
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
        axes.scatter(position + jitter, values, s=18, alpha=0.7, color="tab:blue")
        mean, interval = summary[label]["dice_mean"], summary[label]["dice_ci95"]
        if mean is not None:
            error = [[mean - interval[0]], [interval[1] - mean]] if interval else None
            axes.errorbar(position + 0.3, mean, yerr=error, fmt="D", color="tab:red", capsize=4)
    axes.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    axes.set_ylim(-0.05, 1.05)
    axes.set_ylabel("Dice")
    axes.set_title("Dice per case (dots), mean and 95 % CI (red)")
    axes.grid(axis="y", alpha=0.3)
    return _svg(figure)


def bland_altman_plot(cases: Sequence[dict[str, Any]]) -> str | None:
    """Volume difference (pipeline - reference) against the mean volume, with the bias and limits of agreement."""
    points: dict[str, list[tuple[float, float]]] = {}
    for case in cases:
        if case["status"] != "ok":
            continue
        for label, score in case["segments"].items():
            ours, theirs = score["volume_ml"], score["reference_volume_ml"]
            points.setdefault(label, []).append(((ours + theirs) / 2, ours - theirs))
    if not points:
        return None
    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    for label, pairs in sorted(points.items()):
        axes.scatter(*zip(*pairs), s=18, label=label)
    differences = np.array([d for pairs in points.values() for _, d in pairs])
    bias, spread = float(differences.mean()), float(differences.std(ddof=1)) if differences.size > 1 else 0.0
    axes.axhline(bias, color="black", linewidth=1, label=f"bias {bias:.1f} mL")
    for limit in (bias - 1.96 * spread, bias + 1.96 * spread):
        axes.axhline(limit, color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel("mean of pipeline and reference volume (mL)")
    axes.set_ylabel("pipeline - reference (mL)")
    axes.set_title("Bland-Altman of volumes (dashed: bias ± 1.96 SD)")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return _svg(figure)


def confusion_plot(concept: str, confusion: dict[str, dict[str, int]]) -> str:
    """Counts of reference (rows) against predicted (columns) values of one finding."""
    classes = list(confusion)
    matrix = np.array([[confusion[truth][guess] for guess in classes] for truth in classes])
    figure, axes = plt.subplots(figsize=(1.2 + 0.9 * len(classes), 1.0 + 0.8 * len(classes)))
    axes.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour)
    axes.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("reference")
    axes.set_title(concept)
    return _svg(figure)

"""The evaluation report on disk: report.json (the numbers) and report.html (one self-contained page: tables
and inline SVG plots, readable offline and attachable to an acceptance-test record)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from pipelines.durable import atomic_file
from pipelines.evaluation import plots

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ report.pipeline }} {{ report.pipeline_version }}: evaluation</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fde8e8; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
</style></head><body>
<h1>{{ report.pipeline }} {{ report.pipeline_version }}</h1>
<p>{{ summary.cases_scored }} case(s) scored, {{ summary.cases_failed }} failed.</p>
{% if summary.segments %}
<h2>Segments</h2>
<table id="segment-summary"><tr><th>segment</th><th>cases</th><th>mean Dice</th><th>95 % CI</th><th>median HD95 (mm)</th></tr>
{% for label, s in summary.segments.items() %}
<tr><td>{{ label }}</td><td class="num">{{ s.cases }}</td><td class="num">{{ s.dice_mean | num }}</td>
<td class="num">{% if s.dice_ci95 %}{{ s.dice_ci95[0] | num }} – {{ s.dice_ci95[1] | num }}{% endif %}</td>
<td class="num">{{ s.hd95_mm_median | num(2) }}</td></tr>
{% endfor %}</table>
{% endif %}
{% for concept, c in summary.classifications.items() %}
<h2>{{ concept }}</h2>
<p>{{ c.cases }} case(s): accuracy {{ c.accuracy | num }}, balanced accuracy {{ c.balanced_accuracy | num }}</p>
<table class="per-class"><tr><th>value</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{% for value, m in c.per_class.items() %}
<tr><td>{{ value }}</td><td class="num">{{ m.precision | num }}</td><td class="num">{{ m.recall | num }}</td>
<td class="num">{{ m.f1 | num }}</td><td class="num">{{ m.support }}</td></tr>
{% endfor %}</table>
{% endfor %}
<h2>Plots</h2>
{% for figure in figures %}<figure>{{ figure | safe }}</figure>{% endfor %}
<h2>Cases</h2>
<table id="cases"><tr><th>case</th><th>status</th><th>segment</th><th>Dice</th><th>HD95 (mm)</th><th>volume (mL)</th>
<th>reference (mL)</th><th>findings</th><th>reason / notes</th></tr>
{% for case in report.cases %}
{% set labels = case.segments | list or [""] %}
{% for label in labels %}{% set s = case.segments.get(label, {}) %}
<tr class="{{ case.status }}"><td>{{ case.case }}</td><td>{{ case.status }}</td><td>{{ label }}</td>
<td class="num">{{ s.dice | num }}</td><td class="num">{{ s.hd95_mm | num(2) }}</td>
<td class="num">{{ s.volume_ml | num(1) }}</td><td class="num">{{ s.reference_volume_ml | num(1) }}</td>
<td>{% if loop.first %}{% for concept, v in case.classifications.items() %}{{ concept }}: {{ v.predicted }} (reference {{ v.reference }})<br>{% endfor %}{% endif %}</td>
<td>{% if loop.first %}{{ case.reason or "" }}{{ case.notes | join("; ") }}{% endif %}</td></tr>
{% endfor %}{% endfor %}
</table>
</body></html>
"""


def _number(value: Any, digits: int = 3) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def render_html(report: dict[str, Any]) -> str:
    """report.html's text for ``report`` (as ``evaluate`` returns it)."""
    summary = report["summary"]
    figures = [
        plots.dice_plot(report["cases"], summary["segments"]),
        plots.bland_altman_plot(report["cases"]),
        *(plots.confusion_plot(concept, c["confusion"]) for concept, c in summary["classifications"].items()),
    ]
    environment = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    environment.filters["num"] = _number
    template = environment.from_string(TEMPLATE)
    return template.render(report=report, summary=summary, figures=[f for f in figures if f])


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write report.json and report.html into ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    with atomic_file(json_path) as handle:
        handle.write(json.dumps(report, indent=2, allow_nan=False).encode())
    with atomic_file(html_path) as handle:
        handle.write(render_html(report).encode())
    return json_path, html_path

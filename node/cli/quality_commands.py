"""Commands of quality monitoring: `evaluate` (a pipeline against a set of cases with references), `quality`
(scores of references that arrived at the node, and drift) and `export` (cases with references as a
de-identified training set)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from node.cli.app import app
from node.config import ConfigError, Settings, load_settings

console = Console()

CONFIG_OPTION = typer.Option(None, "--config", "-c", envvar="PACSNODE_CONFIG", help="The node's YAML configuration.")


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _number(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_evaluation(report: dict[str, Any]) -> None:
    table = Table(title=f"{report['pipeline']} {report['pipeline_version']}: cases")
    for column in ("case", "status", "segment", "Dice", "HD95 mm", "volume mL", "reference mL", "reason"):
        table.add_column(column)
    for case in report["cases"]:
        rows = case["segments"].items() or [("", {})]
        for label, score in rows:
            table.add_row(case["case"], case["status"], label, _number(score.get("dice")), _number(score.get("hd95_mm"), 2),
                          _number(score.get("volume_ml"), 1), _number(score.get("reference_volume_ml"), 1), case["reason"] or "")
        for concept, values in case["classifications"].items():
            table.add_row(case["case"], case["status"], concept, "", "", "", "", f"{values['predicted']} (reference {values['reference']})")
    console.print(table)
    summary = Table(title="summary")
    for column in ("segment / finding", "cases", "mean Dice [95 % CI] / accuracy", "median HD95 mm / balanced accuracy"):
        summary.add_column(column)
    for label, s in report["summary"]["segments"].items():
        interval = f" [{s['dice_ci95'][0]:.3f}, {s['dice_ci95'][1]:.3f}]" if s["dice_ci95"] else ""
        summary.add_row(label, str(s["cases"]), _number(s["dice_mean"]) + interval, _number(s["hd95_mm_median"], 2))
    for concept, c in report["summary"]["classifications"].items():
        summary.add_row(concept, str(c["cases"]), _number(c["accuracy"]), _number(c["balanced_accuracy"]))
    console.print(summary)


@app.command("evaluate")
def evaluate_cases(
    pipeline_name: str = typer.Argument(..., metavar="PIPELINE", help="Pipeline name (see `pacsnode pipelines`)."),
    cases_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="One folder per case: series and reference."),
    config: Path = CONFIG_OPTION,
    out: Path = typer.Option(None, "--out", "-o", help="Folder for report.json, report.html and each case's SEG and SR."),
) -> None:
    """Run a pipeline on a set of cases and score it against their references (DICOM SEG, reference.json)."""
    from pipelines.evaluation import evaluate, write_report
    from pipelines.registry import get_pipeline

    settings = _settings(config)
    logging.basicConfig(level=settings.logging.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        pipeline = get_pipeline(pipeline_name, settings.pipelines)
        report = evaluate(
            pipeline, cases_dir, out, settings.results,
            progress=lambda o: console.print(f"{o.name}: {'failed: ' + o.reason if o.reason else 'scored'}"),
        )
    except (KeyError, ValueError) as exc:
        console.print(f"[red]{exc.args[0] if isinstance(exc, KeyError) else exc}[/red]")
        raise typer.Exit(1) from exc
    _print_evaluation(report)
    if out is not None:
        json_path, html_path = write_report(report, out)
        console.print(f"report: {json_path} and {html_path}")
    if not report["summary"]["cases_scored"]:
        raise typer.Exit(1)


def _parse_since(since: str | None) -> dt.datetime | None:
    if not since:
        return None
    try:
        return dt.datetime.fromisoformat(since)
    except ValueError as exc:
        raise typer.BadParameter(f"--since {since!r}: use a date or time like 2026-01-31 or 2026-01-31T08:00") from exc

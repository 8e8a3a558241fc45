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
from node.cli.options import ConfigOption, load_config, open_index

console = Console()

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
    config: Path = ConfigOption,
    out: Path = typer.Option(None, "--out", "-o", help="Folder for report.json, report.html and each case's SEG and SR."),
) -> None:
    """Run a pipeline on a set of cases and score it against their references (DICOM SEG, reference.json)."""
    from pipelines.evaluation.engine import evaluate
    from pipelines.evaluation.report import write_report
    from pipelines.registry import get_pipeline

    settings = load_config(config)
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


@app.command("quality")
def quality(
    config: Path = ConfigOption,
    pipeline: str = typer.Option(None, "--pipeline", "-p", help="Only this pipeline's scores."),
    since: str = typer.Option(None, "--since", help="Only scores from this date or time on (2026-01-31 or 2026-01-31T08:00)."),
) -> None:
    """Scores of references that arrived at the node (per job and pipeline version), and drift checks."""
    from node.quality import queries

    settings = load_config(config)
    start = _parse_since(since)
    database = open_index(settings)
    try:
        with database.session() as session:
            rows = queries.scores(session, pipeline, start)
            received = queries.references(session)
            checks = queries.drift(session)
    finally:
        database.dispose()
    table = Table(title="scores against references")
    for column in ("scored", "pipeline", "version", "job", "segment / finding", "Dice", "HD95 mm", "volume mL",
                   "reference mL", "sender"):
        table.add_column(column)
    for row in rows:
        finding = row["kind"] == "classification"
        table.add_row(
            f"{row['scored_at']:%Y-%m-%d %H:%M}", row["pipeline"], row["version"], str(row["job_id"]), row["name"],
            f"{row['predicted']} / {row['reference']}" if finding else _number(row["dice"]), _number(row["hd95_mm"], 2),
            _number(row["volume_ml"], 1), _number(row["reference_volume_ml"], 1), row["sender"],
        )
    console.print(table)
    summary = Table(title="summary per pipeline version")
    for column in ("pipeline", "version", "segment / finding", "scores", "mean Dice", "median HD95 mm", "agreement"):
        summary.add_column(column)
    for item in queries.summary(rows):
        summary.add_row(item["pipeline"], item["version"], item["name"], str(item["count"]), _number(item["dice_mean"]),
                        _number(item["hd95_mm_median"], 2), _number(item["agreement"], 2))
    console.print(summary)
    waiting = [r for r in received if r["state"] != "scored"]
    for reference in waiting:
        console.print(f"reference {reference['id']} of series {reference['series_uid']}: {reference['state']}"
                      + (f": {reference['reason']}" if reference["reason"] else ""))
    drift = Table(title="drift (recent runs against each version's first runs)")
    for column in ("pipeline", "version", "kind", "name", "statistic", "p", "runs", "flag", "detail"):
        drift.add_column(column)
    for check in checks:
        if pipeline and check["pipeline"] != pipeline:
            continue
        drift.add_row(check["pipeline"], check["version"], check["kind"], check["name"], _number(check["statistic"]),
                      _number(check["p_value"], 4), f"{check['baseline']}/{check['recent']}",
                      "DRIFT" if check["flagged"] else "", check["detail"])
    console.print(drift if checks else "drift: no pipeline version has enough runs yet")


@app.command("export")
def export_dataset(
    pipeline: str = typer.Option(..., "--pipeline", "-p", help="The pipeline whose cases with references are exported."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for imagesTr/, labelsTr/, metadata/ and datalist.json."),
    config: Path = ConfigOption,
) -> None:
    """Write the cases that have references as a de-identified MONAI-style dataset (NIfTI and a datalist)."""
    from node.quality.export import export

    settings = load_config(config)
    logging.basicConfig(level=settings.logging.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    database = open_index(settings)
    try:
        names = export(database, pipeline, out)
    finally:
        database.dispose()
    console.print(f"{len(names)} case(s) with references written to {out} (datalist.json)")
    if not names:
        console.print(f"no case of {pipeline} has a scored reference yet; see `pacsnode quality`")

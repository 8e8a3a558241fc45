"""Commands of the pipelines stage: `pipelines` (list them) and `infer` (run one on a folder of DICOM files)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from node.cli.app import app
from node.cli.options import ConfigOption, load_config

console = Console()




@app.command("pipelines")
def list_pipelines(
    config: Path = ConfigOption,
) -> None:
    """List the pipelines this configuration can run: built-in ones and configured MONAI bundles."""
    from pipelines.registry import available

    settings = load_config(config)
    configured = {entry.name: entry for entry in settings.pipelines}
    table = Table(title="pacsnode pipelines")
    table.add_column("name")
    table.add_column("kind")
    table.add_column("description")
    for name, description in sorted(available(settings.pipelines).items()):
        entry = configured.get(name)
        kind = "bundle" if entry is not None and entry.bundle_dir else "custom" if entry is not None and entry.factory else "built-in"
        table.add_row(name, kind, description)
    console.print(table)


@app.command("infer")
def infer_folder(
    name: str = typer.Argument(..., help="Pipeline name (see `pacsnode pipelines`)."),
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder holding one series' DICOM files."),
    config: Path = ConfigOption,
) -> None:
    """Run a pipeline on one series from disk and print its segments, measurements and findings."""
    from pydicom.misc import is_dicom

    from pipelines.registry import get_pipeline
    from pipelines.types import PipelineFailure, UnsupportedSeries
    from pipelines.volume import load_series

    settings = load_config(config)
    logging.basicConfig(level=settings.logging.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        pipeline = get_pipeline(name, settings.pipelines)
        volume = load_series(sorted(p for p in folder.rglob("*") if p.is_file() and is_dicom(p)))
        reason = pipeline.accepts(volume.datasets[0])
        if reason:
            raise UnsupportedSeries(f"{name} does not accept this series: {reason}")
        result = pipeline.run(volume)
    except (KeyError, PipelineFailure, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    for note in volume.notes:
        console.print(f"note: {note}")
    table = Table(title=f"{result.pipeline} {result.version}")
    for column in ("segment", "what", "value", "unit"):
        table.add_column(column)
    labels = {segment.number: segment.label for segment in result.segments}
    for measurement in result.measurements:
        table.add_row(labels.get(measurement.segment_number, "-"), measurement.name.meaning,
                      f"{measurement.value:.2f}", measurement.unit.meaning)
    for finding in result.classifications:
        probability = "" if finding.probability is None else f" (p={finding.probability:.2f})"
        table.add_row("-", finding.concept.meaning, finding.value.meaning + probability, "")
    for located in result.findings:
        centre = located.centre
        where = f"segment {located.segment_number}" if centre is None else "at " + ", ".join(f"{v:.1f}" for v in centre)
        probability = "" if located.probability is None else f" (p={located.probability:.2f})"
        unit = "" if centre is None else "mm LPS"
        table.add_row(located.label, located.finding_type.meaning, where + probability, unit)
    console.print(table)
    console.print(", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.timings.items()))

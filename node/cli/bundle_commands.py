"""`pacsnode bundle check DIR`: load a MONAI bundle, run it on synthetic series, print the entry to configure."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from node.cli.app import app

console = Console()
bundle_app = typer.Typer(help="MONAI bundles: check one before adding it to the configuration.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each value read as YAML (``null`` removes the entry, ``[64, 64, 64]`` is a list)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise typer.BadParameter(f"{item!r}: an override is KEY=VALUE, e.g. 'inferer#sw_batch_size=2'")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


@bundle_app.command("check")
def check(
    bundle_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="The bundle folder (Model Zoo layout)."),
    name: str = typer.Option("", help="Pipeline name for the printed entry; default: the folder's name."),
    task: str = typer.Option("", help="segmentation, classification or detection; default: from metadata.json."),
    override: list[str] = typer.Option([], "--override", "-o", help="KEY=VALUE bundle config override (repeatable)."),
    device: str = typer.Option("", help="'cpu', 'cuda', 'cuda:1'; default: CUDA when available."),
) -> None:
    """Load the bundle, run it on two synthetic series, and print its labels with their codes, the device, the
    time and peak memory of each run, and the pipeline entry (with memory_mb for a 300-slice series) to use."""
    from pipelines.bundle.check import REFERENCE_SHAPE, check_bundle
    from pipelines.types import PipelineFailure

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with warnings.catch_warnings():  # MONAI's deprecation notices about bundle configs are not the user's to act on
            warnings.simplefilter("ignore")
            report = check_bundle(bundle_dir, name=name, task=task, overrides=parse_overrides(override), device=device)
    except PipelineFailure as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"bundle {report.bundle_dir} ({report.task}), device {report.device}, loaded in "
                  f"{report.load_seconds:.1f} s using {report.load_peak_bytes / 2**20:.0f} MB")
    for warning in report.warnings:
        console.print(f"[yellow]note: {warning}[/yellow]")
    if report.labels:
        labels = Table(title="labels")
        for column in ("value", "label", "codes"):
            labels.add_column(column)
        for value, label, codes in report.labels:
            labels.add_row(str(value), label, codes)
        console.print(labels)
    for value, bundle_name, nearest in report.uncoded:
        hint = f"; nearest known names: {', '.join(nearest)}" if nearest else ""
        console.print(f"[yellow]no code for {value} '{bundle_name}' (a private code is used){hint}; give it a labels "
                      "entry: {label, category, type[, modifier]}[/yellow]")
    runs = Table(title="runs on synthetic series")
    for column in ("voxels (k, j, i)", "seconds", "peak MB", "GPU peak MB", "found", "stages (s / MB)"):
        runs.add_column(column)
    for run in report.runs:
        stages = ", ".join(f"{stage} {seconds:.1f}/{peak / 2**20:.0f}" for stage, (seconds, peak) in run.stages.items())
        runs.add_row("x".join(map(str, run.shape)), f"{run.seconds:.1f}", f"{run.peak_bytes / 2**20:.0f}",
                     f"{run.gpu_peak_bytes / 2**20:.0f}", str(run.segments), stages)
    console.print(runs)
    console.print(f"estimated peak for a {'x'.join(map(str, REFERENCE_SHAPE))} series: "
                  f"{report.estimated_peak_bytes() / 2**20:.0f} MB")
    console.print("pipeline entry:")
    typer.echo(yaml.safe_dump({"pipelines": [report.entry()]}, sort_keys=False, width=1000))

"""Commands of the queue stage: `worker`, `route test`, `jobs`, `rerun`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pydicom
import typer
from pydicom.errors import InvalidDicomError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select

from node.cli.app import app
from node.cli.options import ConfigOption, RequiredConfigOption, load_config, open_index
from node.config import ConfigError, Settings
from node.db import Job, JobState, Series

console = Console()
route_app = typer.Typer(help="Check routing rules.", no_args_is_help=True)
app.add_typer(route_app, name="route")


@app.command()
def worker(
    config: Path = RequiredConfigOption,
    queues: str = typer.Option("gpu,delivery", help="Comma-separated queues: gpu (inference), delivery."),
    concurrency: int = typer.Option(1, min=1, help="Worker processes (one per GPU is typical)."),
    pool: str = typer.Option("prefork", help="Celery pool: prefork (isolates crashes) or solo (one process)."),
    name: str = typer.Option(None, help="Worker node name (default: pacsnode-<random>@<host>)."),
    delivery_worker: bool = typer.Option(
        False, "--delivery-worker", help="Also run a delivery-queue worker in a child process."
    ),
) -> None:
    """Run a worker that takes jobs from the queue (on this host or a GPU host sharing storage_dir)."""
    from node.queue.worker import run_worker

    from node.operate.logging_setup import configure_logging

    settings = load_config(config)
    configure_logging(settings.logging)
    open_index(settings).dispose()  # an index at another schema revision stops the worker here, saying why
    run_worker(
        settings,
        queues=queues,
        concurrency=concurrency,
        pool=pool,
        name=name,
        config_path=config,
        delivery_worker=delivery_worker,
    )


def _folder_series(path: Path) -> dict[str, list[Path]]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    series: dict[str, list[Path]] = defaultdict(list)
    for file in files:
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        except (InvalidDicomError, OSError, EOFError):
            continue
        series[str(header.get("SeriesInstanceUID", "?"))].append(file)
    return series


def _print_decision(label: str, header: pydicom.Dataset, called: str | None, calling: str | None, settings: Settings) -> bool:
    from node.route.rules import route_series
    from node.route.study import StudySeries, study_inputs

    decision = route_series(settings.routes, header, called, calling)
    console.print(f"[bold]{escape(label)}[/bold]  called AE {escape(repr(called))}, calling AE {escape(repr(calling))}")
    for verdict in decision.verdicts:
        mark = "[green]MATCH[/green]" if verdict.matched else "[dim]no[/dim]   "
        console.print(f"  {mark} {escape(verdict.route.name)}: {escape('; '.join(verdict.reasons))}")
    if decision.pipelines:
        for pipeline, routes in decision.pipelines.items():
            targets = ", ".join(decision.destinations.get(pipeline, [])) or "(no destination)"
            console.print(f"  -> pipeline [cyan]{escape(pipeline)}[/cyan] (routes {escape(', '.join(routes))}) -> {escape(targets)}")
    inputs = study_inputs(settings.routes, StudySeries("", header, called, calling))
    for item in inputs:
        console.print(f"  -> input of study route {escape(item)}: one job per study once its inputs are there")
    if not decision.pipelines and not inputs:
        console.print(f"  -> unrouted: {escape(decision.unrouted_reason())}")
    return bool(decision.pipelines or inputs)


@route_app.command("test")
def route_test(
    target: str = typer.Argument(..., help="A folder or file of DICOM instances, or a stored series' UID."),
    config: Path = ConfigOption,
    called_ae: str = typer.Option(None, help="Called AE title to assume for files (default: node.ae_title)."),
    calling_ae: str = typer.Option(None, help="Calling AE title to assume for files."),
) -> None:
    """Print which routes and pipelines a series would trigger, and why each route matches or not."""
    from node.jobs.headers import header_of_files, series_headers
    from node.route.rules import check_routes, instance_level_keywords

    settings = load_config(config)
    try:
        check_routes(settings)
    except ConfigError as exc:
        console.print(str(exc), style="red", markup=False)
    keywords = instance_level_keywords(settings.routes)
    path = Path(target)
    if path.exists():
        groups = _folder_series(path)
        if not groups:
            console.print(f"{target}: no readable DICOM files", style="red", markup=False)
            raise typer.Exit(1)
        for series_uid, files in groups.items():
            header = header_of_files(files, keywords)
            label = f"series {series_uid} ({len(files)} files)"
            _print_decision(label, header, called_ae or settings.node.ae_title, calling_ae, settings)
        return
    database = open_index(settings)
    with database.session() as session:
        series = session.get(Series, target)
    header = series_headers(database, [target], keywords)[target] if series is not None else None
    if series is None or isinstance(header, str):
        console.print(f"{target}: neither a path nor a stored series UID in {database.url}"
                      + (f" ({header})" if header else ""), style="red", markup=False)
        raise typer.Exit(1)
    label = f"stored series {target} ({series.instance_count} instances, now {series.state.value})"
    _print_decision(label, header, series.called_ae_title, series.calling_ae_title, settings)


@app.command()
def jobs(
    config: Path = ConfigOption,
    state: JobState = typer.Option(None, help="Only jobs in this state."),
    series: str = typer.Option(None, help="Only jobs of this series UID."),
    limit: int = typer.Option(50, min=1, help="Most recent jobs to show."),
) -> None:
    """List jobs: pipeline, series, state, attempts, reason and stage timings."""
    settings = load_config(config)
    with open_index(settings).session() as session:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if state is not None:
            query = query.where(Job.state == state)
        if series:
            query = query.where(Job.series_uid == series)
        rows = session.scalars(query).all()
    table = Table("id", "pipeline", "series", "state", "attempts", "queued", "finished", "timings (s)", "reason")
    for job in rows:
        timings = " ".join(f"{k}={v:.2f}" for k, v in (job.timings or {}).items() if isinstance(v, (int, float)))
        table.add_row(
            str(job.id),
            job.pipeline,
            job.series_uid,
            job.state.value,
            str(job.attempts),
            f"{job.queued_at:%Y-%m-%d %H:%M:%S}" if job.queued_at else "",
            f"{job.finished_at:%H:%M:%S}" if job.finished_at else "",
            timings,
            job.reason or "",
        )
    console.print(table)


@app.command()
def rerun(job_ids: list[int] = typer.Argument(..., help="Job IDs to run again."), config: Path = ConfigOption) -> None:
    """Run finished jobs again; their results replace the earlier ones (same UIDs), never duplicate them."""
    from node.jobs.dispatch import rerun as rerun_job

    settings = load_config(config)
    database = open_index(settings)
    for job_id in job_ids:
        if rerun_job(settings, database, job_id):
            console.print(f"job {job_id}: queued again")
        else:
            console.print(f"[yellow]job {job_id}: not re-run (no such job, or it is queued or running)[/yellow]")

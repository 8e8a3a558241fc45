"""Commands of the receiving node: serve, echo, send, status, config check."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import func, select

from node.assemble.summary import completion_summary, reopenings_by_sender
from node.cli.app import app
from node.cli.options import ConfigOption, RequiredConfigOption, load_config, open_index
from node.config import ConfigError
from node.db import Delivery, Job, NodeEvent, Series, Study, count_by_state
from node.queue.workers import listing
from node.receive.diskguard import disk_state
from node.operate.logging_setup import configure_logging

console = Console()
err_console = Console(stderr=True)

config_app = typer.Typer(help="Inspect the configuration file.", no_args_is_help=True)
app.add_typer(config_app, name="config")

PEER_PATTERN = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:@]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


def parse_peer(text: str) -> tuple[str, str, int]:
    """``AET@host:port`` -> (AE title, host, port); a clear error otherwise."""
    match = PEER_PATTERN.match(text.strip())
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise typer.BadParameter(f"{text!r} is not AET@host:port (for example ORTHANC@127.0.0.1:4242)")
    return match["aet"], match["host"].strip("[]"), int(match["port"])




@app.command()
def serve(config: Path = RequiredConfigOption) -> None:
    """Run the node: the DICOM SCP, series assembly, dispatch, worker and outbox."""
    from node.migrations import SchemaError
    from node.operate.serve import run
    from node.route.rules import check_routes

    settings = load_config(config)
    try:
        check_routes(settings)  # a bad rule stops the node at start, naming the rule
    except ConfigError as exc:
        err_console.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from exc
    configure_logging(settings.logging)
    try:
        code = run(settings, config_path=config)
    except SchemaError as exc:  # an index this release cannot use as it stands: say what to do
        err_console.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


@app.command()
def echo(
    peer: str = typer.Argument(..., help="AET@host:port of the peer."),
    calling_ae_title: str = typer.Option("PACSNODE", "--calling-ae", help="Our AE title."),
    timeout: float = typer.Option(10.0, help="Seconds to wait for the peer."),
) -> None:
    """Verify a DICOM peer with C-ECHO."""
    from node.dicom.echo import c_echo

    aet, host, port = parse_peer(peer)
    result = c_echo(host, port, aet, calling_ae_title, timeout)
    if not result.ok:
        err_console.print(f"[red]C-ECHO to {peer} failed: {result.problem}[/red]")
        raise typer.Exit(1)
    console.print(f"C-ECHO to {peer}: success")


def _collect(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise typer.BadParameter(f"{path} is neither a file nor a folder")
    return files


@app.command()
def send(
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders (searched recursively)."),
    to: str = typer.Option(..., "--to", help="AET@host:port of the receiver."),
    calling_ae_title: str = typer.Option("PACSNODE", "--calling-ae", help="Our AE title."),
    timeout: float = typer.Option(30.0, help="Seconds to wait for the peer."),
) -> None:
    """C-STORE files to a peer, showing progress; exits 1 if any file was not stored."""
    from node.dicom.scu import send_objects

    aet, host, port = parse_peer(to)
    files = _collect(paths)
    if not files:
        err_console.print("[red]nothing to send: no files found[/red]")
        raise typer.Exit(1)
    failures = []
    with Progress(
        TextColumn("sending to " + to), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err_console, transient=False,
    ) as progress:
        task = progress.add_task("send", total=len(files))

        def advance(done: int, total: int, outcome) -> None:  # type: ignore[no-untyped-def]
            progress.update(task, completed=done)
            if not outcome.stored:
                failures.append(outcome)

        send_objects(
            files, aet, host, port, calling_ae_title=calling_ae_title, connect_timeout=timeout,
            acse_timeout=timeout, dimse_timeout=timeout, network_timeout=timeout, progress=advance,
        )
    for outcome in failures[:20]:
        err_console.print(f"[red]{outcome.source}: {outcome.describe()}[/red]")
    console.print(f"{len(files) - len(failures)} of {len(files)} stored at {to}")
    if failures:
        raise typer.Exit(1)


def _count_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("count", justify="right")
    for state, count in sorted(counts.items()):
        table.add_row(state, str(count))
    if not counts:
        table.add_row("(none)", "0")
    return table


def _workers_table(workers: list[dict]) -> Table:
    """Worker processes: alive, dead (stopped beating: what they held was taken back) or stopped in order."""
    table = Table(title="Workers")
    for column in ("worker", "queues", "state", "last seen (UTC)", "running jobs", "reason"):
        table.add_column(column, no_wrap=column in ("worker", "state"))  # whole, however narrow the terminal
    for worker in workers:
        table.add_row(worker["name"], worker["queues"], worker["state"],
                      worker["last_seen"].strftime("%Y-%m-%d %H:%M:%S"), str(worker["jobs"]), worker["reason"])
    if not workers:
        table.add_row("(none)", "", "", "", "", "")
    return table


def _completion_table(completion: dict, reopenings: list[dict]) -> Table:
    """How series were declared complete, and the senders whose series reopened (a late instance)."""
    table = Table(title=f"Completion: {completion['reopened_series']} series reopened "
                        f"({completion['reopenings']} reopenings)")
    table.add_column("completed by / reopened from")
    table.add_column("series", justify="right")
    table.add_column("reopenings", justify="right")
    for rule, count in sorted(completion["by_rule"].items()):
        table.add_row(f"{rule} rule", str(count), "")
    for row in reopenings:
        table.add_row(f"calling AE {row['calling_ae_title'] or '(unknown)'}", str(row["series"]), str(row["reopenings"]))
    if not completion["by_rule"] and not reopenings:
        table.add_row("(none)", "0", "")
    return table


@app.command()
def status(
    config: Path = ConfigOption,
    errors: int = typer.Option(10, help="How many recent errors to show."),
) -> None:
    """Studies, series by state, jobs and deliveries by state, and recent errors."""
    settings = load_config(config)
    database = open_index(settings)
    try:
        with database.session() as session:
            studies = session.scalar(select(func.count()).select_from(Study)) or 0
            complete_studies = session.scalar(select(func.count()).where(Study.completed_at.is_not(None))) or 0
            series = count_by_state(session, Series.state)
            completion = completion_summary(session)
            reopenings = reopenings_by_sender(session)
            jobs = count_by_state(session, Job.state)
            deliveries = count_by_state(session, Delivery.state)
            workers = listing(session)
            recent = session.scalars(
                select(NodeEvent).where(NodeEvent.level.in_(["error", "warning"]))
                .order_by(NodeEvent.at.desc()).limit(errors)
            ).all()
    finally:
        database.dispose()
    console.print(f"node {settings.node.ae_title} on port {settings.node.port}: {studies} studies "
                  f"({complete_studies} complete)")
    console.print(f"disk: {disk_state(settings).describe()}")
    console.print(_count_table("Series", series))
    console.print(_completion_table(completion, reopenings))
    console.print(_count_table("Jobs", jobs))
    console.print(_count_table("Deliveries", deliveries))
    console.print(_workers_table(workers))
    table = Table(title="Recent errors")
    for column in ("at (UTC)", "level", "kind", "calling AE", "message"):
        table.add_column(column)
    for event in recent:
        table.add_row(event.at.strftime("%Y-%m-%d %H:%M:%S"), event.level, event.kind,
                      event.calling_ae_title or "", event.message)
    if not recent:
        table.add_row("", "", "", "", "(none)")
    console.print(table)


@config_app.command("check")
def config_check(path: Path = typer.Argument(..., help="The YAML configuration file to validate.")) -> None:
    """Validate a configuration file; exit 2 naming the bad key."""
    settings = load_config(path)
    console.print(
        f"{path}: valid ({settings.node.ae_title} on {settings.node.host}:{settings.node.port}, "
        f"{len(settings.destinations)} destination(s), {len(settings.routes)} route(s))"
    )

"""Commands of the delivery stage: `deliveries` (the outbox) and `retry` (re-queue failed deliveries)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from node.cli.app import app
from node.cli.options import ConfigOption, load_config, open_index
from node.config import Settings
from node.db import Database, Delivery, DeliveryState, ResultObject, count_by_state

console = Console()



def _open(config: Path | None) -> tuple[Settings, Database]:
    settings = load_config(config)
    return settings, open_index(settings)


def delivery_counts(database: Database) -> dict[str, int]:
    """Deliveries per state (for `pacsnode status`)."""
    with database.session() as session:
        return count_by_state(session, Delivery.state)


def delivery_table(database: Database, state: DeliveryState | None = None, limit: int = 50) -> Table:
    """The most recent deliveries as a rich table: object, destination, state, attempts, status, error."""
    with database.session() as session:
        query = (
            select(Delivery, ResultObject)
            .join(ResultObject, ResultObject.id == Delivery.result_id)
            .order_by(Delivery.id.desc())
            .limit(limit)
        )
        if state is not None:
            query = query.where(Delivery.state == state)
        rows = session.execute(query).all()
    table = Table("id", "job", "kind", "SOP instance", "destination", "state", "attempts", "last status",
                  "next attempt", "delivered", "error")
    for delivery, result in rows:
        table.add_row(
            str(delivery.id),
            str(result.job_id),
            result.kind,
            result.sop_instance_uid,
            delivery.destination,
            delivery.state.value,
            str(delivery.attempts),
            delivery.last_status or "",
            f"{delivery.next_attempt_at:%H:%M:%S}" if delivery.next_attempt_at and delivery.state == DeliveryState.pending else "",
            f"{delivery.delivered_at:%Y-%m-%d %H:%M:%S}" if delivery.delivered_at else "",
            (delivery.error or "")[:120],
        )
    return table


@app.command()
def deliveries(
    config: Path = ConfigOption,
    state: DeliveryState = typer.Option(None, help="Only deliveries in this state."),
    limit: int = typer.Option(50, min=1, help="Most recent deliveries to show."),
) -> None:
    """List the outbox: each result object per destination, its state, attempts, last status and error."""
    _, database = _open(config)
    counts = delivery_counts(database)
    console.print("deliveries: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    console.print(delivery_table(database, state, limit))


@app.command()
def retry(
    config: Path = ConfigOption,
    delivery: list[int] = typer.Option(None, "--delivery", "-d", help="A failed delivery ID (repeatable)."),
    all_failed: bool = typer.Option(False, "--all-failed", help="Re-queue every failed delivery."),
) -> None:
    """Re-queue failed deliveries (after fixing the destination); they start a fresh retry schedule."""
    from node.deliver.outbox import retry_failed

    if not delivery and not all_failed:
        console.print("[red]say which: --delivery ID (repeatable) or --all-failed[/red]")
        raise typer.Exit(2)
    settings, database = _open(config)
    ids = retry_failed(settings, database, None if all_failed else list(delivery))
    if not ids:
        console.print("[yellow]no failed delivery matched; nothing re-queued[/yellow]")
        raise typer.Exit(1)
    console.print(f"re-queued {len(ids)} deliver{'y' if len(ids) == 1 else 'ies'}: {', '.join(map(str, ids))}")


@app.command()
def refusals(
    config: Path = ConfigOption,
    clear: str = typer.Option(None, "--clear", help="Forget this destination's refusals (it supports SEG now)."),
) -> None:
    """SOP classes destinations refused at association; they get the fallback images instead of a SEG."""
    from node.deliver.outputs import clear_refusals, list_refusals

    _, database = _open(config)
    if clear:
        console.print(f"forgot {clear_refusals(database, clear)} refusal(s) of {clear}; it gets SEG again")
        return
    table = Table("destination", "SOP class", "first refused (UTC)", "last refused (UTC)", "detail")
    for row in list_refusals(database):
        table.add_row(row.destination, row.sop_class_uid, f"{row.first_refused_at:%Y-%m-%d %H:%M:%S}",
                      f"{row.last_refused_at:%Y-%m-%d %H:%M:%S}", row.detail or "")
    console.print(table)

"""`python -m node.demo.run` (`make demo`): the whole loop on this machine, in under two minutes.

Starts a node (`pacsnode serve`, embedded queue) and a local receiving PACS (Orthanc when installed, else
DCMTK storescp), sends sample_dicom/ to the node as a modality would, waits for the ct-tissue and ct-lungs
results to be delivered, then prints per-stage timings, segments with volumes, findings, where the SEG and
SR landed, and writes PNG previews. Exits non-zero if anything failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import yaml
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from node.db import Delivery, DeliveryState, Job, JobState, ResultObject, open_database
from node.demo.report import JobReport, job_reports, series_stages, write_previews
from node.demo.local_pacs import Orthanc, orthanc_available
from node.dicom.scu import send_objects
from node.ports import free_port as _free_port
from node.dicom.echo import c_echo
from node.waiting import wait_until

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_dicom" / "chest_ct"
PIPELINES = ["ct-tissue", "ct-lungs"]
DEADLINE_SECONDS = 110.0
console = Console()


class DemoFailed(Exception):
    """Something in the loop did not work; the message says what and where to look."""



def _echo(port: int, ae_title: str) -> bool:
    return c_echo("127.0.0.1", port, ae_title, calling_ae_title="DEMO", timeout=1).ok


class LocalPacs:
    """Orthanc if installed, else DCMTK storescp, listening on a free port; stopped by ``stop``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.orthanc: Orthanc | None = None
        self.storescp: subprocess.Popen | None = None
        self.ae_title = "STORESCP"
        self.port = 0

    def start(self) -> str:
        if orthanc_available():
            self.orthanc = Orthanc(self.directory / "orthanc")
            self.orthanc.directory.mkdir(parents=True, exist_ok=True)
            self.orthanc.start()
            self.ae_title, self.port = self.orthanc.ae_title, self.orthanc.dicom_port
            return f"Orthanc (DICOM {self.ae_title}@127.0.0.1:{self.port}, REST {self.orthanc.url})"
        if shutil.which("storescp") is None:
            raise DemoFailed("no local PACS: install Orthanc or DCMTK (`make setup` does)")
        received = self.directory / "storescp"
        received.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.storescp = subprocess.Popen(
            ["storescp", "-aet", self.ae_title, "-pm", "-od", str(received), str(self.port)],
            env=dict(os.environ, TCP_NODELAY="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait(lambda: _echo(self.port, self.ae_title), 20, "storescp to answer C-ECHO")
        return f"DCMTK storescp ({self.ae_title}@127.0.0.1:{self.port}, files in {received})"

    def where(self, study_uid: str) -> list[str]:
        """Lines saying where the study's results are in the PACS."""
        if self.orthanc is not None:
            lines = []
            for series in self.orthanc.series_of_study(study_uid):
                tags = series["MainDicomTags"]
                lines.append(f"{tags.get('Modality', '?'):4} {len(series['Instances']):3} instance(s)  "
                             f"{tags.get('SeriesDescription', '')}  ({self.orthanc.url}/series/{series['ID']})")
            return lines
        received = self.directory / "storescp"
        return [f"{p.name}" for p in sorted(received.iterdir()) if not p.name.startswith("CT")]

    def stop(self) -> None:
        if self.orthanc is not None:
            self.orthanc.stop()
        if self.storescp is not None:
            self.storescp.terminate()
            self.storescp.wait(timeout=10)


def _wait(predicate, timeout: float, what: str, every: float = 0.1):  # type: ignore[no-untyped-def]
    return wait_until(predicate, timeout, what, every, error=DemoFailed)


def _write_config(var: Path, pacs: LocalPacs, port: int) -> Path:
    config = {
        "node": {"ae_title": "PACSNODE", "host": "127.0.0.1", "port": port, "storage_dir": str(var / "storage"),
                 "series_quiet_seconds": 1.5},
        "queue": {"embedded_worker": True, "reconcile_seconds": 2, "requeue_after_seconds": 5},
        "delivery": {"retry_initial_seconds": 1, "retry_max_seconds": 5, "connect_timeout": 5, "requeue_after_seconds": 5},
        "destinations": [{"name": "local-pacs", "ae_title": pacs.ae_title, "host": "127.0.0.1", "port": pacs.port,
                          "outputs": ["seg", "sr"]}],
        "routes": [{"name": "chest-ct", "match": {"Modality": "CT"}, "pipelines": PIPELINES,
                    "destinations": ["local-pacs"]}],
        "logging": {"level": "INFO"},
    }
    path = var / "pacsnode.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _start_node(config: Path, var: Path, port: int) -> subprocess.Popen:
    script = Path(sys.executable).parent / "pacsnode"
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from node.cli import app; app()"]
    with open(var / "pacsnode.log", "ab") as out:
        process = subprocess.Popen([*command, "serve", "--config", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)

    def up() -> bool:
        if process.poll() is not None:
            raise DemoFailed(f"pacsnode serve exited with {process.returncode}; see {var / 'pacsnode.log'}")
        return _echo(port, "PACSNODE")

    _wait(up, 60, "the node to answer C-ECHO", every=0.2)
    return process


def _stop_node(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _finished(database, series_uid: str) -> bool:  # type: ignore[no-untyped-def]
    """All jobs done and every delivery of theirs settled (delivered or failed)."""
    with database.session() as session:
        jobs = session.scalars(select(Job).where(Job.series_uid == series_uid)).all()
        if len(jobs) < len(PIPELINES) or any(j.state not in (JobState.succeeded, JobState.failed) for j in jobs):
            return False
        states = session.scalars(
            select(Delivery.state).join(ResultObject, ResultObject.id == Delivery.result_id)
            .where(ResultObject.job_id.in_([j.id for j in jobs]))
        ).all()
        expected = sum(1 for j in jobs if j.state == JobState.succeeded)
        return len(states) >= expected and all(s in (DeliveryState.delivered, DeliveryState.failed) for s in states)


def _progress(database, series_uid: str) -> str:  # type: ignore[no-untyped-def]
    """One line on where the run stands: series state, jobs and deliveries by state."""
    from node.db import Series

    with database.session() as session:
        series = session.get(Series, series_uid)
        jobs = session.scalars(select(Job).where(Job.series_uid == series_uid)).all()
        deliveries = session.scalars(select(Delivery.state)).all()
    job_text = ", ".join(f"{j.pipeline} {j.state.value}" for j in jobs) or "no jobs"
    return (f"series {series.state.value if series else 'not indexed'}, {job_text}, "
            f"deliveries {[d.value for d in deliveries]}")


def _print_summary(reports: list[JobReport], stages: dict[str, float], send_seconds: float, total: float,
                   where: list[str], pacs_name: str, out_dir: Path) -> None:
    timing = Table("stage", "seconds", title="Per-stage timings")
    timing.add_row("send (C-STORE, demo -> node)", f"{send_seconds:.2f}")
    for name, seconds in stages.items():
        timing.add_row(name, f"{seconds:.2f}")
    for report in reports:
        for name, seconds in report.stages.items():
            timing.add_row(f"{report.pipeline}: {name}", f"{seconds:.2f}")
    timing.add_row("[bold]total, first instance sent -> results delivered[/bold]", f"[bold]{total:.2f}[/bold]")
    console.print(timing)
    for report in reports:
        table = Table("#", "segment", "volume (mL)", "colour", title=f"{report.pipeline}: {report.state}")
        for info in report.segments:
            r, g, b = info.colour
            table.add_row(str(info.number), info.label, f"{info.volume_ml:,.1f}", f"[rgb({r},{g},{b})]■■■[/]")
        console.print(table)
        if report.reason:
            console.print(f"  [red]reason: {report.reason}[/red]")
        for concept, value in report.findings:
            console.print(f"  classification: [bold]{concept}: {value}[/bold]")
        for kind, destination, state, status in report.deliveries:
            colour = "green" if state == "delivered" else "red"
            console.print(f"  {kind.upper():3} -> {destination}: [{colour}]{state}[/{colour}] {status}")
    console.print(f"\n[bold]In the PACS[/bold] ({pacs_name}):")
    for line in where:
        console.print(f"  {line}")
    previews = [p for r in reports for p in r.previews]
    console.print(f"\n[bold]Previews[/bold] ({len(previews)} PNG, segments overlaid) in {out_dir}:")
    for path in previews:
        console.print(f"  {path}")


def run(var: Path, out_dir: Path, keep_running: bool) -> int:
    """The demo; returns the exit status."""
    from pipelines.volume import load_series

    started = time.monotonic()
    shutil.rmtree(var, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    var.mkdir(parents=True)
    files = sorted(SAMPLE.glob("*.dcm"))
    if not files:
        raise DemoFailed(f"no sample series in {SAMPLE}: run `python -m sample_dicom.generate`")
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    study_uid, series_uid = str(header.StudyInstanceUID), str(header.SeriesInstanceUID)
    pacs = LocalPacs(var / "pacs")
    node = None
    try:
        with console.status("starting the local PACS and the node"):
            pacs_name = pacs.start()
            port = _free_port()
            node = _start_node(_write_config(var, pacs, port), var, port)
        console.print(f"node PACSNODE@127.0.0.1:{port} (log {var / 'pacsnode.log'}); PACS: {pacs_name}")
        with console.status(f"sending {len(files)} CT instances to the node"):
            sent_at = time.monotonic()
            outcomes = send_objects(files, "PACSNODE", "127.0.0.1", port, calling_ae_title="DEMO-CT")
            send_seconds = time.monotonic() - sent_at
        refused = [o for o in outcomes if not o.stored]
        if refused:
            raise DemoFailed(f"{len(refused)} instances not stored by the node: {refused[0].describe()}")
        database = open_database(f"sqlite:///{(var / 'storage' / 'pacsnode.db').resolve()}")
        remaining = DEADLINE_SECONDS - (time.monotonic() - started)
        with console.status("waiting for the pipelines and the deliveries"):
            try:
                _wait(lambda: _finished(database, series_uid), remaining, "results to be delivered", every=0.2)
            except DemoFailed as exc:
                raise DemoFailed(f"{exc}; {_progress(database, series_uid)}; see {var / 'pacsnode.log'}") from None
        total = time.monotonic() - sent_at
        volume = load_series(files)
        reports = job_reports(database, series_uid, volume)
        for report in reports:
            write_previews(report, volume, out_dir)
        _print_summary(reports, series_stages(database, series_uid), send_seconds, total, pacs.where(study_uid),
                       pacs_name, out_dir)
        failed = [r for r in reports if r.state != "succeeded"] + [
            d for r in reports for d in r.deliveries if d[2] != "delivered"]
        ok = not failed and len(reports) == len(PIPELINES)
        console.print(f"\n[{'green' if ok else 'red'}]demo {'succeeded' if ok else 'FAILED'}[/] "
                      f"in {time.monotonic() - started:.1f} s")
        if keep_running and ok:
            console.print("the node and the PACS keep running; Ctrl-C stops them")
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
        return 0 if ok else 1
    finally:
        if node is not None:
            _stop_node(node)
        pacs.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.demo.run", description=__doc__.splitlines()[0])
    parser.add_argument("--var", type=Path, default=REPO / "var" / "demo", help="Working folder (wiped first).")
    parser.add_argument("--out", type=Path, default=REPO / "demo-out", help="Where the PNG previews go.")
    parser.add_argument("--keep-running", action="store_true", help="Keep the node and PACS up after the summary.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args.var.resolve(), args.out.resolve(), args.keep_running)
    except DemoFailed as exc:
        console.print(f"[red]demo failed: {exc}[/red]")
        return 1


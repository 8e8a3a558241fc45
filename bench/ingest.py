"""Ingest benchmark: a 300-slice 512x512 CT series sent with DCMTK storescu to pacsnode and to storescp.

Both receivers run in the same invocation, on 1 and on 4 associations (storescp with ``--fork`` for 4);
each figure is the median of ``--repeats`` runs. pacsnode fsyncs every file and its directory and
indexes every instance before answering; storescp does neither.

    python -m bench.ingest [--slices 300] [--repeats 3] [--processes 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.dicom_factory import write_series  # noqa: E402
from tests.support.node_process import NodeProcess, free_port  # noqa: E402

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # without it DCMTK stalls ~45 ms per instance (Nagle)
CACHE = REPO / "bench" / "out"


@dataclass(frozen=True)
class Run:
    seconds: float
    instances: int
    megabytes: float

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    @property
    def throughput(self) -> float:
        return self.megabytes / self.seconds


def series_files(slices: int) -> list[Path]:
    """The benchmark series, generated once and cached under bench/out."""
    folder = CACHE / f"ct{slices}x512"
    files = sorted(folder.glob("slice*.dcm")) if folder.is_dir() else []
    if len(files) != slices:
        shutil.rmtree(folder, ignore_errors=True)
        files = write_series(folder, slices, rows=512, columns=512)
    return files


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def send(port: int, called: str, files: list[Path], associations: int) -> float:
    """storescu ``files`` split over ``associations`` concurrent processes; return the wall time."""
    chunks = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    senders = [
        subprocess.Popen(["storescu", "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port), *map(str, chunk)],
                         env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for chunk in chunks
    ]
    errors = [s.communicate()[1] for s in senders]
    elapsed = time.perf_counter() - start
    failed = [e.decode(errors="replace")[-300:] for s, e in zip(senders, errors) if s.returncode != 0]
    if failed:
        raise RuntimeError(f"storescu failed: {failed[0]}")
    return elapsed


def run_storescp(files: list[Path], associations: int, workdir: Path) -> Run:
    port = free_port()
    out = workdir / "storescp"
    out.mkdir()
    command = ["storescp", "-aet", "STORESCP", "-od", str(out)]
    if associations > 1:
        command.append("--fork")
    process = subprocess.Popen([*command, str(port)], env=DCMTK_ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        seconds = send(port, "STORESCP", files, associations)
    finally:
        process.terminate()
        process.wait(10)
    stored = list(out.iterdir())
    if len(stored) != len(files):
        raise RuntimeError(f"storescp stored {len(stored)} of {len(files)} files")
    return Run(seconds, len(files), sum(f.stat().st_size for f in files) / 1e6)


def run_pacsnode(files: list[Path], associations: int, workdir: Path, processes: int) -> Run:
    extra = {"node": {"receive_processes": processes, "series_quiet_seconds": 60},
             "logging": {"level": "WARNING"}}
    with NodeProcess(workdir / "pacsnode", extra=extra) as node:
        seconds = send(node.port, "PACSNODE", files, associations)
        count = node.instance_count()
    if count != len(files):
        raise RuntimeError(f"pacsnode indexed {count} of {len(files)} instances")
    return Run(seconds, len(files), sum(f.stat().st_size for f in files) / 1e6)


def median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=max(2, min(4, os.cpu_count() or 2)),
                        help="pacsnode node.receive_processes")
    args = parser.parse_args(argv)
    if shutil.which("storescu") is None or shutil.which("storescp") is None:
        print("bench.ingest needs DCMTK (storescu, storescp): run `make setup`", file=sys.stderr)
        return 2
    files = series_files(args.slices)
    size = sum(f.stat().st_size for f in files) / 1e6
    print(f"ingest: {len(files)} CT slices 512x512, {size:.0f} MB, median of {args.repeats} runs, "
          f"pacsnode with {args.processes} receiving process(es), fsync on; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (figures need a quiet machine)")
    rows = []
    for associations in (1, 4):
        results: dict[str, list[Run]] = {"storescp": [], "pacsnode": []}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
                results["storescp"].append(run_storescp(files, associations, Path(tmp)))
            with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
                results["pacsnode"].append(run_pacsnode(files, associations, Path(tmp), args.processes))
        reference, ours = median(results["storescp"]), median(results["pacsnode"])
        label = "storescp --fork" if associations > 1 else "storescp"
        rows.append((associations, label, reference, ours))
    print(f"{'assoc':>5}  {'reference':<16}{'inst/s':>8}{'MB/s':>8}   {'pacsnode inst/s':>15}{'MB/s':>8}   ratio")
    for associations, label, reference, ours in rows:
        print(f"{associations:>5}  {label:<16}{reference.rate:>8.0f}{reference.throughput:>8.0f}   "
              f"{ours.rate:>15.0f}{ours.throughput:>8.0f}   {ours.rate / reference.rate:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

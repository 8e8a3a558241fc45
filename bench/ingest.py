"""Ingest benchmark: a 300-slice 512x512 CT series sent with DCMTK storescu to pacsnode and to storescp.

The receivers run in the same invocation, on 1 and on 4 associations (storescp with ``--fork`` for 4),
and with one association per instance for the first 40 slices ("1/inst": a storescu run per file, as
some modalities and PACS send); each figure is the median of ``--repeats`` runs. pacsnode fsyncs every file and its directory and
indexes every instance before answering; storescp does neither. A second DCMTK reference,
"storescp+fsync", runs storescp with bench/fsync_on_close.c preloaded (built with ``cc`` when there is
one), which fsyncs each received file and its directory before storescp answers: DCMTK held to the
same durability as pacsnode.

    python -m bench.ingest [--slices 300] [--repeats 3] [--processes 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.dcmtk import DCMTK_ENV  # noqa: E402  (Nagle off: DCMTK stalls ~45 ms per instance without it)
from tests.support.dicom_factory import write_series  # noqa: E402
from node.ports import free_port, wait_for_port  # noqa: E402
from tests.support.node_process import NodeProcess  # noqa: E402

CACHE = REPO / "bench" / "out"
PER_INSTANCE = 0  # one association per instance, as some modalities and PACS send
PER_INSTANCE_FILES = 40
FSYNC_SHIM_SOURCE = REPO / "bench" / "fsync_on_close.c"


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


def send(port: int, called: str, files: list[Path], associations: int) -> float:
    """storescu ``files`` split over ``associations`` concurrent processes; return the wall time.

    ``associations`` 0 (PER_INSTANCE): one storescu run, so one association, per file, one after another.
    """
    chunks = [[file] for file in files] if associations == PER_INSTANCE else \
        [files[i::associations] for i in range(associations)]
    waves = [[chunk] for chunk in chunks] if associations == PER_INSTANCE else [chunks]
    start = time.perf_counter()
    for wave in waves:
        senders = [
            subprocess.Popen(["storescu", "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port), *map(str, chunk)],
                             env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for chunk in wave
        ]
        errors = [s.communicate()[1] for s in senders]
        failed = [e.decode(errors="replace")[-300:] for s, e in zip(senders, errors) if s.returncode != 0]
        if failed:
            raise RuntimeError(f"storescu failed: {failed[0]}")
    return time.perf_counter() - start


def fsync_shim() -> Path | None:
    """The durability shim for storescp, built once into bench/out; None without a C compiler."""
    library = CACHE / "fsync_on_close.so"
    if library.exists() and library.stat().st_mtime >= FSYNC_SHIM_SOURCE.stat().st_mtime:
        return library
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(FSYNC_SHIM_SOURCE), "-ldl"],
                   check=True)
    return library


def run_storescp(files: list[Path], associations: int, workdir: Path, preload: Path | None = None) -> Run:
    """storescp receives ``files``; with ``preload`` (the fsync shim) it syncs each file before answering."""
    port = free_port()
    out = workdir / "storescp"
    out.mkdir()
    command = ["storescp", "-aet", "STORESCP", "-od", str(out)]
    if associations > 1:
        command.append("--fork")
    env = DCMTK_ENV if preload is None else {**DCMTK_ENV, "LD_PRELOAD": str(preload)}
    process = subprocess.Popen([*command, str(port)], env=env, stdout=subprocess.DEVNULL,
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
    extra = {"node": {"receive_processes": processes, "completion": {"mode": "quiet", "quiet_seconds": 60}},
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
    shim = fsync_shim()
    print(f"ingest: {len(files)} CT slices 512x512, {size:.0f} MB, median of {args.repeats} runs, "
          f"pacsnode with {args.processes} receiving process(es), fsync on; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (figures need a quiet machine)")
    if shim is None:
        print("no C compiler (cc): the storescp+fsync reference is left out")
    receivers: dict[str, Callable[[list[Path], int, Path], Run]] = {"storescp": run_storescp}
    if shim is not None:
        receivers["storescp+fsync"] = lambda batch, associations, tmp: run_storescp(batch, associations, tmp, shim)
    receivers["pacsnode"] = lambda batch, associations, tmp: run_pacsnode(batch, associations, tmp, args.processes)
    table: dict[int, dict[str, Run]] = {}
    for associations in (1, 4, PER_INSTANCE):
        batch = files[:PER_INSTANCE_FILES] if associations == PER_INSTANCE else files
        results: dict[str, list[Run]] = {name: [] for name in receivers}
        for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every receiver
            for name, receive in receivers.items():
                with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
                    results[name].append(receive(batch, associations, Path(tmp)))
        table[associations] = {name: median(runs) for name, runs in results.items()}
    references = [name for name in receivers if name != "pacsnode"]
    print(f"{'assoc':>6}  {'receiver':<22}{'inst/s':>8}{'MB/s':>8}   " + "   ".join(f"vs {n}" for n in references))
    for associations, medians in table.items():
        for name, run in medians.items():
            label = f"{name} --fork" if associations > 1 and name != "pacsnode" else name
            ratios = "   ".join(f"{run.rate / medians[n].rate:>{len(n) + 2}.2f}x" for n in references)
            shown = "1/inst" if associations == PER_INSTANCE else associations
            print(f"{shown:>6}  {label:<22}{run.rate:>8.0f}{run.throughput:>8.0f}   {ratios}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

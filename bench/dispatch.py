"""Dispatch overhead, embedded broker and Redis side by side.

* latency: from a series marked complete (as the assembler does) to the pipeline starting on an idle
  worker, through the node's real dispatcher loop, a real broker and a real `pacsnode worker` process;
* throughput: no-op jobs per second, from a batch of complete series to every job recorded succeeded.

The no-op pipeline takes the path of every job: routing, a job row, a Celery message, the worker's claim, the
series read from disk, the pipeline's run and the recorded outcome; only inference and result writing are empty.

Run: ``python -m bench.dispatch [--latency-runs 20] [--jobs 300] [--pool solo] [--index postgres]`` (or
``python -m bench``). Redis must listen on 127.0.0.1:6379 (PostgreSQL on 5432 for ``--index postgres``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import func, select

from node.db import Job, JobState
from tests.support.node_harness import REDIS_URL, Node, base_config, delete_prefixed
from tests.support.waiting import wait_for
from tests.support.postgres import throwaway_database

BROKERS = {"embedded": "", "redis": REDIS_URL}


def _start_times(node: Node) -> dict[str, float]:
    return {line.split()[1]: float(line.split()[3]) for line in node.runs("start")}


def measure_latency(node: Node, runs: int) -> list[float]:
    """Seconds from series complete to pipeline start, one series at a time on an idle worker."""
    latencies = []
    for _ in range(runs):
        series_uid = node.add_series(slices=1, complete=False)
        time.sleep(0.25)  # the worker and the loops are idle again
        completed = time.time()
        node.complete(series_uid)
        started = wait_for(lambda: _start_times(node).get(series_uid), 10, "the pipeline to start", every=0.005)
        node.wait_job(series_uid, {"succeeded"})
        latencies.append(started - completed)
    return latencies


def measure_throughput(node: Node, jobs: int) -> tuple[float, float]:
    """(jobs/s from complete to all succeeded, jobs/s of the worker from first to last pipeline start)."""
    series = [node.add_series(slices=1, complete=False) for _ in range(jobs)]
    succeeded = (
        select(func.count()).select_from(Job).where(Job.series_uid.in_(series), Job.state == JobState.succeeded)
    )
    completed = time.time()
    node.complete(*series)

    def all_done() -> bool:
        # One count per poll: loading every job row 20 times a second took CPU from the node being measured.
        with node.database.session() as session:
            return session.scalar(succeeded) == jobs

    wait_for(all_done, 300, f"{jobs} jobs to succeed", every=0.05)
    finished = time.time()
    starts = sorted(_start_times(node)[uid] for uid in series)
    return jobs / (finished - completed), (jobs - 1) / (starts[-1] - starts[0])


def run(broker: str, latency_runs: int, jobs: int, concurrency: int, pool: str, index: str) -> dict[str, float]:
    with ExitStack() as stack:
        database_url = stack.enter_context(throwaway_database("pacsnode_bench")) if index == "postgres" else ""
        return _run(broker, latency_runs, jobs, concurrency, pool, database_url)


def _run(broker: str, latency_runs: int, jobs: int, concurrency: int, pool: str, database_url: str) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix=f"pacsnode-bench-{broker}-"))
    token = uuid.uuid4().hex[:8]
    prefix = f"pacsnode-bench-{token}:"
    config = base_config(root / "storage", BROKERS[broker], prefix if BROKERS[broker] else "",
                         worker_concurrency=concurrency)
    if database_url:
        config["node"]["database_url"] = database_url
    node = Node(root, config)
    try:
        node.start_worker(pool=pool, concurrency=concurrency)
        node.start_loops()
        latencies = measure_latency(node, latency_runs)
        overall, worker_rate = measure_throughput(node, jobs)
    finally:
        node.close()
        if BROKERS[broker]:
            delete_prefixed(prefix)
        shutil.rmtree(root, ignore_errors=True)
    return {
        "latency_median_ms": 1000 * statistics.median(latencies),
        "latency_p90_ms": 1000 * sorted(latencies)[int(0.9 * (len(latencies) - 1))],
        "jobs_per_s": overall,
        "worker_jobs_per_s": worker_rate,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--index", choices=["sqlite", "postgres"], default="sqlite", help="The node's database.")
    parser.add_argument("--brokers", default=",".join(BROKERS), help="Comma-separated: embedded, redis.")
    args = parser.parse_args(argv)
    names = args.brokers.split(",")
    results = {name: run(name, args.latency_runs, args.jobs, args.concurrency, args.pool, args.index) for name in names}
    print(f"dispatch: {args.jobs} no-op jobs, one worker ({args.pool}, concurrency {args.concurrency}), {args.index} index")
    print(f"{'':28}" + "".join(f"{name:>12}" for name in results))
    rows = [
        ("complete -> start, median ms", "latency_median_ms", "{:12.1f}"),
        ("complete -> start, p90 ms", "latency_p90_ms", "{:12.1f}"),
        ("no-op jobs/s (end to end)", "jobs_per_s", "{:12.1f}"),
        ("no-op jobs/s (worker)", "worker_jobs_per_s", "{:12.1f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:28}" + "".join(fmt.format(results[name][key]) for name in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

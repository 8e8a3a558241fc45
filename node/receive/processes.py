"""Receiving processes: each runs one SCP server on the shared port (SO_REUSEPORT).

More processes use more cores; the association threads of one process share one GIL.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.context import SpawnProcess
from typing import Any

import pydicom.config

from node.config import Settings
from node.db import Database
from node.receive.diskguard import refuse_reason
from node.operate.logging_setup import configure_logging
from node.receive.slots import AssociationCounter, shared_table
from node.receive.scp import Receiver
from node.receive.storage import TMP_SUFFIX, remove_partials

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0
STOP_POLL_SECONDS = 0.5


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when `serve` dies, so no orphan keeps the shared port."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def receiver_main(settings: Settings, slots: Any, ready: Any, index: int) -> None:
    """Process target: serve until SIGTERM or until `serve` is gone; report the bound port (or the error) on ``ready``."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns shutdown
    # Stopping is by SIGTERM (from `serve`, or from Linux when `serve` dies) and the handler only sets a flag:
    # no lock shared with the parent, which a parent killed while holding it would never release.
    terminated: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    parent = os.getppid()
    configure_logging(settings.logging)
    # Invalid values are answered with a status; pydicom's warnings would echo them into the log.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    # Full commit durability (the database's default): Success is answered only once the instance's index row
    # would survive a crash of the database or the host; group commit shares that sync among concurrent
    # associations.
    database = Database(settings.node.resolved_database_url())
    counter = AssociationCounter(slots, index, settings.node.max_associations)
    receiver = Receiver(settings, database, counter, extra_checks=[partial(refuse_reason, settings)],
                        space_check=partial(refuse_reason, settings))
    try:
        _, port = receiver.start()
    except Exception as exc:  # reported to the parent, which names it and exits
        ready.put((index, None, f"{type(exc).__name__}: {exc}"))
        return
    ready.put((index, port, None))
    while not terminated and os.getppid() == parent:
        time.sleep(STOP_POLL_SECONDS)
    receiver.stop()
    database.dispose()


@dataclass
class ReceiverPool:
    """The receiving processes of one node; started and stopped by `pacsnode serve`."""

    settings: Settings
    context: Any = field(default_factory=lambda: mp.get_context("spawn"))
    processes: list[SpawnProcess] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        node = self.settings.node
        self.slots = shared_table(node.receive_processes, node.max_associations, self.context)
        self.stopping = False
        self.ready = self.context.Queue()

    def start(self) -> int:
        """Start every process; the first binds (a port of 0 picks a free one), the rest share it."""
        self.port = self.settings.node.port
        count = self.settings.node.receive_processes
        if self.port == 0:  # the first picks the port, the others join it
            self._spawn(0)
            self.port = self._wait_ready()
            started = 1
        else:
            started = 0
        for index in range(started, count):
            self._spawn(index)
        for _ in range(started, count):
            self._wait_ready()
        log.info(
            "%s listening on %s:%d with %d receiving process(es), max %d associations",
            self.settings.node.ae_title,
            self.settings.node.host,
            self.port,
            len(self.processes),
            self.settings.node.max_associations,
        )
        return self.port

    def _spawn(self, index: int) -> None:
        settings = self.settings.model_copy(deep=True)
        settings.node.port = self.port
        process = self.context.Process(
            target=receiver_main,
            args=(settings, self.slots, self.ready, index),
            name=f"pacsnode-receiver-{index}",
            daemon=False,
        )
        process.start()
        self.processes.append(process)

    def _wait_ready(self) -> int:
        index, port, error = self.ready.get(timeout=START_TIMEOUT)
        if error is not None:
            self.stop()
            raise RuntimeError(
                f"receiving process {index} cannot listen on {self.settings.node.host}:{self.port}: {error}; "
                "check node.host/node.port and that no other program holds the port"
            )
        return int(port)

    def restart_dead(self) -> int:
        """Replace processes that died unexpectedly; return how many were restarted."""
        restarted = 0
        for position, process in enumerate(list(self.processes)):
            if process.is_alive() or self.stopping:
                continue
            log.error("receiving process %s exited with code %s; restarting it", process.name, process.exitcode)
            removed = remove_partials(self.settings.node.storage_dir, f"*/*/.*.{process.pid}.*{TMP_SUFFIX}")
            if removed:
                log.info("removed %d partial file(s) the receiving process left", removed)
            self.processes.pop(position)
            AssociationCounter(self.slots, position, self.settings.node.max_associations).reset()
            self._spawn(position)
            self.processes.insert(position, self.processes.pop())
            self._wait_ready()
            restarted += 1
        return restarted

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every process to finish its associations and exit; terminate any that do not."""
        self.stopping = True
        for process in self.processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the process finishes its associations, then exits
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                log.warning("receiving process %s did not stop in %.0f s; terminating it", process.name, timeout)
                process.kill()
                process.join(5)
        self.processes.clear()

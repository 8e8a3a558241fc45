"""Group commit for the receiving threads of one process.

When an instance reaches :meth:`GroupCommit.commit`, its file is already fsynced and renamed into its
series folder. Two steps remain before Success: making the rename durable (an fsync of the folder) and
indexing the instance. Each costs about as much for several instances as for one, so the first thread
to arrive does both for every thread waiting at the time: one fsync per folder and one index
transaction for the whole group. The others sleep until their own outcome is set. No extra thread is
involved, and a lone association pays only a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.receive.instances import Received
from node.receive.storage import fsync_directory


class NotDurable(OSError):
    """The folder holding an instance could not be fsynced: the instance may not survive a crash."""


@dataclass(eq=False)
class _Waiting:
    received: Received
    new: bool = False
    error: BaseException | None = None
    done: bool = False

    @property
    def directory(self) -> Path:
        return Path(self.received.path).parent


class GroupCommit:
    """Folder fsync and indexing, shared by the threads that need them at the same moment.

    ``index_group`` indexes several instances in one transaction and returns, for each, whether it
    was new; ``index_one`` indexes a lone instance. When a group fails, each of its instances is indexed
    again on its own, so one bad row fails only its own instance.
    """

    def __init__(self, index_group: Callable[[list[Received]], list[bool]],
                 index_one: Callable[[Received], bool]) -> None:
        self.index_group = index_group
        self.index_one = index_one
        self._condition = threading.Condition()
        self._queue: list[_Waiting] = []
        self._leading = False

    def commit(self, received: Received) -> bool:
        """Make ``received`` durable in its folder and indexed; True when the instance is new.

        Raises :class:`NotDurable` when the folder cannot be fsynced, or what indexing raised.
        """
        waiting = _Waiting(received)
        with self._condition:
            self._queue.append(waiting)
            while not waiting.done:
                if self._leading:
                    self._condition.wait()
                    continue
                self._leading = True
                group, self._queue = self._queue, []
                self._condition.release()
                try:
                    self._complete(group)
                finally:
                    self._condition.acquire()
                    self._leading = False
                    self._condition.notify_all()
        if waiting.error is not None:
            raise waiting.error
        return waiting.new

    def _complete(self, group: list[_Waiting]) -> None:
        """Set the outcome of every member of ``group``; never raises."""
        try:
            for directory in dict.fromkeys(member.directory for member in group):
                try:
                    fsync_directory(directory)
                except OSError as exc:
                    for member in group:
                        if member.directory == directory:
                            member.error = NotDurable(exc.errno, f"cannot fsync {directory}: {exc.strerror}")
            durable = [member for member in group if member.error is None]
            if durable:
                self._index(durable)
        except BaseException as exc:  # a defect above must not leave threads waiting for ever
            for member in group:
                if member.error is None:
                    member.error = exc
        finally:
            for member in group:
                member.done = True

    def _index(self, members: list[_Waiting]) -> None:
        if len(members) > 1:
            try:
                outcomes = self.index_group([member.received for member in members])
            except Exception:
                pass  # indexed one by one below, so only the instance at fault fails
            else:
                for member, new in zip(members, outcomes, strict=True):
                    member.new = new
                return
        for member in members:
            try:
                member.new = self.index_one(member.received)
            except Exception as exc:
                member.error = exc

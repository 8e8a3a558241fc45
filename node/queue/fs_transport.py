"""Celery's filesystem transport with atomic message files: the embedded broker's transport.

kombu's own filesystem transport creates a message file and then writes it, so a worker polling the folder
can take the file while it is still empty and die on a JSON error. Here each message is written to a
temporary name the consumers ignore, fsynced, and renamed into place, so a message is whole or absent.

A worker told to stop also stops polling at once: Celery otherwise keeps polling the folder for up to 2 s
before it looks at its shutdown flag.

Fence: this overrides kombu's private ``filesystem.Channel._put`` and ``_get`` (kombu 5.4 to 5.7; pyproject bounds
kombu below 5.8); ``missing_upstream()`` lists what an upgrade removed.
"""

from __future__ import annotations

import os
import socket
import uuid
from time import monotonic

from celery.worker import state as worker_state
from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

ALIAS = "pacsnode-fs"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f"partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb", buffering=0) as handle:
                handle.write(str_to_bytes(dumps(payload)))
                os.fsync(handle.fileno())
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str) -> dict:
        if worker_state.should_stop is not None or worker_state.should_terminate is not None:
            raise socket.timeout("the worker is stopping")  # Celery's poll loop ends and sees the flag
        return super()._get(queue)


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES[ALIAS] = f"{__name__}:Transport"


def missing_upstream() -> list[str]:
    """What this fence overrides that the installed kombu no longer has (empty when all is there)."""
    return [f"kombu.transport.filesystem.Channel.{name}" for name in ("_put", "_get")
            if not callable(getattr(filesystem.Channel, name, None))]
